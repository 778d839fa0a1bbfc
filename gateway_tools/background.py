"""A private event loop in a daemon thread: how synchronous callers (SDK tests, the bench)
run the tools' asyncio servers (mock providers, simulated model servers)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on its own daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """``coro``'s result, run on the loop (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def start(self, coro: Coroutine[Any, Any, T]) -> T:
        """What ``coro`` starts; if it fails, the loop and its thread end before the error is raised."""
        try:
            return self.run(coro, timeout=30)
        except BaseException:
            self._halt()
            raise

    def close(self, stop: Coroutine[Any, Any, Any]) -> None:
        """Run ``stop`` (what the loop serves shuts down), then end the loop and its thread; once."""
        if not self.loop.is_running():
            stop.close()
            return
        self.run(stop, timeout=30)
        self._halt()
        self.loop.close()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
