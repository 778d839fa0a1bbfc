"""The request path as plain functions over plain data (no Envoy, no gRPC).

- ``plan``: request headers and body -> a ``RoutePlan`` (tenant, model,
  primary backend, admission ticket, translated body, headers to set) or an
  ``Answer`` the gateway gives itself (model listings, refusals);
- ``responses``: response chunks -> the client's bytes, chunk by chunk;
- ``finish``: how the request ended -> cost, failover, health, log fields;
- ``attempt``: a failover attempt's body -> the body for its backend.
- ``trace``: the span attributes only the gateway knows, for Envoy's tracer.

The stage modules (``ext_proc.stages``) are thin adapters between Envoy's
ext_proc messages and these functions.
"""
