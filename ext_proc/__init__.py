"""LLM gateway: the Python ext_proc server beside Envoy, the request path.

Its tools (``up``, mock providers, load test, bench) are the package ``gateway_tools``.
"""

__version__ = "0.1.0"
