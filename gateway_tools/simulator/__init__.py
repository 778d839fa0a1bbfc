"""A pool of simulated vLLM model servers, to develop and test endpoint picking without GPUs.

Each server speaks what vLLM's OpenAI-compatible server speaks (``/v1/chat/completions``,
streamed or not; ``/v1/completions`` with ``prompt`` and ``suffix``; ``/v1/models``;
``/health``) and exposes ``/metrics`` under vLLM's metric names
(``vllm:num_requests_waiting``, ``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc``,
``vllm:cache_config_info``, ``vllm:prefix_cache_queries_total``, ``vllm:prefix_cache_hits_total``,
``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``, ...). Behind them
runs vLLM's scheduling model (``engine.py``): continuous batching up to ``max_num_seqs``, a
paged KV cache with block-hash prefix caching and LRU eviction, prefill time per uncached
token, decode steps that slow with the batch, queueing when slots or blocks run out. The
default profile is Llama-3.1-8B on an A100 40GB (``engine.Profile`` cites its source);
``time_scale`` shrinks every step (0.05 = twenty times faster than that GPU) so tests run on
two CPU cores. Tokens are whitespace-separated words.

Control, per server: ``GET /sim/stats`` (requests served, queue, KV use, prefix-cache
counters, the last user texts seen) and ``POST /sim/fault {"fault": F}`` with F one of
``none``, ``slow``, ``stalled``, ``kv_thrash``, ``down`` (``down`` closes the port; set
``none`` through the Python API to reopen it).

Command line::

    llm-gateway simulate-pool --servers 4 --port 9100 --model sim-llama --time-scale 0.1 \\
        [--kv-blocks 2000] [--max-num-seqs 64] [--fault 2=stalled]

serves four servers on ports 9100-9103 (``--port 0``: free ports, printed) until Ctrl-C.

Python::

    from gateway_tools.simulator import start_pool_in_thread
    with start_pool_in_thread(4, model="sim-llama", time_scale=0.05) as pool:
        pool.ports                  # [port, ...]
        pool.endpoints              # ["127.0.0.1:port", ...]
        pool.stats(0)               # dict, as /sim/stats
        pool.set_fault(1, "down")   # and "none" to bring it back

or ``await start_pool(...)`` on a running event loop (returns a ``SimPool``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from aiohttp import web

from ..background import LoopThread
from .engine import DEFAULT_PROFILE, Profile
from .server import FAULTS, SimServer

__all__ = [
    "DEFAULT_PROFILE",
    "FAULTS",
    "Profile",
    "SimPool",
    "SimServer",
    "start_pool",
    "start_pool_in_thread",
]


class SimPool:
    """Running simulated servers: ``servers[i]`` listens on ``ports[i]``."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.servers: list[SimServer] = []
        self.ports: list[int] = []
        self._runners: list[web.AppRunner] = []
        self._sites: list[web.TCPSite | None] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.ports]

    def stats(self, i: int) -> dict[str, Any]:
        return self.servers[i].stats()

    async def set_fault(self, i: int, fault: str) -> None:
        """Apply a fault to server ``i``; ``down`` closes its port, any other fault reopens it."""
        self.servers[i].set_fault(fault)
        site = self._sites[i]
        if fault == "down" and site is not None:
            await site.stop()
            self._sites[i] = None
        elif fault != "down" and site is None:
            site = web.TCPSite(self._runners[i], self.host, self.ports[i], reuse_address=True)
            await site.start()
            self._sites[i] = site

    async def stop(self) -> None:
        for s in self.servers:
            await s.engine.stop()
        runners, self._runners = self._runners, []
        for r in runners:
            await r.cleanup()


async def start_pool(
    n: int,
    *,
    model: str = "sim-llama",
    host: str = "127.0.0.1",
    ports: list[int] | None = None,
    time_scale: float = 1.0,
    profile: Profile = DEFAULT_PROFILE,
    num_blocks: int | None = None,
    max_num_seqs: int | None = None,
    default_output_tokens: int = 32,
    faults: dict[int, str] | None = None,
) -> SimPool:
    """Start ``n`` servers (on ``ports``, or free ports) and return once all listen."""
    if num_blocks is not None:
        profile = replace(profile, num_blocks=num_blocks)
    if max_num_seqs is not None:
        profile = replace(profile, max_num_seqs=max_num_seqs)
    pool = SimPool(host)
    try:
        for i in range(n):
            server = SimServer(model, profile, time_scale, default_output_tokens, name=f"sim-{i}")
            server.engine.start()
            runner = web.AppRunner(
                server.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
            )
            await runner.setup()
            pool._runners.append(runner)
            site = web.TCPSite(runner, host, ports[i] if ports else 0, reuse_address=True)
            await site.start()
            pool.servers.append(server)
            pool._sites.append(site)
            pool.ports.append(int(runner.addresses[0][1]))
        for i, fault in (faults or {}).items():
            await pool.set_fault(i, fault)
    except BaseException:
        await pool.stop()
        raise
    return pool


class BackgroundPool:
    """A :class:`SimPool` on a private event loop in a daemon thread, for synchronous callers."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        self._loop = LoopThread("sim-pool")
        self.pool = self._loop.start(start_pool(n, **kwargs))
        self.ports = self.pool.ports
        self.endpoints = self.pool.endpoints

    def stats(self, i: int) -> dict[str, Any]:
        return self._loop.run(_call(self.pool.stats, i))

    def set_fault(self, i: int, fault: str) -> None:
        self._loop.run(self.pool.set_fault(i, fault))

    def stop(self) -> None:
        self._loop.close(self.pool.stop())

    def __enter__(self) -> BackgroundPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def start_pool_in_thread(n: int, **kwargs: Any) -> BackgroundPool:
    """``start_pool`` on a background thread; ``.stop()`` it (or use ``with``) when done."""
    return BackgroundPool(n, **kwargs)


def run_forever(n: int, **kwargs: Any) -> None:
    """Serve until SIGINT/SIGTERM (what ``llm-gateway simulate-pool`` runs)."""
    import signal

    async def main() -> None:
        pool = await start_pool(n, **kwargs)
        for s, ep in zip(pool.servers, pool.endpoints, strict=True):
            print(f"simulated vLLM server {s.name} ({s.model}) listening on http://{ep}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await pool.stop()

    asyncio.run(main())
