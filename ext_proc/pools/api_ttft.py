"""API backends' time to first token as this gateway measures it, for cost-aware routing.

A pool's servers report their own TTFT histograms (``Pool.after_round``); an API provider
reports nothing, so the gateway keeps the first-byte times of the streamed answers it relayed
(the same figure as ``llm_gateway_time_to_first_token_seconds``), per backend held to a model's
``slo``, over that SLO's ``window_ms``. Non-streamed answers do not count: their first byte is
the whole answer. Neither do answers after a failover: their time includes the failed tries.
The p90 is recomputed at most every ``REFRESH_S`` per backend, so a request pays a lookup.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from typing import TYPE_CHECKING

from . import metrics as M

if TYPE_CHECKING:
    from ..config import GatewayConfig

MAX_SAMPLES = 4096  # per backend; at higher rates the window is the newest 4,096 answers
REFRESH_S = 0.1


class ApiFirstTokens:
    """First-token times of the API backends some ``prefer: cheapest`` model holds to an SLO."""

    def __init__(self, config: GatewayConfig, previous: ApiFirstTokens | None = None) -> None:
        self.windows: dict[str, float] = {}  # backend -> window (s); the longest its models ask
        for model, s in config.models.items():
            if s.prefer != "cheapest" or s.slo is None:
                continue
            for b in config.chains.get(model, ()):
                if not config.providers[b.provider_name].endpoints:  # a pool measures itself
                    self.windows[b.name] = max(self.windows.get(b.name, 0.0), s.slo.window_ms / 1000)
        # What was measured survives a config switch, for backends still held to an SLO.
        old = previous._samples if previous is not None else {}
        self._samples: dict[str, deque[tuple[float, float]]] = {
            b: old.get(b) or deque(maxlen=MAX_SAMPLES) for b in self.windows
        }
        self._p90: dict[str, tuple[float, float | None]] = {}  # backend -> (computed at, p90)

    def record(self, backend: str, ttft: float, now: float | None = None) -> None:
        """A streamed answer of ``backend`` whose first byte came ``ttft`` seconds in."""
        samples = self._samples.get(backend)
        if samples is not None:
            samples.append((time.monotonic() if now is None else now, ttft))

    def p90(self, backend: str, now: float | None = None) -> float | None:
        """The p90 over the window (nearest rank), or None without a sample in it."""
        now = time.monotonic() if now is None else now
        cached = self._p90.get(backend)
        if cached is not None and now - cached[0] < REFRESH_S:
            return cached[1]
        samples = self._samples.get(backend)
        value: float | None = None
        if samples:
            horizon = now - self.windows[backend]
            while samples and samples[0][0] < horizon:
                samples.popleft()
            if samples:
                ordered = sorted(t for _, t in samples)
                value = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
        self._p90[backend] = (now, value)
        if value is not None:
            M.BACKEND_TTFT_P90.labels(backend).set(value)
        else:
            with contextlib.suppress(KeyError):
                M.BACKEND_TTFT_P90.remove(backend)
        return value
