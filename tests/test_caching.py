"""Prompt-cache breakpoints in the codecs and ``auto_cache`` placement, without a stack:
Anthropic ``cache_control`` and Bedrock ``cachePoint`` parse to the IR's ``cache`` and render
back where the part lands; bad markers are a 400 naming the client's field; a gateway-placed
breakpoint set never exceeds Anthropic's 4 and never overrides the client's; cost prices reads
and writes apart (docs/caching.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ext_proc.config import Price
from ext_proc.dialects import get_dialect
from ext_proc.errors import GatewayError
from ext_proc.pricing import cost_usd
from ext_proc.translation.caching import breakpoints, place_breakpoints
from ext_proc.translation.ir import (
    ChatRequest,
    Message,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)

ANT = get_dialect("anthropic").codec
BED = get_dialect("bedrock").codec
OAI = get_dialect("openai").codec
GEM = get_dialect("gemini").codec
EPH = {"type": "ephemeral"}
LIMIT = ANT.cache_breakpoints  # 4, which the Anthropic mock enforces


def ant_body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **kw}


def marks(req: ChatRequest) -> list[str | None]:
    """Every cache field of ``req``, in order: tools, system, message parts."""
    return (
        [t.cache for t in req.tools]
        + [p.cache for p in req.system]
        + [p.cache for m in req.messages for p in m.parts]
    )


def test_anthropic_cache_control_round_trips_on_tools_system_and_blocks() -> None:
    body = ant_body(
        system=[{"type": "text", "text": "rules", "cache_control": EPH}],
        tools=[
            {
                "name": "f",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "go", "cache_control": EPH}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "ok", "cache_control": EPH}
                ],
            },
        ],
    )
    ir = ANT.parse_request(body)
    assert marks(ir) == ["1h", "5m", "5m", None, "5m"]
    out = ANT.build_request(ir, "m", default_max_tokens=10)
    assert out["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert out["system"] == [{"type": "text", "text": "rules", "cache_control": EPH}]
    assert out["messages"][0]["content"] == [{"type": "text", "text": "go", "cache_control": EPH}]
    assert out["messages"][2]["content"][0]["cache_control"] == EPH
    assert marks(ANT.parse_request(out)) == marks(ir)


def test_anthropic_marks_become_bedrock_cache_points_and_back() -> None:
    body = ant_body(
        system=[{"type": "text", "text": "rules", "cache_control": EPH}],
        tools=[{"name": "f", "input_schema": {"type": "object"}, "cache_control": EPH}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "go", "cache_control": EPH}]}],
    )
    out = BED.build_request(ANT.parse_request(body), "m", default_max_tokens=10)
    point = {"cachePoint": {"type": "default"}}
    assert out["system"] == [{"text": "rules"}, point]
    assert out["toolConfig"]["tools"][-1] == point
    assert out["messages"][0]["content"] == [{"text": "go"}, point]
    back = ANT.build_request(BED.parse_request(out, "m"), "m", default_max_tokens=10)
    assert back["system"][0]["cache_control"] == EPH and back["tools"][0]["cache_control"] == EPH
    assert back["messages"][0]["content"][0]["cache_control"] == EPH


def test_marks_are_dropped_towards_dialects_without_breakpoints() -> None:
    ir = ANT.parse_request(ant_body(system=[{"type": "text", "text": "rules", "cache_control": EPH}]))
    assert "cache_control" not in str(OAI.build_request(ir, "m", default_max_tokens=10))
    assert "cache" not in str(GEM.build_request(ir, "m", default_max_tokens=10)).lower()


@pytest.mark.parametrize(
    ("cc", "param"),
    [
        ("yes", "system[0].cache_control"),
        ({"type": "persistent"}, "system[0].cache_control.type"),
        ({"type": "ephemeral", "ttl": "2h"}, "system[0].cache_control.ttl"),
    ],
)
def test_a_bad_cache_control_is_a_400_naming_it(cc: Any, param: str) -> None:
    with pytest.raises(GatewayError) as e:
        ANT.parse_request(ant_body(system=[{"type": "text", "text": "x", "cache_control": cc}]))
    assert e.value.status == 400 and e.value.param == param


def test_a_bad_cache_point_is_a_400_naming_it() -> None:
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}, {"cachePoint": {"type": "forever"}}]}]}
    with pytest.raises(GatewayError) as e:
        BED.parse_request(body, "m")
    assert e.value.status == 400 and e.value.param == "messages[0].content[1].cachePoint.type"


def test_gemini_cached_content_is_refused_even_when_dropping() -> None:
    ir = GEM.parse_request(
        {"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": "cachedContents/x"}, "g"
    )
    for drop in (False, True):
        with pytest.raises(GatewayError) as e:
            ANT.build_request(ir, "m", default_max_tokens=10, drop_unsupported=drop)
        assert e.value.status == 400 and e.value.param == "cachedContent"
        assert "provider state" in e.value.message


def test_prompt_cache_key_goes_between_chat_and_responses_only() -> None:
    ir = OAI.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt_cache_key": "k"}
    )
    responses = get_dialect("openai_responses").codec
    assert responses.build_request(ir, "m", default_max_tokens=10)["prompt_cache_key"] == "k"
    back = responses.parse_request({"model": "m", "input": "hi", "prompt_cache_key": "k"})
    assert OAI.build_request(back, "m", default_max_tokens=10)["prompt_cache_key"] == "k"
    assert "prompt_cache_key" not in ANT.build_request(ir, "m", default_max_tokens=10)
    with pytest.raises(GatewayError) as e:
        OAI.parse_request(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt_cache_key": 7}
        )
    assert e.value.param == "prompt_cache_key"


# ---- auto_cache placement -----------------------------------------------------------------------


def conversation() -> ChatRequest:
    return ChatRequest(
        model="m",
        system=[TextPart("rules")],
        tools=[Tool("a"), Tool("b")],
        messages=[
            Message("user", [TextPart("q1")]),
            Message("assistant", [ToolCallPart("c1", "a")]),
            Message("tool", [ToolResultPart("c1", [TextPart("r1")], "a")]),
            Message("assistant", [TextPart("a1")]),
            Message("user", [TextPart("q2")]),
        ],
    )


def test_auto_cache_marks_tools_system_previous_and_latest_prompt_ends() -> None:
    req = conversation()
    assert place_breakpoints(req, LIMIT)
    assert [t.cache for t in req.tools] == [None, "5m"]
    assert req.system[0].cache == "5m"
    # The previous request ended with the tool result (before the latest assistant turn).
    assert [[p.cache for p in m.parts] for m in req.messages] == [[None], [None], ["5m"], [None], ["5m"]]
    out = ANT.build_request(req, "m", default_max_tokens=10)
    assert str(out).count("cache_control") == LIMIT


def test_auto_cache_keeps_the_latest_ends_under_a_smaller_limit() -> None:
    req = conversation()
    assert place_breakpoints(req, 1)
    assert breakpoints(req) == 1 and req.messages[-1].parts[-1].cache == "5m"


def test_auto_cache_leaves_a_clients_own_breakpoints_alone() -> None:
    req = conversation()
    req.messages[0].parts[0].cache = "1h"
    assert not place_breakpoints(req, LIMIT)
    assert breakpoints(req) == 1


def requests() -> st.SearchStrategy[ChatRequest]:
    roles = st.sampled_from(["user", "assistant", "tool"])
    msg = st.builds(
        lambda role, texts: Message(
            role,
            [ToolResultPart(f"c{i}", [TextPart(t)]) for i, t in enumerate(texts)]
            if role == "tool"
            else [TextPart(t) for t in texts],
        ),
        roles,
        st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3),
    )
    return st.builds(
        lambda msgs, n_sys, n_tools: ChatRequest(
            model="m",
            messages=msgs,
            system=[TextPart(f"s{i}") for i in range(n_sys)],
            tools=[Tool(f"t{i}") for i in range(n_tools)],
        ),
        st.lists(msg, max_size=6),
        st.integers(0, 3),
        st.integers(0, 3),
    )


@settings(max_examples=200, deadline=None)
@given(req=requests())
def test_auto_cache_never_exceeds_the_limit_and_is_stable(req: ChatRequest) -> None:
    place_breakpoints(req, LIMIT)
    n = breakpoints(req)
    assert n <= LIMIT
    assert (n > 0) == bool(req.tools or req.system or req.messages)
    assert not place_breakpoints(req, LIMIT) or n == 0  # a second pass adds nothing
    assert breakpoints(req) == n


CACHE_CONTROL = st.one_of(
    st.none(),
    st.just(EPH),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ephemeral", "other"]), "ttl": st.sampled_from(["5m", "1h", "9d"])}
    ),
    st.text(max_size=3),
    st.integers(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(cc=CACHE_CONTROL, where=st.sampled_from(["system", "tool", "text", "tool_result"]))
def test_any_cache_control_parses_or_is_a_400(cc: Any, where: str) -> None:
    """Whatever a client puts in ``cache_control``: a breakpoint the Anthropic build carries
    back unchanged, or a 400, never another error."""
    block: dict[str, Any] = {} if cc is None else {"cache_control": cc}
    kw: dict[str, Any] = {}
    if where == "system":
        kw["system"] = [{"type": "text", "text": "s", **block}]
    elif where == "tool":
        kw["tools"] = [{"name": "f", "input_schema": {"type": "object"}, **block}]
    elif where == "text":
        kw["messages"] = [{"role": "user", "content": [{"type": "text", "text": "x", **block}]}]
    else:
        kw["tools"] = [{"name": "f", "input_schema": {"type": "object"}}]
        kw["messages"] = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", **block}]},
        ]
    try:
        ir = ANT.parse_request(ant_body(**kw))
    except GatewayError as e:
        assert e.status == 400 and e.param is not None and "cache_control" in e.param
        return
    out = ANT.build_request(ir, "m", default_max_tokens=10)
    assert marks(ANT.parse_request(out)) == marks(ir)
    assert str(out).count("cache_control") == (cc is not None)
    bed = BED.build_request(ir, "m", default_max_tokens=10)
    assert str(bed).count("cachePoint") == (cc is not None)


CONVERSE_BLOCK = st.one_of(
    st.builds(lambda t: {"text": t}, st.text(min_size=1, max_size=4).filter(str.strip)),
    st.just({"cachePoint": {"type": "default"}}),
    st.builds(lambda v: {"cachePoint": v}, st.one_of(st.none(), st.integers(), st.just({"type": "x"}))),
)


@settings(max_examples=300, deadline=None)
@given(system=st.lists(CONVERSE_BLOCK, max_size=4), content=st.lists(CONVERSE_BLOCK, min_size=1, max_size=4))
def test_any_cache_point_parses_or_is_a_400(system: list[Any], content: list[Any]) -> None:
    assume(any("text" in b for b in content))  # a turn of cache points alone says nothing
    body = {"messages": [{"role": "user", "content": content}], **({"system": system} if system else {})}
    try:
        ir = BED.parse_request(body, "m")
    except GatewayError as e:
        assert e.status == 400
        return
    out = BED.build_request(ir, "m", default_max_tokens=10)
    assert marks(BED.parse_request(out, "m")) == marks(ir)


def test_cost_prices_cache_reads_and_writes_apart() -> None:
    price = Price(input=3.0, cached_input=0.3, cache_write=3.75, output=15.0)
    # 10,000 prompt tokens: 6,000 read, 3,000 written, 1,000 fresh; 100 out.
    assert cost_usd(price, 10_000, 6_000, 100, 3_000) == pytest.approx(
        (1_000 * 3.0 + 6_000 * 0.3 + 3_000 * 3.75 + 100 * 15.0) / 1e6
    )
    unset = Price(input=3.0, output=15.0)  # reads and writes at the input price
    assert cost_usd(unset, 10_000, 6_000, 100, 3_000) == pytest.approx((10_000 * 3.0 + 100 * 15.0) / 1e6)
