"""Translations that used to be silently wrong (issue 14), one class each, through the real codecs:
a mid-conversation system message keeps its place; blank assistant text and a prefill's trailing
whitespace are left out towards Anthropic; several answers are carried or refused, never cut to
one; a tool result's error marker survives every target."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.config import DEFAULT_CONFIG, parse_config
from ext_proc.dialects import CODECS, get_dialect
from ext_proc.errors import GatewayError
from ext_proc.request.responses import make_translator
from ext_proc.state import GatewayState
from ext_proc.translation.ir import (
    BlockDelta,
    BlockStart,
    ChatRequest,
    ChatResponse,
    Choice,
    Message,
    MessageDelta,
    StreamError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ext_proc.translation.markers import SYSTEM_CLOSE, SYSTEM_OPEN, TOOL_ERROR, inline_system, read_error
from ext_proc.translation.sse import SSEEvent

DEFAULT_MAX = 1024
TOP_LEVEL_ONLY = ("anthropic", "vertex_anthropic", "gemini", "vertex_gemini", "bedrock")


def build(dialect: str, req: ChatRequest) -> dict[str, Any]:
    return CODECS[dialect].build_request(req, "m", default_max_tokens=DEFAULT_MAX)


# ---- a system message in mid-conversation -------------------------------------------------------

CHAT_BODY = {
    "model": "x",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Plan a trip."},
        {"role": "assistant", "content": "Where to?"},
        {"role": "developer", "content": "From now on answer in French."},
        {"role": "user", "content": "Paris."},
    ],
}
RESPONSES_BODY = {
    "model": "x",
    "instructions": "Be brief.",
    "input": [
        {"role": "user", "content": "Plan a trip."},
        {"role": "assistant", "content": "Where to?"},
        {"role": "system", "content": "From now on answer in French."},
        {"role": "user", "content": "Paris."},
    ],
}
LATE = "From now on answer in French."


@pytest.mark.parametrize("client,body", [("openai", CHAT_BODY), ("openai_responses", RESPONSES_BODY)])
def test_a_late_system_message_is_parsed_in_place(client: str, body: dict[str, Any]) -> None:
    req = CODECS[client].parse_request(body)
    assert [p.text for p in req.system] == ["Be brief."]
    assert [m.role for m in req.messages] == ["user", "assistant", "system", "user"]
    assert req.messages[2].parts == [TextPart(LATE)]


@pytest.mark.parametrize("client,body", [("openai", CHAT_BODY), ("openai_responses", RESPONSES_BODY)])
@pytest.mark.parametrize("target", TOP_LEVEL_ONLY)
def test_targets_with_one_system_prompt_get_it_in_place_as_marked_user_text(
    client: str, body: dict[str, Any], target: str
) -> None:
    out = orjson.dumps(build(target, CODECS[client].parse_request(body))).decode()
    late = SYSTEM_OPEN + LATE + SYSTEM_CLOSE
    assert orjson.dumps(late).decode()[1:-1] in out
    assert out.index("Where to?") < out.index("answer in French") < out.index("Paris.")
    # The top-level prompt holds only what came first.
    top = out[: out.index("Plan a trip.")] + out[out.index("Paris.") :]
    assert "answer in French" not in top


@pytest.mark.parametrize("target", ["anthropic", "gemini", "bedrock"])
def test_the_marked_turn_merges_so_roles_alternate(target: str) -> None:
    body = build(target, CODECS["openai"].parse_request(CHAT_BODY))
    turns = body["messages"] if "messages" in body else body["contents"]
    roles = [t["role"] for t in turns]
    assert roles == ["user", "assistant" if target != "gemini" else "model", "user"]


def test_a_system_message_between_two_assistant_turns_is_a_user_turn_of_its_own() -> None:
    body = {
        "model": "x",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "a"},
            {"role": "system", "content": "Now be formal."},
            {"role": "assistant", "content": "Good day"},
        ],
    }
    built = build("anthropic", CODECS["openai"].parse_request(body))
    assert [t["role"] for t in built["messages"]] == ["user", "assistant", "user", "assistant"]
    assert built["messages"][2]["content"] == SYSTEM_OPEN + "Now be formal." + SYSTEM_CLOSE


@pytest.mark.parametrize("target", ["openai", "azure_openai", "openai_responses"])
def test_openai_targets_keep_the_system_message_where_it_was(target: str) -> None:
    built = build(target, CODECS["openai"].parse_request(CHAT_BODY))
    items = built["messages"] if "messages" in built else built["input"]
    roles = [i["role"] for i in items]
    late = next(n for n, i in enumerate(items) if i["role"] == "system" and i["content"] == LATE)
    assert roles[late - 1] == "assistant" and "Paris." in orjson.dumps(items[late + 1]).decode()


def test_a_same_dialect_rebuild_keeps_the_place() -> None:
    """A body translated once (for a failover's primary) translates again the same way."""
    built = build("openai", CODECS["openai"].parse_request(CHAT_BODY))
    again = build("openai", CODECS["openai"].parse_request(built))
    assert again == built


@pytest.mark.parametrize("primary", TOP_LEVEL_ONLY)
@pytest.mark.parametrize("target", ["openai", "openai_responses"])
def test_failover_from_a_top_level_only_primary_gives_the_system_role_back(primary: str, target: str) -> None:
    """OpenAI client -> (primary with one system prompt) -> failover re-translation -> OpenAI target."""
    once = build(primary, CODECS["openai"].parse_request(CHAT_BODY))
    again = CODECS[primary].parse_request(once, "m")
    assert [m.role for m in again.messages] == ["user", "assistant", "system", "user"]
    assert again.messages[2].parts == [TextPart(LATE)]
    assert build(primary, again) == once  # and the primary's own body rebuilds the same
    items = build(target, again)
    assert "<system-message>" not in orjson.dumps(items).decode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["user", "assistant", "tool", "system"]), min_size=1, max_size=8))
def test_inline_system_keeps_indexes_and_leaves_no_system_turn(roles: list[str]) -> None:
    msgs = [
        Message(r, [ToolResultPart("c", [TextPart("r")])] if r == "tool" else [TextPart(f"t{n}")])  # type: ignore[arg-type]
        for n, r in enumerate(roles)
    ]
    out = inline_system(msgs)
    assert len(out) == len(msgs)
    assert all(m.role != "system" for m in out)
    for a, b in zip(msgs, out, strict=True):
        if a.role == "system":
            assert b.role == "user" and b.parts[0].text.startswith(SYSTEM_OPEN)  # type: ignore[union-attr]
        else:
            assert a is b


# ---- blank assistant text and a prefill's trailing whitespace towards Anthropic -------------------


@pytest.mark.parametrize("target", ["anthropic", "vertex_anthropic"])
def test_blank_assistant_text_and_trailing_whitespace_of_a_prefill(target: str) -> None:
    req = ChatRequest(
        "x",
        [
            Message("user", [TextPart("hi")]),
            Message("assistant", [TextPart("  \n"), ToolCallPart("toolu_1", "f", "{}")]),
            Message("tool", [ToolResultPart("toolu_1", [TextPart("ok")], "f")]),
            Message("assistant", [TextPart(" ")]),  # nothing but whitespace: the turn goes
            Message("user", [TextPart("and then?")]),
            Message("assistant", [TextPart("The answer is ")]),  # a prefill
        ],
    )
    turns = build(target, req)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    assert turns[2]["content"][0]["type"] == "tool_result"
    assert turns[2]["content"][-1] == {"type": "text", "text": "and then?"}
    assert turns[3]["content"] == [{"type": "text", "text": "The answer is"}]
    for t in turns:
        for b in t["content"] if isinstance(t["content"], list) else []:
            assert b["type"] != "text" or b["text"].strip()


def test_whitespace_inside_text_and_in_earlier_turns_is_kept() -> None:
    req = ChatRequest(
        "x",
        [
            Message("user", [TextPart("hi ")]),
            Message("assistant", [TextPart("line one\n\n")]),
            Message("user", [TextPart("go on")]),
        ],
    )
    turns = build("anthropic", req)["messages"]
    assert turns[0]["content"] == "hi "
    assert turns[1]["content"] == [{"type": "text", "text": "line one\n\n"}]


def test_bedrock_leaves_blank_text_out() -> None:
    req = ChatRequest(
        "x", [Message("user", [TextPart("hi"), TextPart("  ")]), Message("assistant", [TextPart("\t")])]
    )
    body = build("bedrock", req)
    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


# ---- several answers --------------------------------------------------------------------------

GEMINI_TWO = {
    "candidates": [
        {"content": {"parts": [{"text": "one"}], "role": "model"}, "finishReason": "STOP", "index": 0},
        {
            "content": {"parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}], "role": "model"},
            "finishReason": "STOP",
            "index": 1,
        },
    ],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14},
    "modelVersion": "g",
}
OPENAI_TWO = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "one"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "two"}, "finish_reason": "length"},
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
}


def test_gemini_candidates_reach_an_openai_client_as_choices() -> None:
    resp = CODECS["gemini"].parse_response(GEMINI_TWO)
    assert len(resp.more) == 1 and resp.more[0].stop_reason == "tool_use"
    out = CODECS["openai"].render_response(resp)
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["message"]["content"] == "one"
    assert out["choices"][1]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert out["choices"][1]["finish_reason"] == "tool_calls"


def test_openai_choices_reach_a_gemini_client_as_candidates() -> None:
    out = CODECS["gemini"].render_response(CODECS["openai"].parse_response(OPENAI_TWO))
    assert [(c["index"], c["content"]["parts"], c["finishReason"]) for c in out["candidates"]] == [
        (0, [{"text": "one"}], "STOP"),
        (1, [{"text": "two"}], "MAX_TOKENS"),
    ]


def test_only_dialects_with_several_answers_say_so() -> None:
    several = {d for d, c in CODECS.items() if c.several_answers}
    assert several == {"openai", "azure_openai", "gemini", "vertex_gemini"}


def test_one_answer_renders_as_before() -> None:
    resp = ChatResponse("id", "m", [TextPart("x")])
    assert len(CODECS["openai"].render_response(resp)["choices"]) == 1
    resp.more = [Choice([TextPart("y")])]
    assert len(CODECS["gemini"].render_response(resp)["candidates"]) == 2


MOCK_ENV = {"MOCK_OPENAI_API_KEY": "k", "MOCK_ANTHROPIC_API_KEY": "k", "MOCK_GEMINI_API_KEY": "k"}


def _sse(chunks: list[dict[str, Any] | str]) -> list[SSEEvent]:
    return [SSEEvent(data=c if isinstance(c, str) else orjson.dumps(c).decode()) for c in chunks]


def _answers(events: list[Any]) -> dict[int, tuple[str, list[tuple[str, str]], str]]:
    """Per answer (choice): its text, its tool calls (name, arguments) and its stop reason."""
    choice_of: dict[int, int] = {}
    calls: dict[int, list[str]] = {}
    text: dict[int, str] = {}
    stops: dict[int, str] = {}
    for ev in events:
        assert not isinstance(ev, StreamError), ev.error.message
        if isinstance(ev, BlockStart):
            choice_of[ev.index] = ev.choice
            text.setdefault(ev.choice, "")
            if ev.kind == "tool_call":
                calls[ev.index] = [ev.tool_name or "", ""]
        elif isinstance(ev, BlockDelta):
            if ev.index in calls:
                calls[ev.index][1] += ev.text
            else:
                text[choice_of[ev.index]] += ev.text
        elif isinstance(ev, MessageDelta):
            stops = dict(enumerate((ev.stop_reason or "", *ev.more_stops)))
    return {
        k: (
            text.get(k, ""),
            [(c[0], orjson.loads(c[1] or "{}")) for b, c in sorted(calls.items()) if choice_of[b] == k],
            stops.get(k, ""),
        )
        for k in sorted(stops)
    }


OPENAI_TWO_STREAMED: list[dict[str, Any] | str] = [
    {"id": "c", "model": "o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c", "model": "o", "choices": [{"index": 1, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c", "model": "o", "choices": [{"index": 0, "delta": {"content": "o"}}]},
    {
        "id": "c",
        "model": "o",
        "choices": [
            {
                "index": 1,
                "delta": {
                    "tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]
                },
            }
        ],
    },
    {"id": "c", "model": "o", "choices": [{"index": 0, "delta": {"content": "ne"}}]},
    {
        "id": "c",
        "model": "o",
        "choices": [
            {"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}}
        ],
    },
    {"id": "c", "model": "o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {
        "id": "c",
        "model": "o",
        "choices": [{"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}],
    },
    {"id": "c", "model": "o", "choices": [{"index": 1, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c", "model": "o", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    "[DONE]",
]
TWO = {0: ("one", [], "end_turn"), 1: ("", [("f", {"a": 1})], "tool_use")}


def _decode(dialect: str, events: list[SSEEvent], answers: int) -> list[Any]:
    dec = CODECS[dialect].stream_decoder(answers)
    return [ev for e in events for ev in dec.feed(e)] + dec.close()


def _reencode(client: str, events: list[Any], n: int) -> list[SSEEvent]:
    enc = CODECS[client].stream_encoder(ChatRequest("m", [], stream=True, n=n))
    raw = b"".join(enc.encode(ev) for ev in events).decode()
    return [SSEEvent(data=line[6:]) for line in raw.split("\n") if line.startswith("data: ")]


def test_several_streamed_answers_interleave_from_openai_to_gemini_and_back() -> None:
    """OpenAI streams n=2 interleaved (text in one, a tool call in fragments in the other): each
    answer keeps its own blocks, and a Gemini client's stream carries them as candidates 0 and 1."""
    events = _decode("openai", _sse(OPENAI_TWO_STREAMED), 2)
    assert _answers(events) == TWO
    gemini = _reencode("gemini", events, 2)
    indexes = {c["index"] for e in gemini for c in orjson.loads(e.data)["candidates"]}
    assert indexes == {0, 1}
    assert _answers(_decode("gemini", gemini, 2)) == TWO
    openai_again = _reencode("openai", _decode("gemini", gemini, 2), 2)
    assert _answers(_decode("openai", openai_again, 2)) == TWO


def test_several_streamed_gemini_candidates_reach_an_openai_client_as_choices() -> None:
    chunks: list[dict[str, Any] | str] = [
        {
            "candidates": [
                {"content": {"parts": [{"text": "on"}]}, "index": 0},
                {"content": {"parts": [{"text": "tw"}]}, "index": 1},
            ]
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": "e"}]}, "finishReason": "STOP", "index": 0},
                {"content": {"parts": [{"text": "o"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            ],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9},
        },
    ]
    events = _decode("gemini", _sse(chunks), 2)
    want = {0: ("one", [], "end_turn"), 1: ("two", [], "max_tokens")}
    assert _answers(events) == want
    out = _reencode("openai", events, 2)
    finishes = [
        (c["index"], c["finish_reason"])
        for e in out
        if e.data != "[DONE]"
        for c in orjson.loads(e.data)["choices"]
        if c["finish_reason"]
    ]
    assert finishes == [(0, "stop"), (1, "length")]
    assert _answers(_decode("openai", out, 2)) == want


def test_a_gemini_candidate_that_finishes_first_waits_for_the_others() -> None:
    """The stream ends when every asked-for candidate has finished, not at the first finish."""
    first = {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0}]}
    second = {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 1}]}
    events = _decode("gemini", _sse([first, second]), 2)
    assert _answers(events) == {0: ("a", [], "end_turn"), 1: ("b", [], "end_turn")}
    # One candidate fewer than asked for, each finished: a whole answer, not a cut stream.
    assert _answers(_decode("gemini", _sse([first]), 2)) == {0: ("a", [], "end_turn")}


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_more_streamed_answers_than_asked_for_are_refused_not_cut_to_one(backend: str) -> None:
    """A backend streaming a second answer to a client that asked for one: a 502 in the stream,
    never the first answer alone while usage counts both."""
    state = GatewayState(parse_config(DEFAULT_CONFIG.read_text(), "x.yaml"), env=MOCK_ENV)
    chunks = [GEMINI_TWO] if backend == "gemini" else [c for c in OPENAI_TWO_STREAMED if c != "[DONE]"]
    wire = "".join(f"data: {c if isinstance(c, str) else orjson.dumps(c).decode()}\n\n" for c in chunks)
    translator = make_translator(
        client=get_dialect("anthropic"),
        backend=state.config.backends[
            f"{backend}/{'gemini-3.5-flash' if backend == 'gemini' else 'gpt-5.5'}"
        ],
        status=200,
        stream=True,
        model="m",
        ir=ChatRequest("m", [Message("user", [TextPart("hi")])], stream=True),
        body=None,
        on_done=lambda *_: None,
        redact=state.redact,
    )
    out = translator.feed(wire.encode(), True) or b""
    assert b"more answers than the 1 asked for" in out and b'"type":"error"' in out


# ---- a tool result's error marker -----------------------------------------------------------

ANTHROPIC_ERROR_TURN = {
    "model": "x",
    "max_tokens": 100,
    "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
    "messages": [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "HTTP 500 from the service",
                    "is_error": True,
                }
            ],
        },
    ],
}


def _result(req: ChatRequest) -> ToolResultPart:
    return next(p for m in req.messages for p in m.parts if isinstance(p, ToolResultPart))


def test_the_error_marker_reaches_openai_in_the_text() -> None:
    req = CODECS["anthropic"].parse_request(ANTHROPIC_ERROR_TURN)
    chat = build("openai", req)
    assert chat["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": TOOL_ERROR + "HTTP 500 from the service",
    }
    responses = build("openai_responses", req)
    assert responses["input"][-1]["output"] == TOOL_ERROR + "HTTP 500 from the service"


@pytest.mark.parametrize("openai", ["openai", "openai_responses"])
@pytest.mark.parametrize("target", ["anthropic", "gemini", "bedrock"])
def test_the_marker_is_read_back_as_the_targets_own_flag(openai: str, target: str) -> None:
    """Anthropic client -> OpenAI primary -> (failover re-translation) -> a flagged target."""
    once = build(openai, CODECS["anthropic"].parse_request(ANTHROPIC_ERROR_TURN))
    again = CODECS[openai].parse_request(once)
    result = _result(again)
    assert result.is_error and result.content == [TextPart("HTTP 500 from the service")]
    text = orjson.dumps(build(target, again)).decode()
    flag = {"anthropic": '"is_error":true', "gemini": '"error":"HTTP 500', "bedrock": '"status":"error"'}[
        target
    ]
    assert flag in text and TOOL_ERROR not in text


@pytest.mark.parametrize("source", ["gemini", "bedrock", "anthropic"])
@pytest.mark.parametrize("target", ["gemini", "bedrock", "anthropic"])
def test_flags_map_between_the_dialects_that_have_one(source: str, target: str) -> None:
    req = CODECS["anthropic"].parse_request(ANTHROPIC_ERROR_TURN)
    there = build(source, req)
    back = CODECS[source].parse_request(there, "m")
    assert _result(back).is_error
    assert _result(CODECS[target].parse_request(build(target, back), "m")).is_error


def test_a_result_without_the_error_stays_one() -> None:
    body = {**ANTHROPIC_ERROR_TURN}
    body["messages"] = [
        *body["messages"][:2],
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ]
    chat = build("openai", CODECS["anthropic"].parse_request(body))
    assert chat["messages"][-1]["content"] == "sunny"
    assert not _result(CODECS["openai"].parse_request(chat)).is_error


def test_an_error_without_text_is_still_marked() -> None:
    req = ChatRequest(
        "x",
        [
            Message("user", [TextPart("go")]),
            Message("assistant", [ToolCallPart("c1", "f", "{}")]),
            Message("tool", [ToolResultPart("c1", [], "f", True)]),
        ],
    )
    chat = build("openai", req)
    assert chat["messages"][-1]["content"] == TOOL_ERROR.rstrip()
    assert _result(CODECS["openai"].parse_request(chat)) == ToolResultPart("c1", [], "f", True)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_read_error_undoes_the_marking(text: str, failed: bool) -> None:
    from ext_proc.translation.markers import mark_error

    content: list[Any] = [TextPart(text)] if text else []
    marked = mark_error(content, failed)
    back, flag = read_error(marked)
    if not text.startswith(TOOL_ERROR.rstrip()):  # a text that itself looks marked reads as marked
        assert (back, flag) == (content, failed)


_ANSWER = st.lists(st.text(min_size=1, max_size=20).filter(str.strip), min_size=1, max_size=2).map(
    lambda ts: [TextPart(t) for t in ts]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_ANSWER, st.sampled_from(["end_turn", "max_tokens"])), min_size=1, max_size=4))
def test_several_answers_survive_render_and_parse_in_both_dialects(answers: list[tuple[Any, str]]) -> None:
    """Rendered by one dialect that has several answers and parsed by it again, each answer keeps its
    place, its text and its stop reason (text blocks of one answer are one string in OpenAI)."""
    first, *rest = answers
    resp = ChatResponse("id", "m", first[0], first[1], more=[Choice(c, s) for c, s in rest])  # type: ignore[arg-type]
    for dialect in ("openai", "gemini"):
        back = CODECS[dialect].parse_response(CODECS[dialect].render_response(resp))
        got = [(back.content, back.stop_reason)] + [(c.content, c.stop_reason) for c in back.more]
        want = [(c, s) for c, s in answers]
        joined = lambda parts: "".join(p.text for p in parts)  # noqa: E731
        assert [(joined(c), s) for c, s in got] == [(joined(c), s) for c, s in want]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["system", "developer", "user", "assistant"]), min_size=1, max_size=8))
def test_system_messages_anywhere_parse_in_place_and_rebuild_the_same(roles: list[str]) -> None:
    body = {"model": "x", "messages": [{"role": r, "content": f"{r} {n}"} for n, r in enumerate(roles)]}
    req = CODECS["openai"].parse_request(body)
    lead = next((n for n, r in enumerate(roles) if r not in ("system", "developer")), len(roles))
    assert [p.text for p in req.system] == [f"{r} {n}" for n, r in enumerate(roles[:lead])]
    texts = [(m.role, p.text) for m in req.messages for p in m.parts if isinstance(p, TextPart)]
    assert texts == [
        ("system" if r in ("system", "developer") else r, f"{r} {n}")
        for n, r in enumerate(roles)
        if n >= lead
    ]
    built = build("openai", req)
    assert CODECS["openai"].parse_request(built).messages == req.messages
    for target in ("anthropic", "gemini", "bedrock"):
        if req.messages:
            out = orjson.dumps(build(target, req)).decode()
            for n, r in enumerate(roles[lead:], lead):
                if r in ("system", "developer"):
                    assert orjson.dumps(SYSTEM_OPEN + f"{r} {n}" + SYSTEM_CLOSE).decode()[1:-1] in out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["user", "assistant", "system"]),
            st.lists(st.text(max_size=12), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_read_system_undoes_inline_system(turns: list[tuple[str, list[str]]]) -> None:
    from ext_proc.translation.markers import read_system

    msgs = [Message(r, [TextPart(t) for t in (ts[:1] if r == "system" else ts)]) for r, ts in turns]  # type: ignore[arg-type]
    assert read_system(inline_system(msgs)) == msgs


# ---- a refused part is named where the client put it ------------------------------------------------

URL = "https://example.com/cat.png"


def _url_image_request(client: str, lead: int, before: int) -> tuple[dict[str, Any], str]:
    """A request of ``client`` with ``lead`` leading turns the IR does not keep as messages (system
    or merged), then a user turn with ``before`` text parts and an image by URL; the image's path."""
    texts = [f"t{i}" for i in range(before)]
    if client == "openai":
        msgs: list[Any] = [{"role": "system", "content": f"s{i}"} for i in range(lead)]
        parts = [{"type": "text", "text": t} for t in texts] + [
            {"type": "image_url", "image_url": {"url": URL}}
        ]
        return {
            "model": "m",
            "messages": [*msgs, {"role": "user", "content": parts}],
        }, f"messages[{lead}].content[{before}]"
    if client == "anthropic":  # consecutive user turns are one IR turn
        msgs = [{"role": "user", "content": f"u{i}"} for i in range(lead)]
        parts = [{"type": "text", "text": t} for t in texts] + [
            {"type": "image", "source": {"type": "url", "url": URL}}
        ]
        body = {"model": "m", "max_tokens": 10, "messages": [*msgs, {"role": "user", "content": parts}]}
        return body, f"messages[{lead}].content[{before}]"
    if client == "gemini":
        contents: list[Any] = [{"role": "user", "parts": [{"text": f"u{i}"}]} for i in range(lead)]
        gparts = [{"text": t} for t in texts] + [{"fileData": {"mimeType": "image/png", "fileUri": URL}}]
        return {
            "contents": [*contents, {"role": "user", "parts": gparts}]
        }, f"contents[{lead}].parts[{before}].fileData"
    items: list[Any] = [{"role": "system", "content": f"s{i}"} for i in range(lead)]
    rparts = [{"type": "input_text", "text": t} for t in texts] + [
        {"type": "input_image", "image_url": URL, "detail": "auto"}
    ]
    return {
        "model": "m",
        "input": [*items, {"role": "user", "content": rparts}],
    }, f"input[{lead}].content[{before}]"


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["openai", "anthropic", "gemini", "openai_responses"]),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_a_refused_part_names_the_clients_own_path(client: str, lead: int, before: int) -> None:
    """Bedrock takes no image URLs: the 400 names the image where the client put it, in the client's
    own terms (it named an IR index: ``messages[0].content[1]`` for a Gemini ``contents`` part, or
    for an OpenAI image after a system message; found by the mapping probes)."""
    body, path = _url_image_request(client, lead, before)
    req = CODECS[client].parse_request(body, "m" if client == "gemini" else None)
    with pytest.raises(GatewayError) as ei:
        CODECS["bedrock"].build_request(
            req, "anthropic.claude-3-5-sonnet-20240620-v1:0", default_max_tokens=100
        )
    assert ei.value.param == path
    assert f"'{path}'" in ei.value.message
