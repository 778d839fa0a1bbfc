"""Pick a pool server per request: weighted scorers over scraped metrics, the gateway's own
in-flight counts and prefix affinity; or say the pool is saturated (backpressure).

The result is an ordered list of servers, best first: Envoy's override_host policy tries
them in that order on retries before the next tier (docs/pools.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..config import PoolSettings
from . import scorers
from .metrics_text import quantile
from .prefix import AffinityTable, block_hashes, prompt_words
from .scraper import ServerState

log = logging.getLogger("llm_gateway.pools")


def _is_address(endpoint: str) -> bool:
    host = endpoint.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class Pick:
    """Servers in the order to try them; ``release`` once the request has ended."""

    pool: Pool
    order: list[str]
    # "prefix" (affinity won), "load" (least loaded), "only" (one server left); with a baseline
    # picker its name ("round_robin", "random")
    reason: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            s = self.pool.servers.get(self.order[0])
            if s is not None and s.in_flight > 0:
                s.in_flight -= 1


@dataclass(slots=True)
class Saturated:
    """Every server is at its limits (or out): the request should not be sent to this pool."""

    load: float  # the pool's mean saturation
    retry_after: float  # seconds until the queue has likely drained below the threshold


@dataclass
class Pool:
    """One provider's servers: their scraped state, affinity, and the scraper task."""

    name: str
    endpoints: list[str]
    settings: PoolSettings
    servers: dict[str, ServerState] = field(default_factory=dict)
    affinity: AffinityTable = field(init=False)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # Servers named by address now; those named by DNS once resolved (``resolve``).
        self.servers = {e: ServerState(e) for e in self.endpoints if _is_address(e)}
        self.affinity = AffinityTable(self.settings.affinity_entries)
        self.resolved_at = 0.0
        self.turn = 0  # picker "round_robin": the next server's position
        # Cost-aware routing (``cost.py``), refreshed every scrape round, read per request:
        self.ttft_p90: float | None = None  # seconds, over ``ttft_window_ms``; None: no first token
        self.peak_token_rate = 0.0  # the most output tokens/s its servers were measured generating
        self._ttft: deque[tuple[float, dict[float, float]]] = deque()

    def named(self) -> list[tuple[str, int]]:
        """Endpoints given by DNS name: (name, port)."""
        return [
            (h, int(p))
            for h, _, p in (e.rpartition(":") for e in self.endpoints)
            if not _is_address(f"{h}:{p}")
        ]

    def set_servers(self, addresses: set[str]) -> None:
        """The pool's servers are now ``addresses`` (host:port): new ones start unscraped (out),
        vanished ones are dropped with what affinity remembered of them."""
        for gone in set(self.servers) - addresses:
            del self.servers[gone]
            self.affinity.forget(gone)
        for new in addresses - set(self.servers):
            self.servers[new] = ServerState(new)

    async def resolve(self) -> None:
        """Resolve the DNS-named endpoints (IPv4 first, as the cluster's ``V4_PREFERRED``)."""
        named = self.named()
        if not named:
            return
        loop = asyncio.get_running_loop()
        found = {e for e in self.endpoints if _is_address(e)}
        for host, port in named:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                log.warning(
                    "pool %s: %s does not resolve (%s); keeping its last addresses", self.name, host, e
                )
                found |= {s for s in self.servers if s.endswith(f":{port}") and not _is_address(host)}
                continue
            v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
            addrs = v4 or [f"[{i[4][0]}]" for i in infos if i[0] == socket.AF_INET6]
            found |= {f"{a}:{port}" for a in addrs}
        self.set_servers(found)
        self.resolved_at = time.monotonic()

    def key(self) -> tuple[Any, ...]:
        return (self.name, tuple(self.endpoints), self.settings.model_dump_json())

    def views(self, hashes: list[bytes], now: float) -> list[scorers.View]:
        stale = self.settings.stale_after_ms / 1000
        stall = self.settings.stall_after_ms / 1000
        hold = self.settings.preemption_hold_ms / 1000
        matches = self.affinity.matches(hashes) if hashes else {}
        out = []
        for e, s in self.servers.items():
            m = s.metrics
            out.append(
                scorers.View(
                    endpoint=e,
                    up=s.up and m is not None and now - s.progress_at <= stall,
                    fresh=now - s.scraped_at <= stale,
                    waiting=m.waiting if m else 0.0,
                    running=m.running if m else 0.0,
                    kv_usage=m.kv_usage if m else 1.0,
                    sent_since_scrape=s.sent_since_scrape,
                    prefix_blocks=matches.get(e, 0),
                    thrashing=s.thrashing(now, hold),
                )
            )
        return out

    def saturation(self, views: list[scorers.View]) -> float:
        """Mean per-server load; a server that is out or stale counts as exactly saturated."""
        loads = [min(scorers.load(v, self.settings), 2.0) if v.up and v.fresh else 1.0 for v in views]
        return sum(loads) / len(loads) if loads else float("inf")

    def pick(self, body: Any) -> Pick | Saturated:
        now = time.monotonic()
        hashes = block_hashes(prompt_words(body))
        views = self.views(hashes, now)
        s = self.settings
        pool_load = self.saturation(views)
        usable = [v for v in views if v.up and v.fresh]
        if not usable or pool_load >= s.saturation:
            return Saturated(pool_load, self.retry_after(views))
        if s.picker != "scored":
            return self._baseline(usable)
        total = len(hashes)
        # Affinity counts only on a server that is not overloaded itself.
        ranked = sorted(
            usable,
            key=lambda v: (
                scorers.load(v, s) < 1.0,
                scorers.score(v, s, total) if scorers.load(v, s) < 1.0 else -scorers.load(v, s),
                # Ties (idle servers) go where fewer remembered prefixes live, so new
                # conversations spread over the caches instead of piling up on one at random.
                -self.affinity.held(v.endpoint),
                random.random(),
            ),
            reverse=True,
        )
        best = ranked[0]
        if len(ranked) == 1:
            reason = "only"
        elif best.prefix_blocks and best.prefix_blocks == max(v.prefix_blocks for v in ranked):
            reason = "prefix"
        else:
            reason = "load"
        chosen = self.servers[best.endpoint]
        chosen.in_flight += 1
        chosen.sent_since_scrape += 1
        if hashes:
            self.affinity.record(hashes, best.endpoint)
        return Pick(self, [v.endpoint for v in ranked], reason)

    def cost(self) -> tuple[float, float | None] | None:
        """(USD per hour, USD per million output tokens at the servers' current generation rate),
        or None without ``gpu_hour_usd``. Every server costs, up or not: GPUs are paid for."""
        if self.settings.gpu_hour_usd is None:
            return None
        per_hour = self.settings.gpu_hour_usd * len(self.servers)
        tokens_per_s = sum(s.token_rate for s in self.servers.values() if s.up)
        if tokens_per_s <= 0:
            return per_hour, None
        return per_hour, per_hour / (tokens_per_s * 3600) * 1e6

    def unit_cost(self) -> float | None:
        """USD per million output tokens for ``prefer: cheapest``: the hourly cost over the highest
        rate the servers were measured generating (their GPUs are paid for either way: a quiet
        moment must not make them look dear and send their traffic away); None before any."""
        if self.settings.gpu_hour_usd is None or self.peak_token_rate <= 0:
            return None
        return self.settings.gpu_hour_usd * len(self.servers) / (self.peak_token_rate * 3600) * 1e6

    def after_round(self, now: float) -> None:
        """After each scrape round: the TTFT p90 over the window, the peak generation rate."""
        self.peak_token_rate = max(
            self.peak_token_rate, sum(s.token_rate for s in self.servers.values() if s.up)
        )
        new: dict[float, float] = {}
        for s in self.servers.values():
            for le, n in s.ttft_new.items():
                new[le] = new.get(le, 0.0) + n
            s.ttft_new.clear()
        if new:
            self._ttft.append((now, new))
        horizon = now - self.settings.ttft_window_ms / 1000
        while self._ttft and self._ttft[0][0] < horizon:
            self._ttft.popleft()
        total: dict[float, float] = {}
        for _, buckets in self._ttft:
            for le, n in buckets.items():
                total[le] = total.get(le, 0.0) + n
        self.ttft_p90 = quantile(0.9, total)

    def _baseline(self, usable: list[scorers.View]) -> Pick:
        """Picker ``round_robin`` or ``random``: ignore load and prefixes (what a plain load
        balancer does), so benchmarks can compare against the scored picker on the same pool.
        The rest of the list (for retries) follows in the same rotation."""
        ordered = sorted(usable, key=lambda v: v.endpoint)
        if self.settings.picker == "round_robin":
            k = self.turn % len(ordered)
            self.turn += 1
            ordered = ordered[k:] + ordered[:k]
        else:
            random.shuffle(ordered)
        chosen = self.servers[ordered[0].endpoint]
        chosen.in_flight += 1
        chosen.sent_since_scrape += 1
        return Pick(self, [v.endpoint for v in ordered], self.settings.picker)

    def retry_after(self, views: list[scorers.View]) -> float:
        """Seconds until the servers have likely worked their queues down to the threshold:
        the waiting requests over the rate they finish requests (from their counters)."""
        waiting = sum(v.waiting + v.sent_since_scrape for v in views if v.up)
        rate = sum(s.drain_rate for s in self.servers.values() if s.up)
        if rate <= 0:
            return 1.0 if any(v.up for v in views) else 5.0
        excess = max(1.0, waiting - self.settings.queue_limit * len(views) * (self.settings.saturation * 0.8))
        return min(60.0, max(1.0, excess / rate))
