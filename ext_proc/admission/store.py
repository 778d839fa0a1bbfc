"""Budget state: check-and-reserve and settle, in memory (one process).

Two primitives cover every budget:

- a token bucket (requests/minute, tokens/minute, USD/day): capacity ``cap``,
  refilled continuously at ``rate`` per second. Admission takes ``amount`` if
  at least ``amount + keep`` is left (``keep``: headroom kept for interactive
  traffic); settlement gives back (or charges) the difference between what
  was reserved and what was used. Debt (usage above the reservation) makes
  later requests wait, which is what keeps the budget honest.
- slots (concurrent requests): leases in a set, each with an expiry so that a
  replica that dies cannot leak them; an optional adaptive limit lowers the
  configured one.

A request is admitted when every tenant check passes and some backend of its
chain (in failover order) passes all of its checks; all of it is taken in one
step, so concurrent requests can never both take the last unit. The Redis
store (``redis_store``) runs the same algorithm as Lua scripts; the unit tests
run both against the same cases.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

BUCKET = "b"
SLOTS = "s"


@dataclass(slots=True)
class Check:
    """One budget a request must fit in."""

    kind: str  # BUCKET or SLOTS
    key: str
    cap: float  # bucket capacity, or configured concurrent limit
    rate: float = 0.0  # bucket refill per second
    amount: float = 0.0  # bucket: taken at admission (slots always take 1)
    # Headroom kept for interactive traffic (batch requests only): a bucket
    # must keep this much after taking; slots keep this share of the limit free.
    keep: float = 0.0
    adaptive: str = ""  # slots: key of the adaptive limit, if any
    initial: float = 0.0  # adaptive limit before any signal


@dataclass(slots=True)
class Refund:
    """Give ``delta`` back to a bucket (negative: charge it)."""

    key: str
    cap: float
    rate: float
    delta: float


@dataclass(slots=True)
class Release:
    key: str
    lease: str


@dataclass(slots=True)
class Adapt:
    """AIMD step of an adaptive concurrency limit."""

    key: str
    lo: float
    hi: float
    initial: float
    decrease: float
    increase: float
    up: bool


Op = Refund | Release | Adapt


@dataclass(slots=True)
class Outcome:
    chosen: int  # index of the admitted backend in the candidate list; -1: rejected
    wait: float  # rejected: seconds until the request would fit
    failed: int  # index of the tenant check that rejected it (-1: tenant fits)
    levels: list[float] = field(default_factory=list)  # tenant checks: bucket level / slots in use
    local: bool = False  # decided by this process alone (memory store, or Redis down with fail_open)


class Store(Protocol):
    async def acquire(self, tenant: list[Check], backends: list[list[Check]], lease: str) -> Outcome: ...

    async def settle(self, ops: list[Op]) -> list[float]: ...

    async def close(self) -> None: ...


class StoreUnavailable(Exception):
    """The shared store cannot be reached and the config says fail closed."""


@dataclass(slots=True)
class _Bucket:
    level: float
    t: float


class MemoryStore:
    """Budgets of this process only (the default, and fail_open's fallback)."""

    def __init__(self, lease_ttl: float, concurrency_wait: float):
        self.ttl = lease_ttl
        self.concurrency_wait = concurrency_wait
        self.buckets: dict[str, _Bucket] = {}
        self.slots: dict[str, dict[str, float]] = {}  # key -> lease -> expiry
        self.limits: dict[str, float] = {}

    # ---- the algorithm (mirrored by redis_store.ACQUIRE) ---------------------
    def _level(self, c: Check, now: float) -> float:
        if c.kind == BUCKET:
            b = self.buckets.get(c.key)
            return c.cap if b is None else min(c.cap, b.level + max(0.0, now - b.t) * c.rate)
        leases = self.slots.get(c.key)
        if not leases:
            return 0
        if len(leases) + 1 > self._limit(c) * (1 - c.keep):
            # Only a count near the limit must be exact: expired leases are purged then.
            for lease in [k for k, exp in leases.items() if exp <= now]:
                del leases[lease]
        return len(leases)

    def _limit(self, c: Check) -> float:
        if c.adaptive:
            return min(c.cap, math.floor(self.limits.get(c.adaptive, c.initial)))
        return c.cap

    def _wait(self, c: Check, level: float) -> float:
        if c.kind == BUCKET:
            need = c.amount + c.keep
            return 0.0 if level >= need else (need - level) / c.rate
        return 0.0 if level + 1 <= self._limit(c) * (1 - c.keep) else self.concurrency_wait

    def _take(self, c: Check, level: float, now: float, lease: str) -> float:
        if c.kind == BUCKET:
            self.buckets[c.key] = _Bucket(level - c.amount, now)
            return level - c.amount
        self.slots.setdefault(c.key, {})[lease] = now + self.ttl
        return level + 1

    def acquire_now(
        self, tenant: list[Check], backends: list[list[Check]], lease: str, now: float | None = None
    ) -> Outcome:
        now = time.monotonic() if now is None else now
        levels = [self._level(c, now) for c in tenant]
        worst, failed = 0.0, -1
        for i, c in enumerate(tenant):
            w = self._wait(c, levels[i])
            if w > worst:
                worst, failed = w, i
        if failed >= 0:
            return Outcome(-1, worst, failed, levels, local=True)
        best = -1.0
        for j, checks in enumerate(backends):
            blevels = [self._level(c, now) for c in checks]
            bw = max((self._wait(c, lv) for c, lv in zip(checks, blevels, strict=True)), default=0.0)
            if bw == 0:
                levels = [self._take(c, lv, now, lease) for c, lv in zip(tenant, levels, strict=True)]
                for c, lv in zip(checks, blevels, strict=True):
                    self._take(c, lv, now, lease)
                return Outcome(j, 0.0, -1, levels, local=True)
            if best < 0 or bw < best:
                best = bw
        return Outcome(-1, max(best, 0.0), -1, levels, local=True)

    def settle_now(self, ops: list[Op], now: float | None = None) -> list[float]:
        now = time.monotonic() if now is None else now
        out: list[float] = []
        for op in ops:
            if isinstance(op, Refund):
                b = self.buckets.get(op.key)
                level = op.cap if b is None else min(op.cap, b.level + max(0.0, now - b.t) * op.rate)
                self.buckets[op.key] = _Bucket(min(op.cap, level + op.delta), now)
            elif isinstance(op, Release):
                self.slots.get(op.key, {}).pop(op.lease, None)
            else:
                limit = self.limits.get(op.key, op.initial)
                limit = min(op.hi, limit + op.increase / limit) if op.up else max(op.lo, limit * op.decrease)
                self.limits[op.key] = limit
                out.append(limit)
        return out

    async def acquire(self, tenant: list[Check], backends: list[list[Check]], lease: str) -> Outcome:
        return self.acquire_now(tenant, backends, lease)

    async def settle(self, ops: list[Op]) -> list[float]:
        return self.settle_now(ops)

    async def close(self) -> None:
        return None
