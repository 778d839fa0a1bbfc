"""One error type for the whole gateway, rendered by each codec in its dialect.

Every failure a client can see (bad input, auth, routing, admission, provider
errors, broken streams) is a ``GatewayError``. The kind says what happened in
dialect-neutral words; the codec of the client's dialect picks the wire shape
(``Codec.render_error``) and the status its clients expect (``Dialect.error_status``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorKind = Literal[
    "invalid_request",  # 400: malformed JSON, missing/invalid field, unsupported feature
    "context_length",  # 400: prompt too long for the model
    "authentication",  # 401
    "permission",  # 403
    "not_found",  # 404: unknown model
    "unknown_endpoint",  # 404: no such path
    "request_too_large",  # 413
    "rate_limit",  # 429: gateway budget or provider rate limit
    "api_error",  # 500/502: provider or gateway failure
    "overloaded",  # 503/529: provider overloaded or no backend available
    "timeout",  # 504
]

DEFAULT_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "context_length": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "unknown_endpoint": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "api_error": 500,
    "overloaded": 503,
    "timeout": 504,
}


def overloaded_as_503(status: int) -> int:
    """A provider's 529 (overloaded) as the 503 that Envoy's retry policy and
    most clients understand; a dialect whose clients expect 529 maps it back
    (``Dialect.error_status``)."""
    return 503 if status == 529 else status


def kind_for_status(status: int) -> ErrorKind:
    """The error kind a bare HTTP status most likely means."""
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit"
    if status in (503, 529):
        return "overloaded"
    if status == 504:
        return "timeout"
    if 400 <= status < 500:
        return "invalid_request"
    return "api_error"


@dataclass(slots=True)
class GatewayError(Exception):
    """A client-visible failure. ``param`` names the offending field, if any."""

    kind: ErrorKind
    message: str
    status: int = 0
    param: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if not self.status:
            self.status = DEFAULT_STATUS[self.kind]

    def __str__(self) -> str:
        return f"{self.status} {self.kind}: {self.message}"


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def unsupported(field_path: str, target: str, why: str | None = None) -> GatewayError:
    """A field the target dialect cannot express: refused, never dropped silently.
    ``why`` says more than "cannot be expressed" where there is more to say."""
    reason = f" ({why})" if why else ""
    article = "an" if target[:1].lower() in "aeiou" else "a"
    return GatewayError(
        "invalid_request",
        f"'{field_path}' cannot be expressed for {article} {target} backend{reason}; remove it, "
        f"or set 'drop_unsupported: true' on the model to let the gateway drop it",
        param=field_path,
    )
