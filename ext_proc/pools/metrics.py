"""Prometheus metrics of the pools (prefix ``llm_gateway_pool_``), in the ext_proc registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from ..metrics import REGISTRY

SERVER_UP = Gauge(
    "llm_gateway_pool_server_up",
    "1 while the server's metrics scrape answers.",
    ["pool", "server"],
    registry=REGISTRY,
)
SERVER_QUEUE = Gauge(
    "llm_gateway_pool_server_queue",
    "Requests waiting on the server (scraped).",
    ["pool", "server"],
    registry=REGISTRY,
)
SERVER_KV = Gauge(
    "llm_gateway_pool_server_kv_cache_usage",
    "KV-cache use of the server, 0-1 (scraped).",
    ["pool", "server"],
    registry=REGISTRY,
)
SERVER_HIT_RATE = Gauge(
    "llm_gateway_pool_server_prefix_hit_rate",
    "Prefix-cache hit rate of the server over recent scrapes, 0-1.",
    ["pool", "server"],
    registry=REGISTRY,
)
SERVER_THRASHING = Gauge(
    "llm_gateway_pool_server_thrashing",
    "1 while the server counts as at its KV-cache limit because it preempted requests lately.",
    ["pool", "server"],
    registry=REGISTRY,
)
SERVER_IN_FLIGHT = Gauge(
    "llm_gateway_pool_server_in_flight",
    "Requests this ext_proc process has open on the server.",
    ["pool", "server"],
    registry=REGISTRY,
)
PICKS = Counter(
    "llm_gateway_pool_picks",
    "Servers picked, by why (prefix, load, only; round_robin or random with a baseline picker).",
    ["pool", "server", "reason"],
    registry=REGISTRY,
)
SATURATED = Counter(
    "llm_gateway_pool_saturated",
    "Requests that found the pool saturated, by outcome (spill: sent to the next tier; shed: 429).",
    ["pool", "model", "outcome"],
    registry=REGISTRY,
)
COST_PER_HOUR = Gauge(
    "llm_gateway_pool_cost_usd_per_hour",
    "What the pool's servers cost per hour (pool.gpu_hour_usd x servers), when configured.",
    ["pool"],
    registry=REGISTRY,
)
COST_PER_MILLION = Gauge(
    "llm_gateway_pool_usd_per_million_output_tokens",
    "The pool's cost per million output tokens at the rate its servers generate them now "
    "(their own generated-token counters); absent while they generate nothing.",
    ["pool"],
    registry=REGISTRY,
)
COST_PICKS = Counter(
    "llm_gateway_cost_picks",
    "Requests of a prefer-cheapest model put first on a backend of a shared tier, by why "
    "(cost: the cheapest within its SLO; slo: a cheaper one missed its SLO).",
    ["model", "backend", "reason"],
    registry=REGISTRY,
)
TTFT_P90 = Gauge(
    "llm_gateway_pool_ttft_p90_seconds",
    "The pool's time to first token, 90th percentile over pool.ttft_window_ms, from its servers' "
    "own histograms (absent without a first token in the window).",
    ["pool"],
    registry=REGISTRY,
)
BACKEND_TTFT_P90 = Gauge(
    "llm_gateway_backend_ttft_p90_seconds",
    "An API backend's time to first token, 90th percentile over its model's slo.window_ms, from "
    "the streamed answers this process relayed (only backends a prefer-cheapest model holds to "
    "an SLO; absent without an answer in the window).",
    ["backend"],
    registry=REGISTRY,
)
