"""How a provider's stream is cut into events: the dialect's stream framing.

Most providers stream Server-Sent Events; some stream a binary framing of their
own. A dialect names its framing (``Dialect.stream_framing``) and everything
that reads a provider's stream (the response translator, the answer guard)
asks the framing for a reader instead of assuming SSE. Whatever the framing,
a reader yields ``SSEEvent``s: the event's type (``event``) and its data, which
is what a dialect's ``StreamDecoder`` consumes.

A reader is fed bytes cut at arbitrary points. A framing that can be corrupt
(checksums, lengths) raises ``GatewayError`` (502) for a malformed frame; the
caller turns that into an error in the client's dialect (an error event once
the stream has started) and stops reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .sse import SSEEvent, SSEReader


class StreamReader(Protocol):
    """Bytes in, complete events out (stateful, one per stream)."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by ``chunk``; raises ``GatewayError`` on a malformed frame."""
        ...

    def close(self) -> list[SSEEvent]:
        """End of the byte stream: events still pending."""
        ...


@dataclass(frozen=True, slots=True)
class StreamFraming:
    """A stream framing: the content type a provider announces it with, and its reader."""

    content_type: str
    reader: Callable[[], StreamReader]

    def announced_by(self, content_type: str | None) -> bool:
        """Does a response's ``content-type`` header say this framing?"""
        return (content_type or "").split(";", 1)[0].strip().lower() == self.content_type


SSE_CONTENT_TYPE = "text/event-stream"
SSE = StreamFraming(SSE_CONTENT_TYPE, SSEReader)
