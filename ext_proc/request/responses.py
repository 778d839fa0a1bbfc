"""Response translation in the router stage, chunk by chunk.

Envoy streams the response body to the router stage (response headers are
skipped: the status and the answering backend arrive as attributes with the
first chunk). Three shapes:

- ``Buffered``: non-streamed successes and every error. Chunks are held back
  (nothing is sent) until the end, then the whole body is translated once.
- ``StreamTranslate``: a streamed success from a backend of another dialect:
  the backend dialect's framing reader (SSE, or a binary framing) -> backend
  stream decoder -> IR events -> client stream encoder. A malformed frame ends
  the client's stream with an error event.
- ``StreamPassthrough``: a streamed success in the client's own dialect:
  events pass unchanged unless the model name or a gateway-requested usage
  chunk must be rewritten; usage is read on the way.

A stream that ends without its terminal event gets a well-formed error event in
the client's dialect instead of a silent truncation; so does a stream the
router stage ends itself (``abort``: a backend gone quiet, or a stream past its
maximum duration). Streamed translators note when they last completed an event.

Provider error text reaches a client only through ``redact`` (the gateway's
``Redactor``): error bodies, in-stream error events, and same-dialect error
events passed on otherwise untouched.

A 200 that is not an answer is normally stopped per attempt by the answer
guard (``request/answer.py``), which Envoy fails over. One the guard let
through (it judges only responses whose headers give it a reason, unless the
provider says ``check_every_answer``) is found here, after its 200 went to the
client: ``Buffered`` raises ``InvalidAnswer`` and the router stage aborts the
response (the client sees a broken response, never a success); a stream gets
an error event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..config import ResolvedBackend
from ..dialects import COMPLETE, DEFAULT, FAILED, Dialect, get_dialect
from ..errors import GatewayError, kind_for_status
from ..translation.fields import bad_answer, error_json, invalid_answer
from ..translation.ir import (
    BlockStart,
    ChatRequest,
    MessageDelta,
    MessageStart,
    StreamError,
    ToolCallPart,
    Usage,
)
from ..translation.names import restore_names, rules_for
from ..translation.reasoning import Sealer
from ..translation.redact import Redactor
from ..translation.sse import SSEEvent, SSEReader, format_event

log = logging.getLogger("llm_gateway.responses")

OnDone = Callable[[int, str, Usage | None], None]


class InvalidAnswer(Exception):
    """A 200 that is not an answer, found after its headers went to the client."""

    def __init__(self, error: GatewayError, body: bytes) -> None:
        super().__init__(error.message)
        self.error = error
        self.body = body  # the error in the client's dialect, for what is left to say


class ResponseTranslator:
    """Feed response chunks; get the bytes to send instead (None: send unchanged)."""

    def __init__(
        self,
        dialect: Dialect,
        backend: ResolvedBackend | None,
        status: int,
        model: str,
        on_done: OnDone,
        redact: Redactor,
        *,
        translate: bool = False,
    ):
        self.dialect = dialect
        self.redact = redact
        self.client = dialect.codec
        self.backend = backend
        backend_dialect = get_dialect(backend.dialect) if backend else None
        self.backend_codec = backend_dialect.codec if backend_dialect else None
        # Success bodies of the client's wire format pass through (a cloud's variant included).
        # (``translate``: an answer of the client's wire still goes through the IR, to put back
        # the client's tool names a failover attempt's body carried in another backend's spelling.)
        self.same_wire = not translate and (backend_dialect is None or backend_dialect.wire == dialect.wire)
        self.status = status
        self.model = model
        self.on_done = on_done
        self.usage: Usage | None = None
        self.done = False  # the client's response is complete (on_done was called)
        self.last_event = time.perf_counter()  # streams: when the last complete event arrived

    @property
    def backend_name(self) -> str:
        return self.backend.name if self.backend else ""

    @property
    def streams(self) -> bool:
        """Does the client get this response event by event (so it can go quiet)?"""
        return False

    def feed(self, chunk: bytes, end: bool) -> bytes | None:
        raise NotImplementedError

    def abort(self, err: GatewayError) -> bytes:
        """End the client's response now: its last bytes (an error event in its dialect)."""
        self.finish()
        return b""

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.on_done(self.status, self.backend_name, self.usage)

    def restorer(self, ir: ChatRequest | None) -> dict[str, str]:
        """The answering backend's spelling of the client's tool names -> the client's own
        (requests were fitted to the backend's rules: ``translation.names``)."""
        if self.same_wire or self.backend_codec is None or self.backend is None:
            return {}
        return restore_names(ir, rules_for(self.backend_codec, self.backend.caps))

    def merge_usage(self, u: Usage) -> None:
        """Streams report usage in several events (some cumulative): keep the largest of each count."""
        self.usage = u if self.usage is None else _max_usage(self.usage, u)


class Buffered(ResponseTranslator):
    def __init__(self, *args: Any, ir: ChatRequest | None, translate: bool = False) -> None:
        super().__init__(*args, translate=translate)
        self.ir = ir
        self.parts: list[bytes] = []
        self.names = self.restorer(ir)

    def feed(self, chunk: bytes, end: bool) -> bytes | None:
        if chunk:
            self.parts.append(chunk)
        if not end:
            return b""
        body = b"".join(self.parts)
        if self.status >= 400 or self.status == 0:
            out = self._error(body)
        else:
            try:
                out = self._success(body)
            except GatewayError as e:
                # Its 200 already went to the client: too late to fail over, and a body
                # saying so would pass for an answer. The router stage aborts the response.
                err = GatewayError(
                    "api_error", self.redact(f"{e.message} (backend '{self.backend_name}')"), status=502
                )
                log.warning("invalid answer after its headers went to the client: %s", err.message)
                self.status = 502
                self.finish()
                raise InvalidAnswer(err, orjson.dumps(self.client.render_error(err))) from None
        self.finish()
        # Earlier chunks were held back (replaced by nothing): an untouched
        # body must be sent whole, not as "the last chunk unchanged".
        return body if out is None else out

    def _success(self, body: bytes) -> bytes | None:
        """The client's answer; a ``GatewayError`` when ``body`` is not an answer."""
        codec = self.backend_codec or self.client
        data = answer_json(body)
        resp = codec.parse_response(data)  # judges every field (same dialect too)
        if self.same_wire or self.backend_codec is None:
            self.usage = codec.usage_of(data)
            if not codec.rename_model(data, self.model):
                return None
            try:
                return orjson.dumps(data)
            except orjson.JSONEncodeError:  # nested past orjson's limit: pass it on as it came
                return None
        self.usage = resp.usage
        resp.model = self.model
        if resp.more and not self.client.several_answers:
            # Only the first would reach the client, while usage counts them all.
            raise GatewayError(
                "api_error",
                f"the backend gave {1 + len(resp.more)} answers and a client of this API takes one",
                status=502,
            )
        for answer in (resp.content, *(c.content for c in resp.more)):
            for p in answer:
                if isinstance(p, ToolCallPart):
                    p.name = self.names.get(p.name, p.name)
        if self.ir is not None and self.ir.seal_key is not None:
            resp = Sealer(self.ir.seal_key).response(resp)  # signatures travel sealed (docs/reasoning.md)
        return orjson.dumps(self.client.render_reply(resp, self.ir))

    def _error(self, body: bytes) -> bytes | None:
        from_provider = isinstance(error_json(body), dict)
        if self.backend_codec is self.client and from_provider:
            clean = self.redact.body(body)  # already an error in the client's dialect
            return None if clean is body else clean
        if not from_provider:
            # Envoy's own reply (connect failure, timeout, retries exhausted).
            reason = body.decode("utf-8", "replace").strip() or "no response"
            if self.model:
                reason = f"no backend of model '{self.model}' could answer: {reason}"
            body = orjson.dumps({"error": {"message": reason}})
        # No backend answered: the body is Envoy's, as text (wrapped above) or as
        # the default dialect's JSON (local_reply_config: too large, too slow).
        codec = self.backend_codec or DEFAULT.codec
        try:
            err = codec.parse_error(self.status, body)
        except Exception:  # never let an odd error body become a 500 of our own
            err = GatewayError(
                kind_for_status(self.status),
                body.decode("utf-8", "replace")[:500] or "upstream error",
                status=self.status or 502,
            )
        err.message = self.redact(err.message)
        return orjson.dumps(self.client.render_error(err))


class StreamTranslate(ResponseTranslator):
    def __init__(self, *args: Any, ir: ChatRequest) -> None:
        super().__init__(*args, translate=True)
        assert self.backend_codec is not None and self.backend is not None
        self.reader = get_dialect(self.backend.dialect).stream_framing.reader()
        # Several answers stream together to a client whose API has several (n, candidateCount).
        self.answers = (ir.n or 1) if self.client.several_answers else 1
        self.decoder = self.backend_codec.stream_decoder(self.answers)
        self.encoder = self.client.stream_encoder(ir)
        self.sealer = Sealer(ir.seal_key) if ir.seal_key is not None else None
        self.failed = False
        self.names = self.restorer(ir)

    @property
    def streams(self) -> bool:
        return True

    def feed(self, chunk: bytes, end: bool) -> bytes | None:
        out: list[bytes] = []
        events: list[SSEEvent] = []
        if not self.failed:
            try:
                events = self.reader.feed(chunk) if chunk else []
                if end:
                    events += self.reader.close()
            except GatewayError as err:  # a malformed frame: nothing after it can be trusted
                log.warning("malformed stream from %s: %s", self.backend_name or "?", err.message)
                self._emit([StreamError(err)], out)
        if events:
            self.last_event = time.perf_counter()
        for sse in events:
            self._emit(self.decoder.feed(sse), out)
        if end:
            self._emit(self.decoder.close(), out)
            self.finish()
        return b"".join(out)

    def abort(self, err: GatewayError) -> bytes:
        out: list[bytes] = []
        self._emit([StreamError(err)], out)
        self.finish()
        return b"".join(out)

    def _emit(self, events: list[Any], out: list[bytes]) -> None:
        for ev in events:
            if self.failed:
                return
            if isinstance(ev, MessageStart):
                ev.model = self.model
                self.merge_usage(ev.usage)
            elif isinstance(ev, MessageDelta):
                if ev.usage is not None:
                    self.merge_usage(ev.usage)
                if len(ev.more_stops) >= self.answers:
                    ev = self._unasked()
            elif isinstance(ev, BlockStart):
                if ev.choice >= self.answers:
                    ev = self._unasked()
                elif ev.tool_name is not None:
                    ev.tool_name = self.names.get(ev.tool_name, ev.tool_name)
            elif isinstance(ev, StreamError):
                self.failed = True
                ev.error.message = self.redact(ev.error.message)
            for shown in self.sealer.events(ev) if self.sealer is not None else (ev,):
                out.append(self.encoder.encode(shown))

    def _unasked(self) -> StreamError:
        """More answers than were asked for: only those would reach the client, while usage
        counts them all (the same rule as a non-streamed answer's)."""
        self.failed = True
        return StreamError(
            GatewayError(
                "api_error",
                f"the backend streamed more answers than the {self.answers} asked for",
                status=502,
            )
        )


class BufferedCompletion(Buffered):
    """A text completion, passed through: it must be a JSON object; its usage is read and its
    model renamed, but the chat codec does not judge it (it is no chat answer)."""

    def _success(self, body: bytes) -> bytes | None:
        if not body.strip():
            raise invalid_answer("it was empty")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise invalid_answer("it was not JSON, or not complete JSON") from None
        if not isinstance(data, dict):
            raise invalid_answer("it was not a JSON object")
        self.usage = self.client.usage_of(data)
        return orjson.dumps(data) if self.client.rename_model(data, self.model) else None


class StreamPassthrough(ResponseTranslator):
    """Same dialect: re-emit events, touching only what must change."""

    def __init__(self, *args: Any, rename: bool, strip_usage_chunk: bool) -> None:
        super().__init__(*args)
        self.reader = SSEReader()
        self.rename = rename
        self.strip_usage_chunk = strip_usage_chunk
        self.complete = False
        self.failed = False
        self.broken = False  # failed by the gateway: later events are dropped

    @property
    def streams(self) -> bool:
        return True

    def feed(self, chunk: bytes, end: bool) -> bytes | None:
        # Only complete events are sent on: a partial event left on the wire
        # could not be followed by a well-formed error event.
        events = self.reader.feed(chunk) if chunk else []
        if end:
            events += self.reader.close()
        if events:
            self.last_event = time.perf_counter()
        out: list[bytes] = []
        for sse in events:
            if self.broken:
                break  # the stream failed here: nothing after its error event
            try:
                keep = self._observe(sse.event, sse.data)
            except GatewayError as e:  # a wrongly typed event: the provider's fault
                self.broken = self.failed = True
                e.message = self.redact(e.message)
                out.append(self.client.render_stream_error(e))
                continue
            if keep is not None:
                out.append(keep)
        if end:
            if not self.complete and not self.failed:
                err = GatewayError("api_error", "upstream stream ended unexpectedly", status=502)
                out.append(self.client.render_stream_error(err))
            self.finish()
        return b"".join(out)

    def abort(self, err: GatewayError) -> bytes:
        out = b"" if self.complete or self.failed else self.client.render_stream_error(err)
        self.failed = not self.complete
        self.finish()
        return out

    def _observe(self, event: str | None, data: str) -> bytes | None:
        """Read usage and completion; return the event's bytes to send (None: drop it)."""
        obj: Any = None
        if data and data[0] in "{[":
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
        if not isinstance(obj, dict):
            obj = None
        mark = self.dialect.stream_mark(event, data, obj)
        if mark == COMPLETE:
            self.complete = True
        elif mark == FAILED:
            self.failed = True
            raw = data.encode()
            clean = self.redact.body(raw)
            if clean is not raw:
                return format_event(clean, event)
        if obj is None:
            return format_event(data, event)
        usage = self.client.usage_of(obj)
        if usage is not None:
            self.merge_usage(usage)
        if self.strip_usage_chunk and self.dialect.is_added_usage_event(obj):
            return None
        if self.rename and self.client.rename_model(obj, self.model):
            try:
                return format_event(orjson.dumps(obj), event)
            except orjson.JSONEncodeError:  # nested past orjson's 254 levels: no answer event
                raise bad_answer("event", "JSON nested at most 254 levels deep") from None
        return format_event(data, event)


def answer_json(body: bytes) -> Any:
    """A whole answer's JSON; a ``GatewayError`` (an invalid answer) when it is empty or not JSON."""
    if not body.strip():
        raise invalid_answer("it was empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_answer("it was not JSON, or not complete JSON") from None


def _max_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        max(a.input_tokens, b.input_tokens),
        max(a.output_tokens, b.output_tokens),
        max(a.cached_input_tokens, b.cached_input_tokens),
        max(a.cache_write_tokens, b.cache_write_tokens),
        max(a.reasoning_tokens, b.reasoning_tokens),
    )


def make_translator(
    *,
    client: Dialect,
    backend: ResolvedBackend | None,
    status: int,
    stream: bool,
    model: str,
    ir: ChatRequest | None,
    body: dict[str, Any] | None,
    on_done: OnDone,
    redact: Redactor,
    restore_names: bool = False,
    completion: bool = False,
) -> ResponseTranslator:
    args = (client, backend, status, model, on_done, redact)
    if completion and not stream and status == 200 and backend is not None:
        return BufferedCompletion(*args, ir=None)
    same_wire = backend is not None and get_dialect(backend.dialect).wire == client.wire
    restore = restore_names and same_wire and ir is not None and status == 200
    if not stream or status != 200 or backend is None:
        return Buffered(*args, ir=ir, translate=restore)
    if not same_wire or restore:
        if ir is None:
            return Buffered(*args, ir=None)
        return StreamTranslate(*args, ir=ir)
    rename = backend.upstream_model != model
    return StreamPassthrough(*args, rename=rename, strip_usage_chunk=client.strips_added_usage(body))
