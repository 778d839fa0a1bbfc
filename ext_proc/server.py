"""The ext_proc gRPC server: one Process() stream per stage invocation.

Envoy opens a stream per client request for the router stage and one per
failover attempt for the upstream stage; the stage is named in the stream's
gRPC metadata. ``read()``/``write()`` on the servicer context measured
cheaper than the async-iterator style (fewer task switches per message).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
import time

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pbg

from . import config_reload, config_watch, metrics
from . import protocol as P
from .config import ConfigError, GatewayConfig
from .health_service import WorkerHealth
from .stages import answer_guard
from .stages import observer as observer_stage
from .stages import refusal as refusal_stage
from .stages import router as router_stage
from .stages import upstream as upstream_stage
from .state import GatewayState

log = logging.getLogger("llm_gateway.server")

MAX_MESSAGE = 64 * 1024 * 1024  # buffered bodies with images exceed gRPC's 4 MiB default


KEEP_VERSIONS = 3  # at most this many configs: the current one and recently replaced ones
# How long a replaced config keeps serving failover attempts of requests routed
# under it: Envoy keeps its routes that long after a switch (``up``'s drain).
DRAIN_SECONDS = 60.0


class ExternalProcessor(pbg.ExternalProcessorServicer):
    def __init__(self, state: GatewayState, drain_seconds: float = DRAIN_SECONDS):
        self.state = state
        self.states: dict[str, GatewayState] = {state.config.version: state}
        self.replaced: dict[str, float] = {}  # version -> when it stops serving attempts
        self.drain_seconds = drain_seconds
        metrics.set_config(state.config.version, ok=True)

    def switch(self, state: GatewayState) -> None:
        """Serve new requests with ``state``; keep replaced ones for in-flight attempts."""
        now = time.monotonic()
        version = state.config.version
        if self.state.config.version != version:
            self.replaced.pop(self.state.config.version, None)  # to the end: replaced last
            self.replaced[self.state.config.version] = now + self.drain_seconds
        self.replaced.pop(version, None)
        self.states[version] = state
        self.state = state
        metrics.set_config(version, ok=True)
        self.prune(now)

    def prune(self, now: float | None = None) -> bool:
        """Drop replaced configs whose drain is over (and the oldest beyond
        ``KEEP_VERSIONS``). A stream still using one keeps it alive until it ends:
        states hold no reference cycles, so the last reference frees them."""
        now = time.monotonic() if now is None else now
        drop = [v for v, until in self.replaced.items() if until <= now]
        kept = [v for v in self.replaced if v not in drop]  # oldest first
        drop += kept[: max(0, len(kept) + 1 - KEEP_VERSIONS)]
        for v in drop:
            self.replaced.pop(v, None)
            self.states.pop(v, None)
        return bool(drop)

    async def Process(self, request_iterator, context):
        state = self.state  # one config version for the whole stream
        stage = P.STAGE_ROUTER
        for key, value in context.invocation_metadata():
            if key == P.STAGE_METADATA:
                stage = value
                break
        try:
            if stage == P.STAGE_UPSTREAM:
                await upstream_stage.run(self.states, state, context)
            elif stage == P.STAGE_OBSERVER:
                await observer_stage.run(state, context)
            elif stage == P.STAGE_GUARD:
                await answer_guard.run(state, context)
            elif stage == P.STAGE_REFUSAL:
                await refusal_stage.run(state, context)
            else:
                await router_stage.run(state, context)
        except asyncio.CancelledError:
            raise  # client went away: Envoy closed the stream
        except Exception:
            log.exception("stream failed in the %s stage", stage)
            raise


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_concurrent_streams", 100_000),
        # gRPC sets SO_REUSEPORT by default: a second server on a taken port
        # would silently share it (and its traffic) instead of failing.
        ("grpc.so_reuseport", 0),
    ]


async def serve(
    config: GatewayConfig,
    port: int,
    metrics_port: int | None,
    ready: asyncio.Event | None = None,
    *,
    watch_config: float = 0.0,
    shutdown_delay: float = 0.0,
    drain_seconds: float = DRAIN_SECONDS,
) -> None:
    """``watch_config``: poll the config file every that many seconds (0: off).
    ``shutdown_delay``: on SIGTERM, say NOT_SERVING and keep serving this long
    (Envoy's health check moves new streams away) before stopping.
    ``drain_seconds``: how long a replaced config serves attempts routed under it."""
    state = GatewayState(config)
    processor = ExternalProcessor(state, drain_seconds)
    server = grpc.aio.server(options=server_options())
    pbg.add_ExternalProcessorServicer_to_server(processor, server)
    health = await WorkerHealth.add_to(server)
    bound = server.add_insecure_port(f"{config.ext_proc.address}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {config.ext_proc.address}:{port}")
    if metrics_port:
        metrics.serve(metrics_port, config.ext_proc.address)
    await server.start()
    await state.pools.start()  # scrape pool servers before serving: unknown counts as saturated
    # Modules, codecs and the config are alive for good: keep the collector
    # from re-scanning them (a full collection of them took 8-12 ms, paid by
    # whichever requests are in flight at that moment).
    gc.freeze()
    log.info("ext_proc listening on %s:%d", config.ext_proc.address, port)
    await health.serving()
    if ready is not None:
        ready.set()
    reloads = Reloads(processor)
    background = [
        asyncio.create_task(LAG.watch()),
        asyncio.create_task(_prune(processor)),
        config_watch.start(lambda: processor.state.config, reloads.request, watch_config),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.request)
    await stop.wait()
    for task in background:
        if task is not None:
            task.cancel()
    await health.shutting_down(shutdown_delay)
    # Let in-flight requests finish (streams included) before exiting.
    await server.stop(grace=10)


async def reload(processor: ExternalProcessor, force: bool = False) -> None:
    """SIGHUP: load the config file again and switch to it if it is valid.

    ``llm-gateway up`` validates before it signals; a failure here (e.g. a
    secret missing in this process's environment) keeps the old config.
    ``force``: switch even to the same text (a provider key file changed).
    The new state is built off the event loop (``config_reload``); requests
    keep being served meanwhile, and the longest stall of the loop is logged.
    """
    current = processor.state
    started = time.monotonic()
    LAG.mark()
    try:
        state = await config_reload.build_state(current.config.source, current, force)
    except ConfigError as e:
        metrics.set_config(current.config.version, ok=False)
        log.error(
            "config reload rejected, still serving %s:\n  %s", current.config.version, "\n  ".join(e.problems)
        )
        return
    if state is None:
        return
    await state.pools.start()
    current.pools.stop(keep=state.pools)
    processor.switch(state)
    # As at start: what is alive now (the new config above all) is never walked
    # by a collection again; a full one took 0.4 s with 20,000 tenants. Streams in
    # flight are frozen too: what of theirs ends up in a reference cycle stays
    # (measured: about 10 objects a switch).
    gc.freeze()
    log.info(
        "switched to config %s in %.1f s; longest event-loop stall meanwhile %.0f ms",
        state.config.version,
        time.monotonic() - started,
        LAG.worst_since_mark * 1000,
    )


class Reloads:
    """One reload at a time; a request during one runs once more after it."""

    def __init__(self, processor: ExternalProcessor):
        self.processor = processor
        self.task: asyncio.Task[None] | None = None
        self.again = False
        self.force = False

    def request(self, force: bool = False) -> asyncio.Task[None]:
        """Start a reload (or ask for one more); the task ends when none is pending."""
        self.force = self.force or force
        if self.task is not None:
            self.again = True
            return self.task
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self.task

    async def _run(self) -> None:
        try:
            while True:
                force, self.force, self.again = self.force, False, False
                try:
                    await reload(self.processor, force)
                except Exception:  # a failed reload must not end later ones
                    log.exception("config reload failed")
                if not self.again:
                    return
        finally:
            self.task = None


class LoopLag:
    """How late the event loop wakes up: a stall holds every request in flight."""

    INTERVAL = 0.025

    def __init__(self) -> None:
        self.worst_since_mark = 0.0

    def mark(self) -> None:
        self.worst_since_mark = 0.0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.INTERVAL)
            lag = max(0.0, loop.time() - t - self.INTERVAL)
            metrics.LOOP_LAG.observe(lag)
            if lag > self.worst_since_mark:
                self.worst_since_mark = lag


LAG = LoopLag()


async def _prune(processor: ExternalProcessor) -> None:
    """Drop drained configs, and hand the memory they used back to the system."""
    while True:
        await asyncio.sleep(1.0)
        if processor.prune():
            _trim_heap()


def _trim_heap() -> None:
    """glibc keeps freed heap pages for reuse: after a big config is freed, give
    them back to the system (README, "Big configs")."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run(
    config: GatewayConfig,
    port: int,
    metrics_port: int | None,
    *,
    watch_config: float = 0.0,
    shutdown_delay: float = 0.0,
    drain_seconds: float = DRAIN_SECONDS,
) -> None:
    asyncio.run(
        serve(
            config,
            port,
            metrics_port,
            watch_config=watch_config,
            shutdown_delay=shutdown_delay,
            drain_seconds=drain_seconds,
        )
    )
