"""LLM gateway: the Python ext_proc server beside Envoy, and its tooling."""

__version__ = "0.1.0"
