"""Cost-aware routing without Envoy (``prefer: cheapest``, ``ext_proc/pools/cost.py``): the TTFT
histogram parser and quantile (property tests: they read server input), the pool's window and
unit cost, the choice among equal-tier backends, the config rules and the Envoy clusters that
let the choice stand."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from ext_proc.config import DEFAULT_CONFIG, ConfigError, PoolSettings, parse_config
from ext_proc.envoy_config import render
from ext_proc.pools import Pool, route
from ext_proc.pools import metrics as M
from ext_proc.pools.cost import cheapest_first
from ext_proc.pools.metrics_text import MetricsError, parse, quantile
from ext_proc.routing import Candidates
from ext_proc.state import GatewayState

ENV = {"MOCK_OPENAI_API_KEY": "k1", "MOCK_ANTHROPIC_API_KEY": "k2", "MOCK_GEMINI_API_KEY": "k3"}


def _ttft_text(counts: dict[str, float], engine: str = "0") -> str:
    return "vllm:num_requests_waiting 0\n" + "".join(
        f'vllm:time_to_first_token_seconds_bucket{{engine="{engine}",le="{le}"}} {n}\n'
        for le, n in counts.items()
    )


def test_parse_sums_ttft_buckets_over_engines() -> None:
    text = _ttft_text({"0.1": 2, "0.5": 5, "+Inf": 6}) + _ttft_text({"0.1": 1, "0.5": 1, "+Inf": 1}, "1")
    m = parse(text)
    assert m.ttft_buckets == {0.1: 3.0, 0.5: 6.0, math.inf: 7.0}
    assert parse(_ttft_text({"x": 1, "-1": 2, "0.2": 3})).ttft_buckets == {0.2: 3.0}  # bad bounds skipped
    with pytest.raises(MetricsError):  # a histogram alone says nothing about load
        parse('vllm:time_to_first_token_seconds_bucket{le="0.1"} 1\n')


@given(
    st.lists(
        st.tuples(st.sampled_from(["0.01", "0.1", "1", "+Inf", "NaN", "-Inf", "x", ""]), st.floats()),
        max_size=8,
    )
)
def test_parse_any_ttft_buckets(samples: list[tuple[str, float]]) -> None:
    text = "vllm:num_requests_waiting 1\n" + "".join(
        f'sglang:time_to_first_token_seconds_bucket{{engine="{i}",le="{le}"}} {v!r}\n'
        for i, (le, v) in enumerate(samples)
    )
    try:
        m = parse(text)
    except MetricsError:
        return
    assert all(le >= 0 and not math.isnan(le) and n >= 0 for le, n in m.ttft_buckets.items())


def test_quantile_interpolates_like_prometheus() -> None:
    assert quantile(0.9, {}) is None and quantile(0.9, {0.1: 0, math.inf: 0}) is None
    assert quantile(0.9, {0.1: 5, 0.25: 9, 0.5: 10, math.inf: 10}) == pytest.approx(0.25)
    assert quantile(0.5, {0.1: 0, 0.2: 10, math.inf: 10}) == pytest.approx(0.15)
    assert quantile(0.9, {0.1: 1, math.inf: 10}) == 0.1  # in the open bucket: its lower bound


@given(
    st.dictionaries(st.floats(0, 100), st.floats(0, 1e6), max_size=8),
    st.floats(0.01, 1),
    st.floats(0.01, 1),
)
@example({0.375: 2.225073858507203e-309}, 1.0, 1.0)  # rounding once stepped past the bucket
def test_quantile_is_bounded_and_monotone(buckets: dict[float, float], q1: float, q2: float) -> None:
    a, b = quantile(min(q1, q2), buckets), quantile(max(q1, q2), buckets)
    if a is None or b is None:
        assert a is None and b is None and not any(buckets.values())
        return
    assert 0 <= a <= b + 1e-9 <= max(buckets) + 1e-9


def test_pool_ttft_p90_over_its_window_and_cost_at_its_peak_rate() -> None:
    p = Pool("p", ["10.0.0.0:8000", "10.0.0.1:8000"], PoolSettings(ttft_window_ms=200, gpu_hour_usd=3.0))
    t = time.monotonic()
    a, b = p.servers.values()
    a.update(parse(_ttft_text({"0.1": 50, "+Inf": 50})), t)  # history before the gateway came
    b.update(parse(_ttft_text({"0.1": 0, "1": 0, "+Inf": 0})), t)
    p.after_round(t)
    assert p.ttft_p90 is None and p.unit_cost() is None  # nothing new, nothing generated
    a.update(parse(_ttft_text({"0.1": 60, "+Inf": 60})), t + 0.05)  # 10 fast ones
    b.update(parse(_ttft_text({"0.1": 0, "1": 10, "+Inf": 10})), t + 0.05)  # 10 slow ones
    p.after_round(t + 0.05)
    assert p.ttft_p90 is not None and 0.1 < p.ttft_p90 <= 1.0  # 10 of 20 under 0.1 s
    a.update(parse(_ttft_text({"0.1": 160, "+Inf": 160})), t + 0.3)  # 100 fast ones, later
    p.after_round(t + 0.3)
    assert p.ttft_p90 is not None and p.ttft_p90 <= 0.1  # the slow ones left the window
    p.after_round(t + 0.6)
    assert p.ttft_p90 is None  # an empty window: no evidence either way
    for k in range(40):
        for s in (a, b):
            s.update(
                parse(f"vllm:num_requests_waiting 0\nvllm:generation_tokens_total {100 * k}\n"), t + 1 + k
            )
        p.after_round(t + 1 + k)
    peak = p.unit_cost()
    assert peak == pytest.approx(6.0 / (200 * 3600) * 1e6, rel=0.02)
    for s in (a, b):  # idle now: the per-token figure stays what the GPUs cost when used
        s.update(parse("vllm:num_requests_waiting 0\nvllm:generation_tokens_total 3900\n"), t + 50)
    p.after_round(t + 50)
    assert p.unit_cost() == peak


def _config(prefer: str | None = "cheapest", **extra: Any) -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["providers"]["gpus"] = {
        "dialect": "openai",
        "endpoints": ["127.0.0.1:9", "127.0.0.1:10"],
        "pool": {"gpu_hour_usd": 2.0},
    }
    model: dict[str, Any] = {
        "backends": [
            {"provider": "gpus", "model": "llama", "tier": 0},
            {"provider": "openai", "model": "gpt-5.5", "tier": 0},
            {"provider": "anthropic", "model": "claude-sonnet-4-6", "tier": 1},
        ],
        **extra,
    }
    if prefer is not None:
        model["prefer"] = prefer
    data["models"]["sim"] = model
    return data


def _state(data: dict[str, Any]) -> GatewayState:
    return GatewayState(parse_config(yaml.safe_dump(data), "test.yaml"), env=ENV)


def _order(state: GatewayState, model: str = "sim") -> list[str]:
    c = Candidates.of(state.config.chains[model], state.health)
    pick = route.before_admission(state, "t", None, model, {"messages": []}, c)
    if pick is not None:
        pick.release()
    return [b.name for b in c.order]


def _mark_up(pool: Pool) -> None:
    now = time.monotonic()
    for s in pool.servers.values():
        s.update(parse("vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n"), now)


def _picks(model: str, backend: str, reason: str) -> float:
    return M.COST_PICKS.labels(model, backend, reason)._value.get()


def test_cheapest_equal_tier_backend_first_while_within_its_slo() -> None:
    state = _state(_config(slo={"ttft_p90_ms": 500}))
    pool = state.pools.get("gpus")
    assert pool is not None
    _mark_up(pool)
    before = _picks("sim", "gpus/llama", "cost")
    # Not measured yet: the GPUs are paid for, so the pool counts as cheapest.
    assert _order(state) == ["gpus/llama", "openai/gpt-5.5", "anthropic/claude-sonnet-4-6"]
    assert _picks("sim", "gpus/llama", "cost") == before + 1
    pool.peak_token_rate = 100.0  # 4 USD/h over 360,000 tokens/h: 11 USD per million, under 30
    pool.ttft_p90 = 0.4
    assert _order(state)[0] == "gpus/llama"
    pool.ttft_p90 = 0.6  # over the SLO: the API backend of the same tier goes first
    slo_before = _picks("sim", "openai/gpt-5.5", "slo")
    assert _order(state) == ["openai/gpt-5.5", "gpus/llama", "anthropic/claude-sonnet-4-6"]
    assert _picks("sim", "openai/gpt-5.5", "slo") == slo_before + 1
    pool.ttft_p90 = None  # no first token in the window: tried again
    pool.peak_token_rate = 10.0  # 111 USD per million at the most it ever generated: dearer
    assert _order(state) == ["openai/gpt-5.5", "gpus/llama", "anthropic/claude-sonnet-4-6"]


def test_a_saturated_cheap_pool_spills_to_its_tier_peer() -> None:
    state = _state(_config())
    pool = state.pools.get("gpus")
    assert pool is not None
    now = time.monotonic()
    for s in pool.servers.values():
        s.update(parse("vllm:num_requests_waiting 50\n"), now)
    assert _order(state) == ["openai/gpt-5.5", "anthropic/claude-sonnet-4-6"]


def test_priced_api_backends_of_a_tier_cheapest_first_and_unpriced_last() -> None:
    data = _config()
    data["models"]["sim"]["backends"] = [
        {"provider": "openai", "model": "gpt-5.5", "tier": 0},  # the catalog's price: 30 per million
        {"provider": "anthropic", "model": "unpriced-model", "tier": 0},
        {"provider": "gemini", "model": "gemini-3.5-flash", "tier": 0, "price": {"output": 2.5}},
    ]
    state = _state(data)
    assert state.config.backends["anthropic/unpriced-model"].price is None
    for _ in range(5):  # the weighted draw never wins over price
        assert _order(state) == ["gemini/gemini-3.5-flash", "openai/gpt-5.5", "anthropic/unpriced-model"]


def test_an_api_backend_is_held_to_the_slo_by_its_measured_first_tokens() -> None:
    """Two API backends of a tier: the cheaper leads while the p90 of its streamed answers' first
    bytes (as the gateway measured them, over slo.window_ms) is within the SLO; past it the
    dearer one leads, and once the slow answers have left the window the cheaper is tried again."""
    data = _config(slo={"ttft_p90_ms": 200, "window_ms": 1000})
    data["models"]["sim"]["backends"] = [
        {"provider": "openai", "model": "gpt-5.5", "tier": 0},  # the catalog's price: 30 per million
        {"provider": "gemini", "model": "gemini-3.5-flash", "tier": 0, "price": {"output": 2.5}},
    ]
    state = _state(data)
    times = state.pools.api_ttft
    assert set(times.windows) == {"openai/gpt-5.5", "gemini/gemini-3.5-flash"}
    assert _order(state)[0] == "gemini/gemini-3.5-flash"  # nothing measured: no evidence against it
    t = time.monotonic()
    for k in range(10):  # one slow answer in ten: the p90 is still a fast one
        times.record("gemini/gemini-3.5-flash", 0.9 if k == 0 else 0.05, t)
    assert times.p90("gemini/gemini-3.5-flash", t + 0.2) == 0.05
    assert _order(state)[0] == "gemini/gemini-3.5-flash"
    for _ in range(5):
        times.record("gemini/gemini-3.5-flash", 0.5, t + 0.3)
    slo_before = _picks("sim", "openai/gpt-5.5", "slo")
    assert times.p90("gemini/gemini-3.5-flash", t + 0.4) == 0.5
    assert _order(state) == ["openai/gpt-5.5", "gemini/gemini-3.5-flash"]
    assert _picks("sim", "openai/gpt-5.5", "slo") == slo_before + 1
    assert times.p90("gemini/gemini-3.5-flash", t + 1.5) is None  # the window has passed
    assert _order(state)[0] == "gemini/gemini-3.5-flash"
    # A config switch keeps what was measured; a backend no longer held to an SLO is not kept.
    times.record("gemini/gemini-3.5-flash", 0.7, t + 1.6)
    after = GatewayState(state.config, env=ENV, previous=state).pools.api_ttft
    assert after.p90("gemini/gemini-3.5-flash", t + 1.7) == 0.7
    assert not _state(_config(prefer=None)).pools.api_ttft.windows


def test_default_preference_keeps_the_weighted_draw() -> None:
    state = _state(_config(prefer=None))
    assert "sim" not in state.pools.cost_models
    pool = state.pools.get("gpus")
    assert pool is not None
    _mark_up(pool)
    firsts = {_order(state)[0] for _ in range(60)}
    assert firsts == {"gpus/llama", "openai/gpt-5.5"}  # both lead sometimes, as Envoy splits
    c = Candidates.of(state.config.chains["sim"], state.health)
    cheapest_first(state, "sim", c)  # what the opt-in would do, for contrast
    assert c.order[0].name == "gpus/llama"


def test_config_rules_of_prefer_and_slo() -> None:
    data = _config()
    del data["providers"]["gpus"]["pool"]
    with pytest.raises(ConfigError, match=r"prefer: cheapest needs the cost of pool 'gpus'"):
        parse_config(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models.sim.slo: applies only with prefer: cheapest"):
        parse_config(yaml.safe_dump(_config(prefer=None, slo={"ttft_p90_ms": 300})))
    with pytest.raises(ConfigError, match=r"models.sim.prefer"):
        parse_config(yaml.safe_dump(_config(prefer="fastest")))


def test_envoy_starts_each_shared_tier_backend_on_a_cluster_it_leads() -> None:
    """Envoy splits a shared tier by weight; for the router stage's choice to stand, each backend
    of the tier has a cluster with it alone first, the rest of its tier next, later tiers after."""
    cfg = parse_config(yaml.safe_dump(_config(slo={"ttft_p90_ms": 500})))
    bootstrap = render(cfg)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}

    def priorities(name: str) -> list[list[int]]:
        return [
            [e["endpoint"]["address"]["socket_address"]["port_value"] for e in loc["lb_endpoints"]]
            for loc in clusters[name]["load_assignment"]["endpoints"]
        ]

    openai, anthropic = cfg.providers["openai"].port, cfg.providers["anthropic"].port
    api_first = priorities("model/sim/from-tier-0/first/openai/gpt-5.5")
    assert api_first == [[openai], [9, 10], [anthropic]]
    assert priorities("model/sim/from-tier-0/first/gpus/llama") == [[9, 10], [openai], [anthropic]]
    routes = [
        r
        for vh in bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"
        ]["route_config"]["virtual_hosts"]
        for r in vh["routes"]
        if r["name"].startswith("sim via ")
    ]
    by_primary = {r["name"].removesuffix(" (stream)"): r["route"]["cluster"] for r in routes}
    assert by_primary == {
        "sim via gpus/llama": "model/sim/from-tier-0/first/gpus/llama",
        "sim via openai/gpt-5.5": "model/sim/from-tier-0/first/openai/gpt-5.5",
        "sim via anthropic/claude-sonnet-4-6": "model/sim/from-tier-1",
    }
    # A pool sharing a tier leads it by default too: the picker's choice and its spill-over
    # to the tier's API backend must stand against Envoy's weighted split.
    plain = render(parse_config(yaml.safe_dump(_config(prefer=None))))
    leads = sorted(c["name"] for c in plain["static_resources"]["clusters"] if "/first/" in c["name"])
    assert leads == ["model/sim/from-tier-0/first/gpus/llama", "model/sim/from-tier-0/first/openai/gpt-5.5"]
    # A tier of API backends only stays Envoy's weighted split.
    apis = _config(prefer=None)
    apis["models"]["sim"]["backends"] = [
        {"provider": "openai", "model": "gpt-5.5", "tier": 0},
        {"provider": "gemini", "model": "gemini-3.5-flash", "tier": 0},
    ]
    split = render(parse_config(yaml.safe_dump(apis)))
    assert not [c for c in split["static_resources"]["clusters"] if "/first/" in c["name"]]
