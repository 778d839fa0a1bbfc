"""Prometheus metrics of the ext_proc server (prefix ``llm_gateway_``).

Labels carry only configured names (dialect, model, backend, status class),
never API keys or prompt text, and have bounded cardinality.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

REGISTRY = CollectorRegistry(auto_describe=True)
# process_start_time_seconds, CPU and memory of the worker: a restart shows as a new
# start time (deploy/prometheus/alerts.yml, LLMGatewayWorkerRestarts).
ProcessCollector(registry=REGISTRY)

REQUESTS = Counter(
    "llm_gateway_requests",
    "Client requests by outcome.",
    ["dialect", "model", "backend", "status"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "llm_gateway_tokens",
    "Tokens reported by providers; kind input counts every prompt token, cache_read and "
    "cache_write the parts of it read from and written to a prompt cache.",
    ["model", "backend", "kind"],
    registry=REGISTRY,
)
COST = Counter(
    "llm_gateway_cost_usd",
    "Cost of answered requests in USD, from backend prices and reported usage.",
    ["model", "backend", "tenant"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "llm_gateway_rejections",
    "Requests answered by the gateway itself, by reason.",
    ["dialect", "reason"],
    registry=REGISTRY,
)
UPSTREAM_TRANSLATIONS = Counter(
    "llm_gateway_attempt_translations",
    "Failover attempts re-translated by the upstream stage.",
    ["model", "from_backend", "to_backend"],
    registry=REGISTRY,
)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
DURATION = Histogram(
    "llm_gateway_request_duration_seconds",
    "Client request duration, request headers to end of response.",
    ["model", "backend"],
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "llm_gateway_time_to_first_token_seconds",
    "Streamed requests: time until the first response bytes.",
    ["model", "backend"],
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
TPOT = Histogram(
    "llm_gateway_time_per_output_token_seconds",
    "Streamed requests: time per output token after the first.",
    ["model", "backend"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 1),
)
FAILED_ATTEMPTS = Counter(
    "llm_gateway_failed_attempts",
    "Attempts that failed on a backend (Envoy retried or gave up), by status.",
    ["model", "backend", "status"],
    registry=REGISTRY,
)
STREAM_TIMEOUTS = Counter(
    "llm_gateway_stream_timeouts",
    "Streams the gateway ended with an error event: the backend sent no event "
    "for per_try_idle_timeout_ms (bound=idle) or the stream reached max_stream_duration_ms (bound=duration).",
    ["model", "backend", "bound"],
    registry=REGISTRY,
)
CREDENTIAL_REFUSALS = Counter(
    "llm_gateway_credential_refusals",
    "Attempts a provider answered 401/403 to the gateway's own key "
    "(failed over as a 502): the backend's key or permissions need fixing.",
    ["backend", "status"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "llm_gateway_failovers",
    "Requests answered by another backend than the primary they were routed to.",
    ["model", "from_backend", "to_backend"],
    registry=REGISTRY,
)
SKIPPED = Counter(
    "llm_gateway_backend_skips",
    "Requests routed past a backend that was cooling down.",
    ["model", "backend"],
    registry=REGISTRY,
)
BACKEND_HEALTH = Gauge(
    "llm_gateway_backend_health",
    "Backend health seen by this process: 0 healthy, 1 cooling down, 2 probing.",
    ["backend"],
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "llm_gateway_processing_seconds",
    "Time spent in the ext_proc per message, by stage and phase.",
    ["stage", "phase"],
    registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)

# Admission (budgets): tenant labels are configured tenant names, never keys.
ADMISSION = Counter(
    "llm_gateway_admission_decisions",
    "Admission decisions by tenant, priority, decision and reason.",
    ["tenant", "priority", "decision", "reason"],
    registry=REGISTRY,
)
BUDGET_REMAINING = Gauge(
    "llm_gateway_budget_remaining",
    "Tenant budget left at this process's last decision (requests, tokens, usd; concurrent: free slots).",
    ["tenant", "budget"],
    registry=REGISTRY,
)
BACKEND_IN_FLIGHT = Gauge(
    "llm_gateway_backend_in_flight",
    "Requests admitted to a backend and not finished, in this process.",
    ["backend"],
    registry=REGISTRY,
)
BACKEND_LIMIT = Gauge(
    "llm_gateway_backend_concurrency_limit",
    "Adaptive concurrency limit of a backend (last value seen).",
    ["backend"],
    registry=REGISTRY,
)
STORE_UP = Gauge(
    "llm_gateway_budget_store_up", "1 while the shared budget store (redis) answers.", registry=REGISTRY
)
STORE_FAILURES = Counter(
    "llm_gateway_budget_store_failures",
    "Budget store calls that failed, by configured behaviour.",
    ["on_failure"],
    registry=REGISTRY,
)

# Conversation state kept for stateful client APIs (ext_proc/conversations.py).
CONVERSATIONS = Counter(
    "llm_gateway_conversation_store",
    "Conversation store calls by operation and outcome (hit, miss, ok, evicted, too_large, unavailable).",
    ["op", "outcome"],
    registry=REGISTRY,
)


LOOP_LAG = Histogram(
    "llm_gateway_event_loop_lag_seconds",
    "How late the worker's event loop woke up (sampled every 25 ms): a stall holds every request in flight.",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


CONFIG_INFO = Gauge(
    "llm_gateway_config_info",
    "The config version this process serves (value 1).",
    ["version"],
    registry=REGISTRY,
)
CONFIG_RELOAD_OK = Gauge(
    "llm_gateway_config_last_reload_ok",
    "1 if the last config load or reload succeeded, else 0.",
    registry=REGISTRY,
)


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: prometheus_client validates the
    labels and takes a lock on every call, which the per-request path pays
    several times. Only for metrics whose children are never removed."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def set_config(version: str, ok: bool) -> None:
    CONFIG_RELOAD_OK.set(1 if ok else 0)
    if ok:
        CONFIG_INFO.clear()
        CONFIG_INFO.labels(version).set(1)


def record_usage(
    model: str,
    backend: str,
    input_tokens: int,
    output_tokens: int,
    cached: int,
    cache_write: int = 0,
    reasoning: int = 0,
) -> None:
    """``cached`` input tokens read from a prompt cache, ``cache_write`` written to one;
    ``reasoning`` is the part of ``output_tokens`` spent thinking (kind ``reasoning``)."""
    child(TOKENS, model, backend, "input").inc(input_tokens)
    child(TOKENS, model, backend, "output").inc(output_tokens)
    if cached:
        child(TOKENS, model, backend, "cache_read").inc(cached)
    if cache_write:
        child(TOKENS, model, backend, "cache_write").inc(cache_write)
    if reasoning:
        child(TOKENS, model, backend, "reasoning").inc(reasoning)


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Expose /metrics on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
