"""Tool names and tool-call ids fitted per target dialect (``translation.names``): any string in
-> valid for the target, deterministic, and the client's names restored in answers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.dialects import CODECS, DIALECTS
from ext_proc.translation.ir import (
    ChatRequest,
    Message,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from ext_proc.translation.names import (
    SAFE_MAX,
    Rule,
    ToolRules,
    fit,
    fit_request,
    restore_names,
    rules_for,
    safe_form,
)

# The providers' own patterns, written out again from their documentation (not read from the
# code), so a wrong table in a codec fails here.
DOC_NAME = {
    "openai": r"[a-zA-Z0-9_-]{1,64}",
    "azure_openai": r"[a-zA-Z0-9_-]{1,64}",
    "openai_responses": r"[a-zA-Z0-9_-]{1,64}",
    "anthropic": r"[a-zA-Z0-9_-]{1,128}",
    "vertex_anthropic": r"[a-zA-Z0-9_-]{1,128}",
    "gemini": r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}",
    "vertex_gemini": r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}",
    "bedrock": r"[a-zA-Z0-9_-]{1,64}",
}
DOC_ID = {
    "openai": r".{1,40}",
    "azure_openai": r".{1,40}",
    "anthropic": r"[a-zA-Z0-9_-]+",
    "vertex_anthropic": r"[a-zA-Z0-9_-]+",
    "bedrock": r"[a-zA-Z0-9_-]{1,64}",
}

ANY_TEXT = st.text(min_size=1, max_size=200)
IDENT = st.text(st.sampled_from("abcXYZ019_-.:/ é"), min_size=1, max_size=150)


def test_every_dialect_declares_its_table() -> None:
    assert set(DOC_NAME) == set(DIALECTS), "a dialect without a documented tool-name rule here"
    for name, codec in CODECS.items():
        assert rules_for(codec) is codec.tool_rules
        assert codec.tool_rules.name.max_len is not None, name


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_TEXT, IDENT), st.sampled_from(sorted(DOC_NAME)))
def test_any_name_fits_its_target(value: str, dialect: str) -> None:
    rules = rules_for(CODECS[dialect])
    out = fit(value, rules.name)
    assert re.fullmatch(DOC_NAME[dialect], out, re.S), (value, out)
    assert fit(value, rules.name) == out  # deterministic
    assert fit(out, rules.name) == out  # idempotent: a fitted body re-fitted stays as it is
    if re.fullmatch(DOC_NAME[dialect], value, re.S):
        assert out == value  # what the target takes is never touched


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_TEXT, IDENT), st.sampled_from(sorted(DOC_ID)))
def test_any_id_fits_its_target(value: str, dialect: str) -> None:
    out = fit(value, rules_for(CODECS[dialect]).call_id)
    assert re.fullmatch(DOC_ID[dialect], out, re.S), (value, out)
    if re.fullmatch(DOC_ID[dialect], value, re.S):
        assert out == value


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_the_safe_form_is_valid_everywhere(value: str) -> None:
    out = safe_form(value)
    assert len(out) <= SAFE_MAX
    for dialect, pattern in DOC_NAME.items():
        assert re.fullmatch(pattern, out), dialect
        assert fit(out, CODECS[dialect].tool_rules.name) == out
    for dialect, pattern in DOC_ID.items():
        assert re.fullmatch(pattern, out), dialect


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(ANY_TEXT, IDENT), min_size=1, max_size=6, unique=True),
    st.sampled_from(sorted(DOC_NAME)),
)
def test_names_round_trip(names: list[str], dialect: str) -> None:
    """Client names -> target names -> (the answer) -> the client's names, and distinct names stay
    distinct (a backend can tell the tools apart)."""
    req = ChatRequest("m", [Message("user", [TextPart("hi")])], tools=[Tool(n) for n in names])
    rules = rules_for(CODECS[dialect])
    sent = fit_request(req, rules)
    assert len({t.name for t in sent.tools}) == len(names)
    back = restore_names(req, rules)
    assert [back.get(t.name, t.name) for t in sent.tools] == names
    assert [t.name for t in req.tools] == names  # the client's request is left as it was


@settings(max_examples=200, deadline=None)
@given(st.one_of(ANY_TEXT, IDENT), st.sampled_from(sorted(DOC_NAME)), st.sampled_from(sorted(DOC_NAME)))
def test_failover_re_translation_still_restores(name: str, first: str, second: str) -> None:
    """A failover attempt re-translates the body fitted for the primary: the answering target's
    spelling of that still maps back to the client's name."""
    req = ChatRequest("m", [Message("user", [TextPart("hi")])], tools=[Tool(name)])
    once = fit_request(req, rules_for(CODECS[first]))
    twice = fit_request(once, rules_for(CODECS[second]))
    assert restore_names(req, rules_for(CODECS[second])).get(twice.tools[0].name, twice.tools[0].name) == name


def test_a_conversation_maps_alike_in_every_place() -> None:
    long = "mcp__workspace_server__" + "read_file_with_a_very_long_descriptive_name" * 2
    dotted = "github.create-issue"
    req = ChatRequest(
        "m",
        [
            Message("user", [TextPart("go")]),
            Message(
                "assistant", [ToolCallPart("call|1.x", long, "{}"), ToolCallPart("call|2.x", dotted, "{}")]
            ),
            Message(
                "tool",
                [ToolResultPart("call|1.x", [TextPart("ok")], long), ToolResultPart("call|2.x", [], dotted)],
            ),
        ],
        tools=[Tool(long), Tool(dotted)],
        tool_choice=ToolChoice("tool", long),
    )
    sent = fit_request(req, rules_for(CODECS["bedrock"]))
    call1, call2 = sent.messages[1].parts
    res1, res2 = sent.messages[2].parts
    assert isinstance(call1, ToolCallPart) and isinstance(res1, ToolResultPart)
    assert isinstance(call2, ToolCallPart) and isinstance(res2, ToolResultPart)
    assert call1.name == res1.name == sent.tools[0].name == sent.tool_choice.name != long  # type: ignore[union-attr]
    assert call2.name == sent.tools[1].name and call2.name.startswith("github_create_issue_")
    assert call1.id == res1.tool_call_id and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", call1.id)
    assert call2.id == res2.tool_call_id != call1.id
    # The next turn (same history) maps the same way.
    assert fit_request(req, rules_for(CODECS["bedrock"])) == sent
    # A target that takes the names leaves the request alone.
    plain = ChatRequest("m", [Message("user", [TextPart("go")])], tools=[Tool("get_weather")])
    assert fit_request(plain, rules_for(CODECS["anthropic"])) is plain


def test_gemini_keeps_dots_and_colons_but_not_a_leading_digit() -> None:
    rule = CODECS["gemini"].tool_rules.name
    assert fit("ns.tool:v2", rule) == "ns.tool:v2"
    assert fit("2fa-check", rule) != "2fa-check"
    assert fit("2fa-check", rule)[0].isalpha()


def test_a_rule_stricter_than_the_safe_form_leaves_the_value_for_the_target_to_judge() -> None:
    tiny = ToolRules(name=Rule(r"[a-z]+", 5))
    assert fit("abc", tiny.name) == "abc"
    assert fit("Abcdefgh", tiny.name) == "Abcdefgh"


@pytest.mark.parametrize("dialect", sorted(DOC_NAME))
def test_built_bodies_carry_only_valid_names(dialect: str) -> None:
    """Through a real codec: a client's odd names reach the body as the target spells them."""
    odd = "filesystem/read.file " + "x" * 140
    req = ChatRequest(
        "m",
        [
            Message("user", [TextPart("go")]),
            Message("assistant", [ToolCallPart("id with spaces/and|pipes" * 3, odd, "{}")]),
            Message("tool", [ToolResultPart("id with spaces/and|pipes" * 3, [TextPart("ok")], odd)]),
        ],
        tools=[Tool(odd)],
    )
    codec = CODECS[dialect]
    body = codec.build_request(fit_request(req, rules_for(codec)), "model-x", default_max_tokens=100)
    text = str(body)
    assert odd not in text
    assert fit(odd, codec.tool_rules.name) in text


# ---- the catalog narrows a dialect's table per model ------------------------------------------


def test_a_catalog_entry_narrows_the_dialects_rules() -> None:
    from ext_proc.catalog import lookup

    gemini = lookup("gemini", "gemini-3.5-flash")
    assert gemini is not None and gemini.tool_name_max_length is not None
    rules = rules_for(CODECS["gemini"], gemini)
    # The shorter of the two limits holds (the dialect's table says 64, a catalog page 128).
    assert rules.name.max_len == min(64, gemini.tool_name_max_length)
    assert rules.name.pattern == gemini.tool_name_pattern


@given(IDENT)
@settings(max_examples=200, deadline=None)
def test_a_models_own_shorter_limit_is_met(name: str) -> None:
    """A host whose model takes tool names of at most 20 characters (a ``capabilities:`` block)."""
    from dataclasses import replace

    from ext_proc.catalog.caps import ModelCaps

    caps = replace(ModelCaps(model="small-host-model", family="openai"), tool_name_max_length=20)
    rules = rules_for(CODECS["openai"], caps)
    fitted = fit(name, rules.name)
    assert len(fitted) <= 20 and re.fullmatch(DOC_NAME["openai"], fitted)
    assert fit(name, rules.name) == fitted  # deterministic: the same name in every turn


@pytest.mark.parametrize("name", ["get_weather", "github.create-issue"])
@pytest.mark.parametrize("strict", [True, False, None])
def test_fitting_keeps_a_tools_strict_flag(name: str, strict: bool | None) -> None:
    """Fitting names must not lose what else a tool says: a strict tool stays strict (found by
    the mapping probes: every translated strict tool arrived unstrict)."""
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    req = ChatRequest("m", [Message("user", [TextPart("hi")])], tools=[Tool(name, "d", schema, strict)])
    for dialect in DOC_NAME:
        (sent,) = fit_request(req, rules_for(CODECS[dialect])).tools
        assert (sent.strict, sent.description, sent.parameters) == (strict, "d", schema)
