"""Chaos under load: kill a worker, pause and kill Redis, kill the mock providers.

One stack: two ext_proc workers, budgets shared in a real redis-server
(``fail_open``), and a model with two tiers: the supervisor's Anthropic mock
first, then an OpenAI mock this test runs itself (a separate process from the
one the supervisor starts, so killing that one leaves a tier standing). Two
dozen clients keep requests in flight throughout each case: the official
OpenAI and Anthropic SDKs (their standard retries on) and raw Gemini-dialect
requests (no retries, so every error the gateway sends is seen).

What must hold (issue 13): no error where the gateway can fail over or retry;
where it cannot (a worker died with a provider already answering), a clean
error in the client's dialect, which the SDKs retry; never an empty body. The
supervisor starts what was killed again and counts it. Every process killed
here is one this test started (the stack's children, its own redis-server).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools import mocks as mock_servers
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.redis_server import RedisServer
from tests.stack import config_on_free_ports, free_ports, start_stack
from tests.test_redis_hang import pause, resume
from tests.test_worker_failures import all_workers_serve, error_message, restarts, wait_for

MODEL = "chaos"
PREFIX = "chaos"
BACKUP_KEY = "backup-key"
IN_FLIGHT = 8  # clients of each kind: 24 requests in flight


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
def backup() -> Iterator[int]:
    """The second tier: an OpenAI mock in this process, out of the supervisor's reach."""
    (port,) = free_ports(1)
    with mock_servers.start_in_thread([mock_servers.MockSpec("backup", "openai", port, BACKUP_KEY)]):
        yield port


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, backup: int
) -> Iterator[Stack]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["providers"]["backup"] = {
        "dialect": "openai",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "BACKUP_KEY",
    }
    cfg["models"][MODEL] = {
        "per_try_timeout_ms": 3000,
        "per_try_idle_timeout_ms": 3000,
        "backends": [
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
            {"provider": "backup", "model": "gpt-5.5"},
        ],
    }
    cfg["tenants"]["demo"]["limits"] = {"concurrent_requests": 500, "tokens_per_minute": 50_000_000}
    cfg["redis"] = {
        "url": redis_server.url,
        "key_prefix": PREFIX,
        "on_failure": "fail_open",
        "retry_interval_s": 0.2,
    }
    cfg = config_on_free_ports(cfg, workers=2)
    cfg["providers"]["backup"]["base_url"] = f"http://127.0.0.1:{backup}/v1"
    s = start_stack(tmp_path_factory.mktemp("chaos"), cfg, env={"BACKUP_KEY": BACKUP_KEY})
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Stack:
    return stack


# ---- the load ----------------------------------------------------------------------------------------
class Load:
    """Clients of three dialects, each sending one request after another until stopped.

    ``outcomes``: per client kind, what each request came to after the client's own
    retries: "ok", "cut" (a stream that broke after its 200 began: nothing can be
    sent then) or the error. ``errors``: every non-2xx HTTP response any client got,
    retried or not, as (dialect, status, body).
    """

    def __init__(self, stack: Stack):
        self.stack = stack
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.errors: list[tuple[str, int, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def _hooks(self, dialect: str) -> dict[str, Any]:
        """The SDKs' own HTTP client (whichever httpx it is) sees every response, retried ones too."""

        async def on_response(response: Any) -> None:
            if response.status_code >= 400:
                await response.aread()
                self.errors.append((dialect, response.status_code, response.content))

        return {"event_hooks": {"response": [on_response]}}

    async def _run(self) -> None:
        base = self.stack.base_url
        oa = openai.AsyncOpenAI(
            base_url=base + "/v1",
            api_key=DEMO_KEY,
            timeout=30,
            http_client=openai.DefaultAsyncHttpxClient(**self._hooks("openai")),
        )
        an = anthropic.AsyncAnthropic(
            base_url=base,
            api_key=DEMO_KEY,
            timeout=30,
            http_client=anthropic.DefaultAsyncHttpxClient(**self._hooks("anthropic")),
        )
        raw = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            await asyncio.gather(
                *(
                    self._loop(kind, i, oa, an, raw)
                    for kind in ("openai", "anthropic", "gemini")
                    for i in range(IN_FLIGHT)
                )
            )
        finally:
            await raw.close()
            await oa.close()
            await an.close()

    async def _loop(self, kind: str, i: int, oa: Any, an: Any, raw: aiohttp.ClientSession) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            stream = (i + n) % 3 == 0
            try:
                outcome = await {
                    "openai": self._openai,
                    "anthropic": self._anthropic,
                    "gemini": self._gemini,
                }[kind](oa if kind == "openai" else an if kind == "anthropic" else raw, stream)
            except Exception as e:  # every failure is counted, by kind
                outcome = f"{type(e).__name__}: {str(e)[:120]}"
            self.outcomes[(kind, outcome)] += 1

    async def _openai(self, client: openai.AsyncOpenAI, stream: bool) -> str:
        messages: Any = [{"role": "user", "content": "hi"}]
        if not stream:
            r = await client.chat.completions.create(model=MODEL, messages=messages)
            return "ok" if r.choices[0].message.content else "empty answer"
        chunks = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        text = ""
        try:  # the answer began with a 200: a failure now is a stream cut short
            async for chunk in chunks:
                text += "".join(c.delta.content or "" for c in chunk.choices)
        except Exception:
            return "cut"
        return "ok" if text else "empty answer"

    async def _anthropic(self, client: anthropic.AsyncAnthropic, stream: bool) -> str:
        messages: Any = [{"role": "user", "content": "hi"}]
        if not stream:
            r = await client.messages.create(model=MODEL, max_tokens=50, messages=messages)
            return "ok" if r.content and r.content[0].text else "empty answer"  # type: ignore[union-attr]
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=messages) as s:
            try:  # the answer began with a 200: a failure now is a stream cut short
                text = await s.get_final_text()
            except Exception:
                return "cut"
        return "ok" if text else "empty answer"

    async def _gemini(self, session: aiohttp.ClientSession, stream: bool) -> str:
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with session.post(
            f"{self.stack.base_url}/v1beta/models/{MODEL}:generateContent",
            json=body,
            headers={"x-goog-api-key": DEMO_KEY},
        ) as r:
            data = await r.read()
            if r.status != 200:
                self.errors.append(("gemini", r.status, data))
                return f"error {r.status}"
            return (
                "ok" if json.loads(data)["candidates"][0]["content"]["parts"][0]["text"] else "empty answer"
            )

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the load did not stop"

    def total(self) -> int:
        return sum(self.outcomes.values())

    def failed(
        self, kinds: tuple[str, ...] = ("openai", "anthropic", "gemini"), allowed: tuple[str, ...] = ()
    ) -> dict[tuple[str, str], int]:
        return {
            k: n for k, n in self.outcomes.items() if k[0] in kinds and k[1] != "ok" and k[1] not in allowed
        }

    def report(self) -> str:
        return f"outcomes: {dict(self.outcomes)}\nerror responses: {[(d, s, b[:200]) for d, s, b in self.errors]}"


def assert_clean_errors(load: Load, statuses: set[int]) -> None:
    """Every error response was in its client's dialect, with one of ``statuses``: never an empty body."""
    for dialect, status, body in load.errors:
        assert body, f"an empty {status} to a {dialect} client\n{load.report()}"
        error_message(dialect, status, body)
        assert status in statuses, f"{dialect} {status} {body[:300]!r}\n{load.report()}"


def child(stack: Stack, name: str) -> Any:
    return next(c for c in stack.children if c.name == name)


def leases(server: RedisServer) -> dict[str, int]:
    """Concurrency slots held in Redis: sorted sets of leases under the gateway's prefix."""
    r = server.client()
    return {k.decode(): r.zcard(k) for k in r.scan_iter(f"{PREFIX}:*") if r.type(k) == b"zset" and r.zcard(k)}


def store_failures(stack: Stack) -> float:
    total = 0.0
    for port in stack.config.metrics_ports():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            total += sum(
                float(v)
                for v in re.findall(
                    r"^llm_gateway_budget_store_failures_total\{.*\} (\S+)$", r.read().decode(), re.M
                )
            )
    return total


# ---- the cases ---------------------------------------------------------------------------------------
def test_redis_paused_then_killed_admits_everything_and_leaves_no_lease(
    stack: Stack, mocks: MockAdmin, redis_server: RedisServer
) -> None:
    all_workers_serve(stack)
    failures = store_failures(stack)
    with Load(stack) as load:
        time.sleep(1.5)
        pause(redis_server)  # admissions time out against it, then are admitted locally
        time.sleep(2.5)
        resume(redis_server)
        time.sleep(1.5)
    assert load.failed() == {} and load.errors == [], load.report()
    assert store_failures(stack) > failures  # Redis was down while requests flowed
    # The scripts Redis ran late take nothing; the leases of calls given up on are released.
    wait_for("no lease left in Redis", lambda: leases(redis_server) == {})

    with Load(stack) as load:
        time.sleep(1.5)
        redis_server.stop()  # kill -9
        time.sleep(2.0)
        redis_server.start()  # the same port, empty
        time.sleep(2.0)
    assert load.failed() == {}, load.report()
    assert load.errors == [], load.report()
    wait_for("no lease left in Redis", lambda: leases(redis_server) == {})


def test_a_killed_worker_fails_nothing_the_clients_cannot_retry(stack: Stack, mocks: MockAdmin) -> None:
    """The requests in flight on the worker are waiting for the provider (300 ms):
    their answer is lost. The gateway says so in the client's dialect, and the SDKs
    retry it; streams the provider had begun answering may be cut."""
    all_workers_serve(stack)
    before = restarts(stack)["ext_proc-1"]
    mocks.fault("anthropic", mode="slow", delay_ms=300)
    with Load(stack) as load:
        time.sleep(1.5)
        os.kill(child(stack, "ext_proc-1").proc.pid, signal.SIGKILL)
        time.sleep(1.0)
        all_workers_serve(stack)  # started again, and Envoy sends to it again
        time.sleep(1.0)
    assert restarts(stack)["ext_proc-1"] == before + 1
    assert load.failed(kinds=("openai", "anthropic"), allowed=("cut",)) == {}, load.report()
    # Raw clients see what the SDKs retried: 502 (provider answering), 503/529 (none called yet).
    assert set(load.failed(kinds=("gemini",))) <= {("gemini", "error 502"), ("gemini", "error 503")}, (
        load.report()
    )
    assert_clean_errors(load, {502, 503, 529})
    assert load.errors, "no request was in flight on the killed worker: the case proved nothing"
    print(
        f"\nkilled worker: {load.total()} requests, {len(load.errors)} clean error responses, "
        f"{sum(n for (_, o), n in load.outcomes.items() if o == 'cut')} streams cut"
    )


def test_killed_mock_providers_fail_over_to_the_other_tier_and_come_back(
    stack: Stack, mocks: MockAdmin
) -> None:
    all_workers_serve(stack)
    before = restarts(stack)["mock-providers"]
    mocks.fault("anthropic", mode="slow", delay_ms=200)
    with Load(stack) as load:
        time.sleep(1.5)
        old = child(stack, "mock-providers").proc
        os.kill(old.pid, signal.SIGKILL)
        wait_for("the mock providers started again", lambda: child(stack, "mock-providers").proc is not old)
        wait_for("the mock providers answer", lambda: _answers(mocks))
        time.sleep(1.0)
    assert restarts(stack)["mock-providers"] == before + 1
    assert load.failed() == {}, load.report()  # the backup tier answered
    assert load.errors == [], load.report()


def _answers(mocks: MockAdmin) -> bool:
    try:
        mocks.stats("anthropic")
        return True
    except OSError:
        return False


def test_a_provider_stalling_after_its_headers_fails_over(stack: Stack, mocks: MockAdmin) -> None:
    all_workers_serve(stack)
    mocks.fault("anthropic", mode="headers_stall")
    with Load(stack) as load:
        time.sleep(8.0)  # past the model's 3 s per-try timeouts, twice
    assert load.failed(allowed=("cut",)) == {}, load.report()
    assert_clean_errors(load, set())
    assert sum(n for (_, o), n in load.outcomes.items() if o == "ok") > 0
