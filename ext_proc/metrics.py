"""Prometheus metrics of the ext_proc server (prefix ``llm_gateway_``).

Labels carry only configured names (dialect, model, backend, status class),
never API keys or prompt text, and have bounded cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "llm_gateway_requests", "Client requests by outcome.",
    ["dialect", "model", "backend", "status"], registry=REGISTRY)
TOKENS = Counter(
    "llm_gateway_tokens", "Tokens reported by providers (input includes cached).",
    ["model", "backend", "kind"], registry=REGISTRY)
REJECTED = Counter(
    "llm_gateway_rejections", "Requests answered by the gateway itself, by reason.",
    ["dialect", "reason"], registry=REGISTRY)
UPSTREAM_TRANSLATIONS = Counter(
    "llm_gateway_attempt_translations", "Failover attempts re-translated by the upstream stage.",
    ["model", "from_backend", "to_backend"], registry=REGISTRY)
OVERHEAD = Histogram(
    "llm_gateway_processing_seconds", "Time spent in the ext_proc per message, by stage and phase.",
    ["stage", "phase"], registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))


def record_usage(model: str, backend: str, input_tokens: int, output_tokens: int, cached: int) -> None:
    TOKENS.labels(model, backend, "input").inc(input_tokens)
    TOKENS.labels(model, backend, "output").inc(output_tokens)
    if cached:
        TOKENS.labels(model, backend, "cached_input").inc(cached)


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Expose /metrics on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
