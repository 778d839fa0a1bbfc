"""Budget kinds: one class each, behind the small interface the controller loops over.

A tenant budget turns a request's demand into a ``Check`` at admission and its
reservation into a store operation at settlement. A backend quota does the same
for a provider deployment's limits, plus the after-the-fact charge of a backend
that answered after Envoy failed over to it. Adding a kind is one class here and
one line in ``tenant_budgets`` or ``backend_quotas`` (docs/architecture.md).
The store's bucket and slot primitives (``store``, ``redis_store``) stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import BackendLimits, TenantLimits
from .store import BUCKET, SLOTS, Check, Op, Refund, Release

DAY = 86_400.0
UNLIMITED = 1e9


@dataclass(slots=True)
class Demand:
    """What one request reserves: estimated tokens and their price at the dearest backend."""

    tokens: int
    cost: float


@dataclass(slots=True)
class Use:
    """What it used, once its response ended (nothing, if it failed)."""

    failed: bool
    tokens: int
    cost: float


class TenantBudget:
    """A bucket refilled at ``rate`` per second up to ``cap``."""

    kind: ClassVar[str]  # metric label, x-ratelimit-*-{kind}, rejection reason tenant_{kind}
    what: ClassVar[str]  # "tenant 'x' is over its {what} budget"
    unit: ClassVar[str] = ""  # "needs N {unit}" when a request is larger than the whole budget
    suffix: ClassVar[str]
    rate_limit_headers: ClassVar[bool] = False  # described by x-ratelimit-* headers

    __slots__ = ("cap", "key", "limit", "rate")

    def __init__(self, tenant: str, cap: float, rate: float = 0.0, limit: float = 0.0):
        self.key = f"t:{tenant}:{self.suffix}"
        self.cap = cap
        self.rate = rate
        self.limit = limit  # the configured per-minute amount, when it differs from cap (bursts)

    @property
    def name(self) -> str:
        return self.kind

    def amount(self, d: Demand) -> float:
        raise NotImplementedError

    def used(self, d: Demand, u: Use) -> float:
        raise NotImplementedError

    def check(self, d: Demand) -> Check:
        return Check(BUCKET, self.key, self.cap, self.rate, self.amount(d))

    def settle(self, d: Demand, u: Use, lease: str) -> Op | None:
        delta = self.amount(d) - self.used(d, u)
        return Refund(self.key, self.cap, self.rate, delta) if delta else None

    def remaining(self, level: float) -> float:
        return level


class RequestBudget(TenantBudget):
    kind, what, suffix, rate_limit_headers = "requests", "requests per minute", "rpm", True

    def amount(self, d: Demand) -> float:
        return 1.0

    def used(self, d: Demand, u: Use) -> float:
        return 0.0 if u.failed else 1.0


class TokenBudget(TenantBudget):
    kind, what, unit, suffix, rate_limit_headers = (
        "tokens",
        "tokens per minute",
        "tokens per minute",
        "tpm",
        True,
    )

    def amount(self, d: Demand) -> float:
        return float(d.tokens)

    def used(self, d: Demand, u: Use) -> float:
        return float(u.tokens)


class SpendBudget(TenantBudget):
    kind, what, unit, suffix = "usd", "daily spend", "USD per day", "usd"

    def amount(self, d: Demand) -> float:
        return d.cost

    def used(self, d: Demand, u: Use) -> float:
        return u.cost


class ConcurrencyBudget(TenantBudget):
    """Slots, one per request in flight, released at settlement."""

    kind, what, suffix = "concurrent", "concurrent requests", "conc"

    def check(self, d: Demand) -> Check:
        return Check(SLOTS, self.key, self.cap)

    def settle(self, d: Demand, u: Use, lease: str) -> Op | None:
        return Release(self.key, lease)

    def remaining(self, level: float) -> float:
        return self.cap - level


def tenant_budgets(tenant: str, lim: TenantLimits) -> list[TenantBudget]:
    out: list[TenantBudget] = []
    share = (lim.burst_seconds or 60) / 60  # of a minute's budget a burst may use at once
    if lim.requests_per_minute:
        rpm = lim.requests_per_minute
        out.append(RequestBudget(tenant, rpm * share, rpm / 60, limit=rpm))
    if lim.tokens_per_minute:
        tpm = lim.tokens_per_minute
        out.append(TokenBudget(tenant, tpm * share, tpm / 60, limit=tpm))
    if lim.spend_per_day_usd:
        out.append(SpendBudget(tenant, lim.spend_per_day_usd, lim.spend_per_day_usd / DAY))
    if lim.concurrent_requests:
        out.append(ConcurrencyBudget(tenant, lim.concurrent_requests))
    return out


class BackendQuota:
    """A provider deployment's limit; batch requests must leave ``share`` of it free."""

    __slots__ = ("key",)
    suffix: ClassVar[str]

    def __init__(self, backend: str):
        self.key = f"b:{backend}:{self.suffix}"

    def check(self, tokens: int, share: float) -> Check:
        raise NotImplementedError

    def settle(self, lease: str, reserved: int, used: int, moved: bool) -> Op | None:
        """The backend the request reserved on; ``moved``: another backend answered."""
        return None

    def charge(self, used: int) -> Op | None:
        """This backend answered after a failover it was not reserved for: charge it now."""
        return None


class RequestQuota(BackendQuota):
    __slots__ = ("rpm",)
    suffix = "rpm"

    def __init__(self, backend: str, rpm: int):
        super().__init__(backend)
        self.rpm = float(rpm)

    def check(self, tokens: int, share: float) -> Check:
        return Check(BUCKET, self.key, self.rpm, self.rpm / 60, 1.0, share * self.rpm)

    def charge(self, used: int) -> Op | None:
        return Refund(self.key, self.rpm, self.rpm / 60, -1.0)


class TokenQuota(BackendQuota):
    __slots__ = ("tpm",)
    suffix = "tpm"

    def __init__(self, backend: str, tpm: int):
        super().__init__(backend)
        self.tpm = float(tpm)

    def check(self, tokens: int, share: float) -> Check:
        return Check(BUCKET, self.key, self.tpm, self.tpm / 60, float(tokens), share * self.tpm)

    def settle(self, lease: str, reserved: int, used: int, moved: bool) -> Op | None:
        delta = float(reserved - (0 if moved else used))
        return Refund(self.key, self.tpm, self.tpm / 60, delta) if delta else None

    def charge(self, used: int) -> Op | None:
        return Refund(self.key, self.tpm, self.tpm / 60, -float(used)) if used else None


class ConcurrencyQuota(BackendQuota):
    """Slots; with ``adaptive`` the limit moves (AIMD) below the configured one."""

    __slots__ = ("adaptive_key", "cap", "initial")
    suffix = "conc"

    def __init__(self, backend: str, lim: BackendLimits):
        super().__init__(backend)
        ad = lim.adaptive
        self.cap = float(min(lim.concurrent_requests or UNLIMITED, ad.max if ad else UNLIMITED))
        self.adaptive_key = f"b:{backend}:limit" if ad else ""
        self.initial = float(ad.initial or ad.max) if ad else 0.0

    def check(self, tokens: int, share: float) -> Check:
        return Check(SLOTS, self.key, self.cap, keep=share, adaptive=self.adaptive_key, initial=self.initial)

    def settle(self, lease: str, reserved: int, used: int, moved: bool) -> Op | None:
        return Release(self.key, lease)


def backend_quotas(backend: str, lim: BackendLimits) -> list[BackendQuota]:
    out: list[BackendQuota] = []
    if lim.requests_per_minute:
        out.append(RequestQuota(backend, lim.requests_per_minute))
    if lim.tokens_per_minute:
        out.append(TokenQuota(backend, lim.tokens_per_minute))
    if lim.concurrent_requests or lim.adaptive:
        out.append(ConcurrencyQuota(backend, lim))
    return out
