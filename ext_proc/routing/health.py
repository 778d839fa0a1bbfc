"""Backend health as this ext_proc process has seen it.

Envoy fails over within a request; this table makes *later* requests skip a
sick backend so they do not pay a failed attempt first. Signals:

- the attempt observer: status and ``Retry-After`` of every failed attempt
  (429, 5xx), including attempts Envoy retried elsewhere;
- the router stage: a response answered by a later tier than the primary
  means the primary failed without a response (connect failure, reset,
  timeout, ejection);
- the router stage: an invalid answer it had to abort (the observer saw a 200);
- the router stage: a 2xx answered by a backend marks it healthy.

A backend that answered 429 with ``Retry-After`` cools down for that long;
other failures cool down after ``FAILURE_THRESHOLD`` consecutive ones, with an
exponential backoff; an invalid answer the router stage had to abort cools it
down at once, for ``CERTAIN_COOLDOWN``. When the cool-down ends, recovery is probed, not
assumed: exactly one request is let through; the others keep skipping the
backend until that probe succeeds (or times out and another probe goes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

FAILURE_THRESHOLD = 2
BASE_COOLDOWN = 1.0
CERTAIN_COOLDOWN = 10.0  # the first cool-down after a fault one occurrence proves (an invalid answer)
MAX_COOLDOWN = 60.0
MAX_RETRY_AFTER = 300.0
PROBE_TIMEOUT = 30.0
# Provider answers that fail an attempt over to the next backend (Envoy's retry policy) besides
# 5xx: a refused credential (the gateway's own key), a model the provider does not have (404: the
# gateway built the path and named the model, from its config: a misspelt Azure deployment, a
# retired model) and a rate limit. Any other 4xx is about the client's request: the backend is
# fine, and counting it would let one client's bad requests cool a backend down for every tenant.
PROVIDER_FAULT_4XX = (401, 403, 404, 429)


def provider_fault(status: int) -> bool:
    """Is an attempt that ended with ``status`` (0: no response) the backend's fault?"""
    return status == 0 or status >= 500 or status in PROVIDER_FAULT_4XX


class State(IntEnum):
    HEALTHY = 0
    COOLING = 1
    PROBING = 2


@dataclass(slots=True)
class BackendHealth:
    state: State = State.HEALTHY
    failures: int = 0
    until: float = 0.0  # end of cool-down (COOLING) or of the probe's grace (PROBING)
    backoff: float = BASE_COOLDOWN
    rate_limited: bool = False  # cooling because of a 429


class HealthTable:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ):
        self.clock = clock
        self.on_change = on_change
        self.backends: dict[str, BackendHealth] = {}

    def _get(self, backend: str) -> BackendHealth:
        h = self.backends.get(backend)
        if h is None:
            h = self.backends[backend] = BackendHealth()
        return h

    def _set(self, backend: str, h: BackendHealth, state: State) -> None:
        if h.state != state:
            h.state = state
            if self.on_change:
                self.on_change(backend, state)

    def failure(
        self, backend: str, status: int = 0, retry_after: float | None = None, certain: bool = False
    ) -> None:
        """A failed attempt on ``backend`` (status 0: no response). ``certain``: a fault
        one occurrence proves (an invalid answer): cool down without waiting for a second."""
        h = self._get(backend)
        h.failures += 1
        now = self.clock()
        if status == 429:
            wait = min(retry_after, MAX_RETRY_AFTER) if retry_after and retry_after > 0 else h.backoff
            h.until = max(h.until if h.state == State.COOLING else 0.0, now + wait)
            h.rate_limited = True
            if not retry_after:
                h.backoff = min(h.backoff * 2, MAX_COOLDOWN)
            self._set(backend, h, State.COOLING)
        elif h.state == State.COOLING and h.rate_limited and now < h.until:
            return  # already waiting out a Retry-After: that wait stands
        elif h.failures >= FAILURE_THRESHOLD or h.state == State.PROBING or certain:
            if certain:  # a provider answering garbage rarely heals within a second
                h.backoff = max(h.backoff, CERTAIN_COOLDOWN)
            h.until = now + h.backoff
            h.backoff = min(h.backoff * 2, MAX_COOLDOWN)
            h.rate_limited = False
            self._set(backend, h, State.COOLING)

    def success(self, backend: str) -> None:
        h = self.backends.get(backend)
        if h is None or (h.state == State.HEALTHY and not h.failures):
            return
        h.failures = 0
        h.backoff = BASE_COOLDOWN
        h.rate_limited = False
        self._set(backend, h, State.HEALTHY)

    def available(self, backend: str) -> bool:
        """May a new request go to ``backend`` first? Grants at most one probe at a time."""
        h = self.backends.get(backend)
        if h is None or h.state == State.HEALTHY:
            return True
        now = self.clock()
        if now < h.until:
            return False
        # Cool-down over (or a probe went unanswered): let exactly this request probe.
        h.until = now + PROBE_TIMEOUT
        self._set(backend, h, State.PROBING)
        return True

    def release(self, backend: str) -> None:
        """A probe granted to a request that then went elsewhere (e.g. admission
        found no headroom there): the next request may probe instead, rather
        than every request skipping the backend until the probe's grace ends."""
        h = self.backends.get(backend)
        if h is not None and h.state == State.PROBING:
            h.until = self.clock()

    def skip(self, backend: str) -> bool:
        return not self.available(backend)

    def retry_after(self, backend: str) -> float | None:
        """Seconds until a rate-limited backend is tried again, if it is rate limited."""
        h = self.backends.get(backend)
        if h is None or h.state != State.COOLING or not h.rate_limited:
            return None
        return max(0.0, h.until - self.clock())

    def state(self, backend: str) -> State:
        h = self.backends.get(backend)
        return h.state if h else State.HEALTHY
