"""The per-attempt upstream stream (adapter to ``ext_proc.request.attempt``).

Envoy runs this stage for an attempt only when the attempt goes to a backend
other than the one the router stage translated for (CEL matcher in the
rendered config).
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import metrics
from .. import protocol as P
from ..request.attempt import AttemptContext, AttemptFailure, retranslate
from ..state import GatewayState


def _context(req: pb.ProcessingRequest) -> AttemptContext:
    """The route's metadata and the chosen host, sent as attributes with the first message."""
    return AttemptContext(
        backend=str(M.attribute(req, P.ATTR_BACKEND) or ""),
        model=str(M.attribute(req, P.ATTR_ROUTE_MODEL) or ""),
        primary=str(M.attribute(req, P.ATTR_ROUTE_PRIMARY) or ""),
        stream=M.attribute(req, P.ATTR_ROUTE_STREAM) is True,
        version=str(M.attribute(req, P.ATTR_ROUTE_VERSION) or ""),
        path=M.headers_of(req.request_headers).get(":path", ""),
    )


def translate_attempt(state: GatewayState, attempt: AttemptContext, raw: bytes) -> pb.ProcessingResponse:
    result = retranslate(state, attempt, raw)
    if isinstance(result, AttemptFailure):
        return M.immediate(result.status, result.body, details="attempt_translation")
    return M.request_body_response(
        set_headers=result.set_headers, remove=result.remove_headers, body=result.body
    )


async def run(states: dict[str, GatewayState], current: GatewayState, ctx: Any) -> None:
    """Serve one upstream-stage gRPC stream (one attempt), under the config
    version the request was routed with (it may predate a live switch)."""
    attempt: AttemptContext | None = None
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        t = time.perf_counter()
        if kind == "request_headers":
            attempt = _context(req)
            resp = M.CONTINUE_REQUEST_HEADERS
        elif kind == "request_body" and attempt is not None:
            resp = translate_attempt(states.get(attempt.version, current), attempt, req.request_body.body)
        else:
            resp = M.continue_for(kind)
        metrics.child(metrics.OVERHEAD, P.STAGE_UPSTREAM, kind).observe(time.perf_counter() - t)
        await ctx.write(resp)
