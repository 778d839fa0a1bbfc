"""Run mock providers: start them on an event loop (``start``), until a signal
(``run_forever``, what ``llm-gateway mock-providers`` runs) or on a background thread
(``start_in_thread``, for synchronous callers such as SDK tests)."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from ..background import LoopThread
from .anthropic_messages import _Anthropic
from .azure import _Azure
from .bedrock import _Bedrock
from .common import MockSpec, _Provider
from .gemini import _Gemini
from .openai_responses import _OpenAIPlatform
from .vertex import _Vertex

# --------------------------------------------------------------------------- lifecycle

# One OpenAI server answers both of its dialects (Chat Completions and Responses), as OpenAI does.
_PROVIDERS: dict[str, type[_Provider]] = {
    "openai": _OpenAIPlatform,
    "openai_responses": _OpenAIPlatform,
    "anthropic": _Anthropic,
    "gemini": _Gemini,
    # one Vertex mock is a project serving both publishers
    "vertex_gemini": _Vertex,
    "vertex_anthropic": _Vertex,
    "azure_openai": _Azure,
    "bedrock": _Bedrock,
}


class MockProviders:
    """Running mock servers. ``ports`` maps each spec name to the port it is bound to."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.servers: dict[str, _Provider] = {}
        self._runners: list[web.AppRunner] = []

    async def stop(self) -> None:
        """Stop all servers; stalled requests end at once rather than holding shutdown."""
        for server in self.servers.values():
            server.closing.set()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()


async def start(specs: list[MockSpec]) -> MockProviders:
    """Start one server per spec and return once all are listening (port 0 picks a free port)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"mock provider names must be unique: {names}")
    mocks = MockProviders()
    try:
        for spec in specs:
            if spec.dialect not in _PROVIDERS:
                raise ValueError(f"unknown dialect {spec.dialect!r} for mock {spec.name!r}")
            server = _PROVIDERS[spec.dialect](spec)
            runner = web.AppRunner(
                server.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
            )
            await runner.setup()
            mocks._runners.append(runner)
            site = web.TCPSite(runner, spec.host, spec.port)
            await site.start()
            mocks.servers[spec.name] = server
            mocks.ports[spec.name] = int(runner.addresses[0][1])
    except BaseException:
        await mocks.stop()
        raise
    return mocks


def run_forever(specs: list[MockSpec]) -> None:
    """Serve the mocks until SIGINT or SIGTERM, then stop cleanly and return (exit code 0)."""

    async def main() -> None:
        mocks = await start(specs)
        for spec in specs:
            print(
                f"mock {spec.name} ({spec.dialect}) listening on http://{spec.host}:{mocks.ports[spec.name]}",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await mocks.stop()

    asyncio.run(main())


class BackgroundMocks:
    """Mocks served by a private event loop in a daemon thread, for synchronous callers such as SDK tests."""

    def __init__(self, specs: list[MockSpec]) -> None:
        self._loop = LoopThread("mock-providers")
        self.mocks = self._loop.start(start(specs))
        self.ports = self.mocks.ports

    def stop(self) -> None:
        self._loop.close(self.mocks.stop())

    def __enter__(self) -> BackgroundMocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(specs: list[MockSpec]) -> BackgroundMocks:
    """Start the mocks on a background thread; call ``.stop()`` (or use ``with``) when done."""
    return BackgroundMocks(specs)
