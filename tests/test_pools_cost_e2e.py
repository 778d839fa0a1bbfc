"""Cost-aware routing end to end: real Envoy + ext_proc + the mock OpenAI provider, two simulated
vLLM servers in this process, the official openai SDK as the client.

A model's pool and an API backend share tier 0 under ``prefer: cheapest`` with a TTFT p90 SLO of
150 ms. The pool (a few cents an hour) is cheaper than the API (its catalog price), so it serves
while its servers' own TTFT histograms stay within the SLO; slowed five-fold by the simulator's
``slow`` fault, its TTFT p90 passes the SLO and the API backend takes the traffic; healthy again,
the pool has it back once the slow answers have left the window. No client error throughout.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator

import openai
import pytest

from gateway_tools.simulator import BackgroundPool, start_pool_in_thread
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.stack import config_on_free_ports, start_stack

MODEL = "cheap-llama"
API_MODEL = "cheap-api"  # two API backends of one tier: the cheaper held to the SLO as measured
CHEAP_API = "gemini/gemini-3.5-flash"
POOL_BACKEND = "gpus/sim-llama"
API_BACKEND = "openai/gpt-5.5"
SLO_S = 0.15


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundPool]:
    # At the A100 profile's own speed: a 400-token prompt takes about 40 ms to prefill, 200 ms
    # slowed; the SLO (150 ms) leaves the fast answers room for a busy machine's delays.
    with start_pool_in_thread(2, model="sim-llama", time_scale=1.0) as p:
        yield p


@pytest.fixture(scope="module")
def stack(sim: BackgroundPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = config_on_free_ports()
    cfg["providers"]["gpus"] = {
        "dialect": "openai",
        "endpoints": sim.endpoints,
        "pool": {
            "scrape_interval_ms": 50,
            "stale_after_ms": 2000,
            "stall_after_ms": 3000,
            "gpu_hour_usd": 0.01,
            "ttft_window_ms": 5000,
        },
    }
    cfg["models"][MODEL] = {
        "backends": [
            {"provider": "gpus", "model": "sim-llama", "tier": 0},
            {"provider": "openai", "model": "gpt-5.5", "tier": 0},
        ],
        "prefer": "cheapest",
        "slo": {"ttft_p90_ms": int(SLO_S * 1000)},
        "per_try_timeout_ms": 5000,
        "per_try_idle_timeout_ms": 5000,
    }
    cfg["models"][API_MODEL] = {
        "backends": [
            {"provider": "gemini", "model": "gemini-3.5-flash", "tier": 0, "price": {"output": 2.5}},
            {"provider": "openai", "model": "gpt-5.5", "tier": 0},  # the catalog's 30 per million
        ],
        "prefer": "cheapest",
        "slo": {"ttft_p90_ms": int(SLO_S * 1000), "window_ms": 3000},
    }
    s = start_stack(tmp_path_factory.mktemp("cost"), cfg)
    time.sleep(0.3)  # a few scrape rounds
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Stack:
    """This module's stack is the one conftest's ``mocks`` fixture resets around each test."""
    return stack


def _metrics(stack: Stack) -> str:
    url = f"http://127.0.0.1:{stack.config.ext_proc.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def _ttft_p90(stack: Stack) -> float | None:
    m = re.search(r'llm_gateway_pool_ttft_p90_seconds\{pool="gpus"\} (\S+)', _metrics(stack))
    return float(m.group(1)) if m else None


def _cost_picks(stack: Stack) -> dict[tuple[str, str], float]:
    out = {}
    for m in re.finditer(
        rf'llm_gateway_cost_picks_total\{{backend="([^"]+)",model="{MODEL}",reason="(\w+)"\}} (\S+)',
        _metrics(stack),
    ):
        out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def ask(stack: Stack) -> str:
    """One question with a 400-token prompt no cache holds; the backend that answered."""
    prompt = f"{uuid.uuid4().hex} " + " ".join(f"w{j}" for j in range(399))
    raw = openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.config.listen.port}/v1",
        api_key=DEMO_KEY,
        max_retries=0,
        timeout=20,
    ).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=4
    )
    assert raw.parse().choices[0].message.content  # never an error, never empty
    return str(raw.headers["x-gateway-backend"])


def _requests(sim: BackgroundPool) -> int:
    return sum(sim.stats(i)["requests"] for i in range(2))


def test_cheap_pool_serves_within_its_slo_and_the_api_tier_peer_when_it_is_slow(
    stack: Stack, sim: BackgroundPool
) -> None:
    picks0 = _cost_picks(stack)
    fast = [ask(stack) for _ in range(8)]
    p90 = _ttft_p90(stack)
    assert fast == [POOL_BACKEND] * 8, (fast, p90)  # the cheaper backend of the tier, every time
    assert p90 is not None and p90 <= SLO_S, p90
    picks1 = _cost_picks(stack)
    assert picks1.get((POOL_BACKEND, "cost"), 0) - picks0.get((POOL_BACKEND, "cost"), 0) >= 8

    for i in range(2):
        sim.set_fault(i, "slow")
    deadline = time.monotonic() + 20
    while (p90 := _ttft_p90(stack)) is None or p90 <= SLO_S:  # the pool's own histograms show it
        assert time.monotonic() < deadline, f"the pool's TTFT p90 never passed the SLO ({p90})"
        ask(stack)
    served = _requests(sim)
    slowed = [ask(stack) for _ in range(10)]
    print("after the pool passed its SLO:", slowed)
    assert slowed.count(API_BACKEND) >= 9, slowed
    assert _requests(sim) - served == slowed.count(POOL_BACKEND)  # the servers' own count agrees
    picks2 = _cost_picks(stack)
    assert picks2.get((API_BACKEND, "slo"), 0) - picks1.get((API_BACKEND, "slo"), 0) >= 9

    for i in range(2):
        sim.set_fault(i, "none")
    deadline = time.monotonic() + 15
    while _ttft_p90(stack) is not None:  # the slow answers leave the window (5 s)
        assert time.monotonic() < deadline, "the slow answers never left the TTFT window"
        time.sleep(0.2)
    back = [ask(stack) for _ in range(3)]
    assert back == [POOL_BACKEND] * 3, (back, _ttft_p90(stack))


def _backend_p90(stack: Stack, backend: str) -> float | None:
    m = re.search(rf'llm_gateway_backend_ttft_p90_seconds\{{backend="{backend}"\}} (\S+)', _metrics(stack))
    return float(m.group(1)) if m else None


def ask_streamed(stack: Stack) -> str:
    """One streamed question to the API-only model; the backend that answered."""
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.config.listen.port}/v1",
        api_key=DEMO_KEY,
        max_retries=0,
        timeout=20,
    )
    with client.chat.completions.with_streaming_response.create(
        model=API_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    ) as r:
        text = "".join(line for line in r.iter_lines() if line.startswith("data: ") and '"content":"' in line)
        assert text, "an empty stream"  # never an error, never empty
        return str(r.headers["x-gateway-backend"])


def test_the_cheaper_api_backend_is_held_to_the_slo_by_its_measured_first_tokens(
    stack: Stack, mocks: MockAdmin
) -> None:
    """No pool: the gateway measures the API backends' first tokens itself. The cheaper one
    serves while fast; slowed past the SLO (the mock's ``slow`` fault delays its headers), the
    dearer one takes over after a slow answer or two; once the slow answers left the window
    (3 s), the cheaper one is back. No client error throughout."""
    fast = [ask_streamed(stack) for _ in range(5)]
    assert fast == [CHEAP_API] * 5, fast
    p90 = _backend_p90(stack, CHEAP_API)
    assert p90 is not None and p90 <= SLO_S, p90
    mocks.fault("gemini", mode="slow", delay_ms=400)
    answered = [ask_streamed(stack) for _ in range(8)]
    print("with the cheaper backend slowed:", answered)
    assert answered[:2].count(CHEAP_API) >= 1 and answered[-5:] == [API_BACKEND] * 5, answered
    p90 = _backend_p90(stack, CHEAP_API)
    assert p90 is not None and p90 > SLO_S, p90
    mocks.reset()
    deadline = time.monotonic() + 15
    while (back := ask_streamed(stack)) != CHEAP_API:  # tried again once the window emptied
        assert time.monotonic() < deadline, "the cheaper backend never got traffic again"
        time.sleep(0.3)
    assert back == CHEAP_API
