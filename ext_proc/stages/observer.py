"""Failed attempts, as Envoy reports them: feeds backend health.

Every non-2xx attempt is counted; only the backend's own faults (5xx, no answer, a refused
credential, a rate limit) count against its health.

Runs in observability mode (Envoy does not wait for answers) and only for
non-2xx attempt responses, so it adds no latency and no cost to successes.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from .. import messages as M
from .. import metrics
from .. import protocol as P
from ..routing.health import provider_fault
from ..state import GatewayState

log = logging.getLogger("llm_gateway.observer")


async def run(state: GatewayState, ctx: Any) -> None:
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        if req.WhichOneof("request") != "response_headers":
            continue
        headers = M.headers_of(req.response_headers)
        backend = str(M.attribute(req, P.ATTR_BACKEND) or "")
        model = str(M.attribute(req, P.ATTR_ROUTE_MODEL) or "")
        try:
            status = int(headers.get(":status", "0"))
        except ValueError:
            status = 0
        retry_after = _seconds(headers.get("retry-after"))
        metrics.FAILED_ATTEMPTS.labels(model, backend, str(status)).inc()
        if backend and provider_fault(status):
            state.health.failure(backend, status, retry_after)
            if state.admission is not None:
                state.admission.attempt_failed(backend, status)
        log.info(
            "attempt failed: model=%s backend=%s status=%s retry-after=%s",
            model,
            backend,
            status,
            retry_after,
        )


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds (HTTP dates are rare from LLM providers and ignored)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None
