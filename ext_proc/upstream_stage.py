"""The per-attempt upstream stream: re-translate a request for a failover backend.

Envoy runs this stage for an attempt only when the attempt goes to a backend
other than the one the router stage translated for (CEL matcher in the
rendered config). The body then arrives in the primary backend's dialect; it
is parsed with that dialect's codec and built for the attempt's backend. Path,
model and credentials are reset, since header mutations of an earlier attempt
persist into the next one (DESIGN.md fact 9).
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
from .codecs import get_codec
from .errors import GatewayError
from .state import GatewayState

log = logging.getLogger("llm_gateway.upstream")


class Attempt:
    """What the attempt is about, from the route's metadata and the chosen host."""

    __slots__ = ("backend", "model", "primary", "stream", "version")

    def __init__(self, req: pb.ProcessingRequest):
        self.backend = str(M.attribute(req, P.ATTR_BACKEND) or "")
        self.model = str(M.attribute(req, P.ATTR_ROUTE_MODEL) or "")
        self.primary = str(M.attribute(req, P.ATTR_ROUTE_PRIMARY) or "")
        self.stream = M.attribute(req, P.ATTR_ROUTE_STREAM) is True
        self.version = str(M.attribute(req, P.ATTR_ROUTE_VERSION) or "")


def translate_attempt(state: GatewayState, attempt: Attempt, raw: bytes) -> pb.ProcessingResponse:
    cfg, router = state.config, state.router
    source = cfg.backends.get(attempt.primary)
    target = cfg.backends.get(attempt.backend)
    model, stream = attempt.model, attempt.stream
    if source is None or target is None or model not in cfg.models:
        log.error("attempt without routing context (source=%s target=%s model=%s)", source, target, model)
        err = GatewayError("api_error", "gateway routing context missing for this attempt", status=500)
        return _fail(target.dialect if target else "openai", err)
    settings = cfg.models[model]
    try:
        body = orjson.loads(raw)
        if source.dialect == target.dialect:
            if "model" in body:
                body["model"] = target.upstream_model
            out = body
        else:
            ir = get_codec(source.dialect).parse_request(body, source.upstream_model, stream)
            ir.stream = stream
            out = get_codec(target.dialect).build_request(
                ir, target.upstream_model, default_max_tokens=settings.default_max_tokens,
                drop_unsupported=settings.drop_unsupported)
    except GatewayError as err:
        # Final for this request: a local reply from an upstream filter is not retried.
        return _fail(target.dialect, err)
    except (orjson.JSONDecodeError, TypeError) as e:
        return _fail(target.dialect, GatewayError("api_error", f"attempt body unreadable: {e}", status=500))
    metrics.UPSTREAM_TRANSLATIONS.labels(model, source.name, target.name).inc()
    new_body = orjson.dumps(out)
    dest = router.targets[target.name]
    set_headers = {":path": dest.path(stream), "content-length": str(len(new_body)), **dest.headers}
    remove = [h for h in router.provider_headers if h not in dest.headers]
    return M.request_body_response(set_headers=set_headers, remove=remove, body=new_body)


def _fail(dialect: str, err: GatewayError) -> pb.ProcessingResponse:
    # Rendered in the backend's dialect: the router stage reads it as that
    # backend's error and renders it again for the client.
    return M.immediate(err.status, orjson.dumps(get_codec(dialect).render_error(err)), details="attempt_translation")


async def run(states: dict[str, GatewayState], current: GatewayState, ctx: Any) -> None:
    """Serve one upstream-stage gRPC stream (one attempt), under the config
    version the request was routed with (it may predate a live switch)."""
    attempt: Attempt | None = None
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        t = time.perf_counter()
        if kind == "request_headers":
            attempt = Attempt(req)  # attributes come with the first message
            resp = M.CONTINUE_REQUEST_HEADERS
        elif kind == "request_body" and attempt is not None:
            resp = translate_attempt(states.get(attempt.version, current), attempt, req.request_body.body)
        else:
            resp = M.continue_for(kind)
        metrics.child(metrics.OVERHEAD, P.STAGE_UPSTREAM, kind).observe(time.perf_counter() - t)
        await ctx.write(resp)
