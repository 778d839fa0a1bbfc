"""Pool picking without Envoy: the metrics parser and the prompt hashing (property tests,
they read server and client input), the scorers, saturation and staleness rules."""

from __future__ import annotations

import time

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.config import DEFAULT_CONFIG, PoolSettings, parse_config
from ext_proc.dialects import DEFAULT
from ext_proc.pools.metrics_text import MetricsError, parse
from ext_proc.pools.picker import Pick, Pool, Saturated
from ext_proc.pools.prefix import BLOCK_WORDS, AffinityTable, block_hashes, prompt_words
from ext_proc.request.attempt import AttemptContext, AttemptFailure, AttemptPlan, retranslate
from ext_proc.request.responses import InvalidAnswer, make_translator
from ext_proc.state import GatewayState
from gateway_tools.simulator import SimServer

VLLM = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 40.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",num_gpu_blocks="2048",enable_prefix_caching="True"} 1.0
"""


def test_parse_vllm_sums_engines_and_averages_kv() -> None:
    m = parse(VLLM)
    assert (m.waiting, m.running, m.kv_usage) == (4.0, 7.0, 0.375)
    assert (m.prefix_queries, m.prefix_hits, m.block_size, m.num_blocks) == (100.0, 40.0, 16, 2048)


def test_parse_reads_the_simulators_own_exposition() -> None:
    from prometheus_client import generate_latest

    s = SimServer("m")
    m = parse(generate_latest(s.registry).decode())
    assert (m.waiting, m.running, m.kv_usage, m.num_blocks) == (0.0, 0.0, 0.0, s.profile.num_blocks)


def test_parse_sglang_names() -> None:
    m = parse(
        "sglang:num_queue_reqs 2\nsglang:num_running_reqs 5\nsglang:token_usage 0.8\nsglang:cache_hit_rate 0.6\n"
    )
    assert (m.waiting, m.running, m.kv_usage, m.hit_rate) == (2.0, 5.0, 0.8, 0.6)


def test_parse_refuses_what_says_nothing_about_load() -> None:
    with pytest.raises(MetricsError):
        parse("process_cpu_seconds_total 3\n")
    with pytest.raises(MetricsError):
        parse("<html>not metrics</html>")


@given(st.text(max_size=400))
def test_parse_never_fails_but_with_metrics_error(text: str) -> None:
    """Any bytes a server sends: figures within bounds, or MetricsError."""
    try:
        m = parse(text)
    except MetricsError:
        return
    assert 0.0 <= m.kv_usage <= 1.0 and m.waiting >= 0 and m.running >= 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total", "x"]
            ),
            st.floats(),
        ),
        max_size=6,
    )
)
def test_parse_generated_exposition(samples: list[tuple[str, float]]) -> None:
    text = "".join(f'{name}{{engine="{i}"}} {value!r}\n' for i, (name, value) in enumerate(samples))
    try:
        m = parse(text)
    except MetricsError:
        return
    assert 0.0 <= m.kv_usage <= 1.0 and m.waiting >= 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_prompt_words_of_any_body(body: dict) -> None:
    words = prompt_words(body, limit=50)
    assert len(words) <= 50 and all(w and not any(c.isspace() for c in w) for w in words)
    hashes = block_hashes(words)
    assert len(hashes) == len(words) // BLOCK_WORDS


@given(
    st.lists(st.text(alphabet="abc ", min_size=1, max_size=5), min_size=1, max_size=80),
    st.text(alphabet="xyz", max_size=40),
)
def test_shared_prefix_shares_leading_hashes(prefix_words: list[str], tail: str) -> None:
    """Two prompts that share their first k words share their first k // 16 block hashes (chained)."""
    a = {"messages": [{"role": "user", "content": " ".join(prefix_words) + " " + tail}]}
    b = {"messages": [{"role": "user", "content": " ".join(prefix_words) + " zzz " + tail}]}
    ha, hb = block_hashes(prompt_words(a)), block_hashes(prompt_words(b))
    common = (
        len(prompt_words({"messages": [{"role": "user", "content": " ".join(prefix_words)}]})) // BLOCK_WORDS
    )
    assert ha[:common] == hb[:common]


def test_model_name_is_not_part_of_the_prefix() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "x " * 32}]}
    assert block_hashes(prompt_words(body)) == block_hashes(prompt_words({**body, "model": "b"}))


def test_affinity_table_is_bounded_and_chained() -> None:
    t = AffinityTable(capacity=4)
    h = block_hashes(["w"] * 16 * 6)
    t.record(h[:3], "a")
    assert t.matches(h) == {"a": 3}
    t.record(h[3:6], "b")  # evicts the oldest two of a's
    assert len(t._seen) == 4 and t.matches(h)["b"] == 6


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 11), st.integers(1, 5), st.sampled_from("abc")), max_size=30),
    st.sampled_from("abcd"),
)
def test_affinity_footprints_add_up_to_what_the_table_remembers(
    records: list[tuple[int, int, str]], forgotten: str
) -> None:
    t = AffinityTable(capacity=8)
    h = block_hashes(["w"] * 16 * 16)
    for start, n, server in records:
        t.record(h[start : start + n], server)
        held = {s: sum(1 for x, _ in t._seen.values() if x == s) for s in "abc"}
        assert {s: t.held(s) for s in "abc"} == held
    t.forget(forgotten)
    assert t.held(forgotten) == 0 and sum(t.held(s) for s in "abc") == len(t._seen)


def test_new_conversations_spread_over_idle_servers_caches() -> None:
    """Idle servers tie on load: each new prefix goes where fewer remembered blocks live, so six
    conversations land two per server (at random, one server would get four a third of the time)."""
    p = _pool()
    homes = []
    for i in range(6):
        pick = p.pick({"messages": [{"role": "user", "content": f"conversation{i} " * 64}]})
        assert isinstance(pick, Pick) and pick.reason == "load"
        pick.release()
        p.servers[pick.order[0]].sent_since_scrape = 0  # scraped again: idle
        homes.append(pick.order[0])
    assert sorted(homes.count(e) for e in p.servers) == [2, 2, 2]


def _pool(n: int = 3, **kw: object) -> Pool:
    p = Pool("p", [f"10.0.0.{i}:8000" for i in range(n)], PoolSettings(**kw))  # type: ignore[arg-type]
    now = time.monotonic()
    for s in p.servers.values():
        s.update(parse("vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n"), now)
    return p


def _load(p: Pool, endpoint: str, waiting: float, kv: float) -> None:
    p.servers[endpoint].update(
        parse(f"vllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc {kv}\n"), time.monotonic()
    )


def test_least_loaded_first_and_the_rest_in_order() -> None:
    p = _pool()
    _load(p, "10.0.0.0:8000", 6, 0.5)
    _load(p, "10.0.0.1:8000", 0, 0.1)
    _load(p, "10.0.0.2:8000", 3, 0.3)
    pick = p.pick({"messages": []})
    assert isinstance(pick, Pick) and pick.order == ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.0:8000"]
    assert pick.reason == "load" and p.servers["10.0.0.1:8000"].in_flight == 1
    pick.release()
    pick.release()
    assert p.servers["10.0.0.1:8000"].in_flight == 0


def test_prefix_affinity_wins_until_its_server_is_overloaded() -> None:
    p = _pool(queue_limit=4)
    body = {"messages": [{"role": "user", "content": "shared " * 64}]}
    first = p.pick(body)
    assert isinstance(first, Pick)
    home = first.order[0]
    _load(p, home, 2, 0.5)  # busier than the others, not overloaded
    again = p.pick(body)
    assert isinstance(again, Pick) and again.order[0] == home and again.reason == "prefix"
    _load(p, home, 4, 0.5)  # at its queue limit: affinity no longer counts
    away = p.pick(body)
    assert isinstance(away, Pick) and away.order[0] != home and away.order[-1] == home


def test_baseline_pickers_ignore_load_and_prefixes_but_not_saturation() -> None:
    body = {"messages": [{"role": "user", "content": "shared " * 64}]}
    rr = _pool(queue_limit=4, picker="round_robin")
    _load(rr, "10.0.0.0:8000", 3, 0.5)  # the busiest: round robin sends it its turn anyway
    firsts = []
    for _ in range(6):
        pick = rr.pick(body)
        assert isinstance(pick, Pick) and pick.reason == "round_robin" and len(pick.order) == 3
        firsts.append(pick.order[0])
    assert firsts == [f"10.0.0.{i % 3}:8000" for i in range(6)]
    rnd = _pool(queue_limit=100, picker="random")
    seen = set()
    for _ in range(60):
        pick = rnd.pick(body)
        assert (
            isinstance(pick, Pick) and pick.reason == "random" and sorted(pick.order) == sorted(rnd.servers)
        )
        seen.add(pick.order[0])
    assert len(seen) == 3  # the same prefix still lands everywhere
    for e in rr.servers:
        _load(rr, e, 4, 0.5)
    assert isinstance(rr.pick(body), Saturated)  # backpressure applies to every picker


def test_stale_or_failed_scrapes_count_as_saturated() -> None:
    p = _pool(2, stale_after_ms=50)
    p.servers["10.0.0.0:8000"].up = False
    pick = p.pick({})
    assert isinstance(pick, Pick) and pick.order == ["10.0.0.1:8000"] and pick.reason == "only"
    time.sleep(0.06)  # both stale now
    assert isinstance(p.pick({}), Saturated)


def test_parse_reads_vllm_preemptions() -> None:
    m = parse(VLLM + 'vllm:num_preemptions_total{engine="0",model_name="m"} 5.0\n')
    assert m.preemptions == 5.0 and parse(VLLM).preemptions == 0.0


def test_a_preempting_server_is_at_its_kv_limit_for_the_hold() -> None:
    """A rising preemption counter (the KV cache thrashes) puts a server behind the others,
    prefix affinity and a low queue notwithstanding, until ``preemption_hold_ms`` has passed
    without another preemption; one high counter seen from the start is no rise."""
    p = _pool(3, preemption_hold_ms=200)
    body = {"messages": [{"role": "user", "content": "shared " * 64}]}
    first = p.pick(body)
    assert isinstance(first, Pick)
    home = first.order[0]
    first.release()

    def scrape(preemptions: float) -> None:
        text = f"vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.2\nvllm:num_preemptions_total {preemptions}\n"
        p.servers[home].update(parse(text), time.monotonic())

    scrape(0)
    again = p.pick(body)
    assert isinstance(again, Pick) and again.order[0] == home and again.reason == "prefix"
    again.release()
    scrape(2)  # it preempted two requests since
    away = p.pick(body)
    assert isinstance(away, Pick) and away.order[0] != home and away.order[-1] == home
    assert p.saturation(p.views([], time.monotonic())) > 0.4  # one of three counts as saturated
    time.sleep(0.25)
    scrape(2)  # no further preemption for longer than the hold
    back = p.pick(body)
    assert isinstance(back, Pick) and back.order[0] == home
    fresh = Pool("q", ["10.0.0.9:8000"], PoolSettings())
    s = fresh.servers["10.0.0.9:8000"]
    s.update(parse("vllm:num_requests_waiting 0\nvllm:num_preemptions_total 7\n"), time.monotonic())
    assert not fresh.views([], time.monotonic())[0].thrashing  # a counter's first figure is no rise
    never = Pool("q", ["10.0.0.9:8000"], PoolSettings(preemption_hold_ms=0))
    s = never.servers["10.0.0.9:8000"]
    for n in (1, 2):
        s.update(parse(f"vllm:num_requests_waiting 0\nvllm:num_preemptions_total {n}\n"), time.monotonic())
    assert not never.views([], time.monotonic() + 0.001)[0].thrashing


def test_pool_saturation_is_the_mean_load_over_the_threshold() -> None:
    p = _pool(2, queue_limit=2, kv_cache_limit=0.8)
    _load(p, "10.0.0.0:8000", 2, 0.1)  # load 1.0
    _load(p, "10.0.0.1:8000", 0, 0.6)  # load 0.75
    assert isinstance(p.pick({}), Pick)  # mean 0.875
    _load(p, "10.0.0.1:8000", 0, 0.8)  # load 1.0
    sat = p.pick({})
    assert isinstance(sat, Saturated) and sat.load == pytest.approx(1.0) and 1.0 <= sat.retry_after <= 60


# ---- text completions on the request path (no Envoy) ----------------------------------

ENV = {"MOCK_OPENAI_API_KEY": "k1", "MOCK_ANTHROPIC_API_KEY": "k2", "MOCK_GEMINI_API_KEY": "k3"}


def _state() -> GatewayState:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["providers"]["gpus"] = {"dialect": "openai", "endpoints": ["127.0.0.1:9", "127.0.0.1:10"]}
    data["models"]["sim"] = {
        "backends": [
            {"provider": "gpus"},
            {"provider": "openai", "model": "gpt-5.5"},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
    }
    return GatewayState(parse_config(yaml.safe_dump(data), "test.yaml"), env=ENV)


def test_completion_failover_keeps_its_path_or_fails_where_it_cannot_go() -> None:
    state = _state()
    body = orjson.dumps({"model": "sim", "prompt": "def f(", "suffix": "return 1", "stream": True})
    to_openai = retranslate(state, AttemptContext("openai/gpt-5.5", "sim", "gpus/sim", True, ""), body)
    assert isinstance(to_openai, AttemptPlan) and to_openai.set_headers[":path"] == "/v1/completions"
    assert (
        orjson.loads(to_openai.body)["model"] == "gpt-5.5"
        and orjson.loads(to_openai.body)["suffix"] == "return 1"
    )
    to_claude = retranslate(
        state, AttemptContext("anthropic/claude-sonnet-4-6", "sim", "gpus/sim", True, ""), body
    )
    assert isinstance(to_claude, AttemptFailure) and to_claude.status == 502


@given(st.binary(max_size=300) | st.builds(orjson.dumps, json_values))
def test_completion_answers_pass_or_are_invalid(body: bytes) -> None:
    """Whatever a server answers a text completion with: passed on (model renamed), or InvalidAnswer."""
    b = _state().config.backends["gpus/sim"]
    t = make_translator(
        client=DEFAULT,
        backend=b,
        status=200,
        stream=False,
        model="sim",
        ir=None,
        body=None,
        on_done=lambda *_: None,
        redact=_state().redact,
        completion=True,
    )
    try:
        out = t.feed(body, True)
    except InvalidAnswer:
        return
    assert isinstance(orjson.loads(out if out is not None else body), dict)


def test_dns_named_endpoints_resolve_to_their_addresses() -> None:
    import asyncio

    p = Pool("p", ["localhost:8000", "10.0.0.9:8000"], PoolSettings())
    assert list(p.servers) == ["10.0.0.9:8000"]  # the name waits for its resolution
    asyncio.run(p.resolve())
    assert set(p.servers) == {"127.0.0.1:8000", "10.0.0.9:8000"}
    p.affinity.record(block_hashes(["w"] * 16), "127.0.0.1:8000")
    p.set_servers({"10.0.0.9:8000"})  # the name's address went away
    assert list(p.servers) == ["10.0.0.9:8000"] and p.affinity.matches(block_hashes(["w"] * 16)) == {}


def test_a_config_switch_keeps_unchanged_pools_and_stops_the_rest() -> None:
    """Scraped state and affinity survive an apply; a changed pool starts over and the old
    one's scraper is stopped."""
    import asyncio

    from ext_proc.pools import PoolSet

    async def main() -> None:
        old = _state()
        await old.pools.start(first_round_timeout_s=0.2)
        pool = old.pools.get("gpus")
        assert pool is not None and pool.task is not None
        same = GatewayState(old.config, env=ENV, previous=old)
        assert same.pools.get("gpus") is pool
        data = yaml.safe_load(old.config.text)
        data["providers"]["gpus"]["endpoints"] = ["127.0.0.1:11"]
        changed = PoolSet(parse_config(yaml.safe_dump(data), "t.yaml"), previous=old.pools)
        assert changed.get("gpus") is not pool
        old.pools.stop(keep=changed)
        assert pool.task is None

    asyncio.run(main())


def test_the_pool_example_config_is_valid() -> None:
    from ext_proc.config import load_config

    cfg = load_config("config/examples/pool.yaml")
    assert cfg.providers["gpus"].endpoints and cfg.retries("sim-llama") == 3


def test_pool_cost_per_million_output_tokens_from_the_servers_counters() -> None:
    p = _pool(2, gpu_hour_usd=3.0)
    assert p.cost() == (6.0, None)  # nothing generated yet: no per-token figure
    t = time.monotonic()
    for i, e in enumerate(p.servers):
        s = p.servers[e]
        for k in range(40):  # 100 tokens/s each, steady: the smoothed rate converges on it
            s.update(parse(f"vllm:num_requests_waiting 0\nvllm:generation_tokens_total {100 * k}\n"), t + k)
        assert s.token_rate == pytest.approx(100, rel=0.01), i
    per_hour, per_million = p.cost()  # type: ignore[misc]
    assert per_hour == 6.0
    # 6 USD/h over 200 tokens/s = 720,000 tokens/h -> 8.33 USD per million
    assert per_million == pytest.approx(6.0 / 720_000 * 1e6, rel=0.01)
    assert _pool(2).cost() is None


def test_status_shows_own_gpu_cost_next_to_api_prices() -> None:
    from gateway_tools.status import render

    cfg = _state().config
    empty = {"backends": {}, "tenants": {}, "interval": 1.0}
    assert "COST" not in render(cfg, {}, empty)  # no pool reports a cost: no section
    pools = {"gpus": {"usd_per_hour": 6.0, "usd_per_million_output_tokens": 8.333}}
    text = render(cfg, {}, {**empty, "pools": pools})
    assert "COST per million output tokens" in text
    assert "gpus/sim: 8.33 USD on own GPUs at the current load (6 USD/h)" in text
    price = cfg.backends["openai/gpt-5.5"].price
    assert price is not None
    assert f"openai/gpt-5.5: {price.output:g} USD (API price; input {price.input:g})" in text
    idle = render(cfg, {}, {**empty, "pools": {"gpus": {"usd_per_hour": 6.0}}})
    assert "gpus/sim: idle (6 USD/h)" in idle
