"""Fail over streams whose first event is an error.

Providers of some dialects answer 200 and then send an error as the first
event (``Dialect.opens_streams_with_errors``). Envoy can only retry before response
headers go downstream, so this upstream stage holds an attempt's response
headers until the first complete SSE event. An error event becomes the
attempt's status (e.g. 503, 429), which Envoy retries on the next tier like
any other failure, with the event's error as a JSON body for the final
attempt. A normal first event releases the headers, and the stage closes its
gRPC stream so the rest of the stream flows without the ext_proc.

It runs only for streamed attempts to backends that do this (a CEL matcher
on route and endpoint metadata), so other traffic pays nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import protocol as P
from ..dialects import get_dialect
from ..errors import overloaded_as_503
from ..state import GatewayState
from ..translation.ir import StreamError
from ..translation.sse import SSEReader

log = logging.getLogger("llm_gateway.stream_guard")

MAX_HOLD = 64 * 1024  # bytes held waiting for the first event before giving up (and releasing)


def _first_event_error(state: GatewayState, backend: str, reader: SSEReader, chunk: bytes,
                       end: bool) -> tuple[bool, Any | None, bytes]:
    """(decided, error or None, error body) once the first complete event is known."""
    events = reader.feed(chunk)
    if end:
        events += reader.close()
    if not events:
        return end, None, b""
    b = state.config.backends.get(backend)
    if b is None:
        return True, None, b""
    decoder = get_dialect(b.dialect).codec.stream_decoder()
    for ev in decoder.feed(events[0]):
        if isinstance(ev, StreamError):
            return True, ev.error, events[0].data.encode()
    return True, None, b""


async def run(state: GatewayState, ctx: Any) -> None:
    backend = ""
    held = False
    pending = 0  # body chunks answered only after the held headers
    size = 0
    reader = SSEReader()
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        if kind == "response_headers":
            headers = M.headers_of(req.response_headers)
            backend = str(M.attribute(req, P.ATTR_BACKEND) or "")
            if headers.get(":status") != "200" or "event-stream" not in headers.get("content-type", ""):
                await ctx.write(M.continue_for(kind))
                return  # not a stream that started: nothing to guard
            held = True
            continue
        if kind != "response_body" or not held:
            await ctx.write(M.continue_for(kind))
            continue
        chunk = req.response_body
        pending += 1
        size += len(chunk.body)
        decided, err, err_body = _first_event_error(state, backend, reader, chunk.body, chunk.end_of_stream)
        if not decided and size < MAX_HOLD:
            continue
        await _release(ctx, err, err_body, pending)
        if err is not None:
            log.info("backend %s opened a stream with an error (%s): failing the attempt with %d",
                     backend, err.message, err.status)
        return


async def _release(ctx: Any, err: Any | None, err_body: bytes, pending: int) -> None:
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
