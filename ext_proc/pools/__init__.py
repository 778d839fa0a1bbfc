"""Pools of self-hosted model servers: scraping, scoring, picking (docs/pools.md).

``PoolSet`` holds one ``Pool`` per provider with ``endpoints``; it is built with each
``GatewayState`` and takes over the previous state's pools (their scraped state and prefix
affinity) when endpoints and settings are unchanged. Its scrapers run on the ext_proc
event loop: ``await start()`` once the loop runs, ``stop()`` when the state is replaced.

Modules: ``metrics_text`` (parse a server's /metrics), ``scraper`` (scrape loop, per-server
state), ``prefix`` (prompt blocks, affinity table), ``scorers`` (load and scores),
``picker`` (pick or saturated), ``metrics`` (the gateway's own pool metrics), ``cost`` and
``api_ttft`` (cost-aware routing: prices, and the SLO held against measured first tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ..config import GatewayConfig, PoolSettings
from . import metrics as M
from .api_ttft import ApiFirstTokens
from .picker import Pick, Pool, Saturated
from .scraper import run

__all__ = ["Pick", "Pool", "PoolSet", "Saturated"]


class PoolSet:
    def __init__(self, config: GatewayConfig, previous: PoolSet | None = None) -> None:
        self.pools: dict[str, Pool] = {}
        # models whose equal-tier backends go cheapest first (``cost.py``)
        self.cost_models = frozenset(m for m, s in config.models.items() if s.prefer == "cheapest")
        # API backends held to their models' SLO: the first-token times the gateway measured
        self.api_ttft: ApiFirstTokens = ApiFirstTokens(
            config, previous.api_ttft if previous is not None else None
        )
        old = {p.key(): p for p in previous.pools.values()} if previous is not None else {}
        for name, p in config.providers.items():
            if not p.endpoints:
                continue
            pool = Pool(name, list(p.endpoints), p.pool or PoolSettings())
            self.pools[name] = old.get(pool.key(), pool)

    def get(self, provider: str) -> Pool | None:
        return self.pools.get(provider)

    async def start(self, first_round_timeout_s: float = 2.0) -> None:
        """Start the scrapers not yet running; wait (bounded) until each pool was scraped once."""
        waits = []
        for pool in self.pools.values():
            if pool.task is None or pool.task.done():
                done = asyncio.Event()
                pool.task = asyncio.get_running_loop().create_task(_run(pool, done))
                waits.append(done.wait())
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), first_round_timeout_s)

    def stop(self, keep: PoolSet | None = None) -> None:
        """Cancel the scrapers of pools ``keep`` (the next state) does not take over."""
        kept = {id(p) for p in keep.pools.values()} if keep is not None else set()
        for pool in self.pools.values():
            if id(pool) not in kept and pool.task is not None:
                pool.task.cancel()
                pool.task = None


async def _run(pool: Pool, done: asyncio.Event) -> None:
    """Resolve (DNS-named endpoints, every ``dns_refresh_ms``) and scrape, forever."""
    s = pool.settings
    if pool.named():
        await pool.resolve()
    export = _exporter(pool, done)
    resolving: set[asyncio.Task[None]] = set()

    def after_round() -> None:
        export()
        if pool.named() and not resolving and time.monotonic() - pool.resolved_at > s.dns_refresh_ms / 1000:
            task = asyncio.get_running_loop().create_task(pool.resolve())
            resolving.add(task)
            task.add_done_callback(resolving.discard)

    # an answer later than stale_after_ms is stale anyway: that is the scrape's timeout
    await run(
        lambda: pool.servers.values(), s.scrape_interval_ms / 1000, s.stale_after_ms / 1000, after_round
    )


def _exporter(pool: Pool, done: asyncio.Event) -> Callable[[], None]:
    def export() -> None:
        now, hold = time.monotonic(), pool.settings.preemption_hold_ms / 1000
        pool.after_round(now)
        if pool.ttft_p90 is not None:
            M.TTFT_P90.labels(pool.name).set(pool.ttft_p90)
        else:
            with contextlib.suppress(KeyError):
                M.TTFT_P90.remove(pool.name)
        for e, s in pool.servers.items():
            M.SERVER_THRASHING.labels(pool.name, e).set(1 if s.thrashing(now, hold) else 0)
            M.SERVER_UP.labels(pool.name, e).set(1 if s.up else 0)
            M.SERVER_IN_FLIGHT.labels(pool.name, e).set(s.in_flight)
            M.SERVER_HIT_RATE.labels(pool.name, e).set(s.hit_rate)
            if s.metrics is not None:
                M.SERVER_QUEUE.labels(pool.name, e).set(s.metrics.waiting)
                M.SERVER_KV.labels(pool.name, e).set(s.metrics.kv_usage)
        cost = pool.cost()
        if cost is not None:
            M.COST_PER_HOUR.labels(pool.name).set(cost[0])
            if cost[1] is not None:
                M.COST_PER_MILLION.labels(pool.name).set(cost[1])
        done.set()

    return export
