"""The Bedrock Converse codec and its event-stream framing, without the stack.

- every client request fixture (``fixtures/codecs/requests``) built for a Bedrock
  backend, against ``fixtures/codecs/bedrock_requests.json``, and rebuilt from what
  it built (the failover stage re-parses the primary's body);
- what Converse cannot say is refused naming the client's field (or dropped);
- event-stream decoding gives the same events however the bytes are cut
  (every single cut point, then random multi-cuts: hypothesis), a corrupt frame is a
  502 wherever it is cut, a cut stream ends in an error, exceptions map to statuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext_proc.dialects import CODECS, DIALECTS
from ext_proc.dialects.bedrock_converse.eventstream import EventStreamReader
from ext_proc.errors import GatewayError
from ext_proc.translation.ir import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    ImagePart,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    ReasoningPart,
    ResponseFormat,
    StreamError,
    StreamEvent,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)
from gateway_tools.mocks.bedrock import _event, _exception, _frame

FIX = Path(__file__).parent / "fixtures" / "codecs"
BEDROCK = CODECS["bedrock"]
UPSTREAM = "upstream-model"
DEFAULT_MAX = 4096


# ---- request fixtures, built for Bedrock ------------------------------------------------------

EXPECTED = orjson.loads((FIX / "bedrock_requests.json").read_bytes())
REQUESTS = sorted((FIX / "requests").glob("*.json"))


def test_every_request_fixture_has_a_bedrock_expectation() -> None:
    assert sorted(EXPECTED) == [p.stem for p in REQUESTS]


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_request_fixture_for_bedrock(path: Path) -> None:
    case = orjson.loads(path.read_bytes())
    ir = CODECS[case["dialect"]].parse_request(
        case["body"], case.get("path_model"), case.get("path_stream", False)
    )
    want = EXPECTED[path.stem]
    route = BEDROCK.request_path(UPSTREAM, ir.stream)
    if "error" in want:
        with pytest.raises(GatewayError) as ei:
            BEDROCK.build_request(ir, UPSTREAM, default_max_tokens=DEFAULT_MAX)
        assert {"status": ei.value.status, "kind": ei.value.kind, "param": ei.value.param} == want["error"]
        body = BEDROCK.build_request(ir, UPSTREAM, default_max_tokens=DEFAULT_MAX, drop_unsupported=True)
        assert {"path": route, "body": body} == want["dropped"]
    else:
        body = BEDROCK.build_request(ir, UPSTREAM, default_max_tokens=DEFAULT_MAX)
        assert {"path": route, "body": body} == want
    # What the gateway built parses back to an IR that builds the same body (failover re-translation).
    again = BEDROCK.parse_request(orjson.loads(orjson.dumps(body)), UPSTREAM, ir.stream)
    assert again.unmapped == []
    assert BEDROCK.build_request(again, UPSTREAM, default_max_tokens=DEFAULT_MAX) == body


def test_request_paths_encode_the_model_id() -> None:
    assert BEDROCK.request_path("anthropic.claude-3-5-sonnet-20240620-v1:0", False) == (
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6"
    assert BEDROCK.request_path(arn, True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-6"
        "/converse-stream"
    )


def _simple(**kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=[Message("user", [TextPart("hi")])], **kw)


@pytest.mark.parametrize(
    "kw, param",
    [
        ({"n": 2}, "n"),
        ({"seed": 7}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"response_format": ResponseFormat("json_object")}, "response_format"),
    ],
)
def test_unexpressible_is_refused_or_dropped(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as ei:
        BEDROCK.build_request(_simple(**kw), "x", default_max_tokens=10)
    assert (ei.value.status, ei.value.kind, ei.value.param) == (400, "invalid_request", param)
    assert f"'{param}'" in ei.value.message
    dropped = BEDROCK.build_request(_simple(**kw), "x", default_max_tokens=10, drop_unsupported=True)
    assert dropped == BEDROCK.build_request(_simple(), "x", default_max_tokens=10)


def test_user_outside_request_metadata_alphabet_is_left_out() -> None:
    """requestMetadata values have a restricted alphabet; the end user only tags the invocation,
    so one Converse cannot take is left out rather than the request refused."""
    body = BEDROCK.build_request(_simple(user="alice\u00e9@example.com"), "x", default_max_tokens=10)
    assert "requestMetadata" not in body
    assert body == BEDROCK.build_request(_simple(), "x", default_max_tokens=10)


def test_refusals_name_the_clients_own_field() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    with pytest.raises(GatewayError) as ei:
        BEDROCK.build_request(CODECS["openai"].parse_request(body), "x", default_max_tokens=10)
    assert ei.value.param == "parallel_tool_calls"
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"responseMimeType": "application/json"},
    }
    with pytest.raises(GatewayError) as ei:
        BEDROCK.build_request(CODECS["gemini"].parse_request(body, "g"), "x", default_max_tokens=10)
    assert ei.value.param == "generationConfig.responseMimeType"


def test_url_images_are_refused_bytes_are_sent() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message(
                "user",
                [
                    TextPart("look"),
                    ImagePart(media_type="image/png", data="iVBORw0KGgo="),
                    ImagePart(url="https://example.com/cat.png"),
                ],
            )
        ],
    )
    with pytest.raises(GatewayError) as ei:
        BEDROCK.build_request(req, "x", default_max_tokens=10)
    assert ei.value.param == "messages[0].content[2]"
    body = BEDROCK.build_request(req, "x", default_max_tokens=10, drop_unsupported=True)
    assert body["messages"][0]["content"] == [
        {"text": "look"},
        {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
    ]


def test_tool_choice_none_without_history_declares_no_tools() -> None:
    tools = [Tool("f", "does f", {"type": "object"})]
    body = BEDROCK.build_request(
        _simple(tools=tools, tool_choice=ToolChoice("none")), "x", default_max_tokens=10
    )
    assert "toolConfig" not in body
    history = ChatRequest(
        model="m",
        tools=tools,
        tool_choice=ToolChoice("none"),
        messages=[
            Message("user", [TextPart("hi")]),
            Message("assistant", [ToolCallPart("t1", "f", "{}")]),
            Message("tool", [ToolResultPart("t1", [TextPart("ok")], "f")]),
        ],
    )
    with pytest.raises(GatewayError) as ei:
        BEDROCK.build_request(history, "x", default_max_tokens=10)
    assert ei.value.param == "tool_choice"
    dropped = BEDROCK.build_request(history, "x", default_max_tokens=10, drop_unsupported=True)
    assert dropped["toolConfig"] == {
        "tools": [
            {"toolSpec": {"name": "f", "description": "does f", "inputSchema": {"json": {"type": "object"}}}}
        ]
    }


def test_tool_history_needs_declared_tools() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("user", [TextPart("hi")]),
            Message("assistant", [ToolCallPart("t1", "f", "{}")]),
            Message("tool", [ToolResultPart("t1", [TextPart("ok")], "f")]),
        ],
    )
    with pytest.raises(GatewayError) as ei:
        BEDROCK.build_request(req, "x", default_max_tokens=10)
    assert (ei.value.status, ei.value.param) == (400, "tools")


def test_sampling_top_k_user_and_schema_land_where_converse_takes_them() -> None:
    req = _simple(
        max_tokens=7,
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop=["END"],
        user="user-1",
        response_format=ResponseFormat("json_schema", {"type": "object"}, "answer"),
    )
    body = BEDROCK.build_request(req, "x", default_max_tokens=10)
    assert body["inferenceConfig"] == {
        "maxTokens": 7,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["additionalModelRequestFields"] == {"top_k": 40}
    assert body["requestMetadata"] == {"user": "user-1"}
    assert body["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            # Objects closed, as Claude's structured outputs require.
            "structure": {
                "jsonSchema": {"schema": '{"type":"object","additionalProperties":false}', "name": "answer"}
            },
        }
    }
    assert BEDROCK.build_request(_simple(), "x", default_max_tokens=10)["inferenceConfig"] == {
        "maxTokens": 10
    }


def test_bedrock_body_keeps_what_only_bedrock_says_for_bedrock() -> None:
    """Same-dialect failover (Bedrock primary, Bedrock fallback) re-inserts fields the IR cannot carry;
    another dialect refuses them. Reasoning is the IR's (docs/reasoning.md): Claude's signed
    reasoning goes back to Bedrock and Anthropic, its thinking settings translate; a cache point
    in history carries no text: skipped."""
    body = {
        "messages": [
            {"role": "user", "content": [{"text": "hi"}, {"cachePoint": {"type": "default"}}]},
            {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                    {"text": "hello"},
                ],
            },
            {"role": "user", "content": [{"text": "think harder"}]},
        ],
        "inferenceConfig": {"maxTokens": 4096},
        "additionalModelRequestFields": {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 2048}},
        "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"},
    }
    ir = BEDROCK.parse_request(body, "model-a")
    assert ir.top_k == 5
    assert [(m.role, [p.text for p in m.parts if isinstance(p, TextPart)]) for m in ir.messages] == [
        ("user", ["hi"]),
        ("assistant", ["hello"]),
        ("user", ["think harder"]),
    ]
    assert ir.messages[1].parts[0] == ReasoningPart("hmm", "s")
    assert sorted(ir.unmapped) == ["guardrailConfig"]
    again = BEDROCK.build_request(ir, "model-b", default_max_tokens=10)
    assert again["additionalModelRequestFields"] == body["additionalModelRequestFields"]
    assert again["guardrailConfig"] == body["guardrailConfig"]
    assert again["messages"][1]["content"][0] == body["messages"][1]["content"][0]
    with pytest.raises(GatewayError) as ei:
        CODECS["anthropic"].build_request(ir, "claude", default_max_tokens=10)
    assert ei.value.param == "guardrailConfig"
    ant = CODECS["anthropic"].build_request(ir, "claude", default_max_tokens=10, drop_unsupported=True)
    assert ant["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert ant["messages"][1]["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "s"}
    gem = CODECS["gemini"].build_request(ir, "g", default_max_tokens=10, drop_unsupported=True)
    assert all(not p.get("thought") for c in gem["contents"] for p in c["parts"])  # not Gemini's


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"text": "x", "image": {}}]}]}, "messages[0].content[0]"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]}
                ]
            },
            "messages[0].content[0].image.format",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "nope", "content": []}}]}
                ]
            },
            "messages[0].content[0].toolResult.toolUseId",
        ),
        (
            {
                "messages": [{"role": "user", "content": [{"text": "x"}]}],
                "inferenceConfig": {"maxTokens": "ten"},
            },
            "maxTokens",
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}], "toolConfig": {"tools": "f"}},
            "toolConfig.tools",
        ),
    ],
)
def test_invalid_bedrock_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as ei:
        BEDROCK.parse_request(body, "m")
    assert (ei.value.status, ei.value.kind, ei.value.param) == (400, "invalid_request", param)


def test_usage_counts_cache_reads_and_writes_as_input() -> None:
    u = BEDROCK.usage_of(
        {
            "usage": {
                "inputTokens": 10,
                "outputTokens": 3,
                "totalTokens": 1213,
                "cacheReadInputTokens": 1000,
                "cacheWriteInputTokens": 200,
            }
        }
    )
    assert u == Usage(1210, 3, 1000, 200)
    assert BEDROCK.usage_of({"metrics": {"latencyMs": 1}}) is None
    assert not BEDROCK.rename_model({"output": {}}, "alias")


@pytest.mark.parametrize("count", ["5", True, -1, 2**64 - 1, 1.5])
def test_a_usage_count_that_is_not_one_is_a_bad_answer(count: Any) -> None:
    """Not taken (a string or 2**64 crashed a client's encoder later) nor read as 0: a 502."""
    with pytest.raises(GatewayError) as ei:
        BEDROCK.usage_of({"usage": {"inputTokens": 1, "outputTokens": count}})
    assert ei.value.status == 502 and "'usage.outputTokens'" in ei.value.message
    with pytest.raises(GatewayError):
        BEDROCK.parse_response({"output": {"message": {"content": []}}, "usage": {"inputTokens": count}})


# ---- event-stream framing -------------------------------------------------------------------------


def decode(chunks: list[bytes]) -> list[StreamEvent]:
    reader = EventStreamReader()
    dec = BEDROCK.stream_decoder()
    out: list[StreamEvent] = []
    for c in chunks:
        for ev in reader.feed(c):
            out += dec.feed(ev)
    for ev in reader.close():
        out += dec.feed(ev)
    return out + dec.close()


def _ids(events: list[StreamEvent]) -> list[StreamEvent]:
    """Message ids are made up per stream: compare without them."""
    return [MessageStart("", e.model, e.usage) if isinstance(e, MessageStart) else e for e in events]


words = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12), min_size=1, max_size=5
)


@st.composite
def converse_streams(draw: st.DrawFn) -> bytes:
    """A ConverseStream as the service sends it (frames built by the mock's own encoder)."""
    frames = [_event("messageStart", {"role": "assistant"})]
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "tool", "reasoning"]))
        if kind == "tool":
            frames.append(
                _event(
                    "contentBlockStart",
                    {
                        "contentBlockIndex": index,
                        "start": {"toolUse": {"toolUseId": f"tooluse_{index}", "name": "lookup"}},
                    },
                )
            )
            for piece in draw(words):
                frames.append(
                    _event(
                        "contentBlockDelta",
                        {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}},
                    )
                )
        else:
            for piece in draw(words):
                delta = {"text": piece} if kind == "text" else {"reasoningContent": {"text": piece}}
                frames.append(_event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        frames.append(_event("contentBlockStop", {"contentBlockIndex": index}))
    if draw(st.integers(0, 3)) == 0:
        frames.append(
            _exception(
                draw(
                    st.sampled_from(
                        ["throttlingException", "serviceUnavailableException", "validationException"]
                    )
                ),
                "stop",
            )
        )
    else:
        frames.append(
            _event(
                "messageStop",
                {
                    "stopReason": draw(
                        st.sampled_from(
                            ["end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened"]
                        )
                    )
                },
            )
        )
        frames.append(
            _event(
                "metadata",
                {
                    "usage": {"inputTokens": draw(st.integers(0, 99)), "outputTokens": 5, "totalTokens": 9},
                    "metrics": {"latencyMs": 3},
                },
            )
        )
    return b"".join(frames)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=converse_streams(), data=st.data())
def test_decoding_is_the_same_across_every_chunk_boundary(raw: bytes, data: st.DataObject) -> None:
    whole = _ids(decode([raw]))
    assert isinstance(whole[0], MessageStart)
    assert isinstance(whole[-1], MessageStop | StreamError)
    for cut in range(1, len(raw)):  # every single boundary, inside preludes, headers, payloads and CRCs
        assert _ids(decode([raw[:cut], raw[cut:]])) == whole
    # Drawn independently of len(raw) (frames may differ in length from one draw to its replay).
    cuts = sorted({c % (len(raw) + 1) for c in data.draw(st.sets(st.integers(0, 1 << 20), max_size=30))})
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert _ids(decode(pieces)) == whole
    assert _ids(decode([bytes([b]) for b in raw])) == whole  # one byte at a time


@settings(max_examples=30, deadline=None)
@given(raw=converse_streams(), where=st.integers(0, 10_000), cut=st.integers(0, 10_000))
def test_a_corrupt_frame_is_a_502_wherever_the_bytes_are_cut(raw: bytes, where: int, cut: int) -> None:
    bad = bytearray(raw)
    bad[where % len(bad)] ^= 0x5A
    cut %= len(bad) + 1
    reader = EventStreamReader()
    with pytest.raises(GatewayError) as ei:
        reader.feed(bytes(bad[:cut]))
        reader.feed(bytes(bad[cut:]))
    assert (ei.value.kind, ei.value.status) == ("api_error", 502)
    assert "malformed event-stream frame" in ei.value.message


def test_a_frame_with_intact_checksums_but_an_unknown_header_type_is_a_502() -> None:
    import struct
    from binascii import crc32

    name = b":event-type"
    headers = bytes([len(name)]) + name + bytes([42]) + b"\x00\x01x"  # value type 42 does not exist
    prelude = struct.pack(">II", 16 + len(headers) + 2, len(headers))
    prelude += struct.pack(">I", crc32(prelude))
    message = prelude + headers + b"{}"
    with pytest.raises(GatewayError) as ei:
        EventStreamReader().feed(message + struct.pack(">I", crc32(message)))
    assert ei.value.status == 502 and "malformed event-stream frame" in ei.value.message


def test_text_blocks_start_with_their_first_delta_and_reasoning_is_a_reasoning_block() -> None:
    raw = b"".join(
        [
            _event("messageStart", {"role": "assistant"}),
            _event(
                "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}}
            ),
            _event(
                "contentBlockDelta",
                {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}},
            ),
            _event("contentBlockStop", {"contentBlockIndex": 0}),
            _event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
            _event("contentBlockStop", {"contentBlockIndex": 1}),
            _event("messageStop", {"stopReason": "end_turn"}),
            _event(
                "metadata",
                {
                    "usage": {"inputTokens": 4, "outputTokens": 1, "totalTokens": 5},
                    "metrics": {"latencyMs": 1},
                },
            ),
        ]
    )
    assert _ids(decode([raw]))[1:] == [
        BlockStart(0, "reasoning", origin="anthropic"),
        BlockDelta(0, "hm"),
        BlockDelta(0, "", "sig", "anthropic"),
        BlockStop(0),
        BlockStart(1, "text"),
        BlockDelta(1, "Hi"),
        BlockStop(1),
        MessageDelta("end_turn", None, Usage(4, 1)),
        MessageStop(),
    ]


@pytest.mark.parametrize(
    "exception, kind, status",
    [
        ("throttlingException", "rate_limit", 429),
        ("validationException", "invalid_request", 400),
        ("serviceUnavailableException", "overloaded", 503),
        ("modelNotReadyException", "overloaded", 503),
        ("internalServerException", "api_error", 500),
        ("modelStreamErrorException", "api_error", 502),
        ("somethingNewException", "api_error", 502),
    ],
)
def test_exception_frames_map_to_statuses(exception: str, kind: str, status: int) -> None:
    events = decode([_event("messageStart", {"role": "assistant"}), _exception(exception, "it failed")])
    assert isinstance(events[-1], StreamError)
    err = events[-1].error
    assert (err.kind, err.status, err.message) == (kind, status, "it failed")


def test_error_message_frames_are_errors_too() -> None:
    frame = _frame(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
    )
    [event] = decode([frame])
    assert isinstance(event, StreamError) and event.error.message == "boom" and event.error.status == 502


def test_a_cut_stream_is_an_error_a_stream_without_its_usage_event_is_not() -> None:
    start = _event("messageStart", {"role": "assistant"})
    delta = _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
    cut = decode([start, delta[:-3]])  # ends inside a frame
    assert isinstance(cut[-1], StreamError)
    assert (cut[-1].error.status, cut[-1].error.message) == (502, "upstream stream ended unexpectedly")
    whole = decode([start, delta, _event("messageStop", {"stopReason": "max_tokens"})])
    assert isinstance(whole[-1], MessageStop)
    assert whole[-2] == MessageDelta("max_tokens", None, None)


def test_encoder_and_decoder_agree() -> None:
    """Converse streams carry no model name (the translator sets the client's)."""
    events: list[StreamEvent] = [
        MessageStart("m", ""),
        BlockStart(0, "text"),
        BlockDelta(0, "Hel"),
        BlockDelta(0, "lo"),
        BlockStop(0),
        BlockStart(1, "tool_call", "t1", "f"),
        BlockDelta(1, '{"a":'),
        BlockDelta(1, "1}"),
        BlockStop(1),
        MessageDelta("tool_use", None, Usage(30, 4, 20, 5)),
        MessageStop(),
    ]
    enc = BEDROCK.stream_encoder(ChatRequest(model="x", messages=[]))
    raw = b"".join(enc.encode(e) for e in events)
    assert _ids(decode([raw])) == _ids(events)


def test_the_dialect_names_its_framing() -> None:
    framing = DIALECTS["bedrock"].stream_framing
    assert framing.announced_by("application/vnd.amazon.eventstream")
    assert not framing.announced_by("text/event-stream")
    assert DIALECTS["openai"].stream_framing.announced_by("text/event-stream; charset=utf-8")


# ---- the answer guard reads a held stream with the backend's framing ----------------------------


def _guard(name: str) -> Any:
    from ext_proc.request.answer import AnswerCheck

    d = DIALECTS[name]
    return AnswerCheck(d.codec, f"{name}/m", True, d.stream_framing.content_type, d.stream_framing)


def test_guard_holds_until_past_the_opening_and_fails_an_exception_after_it() -> None:
    from ext_proc.request.answer import PASS, Failed

    start = _event("messageStart", {"role": "assistant"})
    guard = _guard("bedrock")
    assert guard.feed(start[:10], False) is None
    assert guard.feed(start[10:], False) is None  # the opening alone decides nothing
    verdict = guard.feed(_exception("throttlingException", "Too many requests"), False)
    assert isinstance(verdict, Failed) and (verdict.error.kind, verdict.status) == ("rate_limit", 429)
    assert orjson.loads(verdict.body) == {
        "message": "Too many requests"
    }  # the provider's error, for the last attempt
    assert CODECS["bedrock"].parse_error(429, verdict.body).message == "Too many requests"

    delta = _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
    assert _guard("bedrock").feed(start + delta, False) == PASS

    bad = bytearray(start)
    bad[-1] ^= 1
    verdict = _guard("bedrock").feed(bytes(bad), False)
    assert isinstance(verdict, Failed) and verdict.status == 502
    assert CODECS["bedrock"].parse_error(502, verdict.body).kind == "api_error"

    verdict = _guard("bedrock").feed(start, True)  # ended before any content: a failed attempt
    assert isinstance(verdict, Failed) and "upstream stream ended unexpectedly" in verdict.error.message


def test_guard_reads_sse_dialects_as_before() -> None:
    from ext_proc.request.answer import PASS, Failed

    start = b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c","usage":{}}}\n\n'
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    verdict = _guard("anthropic").feed(error, False)
    assert isinstance(verdict, Failed) and verdict.error.kind == "overloaded"
    assert orjson.loads(verdict.body)["error"]["type"] == "overloaded_error"
    guard = _guard("anthropic")
    assert guard.feed(start, False) is None
    verdict = guard.feed(error, False)
    assert isinstance(verdict, Failed) and verdict.error.kind == "overloaded"
    ping = b'event: ping\ndata: {"type":"ping"}\n\n'
    assert _guard("anthropic").feed(start + ping, False) == PASS
