"""Scorers: each rates one server for one request between 0 (worst) and 1 (best).

The picker adds them with the pool's configured weights (``PoolSettings.weights``).
``load`` is the saturation measure shared by scoring and backpressure:
max(queue / queue_limit, kv / kv_cache_limit), where the queue counts the requests this
gateway sent since the last scrape (known before the server reports them); a server that
preempted requests within ``preemption_hold_ms`` (its KV cache is thrashing) is at its limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import PoolSettings


@dataclass(slots=True)
class View:
    """What the picker knows about one server at pick time."""

    endpoint: str
    up: bool  # its last scrape answered
    fresh: bool  # ... within stale_after_ms
    waiting: float
    running: float
    kv_usage: float
    sent_since_scrape: int  # requests this gateway sent it after its last scrape
    prefix_blocks: int  # leading prompt blocks it served recently
    thrashing: bool = False  # it preempted requests lately: its KV cache is full


def load(v: View, s: PoolSettings) -> float:
    """Saturation (1.0 = at a limit); unknown or stale metrics count as saturated."""
    if not (v.up and v.fresh):
        return float("inf")
    queued = (v.waiting + v.sent_since_scrape) / s.queue_limit
    return max(queued, v.kv_usage / s.kv_cache_limit, 1.0 if v.thrashing else 0.0)


def queue_score(v: View, s: PoolSettings) -> float:
    return 1.0 / (1.0 + (v.waiting + v.sent_since_scrape) / s.queue_limit + v.running / (4 * s.queue_limit))


def kv_score(v: View, s: PoolSettings) -> float:
    return max(0.0, 1.0 - v.kv_usage)


def prefix_score(v: View, total_blocks: int) -> float:
    return v.prefix_blocks / total_blocks if total_blocks else 0.0


def score(v: View, s: PoolSettings, total_blocks: int) -> float:
    w = s.weights
    return (
        w.queue * queue_score(v, s) + w.kv_cache * kv_score(v, s) + w.prefix * prefix_score(v, total_blocks)
    )
