"""A failover attempt to another backend than the primary: re-translate its body.

The body arrives as the router stage built it, in the primary backend's
dialect; it is parsed with that dialect's codec and built for the attempt's
backend. Path, model and credentials are reset on every attempt: header
mutations of an earlier attempt persist into the next one
(docs/architecture.md, "Envoy behaviours").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from .. import metrics
from ..dialects import DEFAULT, get_dialect
from ..errors import GatewayError
from ..state import GatewayState
from .plan import serialise

log = logging.getLogger("llm_gateway.upstream")


@dataclass(slots=True)
class AttemptContext:
    """What the attempt is about, from the route's metadata and the chosen host."""

    backend: str
    model: str
    primary: str
    stream: bool
    version: str


@dataclass(slots=True)
class AttemptPlan:
    set_headers: dict[str, str]
    remove_headers: list[str]
    body: bytes


@dataclass(slots=True)
class AttemptFailure:
    """Final for the request: a local reply from an upstream filter is never retried.
    Rendered in the attempt backend's dialect: the router stage reads it as that
    backend's error and renders it again for the client."""

    status: int
    body: bytes


def retranslate(state: GatewayState, attempt: AttemptContext, raw: bytes) -> AttemptPlan | AttemptFailure:
    cfg, router = state.config, state.router
    source = cfg.backends.get(attempt.primary)
    target = cfg.backends.get(attempt.backend)
    model, stream = attempt.model, attempt.stream
    if source is None or target is None or model not in cfg.models:
        log.error("attempt without routing context (source=%s target=%s model=%s)", source, target, model)
        err = GatewayError("api_error", "gateway routing context missing for this attempt", status=500)
        return _fail(target.dialect if target else DEFAULT.name, err)
    settings = cfg.models[model]
    try:
        body = orjson.loads(raw)
        if source.dialect == target.dialect:
            if "model" in body:
                body["model"] = target.upstream_model
            out = body
        else:
            ir = get_dialect(source.dialect).codec.parse_request(body, source.upstream_model, stream)
            ir.stream = stream
            out = get_dialect(target.dialect).codec.build_request(
                ir, target.upstream_model, default_max_tokens=settings.default_max_tokens,
                drop_unsupported=settings.drop_unsupported)
        new_body = serialise(out)
    except GatewayError as err:
        return _fail(target.dialect, err)
    except (orjson.JSONDecodeError, TypeError) as e:
        return _fail(target.dialect, GatewayError("api_error", f"attempt body unreadable: {e}", status=500))
    metrics.UPSTREAM_TRANSLATIONS.labels(model, source.name, target.name).inc()
    dest = router.targets[target.name]
    set_headers = dest.request_headers(stream, new_body)
    remove = [h for h in router.provider_headers if h not in set_headers]
    return AttemptPlan(set_headers, remove, new_body)


def _fail(dialect: str, err: GatewayError) -> AttemptFailure:
    return AttemptFailure(err.status, orjson.dumps(get_dialect(dialect).codec.render_error(err)))
