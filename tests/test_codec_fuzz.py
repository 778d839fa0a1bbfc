"""Fuzzing every codec: whatever a client or a provider sends, only ``GatewayError`` escapes.

A codec reads JSON written by someone else: a client (a wrong type there is a
400 naming the field: the tests hold client refusals to 4xx) or a provider (a
wrong type there is the provider's fault: a failed attempt, 502). Anything else escaping a codec -- a
``TypeError``, ``KeyError``, ``AttributeError``, an ``orjson`` error on the
way out -- would reach the client as a 500, an empty body or a reset.

Inputs: the golden fixtures in ``tests/fixtures/codecs`` mutated (a wrong type
at any path, huge integers, deep nesting, missing keys, dropped or repeated
stream events) and random JSON trees; for the stream decoders also arbitrary
bytes. Every path a codec offers is driven: request parse and build (plus the
dialect hooks the request phase calls before parsing), response parse and
render, usage and model rename, error parse and render, stream decode and
encode, and the same-dialect stream pass-through hooks.

Budget: ``derandomize=True`` makes CI reproducible; ``max_examples`` keeps the
file near a minute and a half on two busy cores (all five codecs).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext_proc.admission import estimate
from ext_proc.dialects import DIALECTS, ClientCall
from ext_proc.errors import GatewayError
from ext_proc.translation.fields import MAX_DEPTH, check_depth
from ext_proc.translation.ir import ChatRequest, StreamError
from ext_proc.translation.sse import SSEReader

FIX = Path(__file__).parent / "fixtures" / "codecs"
ALL = list(DIALECTS)
# CODEC_FUZZ_EXAMPLES=5000 digs deeper (minutes); CI runs the default.
SETTINGS = settings(
    max_examples=int(os.environ.get("CODEC_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def _events(raw: bytes, dialect: str) -> list[tuple[str | None, str]]:
    """A stream fixture's events, read in its dialect's framing (SSE, or Bedrock's event stream):
    the fuzz re-frames them as SSE, which every decoder is fed through ``SSEEvent``s."""
    reader = DIALECTS[dialect].stream_framing.reader()
    return [(e.event, e.data) for e in reader.feed(raw) + reader.close()]


def _dialect_of(path: Path) -> str:
    """The dialect a fixture's file name starts with (the longest: ``openai_responses_*`` is not ``openai``)."""
    return max((d for d in ALL if path.stem.startswith(d + "_")), key=len)


REQUESTS: dict[str, list[dict[str, Any]]] = {d: [] for d in ALL}
for _p in sorted((FIX / "requests").glob("*.json")):
    _case = _load(_p)
    REQUESTS[_case["dialect"]].append(_case)
# Bedrock takes no client requests, but the failover stage re-parses the Converse bodies the
# gateway built: the fixtures' expected Converse bodies are its requests.
_BEDROCK_BUILT = _load(FIX / "bedrock_requests.json")
for _name in ("anthropic_documents", "anthropic_thinking_history", "openai_tools_multiturn"):
    _built = _BEDROCK_BUILT[_name].get("body") or _BEDROCK_BUILT[_name]["dropped"]["body"]
    REQUESTS["bedrock"].append({"dialect": "bedrock", "body": _built, "path_model": "upstream-model"})
RESPONSES: dict[str, list[Any]] = {d: [] for d in ALL}
for _p in sorted((FIX / "responses").glob("*.json")):
    _case = _load(_p)
    RESPONSES[_case["dialect"]].append(_case["body"])
STREAMS: dict[str, list[list[tuple[str | None, str]]]] = {d: [] for d in ALL}
for _p in sorted([*(FIX / "streams").glob("*.sse"), *(FIX / "streams").glob("*.eventstream")]):
    STREAMS[_dialect_of(_p)].append(_events(_p.read_bytes(), _dialect_of(_p)))
# Several answers streamed together (n / candidateCount 2), interleaved, as the mocks send them.
_TWO_OPENAI = [
    {"id": "c", "model": "o", "choices": [{"index": k, "delta": {"content": t}}]}
    for k, t in ((0, "a"), (1, "b"))
] + [
    {"id": "c", "model": "o", "choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
    {"id": "c", "model": "o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c", "model": "o", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
]
STREAMS["openai"].append([(None, json.dumps(c)) for c in _TWO_OPENAI] + [(None, "[DONE]")])
_TWO_GEMINI = [
    {"candidates": [{"content": {"parts": [{"text": t}]}, "index": k} for k, t in ((0, "a"), (1, "b"))]},
    {
        "candidates": [
            {"content": {"parts": [{"text": "c"}]}, "finishReason": "STOP", "index": k} for k in (1, 0)
        ]
    },
]
STREAMS["gemini"].append([(None, json.dumps(c)) for c in _TWO_GEMINI])
ERRORS: dict[str, list[tuple[int, bytes]]] = {d: [] for d in ALL}
for _case in _load(FIX / "errors.json"):
    ERRORS[_case["dialect"]].append((_case["status"], _case["body"].encode()))
# Dialects with fixtures of every kind: every codec but the cloud dialects', which reuse these
# codecs (Vertex, Azure). Bedrock's event-stream framing is fuzzed by test_bedrock_codec; here its
# decoder is fed the decoded events, re-framed as SSE.
NAMES = [d for d in ALL if all(fx[d] for fx in (REQUESTS, RESPONSES, STREAMS, ERRORS))]


def _words(value: Any, out: set[str]) -> set[str]:
    """Every key and string in a fixture: mutations that reuse them reach the codecs' branches."""
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            _words(v, out)
    elif isinstance(value, list):
        for v in value:
            _words(v, out)
    elif isinstance(value, str) and len(value) < 40:
        out.add(value)
    return out


_WORDS: set[str] = set()
for _d in NAMES:
    _words([c["body"] for c in REQUESTS[_d]], _WORDS)
    _words(RESPONSES[_d], _WORDS)
    for _stream in STREAMS[_d]:
        for _name, _data in _stream:
            _WORDS.update({_name or "", _data[:30]})
WORDS = sorted(_WORDS)

# ---- strategies ----------------------------------------------------------------------------

# What orjson can hand the gateway: integers up to 64 bits, finite floats.
HUGE = [2**63 - 1, 2**64 - 1, -(2**63), 1.8446744073709552e19, 1e308, -1e308, 2**53 + 1]
keys = st.sampled_from(WORDS) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(HUGE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=10,
)


def deep(value: Any, levels: int, key: str) -> Any:
    for i in range(levels):
        value = [value] if i % 2 else {key: value}
    return value


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _at(root: Any, path: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """(container, key) of ``path`` in ``root``, if it still exists there."""
    node = root
    for k in path[:-1]:
        try:
            node = node[k]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(node, dict) and path[-1] in node:
        return node, path[-1]
    if isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        return node, path[-1]
    return None


@st.composite
def mutated(draw: st.DrawFn, original: Any, max_depth: int = 600) -> Any:
    """``original`` with one to four edits: a wrong type, a huge number, deep nesting, a missing
    key, an added key."""
    value = copy.deepcopy(original)
    paths = _paths(value)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "huge", "deep", "delete", "add"]))
        new: Any
        if op == "add":  # a key the fixture lacks here (an optional field), with any value
            node = _at(value, path) if path else None
            target = value if not path else (node[0][node[1]] if node else None)
            if isinstance(target, dict):
                target[draw(st.sampled_from(WORDS))] = draw(json_values)
            continue
        if op == "huge":
            new = draw(st.sampled_from(HUGE))
        elif op == "deep":
            new = deep(
                draw(json_values),
                draw(st.sampled_from([62, 64, 65, 254, 256, max_depth])),
                draw(st.sampled_from(WORDS)),
            )
        else:
            new = draw(json_values)
        if not path:
            if op != "delete":
                value = new
            continue
        spot = _at(value, path)
        if spot is None:
            continue
        container, key = spot
        if op == "delete":
            del container[key]
        else:
            container[key] = new
    return value


def bodies(fixtures: list[Any]) -> st.SearchStrategy[Any]:
    """Mutated fixtures, mostly; sometimes a random JSON tree."""
    return st.one_of(
        st.sampled_from(fixtures).flatmap(mutated),
        st.sampled_from(fixtures).flatmap(mutated),
        st.dictionaries(keys, json_values, max_size=5),
        json_values,
    )


REFUSED = object()


def _only_gateway_errors(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``, or ``REFUSED`` when it raised a ``GatewayError``. Anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except GatewayError as e:
        assert e.status >= 400 and isinstance(e.message, str)
        return REFUSED


def _client_refusal(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Like ``_only_gateway_errors``, for a client's input: a refusal is the client's fault (4xx)."""
    try:
        return fn(*args, **kwargs)
    except GatewayError as e:
        assert 400 <= e.status < 500 and e.message, e
        return REFUSED


# ---- requests: what a client sends -------------------------------------------------------------


def _client_call(dialect: str, case: dict[str, Any], body: Any) -> ClientCall:
    return ClientCall(dialect, "chat", model=case.get("path_model"), stream=case.get("path_stream", False))


@pytest.mark.parametrize("dialect", NAMES)
@SETTINGS
@given(data=st.data())
def test_client_requests_only_raise_gateway_errors(dialect: str, data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(REQUESTS[dialect]))
    _request_path(dialect, case, data.draw(bodies([case["body"]])))


def _request_path(dialect: str, case: dict[str, Any], body: Any) -> None:
    """Everything the request phase does with a client body, up to the serialised backend body."""
    d = DIALECTS[dialect]
    if _client_refusal(check_depth, body) is REFUSED:
        return  # the request phase refuses it (400) before anything reads it
    if not isinstance(body, dict):
        return
    call = _client_call(dialect, case, body)
    # What the request phase reads before any codec, for every request.
    d.request_model(call, body)
    d.request_stream(call, body)
    d.requested_output(body)
    d.strips_added_usage(body)
    d.passthrough_body(body, "upstream-model", True)
    estimate.input_tokens(body, d)
    estimate.output_tokens(body, 100, d)
    ir = _client_refusal(DIALECTS[dialect].codec.parse_request, body, call.model, call.stream)
    if ir is REFUSED:
        return
    for target in NAMES:
        for drop in (False, True):
            out = _client_refusal(
                DIALECTS[target].codec.build_request,
                ir,
                "upstream-model",
                default_max_tokens=64,
                drop_unsupported=drop,
            )
            if out is not REFUSED:
                orjson.dumps(out)  # what the request phase sends: must serialise
                break  # built as it is: dropping nothing builds the same body


def test_depth_limit_is_enforced_below_every_recursion_limit() -> None:
    ok = deep("x", MAX_DEPTH, "k")  # MAX_DEPTH arrays/objects, one inside the other
    check_depth(ok)
    check_depth(ok, orjson.dumps(ok))
    too = deep("x", MAX_DEPTH + 1, "k")
    for raw in (None, orjson.dumps(too)):
        with pytest.raises(GatewayError) as e:
            check_depth(too, raw)
        assert e.value.status == 400 and f"{MAX_DEPTH} levels" in e.value.message
    assert MAX_DEPTH < 254  # orjson serialises up to 254 levels; a translated body adds a few


# ---- responses: what a provider answers ------------------------------------------------------------


@pytest.mark.parametrize("backend", NAMES)
@SETTINGS
@given(data=st.data())
def test_provider_responses_only_raise_gateway_errors(backend: str, data: st.DataObject) -> None:
    _response_path(backend, data.draw(bodies(RESPONSES[backend])))


def _response_path(backend: str, body: Any) -> None:
    """Everything the response phase does with a provider's answer, up to the client's bytes."""
    codec = DIALECTS[backend].codec
    if isinstance(body, dict):
        # Same-dialect pass-through reads usage and renames the model, then serialises.
        _only_gateway_errors(codec.usage_of, copy.deepcopy(body))
        renamed = copy.deepcopy(body)
        if _only_gateway_errors(codec.rename_model, renamed, "client-model") is True:
            _only_gateway_errors(_dumps_answer, renamed)
    resp = _only_gateway_errors(codec.parse_response, body)
    if resp is REFUSED:
        return
    resp.model = "client-model"
    for client in NAMES:
        rendered = _only_gateway_errors(DIALECTS[client].codec.render_response, resp)
        if rendered is not REFUSED:
            orjson.dumps(rendered)


def _dumps_answer(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise GatewayError("api_error", "unserialisable", status=502) from None


@pytest.mark.parametrize("backend", NAMES)
@SETTINGS
@given(data=st.data())
def test_provider_errors_only_raise_gateway_errors(backend: str, data: st.DataObject) -> None:
    status, raw = data.draw(st.sampled_from(ERRORS[backend]))
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        obj = orjson.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()
        body = _serialise(data.draw(mutated(obj)))
    elif choice == 1:
        body = data.draw(st.binary(max_size=200))
    else:
        body = _serialise(data.draw(json_values))
    status = data.draw(st.sampled_from([status, 200, 400, 401, 429, 500, 503, 529, 0, 999]))
    err = DIALECTS[backend].codec.parse_error(status, body)  # never raises: it is how errors are read
    assert isinstance(err, GatewayError)
    for client in NAMES:
        codec = DIALECTS[client].codec
        orjson.dumps(codec.render_error(err))
        assert codec.render_stream_error(err)


def _serialise(value: Any) -> bytes:
    """JSON text of ``value``, nesting beyond orjson's limit included (a provider may send that)."""
    return json.dumps(value).encode()


# ---- streams: what a provider streams ------------------------------------------------------------------


@st.composite
def mutated_streams(draw: st.DrawFn, backend: str) -> bytes:
    events = list(draw(st.sampled_from(STREAMS[backend])))
    for _ in range(draw(st.integers(1, 3))):
        if not events:
            break
        i = draw(st.integers(0, len(events) - 1))
        name, data = events[i]
        op = draw(st.sampled_from(["mutate", "mutate", "mutate", "drop", "repeat", "rename", "garble"]))
        if op == "mutate" and data[:1] in ("{", "[") and _parses(data):
            events[i] = (name, json.dumps(draw(mutated(json.loads(data)))))
        elif op == "drop":
            del events[i]
        elif op == "repeat":
            events.insert(i, events[i])
        elif op == "rename":
            events[i] = (draw(st.sampled_from(WORDS) | st.none()), data)
        else:
            events[i] = (
                name,
                draw(
                    st.sampled_from(
                        ["", "[DONE]", "{", "null", "[]", "[1]", "5", '"x"', data[: len(data) // 2]]
                    )
                ),
            )
    return _sse(events)


def _sse(events: list[tuple[str | None, str]]) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += b"event: " + name.replace("\n", " ").encode() + b"\n"
        out += b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"
    return out


def _parses(data: str) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def _client_request(client: str) -> ChatRequest:
    return ChatRequest(model="client-model", messages=[], stream=True, stream_include_usage=True)


def _transcode(backend: str, raw: bytes, cuts: list[int]) -> None:
    """Reader -> backend decoder -> every client encoder, and the pass-through hooks, chunk by chunk."""
    reader = SSEReader()
    decoder = DIALECTS[backend].codec.stream_decoder(1 + len(raw) % 3)  # one, two or three asked for
    encoders = {c: DIALECTS[c].codec.stream_encoder(_client_request(c)) for c in NAMES}
    chunks, start = [], 0
    for cut in sorted(cuts):
        chunks.append(raw[start:cut])
        start = cut
    chunks.append(raw[start:])
    events = []
    for chunk in chunks:
        events += reader.feed(chunk)
    events += reader.close()
    ir = []
    for sse in events:
        ir += decoder.feed(sse)  # a decoder turns a bad event into a StreamError; it never raises
        _passthrough(backend, sse.event, sse.data)
    ir += decoder.close()
    for ev in ir:
        if isinstance(ev, StreamError):
            assert isinstance(ev.error, GatewayError)
        for enc in encoders.values():
            assert isinstance(enc.encode(ev), bytes)


def _passthrough(dialect: str, event: str | None, data: str) -> None:
    """What ``StreamPassthrough`` asks the dialect about one event of a same-dialect stream."""
    d = DIALECTS[dialect]
    obj: Any = None
    if data[:1] in ("{", "["):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
    obj = obj if isinstance(obj, dict) else None
    d.stream_mark(event, data, obj)
    if obj is not None:
        _only_gateway_errors(d.codec.usage_of, obj)
        d.is_added_usage_event(obj)
        if _only_gateway_errors(d.codec.rename_model, obj, "client-model") is True:
            _only_gateway_errors(_dumps_answer, obj)


@pytest.mark.parametrize("backend", NAMES)
@SETTINGS
@given(data=st.data())
def test_provider_streams_only_raise_gateway_errors(backend: str, data: st.DataObject) -> None:
    raw = data.draw(mutated_streams(backend))
    cuts = data.draw(st.lists(st.integers(0, max(len(raw), 1)), max_size=4))
    _transcode(backend, raw, cuts)


sse_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "",
                ":ping",
                "data: [DONE]",
                "event: error",
                "event: message_stop",
                "retry: 5",
                "data:",
                "\r",
                "id: 1",
            ]
        ),
        st.sampled_from(WORDS).map(lambda w: f"event: {w}"),
        json_values.map(lambda v: "data: " + json.dumps(v)),
        st.text(max_size=20).map(lambda t: "data: " + t),
    ),
    max_size=12,
).map(lambda lines: "\n".join(lines).encode())


@pytest.mark.parametrize("backend", NAMES)
@SETTINGS
@given(raw=st.binary(max_size=400) | sse_lines, cuts=st.lists(st.integers(0, 400), max_size=5))
def test_stream_decoders_survive_arbitrary_bytes(backend: str, raw: bytes, cuts: list[int]) -> None:
    _transcode(backend, raw, [c for c in cuts if c <= len(raw)])


# ---- a wrong type at every path, a stray field in every object ---------------------------------------

# One of each JSON type, and the values that broke codecs before (huge counts, deep nesting).
WRONG: list[Any] = [None, True, 0, -1, 2**64 - 1, 1.5, "", "x", [], [1], {}, {"k": "v"}, deep(1, 300, "k")]
STRAY: list[Any] = [5, [1]]  # a number where a field is read, an unhashable where one is looked up


def _variants(original: Any, keys: list[str]) -> list[Any]:
    """``original`` with one edit each: every value replaced by every wrong type, every key
    removed, and every object given each of ``keys`` (a field the fixture lacks there)."""
    out = []
    for path in _paths(original):
        for value in WRONG:
            v = copy.deepcopy(original)
            if not path:
                out.append(value)
                continue
            container, key = _at(v, path)  # type: ignore[misc]
            container[key] = value
            out.append(v)
        if path:
            v = copy.deepcopy(original)
            container, key = _at(v, path)  # type: ignore[misc]
            del container[key]
            out.append(v)
        node = _at(original, path) if path else None
        target = original if not path else (node[0][node[1]] if node else None)
        if isinstance(target, dict):
            for k in keys:
                if k in target:
                    continue
                for value in STRAY:
                    v = copy.deepcopy(original)
                    t = v if not path else _at(v, path)[0][path[-1]]  # type: ignore[index]
                    t[k] = value
                    out.append(v)
    return out


def _keys(values: Any) -> list[str]:
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            found.update(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(values)
    return sorted(found)


def _fixture_values(d: str) -> list[Any]:
    return (
        [c["body"] for c in REQUESTS[d]]
        + RESPONSES[d]
        + [[json.loads(x) for _, x in events if _parses(x)] for events in STREAMS[d]]
    )


# Every field name any fixture uses, in any dialect: optional fields a fixture lacks are among them.
KEYS = _keys([_fixture_values(d) for d in NAMES])
# A dialect's own field names: the stray fields of the stream-event sweep, whose every variant
# re-decodes the stream up to the edit (a codec reads its own dialect's names; the hypothesis
# tests above add any fixture's names anywhere).
OWN_KEYS = {d: _keys(_fixture_values(d)) for d in NAMES}


@pytest.mark.parametrize("dialect", NAMES)
def test_every_path_of_every_request_fixture(dialect: str) -> None:
    for case in REQUESTS[dialect]:
        for body in _variants(case["body"], KEYS):
            _request_path(dialect, case, body)


@pytest.mark.parametrize("backend", NAMES)
def test_every_path_of_every_response_fixture(backend: str) -> None:
    for original in RESPONSES[backend]:
        for body in _variants(original, KEYS):
            _response_path(backend, body)


@pytest.mark.parametrize("backend", NAMES)
def test_every_path_of_every_stream_event(backend: str) -> None:
    """Each event of each stream fixture, edited alone, in its stream."""
    for events in STREAMS[backend]:
        parsed = [(name, json.loads(data) if _parses(data) else None, data) for name, data in events]
        for i, (_name, obj, _data) in enumerate(parsed):
            if obj is None:
                continue
            for variant in _variants(obj, OWN_KEYS[backend]):
                # The stream up to the edit and one event after it: what the edit can upset.
                edited = [*events[:i], (events[i][0], json.dumps(variant)), *events[i + 1 : i + 2]]
                _transcode(backend, _sse(edited), [])
