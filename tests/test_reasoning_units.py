"""Reasoning in the IR (docs/reasoning.md): the effort <-> budget <-> level table, per-backend
resolution, each codec's reasoning controls and parts, and the sealed signatures (property
tests for the token parser: nothing but a token this gateway sealed for this tenant opens)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.dialects import get_dialect
from ext_proc.errors import GatewayError
from ext_proc.translation import reasoning as R
from ext_proc.translation.ir import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    ChatResponse,
    Choice,
    Message,
    ReasoningPart,
    TextPart,
    Thinking,
    ToolCallPart,
    ToolResultPart,
)

KEY = R.tenant_key(b"deployment-secret", "tenant-a")
OTHER = R.tenant_key(b"deployment-secret", "tenant-b")


def codec(name: str) -> Any:
    return get_dialect(name).codec


def req(effort: str | None = None, thinking: Thinking | None = None, **kw: Any) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=[Message("user", [TextPart("hi")])],
        reasoning_effort=effort,
        thinking=thinking,
        **kw,
    )


# ---- the table ---------------------------------------------------------------------------


def test_effort_budget_level_table_is_monotonic_and_round_trips() -> None:
    efforts = R.EFFORTS[1:]
    budgets = [R.BUDGETS[e] for e in efforts]
    assert budgets == sorted(budgets) and budgets[0] == 1024
    for e in efforts:
        assert R.effort_for_budget(R.BUDGETS[e]) == e
    assert R.effort_for_budget(0) == "none" and R.effort_for_budget(-1) == "medium"
    assert R.effort_for_budget(10**9) == "xhigh"
    assert [R.LEVELS[e] for e in R.EFFORTS] == ["minimal", "minimal", "low", "medium", "high", "high"]


@given(st.integers(min_value=1, max_value=10**7))
def test_a_budget_maps_to_the_smallest_effort_that_covers_it(budget: int) -> None:
    e = R.effort_for_budget(budget)
    if e != "xhigh":
        assert R.BUDGETS[e] >= budget
    i = R.EFFORTS.index(e)
    if i > 1:
        assert R.BUDGETS[R.EFFORTS[i - 1]] < budget


@pytest.mark.parametrize(
    "effort, thinking, styles, want",
    [
        ("low", None, ("budget",), ("low", "enabled", 2048, None)),
        ("high", None, ("level",), ("high", "enabled", None, "high")),
        ("xhigh", None, ("level",), ("xhigh", "enabled", None, "high")),
        ("none", None, ("level",), ("none", "disabled", None, "minimal")),
        ("none", None, ("budget",), ("none", "disabled", None, None)),
        ("medium", None, ("adaptive", "budget"), ("medium", "adaptive", None, None)),
        (None, Thinking("enabled", 10_000), ("effort",), ("high", "enabled", None, None)),
        (None, Thinking("enabled", 10_000), ("level", "budget"), ("high", "enabled", 10_000, None)),
        (None, Thinking("adaptive"), ("budget", "adaptive"), (None, "adaptive", None, None)),
        # adaptive with an effort: kept where adaptive carries an effort (Claude), else a
        # level backend's dynamic budget would lose it: the effort's level (max: the highest)
        ("xhigh", Thinking("adaptive"), ("budget", "adaptive"), ("xhigh", "adaptive", None, None)),
        ("xhigh", Thinking("adaptive"), ("level", "budget", "adaptive"), ("xhigh", "enabled", None, "high")),
        (None, Thinking("adaptive"), ("level", "budget", "adaptive"), (None, "adaptive", None, None)),
        (None, Thinking("disabled"), ("effort",), ("none", "disabled", None, None)),
    ],
)
def test_resolve_in_each_style(
    effort: str | None, thinking: Thinking | None, styles: tuple[str, ...], want: tuple[Any, ...]
) -> None:
    r = req(effort, thinking)
    R.resolve(r, None, styles)
    assert r.thinking is not None
    assert (r.reasoning_effort, r.thinking.mode, r.thinking.budget_tokens, r.thinking.level) == want


def test_backend_config_overrides_and_refuses_in_the_clients_words() -> None:
    policy = R.Policy(style="budget", efforts=("low", "high"), budgets={"high": 4000}, max_budget=3000)
    r = req("high", field_names={"reasoning_effort": "reasoning.effort"})
    R.resolve(r, policy, ("level",))
    assert r.thinking is not None and r.thinking.budget_tokens == 3000  # capped by max_budget
    with pytest.raises(GatewayError) as e:
        R.resolve(req("medium", field_names={"reasoning_effort": "reasoning.effort"}), policy, ("budget",))
    assert e.value.status == 400 and e.value.param == "reasoning.effort" and "medium" in e.value.message
    with pytest.raises(GatewayError) as e2:
        R.resolve(req("extreme"), None, ("effort",))
    assert e2.value.param == "reasoning_effort"


# ---- each codec's controls ----------------------------------------------------------------


def test_anthropic_thinking_translates_to_every_backend() -> None:
    body = {
        "model": "m",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 4000},
    }
    ir = codec("anthropic").parse_request(body)
    assert ir.unmapped == [] and ir.thinking == Thinking("enabled", 4000, include_thoughts=True)
    assert codec("openai").build_request(ir, "x", default_max_tokens=10)["reasoning_effort"] == "medium"
    gem = codec("gemini").build_request(ir, "x", default_max_tokens=10)["generationConfig"]
    assert gem["thinkingConfig"] == {"thinkingBudget": 4000, "includeThoughts": True}
    resp = codec("openai_responses").build_request(ir, "x", default_max_tokens=10)
    assert resp["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert resp["include"] == ["reasoning.encrypted_content"]
    # max_tokens 1000 cannot hold even the smallest budget: refused, naming the client's limit
    with pytest.raises(GatewayError) as e:
        codec("bedrock").build_request(ir, "x", default_max_tokens=10)
    assert e.value.param == "max_tokens"
    ir.max_tokens = 3000  # room for a smaller budget: it shrinks below the limit
    bed = codec("bedrock").build_request(ir, "x", default_max_tokens=10)
    assert bed["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 2999}


def test_an_effort_whose_budget_does_not_fit_max_tokens_thinks_less_or_not_at_all() -> None:
    """An effort is how hard, not a budget the client chose: under a limit too small for the
    smallest budget (1024) the request goes without thinking (never a 400 the other targets
    would not give); with room for it, the budget shrinks below the limit."""
    ir = codec("openai").parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "high",
            "max_tokens": 500,
        }
    )
    body = codec("anthropic").build_request(ir, "x", default_max_tokens=10)
    assert "thinking" not in body and body["max_tokens"] == 500
    ir.max_tokens = 5000
    body = codec("anthropic").build_request(ir, "x", default_max_tokens=10)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4999} and body["max_tokens"] == 5000


@pytest.mark.parametrize(
    "max_tokens, want_budget, want_limit",
    [(1000, None, 1000), (1024, None, 1024), (1025, 1024, 1025), (1500, 1499, 1500), (4000, 2048, 4000)],
)
def test_anthropic_effort_without_thinking_towards_bedrock_and_anthropic(
    max_tokens: int, want_budget: int | None, want_limit: int
) -> None:
    """`output_config.effort: low` without `thinking` (a coding agent's quick call) is not
    refused on a Claude backend because its budget (2048) exceeds a small `max_tokens`."""
    body = {
        "model": "m",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}],
        "output_config": {"effort": "low"},
    }
    ir = codec("anthropic").parse_request(body)
    bed = codec("bedrock").build_request(ir, "x", default_max_tokens=10)
    thinking = bed.get("additionalModelRequestFields", {}).get("thinking")
    assert bed["inferenceConfig"]["maxTokens"] == want_limit
    assert thinking == (None if want_budget is None else {"type": "enabled", "budget_tokens": want_budget})
    # and from a Gemini client onto an Anthropic backend alike
    gem = codec("gemini").parse_request(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"thinkingLevel": "low"}, "maxOutputTokens": max_tokens},
        },
        "models/x",
    )
    ant = codec("anthropic").build_request(gem, "c", default_max_tokens=10)
    assert ant.get("thinking") == (
        None if want_budget is None else {"type": "enabled", "budget_tokens": want_budget}
    )
    assert ant["max_tokens"] == want_limit


def test_a_budget_the_client_chose_that_does_not_fit_is_refused_naming_the_limit() -> None:
    ir = codec("gemini").parse_request(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 4000}, "maxOutputTokens": 900},
        },
        "models/x",
    )
    for target in ("anthropic", "bedrock"):
        with pytest.raises(GatewayError) as e:
            codec(target).build_request(ir, "x", default_max_tokens=10)
        assert e.value.status == 400 and e.value.param == "generationConfig.maxOutputTokens"


def _adaptive(effort: str | None) -> ChatRequest:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 64000,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "adaptive"},
    }
    if effort is not None:
        body["output_config"] = {"effort": effort}
    return codec("anthropic").parse_request(body)


def _for(ir: ChatRequest, dialect: str, policy: R.Policy | None = None) -> dict[str, Any]:
    """The body a backend of ``dialect`` gets (resolved as the route plan does)."""
    c = codec(dialect)
    R.resolve(ir, policy, c.reasoning_styles)
    out: dict[str, Any] = c.build_request(ir, "x", default_max_tokens=100)
    return out


def test_adaptive_thinking_asks_a_responses_backend_for_its_encrypted_reasoning() -> None:
    """A coding agent's default (`thinking: adaptive`, no effort) towards a Responses backend:
    with `store: false` the reasoning can only come back in a tool loop encrypted."""
    for ir in (_adaptive(None), _adaptive("medium")):
        body = _for(ir, "openai_responses")
        assert body["store"] is False
        assert body["include"] == ["reasoning.encrypted_content"]
        # without an effort: medium (as a dynamic budget), else a model defaulting to none would not think
        assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert _for(_adaptive(None), "openai")["reasoning_effort"] == "medium"
    # a Gemini client's includeThoughts alone asks for thinking too
    gem = codec("gemini").parse_request(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
        },
        "models/x",
    )
    assert _for(gem, "openai_responses")["include"] == ["reasoning.encrypted_content"]
    # thinking off: nothing to replay
    off = codec("anthropic").parse_request(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "disabled"},
        }
    )
    body = _for(off, "openai_responses")
    assert "include" not in body and body["reasoning"] == {"effort": "none"}


def test_adaptive_max_effort_reaches_every_backend_at_its_highest() -> None:
    """`thinking: adaptive` + `output_config.effort: max` keeps the effort on every target: the
    highest level (Gemini), `max` beside adaptive thinking (Anthropic, Bedrock), `xhigh`
    (OpenAI), the largest budget a budget-style backend takes."""
    assert _for(_adaptive("max"), "gemini")["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "high",
        "includeThoughts": True,
    }
    gem25 = _for(_adaptive("max"), "gemini", R.Policy(style="budget", max_budget=24576))
    assert gem25["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576, "includeThoughts": True}
    bed = _for(_adaptive("max"), "bedrock")["additionalModelRequestFields"]
    assert bed == {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}
    ant = _for(_adaptive("max"), "anthropic")
    assert ant["thinking"] == {"type": "adaptive"} and ant["output_config"] == {"effort": "max"}
    assert _for(_adaptive("max"), "openai")["reasoning_effort"] == "xhigh"
    resp = _for(_adaptive("max"), "openai_responses")
    assert resp["reasoning"] == {"effort": "xhigh", "summary": "auto"}
    assert resp["include"] == ["reasoning.encrypted_content"]
    vclaude = _for(_adaptive("max"), "vertex_anthropic")
    assert vclaude["thinking"] == {"type": "adaptive"} and vclaude["output_config"] == {"effort": "max"}
    vgem = _for(_adaptive("max"), "vertex_gemini")["generationConfig"]["thinkingConfig"]
    assert vgem["thinkingLevel"] == "high"
    # without an effort, adaptive stays the model's own choice (Gemini: a dynamic budget)
    assert _for(_adaptive(None), "gemini")["generationConfig"]["thinkingConfig"]["thinkingBudget"] == -1
    assert "output_config" not in _for(_adaptive(None), "bedrock")["additionalModelRequestFields"]


def test_bedrock_reads_claudes_effort_beside_its_thinking() -> None:
    b = codec("bedrock")
    ir = b.parse_request(
        {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "additionalModelRequestFields": {
                "thinking": {"type": "adaptive"},
                "output_config": {"effort": "max"},
            },
        },
        "anthropic.claude-x",
    )
    assert ir.unmapped == [] and ir.reasoning_effort == "xhigh" and ir.thinking is not None
    assert ir.thinking.mode == "adaptive"
    with pytest.raises(GatewayError) as e:
        b.parse_request(
            {
                "messages": [{"role": "user", "content": [{"text": "hi"}]}],
                "additionalModelRequestFields": {"output_config": {"effort": "extreme"}},
            },
            "anthropic.claude-x",
        )
    assert e.value.param == "additionalModelRequestFields.output_config.effort"


def test_gemini_thinking_config_parses_and_refuses_budget_with_level() -> None:
    g = codec("gemini")

    def parse(tc: dict[str, Any]) -> ChatRequest:
        return g.parse_request(
            {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"thinkingConfig": tc}},
            "models/x",
        )

    assert parse({"thinkingLevel": "LOW"}).reasoning_effort == "low"
    assert parse({"thinkingBudget": 0}).thinking == Thinking("disabled")
    assert parse({"thinkingBudget": -1}).thinking == Thinking("adaptive")
    with pytest.raises(GatewayError) as e:
        parse({"thinkingBudget": 100, "thinkingLevel": "low"})
    assert e.value.param == "generationConfig.thinkingConfig.thinkingLevel"
    with pytest.raises(GatewayError):
        parse({"thinkingLevel": "extreme"})
    # Anthropic from a Gemini level: the level's effort's budget
    ant = codec("anthropic").build_request(parse({"thinkingLevel": "high"}), "c", default_max_tokens=100)
    assert ant["thinking"] == {"type": "enabled", "budget_tokens": R.BUDGETS["high"]}
    assert codec("anthropic").build_request(parse({"thinkingBudget": 0}), "c", default_max_tokens=100)[
        "thinking"
    ] == {"type": "disabled"}


def test_responses_reasoning_summary_is_carried() -> None:
    ir = codec("openai_responses").parse_request(
        {"model": "m", "input": "hi", "reasoning": {"effort": "high", "summary": "detailed"}}
    )
    assert ir.unmapped == [] and ir.thinking is not None and ir.thinking.summary == "detailed"
    ant = codec("anthropic").build_request(ir, "c", default_max_tokens=100)
    assert ant["thinking"]["type"] == "enabled"


# ---- reasoning parts in each codec ---------------------------------------------------------


def test_thinking_blocks_and_thought_parts_are_reasoning_parts() -> None:
    ant = codec("anthropic").parse_response(
        {
            "id": "msg_1",
            "model": "c",
            "stop_reason": "tool_use",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "SIG"},
                {"type": "redacted_thinking", "data": "RED"},
                {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}},
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2},
        }
    )
    assert ant.content[:2] == [
        ReasoningPart("hmm", "SIG", origin="anthropic"),
        ReasoningPart(redacted="RED", origin="anthropic"),
    ]
    gem = codec("gemini").parse_response(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "plan", "thought": True},
                            {"functionCall": {"name": "t", "args": {}}, "thoughtSignature": "R1NJRw=="},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 5},
        }
    )
    assert gem.content[0] == ReasoningPart("plan", None, origin="gemini")
    assert isinstance(gem.content[1], ToolCallPart) and gem.content[1].signature == "R1NJRw=="
    assert (gem.usage.output_tokens, gem.usage.reasoning_tokens) == (7, 5)
    chat = codec("openai").render_response(gem)
    assert chat["choices"][0]["message"]["reasoning_content"] == "plan"
    assert chat["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    rendered = codec("openai_responses").render_reply(ant, None)
    items = [o for o in rendered["output"] if o["type"] == "reasoning"]
    assert items[0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert items[0]["encrypted_content"] == "SIG" and items[1]["encrypted_content"] == "RED"


def test_compatible_servers_reasoning_content_is_read_streamed_and_not() -> None:
    resp = codec("openai").parse_response(
        {
            "id": "c",
            "model": "qwen",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
                }
            ],
            "usage": {
                "prompt_tokens": 1,
                "completion_tokens": 3,
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        }
    )
    assert resp.content == [ReasoningPart("2+2"), TextPart("4")] and resp.usage.reasoning_tokens == 2
    ant = codec("anthropic").render_response(resp)
    assert ant["content"][0] == {"type": "thinking", "thinking": "2+2", "signature": ""}


def test_only_a_familys_own_signatures_go_back_to_it() -> None:
    history = [
        Message("user", [TextPart("hi")]),
        Message(
            "assistant",
            [
                ReasoningPart("claude thought", "CSIG", origin="anthropic"),
                ReasoningPart("gemini thought", "GSIG", origin="gemini"),
                ReasoningPart("plain text thought"),
                ToolCallPart("c1", "t", "{}", signature="FCSIG"),
            ],
        ),
        Message("tool", [ToolResultPart("c1", [TextPart("r")], "t")]),
    ]
    r = ChatRequest(model="m", messages=history, source_dialect="openai")
    ant = codec("anthropic").build_request(r, "c", default_max_tokens=10)
    assert ant["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "claude thought",
        "signature": "CSIG",
    }
    assert len(ant["messages"][1]["content"]) == 2
    gem = codec("gemini").build_request(r, "g", default_max_tokens=10)
    parts = gem["contents"][1]["parts"]
    assert parts[0] == {"text": "gemini thought", "thought": True, "thoughtSignature": "GSIG"}
    assert parts[1]["thoughtSignature"] == "FCSIG" and len(parts) == 2
    chat = codec("openai").build_request(r, "o", default_max_tokens=10)
    assert "reasoning_content" not in chat["messages"][1]


# ---- sealing -------------------------------------------------------------------------------


def test_a_sealed_answer_unseals_back_to_the_providers_signatures() -> None:
    resp = ChatResponse(
        "r",
        "m",
        [
            ReasoningPart("thought", "SIG", origin="anthropic"),
            TextPart("calling"),
            ToolCallPart("toolu_1", "t", "{}"),
            ToolCallPart("fc_2", "t", "{}", signature="FCSIG"),
        ],
    )
    sealed = R.Sealer(KEY).response(resp)
    rp, _, c1, c2 = sealed.content
    assert isinstance(rp, ReasoningPart) and R.is_token(rp.signature) and rp.origin is None
    assert isinstance(c1, ToolCallPart) and R.is_token(c1.id) and c1.signature is None
    assert isinstance(c2, ToolCallPart) and R.is_token(c2.id)
    for tid in (c1.id, c2.id):
        assert set(tid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    # a client that kept only the calls (Chat Completions): the reasoning comes back from the id
    echoed = ChatRequest(
        model="m",
        messages=[
            Message("user", [TextPart("hi")]),
            Message("assistant", [c1, c2]),
            Message(
                "tool",
                [ToolResultPart(c1.id, [TextPart("a")], "t"), ToolResultPart(c2.id, [TextPart("b")], "t")],
            ),
        ],
    )
    R.unseal_request(echoed, KEY)
    assert echoed.messages[1].parts == [
        ReasoningPart("thought", "SIG", None, "anthropic"),
        ToolCallPart("toolu_1", "t", "{}"),
        ToolCallPart("fc_2", "t", "{}", "FCSIG"),
    ]
    assert [p.tool_call_id for p in echoed.messages[2].parts] == ["toolu_1", "fc_2"]  # type: ignore[union-attr]
    assert echoed.seal_key == KEY
    # a client that kept its reasoning (Anthropic's thinking block): that one is used, not doubled
    kept = ChatRequest(model="m", messages=[Message("assistant", [rp, c1])])
    R.unseal_request(kept, KEY)
    assert kept.messages[0].parts == [
        ReasoningPart("thought", "SIG", None, "anthropic"),
        ToolCallPart("toolu_1", "t", "{}"),
    ]


def test_a_sealed_stream_carries_the_same() -> None:
    s = R.Sealer(KEY)
    out = [
        s.event(BlockStart(0, "reasoning", origin="anthropic")),
        s.event(BlockDelta(0, "thou")),
        s.event(BlockDelta(0, "ght")),
        s.event(BlockDelta(0, "", "SIG", "anthropic")),
        s.event(BlockStart(1, "tool_call", "toolu_1", "t", signature="X")),
    ]
    assert isinstance(out[3], BlockDelta) and R.is_token(out[3].signature)
    start = out[4]
    assert isinstance(start, BlockStart) and start.signature is None and start.tool_call_id
    payload = R.unseal(KEY, start.tool_call_id, "id")
    assert payload == {"i": "toolu_1", "t": [["thought", "SIG", None, "anthropic"]], "c": "X"}


def test_each_answer_seals_only_its_own_reasoning() -> None:
    """Several answers (n / candidateCount): a tool call carries the reasoning of its own answer,
    never another's, whether the answers come whole or as one interleaved stream."""
    resp = ChatResponse(
        "r",
        "m",
        [ReasoningPart("first", "SIG0", origin="gemini"), TextPart("no call")],
        more=[Choice([ToolCallPart("fc_1", "t", "{}")])],
    )
    sealed = R.Sealer(KEY).response(resp)
    call = sealed.more[0].content[0]
    assert isinstance(call, ToolCallPart) and call.id == "fc_1"  # nothing of answer 0 rides along
    s = R.Sealer(KEY)
    out = [
        s.event(BlockStart(0, "reasoning", origin="gemini", choice=0)),
        s.event(BlockDelta(0, "", "SIG0", "gemini")),
        s.event(BlockStart(1, "reasoning", origin="gemini", choice=1)),
        s.event(BlockDelta(1, "", "SIG1", "gemini")),
        s.event(BlockStart(2, "tool_call", "fc_a", "t", choice=1)),
        s.event(BlockStart(3, "tool_call", "fc_b", "t", choice=0)),
    ]
    one, zero = out[4], out[5]
    assert (
        isinstance(one, BlockStart) and one.choice == 1 and isinstance(zero, BlockStart) and zero.choice == 0
    )
    assert R.unseal(KEY, one.tool_call_id or "", "id")["t"] == [["", "SIG1", None, "gemini"]]
    assert R.unseal(KEY, zero.tool_call_id or "", "id")["t"] == [["", "SIG0", None, "gemini"]]


def test_a_token_opens_only_for_its_tenant_and_unaltered() -> None:
    token = R.seal(KEY, {"i": "x"})
    assert R.unseal(KEY, token, "p") == {"i": "x"}
    with pytest.raises(GatewayError) as e:
        R.unseal(OTHER, token, "messages[1].tool_calls[0].id")
    assert e.value.status == 400 and e.value.param == "messages[1].tool_calls[0].id"
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    with pytest.raises(GatewayError):
        R.unseal(KEY, flipped, "p")


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_no_string_but_a_sealed_token_unseals(text: str) -> None:
    """The token parser takes any client string: a 400 or the payload, never anything else."""
    for candidate in (text, R.PREFIX + text):
        try:
            R.unseal(KEY, candidate, "p")
        except GatewayError as e:
            assert e.status == 400
        else:
            pytest.fail("an unsealed string opened")


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.none(), st.text(max_size=50), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        max_size=5,
    )
)
def test_any_payload_round_trips(payload: dict[str, Any]) -> None:
    token = R.seal(KEY, payload)
    assert R.is_token(token) and R.unseal(KEY, token, "p") == payload


@given(st.binary(min_size=1, max_size=64))
def test_gemini_thought_signatures_round_trip_raw_and_sealed(raw: bytes) -> None:
    """A provider's signature (base64 bytes) passes as is; a token comes back base64-encoded
    (the field is bytes in the SDKs) and reads back as the token, from either base64 alphabet."""
    g = codec("gemini")
    sig = base64.b64encode(raw).decode()
    token = R.seal(KEY, {"s": sig})
    for given_sig, want in ((sig, sig), (base64.b64encode(token.encode()).decode(), token)):
        for alphabet in (given_sig, given_sig.replace("+", "-").replace("/", "_")):
            ir = g.parse_request(
                {
                    "contents": [
                        {"role": "user", "parts": [{"text": "q"}]},
                        {
                            "role": "model",
                            "parts": [{"text": "t", "thought": True, "thoughtSignature": alphabet}],
                        },
                    ]
                },
                "models/x",
            )
            part = ir.messages[1].parts[0]
            assert isinstance(part, ReasoningPart)
            assert part.signature == (want if want == token else alphabet)


def test_a_body_carrying_a_token_is_recognised_as_is_and_base64_encoded() -> None:
    token = R.seal(KEY, {"i": "x"})
    assert R.carries_tokens({"messages": [{"tool_calls": [{"id": token}]}]})
    assert R.carries_tokens({"parts": [{"thoughtSignature": base64.b64encode(token.encode()).decode()}]})
    assert not R.carries_tokens({"messages": [{"content": "a gwr1 in prose is no token"}]})


def test_settings_thinking_cannot_take_are_refused_for_claude_in_the_clients_words() -> None:
    """Extended-thinking docs: temperature 1 only, no top_k, top_p >= 0.95, no forced tool use."""
    ir = codec("openai").parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "low",
            "temperature": 0.2,
        }
    )
    with pytest.raises(GatewayError) as e:
        codec("anthropic").build_request(ir, "c", default_max_tokens=10)
    assert e.value.status == 400 and e.value.param == "temperature"
    dropped = codec("anthropic").build_request(ir, "c", default_max_tokens=10, drop_unsupported=True)
    assert "temperature" not in dropped and dropped["thinking"]["type"] == "enabled"
    ir.temperature = 1
    assert codec("anthropic").build_request(ir, "c", default_max_tokens=10)["temperature"] == 1
    g = codec("gemini").parse_request(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "tools": [{"functionDeclarations": [{"name": "t"}]}],
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 2000}},
        },
        "models/x",
    )
    with pytest.raises(GatewayError) as e2:
        codec("anthropic").build_request(g, "c", default_max_tokens=10)
    assert e2.value.param == "toolConfig.functionCallingConfig"  # as the Gemini client spelled it


def test_interleaved_thinking_goes_back_before_each_call() -> None:
    """Thinking between tool calls of one turn (interleaved): each call's id carries the reasoning
    since the call before, and it is put back where it was."""
    resp = ChatResponse(
        "r",
        "m",
        [
            ReasoningPart("first", "S1", origin="anthropic"),
            ToolCallPart("toolu_1", "t", "{}"),
            ReasoningPart("second", "S2", origin="anthropic"),
            ToolCallPart("toolu_2", "t", "{}"),
        ],
    )
    sealed = R.Sealer(KEY).response(resp)
    calls = [p for p in sealed.content if isinstance(p, ToolCallPart)]
    echoed = ChatRequest(model="m", messages=[Message("assistant", list(calls))])
    R.unseal_request(echoed, KEY)
    assert echoed.messages[0].parts == [
        ReasoningPart("first", "S1", None, "anthropic"),
        ToolCallPart("toolu_1", "t", "{}"),
        ReasoningPart("second", "S2", None, "anthropic"),
        ToolCallPart("toolu_2", "t", "{}"),
    ]


def test_reasoning_config_is_validated_and_resolved_per_backend() -> None:
    import yaml

    from ext_proc.config import DEFAULT_CONFIG, ConfigError, parse_config, resolve_secrets
    from ext_proc.state import seal_secret

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["models"]["claude-sonnet-4-6"]["backends"][0]["reasoning"] = {
        "style": "adaptive",
        "efforts": ["low", "high"],
        "budgets": {"high": 9000},
    }
    data["reasoning"] = {"signing_key_env": "SEAL_KEY"}
    cfg = parse_config(yaml.safe_dump(data), "ok.yaml")
    b = cfg.chains["claude-sonnet-4-6"][0]
    assert (
        b.reasoning is not None and b.reasoning.style == "adaptive" and b.reasoning.budgets == {"high": 9000}
    )
    env = {"MOCK_OPENAI_API_KEY": "a", "MOCK_ANTHROPIC_API_KEY": "b", "MOCK_GEMINI_API_KEY": "c"}
    keys = resolve_secrets(cfg, env)
    assert seal_secret(cfg, {**env, "SEAL_KEY": "s3cret"}, keys) == b"s3cret"
    with pytest.raises(ConfigError) as missing:
        seal_secret(cfg, env, keys)
    assert "SEAL_KEY" in str(missing.value.problems)
    # without the setting: derived from the deployment's keys, the same for every replica that holds them
    del data["reasoning"]
    plain = parse_config(yaml.safe_dump(data), "ok.yaml")
    assert (
        seal_secret(plain, env, keys)
        == seal_secret(plain, env, dict(keys))
        != seal_secret(plain, env, {"x": "y"})
    )
    data["models"]["claude-sonnet-4-6"]["backends"][0]["reasoning"] = {
        "efforts": ["extreme"],
        "style": "loud",
    }
    with pytest.raises(ConfigError) as bad:
        parse_config(yaml.safe_dump(data), "bad.yaml")
    text = "\n".join(bad.value.problems)
    assert "reasoning.efforts" in text and "reasoning.style" in text


def test_unsigned_reasoning_reaches_clients_with_a_sealed_empty_signature() -> None:
    """A thought the provider did not sign (a compatible server's reasoning_content, a Gemini
    thought) still gets a signature in dialects that want one: the gateway's, so an echo of it is
    recognised (and left out for a provider) rather than sent as a signature no provider issued."""
    sealed = R.Sealer(KEY).response(ChatResponse("r", "m", [ReasoningPart("hmm", origin="gemini")]))
    [part] = sealed.content
    assert isinstance(part, ReasoningPart) and R.is_token(part.signature)
    assert R.unseal(KEY, part.signature or "", "p") == {"s": None, "o": "gemini"}
    s = R.Sealer(KEY)
    out = [e for ev in (BlockStart(0, "reasoning"), BlockDelta(0, "hmm"), BlockStop(0)) for e in s.events(ev)]
    assert [type(e).__name__ for e in out] == ["BlockStart", "BlockDelta", "BlockDelta", "BlockStop"]
    assert isinstance(out[2], BlockDelta) and R.is_token(out[2].signature)
    echoed = ChatRequest(
        model="m",
        messages=[Message("user", [TextPart("q")]), Message("assistant", [part, TextPart("a")])],
        source_dialect="anthropic",
    )
    R.unseal_request(echoed, KEY)
    assert echoed.messages[1].parts[0] == ReasoningPart("hmm", None, None, "gemini")
    body = codec("anthropic").build_request(echoed, "c", default_max_tokens=10)
    assert body["messages"][1]["content"] == "a" or body["messages"][1]["content"] == [
        {"type": "text", "text": "a"}
    ]


def test_every_answer_of_several_is_sealed() -> None:
    """A backend's second candidate (``n`` / ``candidateCount``) calls a tool with a signature of
    its own: it reaches the client sealed like the first answer's, never raw."""
    resp = ChatResponse(
        "r",
        "m",
        [ToolCallPart("fc_1", "t", "{}", signature="SIG1")],
        more=[Choice([ReasoningPart("hmm", "SIG2", origin="gemini"), ToolCallPart("fc_2", "t", "{}")])],
    )
    sealed = R.Sealer(KEY).response(resp)
    (first,) = sealed.content
    thought, second = sealed.more[0].content
    assert isinstance(first, ToolCallPart) and R.is_token(first.id)
    assert isinstance(second, ToolCallPart) and R.is_token(second.id) and second.signature is None
    assert isinstance(thought, ReasoningPart) and R.is_token(thought.signature)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@given(
    oc=_JSON | st.fixed_dictionaries({"effort": _JSON | st.sampled_from(["low", "medium", "high", "max"])})
)
def test_bedrock_output_config_parses_or_is_a_400_naming_it(oc: Any) -> None:
    """Whatever ``additionalModelRequestFields.output_config`` holds: an IR effort, or a 400
    naming the field (never another error)."""
    body = {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "additionalModelRequestFields": {"output_config": oc},
    }
    try:
        ir = codec("bedrock").parse_request(body, "anthropic.claude-x")
    except GatewayError as e:
        assert e.status == 400 and (e.param or "").startswith("additionalModelRequestFields.output_config")
        return
    want = oc.get("effort") if isinstance(oc, dict) else None
    assert ir.reasoning_effort == {"max": "xhigh"}.get(want, want)


@given(effort=_JSON)
def test_anthropic_output_config_effort_parses_or_is_a_400_naming_it(effort: Any) -> None:
    """Any JSON as ``output_config.effort``: an IR effort or a 400 naming it (a list was a
    TypeError, found by the Bedrock twin of this test)."""
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "output_config": {"effort": effort},
    }
    try:
        ir = codec("anthropic").parse_request(body)
    except GatewayError as e:
        assert e.status == 400 and e.param == "output_config.effort"
        return
    assert ir.reasoning_effort == {"max": "xhigh"}.get(effort, effort)
