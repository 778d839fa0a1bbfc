"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as ConverseStream sends it.

A message is a prelude (total length, headers length, CRC32 of those 8 bytes),
typed headers, a payload and a CRC32 of everything before it
(https://docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html,
"Prelude", "Headers", "Message CRC"; the same encoding for every AWS event
stream). Decoding is botocore's ``EventStreamBuffer``, which checks both CRCs and
the lengths; it is fed the chunks as they arrive, cut anywhere.

Each message becomes an ``SSEEvent`` for the dialect's decoder: an event
(``:message-type`` ``event``) is its ``:event-type`` and JSON payload; an exception
(``exception``, typed by ``:exception-type``) or an error (``error``, with
``:error-code`` and ``:error-message``) is ``exception:<type>`` with a JSON object
holding the message, so no event type can be taken for an error.
"""

from __future__ import annotations

import struct
from binascii import crc32

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from ...errors import GatewayError
from ...translation.framing import StreamFraming
from ...translation.sse import SSEEvent

CONTENT_TYPE = "application/vnd.amazon.eventstream"
EXCEPTION_PREFIX = "exception:"

_STRING = 7  # header value type: UTF-8 string with a 2-byte length


class EventStreamReader:
    """Bytes of an event stream cut anywhere -> one ``SSEEvent`` per message."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        self._buffer.add_data(chunk)
        out: list[SSEEvent] = []
        try:
            for message in self._buffer:
                out.append(_event(message.headers, message.payload))
        except (ParserError, KeyError, ValueError, IndexError, struct.error) as e:
            # CRC or length mismatch (ParserError); a frame with intact CRCs but an unknown
            # header type or a truncated header (the others): malformed either way.
            raise GatewayError(
                "api_error", f"upstream sent a malformed event-stream frame ({type(e).__name__})", status=502
            ) from None
        return out

    def close(self) -> list[SSEEvent]:
        """A frame cut short by the end of the stream is no event: the decoder reports the cut."""
        return []


def _event(headers: dict[str, object], payload: bytes) -> SSEEvent:
    kind = headers.get(":message-type", "event")
    if kind == "event":
        return SSEEvent(payload.decode("utf-8", "replace"), str(headers.get(":event-type", "")))
    if kind == "exception":
        return SSEEvent(
            payload.decode("utf-8", "replace") or "{}",
            EXCEPTION_PREFIX + str(headers.get(":exception-type", "")),
        )
    message = headers.get(":error-message")
    return SSEEvent(
        orjson.dumps({"message": str(message) if message is not None else "upstream stream error"}).decode(),
        EXCEPTION_PREFIX + str(headers.get(":error-code", "error")),
    )


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (for the codec's own encoder)."""
    raw = b"".join(
        len(k.encode()).to_bytes(1, "big")
        + k.encode()
        + bytes([_STRING])
        + len(v.encode()).to_bytes(2, "big")
        + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    prelude += struct.pack(">I", crc32(prelude))
    message = prelude + raw + payload
    return message + struct.pack(">I", crc32(message))


def event_frame(event_type: str, payload: bytes) -> bytes:
    return frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, payload
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    return frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        orjson.dumps({"message": message}),
    )


EVENT_STREAM = StreamFraming(CONTENT_TYPE, EventStreamReader)
