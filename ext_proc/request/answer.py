"""Is a provider's 200 an answer? Judged per attempt, before its headers go on.

A 200 that is not an answer -- empty, an error object, HTML or other non-JSON,
cut short, wrongly typed, an empty event stream, a stream whose first event is
an error -- is a failed attempt. Envoy can only retry an attempt until its
response headers reach the client (docs/architecture.md, behaviour 12), so the
guard stage (``stages/answer_guard.py``) holds them while ``AnswerCheck``
reads the response: a non-streamed body to its end, a stream to its first
event. A failure becomes the attempt's status (502, or an in-band error's own
status) with an error body in the backend's dialect; Envoy retries that on the
next tier like any 5xx, and on the last tier the router stage renders it for
the client (a 502 saying the provider's answer was invalid). A stream whose
first event was fine cannot be failed over any more: if it breaks later the
client gets an error event (``responses``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import GatewayError, overloaded_as_503
from ..translation.codec import Codec
from ..translation.fields import error_json, invalid_answer
from ..translation.framing import SSE, StreamFraming
from ..translation.ir import MessageStart, StreamError

# A stream's first event is small; past this much without one, the stream is let go unjudged.
MAX_FIRST_EVENT = 64 * 1024
# A non-streamed answer is judged whole; a bigger one is let go unjudged (the router stage
# still reads it). Chat answers are kilobytes.
MAX_BODY = 4 * 1024 * 1024


@dataclass(slots=True)
class Failed:
    """The attempt failed: answer with this status and body (in the backend's dialect) instead."""

    status: int
    body: bytes
    error: GatewayError


PASS = "pass"  # the answer may go on


def judge_body(
    codec: Codec, body: bytes, content_type: str, parse: Callable[[Any], object] | None = None
) -> GatewayError | None:
    """Why a whole non-streamed 200 is not an answer, or None when it is one."""
    if not body.strip():
        return invalid_answer("it was empty")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        if "json" in content_type:
            return invalid_answer("it was not complete JSON (cut short?)")
        return invalid_answer(f"it was {content_type or 'a body without a content type'}, not JSON")
    try:
        (parse or codec.parse_response)(data)
    except GatewayError as e:
        return e
    return None


class AnswerCheck:
    """One attempt's 200 response, fed as it arrives; ``feed`` says PASS, Failed, or None (keep holding)."""

    __slots__ = ("backend", "codec", "content_type", "decoder", "parse", "parts", "reader", "size", "stream")

    def __init__(
        self,
        codec: Codec,
        backend: str,
        stream: bool,
        content_type: str,
        framing: StreamFraming = SSE,
        parse: Callable[[Any], object] | None = None,
    ) -> None:
        self.codec = codec
        self.parse = parse  # reads a non-streamed answer of another operation than chat
        self.backend = backend
        self.stream = stream
        self.content_type = content_type.lower()
        # A stream request answered with something else is held whole, like a body. A stream
        # is read in its backend dialect's framing (SSE, AWS event-stream, ...).
        self.reader = framing.reader() if stream and framing.announced_by(self.content_type) else None
        self.decoder = codec.stream_decoder() if self.reader is not None else None
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes, end: bool) -> str | Failed | None:
        self.size += len(chunk)
        if self.reader is not None:
            return self._first_event(chunk, end)
        self.parts.append(chunk)
        if not end:
            return PASS if self.size > MAX_BODY else None
        body = b"".join(self.parts)
        if self.stream:
            err: GatewayError | None = invalid_answer(
                f"a stream was asked for and it was {self.content_type or 'a body without a content type'}"
            )
        else:
            err = judge_body(self.codec, body, self.content_type, self.parse)
        return PASS if err is None else self._fail(err, 502)

    def _first_event(self, chunk: bytes, end: bool) -> str | Failed | None:
        """Judge a stream by its first event past the message's opening (its start and the
        dialect's preamble, ``StreamDecoder.opening``): an error (an error event, an exception
        frame, a malformed frame) or an end before any content fails the attempt; anything
        else (content, a ping, a thinking block) passes."""
        assert self.reader is not None and self.decoder is not None
        try:
            events = self.reader.feed(chunk)
            if end:
                events += self.reader.close()
        except GatewayError as err:  # a malformed frame
            return self._fail(err, 502)
        for ev in events:
            try:
                out = self.decoder.feed(ev)
            except GatewayError as err:  # a wrongly typed event
                return self._fail(err, 502)
            failed = next((ir for ir in out if isinstance(ir, StreamError)), None)
            if failed is not None:
                # An in-band error keeps its status (an overload is retried like a 503); the
                # provider's own error object is the body the final attempt carries.
                status = overloaded_as_503(failed.error.status)
                raw = ev.data.encode()
                if isinstance(error_json(raw), dict) and self._says(status, raw, failed.error):
                    return Failed(status, raw, failed.error)
                return self._fail(failed.error, status)
            if not out and self.decoder.opening():
                continue  # the dialect's preamble (Responses: in_progress): an error may follow
            if not (out and all(isinstance(ir, MessageStart) for ir in out)):
                return PASS  # past the opening
        if end:
            if self.size == 0 or not events:
                return self._fail(invalid_answer("it was an empty event stream"), 502)
            for ir in self.decoder.close():
                if isinstance(ir, StreamError):  # ended before any content
                    return self._fail(ir.error, 502)
            return PASS
        return PASS if self.size > MAX_FIRST_EVENT else None

    def _says(self, status: int, raw: bytes, err: GatewayError) -> bool:
        """Is ``raw`` the provider's own error object for ``err`` (not some other event's data)?"""
        try:
            return self.codec.parse_error(status, raw).message == err.message
        except Exception:  # a body parse_error cannot read is not one
            return False

    def _fail(self, err: GatewayError, status: int) -> Failed:
        err = GatewayError(err.kind, f"{err.message} (backend '{self.backend}')", status, err.param)
        return Failed(status, orjson.dumps(self.codec.render_error(err)), err)
