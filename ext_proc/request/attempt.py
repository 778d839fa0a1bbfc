"""A failover attempt to another backend than the primary: re-translate its body.

The body arrives as the router stage built it, in the primary backend's
dialect; it is parsed with that dialect's codec and built for the attempt's
backend. Path, model and credentials are reset on every attempt: header
mutations of an earlier attempt persist into the next one
(docs/architecture.md, "Envoy behaviours").

``refused``: an attempt's answer when its provider refused the gateway's own
credentials (401/403), turned into the 502 it is for the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from .. import metrics
from ..dialects import DEFAULT, get_dialect
from ..errors import GatewayError
from ..state import GatewayState
from .plan import prepare_reasoning, serialise

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
    src, dst = get_dialect(source.dialect), get_dialect(target.dialect)
    dest = router.targets[target.name]
    try:
        body = orjson.loads(raw)
        if src.wire == dst.wire:
            body = src.client_body(body)
            out = dst.passthrough_body(body, target.upstream_model, stream) or body
        else:
            ir = src.codec.parse_request(body, source.upstream_model, stream)
            ir.stream = stream
            prepare_reasoning(ir, target, dst.codec)
            out = dst.codec.build_request(
                ir,
                target.upstream_model,
                default_max_tokens=settings.default_max_tokens,
                drop_unsupported=settings.drop_unsupported,
            )
        out = dest.body(out)
        new_body = serialise(out)
    except GatewayError as err:
        return _fail(target.dialect, err)
    except (orjson.JSONDecodeError, TypeError) as e:
        return _fail(target.dialect, GatewayError("api_error", f"attempt body unreadable: {e}", status=500))
    metrics.UPSTREAM_TRANSLATIONS.labels(model, source.name, target.name).inc()
    set_headers = dest.request_headers(stream, new_body)
    # Client headers the primary's provider could receive and this one may not.
    unlisted = router.targets[source.name].forwarded - dest.forwarded
    remove = [h for h in (*router.provider_headers, *sorted(unlisted)) if h not in set_headers]
    return AttemptPlan(set_headers, remove, new_body)


def _fail(dialect: str, err: GatewayError) -> AttemptFailure:
    return AttemptFailure(err.status, orjson.dumps(get_dialect(dialect).codec.render_error(err)))


def refused(state: GatewayState, backend: str, status: int, body: bytes) -> bytes:
    """A provider's 401/403 to the gateway's own credentials, as the 502 error
    body of the backend's dialect: the provider's words, and whose key it was.
    (A client's own key never reaches a provider: the router stage checks it.)"""
    b = state.config.backends.get(backend)
    codec = get_dialect(b.dialect if b is not None else DEFAULT.name).codec
    try:
        said = codec.parse_error(status, body).message
    except Exception:  # an odd body must not hide the refusal
        said = body.decode("utf-8", "replace")[:300]
    metrics.CREDENTIAL_REFUSALS.labels(backend, str(status)).inc()
    log.warning("backend %s refused the gateway's credentials (HTTP %d): %s", backend, status, said)
    err = GatewayError(
        "api_error",
        f"the provider of backend '{backend}' refused the gateway's credentials (HTTP {status}: {said})",
        status=502,
    )
    return orjson.dumps(codec.render_error(err))
