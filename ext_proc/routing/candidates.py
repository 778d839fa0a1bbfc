"""The one ordering of a model's backends, for routing and admission alike.

Failover order is tier order; backends sharing a tier are ordered by a
weighted random draw (Efraimidis-Spirakis keys, so the first is picked with
probability proportional to its weight, like Envoy's own split). Health comes
first: a backend cooling down is skipped (and counted), and a backend whose
cool-down just ended is granted to exactly one request as a recovery probe.

Routing without budgets takes the first available backend and asks health
about no other; admission takes every available one, reserves on the first
with headroom, and hands the probes it did not use on to the next request.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import ResolvedBackend
from .health import HealthTable, State


def weighted_order(chain: list[ResolvedBackend]) -> list[ResolvedBackend]:
    """Failover order; backends sharing a tier in weighted random order."""
    if len({b.tier for b in chain}) == len(chain):
        return chain
    return sorted(chain, key=lambda b: (b.tier, -(random.random() ** (1 / b.weight))))


@dataclass(slots=True)
class Candidates:
    """One request's walk over its model's backends."""

    order: list[ResolvedBackend]
    health: HealthTable
    skipped: list[ResolvedBackend] = field(default_factory=list)  # cooling down when asked
    probes: list[ResolvedBackend] = field(default_factory=list)  # recovery probes granted to this request

    @classmethod
    def of(cls, chain: list[ResolvedBackend], health: HealthTable) -> Candidates:
        return cls(weighted_order(chain), health)

    def available(self) -> Iterator[ResolvedBackend]:
        """Backends a first attempt may go to, in order; health is asked lazily."""
        for b in self.order:
            if self.health.skip(b.name):
                self.skipped.append(b)
                continue
            if self.health.state(b.name) == State.PROBING:
                self.probes.append(b)
            yield b

    def first(self) -> ResolvedBackend | None:
        return next(self.available(), None)

    def all_available(self) -> list[ResolvedBackend]:
        return list(self.available())

    def release_probes(self, chosen: ResolvedBackend | None) -> None:
        """Probes granted to this request but not used: the next request may probe instead."""
        for b in self.probes:
            if chosen is None or b.name != chosen.name:
                self.health.release(b.name)
        self.probes.clear()

    def retry_after(self) -> float | None:
        """Every backend is rate limited: seconds until the first is tried again (else None)."""
        waits = [self.health.retry_after(b.name) for b in self.order]
        if waits and all(w is not None for w in waits):
            return min(w for w in waits if w is not None)
        return None
