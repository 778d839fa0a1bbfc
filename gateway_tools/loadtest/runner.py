"""The load engine: open-loop arrivals or fixed concurrency, timed actions, provider-side sampling.

Open loop is the default because it is what users do: requests keep arriving
at the planned rate whether or not the gateway keeps up, so a slow gateway
shows up as latency and queueing instead of being hidden by a polite client
(closed-loop ``--concurrency`` is there for capacity probing). The mocks'
``/_mock/stats`` are polled during the run: they are the provider side of the
books, independent of anything the gateway reports about itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .traffic import Mix, Planned, Tenant, output_tokens

BACKEND_HEADER = "x-gateway-backend"


@dataclass(slots=True)
class Result:
    """One request as the client saw it (times in seconds since the run started)."""

    t: float
    dialect: str
    model: str
    stream: bool
    prompt_words: int
    tenant: str
    status: int  # 0: no HTTP response (connection error, timeout)
    latency: float
    ttft: float | None  # streamed requests: time to the first body chunk
    tokens: int
    backend: str  # the x-gateway-backend header: the provider's backend that answered, "" if none did
    error: str = ""
    retry_after: str = ""

    @property
    def outcome(self) -> str:
        """ok | rejected (429 by the gateway itself) | client_error | error."""
        if 200 <= self.status < 300 and not self.error:
            return "ok"
        if self.status == 429 and not self.backend:
            return "rejected"
        if 400 <= self.status < 500:
            return "client_error"
        return "error"


@dataclass(frozen=True, slots=True)
class Segment:
    """Open-loop arrivals at ``rate`` per second from ``start`` to ``end``; ``tenant`` forces one."""

    start: float
    end: float
    rate: float
    tenant: Tenant | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """Something done to the system mid-run (a fault, a reconfiguration); returns a note for the report."""

    at: float
    label: str
    run: Callable[[], Awaitable[str]]


@dataclass
class Sample:
    """Provider-side counters at time ``t``; ``pool``: the gateway's pool metrics then, when it
    has pools (``pool_metrics``)."""

    t: float
    stats: dict[str, dict[str, int]]
    pool: dict[str, dict[str, float]] = field(default_factory=dict)


POOL_FAMILIES = {
    "llm_gateway_pool_server_queue": "queue",
    "llm_gateway_pool_server_kv_cache_usage": "kv",
    "llm_gateway_pool_picks": "picks",
    "llm_gateway_pool_saturated": "saturated",
}


def pool_metrics(texts: list[str]) -> dict[str, dict[str, float]]:
    """From the ext_proc workers' ``/metrics``: per server queue and KV use (as the first worker
    scraped them), and picks by reason and saturated requests by outcome (summed over workers)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {k: {} for k in POOL_FAMILIES.values()}
    for n, text in enumerate(texts):
        for fam in text_string_to_metric_families(text):
            key = POOL_FAMILIES.get(fam.name)
            if key is None:
                continue
            for smp in fam.samples:
                if smp.name.endswith("_created"):
                    continue
                lab = smp.labels
                if key in ("queue", "kv"):
                    if n == 0:
                        out[key][f"{lab['pool']}/{lab['server']}"] = smp.value
                else:
                    sub = lab["reason"] if key == "picks" else lab["outcome"]
                    out[key][sub] = out[key].get(sub, 0.0) + smp.value
    return out


def arrivals(segments: list[Segment], poisson: bool, seed: int) -> list[tuple[float, Tenant | None]]:
    """Send times of every segment, merged and sorted."""
    rng = random.Random(seed)
    out: list[tuple[float, Tenant | None]] = []
    for seg in segments:
        if seg.rate <= 0:
            continue
        if poisson:
            t = seg.start + rng.expovariate(seg.rate)
            while t < seg.end:
                out.append((t, seg.tenant))
                t += rng.expovariate(seg.rate)
        else:  # k / rate, not a running sum: the count is exact, no rounding drift
            k = 0
            while (t := seg.start + k / seg.rate) < seg.end:
                out.append((t, seg.tenant))
                k += 1
    out.sort(key=lambda a: a[0])
    return out


@dataclass
class Engine:
    """Drives one scenario's traffic against ``url`` and records everything the report needs."""

    url: str
    mix: Mix
    duration: float
    mocks: dict[str, str] = field(default_factory=dict)  # provider name -> mock admin base URL
    # pool provider name -> its servers' base URLs: simulated servers count their requests
    # (``/sim/stats``), the provider side of the books for a pool
    sims: dict[str, list[str]] = field(default_factory=dict)
    gateway_metrics: list[str] = field(default_factory=list)  # the ext_proc workers' /metrics URLs
    sample_interval: float = 0.5
    max_in_flight: int = 256
    timeout: float = 60.0
    progress: bool = False
    label: str = ""
    results: list[Result] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # open loop: arrivals not sent because max_in_flight requests were pending
    in_flight: int = 0
    _t0: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def run(
        self,
        segments: list[Segment] | None = None,
        concurrency: int = 0,
        actions: list[Action] | None = None,
        poisson: bool = False,
        seed: int = 1,
    ) -> None:
        """Open loop over ``segments``, or ``concurrency`` closed-loop workers for ``duration``."""
        connector = aiohttp.TCPConnector(limit=max(self.max_in_flight, concurrency), force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as client,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as admin,
        ):
            await self._sample(admin)  # baseline before the first request
            self._t0 = time.monotonic()
            self.samples[0].t = 0.0
            background = [asyncio.create_task(self._poll(admin))]
            if self.progress:
                background.append(asyncio.create_task(self._progress()))
            acting = [asyncio.create_task(self._act(a)) for a in actions or []]
            try:
                if concurrency:
                    await self._closed_loop(client, concurrency)
                else:
                    await self._open_loop(client, arrivals(segments or [], poisson, seed))
                await asyncio.gather(*acting)
            finally:
                for task in acting + background:
                    task.cancel()
                for task in acting + background:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if self.progress:
                    sys.stderr.write("\n")
            await self._sample(admin)  # every response is in: the mocks' final counts

    async def _open_loop(
        self, client: aiohttp.ClientSession, plan: list[tuple[float, Tenant | None]]
    ) -> None:
        pending: set[asyncio.Task[None]] = set()
        for at, tenant in plan:
            delay = at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.in_flight >= self.max_in_flight:
                self.dropped += 1
                continue
            task = asyncio.create_task(self._one(client, self.mix.next(tenant), at))
            pending.add(task)
            task.add_done_callback(pending.discard)
        rest = self.duration - self.now()
        if rest > 0:
            await asyncio.sleep(rest)
        if pending:
            await asyncio.gather(*pending)

    async def _closed_loop(self, client: aiohttp.ClientSession, concurrency: int) -> None:
        async def worker() -> None:
            while self.now() < self.duration:
                await self._one(client, self.mix.next(), self.now())

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def _one(self, client: aiohttp.ClientSession, p: Planned, at: float) -> None:
        self.in_flight += 1
        start = time.monotonic()
        status, ttft, body, backend, error, retry_after = 0, None, b"", "", "", ""
        try:
            async with client.request(p.method, self.url + p.path, headers=p.headers, data=p.body) as resp:
                status = resp.status
                backend = resp.headers.get(BACKEND_HEADER, "")
                retry_after = resp.headers.get("retry-after", "")
                chunks = []
                async for chunk in resp.content.iter_any():
                    if ttft is None and p.stream:
                        ttft = time.monotonic() - start
                    chunks.append(chunk)
                body = b"".join(chunks)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            error = type(e).__name__
        finally:
            self.in_flight -= 1
        latency = time.monotonic() - start
        tokens = output_tokens(body, p.stream) if 200 <= status < 300 else 0
        self.results.append(
            Result(
                t=at,
                dialect=p.dialect,
                model=p.model,
                stream=p.stream,
                prompt_words=p.prompt_words,
                tenant=p.tenant,
                status=status,
                latency=latency,
                ttft=ttft,
                tokens=tokens,
                backend="" if backend in ("", "-") else backend,
                error=error,
                retry_after=retry_after,
            )
        )

    async def _act(self, action: Action) -> None:
        delay = action.at - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        at = self.now()
        try:
            note = await action.run()
        except Exception as e:  # the run goes on; the report says what failed
            note = f"failed: {type(e).__name__}: {e}"
        self.events.append({"t": round(at, 3), "label": action.label, "note": note})

    async def _sample(self, admin: aiohttp.ClientSession) -> None:
        stats: dict[str, dict[str, int]] = {}
        for name, base in self.mocks.items():
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                async with admin.get(base + "/_mock/stats") as r:
                    data = await r.json()
                stats[name] = {
                    "requests": int(data.get("requests", 0)),
                    "faulted": int(data.get("faulted", 0)),
                }
        for name, bases in self.sims.items():
            total = 0
            try:
                for base in bases:
                    async with admin.get(base + "/sim/stats") as r:
                        total += int((await r.json()).get("requests", 0))
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                continue  # not a simulator (or down): no books for this pool
            stats[name] = {"requests": total, "faulted": 0}
        pool: dict[str, dict[str, float]] = {}
        if self.gateway_metrics:
            texts = []
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                for url in self.gateway_metrics:
                    async with admin.get(url) as r:
                        texts.append(await r.text())
                pool = pool_metrics(texts)
        self.samples.append(Sample(self.now() if self._t0 else 0.0, stats, pool))

    async def _poll(self, admin: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self.sample_interval)
            await self._sample(admin)

    async def _progress(self) -> None:
        while True:
            elapsed = min(self.now(), self.duration)
            done = int(30 * elapsed / self.duration) if self.duration else 30
            ok = sum(1 for r in self.results if r.outcome == "ok")
            rejected = sum(1 for r in self.results if r.outcome == "rejected")
            failed = len(self.results) - ok - rejected
            sys.stderr.write(
                f"\r{self.label} [{'#' * done:<30}] {elapsed:5.1f}/{self.duration:.0f}s "
                f"done {len(self.results)} ok {ok} rejected {rejected} failed {failed} "
                f"in flight {self.in_flight}   "
            )
            sys.stderr.flush()
            await asyncio.sleep(0.25)
