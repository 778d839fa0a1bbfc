"""Prometheus metrics of the ext_proc server (prefix ``llm_gateway_``).

Labels carry only configured names (dialect, model, backend, status class),
never API keys or prompt text, and have bounded cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
FAILED_ATTEMPTS = Counter(
    "llm_gateway_failed_attempts", "Attempts that failed on a backend (Envoy retried or gave up), by status.",
    ["model", "backend", "status"], registry=REGISTRY)
FAILOVERS = Counter(
    "llm_gateway_failovers", "Requests answered by another backend than the primary they were routed to.",
    ["model", "from_backend", "to_backend"], registry=REGISTRY)
SKIPPED = Counter(
    "llm_gateway_backend_skips", "Requests routed past a backend that was cooling down.",
    ["model", "backend"], registry=REGISTRY)
BACKEND_HEALTH = Gauge(
    "llm_gateway_backend_health", "Backend health seen by this process: 0 healthy, 1 cooling down, 2 probing.",
    ["backend"], registry=REGISTRY)
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
