"""The response phase's end, as plain data: what a finished request did.

``finish(state, plan, status, backend, usage, t_first, t_end)`` computes a
``Finished`` record (cost, failover, health updates, access-log fields); it
changes nothing. ``apply(state, finished)`` then records it: metrics, backend
health, and the admission settlement. Kept apart so tests can check the
decisions without side effects, and the side effects without Envoy.
``keep`` is the dialect's own finish effect (``ResponseKeeper``): it sees the
bytes the client receives and, at the end, stores what a later request of the
conversation needs, before the last chunk goes out, so a next turn sent as
soon as the answer arrives finds it, on any replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..dialects import ResponseKeeper
from ..pricing import cost_usd
from ..state import GatewayState
from ..translation.ir import Usage
from .plan import RoutePlan


@dataclass(slots=True)
class Finished:
    status: int
    backend: str  # the backend that answered ("" when none did)
    usage: Usage | None
    duration: float
    ttft: float
    tpot: float | None  # streamed successes with more than one output token
    cost: float | None  # None: the answering backend has no price
    failover: tuple[str, str] | None  # (primary, answered) when a later tier answered
    healthy: str | None  # backend to mark healthy
    log_fields: dict[str, Any] = field(default_factory=dict)


def finish(
    state: GatewayState,
    plan: RoutePlan,
    status: int,
    backend: str,
    usage: Usage | None,
    t_first: float,
    t_end: float,
) -> Finished:
    cfg = state.config
    started = plan.started
    duration, ttft = t_end - started.t0, t_first - started.t0
    output = usage.output_tokens if usage is not None else 0
    ok = 200 <= status < 300
    tpot = (t_end - t_first) / (output - 1) if plan.stream and ok and output > 1 else None
    answered = cfg.backends.get(backend)
    cost = None
    fields: dict[str, Any] = {
        "tenant": started.tenant,
        "model": plan.model,
        "backend": backend,
        "dialect": started.dialect.name,
        "stream": plan.stream,
        "ttfb_ms": round(ttft * 1000, 1),
    }
    if usage is not None:
        fields.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
        if answered is not None and answered.price is not None:
            cost = cost_usd(
                answered.price,
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens,
                usage.cache_write_tokens,
            )
            fields["cost_usd"] = round(cost, 8)
    failover = None
    # A backend's tier is its place in this model's chain (it may serve other models at other tiers).
    in_chain = next((b for b in cfg.chains.get(plan.model, ()) if b.name == backend), None)
    if in_chain is not None and in_chain.tier > plan.primary.tier:
        # The primary's tier failed (perhaps without any response).
        failover = (plan.primary.name, in_chain.name)
    return Finished(
        status,
        backend,
        usage,
        duration,
        ttft,
        tpot,
        cost,
        failover,
        answered.name if answered is not None and ok else None,
        fields,
    )


def broken_answer(state: GatewayState, backend: str) -> None:
    """A 200 only the router stage found invalid: in Envoy's eyes no attempt failed
    (the observer saw a 200), so health learns it here, and at once: the next
    requests go elsewhere instead of meeting the same broken answer."""
    if backend:
        state.health.failure(backend, 502, certain=True)


def apply(state: GatewayState, plan: RoutePlan, done: Finished) -> None:
    """Record a finished request: metrics, health, admission settlement."""
    model, label = plan.model, done.backend or "none"
    metrics.child(metrics.REQUESTS, plan.started.dialect.name, model, label, str(done.status)).inc()
    metrics.child(metrics.DURATION, model, label).observe(done.duration)
    if plan.stream and 200 <= done.status < 300:
        metrics.child(metrics.TTFT, model, label).observe(done.ttft)
        if done.failover is None:  # an SLO is held against it (prefer: cheapest)
            state.pools.api_ttft.record(done.backend, done.ttft)
        if done.tpot is not None:
            metrics.child(metrics.TPOT, model, label).observe(done.tpot)
    if done.cost is not None:
        metrics.child(metrics.COST, model, done.backend, plan.started.tenant).inc(done.cost)
    if done.failover is not None:
        metrics.FAILOVERS.labels(model, *done.failover).inc()
        state.health.failure(done.failover[0])
    if done.healthy is not None:
        state.health.success(done.healthy)
    if plan.ticket is not None and state.admission is not None:
        state.admission.settle(plan.ticket, done.status, done.backend, done.usage)
    u = done.usage
    if u is not None:
        metrics.record_usage(
            model,
            done.backend,
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            cache_write=u.cache_write_tokens,
            reasoning=u.reasoning_tokens,
        )


async def keep(keeper: ResponseKeeper, data: bytes, end: bool, status: int) -> None:
    """Show the keeper what the client receives; at the end, let it keep the answer."""
    keeper.observe(data)
    if end:
        await keeper.keep(status)
