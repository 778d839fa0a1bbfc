"""Incremental Server-Sent Events reader and writer shared by every codec.

The reader follows the WHATWG event-stream parsing rules: lines end with CRLF,
LF or CR (a CR at the end of one chunk and an LF at the start of the next are
one line ending); ``field: value`` lines, the single space after the colon is
optional; ``data`` lines are joined with ``\\n``; a blank line dispatches the
event; comment lines (starting with ``:``) and ``retry`` are ignored; an event
without any ``data`` line is not dispatched. ``SSEEvent.id`` is the ``id``
field of that event only (not the browser's sticky last-event-id: nothing here
reconnects), and a leading UTF-8 BOM is skipped.

It is on the path of every streamed chunk, so it works on whole lines with
``bytes.split``/``bytes.find`` and decodes UTF-8 only once a line is complete
(a character split across chunks is therefore never decoded half-way).
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEReader:
    """Turns a byte stream cut at arbitrary points into ``SSEEvent``s."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = b""  # an incomplete last line, never containing CR or LF
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by ``chunk`` (possibly none)."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf  # could still be the start of a BOM
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" in buf:
            if buf[-1:] == b"\r":
                self._skip_lf = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if not lines:
            return []
        return self._lines(lines)

    def close(self) -> list[SSEEvent]:
        """End of stream: flush a last event that lacked its blank line."""
        lines = [self._buf] if self._buf else []
        self._buf = b""
        lines.append(b"")
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        data = self._data
        for raw in lines:
            if not raw:
                if data:
                    out.append(SSEEvent("\n".join(data), self._event, self._id))
                    data = self._data = []
                self._event = None
                self._id = None
                continue
            colon = raw.find(b":")
            if colon == 0:
                continue  # comment, e.g. ": ping" keep-alives
            if colon < 0:
                name, value = raw, b""
            else:
                name = raw[:colon]
                value = raw[colon + 2 :] if raw[colon + 1 : colon + 2] == b" " else raw[colon + 1 :]
            if name == b"data":
                data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
            # "retry" and unknown fields are ignored, as the spec says.
        return out


def format_event(data: bytes | str, event: str | None = None) -> bytes:
    """One SSE event: optional ``event:`` line, ``data:`` line(s), blank line."""
    if isinstance(data, str):
        data = data.encode()
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata: ")
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
