"""A throwaway real redis-server for tests (CI installs the Debian package)."""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from tests.stack import free_ports


class RedisServer:
    """redis-server on 127.0.0.1, no persistence; ``stop()`` kills it, ``start()`` brings it back."""

    def __init__(self, port: int | None = None):
        self.port = port or free_ports(1)[0]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def script_calls(self) -> int:
        """Lua script calls Redis has run so far (``INFO commandstats``)."""
        stats = self.client().info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))

    def start(self, timeout: float = 10.0) -> RedisServer:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is required (apt-get install redis-server; .ci/run does it)"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
