"""The router-level stream: one per client request (adapter to ``ext_proc.request``).

Request headers -> ``plan.start`` (and ``plan.serve_state`` for an operation
on stored conversation state); request body -> ``plan.plan``; response body
(streamed, headers skipped: the status and the answering backend arrive as
attributes with the first chunk) -> a ``responses`` translator, and when the
response ends ``finish`` (and the dialect's keeper, before the last chunk
goes out). Messages per request: request headers, request
body, and usually one response chunk. Everything a failover attempt needs
travels in internal headers; nothing is shared with the upstream stage.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import metrics
from .. import protocol as P
from ..errors import GatewayError
from ..request import finish as F
from ..request.plan import Answer, RoutePlan, Started, plan, serve_state, start
from ..request.responses import ResponseTranslator, make_translator
from ..state import GatewayState
from ..translation.ir import Usage

log = logging.getLogger("llm_gateway.router")


class RouterStream:
    """State of one client request across its request and response phases."""

    __slots__ = ("log_fields", "plan", "started", "state", "t_first")

    def __init__(self, state: GatewayState):
        self.state = state
        self.started: Started | None = None
        self.plan: RoutePlan | None = None
        self.t_first = 0.0  # first response byte
        self.log_fields: dict[str, Any] | None = None  # for Envoy's access log, set when the response ends

    async def on_request_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        result = start(self.state, M.headers_of(msg), msg.end_of_stream)
        if isinstance(result, Started) and result.call.operation == "state":
            result = await serve_state(self.state, result)
        if isinstance(result, Answer):
            return _immediate(result)
        self.started = result
        return M.CONTINUE_REQUEST_HEADERS

    async def on_request_body(self, msg: pb.HttpBody) -> pb.ProcessingResponse:
        assert self.started is not None
        result = await plan(self.state, self.started, msg.body)
        if isinstance(result, Answer):
            return _immediate(result)
        self.plan = result
        resp = M.request_body_response(set_headers=result.set_headers, remove=result.remove_headers,
                                       body=result.new_body, clear_route_cache=True)
        ticket = result.ticket
        if ticket is not None and ticket.headers:
            for namespace, fields in ticket.metadata.items():
                M.add_metadata(resp, namespace, fields)
        return resp

    def translator(self, status: int, backend_name: str) -> ResponseTranslator:
        p = self.plan
        assert p is not None
        self.t_first = time.perf_counter()
        if p.ticket is not None:
            p.ticket.first_byte = self.t_first
        client = p.started.dialect
        backend = self.state.config.backends.get(backend_name)
        if backend is not None and backend.dialect != client.name and p.ir is None:
            # Failover landed on another dialect than the primary's: the IR of
            # the client's request is needed to encode its stream.
            try:
                p.ir = client.codec.parse_request(p.body, p.started.call.model, p.started.call.stream)
            except GatewayError:
                p.ir = None
        return make_translator(client=client, backend=backend, status=status, stream=p.stream,
                               model=p.model, ir=p.ir, body=p.body, on_done=self._done)

    def _done(self, status: int, backend: str, usage: Usage | None) -> None:
        assert self.plan is not None
        done = F.finish(self.state, self.plan, status, backend, usage, self.t_first, time.perf_counter())
        F.apply(self.state, self.plan, done)
        self.log_fields = done.log_fields

    def close(self) -> None:
        """Settle a reservation the response never reached: a failure before
        the response is refunded; a response cut short keeps its reservation."""
        ticket = self.plan.ticket if self.plan is not None else None
        admission = self.state.admission
        if ticket is not None and admission is not None and not ticket.settled:
            admission.settle(ticket, 200 if ticket.first_byte else 0, "", None)


def _immediate(answer: Answer) -> pb.ProcessingResponse:
    return M.immediate(answer.status, answer.body, answer.headers, details=answer.reason)


async def run(state: GatewayState, ctx: Any) -> None:
    """Serve one router-stage gRPC stream; a reservation is settled however it ends
    (a client that disconnects cancels the stream)."""
    stream = RouterStream(state)
    try:
        await _serve(stream, ctx)
    finally:
        stream.close()


async def _serve(stream: RouterStream, ctx: Any) -> None:
    translator: ResponseTranslator | None = None
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        t = time.perf_counter()
        if kind == "request_headers":
            resp = await stream.on_request_headers(req.request_headers)
        elif kind == "request_body":
            resp = await stream.on_request_body(req.request_body)
        elif kind == "response_body":
            if translator is None:
                code = M.attribute(req, P.ATTR_RESPONSE_CODE)
                backend = M.attribute(req, P.ATTR_BACKEND)
                translator = stream.translator(int(code or 0), str(backend or ""))
            chunk = req.response_body
            out = translator.feed(chunk.body, chunk.end_of_stream)
            keeper = stream.plan.keeper if stream.plan is not None else None
            if keeper is not None:
                await F.keep(keeper, chunk.body if out is None else out, chunk.end_of_stream, translator.status)
            resp = M.response_body_response(out)
            if stream.log_fields is not None:
                resp = M.with_metadata(resp, P.ACCESS_LOG_NAMESPACE, stream.log_fields)
                stream.log_fields = None
        else:
            resp = M.continue_for(kind)
        metrics.child(metrics.OVERHEAD, P.STAGE_ROUTER, kind).observe(time.perf_counter() - t)
        await ctx.write(resp)
        if resp.WhichOneof("response") == "immediate_response":
            return
