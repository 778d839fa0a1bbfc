"""The client-facing API surface: which dialect a request speaks, its key, model listings.

Clients use their provider's official SDK unchanged, pointed at the gateway,
so paths and auth follow each provider's conventions:

- OpenAI: ``POST /v1/chat/completions``, ``GET /v1/models``; ``Authorization: Bearer``.
- Anthropic: ``POST /v1/messages``, ``GET /v1/models``; ``x-api-key``.
- Gemini: ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent``; ``x-goog-api-key`` or ``?key=``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

Operation = Literal["chat", "list_models", "get_model", "unknown"]


@dataclass(slots=True)
class ClientCall:
    dialect: str
    operation: Operation
    model: str | None = None  # from the path (Gemini, or GET /v1/models/{id})
    stream: bool = False  # from the path (Gemini streamGenerateContent)
    query_key: str | None = None  # Gemini ?key=


def _guess_dialect(headers: dict[str, str]) -> str:
    if "x-goog-api-key" in headers:
        return "gemini"
    if "anthropic-version" in headers or "x-api-key" in headers:
        return "anthropic"
    return "openai"


def classify(method: str, path: str, headers: dict[str, str]) -> ClientCall:
    """Map a request line to its dialect and operation."""
    raw_path, _, query = path.partition("?")
    params = parse_qs(query) if query else {}
    query_key = params.get("key", [None])[0]
    p = raw_path.rstrip("/")
    if p in ("/v1/chat/completions", "/chat/completions"):
        return ClientCall("openai", "chat" if method == "POST" else "unknown")
    if p == "/v1/messages":
        return ClientCall("anthropic", "chat" if method == "POST" else "unknown")
    for prefix in ("/v1beta/models", "/v1/models"):
        if not p.startswith(prefix):
            continue
        rest = unquote(p[len(prefix):].lstrip("/"))
        if prefix == "/v1/models" and ":" not in rest and "x-goog-api-key" not in headers and query_key is None:
            # OpenAI and Anthropic share GET /v1/models; headers tell them apart.
            dialect = _guess_dialect(headers)
            if method != "GET":
                return ClientCall(dialect, "unknown")
            return ClientCall(dialect, "get_model" if rest else "list_models", model=rest or None)
        if ":" in rest:
            model, _, verb = rest.rpartition(":")
            if method == "POST" and verb in ("generateContent", "streamGenerateContent"):
                return ClientCall("gemini", "chat", model=model, stream=verb == "streamGenerateContent",
                                  query_key=query_key)
            return ClientCall("gemini", "unknown", model=model, query_key=query_key)
        if method == "GET":
            return ClientCall("gemini", "get_model" if rest else "list_models", model=rest or None,
                              query_key=query_key)
        return ClientCall("gemini", "unknown", query_key=query_key)
    return ClientCall(_guess_dialect(headers), "unknown", query_key=query_key)


def api_key(call: ClientCall, headers: dict[str, str]) -> str | None:
    """The client's gateway key, from its dialect's header (any dialect's is accepted)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or call.query_key


def auth_hint(dialect: str) -> str:
    return {
        "openai": "send it as 'Authorization: Bearer <key>'",
        "anthropic": "send it in the 'x-api-key' header",
        "gemini": "send it in the 'x-goog-api-key' header or the 'key' query parameter",
    }[dialect]


def model_listing(dialect: str, models: list[str], one: str | None = None) -> dict[str, Any]:
    """The configured models in the dialect's list (or single model) format."""
    now = int(time.time())
    if dialect == "anthropic":
        items = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in models]
        if one is not None:
            return items[0]
        return {"data": items, "has_more": False, "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None}
    if dialect == "gemini":
        items = [{"name": f"models/{m}", "displayName": m, "description": "served by llm-gateway",
                  "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]} for m in models]
        return items[0] if one is not None else {"models": items}
    items = [{"id": m, "object": "model", "created": now, "owned_by": "llm-gateway"} for m in models]
    return items[0] if one is not None else {"object": "list", "data": items}
