"""The ext_proc gRPC server: one Process() stream per stage invocation.

Envoy opens a stream per client request for the router stage and one per
failover attempt for the upstream stage; the stage is named in the stream's
gRPC metadata. ``read()``/``write()`` on the servicer context measured
cheaper than the async-iterator style (fewer task switches per message).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pbg

from . import metrics
from . import protocol as P
from .config import ConfigError, GatewayConfig, load_config
from .stages import answer_guard
from .stages import observer as observer_stage
from .stages import router as router_stage
from .stages import upstream as upstream_stage
from .state import GatewayState

log = logging.getLogger("llm_gateway.server")

MAX_MESSAGE = 64 * 1024 * 1024  # buffered bodies with images exceed gRPC's 4 MiB default


KEEP_VERSIONS = 3  # configs kept for attempts of requests routed before a switch


class ExternalProcessor(pbg.ExternalProcessorServicer):
    def __init__(self, state: GatewayState):
        self.state = state
        self.states: dict[str, GatewayState] = {state.config.version: state}
        metrics.set_config(state.config.version, ok=True)

    def switch(self, state: GatewayState) -> None:
        """Serve new requests with ``state``; keep recent ones for in-flight attempts."""
        self.states[state.config.version] = state
        while len(self.states) > KEEP_VERSIONS:
            self.states.pop(next(iter(self.states)))
        self.state = state
        metrics.set_config(state.config.version, ok=True)

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


async def serve(config: GatewayConfig, port: int, metrics_port: int | None,
                ready: asyncio.Event | None = None) -> None:
    state = GatewayState(config)
    processor = ExternalProcessor(state)
    server = grpc.aio.server(options=server_options())
    pbg.add_ExternalProcessorServicer_to_server(processor, server)
    bound = server.add_insecure_port(f"{config.ext_proc.address}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {config.ext_proc.address}:{port}")
    if metrics_port:
        metrics.serve(metrics_port, config.ext_proc.address)
    await server.start()
    # Modules, codecs and the config are alive for good: keep the collector
    # from re-scanning them (a full collection of them took 8-12 ms, paid by
    # whichever requests are in flight at that moment).
    gc.freeze()
    log.info("ext_proc listening on %s:%d", config.ext_proc.address, port)
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(processor))
    await stop.wait()
    # Let in-flight requests finish (streams included) before exiting.
    await server.stop(grace=10)


def reload(processor: ExternalProcessor) -> None:
    """SIGHUP: load the config file again and switch to it if it is valid.

    ``llm-gateway up`` validates before it signals; a failure here (e.g. a
    secret missing in this process's environment) keeps the old config.
    """
    current = processor.state
    try:
        config = load_config(current.config.source)
        if config.version != current.config.version:
            processor.switch(GatewayState(config, previous=current))
            log.info("switched to config %s", config.version)
    except ConfigError as e:
        metrics.set_config(current.config.version, ok=False)
        log.error("config reload rejected, still serving %s:\n  %s", current.config.version,
                  "\n  ".join(e.problems))


def run(config: GatewayConfig, port: int, metrics_port: int | None) -> None:
    asyncio.run(serve(config, port, metrics_port))
