"""Pools end to end: real Envoy + ext_proc + mock providers, a simulated vLLM pool of three
servers in this process, and the official openai SDK as the client.

What is proven: the request lands on the server the gateway picked (the servers' own records
against the gateway's pick counter), a repeated prefix goes to the same server, a dead,
stalled or KV-thrashing server is routed around with no client-visible error, and a saturated pool spills
interactive requests to the API tier and sheds batch ones with a 429 and Retry-After.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway_tools.simulator import BackgroundPool, start_pool_in_thread
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports, start_stack

MODEL = "sim-llama"
POOL_BACKEND = "gpus/sim-llama"
API_BACKEND = "openai/gpt-5.5"


def pool_config(endpoints: list[str], **pool: Any) -> dict[str, Any]:
    cfg = config_on_free_ports()
    cfg["providers"]["gpus"] = {
        "dialect": "openai",
        "endpoints": endpoints,
        "pool": {
            "scrape_interval_ms": 50,
            "stale_after_ms": 2000,
            "stall_after_ms": 1500,
            "gpu_hour_usd": 2.0,
            **pool,
        },
    }
    cfg["models"][MODEL] = {
        "backends": [{"provider": "gpus", "model": MODEL}, {"provider": "openai", "model": "gpt-5.5"}],
        "per_try_timeout_ms": 3000,
        "per_try_idle_timeout_ms": 3000,
    }
    cfg["models"]["claude-only"] = {"backends": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}]}
    return cfg


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundPool]:
    with start_pool_in_thread(3, model=MODEL, time_scale=0.05, num_blocks=4096, max_num_seqs=8) as p:
        yield p


@pytest.fixture(scope="module")
def stack(sim: BackgroundPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # One server named by DNS: the gateway resolves it as Envoy does (each address a server).
    endpoints = [f"localhost:{sim.ports[0]}", *sim.endpoints[1:]]
    s = start_stack(tmp_path_factory.mktemp("pool"), pool_config(endpoints))
    time.sleep(0.3)  # a few scrape rounds
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def healthy(sim: BackgroundPool, stack: Stack) -> Iterator[None]:
    """Every server up, and seen up by the gateway (a server that was down is out until scraped)."""
    for i in range(3):
        sim.set_fault(i, "none")
    wait_until_scraped(stack, 3)
    yield
    for i in range(3):
        sim.set_fault(i, "none")


def client(stack: Stack, timeout: float = 20) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.config.listen.port}/v1",
        api_key=DEMO_KEY,
        max_retries=0,
        timeout=timeout,
    )


def picks(stack: Stack) -> dict[tuple[str, str], float]:
    """The gateway's pick counter: (server, reason) -> count."""
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.config.ext_proc.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    out = {}
    for m in re.finditer(
        r'llm_gateway_pool_picks_total\{pool="gpus",reason="(\w+)",server="([^"]+)"\} (\S+)', text
    ):
        out[(m.group(2), m.group(1))] = float(m.group(3))
    return out


def wait_until_scraped(stack: Stack, n: int) -> None:
    """Until the gateway has scraped all ``n`` pool servers."""
    url = f"http://127.0.0.1:{stack.config.ext_proc.metrics_port}/metrics"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if len(re.findall(r'llm_gateway_pool_server_up\{pool="gpus",server="[^"]+"\} 1\.0', text)) == n:
            return
        time.sleep(0.05)
    raise AssertionError("the pool servers were not scraped in 10 s")


def served_by(sim: BackgroundPool, marker: str) -> list[int]:
    return [i for i in range(3) if any(marker in r for r in sim.stats(i)["recent"])]


def ask(stack: Stack, text: str, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 4)
    return client(stack).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **kw
    )


def test_request_lands_on_the_picked_server(stack: Stack, sim: BackgroundPool) -> None:
    for _ in range(6):
        marker = uuid.uuid4().hex
        before = picks(stack)
        raw = ask(stack, f"question {marker}")
        assert raw.headers["x-gateway-backend"] == POOL_BACKEND
        assert raw.parse().choices[0].message.content == "tok0 tok1 tok2 tok3"
        after = picks(stack)
        picked = [k[0] for k in after if after[k] - before.get(k, 0) == 1]
        (server,) = served_by(sim, marker)
        assert picked == [sim.endpoints[server]]
    # `llm-gateway status` counts every server's requests for the pool backend.
    from gateway_tools.status import envoy_hosts

    hosts = envoy_hosts(stack.config)
    assert hosts[POOL_BACKEND]["rq_total"] >= 6 and not [h for h in hosts if h.startswith("127.0.0.1:")]


def test_streamed_request_through_the_pool(stack: Stack, sim: BackgroundPool) -> None:
    marker = uuid.uuid4().hex
    stream = client(stack).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": marker}], max_tokens=5, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4"
    assert len(served_by(sim, marker)) == 1


def test_pool_cost_is_reported_from_the_servers_token_counters(stack: Stack, sim: BackgroundPool) -> None:
    """gpu_hour_usd x 3 servers per hour, and per million output tokens while they generate."""
    url = f"http://127.0.0.1:{stack.config.ext_proc.metrics_port}/metrics"
    done = threading.Event()
    answered: list[int] = []
    failures: list[BaseException] = []

    def load() -> None:
        while not done.is_set():
            try:
                ask(stack, uuid.uuid4().hex, max_tokens=40)
                answered.append(1)
            except Exception as e:  # reported below: a load that failed proves nothing
                failures.append(e)
                return

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 10
        per_m = None
        while per_m is None and time.monotonic() < deadline:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            m = re.search(r'llm_gateway_pool_usd_per_million_output_tokens\{pool="gpus"\} (\S+)', text)
            per_m = float(m.group(1)) if m else None
            time.sleep(0.1)
    finally:
        done.set()
        for w in workers:
            w.join()
    assert not failures, failures[:1]
    assert answered, "no request of the load was answered"
    assert 'llm_gateway_pool_cost_usd_per_hour{pool="gpus"} 6.0' in text
    # three clients of 40-token answers make at least 10 tokens a second: under 6 USD / 36,000 tokens
    assert per_m is not None and 0 < per_m < 6 / (10 * 3600) * 1e6, per_m


def _shared_prefix() -> str:
    return " ".join(f"ctx{uuid.uuid4().hex[:6]}" for _ in range(64))  # four 16-word blocks


def test_prefix_affinity_sends_a_repeated_prefix_to_the_same_server(
    stack: Stack, sim: BackgroundPool
) -> None:
    prefix = _shared_prefix()
    homes = set()
    for i in range(6):
        marker = f"q{i}-{uuid.uuid4().hex}"
        ask(stack, f"{prefix} {marker}")
        homes.update(served_by(sim, marker))
    assert len(homes) == 1
    (home,) = homes
    # ...and that server's own prefix cache hit: the counters say so.
    assert sim.stats(home)["prefix_cache_hits"] >= 5 * 64


def test_dead_server_is_routed_around_without_client_errors(stack: Stack, sim: BackgroundPool) -> None:
    prefix = _shared_prefix()
    ask(stack, f"{prefix} warm")
    (home,) = served_by(sim, f"{prefix} warm"[-40:])
    sim.set_fault(home, "down")  # before the scraper notices: Envoy's retry takes the next server
    for i in range(4):
        marker = f"d{i}-{uuid.uuid4().hex}"
        raw = ask(stack, f"{prefix} {marker}")
        assert raw.headers["x-gateway-backend"] == POOL_BACKEND  # another pool server, not the API tier
        assert served_by(sim, marker) and home not in served_by(sim, marker)
    sim.set_fault(home, "none")


def test_whole_pool_down_fails_over_to_the_api_tier(stack: Stack, sim: BackgroundPool) -> None:
    """Right after the servers die (Envoy's retries: each listed server, then the next tier)
    and once the scraper knows (the pool counts as saturated: spill-over)."""
    for i in range(3):
        sim.set_fault(i, "down")
    for delay in (0.0, 0.5):
        time.sleep(delay)
        raw = ask(stack, f"anyone {uuid.uuid4().hex}")
        assert raw.headers["x-gateway-backend"] == API_BACKEND
        assert raw.parse().choices[0].message.content


def test_stalled_server_is_routed_around_without_client_errors(stack: Stack, sim: BackgroundPool) -> None:
    prefix = _shared_prefix()
    ask(stack, f"{prefix} warm")
    (home,) = served_by(sim, f"{prefix} warm"[-40:])
    sim.set_fault(home, "stalled")
    took = []
    for i in range(4):
        marker = f"s{i}-{uuid.uuid4().hex}"
        t0 = time.monotonic()
        raw = ask(stack, f"{prefix} {marker}")
        took.append(time.monotonic() - t0)
        assert raw.parse().choices[0].message.content  # never an error
        # The first request may wait out its per-try timeout on the stalled server and be
        # retried (on another pool server; on the API tier if the others looked stale then);
        # once the scraper has seen the stall, the pool serves and the stalled server gets none.
        if i:
            assert raw.headers["x-gateway-backend"] == POOL_BACKEND
            assert served_by(sim, marker) and home not in served_by(sim, marker)
    assert max(took[2:]) < 2.0, took


def test_saturated_pool_spills_interactive_and_sheds_batch(tmp_path: Path) -> None:
    """Servers of one sequence each, a queue limit of 1: a few long requests saturate them."""
    with start_pool_in_thread(2, model=MODEL, time_scale=0.5, max_num_seqs=1) as sim:
        s = start_stack(tmp_path, pool_config(sim.endpoints, queue_limit=1, saturation=1.0))
        try:
            time.sleep(0.3)
            errors: list[BaseException] = []

            def long_request() -> None:
                try:
                    client(s, 60).chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "long"}], max_tokens=400
                    )
                except BaseException as e:
                    errors.append(e)

            # Long requests until every server runs one and queues one (load 1.0 each). The next
            # starts once the last reached a server, or after a second: on a busy machine a late
            # scrape counts as saturated, and that request goes to the API tier instead.
            threads: list[threading.Thread] = []
            deadline = time.monotonic() + 20
            started = 0.0
            while [sim.stats(i)["waiting"] for i in range(2)] != [1, 1] and time.monotonic() < deadline:
                reached = sum(sim.stats(i)["requests"] for i in range(2)) == len(threads)
                if len(threads) < 12 and (reached or time.monotonic() - started > 1.0):
                    threads.append(threading.Thread(target=long_request))
                    threads[-1].start()
                    started = time.monotonic()
                time.sleep(0.05)
            assert [sim.stats(i)["waiting"] for i in range(2)] == [1, 1]
            time.sleep(0.3)  # scraped
            served = sum(sim.stats(i)["requests"] for i in range(2))
            raw = client(s).chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "interactive"}], max_tokens=3
            )
            assert raw.headers["x-gateway-backend"] == API_BACKEND  # spilled to the API tier
            with pytest.raises(openai.RateLimitError) as shed:
                client(s).chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "batch"}],
                    max_tokens=3,
                    extra_headers={"x-priority": "batch"},
                )
            retry_after = int(shed.value.response.headers["retry-after"])
            assert 1 <= retry_after <= 60
            assert sum(sim.stats(i)["requests"] for i in range(2)) == served  # neither reached the pool
            for t in threads:
                t.join()
            assert not errors
        finally:
            s.stop()


def test_text_completions_pass_through_to_the_pool(stack: Stack, sim: BackgroundPool) -> None:
    """Code completion: prompt and suffix, streamed and not, to the picked server, unchanged."""
    c = client(stack)
    marker = uuid.uuid4().hex
    raw = c.completions.with_raw_response.create(
        model=MODEL, prompt=f"def f_{marker}(x):", suffix="return y", max_tokens=3
    )
    assert raw.headers["x-gateway-backend"] == POOL_BACKEND
    r = raw.parse()
    assert r.object == "text_completion" and r.model == MODEL and r.choices[0].text == "tok0 tok1 tok2"
    assert r.usage is not None and r.usage.prompt_tokens == 2 + 1 + 2  # the server saw prompt and suffix
    assert len(served_by(sim, marker)) == 1
    marker = uuid.uuid4().hex
    parts = [
        ch.choices[0].text
        for ch in c.completions.create(model=MODEL, prompt=f"x_{marker} =", max_tokens=4, stream=True)
        if ch.choices
    ]
    assert "".join(parts) == "tok0 tok1 tok2 tok3"
    assert len(served_by(sim, marker)) == 1


def test_text_completions_need_an_openai_compatible_backend(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError, match="text completions"):
        client(stack).completions.create(model="claude-only", prompt="x", max_tokens=3)


def _hit_rate_through_gateway(tmp_path: Path, prefix_weight: float) -> float:
    """Six conversations with long shared prefixes, four turns each, over three servers whose
    caches hold about three prefixes each: the servers' own prefix-cache hit rate."""
    tmp_path.mkdir()
    with start_pool_in_thread(3, model=MODEL, time_scale=0.05, num_blocks=16) as sim:
        # Generous staleness bounds: on a busy machine a late scrape would move conversations.
        settings = {"stale_after_ms": 3000, "stall_after_ms": 3000}
        weights = {"queue": 1, "kv_cache": 1, "prefix": prefix_weight}
        s = start_stack(tmp_path, pool_config(sim.endpoints, weights=weights, **settings))
        try:
            wait_until_scraped(s, 3)
            prefixes = [_shared_prefix() for _ in range(6)]
            for turn in range(4):
                for p in prefixes:
                    ask(s, f"{p} turn {turn}")
            reasons: dict[str, float] = {}
            for (_, reason), count in picks(s).items():
                reasons[reason] = reasons.get(reason, 0) + count
            print(f"prefix weight {prefix_weight}: picks by reason {reasons}")
            q = sum(sim.stats(i)["prefix_cache_queries"] for i in range(3))
            return sum(sim.stats(i)["prefix_cache_hits"] for i in range(3)) / q
        finally:
            s.stop()


def test_prefix_aware_picking_raises_the_servers_cache_hit_rate(tmp_path: Path) -> None:
    """Measured by the servers' own counters: with affinity, each conversation stays where its
    prefix is cached; without (load only) the caches thrash. New conversations spread over the
    servers by cache footprint, so no cache has to hold more prefixes than fit."""
    aware = _hit_rate_through_gateway(tmp_path / "aware", 2.0)
    blind = _hit_rate_through_gateway(tmp_path / "blind", 0.0)
    print(f"prefix-cache hit rate: prefix-aware {aware:.2f}, load only {blind:.2f}")
    assert aware >= 0.6 and aware > blind + 0.2, (aware, blind)


def _conversations(
    stack: Stack, prefixes: list[str], turns: int, seconds: float, until: Callable[[], bool] | None = None
) -> list[BaseException]:
    """One thread per prefix, ``turns`` requests each (32-token answers), stopped after ``seconds``
    or as soon as ``until()`` holds (polled every 50 ms)."""
    errors: list[BaseException] = []
    stop_at = time.monotonic() + seconds
    done = threading.Event()

    def talk(prefix: str) -> None:
        for turn in range(turns):
            if time.monotonic() > stop_at or done.is_set():
                return
            try:
                raw = ask(stack, f"{prefix} turn {turn} {uuid.uuid4().hex}", max_tokens=32)
                assert raw.parse().choices[0].message.content
            except BaseException as e:  # reported by the caller: any client error fails the test
                errors.append(e)
                return

    threads = [threading.Thread(target=talk, args=(p,)) for p in prefixes]
    for t in threads:
        t.start()
    while until is not None and any(t.is_alive() for t in threads) and not done.is_set():
        if until():
            done.set()
        time.sleep(0.05)
    for t in threads:
        t.join()
    return errors


def _gauge(stack: Stack, name: str, server: str) -> float | None:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.config.ext_proc.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    m = re.search(rf'{name}\{{pool="gpus",server="{re.escape(server)}"\}} (\S+)', text)
    return float(m.group(1)) if m else None


def test_kv_thrashing_server_is_routed_around_without_client_errors(
    stack: Stack, sim: BackgroundPool
) -> None:
    """One server's KV cache thrashes (8 blocks: two conversations of 32-word prefixes and
    32-token answers outgrow it mid-decode). Its preemption counter rises; once the gateway has
    seen that, the server counts as at its KV limit and the conversations it served move to the
    healthy servers. Six conversations, bounded by turns and time; no client error at any point."""
    prefixes = [f"{uuid.uuid4().hex} " + " ".join(f"c{k}w{j}" for j in range(32)) for k in range(6)]
    homes = []
    for p in prefixes:  # each conversation's first turn: its home server
        marker = uuid.uuid4().hex
        ask(stack, f"{p} {marker}")
        homes += served_by(sim, marker)
    # the home of the most conversations (two at least): their turns overlap there
    thrash = max(range(3), key=homes.count)
    sim.set_fault(thrash, "kv_thrash")
    errors: list[BaseException] = []
    deadline = time.monotonic() + 30

    def seen() -> bool:
        return _gauge(stack, "llm_gateway_pool_server_thrashing", sim.endpoints[thrash]) == 1.0

    # Until the gateway has seen it thrash (then at once: the hold, 10 s, outlasts what follows).
    while not seen():
        assert time.monotonic() < deadline, "the gateway never saw the server thrash"
        errors += _conversations(stack, prefixes, 5, 10, until=seen)
    assert sim.stats(thrash)["preemptions"] > 0  # it did thrash, by its own counter
    before = [sim.stats(i)["requests"] for i in range(3)]
    errors += _conversations(stack, prefixes, 8, 8)  # within the hold
    served = [sim.stats(i)["requests"] - before[i] for i in range(3)]
    print("requests per server after the gateway saw the thrashing:", served)
    assert not errors, errors[:1]
    assert sum(served) >= 24 and served[thrash] <= 0.1 * sum(served), served
