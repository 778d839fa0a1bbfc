"""A translated request fitted to its target model's limits, before the codec builds it.

- Output cap: a client's max tokens above the model's max output is clamped to it (the
  backend would refuse the request, and the client asked for "at most"); the default
  the gateway fills in for dialects that require one is clamped the same way.
- Stop sequences: more than the model accepts cannot be trimmed without changing the
  answer, so the request is refused (400, naming the client's own field and the limit).
- Sampling: a reasoning model that takes only the default temperature and top_p (always, or
  while it reasons) gets a translated request's other values refused in the client's words,
  or dropped with the model's ``drop_unsupported`` (the provider would refuse them).

Unknown figures limit nothing. Wire-level fitting (which field carries the output cap)
is the target dialect's (``Dialect.fit_body``).
"""

from __future__ import annotations

from ..errors import GatewayError
from ..translation import reasoning
from ..translation.codec import client_field
from ..translation.ir import ChatRequest
from .caps import ModelCaps


def clamp_to_model(
    req: ChatRequest, caps: ModelCaps | None, default_max_tokens: int, drop: bool = False
) -> int:
    """Clamp ``req`` to ``caps`` in place; the default max tokens to build with.
    Raises ``GatewayError`` (400) for what cannot be fitted."""
    if caps is None:
        return default_max_tokens
    fit_sampling(req, caps, drop)
    limit = caps.max_stop_sequences
    if limit is not None and len(req.stop) > limit:
        name = client_field(req, "stop")
        raise GatewayError(
            "invalid_request",
            f"'{name}' has {len(req.stop)} stop sequences; the backend model '{caps.model}' "
            f"accepts at most {limit}",
            param=name,
        )
    cap = caps.max_output_tokens
    if cap is None:
        return default_max_tokens
    if req.max_tokens is not None and req.max_tokens > cap:
        req.max_tokens = cap
    return min(default_max_tokens, cap)


def output_cap(caps: ModelCaps | None, requested: int) -> int:
    """``requested`` output tokens as the model can produce them (admission reserves this)."""
    cap = caps.max_output_tokens if caps is not None else None
    return min(requested, cap) if cap is not None else requested


# Sampling settings a reasoning model refuses unless they are the default (1).
_SAMPLING = ("temperature", "top_p")


def fit_sampling(req: ChatRequest, caps: ModelCaps, drop: bool) -> None:
    """A model whose ``sampling`` is fixed (some reasoning models always, some while a reasoning
    effort is on: docs/catalog.md) refuses a temperature or top_p other than 1: a 400 naming the
    client's field, or the setting dropped with ``drop``."""
    if caps.sampling is None or (caps.sampling == "fixed_when_reasoning" and not reasoning.requested(req)):
        return
    for name in _SAMPLING:
        value = getattr(req, name)
        if value is None or value == 1:
            continue
        if drop:
            setattr(req, name, None)
            continue
        field = client_field(req, name)
        when = "" if caps.sampling == "fixed" else " while it reasons (turn reasoning off to set it)"
        raise GatewayError(
            "invalid_request",
            f"'{field}': the backend model '{caps.model}' takes only the default {name} (1){when}",
            param=field,
        )
