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
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..config import Adaptive, GatewayConfig, Price, ResolvedBackend
from ..errors import GatewayError
from ..pricing import cost_usd as _cost
from ..translation.ir import Usage
from . import estimate
from .budgets import BackendQuota, Demand, TenantBudget, Use, backend_quotas, tenant_budgets
from .headers import METADATA_NAMESPACE, rate_limit_headers, retry_headers
from .store import BUCKET, Adapt, Check, MemoryStore, Op, Outcome, Store, StoreUnavailable

if TYPE_CHECKING:
    from ..dialects import Dialect

log = logging.getLogger("llm_gateway.admission")

RANK = {"batch": 0, "interactive": 1}
COUNTING_BUDGETS = frozenset({"requests", "concurrent"})  # the tenant budgets a token count takes
OVERLOAD_STATUSES = frozenset({429, 503, 504, 529})
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
    counting: bool = False  # a token count: settles its request and slot, charges no backend

    @property
    def metadata(self) -> dict[str, Any]:
        """Envoy dynamic metadata: the route adds these as response headers."""
        return {METADATA_NAMESPACE: self.headers}


class Admission:
    def __init__(self, cfg: GatewayConfig, store: Store | None = None, memory: MemoryStore | None = None):
        self.cfg = cfg
        a = cfg.admission
        self.reserve_share = a.interactive_reserve
        # Requests admitted here and not by the shared store (fail_open) settle here:
        # the store they took their leases from, the shared store's fallback.
        self.memory = memory or MemoryStore(a.lease_ttl_s, a.concurrency_retry_after_s)
        self.store: Store = store or self.memory
        self.tenants = {name: tenant_budgets(name, t.limits) for name, t in cfg.tenants.items() if t.limits}
        self.priorities = {name: (t.priority, t.max_priority) for name, t in cfg.tenants.items()}
        self.quotas: dict[str, list[BackendQuota]] = {
            b.name: backend_quotas(b.name, b.limits) for b in cfg.backends.values() if b.budgeted and b.limits
        }
        self.adaptive: dict[str, Adaptive] = {
            b.name: b.limits.adaptive for b in cfg.backends.values() if b.limits and b.limits.adaptive
        }
        self.reserve_price = {m: _dearest([b.price for b in chain]) for m, chain in cfg.chains.items()}
        # The most any backend of a model can produce per answer (catalog); None: one is unknown.
        self.output_caps = {m: _largest_cap(chain) for m, chain in cfg.chains.items()}
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
            raise GatewayError(
                "invalid_request",
                f"x-priority must be 'interactive' or 'batch', not '{header}'",
                param="x-priority",
            )
        return wanted if RANK[wanted] <= RANK[top] else top

    async def admit(
        self,
        tenant: str,
        priority: str,
        model: str,
        body: dict[str, Any],
        candidates: list[ResolvedBackend],
        dialect: Dialect | None = None,
        counting: bool = False,
    ) -> Ticket:
        """Reserve for this request on the first candidate with headroom (in the
        order given: ``request.candidates`` orders them), or raise ``Rejection``.

        A token count (``counting``) reaches a provider but generates and costs nothing: it
        takes a request and a concurrency slot of the tenant's budgets, no tokens or spend,
        and no backend quota (providers limit their counting endpoints apart from generation)."""
        t0 = time.perf_counter()
        settings = self.cfg.models[model]
        budgets: Sequence[TenantBudget] = self.tenants.get(tenant, ())
        if counting:
            tokens = 0
            budgets = [b for b in budgets if b.kind in COUNTING_BUDGETS]
        else:
            tokens = estimate.input_tokens(body, dialect)
        if settings.kind == "chat" and not counting:  # an embedding model generates no tokens
            tokens += estimate.output_tokens(
                body,
                settings.reserve_output_tokens or settings.default_max_tokens,
                dialect,
                self.output_caps[model],
            )
        cost = _cost(self.reserve_price[model], tokens, 0, 0) if self.reserve_price[model] else 0.0
        demand = Demand(tokens, cost)
        tenant_checks = [b.check(demand) for b in budgets]
        share = self.reserve_share if priority == "batch" else 0.0
        order = candidates[:1] if counting else candidates
        backend_checks = [
            [] if counting else [q.check(tokens, share) for q in self.quotas.get(b.name, ())] for b in order
        ]
        self._never_fits(tenant, model, budgets, tenant_checks, backend_checks, tokens, priority)
        lease = f"{self.node}:{next(self.counter)}"
        try:
            outcome = await self.store.acquire(tenant_checks, backend_checks, lease)
        except StoreUnavailable as e:
            self._count(tenant, priority, "rejected", "store_unavailable")
            raise Rejection(
                "overloaded",
                f"admission is unavailable: {e}",
                status=503,
                retry_after=None,
                headers=retry_headers(1.0),
                reason="store_unavailable",
            ) from None
        headers = rate_limit_headers(budgets, outcome.levels)
        self._export_remaining(tenant, budgets, outcome.levels)
        if outcome.chosen < 0:
            raise self._rejection(tenant, priority, model, budgets, outcome, headers)
        backend = order[outcome.chosen]
        reason = "ok" if backend.tier == order[0].tier else "spillover"
        self._count(tenant, priority, "admitted", reason)
        metrics.child(metrics.BACKEND_IN_FLIGHT, backend.name).inc()
        return Ticket(
            tenant,
            priority,
            model,
            backend,
            tokens,
            cost,
            lease,
            outcome.local,
            t0,
            headers,
            counting=counting,
        )

    def _never_fits(
        self,
        tenant: str,
        model: str,
        budgets: Sequence[TenantBudget],
        tenant_checks: list[Check],
        backend_checks: list[list[Check]],
        tokens: int,
        priority: str,
    ) -> None:
        """413 for a request no amount of waiting would admit."""
        for b, c in zip(budgets, tenant_checks, strict=True):
            if c.kind == BUCKET and c.amount > c.cap:
                what = b.unit
                self._count(tenant, priority, "rejected", "too_large")
                raise Rejection(
                    "request_too_large",
                    f"this request needs {_num(c.amount)} {what} (estimated input "
                    f"+ max output tokens) but tenant '{tenant}' has a budget of {_num(c.cap)}: it can "
                    f"never be admitted; lower max tokens or shorten the prompt",
                    reason="too_large",
                )
        if backend_checks and all(any(_static_never(c) for c in cs) for cs in backend_checks):
            self._count(tenant, priority, "rejected", "too_large")
            raise Rejection(
                "request_too_large",
                f"this request reserves {tokens} tokens, more than any backend of "
                f"model '{model}' allows per minute at {priority} priority: it can never be "
                f"admitted; lower max tokens or shorten the prompt",
                reason="too_large",
            )

    def _rejection(
        self,
        tenant: str,
        priority: str,
        model: str,
        budgets: Sequence[TenantBudget],
        outcome: Outcome,
        headers: dict[str, str],
    ) -> Rejection:
        wait = outcome.wait
        if outcome.failed >= 0:
            b = budgets[outcome.failed]
            reason = f"tenant_{b.kind}"
            message = f"tenant '{tenant}' is over its {b.what} budget"
        else:
            reason = "backend_quota"
            message = f"no backend of model '{model}' has headroom for this {priority} request"
        self._count(tenant, priority, "rejected", reason)
        return Rejection(
            "rate_limit",
            f"{message}; retry in {wait:.1f} s",
            retry_after=None,
            headers={**headers, **retry_headers(wait)},
            reason=reason,
        )

    def _count(self, tenant: str, priority: str, decision: str, reason: str) -> None:
        metrics.child(metrics.ADMISSION, tenant, priority, decision, reason).inc()

    def _export_remaining(self, tenant: str, budgets: Sequence[TenantBudget], levels: list[float]) -> None:
        for b, level in zip(budgets, levels, strict=False):
            metrics.child(metrics.BUDGET_REMAINING, tenant, b.kind).set(b.remaining(level))

    # ---- settlement -----------------------------------------------------------
    def settle(self, ticket: Ticket, status: int, backend_name: str, usage: Usage | None) -> None:
        """Replace the reservation by what was used (nothing, if the request failed)."""
        if ticket.settled:
            return
        ticket.settled = True
        metrics.child(metrics.BACKEND_IN_FLIGHT, ticket.backend.name).dec()
        answered = self.cfg.backends.get(backend_name)
        failed = status == 0 or status >= 400 or answered is None
        if failed or ticket.counting:
            used, cost = 0, 0.0
        elif usage is None:  # produced something, amount unknown: the reservation stands
            used, cost = ticket.tokens, ticket.cost
        else:
            used = usage.input_tokens + usage.output_tokens
            price = answered.price if answered else None
            cost = (
                _cost(price, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens)
                if price
                else 0.0
            )
        demand, use = Demand(ticket.tokens, ticket.cost), Use(failed, used, cost)
        ops: list[Op] = []
        for b in self.tenants.get(ticket.tenant, ()):
            op = b.settle(demand, use, ticket.lease)
            if op is not None:
                ops.append(op)
        if not ticket.counting:  # a count charged no backend; its latency says nothing of load
            ops += self._backend_settlement(ticket, answered, used)
            if answered is not None and 200 <= status < 300 and answered.name in self.adaptive:
                ops.append(self._adapt(answered.name, up=not self._slow(answered.name, ticket)))
        if ops:
            self._apply(ops, ticket.local)

    def _backend_settlement(self, ticket: Ticket, answered: ResolvedBackend | None, used: int) -> list[Op]:
        moved = answered is not None and answered.name != ticket.backend.name
        ops = [
            q.settle(ticket.lease, ticket.tokens, used, moved)
            for q in self.quotas.get(ticket.backend.name, ())
        ]
        if moved and answered is not None:
            # Envoy failed over: the backend that answered is charged after the fact.
            ops += [q.charge(used) for q in self.quotas.get(answered.name, ())]
        return [op for op in ops if op is not None]

    def attempt_failed(self, backend: str, status: int) -> None:
        """A provider signalled overload on one attempt (seen by the observer stage)."""
        if status in OVERLOAD_STATUSES and backend in self.adaptive:
            self._apply([self._adapt(backend, up=False)], local=False)

    def _adapt(self, backend: str, up: bool) -> Adapt:
        ad = self.adaptive[backend]
        return Adapt(
            f"b:{backend}:limit", ad.min, ad.max, float(ad.initial or ad.max), ad.decrease, ad.increase, up
        )

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
    if not any(t.limits for t in cfg.tenants.values()) and not any(b.budgeted for b in cfg.backends.values()):
        return None
    a = cfg.admission
    memory = MemoryStore(a.lease_ttl_s, a.concurrency_retry_after_s)
    store: Store | None = None
    if cfg.redis is not None:
        from .redis_store import RedisStore

        # One local store: what the fallback admits, settlement releases (a second one
        # left every lease taken during an outage held until lease_ttl_s).
        store = RedisStore(cfg.redis, memory)
    return Admission(cfg, store, memory)


# ---- helpers ------------------------------------------------------------------
def _static_never(c: Check) -> bool:
    if c.kind == BUCKET:
        return c.amount + c.keep > c.cap
    return c.cap * (1 - c.keep) < 1


def _largest_cap(chain: list[ResolvedBackend]) -> int | None:
    caps = [b.caps.max_output_tokens if b.caps is not None else None for b in chain]
    return None if not caps or None in caps else max(c for c in caps if c is not None)


def _dearest(prices: list[Price | None]) -> Price | None:
    known = [p for p in prices if p is not None]
    if not known:
        return None
    return Price(input=max(p.input for p in known), output=max(p.output for p in known))


def _num(v: float) -> str:
    return f"{v:.4g}" if v != int(v) else str(int(v))
