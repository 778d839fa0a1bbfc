"""The dialect registry: config names -> dialects.

Adding a dialect is one package beside these and one line in ``DIALECTS``
(docs/architecture.md, "Adding a dialect"). The order matters for requests
several dialects could claim (a shared path such as ``GET /v1/models``): the
first is the default, and requests are matched in reverse order, so a dialect
added later (with more specific paths or headers) is asked before the default.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from ..errors import GatewayError
from ..translation.codec import Codec
from . import (
    anthropic_messages,
    azure_openai,
    bedrock_converse,
    gemini,
    openai_chat,
    openai_responses,
    vertex,
)
from .base import COMPLETE, FAILED, ClientCall, Dialect, ResponseKeeper

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        openai_chat.DIALECT,  # first: the default
        anthropic_messages.DIALECT,
        gemini.DIALECT,
        openai_responses.DIALECT,
        *vertex.DIALECTS,  # provider side only: Gemini and Claude on Google Vertex AI
        azure_openai.DIALECT,  # provider side only: OpenAI models on Azure
        bedrock_converse.DIALECT,  # a backend dialect: matches no client request
    )
}
DEFAULT: Dialect = next(iter(DIALECTS.values()))
_MATCH_ORDER: tuple[Dialect, ...] = tuple(reversed(DIALECTS.values()))
CODECS: dict[str, Codec] = {name: d.codec for name, d in DIALECTS.items()}

# Every header a client may carry its gateway key in (removed before a request leaves).
CLIENT_KEY_HEADERS: tuple[str, ...] = tuple(
    dict.fromkeys(h for d in DIALECTS.values() for h in d.key_headers)
)
# Every header a dialect may set towards a provider (reset on every attempt).
CREDENTIAL_HEADERS: tuple[str, ...] = tuple(
    dict.fromkeys(h for d in DIALECTS.values() for h in d.credential_header_names)
)
# Provider response headers no client should see.
PROVIDER_RESPONSE_HEADERS: tuple[str, ...] = tuple(
    dict.fromkeys(h for d in DIALECTS.values() for h in d.provider_response_headers)
)
# Content types of every dialect's stream framing (SSE, AWS event-stream, ...).
STREAM_CONTENT_TYPES: tuple[str, ...] = tuple(
    sorted({d.stream_framing.content_type for d in DIALECTS.values()})
)


def get_dialect(name: str) -> Dialect:
    """The dialect of a config name; unknown names are a gateway bug or bad config."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise GatewayError(
            "api_error", f"unknown dialect {name!r}; expected one of {sorted(DIALECTS)}"
        ) from None


def get_codec(name: str) -> Codec:
    return get_dialect(name).codec


def classify(method: str, path: str, headers: dict[str, str]) -> ClientCall:
    """Map a request line to its dialect and operation."""
    raw_path, _, query = path.partition("?")
    query_key = parse_qs(query).get("key", [None])[0] if query else None
    p = raw_path.rstrip("/")
    for d in _MATCH_ORDER:
        call = d.match(method, p, query_key, headers)
        if call is not None:
            call.query = query
            return call
    return ClientCall(claimant(headers).name, "unknown", query_key=query_key)


def claimant(headers: dict[str, str]) -> Dialect:
    """The dialect the headers say the client speaks (the default when none does)."""
    return next(d for d in _MATCH_ORDER if d.claims(headers))


def api_key(call: ClientCall, headers: dict[str, str]) -> str | None:
    """The client's gateway key, from any dialect's key header (or the query):
    any dialect's is accepted, whatever the path."""
    for d in DIALECTS.values():
        key = d.client_key(headers)
        if key:
            return key
    return call.query_key


__all__ = [
    "CODECS",
    "COMPLETE",
    "DEFAULT",
    "DIALECTS",
    "FAILED",
    "ClientCall",
    "Dialect",
    "ResponseKeeper",
    "api_key",
    "classify",
    "get_codec",
    "get_dialect",
]
