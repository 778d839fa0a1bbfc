"""Fail over streams that fail before their first token.

Providers of some dialects answer 200 and then send an error as the first
event (``Dialect.opens_streams_with_errors``): an error event, an exception
frame. Envoy can only retry before response headers go downstream, so this
upstream stage holds an attempt's response headers until the first event past
the message's opening (one the backend's decoder turns into anything but the
message start alone), reading the stream with the backend dialect's framing
(``Dialect.stream_framing``). An error before that (an error event, a
malformed frame, a stream that ends) becomes the attempt's status (e.g. 503,
429, 502), which Envoy retries on the next tier like any other failure, with
the error as a JSON body for the final attempt. Anything else releases the
headers, and the stage closes its gRPC stream so the rest of the stream flows
without the ext_proc.

It runs only for streamed attempts to backends that do this (a CEL matcher
on route and endpoint metadata), so other traffic pays nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import protocol as P
from ..dialects import Dialect, get_dialect
from ..errors import GatewayError, overloaded_as_503
from ..state import GatewayState
from ..translation.fields import error_json
from ..translation.framing import StreamReader
from ..translation.ir import MessageStart, StreamError

log = logging.getLogger("llm_gateway.stream_guard")

MAX_HOLD = 64 * 1024  # bytes held waiting for the first content before giving up (and releasing)


class FirstContent:
    """Reads a held stream until the first event past its opening, or its first error."""

    def __init__(self, dialect: Dialect):
        self.codec = dialect.codec
        self.reader: StreamReader = dialect.stream_framing.reader()
        self.decoder = dialect.codec.stream_decoder()

    def feed(self, chunk: bytes, end: bool) -> tuple[bool, GatewayError | None, bytes]:
        """(decided, error or None, error body) once the stream is past its opening or failed."""
        try:
            events = self.reader.feed(chunk)
            if end:
                events += self.reader.close()
        except GatewayError as err:  # a malformed frame
            return True, err, orjson.dumps(self.codec.render_error(err))
        for ev in events:
            out = self.decoder.feed(ev)
            failed = next((ir for ir in out if isinstance(ir, StreamError)), None)
            if failed is not None:
                # The provider's own error object is the body the final attempt carries.
                raw = ev.data.encode()
                body = raw if isinstance(error_json(raw), dict) else orjson.dumps(self.codec.render_error(failed.error))
                return True, failed.error, body
            if not (out and all(isinstance(ir, MessageStart) for ir in out)):
                return True, None, b""  # past the opening: content (or a ping, a thinking block...)
        if end:
            for ir in self.decoder.close():
                if isinstance(ir, StreamError):  # ended before any content: a failed attempt
                    return True, ir.error, orjson.dumps(self.codec.render_error(ir.error))
            return True, None, b""
        return False, None, b""


async def run(state: GatewayState, ctx: Any) -> None:
    backend = ""
    guard: FirstContent | None = None
    pending = 0  # body chunks answered only after the held headers
    size = 0
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        if kind == "response_headers":
            headers = M.headers_of(req.response_headers)
            backend = str(M.attribute(req, P.ATTR_BACKEND) or "")
            b = state.config.backends.get(backend)
            dialect = get_dialect(b.dialect) if b is not None else None
            if (dialect is None or headers.get(":status") != "200"
                    or not dialect.stream_framing.announced_by(headers.get("content-type"))):
                await ctx.write(M.continue_for(kind))
                return  # not a stream that started: nothing to guard
            guard = FirstContent(dialect)
            continue
        if kind != "response_body" or guard is None:
            await ctx.write(M.continue_for(kind))
            continue
        chunk = req.response_body
        pending += 1
        size += len(chunk.body)
        decided, err, err_body = guard.feed(chunk.body, chunk.end_of_stream)
        if not decided and size < MAX_HOLD:
            continue
        await _release(ctx, err, err_body, pending)
        if err is not None:
            log.info("backend %s failed its stream before the first content (%s): failing the attempt with %d",
                     backend, err.message, err.status)
        return


async def _release(ctx: Any, err: GatewayError | None, err_body: bytes, pending: int) -> None:
    """Answer the held headers, then every body chunk received meanwhile, in order."""
    if err is None:
        await ctx.write(M.continue_for("response_headers"))
        for _ in range(pending):
            await ctx.write(M.CONTINUE_RESPONSE_BODY)
        return
    status = overloaded_as_503(err.status)
    mutation = M.header_mutation({":status": str(status), "content-type": "application/json"},
                                 remove=["content-length"])
    await ctx.write(pb.ProcessingResponse(response_headers=pb.HeadersResponse(
        response=pb.CommonResponse(header_mutation=mutation))))
    for i in range(pending):
        await ctx.write(M.response_body_response(err_body if i == 0 else b""))
