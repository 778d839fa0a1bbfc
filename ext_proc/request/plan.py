"""The request phase as plain functions over plain data: no Envoy, no gRPC.

``start(state, headers, end_of_stream)`` classifies the request line and
authenticates the client; it answers at once (``Answer``) when the request
is a model listing or is refused. An operation on conversation state the
gateway keeps is answered by ``serve_state`` (the dialect's, it may wait on
the store). ``plan(state, started, raw_body)`` reads the body, fills in what
it refers to from stored state (``Dialect.expand``), picks the primary
backend (health, then budgets), and translates the body for it: a
``RoutePlan`` says what to send and which headers to set (and carries the
dialect's ``ResponseKeeper``, if it keeps the answer), an ``Answer`` is a
refusal already rendered in the client's dialect.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import metrics
from .. import protocol as P
from ..admission import Rejection, Ticket
from ..catalog.limits import clamp_to_model
from ..config import ResolvedBackend
from ..conversations import StoreUnavailable
from ..dialects import (
    CLIENT_KEY_HEADERS,
    DEFAULT,
    ClientCall,
    Dialect,
    ResponseKeeper,
    api_key,
    classify,
    get_dialect,
)
from ..errors import GatewayError, overloaded_as_503
from ..pools import Pick
from ..pools import route as pools_route
from ..routing import Candidates
from ..routing.targets import BackendTarget
from ..state import GatewayState
from ..translation import caching, names, reasoning
from ..translation.codec import Codec
from ..translation.fields import check_depth, too_deep
from ..translation.ir import ChatRequest
from ..translation.operations import EmbedRequest
from . import operations as ops

log = logging.getLogger("llm_gateway.plan")


@dataclass(slots=True)
class Answer:
    """A reply the gateway gives itself, without touching any provider."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # metric label and Envoy's response details
    admission: str = ""  # why admission refused it (a budget), when it did


@dataclass(slots=True)
class Started:
    """A request whose headers were accepted: its body decides the rest."""

    call: ClientCall
    dialect: Dialect
    tenant: str
    priority: str | None  # the x-priority header
    t0: float
    header_names: tuple[str, ...] = ()  # the client's request headers (no pseudo-headers)


@dataclass(slots=True)
class RoutePlan:
    """Where the request goes and what it carries there."""

    started: Started
    model: str
    stream: bool
    body: dict[str, Any]  # the client's body, parsed
    primary: ResolvedBackend
    ir: ChatRequest | None  # the client's request in the IR, when it was translated
    ticket: Ticket | None  # the admission reservation, when budgets are on
    set_headers: dict[str, str]
    remove_headers: list[str]
    new_body: bytes | None  # None: the client's body goes unchanged
    keeper: ResponseKeeper | None = None  # the dialect's finish effect (keeps the answer for later turns)
    operation: str = "chat"  # or "embed", "count_tokens" (request/operations.py)
    embed: EmbedRequest | None = None  # an embeddings request in its IR
    estimate: int = 0  # input tokens the gateway estimated (an answer without a count reports them)
    # The primary's body spells some tool names its own way (``translation.names``): an answer
    # from a backend of the client's wire, reached by failover from it, carries that spelling too.
    renamed: bool = False
    pick: Pick | None = None  # a pool's servers, best first, when the primary is a pool


def reject(
    started: Started | ClientCall | None, err: GatewayError, reason: str, ticket: Ticket | None = None
) -> Answer:
    """``err`` as the client's dialect renders it, with rate-limit headers where known."""
    call = started.call if isinstance(started, Started) else started
    dialect = get_dialect(call.dialect) if call is not None else DEFAULT
    metrics.REJECTED.labels(dialect.name, reason).inc()
    headers = dict(err.headers) if isinstance(err, Rejection) else dict(ticket.headers if ticket else {})
    if err.retry_after is not None:
        headers["retry-after"] = str(max(1, round(err.retry_after)))
    status = dialect.error_status(GatewayError(err.kind, err.message, overloaded_as_503(err.status)))
    admission = (err.reason or err.kind) if isinstance(err, Rejection) else ""
    return Answer(status, orjson.dumps(dialect.codec.render_error(err)), headers, reason, admission)


def start(state: GatewayState, headers: dict[str, str], end_of_stream: bool) -> Started | Answer:
    """Request headers: dialect, operation, tenant. An ``Answer`` ends the request here."""
    t0 = time.perf_counter()
    method, path = headers.get(":method", ""), headers.get(":path", "/")
    call = classify(method, path, headers)
    dialect = get_dialect(call.dialect)
    tenant = authenticate(state, call, dialect, headers)
    if isinstance(tenant, GatewayError):
        return reject(call, tenant, "authentication")
    started = Started(
        call, dialect, tenant, headers.get("x-priority"), t0, tuple(h for h in headers if h[:1] != ":")
    )
    if call.operation in ("list_models", "get_model"):
        return models(state, started)
    if call.operation == "state":
        return started  # answered by serve_state, which may wait on the conversation store
    if call.operation not in ("chat", "completion", ops.EMBED, ops.COUNT):
        err = GatewayError("unknown_endpoint", f"no such endpoint: {method} {path.partition('?')[0]}")
        return reject(call, err, "not_found")
    if end_of_stream:
        return reject(call, GatewayError("invalid_request", "request body is required"), "invalid_request")
    return started


def authenticate(
    state: GatewayState, call: ClientCall, dialect: Dialect, headers: dict[str, str]
) -> str | GatewayError:
    """The tenant whose key the client sent ("anonymous" when no tenants are configured)."""
    if not state.config.tenants:
        return "anonymous"
    key = api_key(call, headers)
    if not key:
        return GatewayError("authentication", f"missing API key: {dialect.auth_hint}")
    tenant = state.tenant_for_key(key)
    if tenant is None:
        return GatewayError("authentication", "invalid API key")
    return tenant


def models(state: GatewayState, started: Started) -> Answer:
    call = started.call
    names = list(state.config.models)
    if call.operation == "get_model":
        if call.model not in state.config.models:
            return reject(
                call,
                GatewayError(
                    "not_found", f"model '{call.model}' is not served by this gateway", param="model"
                ),
                "not_found",
            )
        names = [call.model]
    one = call.model if call.operation == "get_model" else None
    return Answer(200, orjson.dumps(started.dialect.model_listing(names, one=one)), reason="model_listing")


async def serve_state(state: GatewayState, started: Started) -> Answer:
    """An operation on conversation state the gateway keeps (e.g. a stored answer), answered by
    the client's dialect; never routed to a backend."""
    try:
        status, body = await started.dialect.serve_state(state.conversations, started.tenant, started.call)
    except StoreUnavailable as e:
        return reject(started, GatewayError("overloaded", str(e)), "conversation_store")
    except GatewayError as err:
        return reject(started, err, err.kind)
    return Answer(status, orjson.dumps(body), reason="conversation_state")


async def plan(state: GatewayState, started: Started, raw: bytes) -> RoutePlan | Answer:
    """Request body: model, primary backend (health, then budgets), translated
    body; or the refusal, in the client's dialect."""
    ticket: list[Ticket] = []
    try:
        return await _plan(state, started, raw, ticket)
    except EstimatedCount as e:
        metrics.child(metrics.REQUESTS, started.dialect.name, e.model, "none", "200").inc()
        return Answer(200, e.body, e.headers, reason="token_count_estimate")
    except StoreUnavailable as e:
        return reject(started, GatewayError("overloaded", str(e)), "conversation_store")
    except GatewayError as err:
        if ticket and state.admission is not None:
            state.admission.settle(ticket[0], 0, "", None)  # refund: nothing was sent
        return reject(started, err, err.kind, ticket[0] if ticket else None)
    except Exception:
        # A gateway bug, not the client's fault: still an answer in the client's
        # dialect rather than a reset gRPC stream (Envoy's empty 500).
        log.exception("planning a %s request failed", started.dialect.name)
        if ticket and state.admission is not None:
            state.admission.settle(ticket[0], 0, "", None)
        return reject(
            started,
            GatewayError("api_error", "the gateway failed to process this request"),
            "internal",
            ticket[0] if ticket else None,
        )


async def _plan(state: GatewayState, started: Started, raw: bytes, admitted: list[Ticket]) -> RoutePlan:
    call, client = started.call, started.dialect
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth" in str(e):  # orjson stops at 1024 levels: past our own limit anyway
            raise too_deep() from None
        raise GatewayError("invalid_request", f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise GatewayError("invalid_request", "request body must be a JSON object")
    check_depth(body, raw)
    model = client.request_model(call, body)
    if not isinstance(model, str) or not model:
        raise GatewayError("invalid_request", "missing required field 'model'", param="model")
    chain = state.router.chain(model)
    if chain is None:
        raise GatewayError(
            "not_found", f"model '{model}' does not exist or is not served by this gateway", param="model"
        )
    wrong = ops.wrong_kind(model, call.operation, state.config.models[model].kind)
    if wrong is not None:
        raise wrong
    if call.operation == "completion":
        chain = completion_chain(state, client, model, chain)
    stream = client.request_stream(call, body) if call.operation in ("chat", "completion") else False
    # What the request refers to in stored state, filled in: admitted, translated and answered whole.
    body = await client.expand(state.conversations, started.tenant, call, body)
    candidates = Candidates.of(chain, state.health)
    if call.operation == ops.COUNT:
        return await _count(state, started, model, body, candidates, admitted)
    # A pool first in line: its server is picked now, or the request spills or is shed.
    pick = pools_route.before_admission(state, started.tenant, started.priority, model, body, candidates)
    ticket: Ticket | None = None
    try:
        if state.admission is not None:
            ticket = await admit(state, started, model, body, candidates)
            admitted.append(ticket)
            primary = ticket.backend
        else:
            primary = choose(model, candidates)
        pick = pools_route.for_primary(state, primary, pick, body)
        routed = _route(state, started, model, stream, body, primary, ticket)
    except BaseException:
        if pick is not None:
            pick.release()  # never sent: the server's in-flight count goes back
        raise
    routed.pick = pick
    routed.keeper = client.keeper(state.conversations, started.tenant, call, body)
    return routed


def _route(
    state: GatewayState,
    started: Started,
    model: str,
    stream: bool,
    body: dict[str, Any],
    primary: ResolvedBackend,
    ticket: Ticket | None,
) -> RoutePlan:
    call, client = started.call, started.dialect
    target = state.router.targets[primary.name]
    ir: ChatRequest | None = None
    embed: EmbedRequest | None = None
    path: str | None = None
    renamed = False
    if call.operation == ops.EMBED:
        embed = ops.parse_embed(client, body, call.model, call.action)
        out: dict[str, Any] | None = ops.build_embed(target.dialect, embed, primary.upstream_model)
        path = target.operation_path(ops.EMBED)
    elif target.dialect.wire == client.wire and not reasoning.carries_tokens(body):
        # Same wire format (the client's own dialect, or a cloud's variant of it): pass through.
        # (A body echoing signatures the gateway sealed is unsealed through the IR instead.)
        out = target.dialect.passthrough_body(body, primary.upstream_model, stream)
    else:
        ir = client.codec.parse_request(body, call.model, call.stream)
        reasoning.unseal_request(ir, state.seal_key(started.tenant))
        prepare_reasoning(ir, primary, target.dialect.codec)
        settings = state.config.models[model]
        # The target model's limits (catalog): clamp the output cap, refuse what cannot fit.
        default_max = clamp_to_model(ir, primary.caps, settings.default_max_tokens, settings.drop_unsupported)
        codec = target.dialect.codec
        if settings.auto_cache and codec.cache_breakpoints:
            caching.place_breakpoints(ir, codec.cache_breakpoints)
        rules = names.rules_for(codec, primary.caps)
        renamed = names.renames(ir, rules)
        out = codec.build_request(
            names.fit_request(ir, rules),  # ``ir`` stays the client's
            primary.upstream_model,
            default_max_tokens=default_max,
            drop_unsupported=settings.drop_unsupported,
        )
    sent = out if out is not None else body
    if call.operation == "chat":  # the model's limits are a chat request's (catalog)
        sent = target.dialect.fit_body(sent, primary.caps)
    sent = target.body(sent)
    new_body = serialise(sent) if sent is not body else None
    set_headers = {
        P.ROUTE_HEADER: model,
        P.PRETRANSLATED_HEADER: primary.name,
        P.VERSION_HEADER: state.config.version,
        **target.request_headers(stream, new_body, path),
    }
    if call.operation == "completion" and target.dialect.completion_path:
        set_headers[":path"] = primary.provider.base_path + target.dialect.completion_path
    if stream:
        set_headers[P.STREAM_HEADER] = "1"
    remove = _removed(state, started, target, set_headers)
    routed = RoutePlan(
        started,
        model,
        stream,
        body,
        primary,
        ir,
        ticket,
        set_headers,
        list(remove),
        new_body,
        renamed=renamed,
    )
    if embed is not None:
        routed.operation, routed.embed, routed.estimate = ops.EMBED, embed, ops.embed_estimate(embed)
    return routed


class EstimatedCount(Exception):
    """A token count the gateway answers itself (no backend of the model can count)."""

    def __init__(self, model: str, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(model)
        self.model, self.body, self.headers = model, body, headers


async def _count(
    state: GatewayState,
    started: Started,
    model: str,
    body: dict[str, Any],
    candidates: Candidates,
    admitted: list[Ticket],
) -> RoutePlan:
    """A token count: forwarded to the primary's counting endpoint when every backend of the
    model has one (admitted against the tenant's request and concurrency budgets: it reaches
    a provider), else answered with the gateway's estimate (``EstimatedCount``)."""
    call, client = started.call, started.dialect
    chat, ir = ops.count_chat(client, body, call.model)
    if not ops.forwards_counts(state.config, model):
        raise EstimatedCount(model, *ops.estimated_count(client, chat))
    ticket: Ticket | None = None
    if state.admission is not None:
        ticket = await admit(state, started, model, body, candidates, counting=True)
        admitted.append(ticket)
        primary = ticket.backend
    else:
        primary = choose(model, candidates)
    settings = state.config.models[model]
    target = state.router.targets[primary.name]
    out = ops.build_count(
        client,
        chat,
        ir,
        target.dialect,
        primary.upstream_model,
        settings.default_max_tokens,
        settings.drop_unsupported,
    )
    new_body = serialise(target.body(out))
    set_headers = {
        P.ROUTE_HEADER: model,
        P.PRETRANSLATED_HEADER: primary.name,
        P.VERSION_HEADER: state.config.version,
        **target.request_headers(False, new_body, target.operation_path(ops.COUNT)),
    }
    remove = _removed(state, started, target, set_headers)
    routed = RoutePlan(started, model, False, body, primary, ir, ticket, set_headers, list(remove), new_body)
    routed.operation = ops.COUNT
    return routed


def _removed(
    state: GatewayState, started: Started, target: BackendTarget, set_headers: dict[str, str]
) -> dict[str, None]:
    """Client headers that must not reach the provider. The client's own key must never
    reach a provider, nor any header the provider's forward_headers does not list (they act
    under the operator's key); compressed responses could not be translated."""
    remove = dict.fromkeys(
        h
        for h in (
            *CLIENT_KEY_HEADERS,
            *state.router.provider_headers,
            *(h for h in started.header_names if h not in target.forwarded),
        )
        if h not in set_headers
    )
    remove["accept-encoding"] = None
    return remove


def completion_chain(
    state: GatewayState, client: Dialect, model: str, chain: list[ResolvedBackend]
) -> list[ResolvedBackend]:
    """Text completions pass through untranslated: only backends of the client's wire serve them."""
    served = [
        b
        for b in chain
        if (d := state.router.targets[b.name].dialect).wire == client.wire and d.completion_path is not None
    ]
    if not served:
        raise GatewayError(
            "invalid_request",
            f"model '{model}' has no backend that serves text completions (use chat completions)",
            param="model",
        )
    return served


def prepare_reasoning(ir: ChatRequest, backend: ResolvedBackend, codec: Codec) -> None:
    """Map the request's reasoning controls onto what ``backend`` takes (its config, else its
    dialect's style): a 400 naming the client's field when the backend's config refuses them."""
    r = backend.reasoning
    policy = (
        reasoning.Policy(
            r.style,
            tuple(r.efforts) if r.efforts is not None else None,
            {str(k): v for k, v in r.budgets.items()},
            {str(k): v for k, v in r.levels.items()},
            r.min_budget,
            r.max_budget,
        )
        if r is not None
        else None
    )
    reasoning.resolve(ir, policy, codec.reasoning_styles)


def serialise(body: dict[str, Any]) -> bytes:
    """A body for a backend as bytes. orjson refuses nesting past 254 levels and
    integers past 64 bits: a 400, never a gateway failure (the nesting limit
    makes the first unreachable)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as e:
        raise GatewayError(
            "invalid_request", f"the request cannot be re-encoded for the backend: {e}"
        ) from None


def choose(model: str, candidates: Candidates) -> ResolvedBackend:
    """First backend in failover order that is not cooling down.

    When every backend is cooling down: 429 with the shortest Retry-After
    if they are all rate limited, otherwise the first one is tried anyway
    (Envoy still fails over across the rest).
    """
    primary = candidates.first()
    for b in candidates.skipped:
        metrics.SKIPPED.labels(model, b.name).inc()
    if primary is not None:
        return primary
    wait = candidates.retry_after()
    if wait is not None:
        raise GatewayError(
            "rate_limit",
            f"every backend of model '{model}' is rate limited; retry in {max(1, round(wait))} s",
            retry_after=wait,
        )
    return candidates.order[0]


async def admit(
    state: GatewayState,
    started: Started,
    model: str,
    body: dict[str, Any],
    candidates: Candidates,
    counting: bool = False,
) -> Ticket:
    """Health first (cooling backends are skipped), then budgets: the first
    healthy backend with headroom becomes the primary (README "Budgets")."""
    admission = state.admission
    assert admission is not None
    priority = admission.priority(started.tenant, started.priority)
    healthy = candidates.all_available()
    for b in candidates.skipped:
        metrics.SKIPPED.labels(model, b.name).inc()
    ticket: Ticket | None = None
    try:
        ticket = await admission.admit(
            started.tenant,
            priority,
            model,
            body,
            healthy or [choose(model, Candidates(candidates.order, state.health))],
            started.dialect,
            counting,
        )
    finally:
        candidates.release_probes(ticket.backend if ticket is not None else None)
    return ticket
