"""The router-level stream: one per client request (adapter to ``ext_proc.request``).

Request headers -> ``plan.start`` (and ``plan.serve_state`` for an operation
on stored conversation state); request body -> ``plan.plan``; response body
(full duplex, headers skipped: the status and the answering backend arrive as
attributes with the first chunk) -> a ``responses`` translator, and when the
response ends ``finish`` (and the dialect's keeper, before the last chunk goes
out). Messages per request: request headers, request body, and usually one
response chunk each way. Everything a failover attempt needs travels in
internal headers; nothing is shared with the upstream stage.

Full duplex means the stage sends the client's bytes when it has them, not one
answer per chunk: a held-back chunk costs no message, and a stream can be ended
at any time. ``RouterStream.watch`` does that for a stream whose backend goes
quiet (no complete event for ``per_try_idle_timeout_ms``) or that runs past
``max_stream_duration_ms``: the client gets an error event in its dialect and
a well-formed end, and Envoy resets the provider's connection. Envoy's own
timers stand behind these (docs/architecture.md, "Envoy behaviours").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import metrics
from .. import protocol as P
from ..dialects import DEFAULT, get_dialect
from ..errors import GatewayError
from ..request import finish as F
from ..request import trace
from ..request.operations import OperationAnswer
from ..request.plan import Answer, RoutePlan, Started, plan, serve_state, start
from ..request.responses import InvalidAnswer, ResponseTranslator, make_translator
from ..state import GatewayState
from ..translation.ir import Usage

log = logging.getLogger("llm_gateway.router")

# Metric reasons of Envoy's replies to requests it never routed.
UNROUTED_REASONS = {408: "request_timeout", 413: "request_too_large"}


class RouterStream:
    """State of one client request across its request and response phases."""

    __slots__ = ("log_fields", "plan", "started", "state", "t_first", "trace_fields")

    def __init__(self, state: GatewayState):
        self.state = state
        self.started: Started | None = None
        self.plan: RoutePlan | None = None
        self.t_first = 0.0  # first response byte
        self.log_fields: dict[str, Any] | None = None  # for Envoy's access log, set when the response ends
        self.trace_fields: dict[str, Any] | None = None  # for Envoy's request span (tracing on), idem

    async def on_request_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        result = start(self.state, M.headers_of(msg), msg.end_of_stream)
        if isinstance(result, Started) and result.call.operation == "state":
            result = await serve_state(self.state, result)
        if isinstance(result, Answer):
            return self._immediate(result)
        self.started = result
        return _continue_as(result.dialect.name)

    async def on_request_body(self, msg: pb.HttpBody) -> pb.ProcessingResponse:
        assert self.started is not None
        result = await plan(self.state, self.started, msg.body)
        if isinstance(result, Answer):
            return self._immediate(result)
        self.plan = result
        resp = M.request_body_response(
            set_headers=result.set_headers,
            remove=result.remove_headers,
            body=result.new_body,
            clear_route_cache=True,
        )
        if result.pick is not None:  # the model cluster's override_host policy reads it
            M.add_metadata(resp, P.LB_NAMESPACE, {P.DESTINATION_KEY: ",".join(result.pick.order)})
        if self.state.config.tracing is not None:
            M.add_metadata(resp, P.TRACE_NAMESPACE, trace.planned(result))
        ticket = result.ticket
        if ticket is not None and ticket.headers:
            for namespace, fields in ticket.metadata.items():
                M.add_metadata(resp, namespace, fields)
        return resp

    def translator(self, status: int, backend_name: str) -> ResponseTranslator:
        p = self.plan
        if p is None:
            # Envoy answered a request it never routed (body too large, client too slow):
            # its reply, in the client's dialect when the request's headers said it.
            client = self.started.dialect if self.started is not None else DEFAULT
            return make_translator(
                client=client,
                backend=None,
                status=status,
                stream=False,
                model="",
                ir=None,
                body=None,
                on_done=lambda *_: metrics.REJECTED.labels(
                    client.name, UNROUTED_REASONS.get(status, "envoy")
                ).inc(),
                redact=self.state.redact,
            )
        self.t_first = time.perf_counter()
        if p.ticket is not None:
            p.ticket.first_byte = self.t_first
        client = p.started.dialect
        backend = self.state.config.backends.get(backend_name)
        if p.operation != "chat":
            args = (client, backend, status, p.model, self._done, self.state.redact)
            return OperationAnswer(*args, operation=p.operation, embed=p.embed, estimate_tokens=p.estimate)
        if backend is not None and get_dialect(backend.dialect).wire != client.wire and p.ir is None:
            # Failover landed on another dialect than the primary's: the IR of
            # the client's request is needed to encode its stream.
            try:
                p.ir = client.codec.parse_request(p.body, p.started.call.model, p.started.call.stream)
                p.ir.seal_key = self.state.seal_key(p.started.tenant)  # its answer is sealed too
            except GatewayError:
                p.ir = None
        return make_translator(
            client=client,
            backend=backend,
            status=status,
            stream=p.stream,
            model=p.model,
            ir=p.ir,
            body=p.body,
            on_done=self._done,
            redact=self.state.redact,
            # A failover from a renaming primary to a backend of the client's own wire: its
            # answer is translated (not passed through) so the client's tool names come back.
            restore_names=p.renamed,
            completion=p.started.call.operation == "completion",
        )

    async def body_response(
        self, translator: ResponseTranslator, body: bytes, end: bool
    ) -> pb.ProcessingResponse | None:
        """The bytes to send on for a response chunk (None: nothing yet)."""
        out = translator.feed(body, end)
        data = body if out is None else out
        await self.keep(data, end, translator.status)
        return self.send(data, end)

    async def keep(self, data: bytes, end: bool, status: int) -> None:
        """Show the dialect's keeper (if it keeps the answer) what the client receives;
        at the end, it keeps the answer before the last chunk goes out."""
        keeper = self.plan.keeper if self.plan is not None else None
        if keeper is not None:
            await F.keep(keeper, data, end, status)

    def send(self, body: bytes, end: bool) -> pb.ProcessingResponse | None:
        if not body and not end:
            return None
        resp = M.streamed_body(body, end)
        if self.log_fields is not None:
            M.add_metadata(resp, P.ACCESS_LOG_NAMESPACE, self.log_fields)
            self.log_fields = None
            if self.trace_fields:
                M.add_metadata(resp, P.TRACE_NAMESPACE, self.trace_fields)
        return resp

    async def watch(self, translator: ResponseTranslator, ctx: Any, lock: asyncio.Lock) -> None:
        """End a stream that went quiet or ran too long, with an error event in the client's dialect."""
        p = self.plan
        assert p is not None
        settings = self.state.config.models[p.model]
        idle = settings.per_try_idle_timeout_ms / 1000 or float("inf")
        deadline = p.started.t0 + (settings.max_stream_duration_ms / 1000 or float("inf"))
        if idle == deadline == float("inf"):
            return  # both bounds off (0 in the config)
        while True:
            now = time.perf_counter()
            wake = min(translator.last_event + idle, deadline)
            if now >= wake:
                break
            await asyncio.sleep(wake - now)
        if deadline <= now:
            bound, message = (
                "duration",
                (
                    f"the stream reached the gateway's maximum duration of "
                    f"{settings.max_stream_duration_ms / 1000:g} s"
                ),
            )
        else:
            bound, message = (
                "idle",
                (
                    f"backend '{translator.backend_name}' sent no event for "
                    f"{settings.per_try_idle_timeout_ms / 1000:g} s"
                ),
            )
        async with lock:
            if translator.done:
                return
            metrics.STREAM_TIMEOUTS.labels(p.model, translator.backend_name, bound).inc()
            log.info("stream of model %s ended by the gateway: %s", p.model, message)
            data = translator.abort(GatewayError("timeout", message))
            await self.keep(data, True, translator.status)
            resp = self.send(data, True)
            assert resp is not None
            await ctx.write(resp)

    def _done(self, status: int, backend: str, usage: Usage | None) -> None:
        assert self.plan is not None
        done = F.finish(self.state, self.plan, status, backend, usage, self.t_first, time.perf_counter())
        F.apply(self.state, self.plan, done)
        self.log_fields = done.log_fields
        if self.state.config.tracing is not None:
            self.trace_fields = trace.finished(self.state, self.plan, done)

    def _immediate(self, answer: Answer) -> pb.ProcessingResponse:
        resp = M.immediate(answer.status, answer.body, answer.headers, details=answer.reason)
        if self.state.config.tracing is not None:
            M.add_metadata(resp, P.TRACE_NAMESPACE, trace.local_reply(self.started, answer))
        return resp

    def close(self) -> None:
        """Settle a reservation the response never reached: a failure before
        the response is refunded; a response cut short keeps its reservation."""
        if self.plan is not None and self.plan.pick is not None:
            self.plan.pick.release()
        ticket = self.plan.ticket if self.plan is not None else None
        admission = self.state.admission
        if ticket is not None and admission is not None and not ticket.settled:
            admission.settle(ticket, 200 if ticket.first_byte else 0, "", None)


_CONTINUE_AS: dict[str, pb.ProcessingResponse] = {}


def _continue_as(dialect: str) -> pb.ProcessingResponse:
    """Continue, naming the client's dialect in dynamic metadata: if this
    worker dies later in the request, Envoy's own error reply is shaped in
    that dialect (``envoy_config.worker_failure_mappers``). Built once per dialect."""
    resp = _CONTINUE_AS.get(dialect)
    if resp is None:
        resp = _CONTINUE_AS[dialect] = M.with_metadata(
            M.CONTINUE_REQUEST_HEADERS, P.ACCESS_LOG_NAMESPACE, {P.DIALECT_KEY: dialect}
        )
    return resp


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
    # Streams only: the watchdog task, and the lock it shares with this loop for writes.
    watchdog: asyncio.Task[None] | None = None
    lock: asyncio.Lock | None = None
    try:
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
            elif kind in ("response_body", "response_trailers"):
                if translator is None:
                    code = M.attribute(req, P.ATTR_RESPONSE_CODE)
                    backend = M.attribute(req, P.ATTR_BACKEND)
                    translator = stream.translator(int(code or 0), str(backend or ""))
                    if translator.streams:
                        lock = asyncio.Lock()
                        watchdog = asyncio.create_task(stream.watch(translator, ctx, lock))
                async with lock or contextlib.nullcontext():
                    ended = await _respond(stream, translator, req, kind, ctx)
                metrics.child(metrics.OVERHEAD, P.STAGE_ROUTER, kind).observe(time.perf_counter() - t)
                if ended:
                    return
                continue
            else:
                resp = M.continue_for(kind)
            metrics.child(metrics.OVERHEAD, P.STAGE_ROUTER, kind).observe(time.perf_counter() - t)
            await ctx.write(resp)
            if resp.WhichOneof("response") == "immediate_response":
                return
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def _respond(
    stream: RouterStream, translator: ResponseTranslator, req: pb.ProcessingRequest, kind: str, ctx: Any
) -> bool:
    """Answer a response chunk (or trailers) in full-duplex mode; nothing once the response is
    complete. True when the response was aborted (its stream ends here)."""
    if kind == "response_body":
        if translator.done:
            return False  # the watchdog ended the stream: the rest of the provider's bytes go nowhere
        chunk = req.response_body
        try:
            resp = await stream.body_response(translator, chunk.body, chunk.end_of_stream)
        except InvalidAnswer as e:
            # Its 200 went to the client already: Envoy resets the response (a local
            # reply after headers), so the client sees a failure, not a success.
            F.broken_answer(stream.state, translator.backend_name)
            await ctx.write(M.immediate(502, e.body, details="invalid_answer"))
            return True
        if resp is not None:
            await ctx.write(resp)
        return False
    # Trailers end the response (providers rarely send them): the last bytes, then the trailers unchanged.
    if not translator.done:
        resp = await stream.body_response(translator, b"", True)
        if resp is not None:
            resp.response_body.response.body_mutation.streamed_response.end_of_stream = False
            await ctx.write(resp)
    await ctx.write(M.continue_for(kind))
    return False
