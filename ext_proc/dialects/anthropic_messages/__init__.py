"""Anthropic Messages: ``POST /v1/messages``, key in ``x-api-key``, ``anthropic-version``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...translation.operations import CountingCodec
from ..base import COMPLETE, FAILED, ClientCall, Dialect, StreamMark, clamp_cap
from .codec import ANTHROPIC, AnthropicCodec
from .counting import ANTHROPIC_COUNTING
from .counting import PATH as COUNT_PATH

if TYPE_CHECKING:
    from ...catalog.caps import ModelCaps

API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"


class AnthropicMessages(Dialect):
    name = "anthropic"
    genai_provider = "anthropic"
    catalog_family = "anthropic"
    codec = ANTHROPIC
    counting: CountingCodec | None = ANTHROPIC_COUNTING
    key_headers: tuple[str, ...] = ("x-api-key",)
    auth_hint = "send it in the 'x-api-key' header"
    credential_header_names: tuple[str, ...] = ("x-api-key", "anthropic-version")
    version_headers = {"anthropic-version": API_VERSION}
    provider_response_headers = (
        "anthropic-organization-id",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    )
    turn_keys = ("messages",)
    setting_keys = frozenset(
        {"model", "stream", "max_tokens", "temperature", "top_p", "top_k", "metadata", "role", "type"}
    )
    media_keys = frozenset({"source"})

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        if path == MESSAGES_PATH:
            return ClientCall(self.name, "chat" if method == "POST" else "unknown")
        if path == COUNT_PATH:
            return ClientCall(self.name, "count_tokens" if method == "POST" else "unknown")
        if path.startswith(MODELS_PATH) and self.claims(headers):
            rest = path[len(MODELS_PATH) :].lstrip("/")
            if method != "GET":
                return ClientCall(self.name, "unknown")
            return ClientCall(self.name, "get_model" if rest else "list_models", model=rest or None)
        return None

    def claims(self, headers: dict[str, str]) -> bool:
        return "anthropic-version" in headers or "x-api-key" in headers

    def model_listing(self, models: list[str], one: str | None = None) -> dict[str, Any]:
        items = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models
        ]
        if one is not None:
            return items[0]
        return {
            "data": items,
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }

    def requested_output(self, body: dict[str, Any]) -> tuple[Any, Any]:
        return body.get("max_tokens"), None

    def credential_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def fit_body(self, body: dict[str, Any], caps: ModelCaps | None) -> dict[str, Any]:
        """A passed-through ``max_tokens`` above the model's max output, clamped (catalog)."""
        return clamp_cap(body, ("max_tokens",), caps.max_output_tokens if caps else None)

    def passthrough_body(
        self, body: dict[str, Any], upstream_model: str, stream: bool
    ) -> dict[str, Any] | None:
        # Also a sibling's body (Claude on a cloud names the model in the path): Anthropic needs it here.
        if body.get("model") != upstream_model:
            return {**body, "model": upstream_model}
        return None

    def stream_mark(self, event: str | None, data: str, obj: dict[str, Any] | None) -> StreamMark:
        if event == "error":
            return FAILED
        if event == "message_stop":
            return COMPLETE
        return None


DIALECT = AnthropicMessages()

__all__ = ["ANTHROPIC", "DIALECT", "AnthropicCodec", "AnthropicMessages"]
