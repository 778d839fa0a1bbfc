"""SSE reader: golden cases from the event-stream spec, and chunking invariance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.translation.sse import SSEEvent, SSEReader, format_event


def read_all(chunks: list[bytes]) -> list[SSEEvent]:
    r = SSEReader()
    out: list[SSEEvent] = []
    for c in chunks:
        out += r.feed(c)
    return out + r.close()


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"data: hello\n\n", [SSEEvent("hello")]),
        (b"data: a\r\n\r\ndata: b\r\n\r\n", [SSEEvent("a"), SSEEvent("b")]),
        (b"data: a\r\rdata: b\r\r", [SSEEvent("a"), SSEEvent("b")]),
        (b"data: a\r\n\rdata: b\n\r\n", [SSEEvent("a"), SSEEvent("b")]),  # mixed endings
        (b"data:nospace\n\n", [SSEEvent("nospace")]),
        (b"data:  two spaces\n\n", [SSEEvent(" two spaces")]),  # only one space is stripped
        (b"data: line1\ndata: line2\ndata:\n\n", [SSEEvent("line1\nline2\n")]),
        (b"data\n\n", [SSEEvent("")]),  # a field name alone is an empty value
        (b": ping\n\ndata: x\n: comment inside\n\n", [SSEEvent("x")]),
        (b"event: message_start\nid: 7\ndata: {}\n\n", [SSEEvent("{}", "message_start", "7")]),
        (b"event: ping\n\n", []),  # no data: not dispatched
        (b"retry: 1000\ndata: r\n\n", [SSEEvent("r")]),
        (b"foo: bar\ndata: u\n\n", [SSEEvent("u")]),  # unknown fields are ignored
        (b"event: a\n\ndata: b\n\n", [SSEEvent("b")]),  # event type resets at a blank line
        (b"\xef\xbb\xbfdata: bom\n\n", [SSEEvent("bom")]),
        (b"data: caf\xc3\xa9 \xe2\x82\xac\n\n", [SSEEvent("caf\u00e9 \u20ac")]),
        (b"data: [DONE]", [SSEEvent("[DONE]")]),  # close() flushes an event missing its blank line
        (b"data: last\n", [SSEEvent("last")]),
    ],
)
def test_golden(raw: bytes, expected: list[SSEEvent]) -> None:
    assert read_all([raw]) == expected
    assert read_all(bytewise(raw)) == expected


def test_cr_at_chunk_end_then_lf() -> None:
    r = SSEReader()
    assert r.feed(b"data: a\r") == []
    assert r.feed(b"\n\r") == [SSEEvent("a")]  # CR LF is one line ending, then a blank line
    assert r.feed(b"\ndata: b\r\n\r\n") == [SSEEvent("b")]
    assert r.close() == []


def test_utf8_split_mid_character() -> None:
    raw = "data: \u00e9\u4e2d\U0001f600\n\n".encode()
    for cut in range(1, len(raw)):
        assert read_all([raw[:cut], raw[cut:]]) == [SSEEvent("\u00e9\u4e2d\U0001f600")]


def test_incremental_dispatch() -> None:
    r = SSEReader()
    assert r.feed(b'data: {"a"') == []
    assert r.feed(b": 1}\n") == []
    assert r.feed(b"\n") == [SSEEvent('{"a": 1}')]
    assert r.feed(b"") == []


def test_format_event() -> None:
    assert format_event(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert format_event("hi", "ping") == b"event: ping\ndata: hi\n\n"
    assert format_event("a\nb") == b"data: a\ndata: b\n\n"
    assert read_all([format_event("a\r\nb", "e")]) == [SSEEvent("a\nb", "e")]


# ---- chunking invariance ---------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=12)
_name = st.text(st.characters(whitelist_categories=("Ll",)), min_size=1, max_size=8)
_event = st.tuples(
    st.lists(_text, min_size=1, max_size=3),  # data lines
    st.none() | _name,  # event
    st.none() | _name,  # id
    st.booleans(),  # a comment line
    st.booleans(),  # "data:" without the space
)
_eol = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    events = draw(st.lists(_event, max_size=5))
    out = b""
    expected = []
    for data, event, eid, comment, tight in events:
        lines: list[bytes] = []
        if comment:
            lines.append(b": keep-alive")
        if event is not None:
            lines.append(b"event: " + event.encode())
        if eid is not None:
            lines.append(b"id: " + eid.encode())
        for d in data:
            # without the space, a value's own leading space would be eaten
            lines.append((b"data:" if tight and not d.startswith(" ") else b"data: ") + d.encode())
        lines.append(b"")
        for line in lines:
            eol = draw(_eol)
            if eol == b"\n" and out.endswith(b"\r"):
                eol = b"\r\n"  # CR then LF would be one line ending, not two
            out += line + eol
        expected.append(SSEEvent("\n".join(data), event, eid))
    return out, expected


@settings(max_examples=300, deadline=None)
@given(_streams(), st.data())
def test_any_chunking_yields_the_same_events(
    stream: tuple[bytes, list[SSEEvent]], data: st.DataObject
) -> None:
    raw, expected = stream
    assert read_all([raw]) == expected
    cuts = sorted(data.draw(st.sets(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert read_all(chunks) == expected
    assert read_all(bytewise(raw)) == expected
