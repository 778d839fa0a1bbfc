"""Fail over provider 200s that are not answers (adapter to ``ext_proc.request.answer``).

Envoy can only retry an attempt until its response headers reach the client,
so this upstream stage holds an attempt's 200 response headers while
``AnswerCheck`` reads the response: a streamed attempt to its first complete
event, a non-streamed one to its end. A failure becomes the attempt's status
(502, or an in-band error's own status such as 503 or 429) with an error body
in the backend's dialect, which Envoy retries on the next tier like any other
failure; on the last tier the router stage renders it for the client. An
answer releases the headers and every chunk held meanwhile, and the stage
closes its gRPC stream so the rest of a stream flows without the ext_proc.

Which attempts it runs for, and what that costs, is decided by its matcher in
the rendered Envoy config (``envoy_config._answer_guard``): never for a non-200.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import protocol as P
from ..dialects import get_dialect
from ..request.answer import PASS, AnswerCheck, Failed
from ..request.operations import judge
from ..state import GatewayState

log = logging.getLogger("llm_gateway.answer_guard")


async def run(state: GatewayState, ctx: Any) -> None:
    check: AnswerCheck | None = None
    pending = 0  # body chunks answered only after the held headers
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        if kind == "response_headers":
            check = _check_for(state, req)
            if check is None:
                await ctx.write(M.continue_for(kind))
                return  # nothing to judge
            if req.response_headers.end_of_stream:  # a 200 without a body
                await _release(ctx, state, check.feed(b"", True) or PASS, 0, headers_only=True)
                return
            continue  # held until the answer is judged
        if kind != "response_body" or check is None:
            await ctx.write(M.continue_for(kind))
            continue
        chunk = req.response_body
        pending += 1
        verdict = check.feed(chunk.body, chunk.end_of_stream)
        if verdict is None:
            continue
        await _release(ctx, state, verdict, pending)
        return


def _check_for(state: GatewayState, req: pb.ProcessingRequest) -> AnswerCheck | None:
    headers = M.headers_of(req.response_headers)
    backend = str(M.attribute(req, P.ATTR_BACKEND) or "")
    b = state.config.backends.get(backend)
    if headers.get(":status") != "200" or b is None:
        return None
    stream = M.attribute(req, P.ATTR_ROUTE_STREAM) is True
    dialect = get_dialect(b.dialect)
    model = state.config.models.get(str(M.attribute(req, P.ATTR_ROUTE_MODEL) or ""))
    parse = judge(dialect, model.kind if model is not None else "chat")
    return AnswerCheck(
        dialect.codec, backend, stream, headers.get("content-type", ""), dialect.stream_framing, parse
    )


async def _release(
    ctx: Any, state: GatewayState, verdict: str | Failed, pending: int, headers_only: bool = False
) -> None:
    """Answer the held headers, then every body chunk received meanwhile, in order."""
    if not isinstance(verdict, Failed):
        await ctx.write(M.continue_for("response_headers"))
        for _ in range(pending):
            await ctx.write(M.CONTINUE_RESPONSE_BODY)
        return
    log.warning("attempt failed: %s", state.redact(verdict.error.message))
    mutation = M.header_mutation(
        {":status": str(verdict.status), "content-type": "application/json"}, remove=["content-length"]
    )
    common = pb.CommonResponse(header_mutation=mutation)
    if headers_only:
        # No body will follow: the error body is added to the headers-only response.
        common.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        common.body_mutation.body = verdict.body
    await ctx.write(pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=common)))
    for i in range(pending):
        await ctx.write(M.response_body_response(verdict.body if i == 0 else b""))
