"""Envoy adapters: one module per kind of ext_proc stream.

- ``router``: one stream per client request (request headers and body,
  response body), driving ``ext_proc.request``;
- ``upstream``: one stream per failover attempt to another backend than the
  primary (re-translates the body);
- ``answer_guard``: holds an attempt's 200 until it is known to be an answer
  (a stream's first event, a body's end), so a non-answer fails over;
- ``refusal``: an attempt's 401/403 from a provider, as a 502 saying whose key it was;
- ``observer``: failed attempts' response headers, for backend health.

``ext_proc.server`` dispatches a gRPC stream to its stage by metadata.
"""
