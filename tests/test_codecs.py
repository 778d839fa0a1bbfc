"""Golden fixtures for the three codecs, written from the providers' documented formats.

Fixture layout (``tests/fixtures/codecs``):

- ``requests/*.json``: a client request in one dialect and, per target
  dialect, the expected backend path and body (or the expected refusal and
  the body built with ``drop_unsupported``);
- ``responses/*.json``: a backend response and its rendering per client dialect;
- ``streams/*.sse``: a backend stream byte for byte, with
  ``*.expected.json`` holding the events each client dialect receives;
- ``errors.json``: backend error bodies, the GatewayError they parse to and
  the error body each dialect renders.

Volatile values (OpenAI's ``created``, ids the gateway makes up) are
normalised before comparing. The SDKs' own models and stream accumulators
double-check that what the encoders emit is what real clients understand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from ext_proc.dialects import CODECS, get_codec
from ext_proc.dialects import DIALECTS as DIALECT_OF
from ext_proc.errors import GatewayError
from ext_proc.translation.ir import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    ResponseFormat,
    StreamError,
    StreamEvent,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ext_proc.translation.sse import SSEReader

FIX = Path(__file__).parent / "fixtures" / "codecs"
DIALECTS = ("openai", "anthropic", "gemini")
UPSTREAM = "upstream-model"
DEFAULT_MAX = 4096
CLIENT_MODEL = "client-model"

_SYNTH = re.compile(r"^(call_[0-9a-f]{24}|chatcmpl-[0-9a-f]{32}|msg_[0-9a-f]{32}|gen-[0-9a-f]{32})$")


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def normalize(value: Any) -> Any:
    """Drop ``created`` and replace gateway-made ids by a placeholder."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str) and _SYNTH.match(value):
        return value.split("_")[0] + "_*" if "_" in value else value.split("-")[0] + "-*"
    return value


# ---- computing what the fixtures hold -------------------------------------------


def build_all(case: dict[str, Any]) -> dict[str, Any]:
    ir = CODECS[case["dialect"]].parse_request(
        case["body"], case.get("path_model"), case.get("path_stream", False)
    )
    out: dict[str, Any] = {}
    for d in DIALECTS:
        codec = CODECS[d]
        path = codec.request_path(UPSTREAM, ir.stream)
        try:
            out[d] = {"path": path, "body": codec.build_request(ir, UPSTREAM, default_max_tokens=DEFAULT_MAX)}
        except GatewayError as e:
            dropped = codec.build_request(ir, UPSTREAM, default_max_tokens=DEFAULT_MAX, drop_unsupported=True)
            out[d] = {
                "error": {"status": e.status, "kind": e.kind, "param": e.param},
                "dropped": {"path": path, "body": dropped},
            }
    return out


def render_all(case: dict[str, Any], normalized: bool = True) -> dict[str, Any]:
    resp = CODECS[case["dialect"]].parse_response(case["body"])
    resp.model = case["client_model"]
    out = {d: CODECS[d].render_response(resp) for d in DIALECTS}
    return normalize(out) if normalized else out


def client_request(dialect: str) -> ChatRequest:
    return ChatRequest(model=CLIENT_MODEL, messages=[], stream=True, stream_include_usage=dialect == "openai")


def decode(raw: bytes, src: str, chunk: int | None = None) -> list[StreamEvent]:
    reader = DIALECT_OF[src].stream_framing.reader()  # SSE, or the dialect's own framing
    dec = CODECS[src].stream_decoder()
    events: list[StreamEvent] = []
    chunks = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    for c in chunks:
        for sse in reader.feed(c):
            events += dec.feed(sse)
    for sse in reader.close():
        events += dec.feed(sse)
    return events + dec.close()


def encode(events: list[StreamEvent], dst: str) -> bytes:
    enc = CODECS[dst].stream_encoder(client_request(dst))
    return b"".join(enc.encode(ev) for ev in events)


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    reader = SSEReader()
    out = []
    for sse in reader.feed(raw) + reader.close():
        data: Any = sse.data if sse.data == "[DONE]" else orjson.loads(sse.data)
        out.append({"event": sse.event, "data": data})
    return out


def transcode_all(raw: bytes, src: str) -> dict[str, Any]:
    events = decode(raw, src)
    return {d: normalize(sse_events(encode(events, d))) for d in DIALECTS}


# ---- request fixtures -----------------------------------------------------------------

REQUESTS = sorted(p for p in (FIX / "requests").glob("*.json"))


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_request_fixture(path: Path) -> None:
    case = load(path)
    assert build_all(case) == case["expected"]


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_request_rebuild_is_stable(path: Path) -> None:
    """A body we built parses back to an IR that builds the same body (the failover stage relies on it)."""
    case = load(path)
    for d in DIALECTS:
        exp = case["expected"][d]
        built = exp["body"] if "body" in exp else exp["dropped"]["body"]
        ir = CODECS[d].parse_request(built, UPSTREAM, case.get("path_stream", False))
        assert ir.unmapped == [] or d == case["dialect"]
        again = CODECS[d].build_request(ir, UPSTREAM, default_max_tokens=DEFAULT_MAX)
        assert again == built


# ---- response fixtures -------------------------------------------------------------------

RESPONSES = sorted((FIX / "responses").glob("*.json"))


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_response_fixture(path: Path) -> None:
    case = load(path)
    rendered = render_all(case, normalized=False)
    assert normalize(rendered) == case["expected"]
    _validate_with_sdks(rendered)


def _validate_with_sdks(rendered: dict[str, Any]) -> None:
    from anthropic.types import Message as AnthropicMessage
    from google.genai import types as gtypes
    from openai.types.chat import ChatCompletion

    ChatCompletion.model_validate(rendered["openai"])
    AnthropicMessage.model_validate(rendered["anthropic"])
    gtypes.GenerateContentResponse.model_validate(rendered["gemini"])


# ---- stream fixtures ------------------------------------------------------------------------

# Byte for byte: SSE text, or a binary framing (AWS event stream) for the dialects that use one.
STREAMS = sorted([*(FIX / "streams").glob("*.sse"), *(FIX / "streams").glob("*.eventstream")])


def _src(path: Path) -> str:
    """The dialect a fixture's file name starts with (the longest: ``openai_responses_*`` is not ``openai``)."""
    return max((d for d in DIALECT_OF if path.stem.startswith(d + "_")), key=len)


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_stream_fixture(path: Path) -> None:
    expected = load(path.with_suffix(".expected.json"))
    raw = path.read_bytes()
    assert transcode_all(raw, _src(path)) == expected
    # The same bytes cut into small chunks decode to the same events (ids a decoder makes up aside).
    assert _made_up_ids(decode(raw, _src(path), chunk=7)) == _made_up_ids(decode(raw, _src(path)))


def _made_up_ids(events: list[StreamEvent]) -> list[StreamEvent]:
    return [
        MessageStart(normalize(e.id), e.model, e.usage) if isinstance(e, MessageStart) else e for e in events
    ]


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_stream_understood_by_sdks(path: Path) -> None:
    """Each client stream accumulates, with the provider's own SDK, to the content the backend sent."""
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import RawMessageStreamEvent
    from google.genai import types as gtypes
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk
    from pydantic import TypeAdapter

    events = decode(path.read_bytes(), _src(path))
    want_text, want_calls = _collapse(events)
    failed = any(isinstance(e, StreamError) for e in events)

    state = ChatCompletionStreamState()
    for ev in sse_events(encode(events, "openai")):
        if ev["data"] != "[DONE]" and "error" not in ev["data"]:
            state.handle_chunk(ChatCompletionChunk.model_validate(ev["data"]))
    if not failed:
        msg = state.get_final_completion().choices[0].message
        assert (msg.content or "") == want_text
        assert [
            (c.id, c.function.name, orjson.loads(c.function.arguments)) for c in msg.tool_calls or []
        ] == want_calls

    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    snapshot = None
    bufs: dict[int, bytes] = {}
    for ev in sse_events(encode(events, "anthropic")):
        if ev["event"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(
            event=adapter.validate_python(ev["data"]), current_snapshot=snapshot, json_bufs=bufs
        )
    assert snapshot is not None
    text = "".join(b.text for b in snapshot.content if b.type == "text")
    calls = [(b.id, b.name, b.input) for b in snapshot.content if b.type == "tool_use"]
    assert (text, calls) == (want_text, want_calls)
    thinking = "".join(b.thinking for b in snapshot.content if b.type == "thinking")
    assert thinking == _reasoning(events)

    text, calls, thought = "", [], ""
    for ev in sse_events(encode(events, "gemini")):
        if "error" in ev["data"]:
            continue
        chunk = gtypes.GenerateContentResponse.model_validate(ev["data"])
        for part in chunk.candidates[0].content.parts or []:
            if part.text and part.thought:
                thought += part.text
            elif part.text:
                text += part.text
            if part.function_call:
                calls.append((part.function_call.id, part.function_call.name, part.function_call.args))
    assert (text, calls, thought) == (want_text, want_calls, _reasoning(events))


def _reasoning(events: list[StreamEvent]) -> str:
    thoughts = {e.index for e in events if isinstance(e, BlockStart) and e.kind == "reasoning"}
    return "".join(e.text for e in events if isinstance(e, BlockDelta) and e.index in thoughts)


def _collapse(events: list[StreamEvent]) -> tuple[str, list[tuple[str, str, Any]]]:
    """The answer's text and tool calls (reasoning blocks apart: ``_reasoning``)."""
    text = ""
    calls: dict[int, list[Any]] = {}
    thoughts = {e.index for e in events if isinstance(e, BlockStart) and e.kind == "reasoning"}
    for e in events:
        if isinstance(e, BlockStart) and e.kind == "tool_call":
            calls[e.index] = [e.tool_call_id, e.tool_name, ""]
        elif isinstance(e, BlockDelta) and e.index not in thoughts:
            if e.index in calls:
                calls[e.index][2] += e.text
            else:
                text += e.text
    return text, [(i, n, orjson.loads(a or "{}")) for i, n, a in calls.values()]


def test_stream_decoders_end_cleanly() -> None:
    for raw, src in (
        (b"data: [DONE]\n\n", "openai"),
        (b'event: message_stop\ndata: {"type":"message_stop"}\n\n', "anthropic"),
    ):
        events = decode(raw, src)
        assert not any(isinstance(e, StreamError) for e in events)


@pytest.mark.parametrize(
    "dialect, raw",
    [
        (
            "openai",
            b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
            b'"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n',
        ),  # finish but no usage nor [DONE]
        (
            "anthropic",
            b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"x",'
            b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n',
        ),
        (
            "gemini",
            b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"index":0}]}\n\n',
        ),
        ("openai", b""),
    ],
)
def test_stream_cut_short_is_an_error(dialect: str, raw: bytes) -> None:
    dec = CODECS[dialect].stream_decoder()
    reader = SSEReader()
    for sse in reader.feed(raw) + reader.close():
        dec.feed(sse)
    tail = dec.close()
    assert len(tail) == 1 and isinstance(tail[0], StreamError)
    err = tail[0].error
    assert (err.kind, err.status, err.message) == ("api_error", 502, "upstream stream ended unexpectedly")
    assert dec.close() == []


def test_openai_finish_with_usage_is_terminal() -> None:
    raw = (
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
    )
    events = decode(raw, "openai")
    assert isinstance(events[-1], MessageStop)
    delta = next(e for e in events if isinstance(e, MessageDelta))
    assert delta.stop_reason == "end_turn" and delta.usage is not None and delta.usage.input_tokens == 3


def test_openai_together_last_chunk_repeats_text_and_ends_with_eos() -> None:
    """Together repeats a delta's content as the choice's ``text`` and ends with "eos", its usage on
    that last chunk: the text is read once, and the end is a normal one."""
    raw = (
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi","token_id":1},'
        b'"text":"Hi","finish_reason":null}]}\n\n'
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{},"text":"","finish_reason":"eos"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
    )
    events = decode(raw, "openai")
    assert [e.text for e in events if isinstance(e, BlockDelta)] == ["Hi"]
    delta = next(e for e in events if isinstance(e, MessageDelta))
    assert delta.stop_reason == "end_turn" and delta.usage is not None and delta.usage.output_tokens == 1
    assert isinstance(events[-1], MessageStop)


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        ({"code": 429, "message": "slow down"}, "rate_limit", 429),  # OpenRouter: the status as a number
        ({"code": 402, "message": "slow down"}, "invalid_request", 402),
        ({"code": 529, "message": "slow down"}, "overloaded", 503),
        ({"code": "server_error", "message": "slow down"}, "api_error", 500),  # OpenRouter mid-stream
        ({"code": 200, "message": "slow down"}, "api_error", 500),  # no error status: not taken as one
    ],
)
def test_openai_in_stream_error_code(error: dict[str, Any], kind: str, status: int) -> None:
    raw = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}],"error":'
    events = decode(raw + orjson.dumps(error) + b"}\n\n", "openai")
    assert len(events) == 1 and isinstance(events[0], StreamError)
    err = events[0].error
    assert (err.kind, err.status, err.message) == (kind, status, "slow down")


def test_openai_usage_chunk_only_when_asked() -> None:
    events: list[StreamEvent] = [
        MessageStart("chatcmpl-1", "m"),
        BlockStart(0, "text"),
        BlockDelta(0, "x"),
        BlockStop(0),
        MessageDelta("end_turn"),
        MessageStop(),
    ]
    for include in (True, False):
        req = ChatRequest(model="m", messages=[], stream=True, stream_include_usage=include)
        enc = CODECS["openai"].stream_encoder(req)
        out = sse_events(b"".join(enc.encode(e) for e in events))
        assert out[-1]["data"] == "[DONE]"
        assert any(isinstance(e["data"], dict) and e["data"].get("choices") == [] for e in out) is include


def test_render_stream_error_bytes() -> None:
    err = GatewayError("overloaded", "Overloaded")
    assert CODECS["anthropic"].render_stream_error(err) == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert CODECS["openai"].render_stream_error(err) == (
        b'data: {"error":{"message":"Overloaded","type":"server_error","param":null,'
        b'"code":"service_unavailable"}}\n\n'
    )
    assert CODECS["gemini"].render_stream_error(err) == (
        b'data: {"error":{"code":503,"message":"Overloaded","status":"UNAVAILABLE"}}\n\n'
    )


# ---- errors ------------------------------------------------------------------------------------

ERRORS = load(FIX / "errors.json")


@pytest.mark.parametrize("case", ERRORS, ids=[c["name"] for c in ERRORS])
def test_error_mapping(case: dict[str, Any]) -> None:
    err = CODECS[case["dialect"]].parse_error(case["status"], case["body"].encode())
    assert {"kind": err.kind, "status": err.status, "message": err.message, "param": err.param} == case[
        "parsed"
    ]
    for d in DIALECTS:
        codec = CODECS[d]
        assert {"status": codec.error_status(err), "body": codec.render_error(err)} == case["rendered"][d]  # type: ignore[attr-defined]


# ---- unsupported and invalid input ----------------------------------------------------------------


def _simple(**kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=[Message("user", [TextPart("hi")])], **kw)


@pytest.mark.parametrize(
    "target, kw, param",
    [
        ("anthropic", {"n": 2}, "n"),
        ("openai", {"top_k": 5}, "top_k"),
        ("gemini", {"parallel_tool_calls": False}, "parallel_tool_calls"),
        ("anthropic", {"response_format": ResponseFormat("json_object")}, "response_format"),
        ("anthropic", {"seed": 1}, "seed"),
        ("anthropic", {"presence_penalty": 0.1}, "presence_penalty"),
        ("anthropic", {"frequency_penalty": 0.1}, "frequency_penalty"),
    ],
)
def test_unsupported_is_refused_or_dropped(target: str, kw: dict[str, Any], param: str) -> None:
    codec = CODECS[target]
    with pytest.raises(GatewayError) as ei:
        codec.build_request(_simple(**kw), "x", default_max_tokens=10)
    assert (ei.value.status, ei.value.kind, ei.value.param) == (400, "invalid_request", param)
    assert param in ei.value.message
    body = codec.build_request(_simple(**kw), "x", default_max_tokens=10, drop_unsupported=True)
    assert body == codec.build_request(_simple(), "x", default_max_tokens=10)


def test_n_equal_one_is_fine() -> None:
    for d in ("anthropic", "gemini"):
        CODECS[d].build_request(_simple(n=1), "x", default_max_tokens=10)


@pytest.mark.parametrize("target", ["anthropic", "gemini"])
def test_unmapped_field_refused_by_other_dialects(target: str) -> None:
    body = {
        "model": "gpt-5.5",
        "messages": [{"role": "user", "content": "hi"}],
        "logprobs": True,
        "top_logprobs": 3,
    }
    ir = CODECS["openai"].parse_request(body)
    assert ir.unmapped == ["logprobs", "top_logprobs"]
    with pytest.raises(GatewayError) as ei:
        CODECS[target].build_request(ir, "x", default_max_tokens=10)
    assert ei.value.param == "logprobs"
    dropped = CODECS[target].build_request(ir, "x", default_max_tokens=10, drop_unsupported=True)
    assert "logprobs" not in orjson.dumps(dropped).decode()
    same = CODECS["openai"].build_request(ir, "x", default_max_tokens=10)
    assert (same["logprobs"], same["top_logprobs"]) == (True, 3)


def test_unmapped_content_part_refused_even_by_same_dialect() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "transcribe"},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            }
        ],
    }
    ir = CODECS["openai"].parse_request(body)
    assert ir.unmapped == ["messages[0].content[1]"]
    for d in DIALECTS:  # the audio is not in the IR: rebuilding would lose it
        with pytest.raises(GatewayError):
            CODECS[d].build_request(ir, "x", default_max_tokens=10)


def test_invalid_tool_arguments_name_the_field() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("user", [TextPart("hi")]),
            Message("assistant", [ToolCallPart("c1", "f", "{not json")]),
            Message("tool", [ToolResultPart("c1", [TextPart("ok")], "f")]),
        ],
    )
    for d in ("anthropic", "gemini"):
        with pytest.raises(GatewayError) as ei:
            CODECS[d].build_request(req, "x", default_max_tokens=10)
        assert (ei.value.status, ei.value.param) == (400, "messages[1].content[0].arguments")
    assert (
        CODECS["openai"].build_request(req, "x", default_max_tokens=10)["messages"][1]["tool_calls"][0][
            "function"
        ]["arguments"]
        == "{not json"
    )


def test_tool_result_without_name_gets_it_from_the_call() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("user", [TextPart("hi")]),
            Message("assistant", [ToolCallPart("c1", "lookup", "{}")]),
            Message("tool", [ToolResultPart("c1", [TextPart("42")])]),
        ],
    )
    body = CODECS["gemini"].build_request(req, "x", default_max_tokens=10)
    assert body["contents"][2]["parts"][0]["functionResponse"] == {
        "id": "c1",
        "name": "lookup",
        "response": {"result": "42"},
    }


@pytest.mark.parametrize(
    "dialect, body, param",
    [
        ("openai", [], None),
        ("openai", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("openai", {"model": "m"}, "messages"),
        ("openai", {"model": "m", "messages": []}, "messages"),
        ("openai", {"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            "openai",
            {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "wizard"}]},
            "messages[1].role",
        ),
        (
            "openai",
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "nope", "content": "r"},
                ],
            },
            "messages[1].tool_call_id",
        ),
        (
            "openai",
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
        ),
        (
            "openai",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        (
            "openai",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True},
            "max_tokens",
        ),
        ("openai", {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
        (
            "openai",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "maybe"},
            "tool_choice",
        ),
        (
            "openai",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools[0].function",
        ),
        (
            "openai",
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}],
                    }
                ],
            },
            "messages[0].content[0].image_url.url",
        ),
        ("anthropic", {"model": "m", "max_tokens": 5}, "messages"),
        ("anthropic", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("anthropic", {"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            "anthropic",
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}],
                    }
                ],
            },
            "messages[0].content[0].tool_use_id",
        ),
        ("anthropic", {"model": "m", "messages": [{"role": "user", "content": "x"}], "system": 3}, "system"),
        (
            "anthropic",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "output_config": {"effort": [1]}},
            "output_config.effort",
        ),
        (
            "anthropic",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "x"}},
            "tool_choice.type",
        ),
        ("gemini", {"contents": [{"parts": [{"text": "x"}]}], "__no_model__": True}, "model"),
        ("gemini", {}, "contents"),
        ("gemini", {"contents": []}, "contents"),
        ("gemini", {"contents": [{"role": "user", "parts": "x"}]}, "contents[0].parts"),
        ("gemini", {"contents": [{"role": "bot", "parts": []}]}, "contents[0].role"),
        (
            "gemini",
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {"result": 1}}}],
                    }
                ]
            },
            "contents[0].parts[0].functionResponse.name",
        ),
        (
            "gemini",
            {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"topK": 1.5}},
            "generationConfig.topK",
        ),
    ],
)
def test_invalid_input_names_the_field(dialect: str, body: Any, param: str | None) -> None:
    model = None if isinstance(body, dict) and body.pop("__no_model__", False) else "gemini-x"
    with pytest.raises(GatewayError) as ei:
        get_codec(dialect).parse_request(body, model)
    assert (ei.value.status, ei.value.kind, ei.value.param) == (400, "invalid_request", param)


@pytest.mark.parametrize(
    ("key", "field"), [("topK", "top_k"), ("maxOutputTokens", "max_tokens"), ("seed", "seed")]
)
def test_gemini_integers_written_as_floats(key: str, field: str) -> None:
    """The google-genai SDK types ``top_k`` as a float and sends ``40.0``; protobuf's JSON parser
    (the real API's) reads an integral float into an integer field, so the gateway does too (it
    refused every SDK request with ``top_k``; found by the agent corpus). A fraction stays a 400."""
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {key: 40.0}}
    req = get_codec("gemini").parse_request(body, "gemini-x")
    assert getattr(req, field) == 40 and type(getattr(req, field)) is int


def test_get_codec_unknown() -> None:
    with pytest.raises(GatewayError):
        get_codec("cohere")


# ---- same-dialect pass-through helpers ------------------------------------------------------------


def test_usage_of_and_rename_model() -> None:
    oa = CODECS["openai"]
    chunk = {
        "id": "c",
        "model": "gpt-4o-2024",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}},
    }
    u = oa.usage_of(chunk)
    assert u is not None and (u.input_tokens, u.output_tokens, u.cached_input_tokens) == (10, 2, 4)
    assert oa.usage_of({"choices": [], "usage": None}) is None
    assert oa.rename_model(chunk, "alias") and chunk["model"] == "alias"
    assert not oa.rename_model({"choices": []}, "alias")

    an = CODECS["anthropic"]
    start = {
        "type": "message_start",
        "message": {
            "model": "claude-x",
            "usage": {
                "input_tokens": 5,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
                "output_tokens": 1,
            },
        },
    }
    u = an.usage_of(start)
    assert u is not None and (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (125, 100, 20)
    assert an.rename_model(start, "alias") and start["message"]["model"] == "alias"
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}
    u = an.usage_of(delta)
    assert u is not None and u.output_tokens == 42
    assert an.usage_of({"type": "ping"}) is None
    assert not an.rename_model({"type": "content_block_stop", "index": 0}, "alias")
    msg = {"type": "message", "model": "claude-x", "usage": {"input_tokens": 1, "output_tokens": 2}}
    assert an.rename_model(msg, "alias") and msg["model"] == "alias"

    ge = CODECS["gemini"]
    body = {
        "modelVersion": "gemini-3.5-flash",
        "usageMetadata": {
            "promptTokenCount": 7,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 2,
            "cachedContentTokenCount": 5,
        },
    }
    u = ge.usage_of(body)
    assert u is not None and (u.input_tokens, u.output_tokens, u.cached_input_tokens) == (7, 5, 5)
    assert ge.rename_model(body, "alias") and body["modelVersion"] == "alias"


def test_request_paths() -> None:
    assert CODECS["openai"].request_path("gpt-5.5", True) == "/chat/completions"
    assert CODECS["anthropic"].request_path("claude", False) == "/v1/messages"
    assert (
        CODECS["gemini"].request_path("gemini-3.5-flash", False)
        == "/v1beta/models/gemini-3.5-flash:generateContent"
    )
    assert CODECS["gemini"].request_path("models/gemini-3.5-flash", True) == (
        "/v1beta/models/gemini-3.5-flash:streamGenerateContent?alt=sse"
    )
