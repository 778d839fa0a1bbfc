"""Where pools meet the request path (``request/plan.py``): pick a server for a request whose
first candidate is a pool, and apply backpressure when the pool is saturated.

Saturated: an interactive request skips the pool's backends (spills over to the next tier);
a batch request is refused with a 429 whose Retry-After is the pool's estimated drain time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import ResolvedBackend
from ..errors import GatewayError
from . import cost
from . import metrics as M
from .picker import Pick, Saturated

if TYPE_CHECKING:
    from ..routing import Candidates
    from ..state import GatewayState


def priority(state: GatewayState, tenant: str, header: str | None) -> str:
    """The request's priority, as admission decides it when admission is on."""
    if state.admission is not None:
        return state.admission.priority(tenant, header)
    if header and header.strip().lower() == "batch":
        return "batch"  # asking for less is always allowed
    t = state.config.tenants.get(tenant)
    return t.priority if t is not None else "interactive"


def before_admission(
    state: GatewayState, tenant: str, header: str | None, model: str, body: Any, candidates: Candidates
) -> Pick | None:
    """Pick a server of the first candidate when it is a pool; spill or shed when saturated.
    A ``prefer: cheapest`` model's candidates are first put in cost order (``cost.py``)."""
    if model in state.pools.cost_models:
        cost.cheapest_first(state, model, candidates)
    pick: Pick | None = None
    while candidates.order:
        first = candidates.order[0]
        pool = state.pools.get(first.provider_name)
        if pool is None:
            return pick
        result = pool.pick(body)
        if isinstance(result, Pick):
            M.PICKS.labels(pool.name, result.order[0], result.reason).inc()
            return result
        if priority(state, tenant, header) == "batch":
            M.SATURATED.labels(pool.name, model, "shed").inc()
            raise _busy(result, f"the servers of model '{model}' are saturated; retry in {_secs(result)} s")
        M.SATURATED.labels(pool.name, model, "spill").inc()
        candidates.order = [b for b in candidates.order if b.provider_name != pool.name]
        if not candidates.order:
            raise _busy(
                result, f"the servers of model '{model}' are saturated and no other backend serves it"
            )
    return pick


def for_primary(state: GatewayState, primary: ResolvedBackend, pick: Pick | None, body: Any) -> Pick | None:
    """The pick for the backend admission chose (which may differ from the first candidate)."""
    if pick is not None and pick.pool.name == primary.provider_name:
        return pick
    if pick is not None:
        pick.release()
    pool = state.pools.get(primary.provider_name)
    if pool is None:
        return None
    result = pool.pick(body)
    if isinstance(result, Saturated):
        return None  # chosen anyway (budgets elsewhere are full): Envoy's round robin decides
    M.PICKS.labels(pool.name, result.order[0], result.reason).inc()
    return result


def _secs(s: Saturated) -> int:
    return max(1, round(s.retry_after))


def _busy(s: Saturated, message: str) -> GatewayError:
    return GatewayError("rate_limit", message, retry_after=float(_secs(s)))
