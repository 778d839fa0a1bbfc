"""The simulated vLLM pool: OpenAI SDK clients against it, its metrics under vLLM's names,
and the scheduling behaviour (batching, queueing, prefix caching, eviction, faults)."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway_tools.simulator import start_pool_in_thread
from gateway_tools.simulator.engine import BLOCK_SIZE, KVCache, Profile, block_hashes

MODEL = "sim-llama"


@pytest.fixture(scope="module")
def pool() -> Iterator[object]:
    with start_pool_in_thread(2, model=MODEL, time_scale=0.02, num_blocks=256, max_num_seqs=2) as p:
        yield p


def client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=10)


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value if s.name.endswith(("_count", "_sum")) else s.value
    return out


def test_chat_streamed_and_not(pool: object) -> None:
    c = client(pool.ports[0])  # type: ignore[attr-defined]
    r = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=5
    )
    assert r.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 5
    chunks = list(
        c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "tok0 tok1 tok2"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_completions_with_suffix_streamed(pool: object) -> None:
    c = client(pool.ports[0])  # type: ignore[attr-defined]
    r = c.completions.create(model=MODEL, prompt="def f(x):", suffix="return y", max_tokens=4)
    assert r.object == "text_completion" and r.choices[0].text == "tok0 tok1 tok2 tok3"
    assert r.usage and r.usage.prompt_tokens == 2 + 1 + 2  # prompt words, the FIM marker, suffix words
    parts = [
        ch.choices[0].text
        for ch in c.completions.create(model=MODEL, prompt="x =", max_tokens=3, stream=True)
    ]
    assert "".join(parts) == "tok0 tok1 tok2"


def test_models_and_validation(pool: object) -> None:
    c = client(pool.ports[0])  # type: ignore[attr-defined]
    assert [m.id for m in c.models.list().data] == [MODEL]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="messages"):
        c.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="prompt"):
        c.completions.create(model=MODEL, prompt=[1, 2, 3])  # token ids: vLLM takes them, the simulator not
    with pytest.raises(openai.BadRequestError, match="suffix"):
        c.completions.create(model=MODEL, prompt="x", extra_body={"suffix": 5})


def test_metrics_use_vllm_names_and_count_prefix_hits(pool: object) -> None:
    port = pool.ports[1]  # type: ignore[attr-defined]
    c = client(port)
    prompt = " ".join(f"w{i}" for i in range(5 * BLOCK_SIZE))
    before = metrics(port)
    for name in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:cache_config_info",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
    ):
        assert name in before, name
    c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=2)
    mid = metrics(port)
    assert mid["vllm:prefix_cache_hits_total"] == before["vllm:prefix_cache_hits_total"]  # cold
    c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=2)
    after = metrics(port)
    # 81 tokens (role marker + 80 words): five full blocks, all cached the second time
    assert after["vllm:prefix_cache_hits_total"] - mid["vllm:prefix_cache_hits_total"] == 5 * BLOCK_SIZE
    assert (
        after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"]
        == 2
    )


def test_batch_is_capped_at_max_num_seqs_and_the_rest_queue(pool: object) -> None:
    port = pool.ports[0]  # type: ignore[attr-defined]
    seen: list[tuple[float, float]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            m = metrics(port)
            seen.append((m["vllm:num_requests_running"], m["vllm:num_requests_waiting"]))
            time.sleep(0.01)

    def ask() -> None:
        client(port).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "q"}], max_tokens=60
        )

    w = threading.Thread(target=watch)
    w.start()
    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    w.join()
    assert max(r for r, _ in seen) == 2  # max_num_seqs
    assert max(q for _, q in seen) >= 1


def test_faults_down_stalled_and_thrash() -> None:
    with start_pool_in_thread(1, model=MODEL, time_scale=0.02) as p:
        port = p.ports[0]
        p.set_fault(0, "down")
        with pytest.raises(openai.APIConnectionError):
            client(port).models.list()
        p.set_fault(0, "stalled")
        with pytest.raises(openai.APITimeoutError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=1
            ).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=1)
        assert metrics(port)["vllm:num_requests_waiting"] == 1  # scrapes still answer; the queue grows
        p.set_fault(0, "kv_thrash")  # 8 blocks: a 5-block prompt cannot stay cached next to another
        c = client(port)
        for _i in range(3):
            for prompt in ("a " * 80, "b " * 80):
                c.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=1
                )
        assert p.stats(0)["prefix_cache_hits"] == 0
        p.set_fault(0, "none")
        assert c.models.list().data[0].id == MODEL


def test_decode_step_grows_with_batch_and_prefill_with_uncached_tokens() -> None:
    from gateway_tools.simulator.engine import Engine

    e = Engine(Profile(), time_scale=1.0)
    assert e._step_duration(0, 1) == pytest.approx(0.0133)
    assert e._step_duration(0, 8) == pytest.approx(0.0133 + 7 * 0.0004)  # ~16.2 ms, the cited figure
    assert e._step_duration(1000, 0) == pytest.approx(0.1)


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), min_size=0, max_size=80), min_size=1, max_size=12))
def test_kv_cache_accounting_holds_under_any_allocation_order(prompts: list[list[str]]) -> None:
    """Whatever is allocated and released, used + free + cached-free = num_blocks and nothing goes negative."""
    kv = KVCache(20)
    live: list[tuple[list[str], int]] = []
    for i, prompt in enumerate(prompts):
        got = kv.allocate(block_hashes(prompt), len(prompt) % 2)
        if got is not None:
            live.append((got[1], len(prompt) % 2))
        if i % 3 == 2 and live:
            held, anon = live.pop(0)
            kv.release(held, anon)
        assert 0 <= kv.used <= kv.num_blocks and kv.free >= 0
        assert kv.used + kv.available() == kv.num_blocks
    for held, anon in live:
        kv.release(held, anon)
    assert kv.used == 0


def test_kv_cache_reuses_a_block_cached_behind_an_evicted_parent() -> None:
    """A prompt whose first block was evicted but whose later blocks are still cached (the LRU
    evicts parents first): the cached block is taken off the free list, not evicted under the
    request that holds it (the KV-thrashing fault hit this)."""
    kv = KVCache(6)
    prompt = [f"w{i}" for i in range(3 * BLOCK_SIZE)]
    held = kv.allocate(block_hashes(prompt), 0)
    assert held is not None
    kv.release(held[1], 0)  # three cached-free blocks, parent oldest
    assert kv.allocate([], 3) is not None  # the three free ones
    assert kv.allocate([], 1) is not None  # evicts the parent only
    kv.release([], 3)
    again = kv.allocate(block_hashes(prompt), 0)
    assert again is not None and again[0] == 0  # no leading hit: the parent is gone
    assert kv.allocate([], 2) is not None  # must not evict the blocks `again` holds
    kv.release(again[1], 0)
    assert kv.used + kv.available() == kv.num_blocks and kv.used == 3
