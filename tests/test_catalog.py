"""The model capability catalog: the shipped figures and their sources, lookups (aliases,
cloud spellings), config overrides, the limits the request path applies (clamp, refuse,
output-cap field), admission's clamp, catalog prices, and the retirement warnings of
``llm-gateway check`` and ``status`` (docs/catalog.md)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext_proc import catalog
from ext_proc.admission import estimate
from ext_proc.catalog import CapabilityOverrides, Catalog, ModelCaps
from ext_proc.catalog.limits import clamp_to_model, output_cap
from ext_proc.config import DEFAULT_CONFIG, ConfigError, parse_config, retirement_warnings
from ext_proc.dialects import get_codec, get_dialect
from ext_proc.errors import GatewayError
from ext_proc.pricing import cost_usd
from ext_proc.request.attempt import AttemptContext, AttemptPlan, retranslate
from ext_proc.request.plan import RoutePlan
from gateway_tools.status import render
from tests.test_request_path import ANTHROPIC, OPENAI, do_plan, error_of, state_of

TODAY = date(2026, 11, 30)
RAW = yaml.safe_load(catalog.CATALOG_FILE.read_text())


def default_data() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def with_backend(backend: dict[str, Any], model: str = "extra", **settings_: Any) -> dict[str, Any]:
    data = default_data()
    data["models"][model] = {"backends": [backend], **settings_}
    return data


def config_of(data: dict[str, Any]):
    return parse_config(yaml.safe_dump(data, sort_keys=False), "x.yaml")


# ---- the shipped catalog -----------------------------------------------------------------------


def test_every_shipped_figure_has_a_source_and_a_check_date() -> None:
    cat = catalog.shipped()
    checked = 0
    for family in cat.families:
        for caps in cat._index[family].values():
            for name in (*catalog.FIGURES, "price"):
                if getattr(caps, name) is not None:
                    src = caps.sources.get(name)
                    assert src is not None, f"{family}/{caps.model}.{name} has no source"
                    assert src.url and src.checked >= date(2026, 1, 1), (family, caps.model, name)
                    checked += 1
    assert checked > 100  # the walk saw the catalog, not an empty index


def test_a_figure_without_a_source_is_a_catalog_error() -> None:
    data = {
        "sources": {"s": {"url": "https://example.com", "checked": "2026-11-30"}},
        "families": {"f": {"models": {"m": {"max_output_tokens": 10}}}},
    }
    with pytest.raises(catalog.CatalogError, match="max_output_tokens"):
        Catalog(data)
    data["families"]["f"]["models"]["m"]["source"] = "s"
    assert Catalog(data).find("f", "m") == ModelCaps(model="m", family="f", max_output_tokens=10)


def test_the_default_models_are_known() -> None:
    gpt = catalog.lookup("openai", "gpt-5.5")
    claude = catalog.lookup("anthropic", "claude-sonnet-4-6")
    gemini = catalog.lookup("gemini", "gemini-3.5-flash")
    assert gpt is not None and claude is not None and gemini is not None
    assert gpt.output_cap_field == "max_completion_tokens" and gpt.max_stop_sequences == 4
    assert claude.max_output_tokens == 128_000 and claude.context_window == 1_000_000
    assert gemini.max_output_tokens == 65_536 and gemini.max_stop_sequences == 5
    assert (gpt.retires, claude.retires, gemini.retires) == (None, None, None)
    assert gpt.tool_name_ok("get_weather") and not gpt.tool_name_ok("x" * 65)
    assert not gpt.tool_name_ok("has space") and gemini.tool_name_ok("ns.tool:v1")
    assert claude.media_ok("application/pdf") and claude.media_ok("image/bmp") is False
    assert gpt.media_ok("image/png") is None  # not recorded: unknown


def test_aliases_and_cloud_spellings_find_the_entry() -> None:
    assert catalog.lookup("anthropic", "claude-sonnet-4-5-20250929") == catalog.lookup(
        "anthropic", "claude-sonnet-4-5"
    )
    dated = catalog.lookup("vertex_anthropic", "claude-sonnet-4-5@20250929")
    assert dated is not None and dated.max_output_tokens == 64_000
    profile = catalog.lookup("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert profile is not None and profile.max_output_tokens == 64_000
    assert profile.tool_call_id_pattern == "^[a-zA-Z0-9_-]+$" and not profile.tool_call_id_ok("call.1")
    assert catalog.lookup("openai", "mock-model") is None
    assert catalog.lookup("bedrock", "meta.llama3-70b-instruct-v1:0") is None


@pytest.mark.parametrize(
    "model",
    [
        "anthropic.claude-sonnet-4-6",  # README's Bedrock examples: Anthropic's documented ids
        "us.anthropic.claude-sonnet-4-6",
        "global.anthropic.claude-sonnet-4-6",
        "anthropic.claude-sonnet-4-6-v1",
    ],
)
def test_bedrock_ids_of_claude_sonnet_4_6_find_its_entry(model: str) -> None:
    caps = catalog.lookup("bedrock", model)
    assert caps is not None and caps.model == "claude-sonnet-4-6"
    assert caps.max_output_tokens == 128_000 and caps.context_window == 1_000_000
    assert caps.tool_name_pattern == "^[a-zA-Z][a-zA-Z0-9_]*$"  # Bedrock's own rules
    assert caps.document_types is not None and "text/csv" in caps.document_types
    assert caps.price is None  # Bedrock's prices are its own (not recorded)


def test_vertex_and_bedrock_ids_of_every_claude_entry_resolve() -> None:
    opus = catalog.lookup("bedrock", "eu.anthropic.claude-opus-4-5-20251101-v1:0")
    assert opus is not None and opus.model == "claude-opus-4-5"
    assert catalog.lookup("vertex_anthropic", "claude-sonnet-4-6") is not None
    assert catalog.lookup("vertex_anthropic", "claude-opus-4-5@20251101") is not None
    # A geography or vendor prefix alone is no model.
    assert (
        catalog.lookup("bedrock", "us.anthropic.") is None and catalog.lookup("bedrock", "anthropic.") is None
    )


def test_openai_output_caps_are_known() -> None:
    for model, cap in [
        ("gpt-5.5", 128_000),
        ("gpt-5-mini", 128_000),
        ("gpt-4o", 16_384),
        ("gpt-4.1", 32_768),
    ]:
        caps = catalog.lookup("openai", model)
        assert caps is not None and caps.max_output_tokens == cap, model
    assert catalog.lookup("openai", "gpt-4o-mini") is not None
    assert catalog.lookup("openai", "gpt-4o-mini").max_output_tokens is None  # type: ignore[union-attr]


def test_clouds_take_limits_but_not_prices_or_dates() -> None:
    api = catalog.lookup("anthropic", "claude-sonnet-4-5")
    vertex = catalog.lookup("vertex_anthropic", "claude-sonnet-4-5")
    assert api is not None and vertex is not None
    assert api.retires == date(2026, 11, 30) and api.price is not None
    assert vertex.max_output_tokens == api.max_output_tokens
    assert vertex.retires is None and vertex.price is None


# ---- config overrides --------------------------------------------------------------------------


def test_capabilities_override_and_extend_the_catalog() -> None:
    cfg = config_of(
        with_backend(
            {
                "provider": "openai",
                "model": "my-deployment",
                "capabilities": {"like": "gpt-5.5", "max_output_tokens": 1000, "max_stop_sequences": 2},
            }
        )
    )
    caps = cfg.backends["openai/my-deployment"].caps
    assert caps is not None and caps.model == "gpt-5.5"
    assert (caps.max_output_tokens, caps.max_stop_sequences, caps.output_cap_field) == (
        1000,
        2,
        "max_completion_tokens",
    )
    assert caps.sources["max_output_tokens"] == catalog.CONFIG_SOURCE
    # A model the catalog does not know gets only what the config says.
    cfg = config_of(
        with_backend({"provider": "openai", "model": "local-llm", "capabilities": {"max_output_tokens": 7}})
    )
    assert cfg.backends["openai/local-llm"].caps == ModelCaps(
        model="local-llm", family="openai", max_output_tokens=7
    )
    # catalog: false ignores the entry of a known name.
    cfg = config_of(
        with_backend({"provider": "openai", "model": "gpt-5.5", "capabilities": {"catalog": False}})
    )
    assert cfg.chains["extra"][0].caps is None


def test_unknown_models_have_no_limits() -> None:
    cfg = config_of(with_backend({"provider": "openai", "model": "mock-model"}))
    assert cfg.backends["openai/mock-model"].caps is None


@pytest.mark.parametrize(
    ("capabilities", "problem"),
    [
        ({"like": "gpt-9"}, "capabilities.like: 'gpt-9' is not in the model catalog for dialect 'openai'"),
        (
            {"max_output_tokens": 0},
            "capabilities.max_output_tokens: Input should be greater than or equal to 1",
        ),
        (
            {"tool_name_pattern": "(["},
            "capabilities.tool_name_pattern: Value error, not a regular expression",
        ),
        ({"retires": "soon"}, "capabilities.retires: Input should be a valid date"),
        ({"max_ouput_tokens": 5}, "capabilities.max_ouput_tokens: unknown field"),
        ({"image_types": ["PNG"]}, "capabilities.image_types[0]: String should match pattern"),
    ],
)
def test_bad_capabilities_are_config_errors(capabilities: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_of(with_backend({"provider": "openai", "model": "m", "capabilities": capabilities}))
    assert any(f"models.extra.backends[0].{problem}" in p for p in e.value.problems), e.value.problems


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**7),
    st.text(max_size=12),
    st.lists(st.text(max_size=8), max_size=3),
    st.dates().map(str),
)
_KEYS = st.sampled_from([*catalog.FIGURES, "like", "catalog", "price", "bogus"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=st.one_of(st.dictionaries(_KEYS, _VALUES, max_size=6), _VALUES))
def test_any_capabilities_block_is_accepted_or_reported(block: Any) -> None:
    """Whatever the block holds: a valid config whose limits are what it said, or
    ConfigError naming the block; never another exception."""
    try:
        cfg = config_of(with_backend({"provider": "openai", "model": "gpt-5.5", "capabilities": block}))
    except ConfigError as e:
        assert all(p.startswith("x.yaml: ") for p in e.problems)
        assert any("capabilities" in p for p in e.problems), e.problems
        return
    caps = cfg.chains["extra"][0].caps
    if isinstance(block, dict) and block.get("max_output_tokens") is not None:
        assert caps is not None and caps.max_output_tokens == block["max_output_tokens"]


def test_the_retirement_window_is_validated() -> None:
    data = default_data()
    data["catalog"] = {"retirement_warning_days": -1}
    with pytest.raises(ConfigError, match=r"catalog\.retirement_warning_days"):
        config_of(data)


# ---- limits on the request path ----------------------------------------------------------------


def parsed(dialect: str, body: dict[str, Any], model: str | None = None):
    return get_codec(dialect).parse_request(body, model)


def test_a_max_tokens_above_the_model_output_is_clamped() -> None:
    gemini = catalog.lookup("gemini", "gemini-3.5-flash")
    req = parsed(
        "openai", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}
    )
    default = clamp_to_model(req, gemini, 4096)
    assert (req.max_tokens, default) == (65_536, 4096)
    body = get_codec("gemini").build_request(req, "gemini-3.5-flash", default_max_tokens=default)
    assert body["generationConfig"]["maxOutputTokens"] == 65_536
    # Within the limit: untouched; and the default the gateway fills in is clamped too.
    small = ModelCaps(model="small", family="anthropic", max_output_tokens=100)
    req = parsed("openai", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50})
    assert (clamp_to_model(req, small, 4096), req.max_tokens) == (100, 50)
    req.max_tokens = None
    out = get_codec("anthropic").build_request(
        req, "small", default_max_tokens=clamp_to_model(req, small, 4096)
    )
    assert out["max_tokens"] == 100


@pytest.mark.parametrize(
    ("client", "body", "path_model", "field"),
    [
        ("anthropic", {"max_tokens": 10, "stop_sequences": list("abcde")}, None, "stop_sequences"),
        ("openai", {"stop": list("abcde")}, None, "stop"),
        (
            "gemini",
            {"generationConfig": {"stopSequences": list("abcde")}},
            "m",
            "generationConfig.stopSequences",
        ),
    ],
)
def test_too_many_stop_sequences_are_refused_naming_the_clients_field(
    client: str, body: dict[str, Any], path_model: str | None, field: str
) -> None:
    turn = (
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        if client == "gemini"
        else {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    req = parsed(client, {**turn, **body}, path_model)
    with pytest.raises(GatewayError) as e:
        clamp_to_model(req, catalog.lookup("openai", "gpt-5.5"), 4096)
    assert e.value.status == 400 and e.value.param == field
    assert e.value.message == f"'{field}' has 5 stop sequences; the backend model 'gpt-5.5' accepts at most 4"
    rendered = get_codec(client).render_error(e.value)
    assert field in str(rendered)
    # Within the limit (or unknown): accepted.
    assert clamp_to_model(req, catalog.lookup("gemini", "gemini-3.5-flash"), 4096) == 4096
    assert clamp_to_model(req, None, 4096) == 4096


def _gemini_turn(**gc: Any) -> Any:
    return parsed(
        "gemini",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": gc},
        "models/m",
    )


def test_a_reasoning_models_fixed_sampling_is_refused_in_the_clients_words_or_dropped() -> None:
    """gpt-5.5 takes only the default temperature and top_p while it reasons (catalog
    ``sampling: fixed_when_reasoning``), gpt-5 / o-series always (``fixed``): a translated request
    that sets another is a 400 naming the client's field (the provider's refusal would name
    its own), or the setting is dropped with ``drop_unsupported``."""
    gpt55, gpt5 = catalog.lookup("openai", "gpt-5.5"), catalog.lookup("openai", "gpt-5-mini")
    assert gpt55 is not None and gpt55.sampling == "fixed_when_reasoning"
    assert gpt5 is not None and gpt5.sampling == "fixed"
    thinking = {"thinkingConfig": {"thinkingLevel": "high"}}
    for field, gc in (
        ("generationConfig.temperature", {"temperature": 0.4, **thinking}),
        ("generationConfig.topP", {"topP": 0.9, **thinking}),
    ):
        req = _gemini_turn(**gc)
        with pytest.raises(GatewayError) as e:
            clamp_to_model(req, gpt55, 4096)
        assert e.value.status == 400 and e.value.param == field
        assert "gpt-5.5" in e.value.message and "while it reasons" in e.value.message
        assert field in str(get_codec("gemini").render_error(e.value))
        clamp_to_model(req, gpt55, 4096, drop=True)
        assert req.temperature is None and req.top_p is None
    # gpt-5.5 without reasoning takes any temperature; gpt-5 never does
    plain = _gemini_turn(temperature=0.4)
    clamp_to_model(plain, gpt55, 4096)
    assert plain.temperature == 0.4
    with pytest.raises(GatewayError) as e:
        clamp_to_model(plain, gpt5, 4096)
    assert e.value.param == "generationConfig.temperature" and "while it reasons" not in e.value.message
    # thinking turned off, the default value, or a model without the rule: nothing to refuse
    clamp_to_model(_gemini_turn(temperature=0.4, thinkingConfig={"thinkingBudget": 0}), gpt55, 4096)
    clamp_to_model(_gemini_turn(temperature=1, **thinking), gpt5, 4096)
    clamp_to_model(
        _gemini_turn(temperature=0.4, **thinking), catalog.lookup("gemini", "gemini-3.5-flash"), 4096
    )
    # an Anthropic coding agent (adaptive thinking, temperature 1) is fine; temperature 0.2 is not
    ant = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    clamp_to_model(
        parsed("anthropic", {**ant, "temperature": 1, "thinking": {"type": "adaptive"}}), gpt55, 4096
    )
    with pytest.raises(GatewayError) as e:
        clamp_to_model(
            parsed("anthropic", {**ant, "temperature": 0.2, "output_config": {"effort": "low"}}), gpt55, 4096
        )
    assert e.value.param == "temperature"


@settings(max_examples=200, deadline=None)
@given(
    asked=st.one_of(st.none(), st.integers(1, 10**7)),
    cap=st.one_of(st.none(), st.integers(1, 10**6)),
    default=st.integers(1, 10**6),
)
def test_the_sent_output_cap_never_exceeds_the_model(
    asked: int | None, cap: int | None, default: int
) -> None:
    caps = ModelCaps(model="m", family="anthropic", max_output_tokens=cap)
    req = parsed(
        "openai", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": asked}
    )
    fitted_default = clamp_to_model(req, caps, default)
    sent = get_codec("anthropic").build_request(req, "m", default_max_tokens=fitted_default)["max_tokens"]
    assert sent == min(asked or default, cap or 10**9)
    assert output_cap(caps, asked or default) == sent


def test_openai_targets_get_the_output_cap_field_their_model_takes() -> None:
    chat = get_dialect("openai")
    gpt = catalog.lookup("openai", "gpt-5.5")
    body = {"model": "gpt-5.5", "messages": [], "max_tokens": 100}
    out = chat.fit_body(body, gpt)
    assert out == {"model": "gpt-5.5", "messages": [], "max_completion_tokens": 100}
    assert body == {"model": "gpt-5.5", "messages": [], "max_tokens": 100}  # the client's body is left alone
    # Already right, or unknown: the same object.
    ok = {"model": "gpt-5.5", "max_completion_tokens": 5}
    assert chat.fit_body(ok, gpt) is ok and chat.fit_body(body, None) is body
    # A compatible host declared to take only max_tokens gets it back; caps clamp either field.
    host = ModelCaps(model="h", family="openai", output_cap_field="max_tokens", max_output_tokens=8)
    assert chat.fit_body({"max_completion_tokens": 100}, host) == {"max_tokens": 8}
    # Azure OpenAI deployments are the same wire.
    assert get_dialect("azure_openai").fit_body(body, gpt)["max_completion_tokens"] == 100
    # Other dialects build their cap field themselves.
    assert get_dialect("anthropic").fit_body(body, gpt) is body


def test_admission_reserves_at_most_the_model_output() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6, "n": 2}
    chat = get_dialect("openai")
    assert estimate.output_tokens(body, 4096, chat) == 2 * 10**6
    assert estimate.output_tokens(body, 4096, chat, cap=65_536) == 2 * 65_536
    no_cap = {"model": "m", "messages": []}
    assert estimate.output_tokens(no_cap, 4096, chat, cap=1000) == 1000
    assert estimate.output_tokens(no_cap, 4096, chat, cap=None) == 4096


def test_admission_takes_the_largest_output_of_a_models_backends() -> None:
    from ext_proc.admission.controller import Admission

    data = default_data()
    data["models"]["only-known"] = {
        "backends": [
            {"provider": "gemini", "model": "gemini-3.5-flash"},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
    }
    data["models"]["one-unknown"] = {
        "backends": [
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
            {"provider": "openai", "model": "gpt-5.1"},
        ]
    }
    caps = Admission(config_of(data)).output_caps
    assert caps["only-known"] == 128_000
    assert caps["gpt-5.5"] == 128_000
    assert caps["one-unknown"] is None  # gpt-5.1's max output is not in the catalog: no clamp


# ---- prices ------------------------------------------------------------------------------------


def test_catalog_prices_apply_when_the_config_gives_none() -> None:
    data = default_data()
    data["models"]["claude-sonnet-4-6"]["backends"][0]["price"] = {"input": 1.0, "output": 2.0}
    cfg = config_of(data)
    claude, gpt, gemini = (
        cfg.backends[n] for n in ("anthropic/claude-sonnet-4-6", "openai/gpt-5.5", "gemini/gemini-3.5-flash")
    )
    assert (claude.price.input, claude.price.output) == (1.0, 2.0)  # type: ignore[union-attr]  # config wins
    assert (gpt.price.input, gpt.price.output) == (5.0, 30.0)  # type: ignore[union-attr]
    assert gemini.price is None  # not in the catalog: no cost
    assert cost_usd(gpt.price, 1_000_000, 0, 1_000_000) == pytest.approx(35.0)


# ---- retirement warnings -----------------------------------------------------------------------


def test_the_default_config_warns_about_nothing() -> None:
    cfg = parse_config(DEFAULT_CONFIG.read_text())
    assert retirement_warnings(cfg, TODAY) == []
    assert retirement_warnings(cfg, date(2030, 1, 1)) == []  # none of its models has a date


def test_backends_near_or_past_retirement_are_warned_about() -> None:
    data = default_data()
    data["models"]["old"] = {
        "backends": [
            {"provider": "anthropic", "model": "claude-sonnet-4-5-20250929"},
            {"provider": "openai", "model": "gpt-5"},
            {"provider": "gemini", "model": "gemini-2.5-flash"},
            {"provider": "openai", "model": "gpt-4o"},
        ]
    }
    cfg = config_of(data)
    assert retirement_warnings(cfg, TODAY) == [
        "backend 'anthropic/claude-sonnet-4-5-20250929': model 'claude-sonnet-4-5' retires on 2026-11-30 (in 0 days)",
        "backend 'openai/gpt-5': model 'gpt-5' retires on 2026-12-11 (in 11 days)",
        "backend 'gemini/gemini-2.5-flash': model 'gemini-2.5-flash' retired on 2026-11-12 (18 days ago)",
        "backend 'openai/gpt-4o': model 'gpt-4o' retires on 2027-01-14 (in 45 days)",
    ]
    data["catalog"] = {"retirement_warning_days": 30}
    assert len(retirement_warnings(config_of(data), TODAY)) == 3  # gpt-4o is 45 days away
    # A config date wins over the catalog's.
    data["models"]["old"]["backends"][3]["capabilities"] = {"retires": "2026-12-01"}
    assert "backend 'openai/gpt-4o': model 'gpt-4o' retires on 2026-12-01 (in 1 days)" in retirement_warnings(
        config_of(data), TODAY
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ext_proc", *args], capture_output=True, text=True, timeout=60
    )


def test_check_warns_about_retiring_models_and_still_passes(tmp_path: Path) -> None:
    ok = run_cli("check")
    assert ok.returncode == 0 and "warning" not in ok.stderr
    data = default_data()
    data["models"]["old"] = {"backends": [{"provider": "gemini", "model": "gemini-2.5-pro"}]}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        f"{path}: warning: backend 'gemini/gemini-2.5-pro': model 'gemini-2.5-pro' retired on 2026-11-12"
        in (result.stderr)
    )


def test_status_shows_the_warnings() -> None:
    data = default_data()
    data["models"]["old"] = {"backends": [{"provider": "gemini", "model": "gemini-2.5-pro"}]}
    text = render(config_of(data), {}, {"backends": {}, "tenants": {}, "interval": 1.0})
    assert "warning: backend 'gemini/gemini-2.5-pro': model 'gemini-2.5-pro' retired on 2026-11-12" in text
    assert "warning" not in render(
        parse_config(DEFAULT_CONFIG.read_text()), {}, {"backends": {}, "tenants": {}, "interval": 1.0}
    )


def test_overrides_model_is_the_config_schema() -> None:
    """The config block takes every catalog figure (one schema, not two that drift)."""
    assert set(catalog.FIGURES) <= set(CapabilityOverrides.model_fields)


# ---- the request path: plan and failover attempts ----------------------------------------------


def test_the_route_plan_and_a_failover_attempt_both_fit_their_backend() -> None:
    """The primary (claude-sonnet-4-6, 128K) gets the client's 200,000 clamped to 128,000; a
    failover attempt to gemini-3.5-flash re-translates that and clamps it to 65,536; one to
    gpt-5.5 gets it as max_completion_tokens."""
    state = state_of()
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 200_000,
    }
    p = do_plan(state, OPENAI, body)
    assert isinstance(p, RoutePlan) and p.new_body is not None
    assert orjson.loads(p.new_body)["max_tokens"] == 128_000
    for backend, read in (
        ("gemini/gemini-3.5-flash", lambda b: b["generationConfig"]["maxOutputTokens"]),
        ("openai/gpt-5.5", lambda b: (b["max_completion_tokens"], "max_tokens" in b)),
    ):
        ctx = AttemptContext(backend, "claude-sonnet-4-6", p.primary.name, False, state.config.version)
        out = retranslate(state, ctx, p.new_body)
        assert isinstance(out, AttemptPlan)
        assert read(orjson.loads(out.body)) == (65_536 if backend.startswith("gemini") else (128_000, False))


def test_a_stop_sequence_refusal_is_the_clients_400() -> None:
    from tests.test_request_path import Answer, do_plan, state_of

    body = {"model": "gpt-5.5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    answer = do_plan(state_of(), ANTHROPIC, {**body, "stop_sequences": list("abcde")})
    assert isinstance(answer, Answer) and answer.status == 400
    assert error_of(answer) == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "'stop_sequences' has 5 stop sequences; the backend model 'gpt-5.5' accepts at most 4",
        },
    }


@pytest.mark.parametrize(
    ("dialect", "body", "clamped"),
    [
        ("anthropic", {"max_tokens": 10**6}, {"max_tokens": 128_000}),
        ("vertex_anthropic", {"max_tokens": 10**6}, {"max_tokens": 128_000}),
        ("openai_responses", {"max_output_tokens": 10**6}, {"max_output_tokens": 128_000}),
        (
            "gemini",
            {"generationConfig": {"maxOutputTokens": 10**6, "topK": 3}},
            {"generationConfig": {"maxOutputTokens": 128_000, "topK": 3}},
        ),
        (
            "vertex_gemini",
            {"generation_config": {"max_output_tokens": 10**6}},
            {"generation_config": {"max_output_tokens": 128_000}},
        ),
    ],
)
def test_pass_through_bodies_get_their_cap_clamped(
    dialect: str, body: dict[str, Any], clamped: dict[str, Any]
) -> None:
    caps = ModelCaps(model="m", family="x", max_output_tokens=128_000)
    before = orjson.dumps(body)
    assert get_dialect(dialect).fit_body(body, caps) == clamped
    assert orjson.dumps(body) == before  # the client's body is left alone
    small = {k: v for k, v in clamped.items()}
    assert get_dialect(dialect).fit_body(small, caps) is small  # within the limit: the same object
    assert get_dialect(dialect).fit_body(body, None) is body


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    dialect=st.sampled_from(
        ["openai", "anthropic", "gemini", "openai_responses", "vertex_gemini", "bedrock"]
    ),
    body=st.dictionaries(
        st.sampled_from(
            [
                "model",
                "messages",
                "max_tokens",
                "max_completion_tokens",
                "max_output_tokens",
                "generationConfig",
            ]
        ),
        _JSON,
    ),
    field=st.sampled_from([None, "max_tokens", "max_completion_tokens"]),
    cap=st.one_of(st.none(), st.integers(1, 10**6)),
)
def test_fit_body_takes_any_client_body(
    dialect: str, body: dict[str, Any], field: str | None, cap: int | None
) -> None:
    """A passed-through client body may hold anything: fitting it never raises, never changes
    the client's own object, leaves one cap field when the model names one (OpenAI Chat), and
    no integer cap above the model's."""
    caps = ModelCaps(model="m", family="x", output_cap_field=field, max_output_tokens=cap)
    before = orjson.dumps(body)
    out = get_dialect(dialect).fit_body(body, caps)
    assert orjson.dumps(body) == before
    gen = out.get("generationConfig")
    capped = {
        "openai": [out.get("max_tokens"), out.get("max_completion_tokens")],
        "anthropic": [out.get("max_tokens")],
        "openai_responses": [out.get("max_output_tokens")],
        "gemini": [gen.get("maxOutputTokens") if isinstance(gen, dict) else None],
        "vertex_gemini": [gen.get("maxOutputTokens") if isinstance(gen, dict) else None],
    }.get(dialect, [])
    if cap is not None:
        assert not [v for v in capped if isinstance(v, int) and not isinstance(v, bool) and v > cap]
    if dialect == "bedrock":
        assert out is body  # no client speaks Bedrock: its bodies are always built, and clamped before
    fields = {"max_tokens", "max_completion_tokens"} & set(out)
    if dialect == "openai" and field is not None and fields:
        assert fields == {field}
