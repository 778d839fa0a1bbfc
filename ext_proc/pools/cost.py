"""Cost-aware routing (``prefer: cheapest``): among a model's backends that share a tier, the
cheapest per million output tokens goes first as long as it meets the model's SLO.

An API backend costs its price (config or catalog ``price.output``; none known: last) and
meets the SLO while the p90 of its streamed answers' first-token times, as this gateway measured
them over ``slo.window_ms`` (``api_ttft.py``), is within ``slo.ttft_p90_ms``. A pool costs its
measured figure (``Pool.unit_cost``; none measured yet: nothing, its GPUs are paid for anyway)
and meets the SLO while its servers' TTFT p90 over the recent window (their own histograms,
``Pool.after_round``) is within ``slo.ttft_p90_ms``; a saturated pool spills over as ever.
Everything here reads figures the scrape rounds computed: a few comparisons per request.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import metrics as M

if TYPE_CHECKING:
    from ..config import ResolvedBackend
    from ..routing import Candidates
    from ..state import GatewayState


def cheapest_first(state: GatewayState, model: str, candidates: Candidates) -> None:
    """Reorder ``candidates`` within each tier: those meeting the SLO first, cheapest first
    (a stable sort: equal ones keep their weighted order); count why the first one leads."""
    settings = state.config.models[model]
    slo = settings.slo.ttft_p90_ms / 1000 if settings.slo is not None else None
    keyed: list[tuple[int, bool, float, ResolvedBackend]] = []
    for b in candidates.order:
        pool = state.pools.get(b.provider_name)
        if pool is not None:
            unit = pool.unit_cost()
            cost = 0.0 if unit is None else unit
            missed = slo is not None and pool.ttft_p90 is not None and pool.ttft_p90 > slo
        else:
            cost = b.price.output if b.price is not None else math.inf
            p90 = state.pools.api_ttft.p90(b.name) if slo is not None else None
            missed = slo is not None and p90 is not None and p90 > slo
        keyed.append((b.tier, missed, cost, b))
    keyed.sort(key=lambda k: k[:3])
    candidates.order = [k[3] for k in keyed]
    tier, _, cost, first = keyed[0]
    peers = [k for k in keyed if k[0] == tier]
    if len(peers) > 1:
        passed_over = any(k[1] and k[2] < cost for k in peers)
        M.COST_PICKS.labels(model, first.name, "slo" if passed_over else "cost").inc()
