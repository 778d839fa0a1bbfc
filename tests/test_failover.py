"""Failover through the real stack: a sick primary is invisible to clients of every dialect."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack

REQUESTS = 300
CONCURRENCY = 32

# client dialect -> (model, primary provider that will be faulted, fallback backend)
CASES = {
    "openai": ("claude-sonnet-4-6", "anthropic", "openai/gpt-5.5"),
    "anthropic": ("gemini-3.5-flash", "gemini", "openai/gpt-5.5"),
    "gemini": ("gpt-5.5", "openai", "anthropic/claude-sonnet-4-6"),
}

FAULTS = {
    "down": {"mode": "down"},
    "error-500": {"mode": "error", "status": 500},
    "error-503": {"mode": "error", "status": 503},
    "rate_limit": {"mode": "rate_limit", "retry_after": 30},
    "stall": {"mode": "stall"},
    "slow": {"mode": "slow", "delay_ms": 3000},  # beyond the per-try timeout below
}


def short_timeouts_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for model in cfg["models"].values():
        model["per_try_timeout_ms"] = 1000
        model["per_try_idle_timeout_ms"] = 1000
    return config_on_free_ports(cfg)


@pytest.fixture(scope="module")
def failover_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The default stack with per-try timeouts short enough for stall tests."""
    stack = start_stack(tmp_path_factory.mktemp("failover"), short_timeouts_config())
    yield stack
    stack.stop()


@pytest.fixture
def fresh(tmp_path: Any) -> Iterator[tuple[Stack, MockAdmin]]:
    """A stack of its own: backend health learned by earlier tests must not leak in."""
    stack = start_stack(tmp_path, short_timeouts_config())
    try:
        yield stack, MockAdmin(stack)
    finally:
        stack.stop()


@pytest.fixture
def fmocks(failover_gateway: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(failover_gateway) as admin:
        yield admin


def request_for(
    dialect: str, model: str, stream: bool, text: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    if dialect == "openai":
        return (
            "/v1/chat/completions",
            {"authorization": f"Bearer {DEMO_KEY}"},
            {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]},
        )
    if dialect == "anthropic":
        return (
            "/v1/messages",
            {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"},
            {
                "model": model,
                "max_tokens": 100,
                "stream": stream,
                "messages": [{"role": "user", "content": text}],
            },
        )
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return (
        f"/v1beta/models/{model}:{verb}",
        {"x-goog-api-key": DEMO_KEY},
        {"contents": [{"role": "user", "parts": [{"text": text}]}]},
    )


def text_of(dialect: str, stream: bool, raw: bytes) -> tuple[str, bool]:
    """(reply text, ended properly) from a non-streamed body or an SSE stream."""
    if not stream:
        body = json.loads(raw)
        if dialect == "openai":
            return body["choices"][0]["message"]["content"], True
        if dialect == "anthropic":
            return body["content"][0]["text"], True
        return body["candidates"][0]["content"]["parts"][0]["text"], True
    text, done = "", False
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        event, data = None, None
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        if data is None:
            continue
        if data == "[DONE]":
            done = True
            continue
        obj = json.loads(data)
        if "error" in obj or event == "error":
            return f"<error {obj}>", False
        if dialect == "openai":
            for choice in obj.get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
        elif dialect == "anthropic":
            if obj.get("type") == "content_block_delta":
                text += obj["delta"].get("text", "")
            done = done or obj.get("type") == "message_stop"
        else:
            for cand in obj.get("candidates", []):
                for part in cand.get("content", {}).get("parts", []):
                    text += part.get("text", "")
                done = done or bool(cand.get("finishReason"))
    return text, done


@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)
    backends: Counter = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def hammer(
    stack: Stack,
    dialect: str,
    model: str,
    stream: bool,
    n: int = REQUESTS,
    concurrency: int = CONCURRENCY,
    expect_prefix: str | None = None,
) -> Outcome:
    out = Outcome()
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        text = f"request number {i}"
        path, headers, body = request_for(dialect, model, stream, text)
        async with sem, session.post(stack.base_url + path, json=body, headers=headers) as r:
            raw = await r.read()
            out.statuses[r.status] += 1
            out.backends[r.headers.get("x-gateway-backend", "")] += 1
            if r.status != 200:
                out.wrong.append(f"{r.status}: {raw[:1000]!r}")
                return
            got, done = text_of(dialect, stream, raw)
            if not done or not got.endswith(text) or (expect_prefix and not got.startswith(expect_prefix)):
                out.wrong.append(f"bad reply (done={done}): {got[:200]}")

    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, i) for i in range(n)))
    out.seconds = time.monotonic() - t0
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("dialect", list(CASES))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_sick_primary_is_invisible(
    failover_gateway: Stack, fmocks: MockAdmin, fault: str, dialect: str, stream: bool
) -> None:
    model, primary, fallback = CASES[dialect]
    fmocks.fault(primary, **FAULTS[fault])
    provider = fallback.split("/")[0]
    out = asyncio.run(hammer(failover_gateway, dialect, model, stream, expect_prefix=f"[{provider}:"))
    assert out.statuses == Counter({200: REQUESTS}), out.wrong[:5]
    assert not out.wrong, out.wrong[:5]
    assert out.backends == Counter({fallback: REQUESTS})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("dialect", list(CASES))
@pytest.mark.parametrize("status", [401, 403])
def test_provider_refusing_the_gateway_key_is_failed_over(
    failover_gateway: Stack, fmocks: MockAdmin, status: int, dialect: str, stream: bool
) -> None:
    """A provider's 401/403 is about the gateway's key, not the client's: the next tier answers."""
    model, primary, fallback = CASES[dialect]
    fmocks.fault(primary, mode="error", status=status)
    provider = fallback.split("/")[0]
    out = asyncio.run(
        hammer(failover_gateway, dialect, model, stream, n=20, concurrency=8, expect_prefix=f"[{provider}:")
    )
    assert out.statuses == Counter({200: 20}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({fallback: 20})


def test_rate_limited_backend_is_skipped_until_it_recovers(fresh: tuple[Stack, MockAdmin]) -> None:
    failover_gateway, fmocks = fresh
    fmocks.fault("openai", mode="rate_limit", retry_after=2)
    out = asyncio.run(hammer(failover_gateway, "openai", "gpt-5.5", False, n=50, concurrency=1))
    assert out.statuses == Counter({200: 50})
    assert out.backends == Counter({"anthropic/claude-sonnet-4-6": 50})
    # Only the first request paid the failed attempt; the rest went straight to the fallback.
    assert fmocks.stats("openai")["requests"] == 1
    fmocks.reset()
    time.sleep(2.2)  # the Retry-After has passed: the next request probes, and succeeds
    out = asyncio.run(hammer(failover_gateway, "openai", "gpt-5.5", False, n=5, concurrency=1))
    assert out.backends == Counter({"openai/gpt-5.5": 5})
    assert fmocks.stats("openai")["requests"] == 5


def test_failing_backend_is_probed_not_assumed_recovered(fresh: tuple[Stack, MockAdmin]) -> None:
    failover_gateway, fmocks = fresh
    fmocks.fault("anthropic", mode="down")
    out = asyncio.run(hammer(failover_gateway, "openai", "claude-sonnet-4-6", False, n=40, concurrency=1))
    assert out.statuses == Counter({200: 40})
    attempts_while_down = fmocks.stats("anthropic")["requests"]
    assert attempts_while_down <= 3  # skipped after consecutive failures, probed on back-off
    fmocks.fault("anthropic", mode="ok")
    # Envoy's outlier detection (5 s base ejection) and the gateway's back-off both
    # have to let a probe through; then the recovered backend is used again.
    deadline = time.monotonic() + 30
    backends: Counter = Counter()
    while time.monotonic() < deadline and not backends["anthropic/claude-sonnet-4-6"]:
        backends += asyncio.run(
            hammer(failover_gateway, "openai", "claude-sonnet-4-6", False, n=1, concurrency=1)
        ).backends
        time.sleep(0.2)
    assert backends["anthropic/claude-sonnet-4-6"] >= 1


@pytest.mark.parametrize("dialect", list(CASES))
def test_all_backends_down_fails_fast_in_client_dialect(fresh: tuple[Stack, MockAdmin], dialect: str) -> None:
    failover_gateway, fmocks = fresh
    for p in ("openai", "anthropic", "gemini"):
        fmocks.fault(p, mode="down")
    model = CASES[dialect][0]
    out = asyncio.run(hammer(failover_gateway, dialect, model, False, n=20, concurrency=10))
    assert out.statuses == Counter({503: 20})
    assert out.seconds < 10
    body = out.wrong[0].split(": ", 1)[1]
    assert {"openai": "service_unavailable", "anthropic": "overloaded_error", "gemini": "UNAVAILABLE"}[
        dialect
    ] in body


@pytest.mark.parametrize("dialect", list(CASES))
def test_all_backends_rate_limited_is_429_with_retry_after(
    fresh: tuple[Stack, MockAdmin], dialect: str
) -> None:
    failover_gateway, fmocks = fresh
    for p in ("openai", "anthropic", "gemini"):
        fmocks.fault(p, mode="rate_limit", retry_after=20)
    model = CASES[dialect][0]
    path, headers, body = request_for(dialect, model, False, "hi")

    async def go() -> list[tuple[int, str | None]]:
        async with aiohttp.ClientSession() as s:
            res = []
            for _ in range(3):
                async with s.post(failover_gateway.base_url + path, json=body, headers=headers) as r:
                    await r.read()
                    res.append((r.status, r.headers.get("retry-after")))
            return res

    results = asyncio.run(go())
    assert [s for s, _ in results] == [429, 429, 429]
    # Once every backend is known to be rate limited, the gateway answers itself, with the real wait.
    assert results[-1][1] is not None and 1 <= int(results[-1][1]) <= 20


@pytest.mark.parametrize("dialect", list(CASES))
def test_stream_cut_after_first_byte_is_never_a_silent_success(
    failover_gateway: Stack, fmocks: MockAdmin, dialect: str
) -> None:
    """Once response bytes went to the client, Envoy cannot fail over. When the
    provider then drops the connection, Envoy resets the client's connection
    (the router-level stream ends with it, so no error event can be written):
    the client must see an error, never a stream that looks complete."""
    model, primary, _ = CASES[dialect]
    fmocks.fault(primary, mode="stream_cut")
    path, headers, body = request_for(dialect, model, True, "one two three four five six seven eight")

    async def go() -> tuple[str, bool]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
            try:
                async with s.post(failover_gateway.base_url + path, json=body, headers=headers) as r:
                    raw = await r.read()
            except aiohttp.ClientError as e:
                return f"transport error: {type(e).__name__}", False
            return text_of(dialect, True, raw)

    for _ in range(5):
        text, done = asyncio.run(go())
        if done:  # a complete answer (e.g. from a fallback the primary was skipped for) is a real success
            assert text.endswith("one two three four five six seven eight"), text
        else:
            assert text.startswith(("transport error", "<error")), f"a cut stream ended silently: {text}"


def test_hedging_races_the_next_tier(tmp_path: Any) -> None:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["models"]["gpt-5.5"]["hedge_after_ms"] = 300
    stack = start_stack(tmp_path, config_on_free_ports(cfg))
    try:
        admin = MockAdmin(stack)
        # Both slow, the primary less so. A hedge races the next tier after 300 ms but keeps the
        # primary's attempt: the primary (600 ms) beats the hedge (300 + 1500 ms). A plain
        # retry on per-try timeout would cancel the primary and answer from the fallback.
        admin.fault("openai", mode="slow", delay_ms=600)
        admin.fault("anthropic", mode="slow", delay_ms=1500)
        out = asyncio.run(hammer(stack, "openai", "gpt-5.5", False, n=1, concurrency=1))
        assert out.backends == Counter({"openai/gpt-5.5": 1}), out.wrong
        assert admin.stats("openai")["requests"] == 1 and admin.stats("anthropic")["requests"] == 1
    finally:
        stack.stop()


@pytest.mark.parametrize("dialect", list(CASES))
def test_stream_opening_with_an_error_event_fails_over(
    failover_gateway: Stack, fmocks: MockAdmin, dialect: str
) -> None:
    """Anthropic answers 200 then `event: error` (overloaded): the stream guard turns that into a
    503 of the attempt before anything reaches the client, so Envoy fails over."""
    fmocks.fault("anthropic", mode="stream_error")
    out = asyncio.run(
        hammer(
            failover_gateway,
            dialect,
            "claude-sonnet-4-6",
            True,
            n=60,
            concurrency=16,
            expect_prefix="[openai:",
        )
    )
    assert out.statuses == Counter({200: 60}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({"openai/gpt-5.5": 60})


def test_stream_error_on_the_last_backend_reaches_the_client_as_its_error(
    fresh: tuple[Stack, MockAdmin],
) -> None:
    stack, admin = fresh
    for p in ("openai", "anthropic", "gemini"):
        admin.fault(p, mode="down")
    admin.fault("anthropic", mode="stream_error")  # the last backend answers, with an in-band error
    path, headers, body = request_for("openai", "gemini-3.5-flash", True, "hello")

    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(stack.base_url + path, json=body, headers=headers) as r,
        ):
            return r.status, json.loads(await r.read())

    status, err = asyncio.run(go())
    assert status == 503
    assert err["error"]["type"] == "server_error" and "Overloaded" in err["error"]["message"]


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_clients_rejected_requests_do_not_cool_the_backend_down(
    fresh: tuple[Stack, MockAdmin], status: int
) -> None:
    """A provider refusing a client's request (bad content, too large) says nothing about the
    provider: the client gets the error, and the next requests, any tenant's, still go to it."""
    stack, admin = fresh
    admin.fault("openai", mode="error", status=status)
    rejected = asyncio.run(hammer(stack, "openai", "gpt-5.5", False, n=6, concurrency=1))
    assert rejected.statuses == Counter({status: 6})  # not failed over: the next tier would refuse it too
    assert admin.stats("openai")["requests"] == 6
    admin.reset()
    out = asyncio.run(hammer(stack, "openai", "gpt-5.5", False, n=5, concurrency=1))
    assert out.backends == Counter({"openai/gpt-5.5": 5})  # not skipped as cooling down
