"""Admission: reserve before any provider is touched, reconcile when the response ends.

Per request (router stage, once the model is known):

1. priority: the tenant's default, or ``x-priority`` capped by its maximum;
2. reservation: estimated input tokens + max output tokens (and their price
   at the dearest backend of the model);
3. one atomic check-and-reserve over the tenant's budgets and, in failover
   order, each candidate backend's quotas (batch must leave the interactive
   reserve free): the first backend with headroom is the primary, so a full
   primary spills over to the next tier;
4. rejections are immediate 429s with the time until this request would fit;
   a request larger than a whole budget is a 413 that says so.

When the response ends the reservation is replaced by the real usage (refunded
when the request failed), concurrency slots are released and the backend's
adaptive limit takes its AIMD step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..codecs.ir import Usage
from ..config import Adaptive, BackendLimits, GatewayConfig, Price, ResolvedBackend, TenantLimits
from ..errors import GatewayError
from ..pricing import cost_usd as _cost
from . import estimate
from .headers import METADATA_NAMESPACE, rate_limit_headers, retry_headers
from .store import (
    BUCKET,
    SLOTS,
    Adapt,
    Check,
    MemoryStore,
    Op,
    Outcome,
    Refund,
    Release,
    Store,
    StoreUnavailable,
)

log = logging.getLogger("llm_gateway.admission")

RANK = {"batch": 0, "interactive": 1}
UNLIMITED = 1e9
OVERLOAD_STATUSES = frozenset({429, 503, 504, 529})
DAY = 86_400.0
# Shared-store settlements are sent together every few ms: a refund or a freed
# concurrency slot shows up this much later, and Redis sees one call per batch.
SETTLE_BATCH_S = 0.005
_BASELINE_DRIFT = 0.02  # a latency baseline creeps up 2% per sample, so a lasting change is learned


@dataclass(slots=True)
class Rejection(GatewayError):
    """A refused request, with the rate-limit headers its answer carries."""

    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass(slots=True)
class Ticket:
    """One admitted request's reservation, until it is settled."""

    tenant: str
    priority: str
    model: str
    backend: ResolvedBackend
    tokens: int
    cost: float
    lease: str
    local: bool
    t0: float
    headers: dict[str, str]
    first_byte: float = 0.0
    settled: bool = False

    @property
    def metadata(self) -> dict[str, Any]:
        """Envoy dynamic metadata: the route adds these as response headers."""
        return {METADATA_NAMESPACE: self.headers}


@dataclass(slots=True)
class _Budget:
    name: str  # metric label: requests, tokens, usd, concurrent
    key: str
    cap: float  # bucket size
    rate: float = 0.0
    limit: float = 0.0  # the configured per-minute amount (x-ratelimit-limit-*), when it differs from cap


class Admission:
    def __init__(self, cfg: GatewayConfig, store: Store | None = None):
        self.cfg = cfg
        a = cfg.admission
        self.reserve_share = a.interactive_reserve
        self.memory = MemoryStore(a.lease_ttl_s, a.concurrency_retry_after_s)
        self.store: Store = store or self.memory
        self.tenants = {name: _tenant_budgets(name, t.limits) for name, t in cfg.tenants.items() if t.limits}
        self.priorities = {name: (t.priority, t.max_priority) for name, t in cfg.tenants.items()}
        self.backend_limits, self.prices = _backend_facts(cfg)
        self.adaptive: dict[str, Adaptive] = {
            n: lim.adaptive for n, lim in self.backend_limits.items() if lim.adaptive is not None}
        self.reserve_price = {m: _dearest([self.prices.get(b.name) for b in chain]) for m, chain in cfg.chains.items()}
        self.node = secrets.token_hex(6)
        self.counter = itertools.count()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.pending: list[Op] = []  # shared-store settlements waiting for the next batch
        self.flusher: asyncio.Task[Any] | None = None
        self.baseline: dict[str, float] = {}
        for name, ad in self.adaptive.items():
            metrics.child(metrics.BACKEND_LIMIT, name).set(ad.initial or ad.max)

    # ---- admission ------------------------------------------------------------
    def priority(self, tenant: str, header: str | None) -> str:
        default, top = self.priorities.get(tenant, ("interactive", "interactive"))
        if not header:
            return default
        wanted = header.strip().lower()
        if wanted not in RANK:
            raise GatewayError("invalid_request", f"x-priority must be 'interactive' or 'batch', not '{header}'",
                               param="x-priority")
        return wanted if RANK[wanted] <= RANK[top] else top

    async def admit(self, tenant: str, priority: str, model: str, body: dict[str, Any],
                    candidates: list[ResolvedBackend]) -> Ticket:
        """Reserve for this request on the first candidate with headroom, or raise ``Rejection``."""
        t0 = time.perf_counter()
        settings = self.cfg.models[model]
        tokens = estimate.input_tokens(body) + estimate.output_tokens(
            body, settings.reserve_output_tokens or settings.default_max_tokens)
        cost = _cost(self.reserve_price[model], tokens, 0, 0) if self.reserve_price[model] else 0.0
        budgets = self.tenants.get(tenant, ())
        amounts = {"requests": 1.0, "tokens": float(tokens), "usd": cost}
        tenant_checks = [_check(b, amounts.get(b.name, 0.0)) for b in budgets]
        batch = priority == "batch"
        order = _weighted_order(candidates)
        backend_checks = [self._backend_checks(b, tokens, batch) for b in order]
        self._never_fits(tenant, model, tenant_checks, backend_checks, tokens, priority)
        lease = f"{self.node}:{next(self.counter)}"
        try:
            outcome = await self.store.acquire(tenant_checks, backend_checks, lease)
        except StoreUnavailable as e:
            self._count(tenant, priority, "rejected", "store_unavailable")
            raise Rejection("overloaded", f"admission is unavailable: {e}", status=503,
                            retry_after=None, headers=retry_headers(1.0), reason="store_unavailable") from None
        headers = rate_limit_headers(budgets, outcome.levels)
        self._export_remaining(tenant, budgets, outcome.levels)
        if outcome.chosen < 0:
            raise self._rejection(tenant, priority, model, budgets, outcome, headers)
        backend = order[outcome.chosen]
        reason = "ok" if backend.tier == order[0].tier else "spillover"
        self._count(tenant, priority, "admitted", reason)
        metrics.child(metrics.BACKEND_IN_FLIGHT, backend.name).inc()
        return Ticket(tenant, priority, model, backend, tokens, cost, lease, outcome.local, t0, headers)

    def _backend_checks(self, b: ResolvedBackend, tokens: int, batch: bool) -> list[Check]:
        lim = self.backend_limits.get(b.name)
        if lim is None:
            return []
        share = self.reserve_share if batch else 0.0
        out = []
        if lim.requests_per_minute:
            rpm = float(lim.requests_per_minute)
            out.append(Check(BUCKET, f"b:{b.name}:rpm", rpm, rpm / 60, 1.0, share * rpm))
        if lim.tokens_per_minute:
            tpm = float(lim.tokens_per_minute)
            out.append(Check(BUCKET, f"b:{b.name}:tpm", tpm, tpm / 60, float(tokens), share * tpm))
        if lim.concurrent_requests or lim.adaptive:
            cap = float(min(lim.concurrent_requests or UNLIMITED, lim.adaptive.max if lim.adaptive else UNLIMITED))
            ad = lim.adaptive
            out.append(Check(SLOTS, f"b:{b.name}:conc", cap, keep=share,
                             adaptive=f"b:{b.name}:limit" if ad else "",
                             initial=float(ad.initial or ad.max) if ad else 0.0))
        return out

    def _never_fits(self, tenant: str, model: str, tenant_checks: list[Check], backend_checks: list[list[Check]],
                    tokens: int, priority: str) -> None:
        """413 for a request no amount of waiting would admit."""
        for c in tenant_checks:
            if c.kind == BUCKET and c.amount > c.cap:
                what = "USD per day" if c.key.endswith(":usd") else "tokens per minute"
                self._count(tenant, priority, "rejected", "too_large")
                raise Rejection("request_too_large", f"this request needs {_num(c.amount)} {what} (estimated input "
                                f"+ max output tokens) but tenant '{tenant}' has a budget of {_num(c.cap)}: it can "
                                f"never be admitted; lower max tokens or shorten the prompt", reason="too_large")
        if backend_checks and all(any(_static_never(c) for c in cs) for cs in backend_checks):
            self._count(tenant, priority, "rejected", "too_large")
            raise Rejection("request_too_large", f"this request reserves {tokens} tokens, more than any backend of "
                            f"model '{model}' allows per minute at {priority} priority: it can never be "
                            f"admitted; lower max tokens or shorten the prompt", reason="too_large")

    def _rejection(self, tenant: str, priority: str, model: str, budgets: list[_Budget] | tuple[()],
                   outcome: Outcome, headers: dict[str, str]) -> Rejection:
        wait = outcome.wait
        if outcome.failed >= 0:
            b = budgets[outcome.failed]
            reason = f"tenant_{b.name}"
            what = {"requests": "requests per minute", "tokens": "tokens per minute", "usd": "daily spend",
                    "concurrent": "concurrent requests"}[b.name]
            message = f"tenant '{tenant}' is over its {what} budget"
        else:
            reason = "backend_quota"
            message = f"no backend of model '{model}' has headroom for this {priority} request"
        self._count(tenant, priority, "rejected", reason)
        return Rejection("rate_limit", f"{message}; retry in {wait:.1f} s", retry_after=None,
                         headers={**headers, **retry_headers(wait)}, reason=reason)

    def _count(self, tenant: str, priority: str, decision: str, reason: str) -> None:
        metrics.child(metrics.ADMISSION, tenant, priority, decision, reason).inc()

    def _export_remaining(self, tenant: str, budgets: list[_Budget] | tuple[()], levels: list[float]) -> None:
        for b, level in zip(budgets, levels, strict=False):
            metrics.child(metrics.BUDGET_REMAINING, tenant, b.name).set(b.cap - level if b.name == "concurrent" else level)

    # ---- settlement -----------------------------------------------------------
    def settle(self, ticket: Ticket, status: int, backend_name: str, usage: Usage | None) -> None:
        """Replace the reservation by what was used (nothing, if the request failed)."""
        if ticket.settled:
            return
        ticket.settled = True
        metrics.child(metrics.BACKEND_IN_FLIGHT, ticket.backend.name).dec()
        answered = self.cfg.backends.get(backend_name)
        failed = status == 0 or status >= 400 or answered is None
        if failed:
            used, cost = 0, 0.0
        elif usage is None:  # produced something, amount unknown: the reservation stands
            used, cost = ticket.tokens, ticket.cost
        else:
            used = usage.input_tokens + usage.output_tokens
            price = self.prices.get(answered.name) if answered else None
            cost = _cost(price, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) if price else 0.0
        ops: list[Op] = []
        for b in self.tenants.get(ticket.tenant, ()):
            if b.name == "concurrent":
                ops.append(Release(b.key, ticket.lease))
            else:
                reserved, actual = {"requests": (1.0, 0.0 if failed else 1.0),
                                    "tokens": (ticket.tokens, used), "usd": (ticket.cost, cost)}[b.name]
                if reserved != actual:
                    ops.append(Refund(b.key, b.cap, b.rate, reserved - actual))
        ops += self._backend_settlement(ticket, answered, used)
        if answered is not None and 200 <= status < 300 and answered.name in self.adaptive:
            ops.append(self._adapt(answered.name, up=not self._slow(answered.name, ticket)))
        if ops:
            self._apply(ops, ticket.local)

    def _backend_settlement(self, ticket: Ticket, answered: ResolvedBackend | None, used: int) -> list[Op]:
        ops: list[Op] = []
        reserved = self.backend_limits.get(ticket.backend.name)
        if reserved is not None:
            if reserved.concurrent_requests or reserved.adaptive:
                ops.append(Release(f"b:{ticket.backend.name}:conc", ticket.lease))
            if reserved.tokens_per_minute:
                moved = answered is not None and answered.name != ticket.backend.name
                ops.append(_refund(f"b:{ticket.backend.name}:tpm", reserved.tokens_per_minute,
                                   ticket.tokens - (0 if moved else used)))
        if answered is not None and answered.name != ticket.backend.name:
            # Envoy failed over: the backend that answered is charged after the fact.
            lim = self.backend_limits.get(answered.name)
            if lim is not None and lim.requests_per_minute:
                ops.append(_refund(f"b:{answered.name}:rpm", lim.requests_per_minute, -1))
            if lim is not None and lim.tokens_per_minute and used:
                ops.append(_refund(f"b:{answered.name}:tpm", lim.tokens_per_minute, -used))
        return [op for op in ops if not (isinstance(op, Refund) and op.delta == 0)]

    def attempt_failed(self, backend: str, status: int) -> None:
        """A provider signalled overload on one attempt (seen by the observer stage)."""
        if status in OVERLOAD_STATUSES and backend in self.adaptive:
            self._apply([self._adapt(backend, up=False)], local=False)

    def _adapt(self, backend: str, up: bool) -> Adapt:
        ad = self.adaptive[backend]
        return Adapt(f"b:{backend}:limit", ad.min, ad.max, float(ad.initial or ad.max), ad.decrease, ad.increase, up)

    def _slow(self, backend: str, ticket: Ticket) -> bool:
        """Latency signal: this answer came much later than the backend's baseline."""
        tolerance = self.adaptive[backend].latency_tolerance
        if tolerance is None:
            return False
        latency = (ticket.first_byte or time.perf_counter()) - ticket.t0
        base = self.baseline.get(backend)
        self.baseline[backend] = latency if base is None else min(latency, base * (1 + _BASELINE_DRIFT))
        return base is not None and latency > tolerance * base

    def _apply(self, ops: list[Op], local: bool) -> None:
        if local or self.store is self.memory:
            self._export_limits(ops, self.memory.settle_now(ops))
            return
        self.pending += ops
        if self.flusher is None:
            self.flusher = asyncio.get_running_loop().create_task(self._settle_shared())
            self.tasks.add(self.flusher)
            self.flusher.add_done_callback(self.tasks.discard)

    async def _settle_shared(self) -> None:
        """Settle what requests ending within ``SETTLE_BATCH_S`` left, in one store call:
        a Redis round trip per request was a third of the ext_proc's CPU with shared budgets."""
        await asyncio.sleep(SETTLE_BATCH_S)
        ops, self.pending, self.flusher = self.pending, [], None
        try:
            self._export_limits(ops, await self.store.settle(ops))
        except Exception:  # never let bookkeeping take a stream down
            log.exception("settling %d reservation updates failed", len(ops))

    def _export_limits(self, ops: list[Op], limits: list[float]) -> None:
        adapts = [op for op in ops if isinstance(op, Adapt)]
        for op, limit in zip(adapts, limits, strict=False):
            metrics.child(metrics.BACKEND_LIMIT, op.key[2:].rpartition(":")[0]).set(limit)


def build(cfg: GatewayConfig) -> Admission | None:
    """None when nothing is budgeted: the data path then pays nothing for admission."""
    if not any(t.limits for t in cfg.tenants.values()) and not _backend_facts(cfg)[0]:
        return None
    store: Store | None = None
    if cfg.redis is not None:
        from .redis_store import RedisStore

        a = cfg.admission
        store = RedisStore(cfg.redis, MemoryStore(a.lease_ttl_s, a.concurrency_retry_after_s))
    return Admission(cfg, store)


# ---- helpers ------------------------------------------------------------------
def _tenant_budgets(tenant: str, lim: TenantLimits) -> list[_Budget]:
    out = []
    share = (lim.burst_seconds or 60) / 60  # of a minute's budget a burst may use at once
    if lim.requests_per_minute:
        rpm = lim.requests_per_minute
        out.append(_Budget("requests", f"t:{tenant}:rpm", rpm * share, rpm / 60, limit=rpm))
    if lim.tokens_per_minute:
        tpm = lim.tokens_per_minute
        out.append(_Budget("tokens", f"t:{tenant}:tpm", tpm * share, tpm / 60, limit=tpm))
    if lim.spend_per_day_usd:
        out.append(_Budget("usd", f"t:{tenant}:usd", lim.spend_per_day_usd, lim.spend_per_day_usd / DAY))
    if lim.concurrent_requests:
        out.append(_Budget("concurrent", f"t:{tenant}:conc", lim.concurrent_requests))
    return out


def _check(b: _Budget, amount: float) -> Check:
    if b.name == "concurrent":
        return Check(SLOTS, b.key, b.cap)
    return Check(BUCKET, b.key, b.cap, b.rate, amount)


def _refund(key: str, per_minute: int, delta: float) -> Refund:
    return Refund(key, float(per_minute), per_minute / 60, float(delta))


def _static_never(c: Check) -> bool:
    if c.kind == BUCKET:
        return c.amount + c.keep > c.cap
    return c.cap * (1 - c.keep) < 1


def _backend_facts(cfg: GatewayConfig) -> tuple[dict[str, BackendLimits], dict[str, Price]]:
    """Limits and prices by backend name (declared once per backend, checked by config)."""
    limits: dict[str, BackendLimits] = {}
    prices: dict[str, Price] = {}
    for model_name, model in cfg.models.items():
        for b in model.backends:
            name = b.name or f"{b.provider}/{b.model or model_name}"
            if b.limits is not None and (b.limits.requests_per_minute or b.limits.tokens_per_minute
                                         or b.limits.concurrent_requests or b.limits.adaptive):
                limits[name] = b.limits
            if b.price is not None:
                prices[name] = b.price
    return limits, prices


def _dearest(prices: list[Price | None]) -> Price | None:
    known = [p for p in prices if p is not None]
    if not known:
        return None
    return Price(input=max(p.input for p in known), output=max(p.output for p in known))


def _weighted_order(candidates: list[ResolvedBackend]) -> list[ResolvedBackend]:
    """Failover order; backends sharing a tier in weighted random order (Envoy's split)."""
    if len({b.tier for b in candidates}) == len(candidates):
        return candidates
    return sorted(candidates, key=lambda b: (b.tier, -random.random() ** (1 / b.weight)))


def _num(v: float) -> str:
    return f"{v:.4g}" if v != int(v) else str(int(v))

