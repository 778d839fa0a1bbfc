"""Start N vLLM OpenAI-compatible servers on free ports, wait until they answer, stop them by PID.

Why a separate python: vLLM's CPU build pins a torch wheel PyPI does not serve,
so it lives in its own venv (README "A real engine in CI"), never in the
gateway's. The servers run ``python -m vllm.entrypoints.openai.api_server`` (the
``vllm`` console script fails looking up its own distribution name) with prefix
caching on. Each replica runs in its own session, so stopping it (SIGTERM to
its process group, SIGKILL after a grace period) also ends the engine-core
child process vLLM forks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway_tools.ports import free_port

__all__ = ["Replica", "VllmStartError", "replicas", "start_vllm_replicas", "stop_replicas"]

# The engine's KV cache on CPU, in GiB (vLLM's VLLM_CPU_KVCACHE_SPACE; its default is 4 GiB a server).
DEFAULT_KV_GIB = "1"


class VllmStartError(RuntimeError):
    """A replica exited or did not answer in time; the message carries its log's tail."""


@dataclass
class Replica:
    """One running server: its port, its process and its log file."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _ready(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r,
    ):
        return r.status == 200
    return False


def start_vllm_replicas(
    n: int,
    python: str,
    model_dir: str | Path,
    *,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    log_dir: str | Path | None = None,
) -> list[Replica]:
    """Start ``n`` servers of ``model_dir`` with ``python`` (the vLLM venv's) and wait until all answer
    ``/v1/models``. Raises VllmStartError (after stopping them all) if one exits or times out."""
    logs = Path(log_dir or tempfile.mkdtemp(prefix="vllm-replicas-"))
    logs.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KV_GIB)
    # Two servers on two cores: let each use them without pinning to the same core.
    child_env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    child_env.setdefault("VLLM_NO_USAGE_STATS", "1")
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env.pop("PYTHONPATH", None)  # the gateway's modules are not the engine's business
    started: list[Replica] = []
    try:
        for _ in range(n):
            port = free_port()
            argv = [
                python,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(model_dir),
                "--enable-prefix-caching",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra_args,
            ]
            log = logs / f"vllm-{port}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen(
                    argv,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=child_env,
                    start_new_session=True,
                )
            started.append(Replica(port=port, proc=proc, log=log, argv=argv))
        deadline = time.monotonic() + timeout
        waiting = list(started)
        while waiting:
            for r in list(waiting):
                if r.proc.poll() is not None:
                    raise VllmStartError(
                        f"vLLM on port {r.port} exited with code {r.proc.returncode}:\n{r.tail()}"
                    )
                if _ready(r.port):
                    waiting.remove(r)
            if waiting and time.monotonic() > deadline:
                r = waiting[0]
                raise VllmStartError(f"vLLM on port {r.port} not ready within {timeout:.0f}s:\n{r.tail()}")
            if waiting:
                time.sleep(0.5)
    except BaseException:
        stop_replicas(started)
        raise
    return started


def stop_replicas(replicas: Sequence[Replica], grace: float = 20.0) -> None:
    """SIGTERM each replica's process group (its own session), SIGKILL what is left after ``grace``."""
    for r in replicas:
        if r.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for r in replicas:
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
        # The group may still hold the engine-core child after the server exited: end it, and
        # wait until the group is gone so the caller can reuse the memory and the port.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r.proc.pid, signal.SIGKILL)
        gone = time.monotonic() + 10
        while time.monotonic() < gone:
            try:
                os.killpg(r.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)


@contextlib.contextmanager
def replicas(n: int, python: str, model_dir: str | Path, **kwargs: object) -> Iterator[list[Replica]]:
    """``start_vllm_replicas`` as a context manager (a pytest fixture can ``yield from`` it)."""
    started = start_vllm_replicas(n, python, model_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield started
    finally:
        stop_replicas(started)
