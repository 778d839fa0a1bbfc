"""An ext_proc worker that dies or hangs mid-request, on the real stack.

Issue 13: the requests in flight on a killed worker got a 500 with an empty
body. Envoy now opens a stream the worker never answered on another worker
(``envoy_config.worker_retry_policy``), and answers every other failed stream
with an error in the client's dialect (``envoy_config.worker_failure_mappers``):
503 "retry" before any provider was called, 502 once one was, 504 for a worker
that stopped answering. The supervisor starts the killed workers again.
Every worker here is the test's own child's child: killed by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ext_proc import dialects, envoy_config
from ext_proc.config import DEFAULT_CONFIG, load_config
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.redis_server import RedisServer
from tests.stack import config_on_free_ports, start_stack

BOUND_S = 30.0  # every wait below ends by then, or the test fails

# One request per client dialect, for a model whose primary is the OpenAI mock.
CALLS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "openai": (
        "/v1/chat/completions",
        {"authorization": f"Bearer {DEMO_KEY}"},
        {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]},
    ),
    "anthropic": (
        "/v1/messages",
        {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"},
        {"model": "gpt-5.5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "gemini": (
        "/v1beta/models/gpt-5.5:generateContent",
        {"x-goog-api-key": DEMO_KEY},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ),
}


def error_message(dialect: str, status: int, body: bytes) -> str:
    """The message of an error body shaped as ``dialect``'s own API shapes it (fails otherwise)."""
    doc = json.loads(body)
    if dialect == "openai":
        assert set(doc) == {"error"} and {"message", "type"} <= set(doc["error"]), doc
    elif dialect == "anthropic":
        assert doc["type"] == "error" and {"type", "message"} <= set(doc["error"]), doc
    else:
        assert doc["error"]["code"] == status and doc["error"]["status"], doc
    return doc["error"]["message"]


# ---- the rendered config ---------------------------------------------------------------------------
def test_every_ext_proc_stream_is_retried_on_another_worker_when_none_answered() -> None:
    boot = envoy_config.render(load_config())
    text = json.dumps(boot)
    filters = re.findall(r'"grpc_service": (\{.*?"initial_metadata".*?\]\})', text)
    assert len(filters) >= 4  # router stage, and the upstream, guard and observer stages
    for f in filters:
        assert '"retry_policy"' in f
    policy = envoy_config.worker_retry_policy()
    assert {"connect-failure", "reset"} <= set(policy["retry_on"].split(","))
    assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == "ext_proc"]
    # Every stream a dead worker held is retried at once: not Envoy's default of 3.
    assert cluster["circuit_breakers"]["thresholds"][0]["max_retries"] >= 100_000


def test_failed_router_streams_get_an_error_in_each_dialect() -> None:
    hcm = envoy_config.render(load_config())["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    mappers = hcm["local_reply_config"]["mappers"]
    ours = envoy_config.worker_failure_mappers()
    assert mappers[: len(ours)] == ours  # before Envoy's other local replies: the first match wins
    said = {json.dumps(m["filter"]) for m in ours}
    for d in dialects.DIALECTS.values():
        assert any(f'"exact": "{d.name}"' in f for f in said), d.name
    statuses = {m["status_code"] for m in ours}
    assert statuses >= {502, 503, 504}
    for m in ours:
        body = m["body_format_override"]
        assert body["content_type"] == "application/json" and json.loads(
            body["text_format_source"]["inline_string"]
        )


# ---- the real stack ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    """Two workers; budgets in Redis with a long timeout, so an admission waits for a paused Redis."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["tenants"]["demo"]["limits"] = {"requests_per_minute": 100_000}
    cfg["redis"] = {
        "url": redis_server.url,
        "key_prefix": "wf",
        "on_failure": "fail_open",
        "timeout_ms": 4000,
    }
    s = start_stack(tmp_path_factory.mktemp("worker-failures"), config_on_free_ports(cfg, workers=2))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Stack:
    return stack


def workers(stack: Stack) -> list[Any]:
    return [c for c in stack.children if c.name.startswith("ext_proc")]


def ext_proc_hosts(stack: Stack) -> str:
    admin = stack.config.admin
    with urllib.request.urlopen(f"http://{admin.address}:{admin.port}/clusters", timeout=5) as r:
        return "\n".join(line for line in r.read().decode().splitlines() if line.startswith("ext_proc::"))


def host_stat(stack: Stack, port: int, stat: str) -> str:
    m = re.search(rf"^ext_proc::[\d.]+:{port}::{stat}::(.*)$", ext_proc_hosts(stack), re.M)
    assert m, f"no {stat} for ext_proc host {port}"
    return m.group(1)


def cluster_stat(stack: Stack, name: str) -> int:
    admin = stack.config.admin
    with urllib.request.urlopen(
        f"http://{admin.address}:{admin.port}/stats?filter=^cluster\\.ext_proc\\.{name}$", timeout=5
    ) as r:
        m = re.search(rf"{name}: (\d+)", r.read().decode())
    return int(m.group(1)) if m else 0


def wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def all_workers_serve(stack: Stack) -> None:
    """The supervisor has started every worker again and Envoy sends to each."""
    for c in workers(stack):
        # Alive first: Envoy may still call a just-killed worker healthy until its next check.
        wait_for(f"{c.name} running", lambda c=c: c.proc is not None and c.proc.poll() is None)
        port = int(c.argv[c.argv.index("--port") + 1])
        wait_for(
            f"{c.name} healthy in Envoy", lambda p=port: host_stat(stack, p, "health_flags") == "healthy"
        )


def kill(child: Any) -> None:
    os.kill(child.proc.pid, signal.SIGKILL)


def restarts(stack: Stack) -> dict[str, float]:
    """``llm_gateway_worker_restarts_total`` by child, from the supervisor's /metrics."""
    with urllib.request.urlopen(stack.urls()["supervisor metrics"], timeout=5) as r:
        text = r.read().decode()
    return {
        m[0]: float(m[1])
        for m in re.findall(r'llm_gateway_worker_restarts_total\{child="([^"]+)"\} (\S+)', text)
    }


async def send_all(
    stack: Stack,
    during: Callable[[], Any],
    n: int = 6,
    settle: float = 0.5,
) -> list[tuple[str, int, bytes, dict[str, str]]]:
    """``n`` requests in each dialect at once; ``during()`` runs ``settle`` seconds later."""

    async def one(session: aiohttp.ClientSession, dialect: str) -> tuple[str, int, bytes, dict[str, str]]:
        path, headers, body = CALLS[dialect]
        async with session.post(stack.base_url + path, json=body, headers=headers) as r:
            return dialect, r.status, await r.read(), dict(r.headers)

    timeout = aiohttp.ClientTimeout(total=BOUND_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session, d)) for _ in range(n) for d in CALLS]
        await asyncio.sleep(settle)
        during()
        return await asyncio.gather(*tasks)


def test_streams_a_dead_worker_never_answered_are_retried_on_the_other(
    stack: Stack, mocks: MockAdmin
) -> None:
    all_workers_serve(stack)
    victim = workers(stack)[1]
    port = int(victim.argv[victim.argv.index("--port") + 1])
    before = cluster_stat(stack, "upstream_rq_retry_success")
    os.kill(victim.proc.pid, signal.SIGSTOP)  # it reads nothing: streams to it wait for a first answer
    try:

        def kill_when_it_holds_streams() -> None:
            wait_for(
                "streams waiting on the stopped worker", lambda: int(host_stat(stack, port, "rq_active")) > 0
            )
            kill(victim)

        results = asyncio.run(send_all(stack, kill_when_it_holds_streams, n=4, settle=0.2))
    finally:
        if victim.proc.poll() is None:
            os.kill(victim.proc.pid, signal.SIGCONT)
    assert [r[:2] for r in results if r[1] != 200] == []
    assert cluster_stat(stack, "upstream_rq_retry_success") > before
    all_workers_serve(stack)


def test_a_worker_dying_while_a_provider_answers_is_a_502_in_the_clients_dialect(
    stack: Stack, mocks: MockAdmin
) -> None:
    all_workers_serve(stack)
    before = restarts(stack)
    mocks.fault("openai", mode="slow", delay_ms=2000)
    results = asyncio.run(send_all(stack, lambda: [kill(c) for c in workers(stack)]))
    for dialect, status, body, _ in results:
        assert status == 502, (dialect, status, body)
        assert "stopped while a provider was answering" in error_message(dialect, status, body)
    assert mocks.stats("openai")["requests"] == len(results)
    # The supervisor starts both again, counts it, and Envoy sends to them again.
    all_workers_serve(stack)
    after = restarts(stack)
    assert {c: after[c] - before[c] for c in after} == {"ext_proc-0": 1, "ext_proc-1": 1, "mock-providers": 0}
    assert stack.failure is None
    assert "restarted by the supervisor after signal SIGKILL" in Path(workers(stack)[0].log_path).read_text()


def test_a_worker_dying_before_any_provider_is_a_503_to_retry(
    stack: Stack, mocks: MockAdmin, redis_server: RedisServer
) -> None:
    """Admissions wait for a paused Redis (the workers answered the headers, not yet the body)."""
    all_workers_serve(stack)
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        results = asyncio.run(send_all(stack, lambda: [kill(c) for c in workers(stack)], settle=1.0))
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    for dialect, status, body, headers in results:
        # Anthropic's clients know an overload as 529; the others get 503.
        assert status == (529 if dialect == "anthropic" else 503), (dialect, status, body)
        assert "before any provider was called" in error_message(dialect, status, body)
        assert headers.get("x-should-retry") == "true"  # the official SDKs retry it
    assert sum(mocks.stats(p)["requests"] for p in ("openai", "anthropic", "gemini")) == 0
    all_workers_serve(stack)


def test_a_hung_worker_is_a_504_in_the_clients_dialect(stack: Stack, mocks: MockAdmin) -> None:
    all_workers_serve(stack)
    stopped = workers(stack)
    for c in stopped:
        os.kill(c.proc.pid, signal.SIGSTOP)
    try:
        results = asyncio.run(send_all(stack, lambda: None, n=2, settle=0))
    finally:
        for c in stopped:
            os.kill(c.proc.pid, signal.SIGCONT)
    details = stack.access_log.read_text(errors="replace")[-4000:]  # Envoy's reasons, if this fails
    for dialect, status, body, headers in results:
        # Mostly the message timeout (504). Under load Envoy has also given up on a
        # stream to a hung worker as a gRPC error before it (seen once on CI): then the
        # answer is the "before any provider" 503, which is as true (no provider was
        # called) and tells the SDK to retry. Either is clear, in the client's dialect.
        message = error_message(dialect, status, body)
        if status == 504:
            assert "did not answer in time" in message, (dialect, message, details)
        else:
            assert status == (529 if dialect == "anthropic" else 503), (dialect, status, body, details)
            assert "before any provider was called" in message, (dialect, message, details)
            assert headers.get("x-should-retry") == "true", headers
    assert sum(mocks.stats(p)["requests"] for p in ("openai", "anthropic", "gemini")) == 0
    all_workers_serve(stack)
