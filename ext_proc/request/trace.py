"""What the gateway adds to Envoy's request span, as plain data.

Envoy's own OpenTelemetry tracer makes the spans (the request, one per
upstream attempt), propagates ``traceparent`` to providers and exports them;
what only the gateway knows reaches the spans as flat dynamic metadata that
Envoy reads through custom tags when it ends the span (docs/architecture.md,
Envoy behaviour 15). The stage calls these only when ``tracing`` is
configured, so tracing off costs the request path nothing.

Attributes Envoy fills itself (README "Traces"): ``gen_ai.provider.name`` and
``llm_gateway.backend`` from the attempt's endpoint, the attempt count, and
token usage from the access-log fields.
"""

from __future__ import annotations

from typing import Any

from .. import protocol as P
from ..state import GatewayState
from .finish import Finished
from .plan import Answer, RoutePlan, Started

ADMITTED = "admitted"  # budgets are configured and reserved for this request
UNLIMITED = "unlimited"  # no budgets configured: nothing to decide
REJECTED = "rejected"  # admission refused it (the reason says which budget)
GENAI_OPERATIONS = {"embed": "embeddings", "count_tokens": "count_tokens"}


def planned(plan: RoutePlan) -> dict[str, Any]:
    """Known once the body is read; attempt spans see these too."""
    started = plan.started
    # The conventions name the embeddings operation "embeddings"; a count keeps the gateway's word.
    op = started.dialect.genai_operation if plan.operation == "chat" else GENAI_OPERATIONS[plan.operation]
    return {
        P.TRACE_SPAN_NAME: f"{op} {plan.model}",  # the conventions' "{operation} {model}"
        "gen_ai.operation.name": op,
        "gen_ai.request.model": plan.model,
        "llm_gateway.tenant": started.tenant,
        "llm_gateway.primary_backend": plan.primary.name,
        "llm_gateway.admission": ADMITTED if plan.ticket is not None else UNLIMITED,
    }


def local_reply(started: Started | None, answer: Answer) -> dict[str, Any]:
    """A reply the gateway gave itself: a refusal (admission's among them) or a model listing."""
    fields: dict[str, Any] = {"llm_gateway.local_reply": answer.admission or answer.reason}
    if answer.admission:
        fields["llm_gateway.admission"] = REJECTED
    if started is not None:
        op = started.dialect.genai_operation if started.call.operation == "chat" else started.call.operation
        fields.update(
            {P.TRACE_SPAN_NAME: op, "gen_ai.operation.name": op, "llm_gateway.tenant": started.tenant}
        )
    return fields


def finished(state: GatewayState, plan: RoutePlan, done: Finished) -> dict[str, Any]:
    """Known when the response ends (Envoy reads them when it ends the request span)."""
    fields: dict[str, Any] = {}
    if not done.backend:
        return fields
    fields["llm_gateway.failover"] = done.backend != plan.primary.name
    backend = state.config.backends.get(done.backend)
    if backend is not None and 200 <= done.status < 300:
        fields["gen_ai.response.model"] = backend.upstream_model
        if plan.stream:
            fields["gen_ai.response.time_to_first_chunk"] = round(done.ttft, 6)  # seconds
    return fields
