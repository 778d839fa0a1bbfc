"""Read a model server's Prometheus text (``/metrics``) into the few numbers picking needs.

vLLM's names (its docs, "Production Metrics"): ``vllm:num_requests_waiting``,
``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc`` (0-1; ``vllm:gpu_cache_usage_perc``
before v0.10), ``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total`` (tokens),
``vllm:cache_config_info`` (labels ``block_size``, ``num_gpu_blocks``),
``vllm:num_preemptions_total`` (requests preempted because the KV cache was full), the buckets
of the ``vllm:time_to_first_token_seconds`` histogram. SGLang's equivalents (its docs,
"Production Metrics"): ``sglang:num_queue_reqs``, ``sglang:num_running_reqs``,
``sglang:token_usage``, ``sglang:cache_hit_rate``, ``sglang:time_to_first_token_seconds``. A server with several engines (data parallel) reports one series per
engine: counts are summed, KV use averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass(slots=True)
class ServerMetrics:
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0  # 0-1
    prefix_queries: float = 0.0  # tokens looked up in the prefix cache (counter)
    prefix_hits: float = 0.0  # of which cached (counter)
    hit_rate: float | None = None  # reported directly (SGLang), else from the counters
    finished: float = 0.0  # requests completed (counter): the drain rate behind Retry-After
    generated: float = 0.0  # output tokens (counter): a server with work and none of these is stalled
    preemptions: float = 0.0  # requests preempted for KV-cache space (counter): a rising one thrashes
    block_size: int | None = None
    num_blocks: int | None = None
    # TTFT histogram: bucket upper bound (seconds, inf last) -> requests at or under it (counter)
    ttft_buckets: dict[float, float] = field(default_factory=dict)


_SUM = {
    "vllm:num_requests_waiting": "waiting",
    "sglang:num_queue_reqs": "waiting",
    "vllm:num_requests_running": "running",
    "sglang:num_running_reqs": "running",
    "vllm:prefix_cache_queries_total": "prefix_queries",
    "vllm:prefix_cache_hits_total": "prefix_hits",
    "vllm:request_success_total": "finished",
    "vllm:generation_tokens_total": "generated",
    "sglang:generation_tokens_total": "generated",
    "vllm:num_preemptions_total": "preemptions",
}
_MEAN = {
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",
    "sglang:token_usage": "kv_usage",
    "sglang:cache_hit_rate": "hit_rate",
}


_TTFT_BUCKETS = ("vllm:time_to_first_token_seconds_bucket", "sglang:time_to_first_token_seconds_bucket")


def _bound(le: str) -> float | None:
    """A bucket's upper bound ("+Inf" included); None for anything else (the bucket is skipped)."""
    try:
        v = float(le)
    except ValueError:
        return None
    return v if v == v and v >= 0 else None


class MetricsError(ValueError):
    """The text is not Prometheus exposition, or says nothing about the server's load."""


def parse(text: str) -> ServerMetrics:
    """The load figures of one scrape; ``MetricsError`` when the text has neither queue nor KV figures."""
    m = ServerMetrics()
    means: dict[str, list[float]] = {}
    seen = False
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, value = sample.name, float(sample.value)
                if value != value or value in (float("inf"), float("-inf")):
                    continue  # NaN / Inf: no information
                if name in _SUM:
                    setattr(m, _SUM[name], getattr(m, _SUM[name]) + value)
                    seen = True
                elif name in _MEAN:
                    means.setdefault(_MEAN[name], []).append(value)
                    seen = True
                elif name in _TTFT_BUCKETS:
                    le = _bound(sample.labels.get("le", ""))
                    if le is not None and value >= 0:
                        m.ttft_buckets[le] = m.ttft_buckets.get(le, 0.0) + value
                elif name == "vllm:cache_config_info":
                    bs, nb = sample.labels.get("block_size", ""), sample.labels.get("num_gpu_blocks", "")
                    m.block_size = int(bs) if bs.isdigit() else m.block_size
                    m.num_blocks = int(nb) if nb.isdigit() else m.num_blocks
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise MetricsError(f"not Prometheus text: {e}") from None
    for attr, values in means.items():
        setattr(m, attr, sum(values) / len(values))
    if not seen:
        raise MetricsError("no vLLM or SGLang queue or KV-cache metrics")
    m.kv_usage = min(1.0, max(0.0, m.kv_usage))
    m.waiting, m.running = max(0.0, m.waiting), max(0.0, m.running)
    return m


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (upper bound -> count at or under it), with
    linear interpolation inside the bucket as Prometheus' ``histogram_quantile``; in the open
    last bucket, its lower bound. None without observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = max(buckets.values())  # the +Inf bucket's count, or the largest present
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = max(buckets[le], below)  # cumulative: never fewer than a lower bucket
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            # within the bucket's bounds even where float rounding would step past them
            return min(le, lower + (le - lower) * (rank - below) / (count - below))
        lower, below = le, count
    return lower
