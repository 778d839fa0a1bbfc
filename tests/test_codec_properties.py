"""Property tests: whatever a dialect can express survives a trip through its codec.

- requests: random IR conversation -> ``build_request`` -> JSON bytes ->
  ``parse_request`` gives the same IR, modulo what the dialect cannot keep
  apart (see ``norm_request``);
- responses: random IR response -> ``render_response`` -> ``parse_response``;
- streams: random IR event sequence -> encoder -> bytes cut at random points
  -> the dialect's framing reader (SSE, or Bedrock's event stream) -> decoder
  gives the same content, stop reason and usage.

Every generated feature is one the target dialect supports (``build_request``
never refuses here), so a difference is a real loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ext_proc.dialects import CODECS
from ext_proc.dialects import DIALECTS as DIALECT_OF
from ext_proc.dialects.openai_chat.codec import ANY_JSON_OBJECT, says_json
from ext_proc.errors import GatewayError
from ext_proc.translation.ir import (
    STOP_REASONS,
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Part,
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
from ext_proc.translation.schema import closed

DIALECTS = ["openai", "anthropic", "gemini", "openai_responses", "bedrock"]
# The Responses API has no stop sequences, top_k, seed or penalties (its codec refuses them).
NO_SAMPLING_EXTRAS = ("anthropic", "bedrock", "openai_responses")
UPSTREAM = "up-model"
DEFAULT_MAX = 1000
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies ------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
ids = st.from_regex(r"(call|toolu|fc)_[A-Za-z0-9]{4,12}", fullmatch=True)
json_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(names, json_values, max_size=4).map(lambda d: orjson.dumps(d).decode())

inline_images = st.builds(
    lambda mt, data: ImagePart(media_type=mt, data=data),
    st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]),
    st.from_regex(r"[A-Za-z0-9+/]{4,20}={0,2}", fullmatch=True),
)
images = st.one_of(
    inline_images,
    st.builds(
        lambda name, ext: ImagePart(url=f"https://img.example.com/{name}{ext}"),
        names,
        st.sampled_from([".png", ".jpg", ".webp", ""]),
    ),
)
# Bedrock takes image bytes only (a URL has no Converse equivalent) and a restricted end-user alphabet.
IMAGES = {"bedrock": inline_images}
users = {"bedrock": st.from_regex(r"[a-zA-Z0-9 :_@$#=/+,.-]{1,40}", fullmatch=True)}
schemas = st.builds(
    lambda props: {"type": "object", "properties": {p: {"type": "string"} for p in props}},
    st.lists(names, max_size=3, unique=True),
)


@st.composite
def conversations(draw: st.DrawFn, dialect: str) -> tuple[list[Message], list[Tool]]:
    """user -> (assistant [-> tool results [-> user]])*: always a valid exchange."""
    img = IMAGES.get(dialect, images)
    # Bedrock refuses tool calls in a conversation that declares no tools.
    tools = draw(
        st.lists(
            st.builds(Tool, names, st.none() | texts, schemas),
            min_size=int(dialect == "bedrock"),
            max_size=3,
            unique_by=lambda t: t.name,
        )
    )
    used_ids: set[str] = set()
    msgs = [Message("user", draw(st.lists(texts.map(TextPart) | img, min_size=1, max_size=3)))]
    for _ in range(draw(st.integers(0, 3))):
        parts: list[Part] = [TextPart(t) for t in draw(st.lists(texts, max_size=2))]
        calls = []
        for _ in range(draw(st.integers(0 if parts else 1, 3))):
            cid = draw(ids.filter(lambda i: i not in used_ids))
            used_ids.add(cid)
            calls.append(ToolCallPart(cid, draw(names), draw(arguments)))
        msgs.append(Message("assistant", parts + calls))
        if calls:
            results: list[Part] = []
            for c in calls:
                content: list[Any] = [TextPart(t) for t in draw(st.lists(texts, max_size=2))]
                if dialect in ("anthropic", "bedrock") and draw(st.booleans()):
                    content.append(draw(img))  # only Anthropic and Bedrock tool results carry images
                results.append(ToolResultPart(c.id, content, c.name, draw(st.booleans())))
            msgs.append(Message("tool", draw(st.permutations(results))))
            if draw(st.booleans()):
                msgs.append(Message("user", [TextPart(draw(texts))]))
        else:
            msgs.append(Message("user", draw(st.lists(texts.map(TextPart) | img, min_size=1, max_size=2))))
    return msgs, tools


@st.composite
def requests(draw: st.DrawFn, dialect: str) -> ChatRequest:
    msgs, tools = draw(conversations(dialect))
    opt = st.none()
    stream = draw(st.booleans())
    # Several candidates: OpenAI and Gemini, not streamed (an IR stream carries one).
    several = dialect in ("openai", "gemini") and not stream
    floats = st.floats(0, 2, allow_nan=False, allow_infinity=False)
    choice_modes = ["auto", "none", "required"] + (["tool"] if tools else [])
    if dialect == "bedrock":  # no 'none' with tool history (refused); no choice without tools (no toolConfig)
        history = any(isinstance(p, ToolCallPart) for m in msgs for p in m.parts)
        choice_modes = [m for m in choice_modes if not (m == "none" and history)] if tools else []
    mode = draw(st.none() | st.sampled_from(choice_modes)) if choice_modes else None
    tool_choice = (
        None
        if mode is None
        else ToolChoice(mode, draw(st.sampled_from([t.name for t in tools])) if mode == "tool" else None)
    )  # type: ignore[arg-type]
    rf = draw(
        opt
        | st.builds(ResponseFormat, st.just("json_object"))
        | st.builds(lambda s: ResponseFormat("json_schema", s), schemas)
    )
    if dialect in ("anthropic", "bedrock") and rf is not None and rf.type == "json_object":
        rf = None  # Anthropic and Converse take a schema, never "any JSON"
    return ChatRequest(
        model=UPSTREAM,
        messages=msgs,
        system=draw(st.lists(texts.map(TextPart), max_size=2)),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=draw(
            opt | st.booleans() if dialect not in ("gemini", "bedrock") else opt | st.just(True)
        ),
        max_tokens=draw(opt | st.integers(1, 100000)),
        temperature=draw(opt | floats),
        top_p=draw(opt | st.floats(0, 1, allow_nan=False)),
        top_k=draw(opt | st.integers(1, 100)) if dialect not in ("openai", "openai_responses") else None,
        stop=draw(st.lists(texts, max_size=3)) if dialect != "openai_responses" else [],
        seed=draw(opt | st.integers(0, 2**31)) if dialect not in NO_SAMPLING_EXTRAS else None,
        presence_penalty=draw(opt | floats) if dialect not in NO_SAMPLING_EXTRAS else None,
        frequency_penalty=draw(opt | floats) if dialect not in NO_SAMPLING_EXTRAS else None,
        n=draw(opt | st.integers(1, 4)) if several else draw(opt | st.just(1)),
        response_format=rf,
        user=draw(opt | users.get(dialect, texts)) if dialect != "gemini" else None,
        stream=stream,
    )


# ---- normalisation: what each dialect cannot tell apart -------------------------------------


def _norm_parts(parts: list[Any], dialect: str) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append(("text", p.text))
        elif isinstance(p, ImagePart):
            # A URL image's media type only exists in Gemini, where it is guessed.
            out.append(("image", p.media_type if p.data is not None else None, p.data, p.url))
        elif isinstance(p, ToolCallPart):
            out.append(("call", p.id, p.name, orjson.loads(p.arguments)))
        else:
            content = _norm_parts(p.content, dialect)
            if dialect == "gemini":  # functionResponse.response holds one string
                joined = "\n".join(c[1] for c in content)
                content = [("text", joined)] if joined else []
            is_error = p.is_error  # OpenAI's marked in the text (translation/markers.py)
            out.append(("result", p.tool_call_id, p.name, content, is_error))
    return out


def _merge_texts(parts: list[Any]) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        if p[0] == "text" and out and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + p[1])
        else:
            out.append(p)
    return out


def _one_string(result: Any) -> Any:
    """A tool result whose text parts are one string (the Responses API's function_call_output)."""
    kind, call_id, name, content, is_error = result
    joined = "".join(c[1] for c in content)
    return (kind, call_id, name, [("text", joined)] if joined else [], is_error)


def norm_request(req: ChatRequest, dialect: str) -> dict[str, Any]:
    messages: list[tuple[str, list[Any]]] = []
    last = len(req.messages) - 1
    for n, m in enumerate(req.messages):
        parts = _norm_parts(m.parts, dialect)
        if dialect == "bedrock" or (dialect == "anthropic" and m.role == "assistant"):
            # Blank text is rejected by these APIs: left out (and a prefill's trailing whitespace).
            parts = [p for p in parts if p[0] != "text" or p[1].strip()]
            if dialect == "anthropic" and n == last and parts and parts[-1][0] == "text":
                parts[-1] = ("text", parts[-1][1].rstrip())
        if dialect == "openai_responses":
            parts = _merge_texts(parts) if m.role == "assistant" else parts  # one message item per run
            if m.role == "tool":  # a function_call_output's output is one string
                parts = [_one_string(p) for p in parts]
        if not parts and dialect in ("anthropic", "bedrock"):
            continue
        if messages and messages[-1][0] == m.role:
            messages[-1][1].extend(parts)
        else:
            messages.append((m.role, parts))
    tc = req.tool_choice or ToolChoice("auto")
    tools = [(t.name, t.description, t.parameters) for t in req.tools]
    if dialect == "bedrock" and tc.mode == "none":
        tc, tools = ToolChoice("auto"), []  # Converse has no 'none': the tools are not declared
    parallel = req.parallel_tool_calls
    if dialect not in ("openai", "openai_responses") and (parallel is True or tc.mode == "none"):
        parallel = None  # the default; Anthropic's "none" choice has no parallel flag
    rf = req.response_format
    rf_norm = None if rf is None else (rf.type, rf.schema)
    if rf is not None and rf.schema is not None and dialect in ("anthropic", "bedrock"):
        rf_norm = (rf.type, closed(rf.schema))  # their structured outputs take closed objects only
    if rf is not None and rf.type == "json_object" and dialect.startswith("openai") and not says_json(req):
        rf_norm = ("json_schema", ANY_JSON_OBJECT)  # OpenAI's JSON mode needs "json" in the messages
    n = req.n if dialect == "openai" or req.n != 1 else None
    system = [p.text for p in req.system]
    if dialect == "openai_responses" and system:
        system = ["\n\n".join(system)]  # one ``instructions`` string
    return {
        "system": system,
        "messages": messages,
        "tools": tools,
        "tool_choice": (tc.mode, tc.name),
        "parallel_tool_calls": parallel,
        "max_tokens": req.max_tokens
        if req.max_tokens is not None or dialect not in ("anthropic", "bedrock")
        else DEFAULT_MAX,
        "sampling": (
            req.temperature,
            req.top_p,
            req.top_k,
            req.seed,
            req.presence_penalty,
            req.frequency_penalty,
        ),
        "stop": req.stop,
        "n": n,
        "response_format": rf_norm,
        "user": req.user,
        "stream": req.stream,
        # OpenAI backends are always asked for usage; the others always send it (Responses: said).
        "include_usage": req.stream if dialect == "openai" else dialect == "openai_responses",
    }


@pytest.mark.parametrize("dialect", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_request_round_trip(dialect: str, data: st.DataObject) -> None:
    req = data.draw(requests(dialect))
    assume(norm_request(req, dialect)["messages"])  # only blank text: nothing a provider would take
    codec = CODECS[dialect]
    body = orjson.loads(orjson.dumps(codec.build_request(req, UPSTREAM, default_max_tokens=DEFAULT_MAX)))
    back = codec.parse_request(body, UPSTREAM, req.stream)
    assert back.model == UPSTREAM
    assert back.unmapped == []
    got = norm_request(back, dialect)
    got["include_usage"] = back.stream_include_usage
    assert got == norm_request(req, dialect)


# ---- responses ----------------------------------------------------------------------------------


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cached = draw(st.integers(0, 5000))
    write = draw(st.integers(0, 5000))
    return Usage(cached + write + draw(st.integers(0, 5000)), draw(st.integers(0, 5000)), cached, write)


@st.composite
def responses(draw: st.DrawFn) -> ChatResponse:
    content: list[TextPart | ToolCallPart] = []
    seen: set[str] = set()
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            content.append(TextPart(draw(texts)))
        else:
            cid = draw(ids.filter(lambda i: i not in seen))
            seen.add(cid)
            content.append(ToolCallPart(cid, draw(names), draw(arguments)))
    stop = draw(st.sampled_from(STOP_REASONS))
    return ChatResponse(
        id=draw(ids),
        model=draw(names),
        content=content,
        stop_reason=stop,  # type: ignore[arg-type]
        stop_sequence=draw(texts) if stop == "stop_sequence" else None,
        usage=draw(usages()),
    )


# IR stop reason -> what comes back after a trip through each dialect.
STOP_TRIP = {
    "openai": {"stop_sequence": "end_turn", "refusal": "content_filter", "other": "end_turn"},
    "anthropic": {"content_filter": "refusal", "other": "end_turn"},
    "gemini": {"stop_sequence": "end_turn", "tool_use": "end_turn", "refusal": "content_filter"},
    # status completed (incomplete: a token limit or a content filter); tool_use from the calls
    "openai_responses": {
        "stop_sequence": "end_turn",
        "tool_use": "end_turn",
        "refusal": "end_turn",
        "other": "end_turn",
    },
    "bedrock": {"refusal": "content_filter", "other": "end_turn"},
}
KEEPS_CACHE_WRITES = ("anthropic", "bedrock", "openai_responses")
KEEPS_STOP_SEQUENCE = ("anthropic", "bedrock")  # Bedrock: in additionalModelResponseFields
MAKES_UP_IDS = ("bedrock",)  # Converse answers carry neither an id nor a model name
OWN_IDS = ("openai_responses",)  # the gateway's response object has its own id (the model is kept)


def norm_stop(stop: str | None, dialect: str, has_calls: bool) -> str | None:
    stop = STOP_TRIP[dialect].get(stop or "end_turn", stop or "end_turn")
    if dialect in ("gemini", "openai_responses") and stop == "end_turn" and has_calls:
        return "tool_use"  # Gemini says STOP (Responses: completed); a function call means tool_use
    return stop


def norm_usage(u: Usage | None, dialect: str) -> Usage:
    u = u or Usage()
    return u if dialect in KEEPS_CACHE_WRITES else replace(u, cache_write_tokens=0)


def norm_response(resp: ChatResponse, dialect: str) -> dict[str, Any]:
    parts = _norm_parts(resp.content, dialect)
    if dialect == "openai":  # one content string, then the tool calls
        text = "".join(p[1] for p in parts if p[0] == "text")
        parts = ([("text", text)] if text else []) + [p for p in parts if p[0] == "call"]
    has_calls = any(p[0] == "call" for p in parts)
    made_up = dialect in MAKES_UP_IDS
    return {
        "id": None if made_up or dialect in OWN_IDS else resp.id,
        "model": None if made_up else resp.model,
        "content": parts,
        "stop": norm_stop(resp.stop_reason, dialect, has_calls),
        "stop_sequence": resp.stop_sequence
        if dialect in KEEPS_STOP_SEQUENCE and resp.stop_reason == "stop_sequence"
        else None,
        "usage": norm_usage(resp.usage, dialect),
    }


@pytest.mark.parametrize("dialect", DIALECTS)
@SETTINGS
@given(resp=responses())
def test_response_round_trip(dialect: str, resp: ChatResponse) -> None:
    codec = CODECS[dialect]
    body = orjson.loads(orjson.dumps(codec.render_response(resp)))
    back = codec.parse_response(body)
    got = norm_response(back, dialect)
    got["stop"] = norm_stop(back.stop_reason, dialect, any(isinstance(p, ToolCallPart) for p in back.content))
    assert got == norm_response(resp, dialect)


# ---- streams ------------------------------------------------------------------------------------

ERROR_KINDS = [
    "invalid_request",
    "context_length",
    "authentication",
    "permission",
    "not_found",
    "request_too_large",
    "rate_limit",
    "api_error",
    "overloaded",
    "timeout",
]


@st.composite
def fragments(draw: st.DrawFn, whole: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(len(whole) - 1, 1)), max_size=4)))
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True) if whole[a:b]]


@st.composite
def event_streams(draw: st.DrawFn) -> list[StreamEvent]:
    events: list[StreamEvent] = [MessageStart(draw(ids), "client-model", draw(usages()))]
    seen: set[str] = set()
    for index in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            events.append(BlockStart(index, "text"))
            events += [BlockDelta(index, t) for t in draw(st.lists(texts, min_size=1, max_size=3))]
        else:
            cid = draw(ids.filter(lambda i: i not in seen))
            seen.add(cid)
            events.append(BlockStart(index, "tool_call", cid, draw(names)))
            events += [BlockDelta(index, f) for f in draw(fragments(draw(arguments)))]
        events.append(BlockStop(index))
    if draw(st.integers(0, 4)) == 0:  # a stream that breaks, possibly inside a block
        cut = draw(st.integers(1, len(events)))
        message = draw(st.sampled_from(["Overloaded", "internal failure", "slow down"]))
        return [*events[:cut], StreamError(GatewayError(draw(st.sampled_from(ERROR_KINDS)), message))]
    stop = draw(st.sampled_from(STOP_REASONS))
    seq = draw(texts) if stop == "stop_sequence" else None
    return [*events, MessageDelta(stop, seq, draw(usages())), MessageStop()]  # type: ignore[arg-type]


# Error kinds a dialect cannot tell apart.
KIND_TRIP = {
    "openai": {},
    "anthropic": {"context_length": "invalid_request"},
    "gemini": {"context_length": "invalid_request", "request_too_large": "invalid_request"},
    "bedrock": {"context_length": "invalid_request", "request_too_large": "invalid_request"},
    "openai_responses": {},
}
# Dialects that keep text blocks apart (and empty ones): Responses' content parts are blocks.
TEXT_BLOCKS = ("anthropic", "bedrock", "openai_responses")


def collapse(events: list[StreamEvent], dialect: str) -> dict[str, Any]:
    """What a client can observe: blocks with their whole text, the stop, the final usage, an error."""
    blocks: list[list[Any]] = []
    by_index: dict[int, list[Any]] = {}
    out: dict[str, Any] = {"stop": None, "stop_sequence": None, "usage": None, "error": None, "ended": False}
    for e in events:
        if isinstance(e, MessageStart):
            out["id"], out["model"] = e.id, e.model
        elif isinstance(e, BlockStart):
            if e.kind == "text" and blocks and blocks[-1][0] == "text" and dialect not in TEXT_BLOCKS:
                by_index[e.index] = blocks[-1]  # no block boundaries between texts in OpenAI/Gemini
                continue
            block = [e.kind, e.tool_call_id, e.tool_name, "", False]
            blocks.append(block)
            by_index[e.index] = block
        elif isinstance(e, BlockDelta):
            by_index[e.index][3] += e.text
        elif isinstance(e, BlockStop):
            by_index[e.index][4] = True
        elif isinstance(e, MessageDelta):
            out["usage"] = norm_usage(e.usage, dialect)
            out["stop"] = e.stop_reason
            out["stop_sequence"] = e.stop_sequence if dialect == "anthropic" else None
        elif isinstance(e, MessageStop):
            out["ended"] = True
        elif isinstance(e, StreamError):
            kind = e.error.kind
            out["error"] = (KIND_TRIP[dialect].get(kind, kind), e.error.message)
    if dialect not in ("anthropic", "openai_responses"):  # explicit (possibly empty) text blocks
        blocks = [b for b in blocks if b[0] != "text" or b[3]]
    if dialect == "gemini":  # calls are sent whole when they end; arguments are re-serialised
        blocks = [b for b in blocks if b[0] == "text" or b[4]]
        for b in blocks:
            if b[0] == "tool_call":
                b[3] = orjson.loads(b[3])
        if not blocks and not out["ended"]:  # no start event: an id shows only with content
            out.pop("id", None)
            out.pop("model", None)
    if dialect in MAKES_UP_IDS:
        out.pop("id", None)
        out.pop("model", None)
    if dialect in OWN_IDS:
        out.pop("id", None)
    has_calls = any(b[0] == "tool_call" for b in blocks)
    if out["ended"]:
        out["stop"] = norm_stop(out["stop"], dialect, has_calls)
    out["blocks"] = [(b[0], b[1], b[2], b[3]) for b in blocks]
    return out


@pytest.mark.parametrize("dialect", DIALECTS)
@SETTINGS
@given(events=event_streams(), data=st.data())
def test_stream_round_trip(dialect: str, events: list[StreamEvent], data: st.DataObject) -> None:
    codec = CODECS[dialect]
    req = ChatRequest(model="client-model", messages=[], stream=True, stream_include_usage=True)
    enc = codec.stream_encoder(req)
    raw = b"".join(enc.encode(e) for e in events)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(raw)), max_size=10)))
    reader = DIALECT_OF[dialect].stream_framing.reader()
    dec = codec.stream_decoder()
    back: list[StreamEvent] = []
    for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        for sse in reader.feed(raw[a:b]):
            back += dec.feed(sse)
    for sse in reader.close():
        back += dec.feed(sse)
    back += dec.close()
    assert collapse(back, dialect) == collapse(events, dialect)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["topK", "maxOutputTokens", "seed", "candidateCount"]),
    st.one_of(
        st.integers(-(2**31), 2**31 - 1),
        st.floats(allow_nan=False, allow_infinity=False, min_value=-(2**31), max_value=2**31 - 1),
    ),
)
def test_gemini_integer_fields_take_integral_numbers_only(key: str, value: float) -> None:
    """An integer field of generationConfig takes any integral number (``40`` or ``40.0``, as
    protobuf's JSON parser does) and refuses a fraction with a 400 naming the field."""
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {key: value}}
    codec = CODECS["gemini"]
    if float(value).is_integer():
        req = codec.parse_request(body, "gemini-x")
        got = {
            "topK": req.top_k,
            "maxOutputTokens": req.max_tokens,
            "seed": req.seed,
            "candidateCount": req.n,
        }[key]
        assert got == int(value) and type(got) is int
    else:
        with pytest.raises(GatewayError) as ei:
            codec.parse_request(body, "gemini-x")
        assert ei.value.status == 400 and ei.value.param == f"generationConfig.{key}"
