"""The router-level stream: one per client request.

Request headers: which dialect, which operation, which tenant. Request body:
which model, which primary backend; translate for it, set the route and the
provider's credentials. Response body (streamed, headers skipped): translate
whatever backend answered (learned from an attribute, so it is right after
failover) back into the client's dialect, and account for usage.

Messages per request: request headers, request body, and usually one
response chunk. Everything a failover attempt needs travels in internal
headers; nothing is shared with the upstream stage's streams.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from . import messages as M
from . import metrics
from . import protocol as P
from .admission import Rejection, Ticket
from .client_api import ClientCall, api_key, auth_hint, classify, model_listing
from .codecs import get_codec
from .codecs.base import Codec
from .codecs.ir import ChatRequest
from .config import ResolvedBackend
from .errors import GatewayError, overloaded_as_503
from .health import State
from .pricing import cost_usd
from .responses import ResponseTranslator, make_translator
from .state import GatewayState

log = logging.getLogger("llm_gateway.router")


class RouterStream:
    """State of one client request across its request and response phases."""

    __slots__ = ("body", "call", "client", "ir", "log_fields", "model", "primary", "priority", "state", "stream",
                 "t0", "t_first", "tenant", "ticket")

    def __init__(self, state: GatewayState):
        self.state = state
        self.call: ClientCall | None = None
        self.client: Codec | None = None
        self.tenant = ""
        self.model = ""
        self.stream = False
        self.body: dict[str, Any] | None = None
        self.ir: ChatRequest | None = None
        self.primary = ""
        self.t0 = 0.0
        self.t_first = 0.0  # first response byte
        self.log_fields: dict[str, Any] | None = None  # for Envoy's access log, set when the response ends
        self.priority: str | None = None  # x-priority header
        self.ticket: Ticket | None = None  # admission reservation, until settled

    # ---- request phase ------------------------------------------------------
    def on_request_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        self.t0 = time.perf_counter()
        headers = M.headers_of(msg)
        call = classify(headers.get(":method", ""), headers.get(":path", "/"), headers)
        self.call = call
        self.client = get_codec(call.dialect)
        self.priority = headers.get("x-priority")
        tenant = self._authenticate(call, headers)
        if isinstance(tenant, GatewayError):
            return self._reject(tenant, "authentication")
        self.tenant = tenant
        if call.operation in ("list_models", "get_model"):
            return self._models(call)
        if call.operation != "chat":
            return self._reject(GatewayError("not_found", f"no such endpoint: {headers.get(':method')} "
                                             f"{headers.get(':path', '/').partition('?')[0]}"), "not_found")
        if msg.end_of_stream:
            return self._reject(GatewayError("invalid_request", "request body is required"), "invalid_request")
        return M.CONTINUE_REQUEST_HEADERS

    def _authenticate(self, call: ClientCall, headers: dict[str, str]) -> str | GatewayError:
        cfg = self.state.config
        if not cfg.tenants:
            return "anonymous"
        key = api_key(call, headers)
        if not key:
            return GatewayError("authentication", f"missing API key: {auth_hint(call.dialect)}")
        tenant = self.state.tenant_for_key(key)
        if tenant is None:
            return GatewayError("authentication", "invalid API key")
        return tenant

    def _models(self, call: ClientCall) -> pb.ProcessingResponse:
        names = list(self.state.config.models)
        if call.operation == "get_model":
            if call.model not in self.state.config.models:
                return self._reject(GatewayError("not_found", f"model '{call.model}' is not served by this gateway",
                                                 param="model"), "not_found")
            names = [call.model]
        body = model_listing(call.dialect, names, one=call.model if call.operation == "get_model" else None)
        return M.immediate(200, orjson.dumps(body), details="model_listing")

    def _reject(self, err: GatewayError, reason: str) -> pb.ProcessingResponse:
        assert self.client is not None and self.call is not None
        metrics.REJECTED.labels(self.call.dialect, reason).inc()
        headers = dict(err.headers) if isinstance(err, Rejection) else dict(self.ticket.headers if self.ticket else {})
        if err.retry_after is not None:
            headers["retry-after"] = str(max(1, round(err.retry_after)))
        status = overloaded_as_503(err.status)
        return M.immediate(status, orjson.dumps(self.client.render_error(err)), headers, details=reason)

    async def on_request_body(self, msg: pb.HttpBody) -> pb.ProcessingResponse:
        try:
            resp = await self._route(msg.body)
        except GatewayError as err:
            self.close()  # refund a reservation made before the error
            return self._reject(err, err.kind)
        if self.ticket is not None and self.ticket.headers:
            for namespace, fields in self.ticket.metadata.items():
                M.add_metadata(resp, namespace, fields)
        return resp

    async def _route(self, raw: bytes) -> pb.ProcessingResponse:
        call, client, state = self.call, self.client, self.state
        assert call is not None and client is not None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise GatewayError("invalid_request", f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise GatewayError("invalid_request", "request body must be a JSON object")
        model = call.model if call.dialect == "gemini" else body.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError("invalid_request", "missing required field 'model'", param="model")
        chain = state.router.chain(model)
        if chain is None:
            raise GatewayError("not_found", f"model '{model}' does not exist or is not served by this gateway",
                               param="model")
        self.model = model
        self.stream = call.stream if call.dialect == "gemini" else body.get("stream") is True
        self.body = body
        primary = await self._admit(model, body) if state.admission else self._choose_backend(model)
        self.primary = primary.name
        target = state.router.targets[primary.name]
        if primary.dialect == call.dialect:
            out = self._same_dialect_body(body, primary.upstream_model)
        else:
            self.ir = client.parse_request(body, call.model, call.stream)
            settings = state.config.models[model]
            out = get_codec(primary.dialect).build_request(
                self.ir, primary.upstream_model, default_max_tokens=settings.default_max_tokens,
                drop_unsupported=settings.drop_unsupported)
        new_body = orjson.dumps(out) if out is not None else None
        set_headers = {
            P.ROUTE_HEADER: model,
            P.PRETRANSLATED_HEADER: primary.name,
            P.VERSION_HEADER: state.config.version,
            ":path": target.path(self.stream),
            **target.headers,
        }
        if self.stream:
            set_headers[P.STREAM_HEADER] = "1"
        if new_body is not None:
            set_headers["content-length"] = str(len(new_body))
        # The client's own key must never reach a provider; compressed
        # responses could not be translated.
        remove = [h for h in (*P.CLIENT_AUTH_HEADERS, *state.router.provider_headers) if h not in target.headers]
        remove.append("accept-encoding")
        return M.request_body_response(set_headers=set_headers, remove=remove, body=new_body, clear_route_cache=True)

    def _choose_backend(self, model: str) -> ResolvedBackend:
        """First backend in failover order that is not cooling down.

        When every backend is cooling down: 429 with the shortest Retry-After
        if they are all rate limited, otherwise the first one is tried anyway
        (Envoy still fails over across the rest).
        """
        state = self.state
        health = state.health
        skipped: list[ResolvedBackend] = []

        def skip(b: ResolvedBackend) -> bool:
            if health.skip(b.name):
                skipped.append(b)
                return True
            return False

        primary = state.router.primary(model, skip)
        for b in skipped:
            metrics.SKIPPED.labels(model, b.name).inc()
        if primary is not None:
            return primary
        chain = state.router.chain(model) or []
        waits = [health.retry_after(b.name) for b in chain]
        if waits and all(w is not None for w in waits):
            wait = min(w for w in waits if w is not None)
            raise GatewayError("rate_limit", f"every backend of model '{model}' is rate limited; "
                               f"retry in {max(1, round(wait))} s", retry_after=wait)
        return chain[0]

    async def _admit(self, model: str, body: dict[str, Any]) -> ResolvedBackend:
        """Health first (cooling backends are skipped), then budgets: the first
        healthy backend with headroom becomes the primary (README "Budgets")."""
        state = self.state
        assert state.admission is not None
        priority = state.admission.priority(self.tenant, self.priority)
        chain = state.router.chain(model) or []
        health = state.health
        healthy = [b for b in chain if not health.skip(b.name)]
        # Recovery probes this request was just granted: only the chosen one is used.
        probes = [b for b in healthy if health.state(b.name) == State.PROBING]
        for b in chain:
            if b not in healthy:
                metrics.SKIPPED.labels(model, b.name).inc()
        ticket: Ticket | None = None
        try:
            ticket = await state.admission.admit(self.tenant, priority, model, body,
                                                 healthy or [self._choose_backend(model)])
        finally:
            for b in probes:
                if ticket is None or b.name != ticket.backend.name:
                    health.release(b.name)
        self.ticket = ticket
        return ticket.backend

    def close(self) -> None:
        """Settle a reservation the response never reached: a failure before
        the response is refunded; a response cut short keeps its reservation."""
        ticket, admission = self.ticket, self.state.admission
        if ticket is not None and admission is not None and not ticket.settled:
            admission.settle(ticket, 200 if ticket.first_byte else 0, "", None)

    def _same_dialect_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any] | None:
        """Pass-through: only the model name changes (and OpenAI streams ask for usage)."""
        changed = False
        if "model" in body and body["model"] != upstream_model:
            body = {**body, "model": upstream_model}
            changed = True
        if self.stream and self.call is not None and self.call.dialect == "openai":
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                # Usage is needed for accounting; the extra chunk is removed from the client's stream.
                body = {**body, "stream_options": {**(options if isinstance(options, dict) else {}),
                                                   "include_usage": True}}
                changed = True
        return body if changed else None

    # ---- response phase -----------------------------------------------------
    def translator(self, status: int, backend_name: str) -> ResponseTranslator:
        assert self.client is not None and self.call is not None
        self.t_first = time.perf_counter()
        if self.ticket is not None:
            self.ticket.first_byte = time.perf_counter()
        backend = self.state.config.backends.get(backend_name)
        if backend is not None and backend.dialect != self.call.dialect and self.ir is None and self.body:
            # Failover landed on another dialect than the primary's: the IR of
            # the client's request is needed to encode its stream.
            try:
                self.ir = self.client.parse_request(self.body, self.call.model, self.call.stream)
            except GatewayError:
                self.ir = None
        return make_translator(
            client=self.client, backend=backend, status=status, stream=self.stream,
            model=self.model, ir=self.ir, body=self.body, on_done=self._done)

    def _done(self, status: int, backend: str, usage: Any) -> None:
        assert self.call is not None
        metrics.child(metrics.REQUESTS, self.call.dialect, self.model, backend or "none", str(status)).inc()
        self._observe_timing(status, backend, usage)
        self._learn_health(status, backend)
        if self.ticket is not None and self.state.admission is not None:
            self.state.admission.settle(self.ticket, status, backend, usage)
        if usage is not None:
            metrics.record_usage(self.model, backend, usage.input_tokens, usage.output_tokens,
                                 usage.cached_input_tokens)


    def _observe_timing(self, status: int, backend: str, usage: Any) -> None:
        """Latency metrics and the access-log fields of a finished request."""
        end = time.perf_counter()
        duration, ttft = end - self.t0, self.t_first - self.t0
        label = backend or "none"
        metrics.child(metrics.DURATION, self.model, label).observe(duration)
        output = usage.output_tokens if usage is not None else 0
        if self.stream and 200 <= status < 300:
            metrics.child(metrics.TTFT, self.model, label).observe(ttft)
            if output > 1:
                metrics.child(metrics.TPOT, self.model, label).observe((end - self.t_first) / (output - 1))
        fields: dict[str, Any] = {"tenant": self.tenant, "model": self.model, "backend": backend,
                                  "dialect": self.call.dialect if self.call else "", "stream": self.stream,
                                  "ttfb_ms": round(ttft * 1000, 1)}
        if usage is not None:
            fields.update(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                          cached_input_tokens=usage.cached_input_tokens)
            answered = self.state.config.backends.get(backend)
            if answered is not None and answered.price is not None:
                cost = cost_usd(answered.price, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens)
                metrics.child(metrics.COST, self.model, backend, self.tenant).inc(cost)
                fields["cost_usd"] = round(cost, 8)
        self.log_fields = fields

    def _learn_health(self, status: int, backend: str) -> None:
        """Update backend health from how this request ended."""
        health, cfg = self.state.health, self.state.config
        answered = cfg.backends.get(backend)
        primary = cfg.backends.get(self.primary)
        if answered is None or primary is None:
            return
        if answered.tier > primary.tier:
            # The primary's tier failed (perhaps without any response): count it.
            metrics.FAILOVERS.labels(self.model, primary.name, answered.name).inc()
            health.failure(primary.name)
        if 200 <= status < 300:
            health.success(answered.name)


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
            resp = stream.on_request_headers(req.request_headers)
        elif kind == "request_body":
            resp = await stream.on_request_body(req.request_body)
        elif kind == "response_body":
            if translator is None:
                code = M.attribute(req, P.ATTR_RESPONSE_CODE)
                backend = M.attribute(req, P.ATTR_BACKEND)
                translator = stream.translator(int(code or 0), str(backend or ""))
            chunk = req.response_body
            resp = M.response_body_response(translator.feed(chunk.body, chunk.end_of_stream))
            if stream.log_fields is not None:
                resp = M.with_metadata(resp, P.ACCESS_LOG_NAMESPACE, stream.log_fields)
                stream.log_fields = None
        else:
            resp = M.continue_for(kind)
        metrics.child(metrics.OVERHEAD, P.STAGE_ROUTER, kind).observe(time.perf_counter() - t)
        await ctx.write(resp)
        if resp.WhichOneof("response") == "immediate_response":
            return
