"""Health of the ext_proc workers: the grpc.health.v1 service they serve, and Envoy's
active health check and outlier detection on the ext_proc cluster built on it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ext_proc import envoy_config
from ext_proc.config import load_config, parse_config
from ext_proc.health_service import EXT_PROC_SERVICE
from gateway_tools.supervisor import Stack, port_open
from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports, start_stack

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MOCK_KEYS = {"MOCK_OPENAI_API_KEY": "k1", "MOCK_ANTHROPIC_API_KEY": "k2", "MOCK_GEMINI_API_KEY": "k3"}


def check(port: int, service: str = "", timeout: float = 2.0) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return reply.status


# ---- the rendered cluster ------------------------------------------------------------------
def test_ext_proc_cluster_is_health_checked_and_ejects_failing_workers() -> None:
    cluster = envoy_config.render(load_config())["static_resources"]["clusters"][0]
    assert cluster["name"] == "ext_proc"
    (hc,) = cluster["health_checks"]
    assert hc["grpc_health_check"] == {"service_name": EXT_PROC_SERVICE}
    # Marked unhealthy within a few seconds, also while no request flows.
    interval, timeout = (float(hc[k].rstrip("s")) for k in ("interval", "timeout"))
    assert interval <= 2 and hc["no_traffic_interval"] == hc["interval"] and timeout < interval
    assert hc["unhealthy_threshold"] == 2 and (interval + timeout) * hc["unhealthy_threshold"] <= 3
    od = cluster["outlier_detection"]
    assert od["consecutive_gateway_failure"] <= 3 and od["enforcing_consecutive_gateway_failure"] == 100
    # Health checks speak gRPC: the cluster is HTTP/2.
    assert (
        "http2_protocol_options"
        in cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]["explicit_http_config"]
    )
    # `up` runs the same cluster in its live bootstrap.
    live = envoy_config.render_live_bootstrap(load_config(), Path("/nonexistent"), Path("/dev/null"))
    assert live["static_resources"]["clusters"][0] == cluster


# ---- a worker's own health service -----------------------------------------------------------
@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """One `serve` process with a 3 s shutdown delay."""
    cfg = config_on_free_ports()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = cfg["ext_proc"]["port"]
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (owned by the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ext_proc", "serve", "--config", str(path), "--shutdown-delay", "3"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **MOCK_KEYS},
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_worker_serves_grpc_health_and_says_not_serving_while_shutting_down(worker) -> None:
    proc, port = worker
    assert check(port) == SERVING and check(port, EXT_PROC_SERVICE) == SERVING
    with pytest.raises(grpc.RpcError) as e:
        check(port, "no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while check(port, EXT_PROC_SERVICE) == SERVING:
        assert time.monotonic() < deadline, "still SERVING after SIGTERM"
        time.sleep(0.05)
    # Still answering (the shutdown delay): health checkers see NOT_SERVING, not a dead port.
    assert check(port) == NOT_SERVING and check(port, EXT_PROC_SERVICE) == NOT_SERVING
    assert proc.wait(timeout=20) == 0


# ---- Envoy in front of two workers --------------------------------------------------------------
def clusters(stack: Stack) -> str:
    admin = stack.config.admin
    with urllib.request.urlopen(f"http://{admin.address}:{admin.port}/clusters", timeout=5) as r:
        return r.read().decode()


def host_stat(stack: Stack, port: int, stat: str) -> str:
    m = re.search(rf"^ext_proc::127\.0\.0\.1:{port}::{stat}::(.*)$", clusters(stack), re.M)
    assert m, f"no {stat} for ext_proc host {port} in /clusters"
    return m.group(1)


def wait_for(what: str, predicate, timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not {what} within {timeout:.0f}s"
        time.sleep(0.1)
    return time.monotonic() - start


def chat(stack: Stack) -> dict:
    req = urllib.request.Request(
        stack.base_url + "/v1/chat/completions",
        method="POST",
        data=json.dumps({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return json.loads(r.read())


def test_envoy_stops_sending_to_a_stopped_worker_and_takes_it_back(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, config_on_free_ports(workers=2))
    try:
        first, second = stack.config.extproc_ports()
        stopped = next(c for c in stack.children if c.name == "ext_proc-1")
        assert stopped.proc is not None and stopped.argv[stopped.argv.index("--port") + 1] == str(second)
        for port in (first, second):
            wait_for("healthy", lambda p=port: host_stat(stack, p, "health_flags") == "healthy")
        for _ in range(6):
            chat(stack)
        assert int(host_stat(stack, second, "rq_total")) > 0  # both workers serve

        os.kill(stopped.proc.pid, signal.SIGSTOP)  # hung, not dead: its port still accepts connections
        try:
            took = wait_for(
                "marked unhealthy", lambda: "failed_active_hc" in host_stat(stack, second, "health_flags")
            )
            assert took < 6, f"marked unhealthy only after {took:.1f}s"
            assert host_stat(stack, second, "health_flags") == "/failed_active_hc/active_hc_timeout"
            assert host_stat(stack, first, "health_flags") == "healthy"
            before = int(host_stat(stack, second, "rq_total"))
            for _ in range(20):
                assert chat(stack)["choices"][0]["message"]["content"]
            assert int(host_stat(stack, second, "rq_total")) == before  # all went to the other worker
        finally:
            os.kill(stopped.proc.pid, signal.SIGCONT)
        wait_for("healthy again", lambda: host_stat(stack, second, "health_flags") == "healthy")
        for _ in range(6):
            chat(stack)
        assert int(host_stat(stack, second, "rq_total")) > before
    finally:
        stack.stop()


def test_the_health_checked_bootstrap_passes_envoy_validate(tmp_path: Path) -> None:
    """With workers behind a DNS name (compose, Kubernetes), as rendered for containers."""
    from gateway_tools.supervisor import envoy_binary

    text = (Path(__file__).resolve().parents[1] / "config" / "compose.yaml").read_text()
    out = envoy_config.write(parse_config(text, "compose.yaml"), tmp_path / "envoy.yaml")
    assert "grpc_health_check" in out.read_text()
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
