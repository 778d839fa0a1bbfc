"""Scrape every server of a pool every ``scrape_interval_ms``: its queue, KV and prefix-cache
figures (``metrics_text``), when they were read, and whether the server answered at all.

A server whose scrape fails (refused, timed out, not metrics) is out until a scrape answers
again; one whose last answer is older than ``stale_after_ms`` counts as saturated (scorers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from .metrics_text import MetricsError, ServerMetrics, parse

log = logging.getLogger("llm_gateway.pools")


@dataclass(slots=True)
class ServerState:
    endpoint: str
    metrics: ServerMetrics | None = None
    scraped_at: float = 0.0  # monotonic time of the last good scrape
    up: bool = False
    error: str = "not scraped yet"
    in_flight: int = 0  # requests this gateway process has open on it
    sent_since_scrape: int = 0  # picks since its last good scrape (not in its figures yet)
    drain_rate: float = 0.0  # requests finished per second, smoothed
    hit_rate: float = 0.0  # prefix-cache hit rate over the last scrape interval(s), smoothed
    token_rate: float = 0.0  # output tokens generated per second, smoothed
    progress_at: float = 0.0  # last time it was idle or produced a token
    preempted_at: float = float("-inf")  # last time its preemption counter rose (KV cache full)
    # TTFT histogram buckets observed since the pool last collected them (``Pool.after_round``)
    ttft_new: dict[float, float] = field(default_factory=dict)
    _last: tuple[float, float, float, float, float, float] | None = field(default=None, repr=False)

    def thrashing(self, now: float, hold_s: float) -> bool:
        """It preempted requests (its KV cache ran out) within the last ``hold_s`` seconds."""
        return now - self.preempted_at <= hold_s

    def update(self, m: ServerMetrics, now: float) -> None:
        if self._last is not None:
            t0, fin0, q0, h0, g0, p0 = self._last
            dt = now - t0
            if dt > 0 and m.finished >= fin0:
                self.drain_rate = 0.8 * self.drain_rate + 0.2 * (m.finished - fin0) / dt
            if dt > 0 and m.generated >= g0:
                self.token_rate = 0.8 * self.token_rate + 0.2 * (m.generated - g0) / dt
            dq = m.prefix_queries - q0
            if dq > 0 and m.prefix_hits >= h0:
                self.hit_rate = 0.7 * self.hit_rate + 0.3 * (m.prefix_hits - h0) / dq
            if m.preemptions > p0:
                self.preempted_at = now
            before = self.metrics.ttft_buckets if self.metrics is not None else {}
            for le, n in m.ttft_buckets.items():
                d = n - before.get(le, 0.0)
                if d < 0:  # the server restarted: its counts start over
                    d = n
                if d > 0:
                    self.ttft_new[le] = self.ttft_new.get(le, 0.0) + d
        if m.hit_rate is not None:
            self.hit_rate = m.hit_rate
        busy = m.waiting + m.running > 0
        if not busy or self.metrics is None or m.generated != self.metrics.generated:
            self.progress_at = now
        self._last = (now, m.finished, m.prefix_queries, m.prefix_hits, m.generated, m.preemptions)
        self.metrics, self.scraped_at, self.up, self.error = m, now, True, ""


async def scrape_once(session: aiohttp.ClientSession, server: ServerState, timeout_s: float) -> None:
    """One scrape of one server; never raises (a failure marks the server out)."""
    sent_before = server.sent_since_scrape
    try:
        async with session.get(
            f"http://{server.endpoint}/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as r:
            if r.status != 200:
                raise MetricsError(f"HTTP {r.status}")
            text = await r.text()
        m = parse(text)
    except (aiohttp.ClientError, asyncio.TimeoutError, MetricsError, UnicodeDecodeError) as e:
        if server.up:
            log.warning(
                "pool server %s is out: its metrics scrape failed (%s)",
                server.endpoint,
                e or type(e).__name__,
            )
        server.up, server.error = False, str(e) or type(e).__name__
        return
    if not server.up:
        log.info("pool server %s answers its metrics scrape again", server.endpoint)
    server.update(m, time.monotonic())
    server.sent_since_scrape = max(0, server.sent_since_scrape - sent_before)  # picks during the scrape stay


async def run(
    servers: Callable[[], Iterable[ServerState]],
    interval_s: float,
    timeout_s: float,
    on_round: Callable[[], None] | None = None,
) -> None:
    """Scrape ``servers()`` (read every round: DNS may change them) forever (cancel the task to stop)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            started = time.monotonic()
            await asyncio.gather(*(scrape_once(session, s, timeout_s) for s in list(servers())))
            if on_round is not None:
                on_round()
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
