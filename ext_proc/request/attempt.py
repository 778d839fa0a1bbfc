"""A failover attempt to another backend than the primary: re-translate its body.

The body arrives as the router stage built it, in the primary backend's
dialect; it is parsed with that dialect's codec and built for the attempt's
backend. Path, model and credentials are reset on every attempt: header
mutations of an earlier attempt persist into the next one
(docs/architecture.md, "Envoy behaviours").

``refused``: an attempt's answer when its provider refused the gateway's own
credentials (401/403), or has no model by the name the config gives it (404),
turned into the 502 it is for the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from .. import metrics
from ..catalog.limits import clamp_to_model
from ..dialects import DEFAULT, get_dialect
from ..errors import GatewayError
from ..state import GatewayState
from ..translation import caching, names
from . import operations as ops
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
    path: str = ""  # the request's path as the earlier attempt left it (names a non-chat operation)


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
    operation = ops.attempt_operation(cfg, router.targets, model, attempt.path)
    try:
        body = orjson.loads(raw)
        completion = operation == "chat" and src.is_completion(body)
        if completion and (src.wire != dst.wire or dst.completion_path is None):
            raise GatewayError(
                "api_error", f"backend '{target.name}' cannot serve a text completion", status=502
            )
        if operation != "chat":
            out = ops.retranslate(cfg, operation, source, target, model, body)
        elif src.wire == dst.wire:
            body = src.client_body(body)
            out = dst.passthrough_body(body, target.upstream_model, stream) or body
        else:
            ir = src.codec.parse_request(body, source.upstream_model, stream)
            ir.stream = stream
            default_max = clamp_to_model(
                ir,
                target.caps,
                settings.default_max_tokens,
                dst.codec.media,
                settings.drop_unsupported,
                dst.codec.dialect,
            )
            prepare_reasoning(ir, target, dst.codec)
            if settings.auto_cache and dst.codec.cache_breakpoints:
                caching.place_breakpoints(ir, dst.codec.cache_breakpoints)
            out = dst.codec.build_request(
                names.fit_request(ir, names.rules_for(dst.codec, target.caps)),
                target.upstream_model,
                default_max_tokens=default_max,
                drop_unsupported=settings.drop_unsupported,
            )
        if operation == "chat" and not completion:  # the model's limits are a chat request's (catalog)
            out = dst.fit_body(out, target.caps)
        out = dest.body(out)
        new_body = serialise(out)
    except GatewayError as err:
        return _fail(target.dialect, err)
    except (orjson.JSONDecodeError, TypeError) as e:
        return _fail(target.dialect, GatewayError("api_error", f"attempt body unreadable: {e}", status=500))
    metrics.UPSTREAM_TRANSLATIONS.labels(model, source.name, target.name).inc()
    path = dest.operation_path(operation) if operation != "chat" else None
    if completion and dst.completion_path is not None:
        path = target.provider.base_path + dst.completion_path
    set_headers = dest.request_headers(stream, new_body, path)
    # Client headers the primary's provider could receive and this one may not.
    unlisted = router.targets[source.name].forwarded - dest.forwarded
    remove = [h for h in (*router.provider_headers, *sorted(unlisted)) if h not in set_headers]
    return AttemptPlan(set_headers, remove, new_body)


def _fail(dialect: str, err: GatewayError) -> AttemptFailure:
    return AttemptFailure(err.status, orjson.dumps(get_dialect(dialect).codec.render_error(err)))


def refused(state: GatewayState, backend: str, status: int, body: bytes) -> bytes:
    """A provider's 401/403 to the gateway's own credentials, as the 502 error
    body of the backend's dialect: the provider's words, and whose key it was. A 404
    (the backend's model or deployment is not there) likewise names the backend.
    (A client's own key never reaches a provider: the router stage checks it.)"""
    b = state.config.backends.get(backend)
    codec = get_dialect(b.dialect if b is not None else DEFAULT.name).codec
    try:
        said = codec.parse_error(status, body).message
    except Exception:  # an odd body must not hide the refusal
        said = body.decode("utf-8", "replace")[:300]
    if status == 404:  # the path and model were the gateway's: its config names what is not there
        upstream = f" '{b.upstream_model}'" if b is not None else ""
        log.warning(
            "backend %s: its provider has no model or deployment%s (HTTP 404): %s", backend, upstream, said
        )
        err = GatewayError(
            "api_error",
            f"backend '{backend}' is misconfigured: its provider has no model or deployment{upstream} "
            f"(HTTP 404: {said})",
            status=502,
        )
        return orjson.dumps(codec.render_error(err))
    metrics.CREDENTIAL_REFUSALS.labels(backend, str(status)).inc()
    log.warning("backend %s refused the gateway's credentials (HTTP %d): %s", backend, status, said)
    err = GatewayError(
        "api_error",
        f"the provider of backend '{backend}' refused the gateway's credentials (HTTP {status}: {said})",
        status=502,
    )
    return orjson.dumps(codec.render_error(err))
