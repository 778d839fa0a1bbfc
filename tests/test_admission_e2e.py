"""Admission through the real stack: two ext_proc processes behind one Envoy
sharing budgets in a real redis-server (started here), mock providers behind."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG, key_digest
from gateway_tools.supervisor import Stack
from tests.conftest import MockAdmin
from tests.redis_server import RedisServer
from tests.stack import config_on_free_ports, start_stack

RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)
TENANTS: dict[str, dict[str, Any]] = {
    "burst": {"limits": {"requests_per_minute": 1000, "tokens_per_minute": 1200}},
    "pace": {"limits": {"requests_per_minute": 30, "tokens_per_minute": 100_000}},
    "recon": {"limits": {"tokens_per_minute": 60}},
    "free": {"limits": {"tokens_per_minute": 1_000_000}},
    "bulk": {"priority": "batch", "max_priority": "batch", "limits": {"tokens_per_minute": 1_000_000}},
    "counter": {"limits": {"requests_per_minute": 3, "tokens_per_minute": 10}},
}


def budget_config(redis_url: str, on_failure: str = "fail_open", workers: int = 2) -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for name, t in TENANTS.items():
        cfg["tenants"][name] = {"api_keys": [{"sha256": key_digest(f"{name}-key")}], **t}
    cfg["models"].update(
        {
            "spill-model": {
                "backends": [
                    {
                        "provider": "openai",
                        "model": "spill-a",
                        "name": "spill-a",
                        "limits": {"requests_per_minute": 3},
                    },
                    {
                        "provider": "anthropic",
                        "model": "spill-b",
                        "name": "spill-b",
                        "limits": {"requests_per_minute": 2},
                    },
                ]
            },
            "sat-model": {
                "backends": [
                    {
                        "provider": "gemini",
                        "model": "sat",
                        "name": "sat",
                        "limits": {"concurrent_requests": 5},
                    }
                ]
            },
            "count-model": {  # both backends count tokens: counts are forwarded
                "backends": [
                    {
                        "provider": "anthropic",
                        "model": "claude-sonnet-4-6",
                        "name": "count-a",
                        "limits": {"requests_per_minute": 1},
                    },
                    {"provider": "gemini", "model": "gemini-3.5-flash", "name": "count-g"},
                ]
            },
            "adaptive-model": {
                "backends": [
                    {
                        "provider": "gemini",
                        "model": "adaptive",
                        "name": "adaptive",
                        "limits": {"adaptive": {"min": 1, "max": 8, "decrease": 0.5, "increase": 1.0}},
                    }
                ]
            },
        }
    )
    cfg["admission"] = {"interactive_reserve": 0.4}
    cfg["redis"] = {"url": redis_url, "key_prefix": "e2e", "on_failure": on_failure, "retry_interval_s": 0.2}
    return config_on_free_ports(cfg, workers=workers)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("admission"), budget_config(redis_server.url))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Stack:
    """This module's stack is the one conftest's ``mocks`` fixture resets around each test."""
    return stack


def chat(model: str, text: str = "hi", max_tokens: int = 100, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def _send(
    session: aiohttp.ClientSession,
    stack: Stack,
    key: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(
        stack.base_url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}", **(headers or {})},
    ) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


def send_many(
    stack: Stack,
    key: str,
    bodies: list[dict[str, Any]],
    headers: dict[str, str] | None = None,
) -> list[tuple[int, dict[str, str], bytes]]:
    async def go() -> list[tuple[int, dict[str, str], bytes]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            return await asyncio.gather(*(_send(s, stack, key, b, headers) for b in bodies))

    return asyncio.run(go())


def send(
    stack: Stack,
    key: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    return send_many(stack, key, [body], headers)[0]


def decisions(stack: Stack, tenant: str) -> list[float]:
    """Admission decisions of ``tenant`` per ext_proc process (from each one's /metrics)."""
    out = []
    for port in stack.config.metrics_ports():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out.append(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("llm_gateway_admission_decisions_total") and f'tenant="{tenant}"' in line
            )
        )
    return out


def bucket_level(redis_server: RedisServer, key: str, cap: float, rate: float) -> float:
    c = redis_server.client()
    level, t = c.hmget(f"e2e:{key}", "l", "t")
    if level is None:
        return cap
    sec, usec = c.time()
    return min(cap, float(level) + (sec + usec / 1e6 - float(t)) * rate)


def test_burst_across_two_replicas_stays_within_one_reservation(stack: Stack, mocks: MockAdmin) -> None:
    """30 concurrent requests of one tenant, spread over both ext_proc processes:
    admitted reservations never exceed the shared 1,200 tokens/minute by more
    than one reservation; every rejection is an immediate 429 with headers."""
    mocks.fault("openai", mode="slow", delay_ms=500)  # all stay in flight: no refund during the burst
    t0 = time.monotonic()
    results = send_many(stack, "burst-key", [chat("gpt-5.5") for _ in range(30)])
    elapsed = time.monotonic() - t0
    reservation = 100 + 5  # max_tokens + estimated input ("hi": 4 per message + 1)
    admitted = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] != 200]
    refill = 1200 / 60 * elapsed
    assert len(admitted) >= 10 and len(admitted) * reservation <= 1200 + reservation + refill, len(admitted)
    assert mocks.stats("openai")["requests"] == len(admitted)  # rejections never reached a provider
    assert all(d > 0 for d in decisions(stack, "burst")), "both ext_proc processes decided"
    for status, headers, body in rejected:
        assert status == 429
        assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        assert all(h in headers for h in RATE_HEADERS)
        assert int(headers["x-ratelimit-remaining-tokens"]) < reservation
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= reservation / (1200 / 60) * 1000 + 1
        assert int(headers["retry-after"]) == -(-wait_ms // 1000)
    for _, headers, _ in admitted:
        assert all(h in headers for h in RATE_HEADERS)
        assert headers["x-ratelimit-limit-tokens"] == "1200"


def test_retry_after_is_the_time_until_the_request_fits(stack: Stack, mocks: MockAdmin) -> None:
    """30 requests/minute: the 31st is refused with the time until one request
    is back (not a constant); half of it is too early, all of it is enough."""
    results = send_many(stack, "pace-key", [chat("gpt-5.5", max_tokens=5) for _ in range(30)])
    assert [r[0] for r in results].count(200) == 30
    status, headers, _ = send(stack, "pace-key", chat("gpt-5.5", max_tokens=5))
    assert status == 429
    wait = int(headers["retry-after-ms"]) / 1000
    assert 0.5 < wait <= 2.0  # one request per 2 s comes back
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-limit-requests"] == "30"
    time.sleep(wait / 2)
    assert send(stack, "pace-key", chat("gpt-5.5", max_tokens=5))[0] == 429
    time.sleep(wait / 2 + 0.1)
    status, headers, _ = send(stack, "pace-key", chat("gpt-5.5", max_tokens=5))
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "0"


def test_reconciliation_streamed_non_streamed_and_failed(
    stack: Stack, mocks: MockAdmin, redis_server: RedisServer
) -> None:
    """The reservation (here ~26 tokens) is replaced by the real usage, read from
    the response (streams included); a failed request costs nothing."""
    key, cap, rate = "t:recon:tpm", 60.0, 1.0
    start = bucket_level(redis_server, key, cap, rate)
    status, _, body = send(stack, "recon-key", chat("gpt-5.5", "one two three", max_tokens=20))
    assert status == 200
    usage = json.loads(body)["usage"]
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    time.sleep(0.1)  # settlement is asynchronous
    after = bucket_level(redis_server, key, cap, rate)
    assert start - used - 0.5 <= after <= start - used + 1.5, (start, used, after)

    status, _, raw = send(
        stack, "recon-key", chat("claude-sonnet-4-6", "four five six seven", 20, stream=True)
    )
    assert status == 200
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    usage = next(e["usage"] for e in events if e.get("usage"))
    streamed = usage["prompt_tokens"] + usage["completion_tokens"]
    time.sleep(0.1)
    level = bucket_level(redis_server, key, cap, rate)
    assert after - streamed - 0.5 <= level <= after - streamed + 1.5, (after, streamed, level)

    for provider in ("openai", "anthropic", "gemini"):
        mocks.fault(provider, mode="error", status=400)
    status, _, _ = send(stack, "recon-key", chat("gpt-5.5", "eight nine", max_tokens=20))
    assert status == 400
    time.sleep(0.1)
    assert level - 0.5 <= bucket_level(redis_server, key, cap, rate) <= level + 1.5  # refunded


def test_token_counts_take_requests_not_tokens_or_backend_quotas(stack: Stack, mocks: MockAdmin) -> None:
    """A forwarded count reaches a provider, so it takes one of the tenant's requests; it
    generates and costs nothing, so no tokens and no backend quota. The tenant's 10 tokens a
    minute fit no chat at all (413), yet three counts of a 100-token prompt pass, all to the
    primary despite its one request a minute; the fourth is a 429 before any provider."""
    c = anthropic.Anthropic(base_url=stack.base_url, api_key="counter-key", max_retries=0, timeout=20)
    messages: Any = [{"role": "user", "content": "count these words " * 25}]
    counts = [c.messages.count_tokens(model="count-model", messages=messages).input_tokens for _ in range(3)]
    assert all(n >= 75 for n in counts), counts
    assert mocks.stats("anthropic")["requests"] == 3 and mocks.stats("gemini")["requests"] == 0
    with pytest.raises(anthropic.RateLimitError) as refused:
        c.messages.count_tokens(model="count-model", messages=messages)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0" and float(headers["retry-after"]) > 0
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as too_large:
        c.messages.create(model="count-model", max_tokens=100, messages=messages)
    assert too_large.value.status_code == 413
    assert mocks.stats("anthropic")["requests"] == 3 and mocks.stats("gemini")["requests"] == 0


def test_spill_over_to_the_next_tier_then_429(stack: Stack, mocks: MockAdmin) -> None:
    backends = []
    for _ in range(6):
        status, headers, _ = send(stack, "free-key", chat("spill-model"))
        backends.append(headers.get("x-gateway-backend") if status == 200 else status)
    assert backends == ["spill-a"] * 3 + ["spill-b"] * 2 + [429]
    assert mocks.stats("openai")["requests"] == 3 and mocks.stats("anthropic")["requests"] == 2


def test_batch_is_shed_before_interactive(stack: Stack, mocks: MockAdmin) -> None:
    """5 concurrent slots, 40% kept for interactive: batch gets 3, interactive all 5."""
    mocks.fault("gemini", mode="slow", delay_ms=1500)

    async def go() -> tuple[list[int], list[int], list[int]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            batch = [
                asyncio.create_task(_send(s, stack, "free-key", chat("sat-model"), {"x-priority": "batch"}))
                for _ in range(3)
            ]
            await asyncio.sleep(0.4)
            more_batch = [
                await _send(s, stack, "free-key", chat("sat-model"), {"x-priority": "batch"}),
                await _send(s, stack, "bulk-key", chat("sat-model"), {"x-priority": "interactive"}),
            ]
            interactive = [
                asyncio.create_task(_send(s, stack, "free-key", chat("sat-model"))) for _ in range(2)
            ]
            await asyncio.sleep(0.4)
            over = await _send(s, stack, "free-key", chat("sat-model"))
            done = await asyncio.gather(*batch, *interactive)
            return (
                [r[0] for r in done[:3]],
                [r[0] for r in more_batch],
                [r[0] for r in done[3:]] + [over[0]],
            )

    batch, shed, interactive = asyncio.run(go())
    assert batch == [200, 200, 200]
    assert shed == [429, 429]  # batch-priority tenant asking for interactive is capped to batch
    assert interactive == [200, 200, 429]


def test_adaptive_limit_shrinks_on_overload_and_grows_back(
    stack: Stack, mocks: MockAdmin, redis_server: RedisServer
) -> None:
    limit_key = "e2e:b:adaptive:limit"
    redis_server.client().delete(limit_key)
    mocks.fault("gemini", mode="error", status=503)
    for _ in range(2):
        assert send(stack, "free-key", chat("adaptive-model"))[0] == 503
    time.sleep(0.1)
    assert float(redis_server.client().get(limit_key)) == 2.0  # 8 -> 4 -> 2, shared by both replicas
    mocks.reset()
    time.sleep(1.1)  # the backend's health cool-down
    limits = []
    for _ in range(4):
        assert send(stack, "free-key", chat("adaptive-model"))[0] == 200
        time.sleep(0.05)
        limits.append(float(redis_server.client().get(limit_key)))
    assert limits == sorted(limits) and limits[0] == pytest.approx(2.5) and limits[-1] > 3


def test_redis_killed_fail_open_then_recovers(
    stack: Stack, mocks: MockAdmin, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        for _ in range(3):
            assert send(stack, "free-key", chat("gpt-5.5"))[0] == 200  # local budgets
        logs = "".join((stack.run_dir / f"ext_proc-{i}.log").read_text() for i in range(2))  # type: ignore[operator]
        assert "redis unreachable" in logs and "fail_open" in logs
    finally:
        redis_server.start()
    time.sleep(0.3)  # retry_interval_s
    for _ in range(4):
        assert send(stack, "free-key", chat("gpt-5.5"))[0] == 200
    assert redis_server.client().exists("e2e:t:free:tpm"), "budgets are back in redis"


def test_redis_down_fail_closed_is_503_then_recovers(tmp_path: Path) -> None:
    server = RedisServer()
    s = start_stack(tmp_path, budget_config(server.url, on_failure="fail_closed", workers=1))
    try:
        status, headers, body = send(s, "free-key", chat("gpt-5.5"))
        assert status == 503 and "unreachable" in json.loads(body)["error"]["message"]
        assert "retry-after" in headers
        server.start()
        time.sleep(0.3)
        assert send(s, "free-key", chat("gpt-5.5"))[0] == 200
    finally:
        s.stop()
        server.stop()
