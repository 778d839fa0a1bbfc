"""OpenAI Chat Completions: ``POST /v1/chat/completions``, key as ``Authorization: Bearer``.

Also the dialect of OpenAI-compatible hosts (vLLM, SGLang, Groq, Mistral, ...): those take
an operator-given ``chat_path``, ``auth_header`` and ``drop_fields``; the codec copes with
their deviations (extra response fields, usage placement, error shapes). Azure OpenAI is
its own provider-side variant (``dialects.azure_openai``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..base import COMPLETE, FAILED, ClientCall, Dialect, StreamMark, clamp_cap

if TYPE_CHECKING:
    from ...catalog.caps import ModelCaps
from .codec import OPENAI, OpenAICodec
from .embeddings import OPENAI_EMBEDDINGS

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
EMBEDDINGS_PATHS = frozenset({"/v1/embeddings", "/embeddings"})
# Legacy text completions (prompt, suffix), what code-completion clients call; vLLM and
# SGLang serve them too (https://platform.openai.com/docs/api-reference/completions).
COMPLETION_PATHS = frozenset({"/v1/completions", "/completions"})
MODELS_PATH = "/v1/models"
# Where a Chat Completions request carries its output cap: the older name and the newer.
_CAP_FIELDS = ("max_tokens", "max_completion_tokens")


class OpenAIChat(Dialect):
    name = "openai"
    genai_provider = "openai"
    catalog_family = "openai"
    codec = OPENAI
    embeddings = OPENAI_EMBEDDINGS
    key_headers: tuple[str, ...] = ("authorization",)
    auth_hint = "send it as 'Authorization: Bearer <key>'"
    credential_header_names: tuple[str, ...] = ("authorization",)
    provider_response_headers: tuple[str, ...] = (
        "openai-organization",
        "openai-project",
        "openai-version",
        "openai-processing-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    )
    custom_path = True
    completion_path = "/completions"
    turn_keys = ("messages",)
    setting_keys = frozenset(
        {
            "model",
            "stream",
            "stream_options",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "temperature",
            "top_p",
            "seed",
            "metadata",
            "user",
            "role",
            "type",
        }
    )
    media_keys = frozenset({"image_url", "input_audio", "file"})

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        if path in CHAT_PATHS:
            return ClientCall(self.name, "chat" if method == "POST" else "unknown")
        if path in EMBEDDINGS_PATHS:
            return ClientCall(self.name, "embed" if method == "POST" else "unknown")
        if path in COMPLETION_PATHS:
            return ClientCall(self.name, "completion" if method == "POST" else "unknown")
        if path.startswith(MODELS_PATH):
            # Shared with other dialects; this one is the default when no header claims it.
            rest = path[len(MODELS_PATH) :].lstrip("/")
            if method != "GET":
                return ClientCall(self.name, "unknown")
            return ClientCall(self.name, "get_model" if rest else "list_models", model=rest or None)
        return None

    def is_completion(self, body: dict[str, Any]) -> bool:
        return "prompt" in body and "messages" not in body

    def client_key(self, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return (auth[7:].strip() or None) if auth[:7].lower() == "bearer " else None

    def claims(self, headers: dict[str, str]) -> bool:
        return True  # the default dialect of a request nothing else claims

    def model_listing(self, models: list[str], one: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        items = [{"id": m, "object": "model", "created": now, "owned_by": "llm-gateway"} for m in models]
        return items[0] if one is not None else {"object": "list", "data": items}

    def requested_output(self, body: dict[str, Any]) -> tuple[Any, Any]:
        cap = body.get("max_completion_tokens")
        if not (isinstance(cap, int) and cap > 0):
            cap = body.get("max_tokens")
        return cap, body.get("n")

    def credential_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def passthrough_body(
        self, body: dict[str, Any], upstream_model: str, stream: bool
    ) -> dict[str, Any] | None:
        out = super().passthrough_body(body, upstream_model, stream)
        if stream and self.strips_added_usage(body):
            # Usage is needed for accounting; the extra chunk is removed from the client's stream.
            base = out if out is not None else body
            options = base.get("stream_options")
            out = {
                **base,
                "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
            }
        return out

    def fit_body(self, body: dict[str, Any], caps: ModelCaps | None) -> dict[str, Any]:
        """The output cap in the field the model takes (OpenAI's reasoning models refuse
        ``max_tokens``; compatible hosts may only know it), clamped to its max output."""
        if caps is None:
            return body
        out = body
        field = caps.output_cap_field
        if field in _CAP_FIELDS:
            other = next(f for f in _CAP_FIELDS if f != field)
            if other in body:
                out = {k: v for k, v in body.items() if k != other}
                out.setdefault(field, body[other])
        for f in _CAP_FIELDS:
            out = clamp_cap(out, (f,), caps.max_output_tokens)
        return out

    def strips_added_usage(self, body: dict[str, Any] | None) -> bool:
        if body is None:
            return False
        options = body.get("stream_options")
        return not (isinstance(options, dict) and options.get("include_usage") is True)

    def is_added_usage_event(self, obj: dict[str, Any]) -> bool:
        return obj.get("choices") == [] and "usage" in obj

    def stream_mark(self, event: str | None, data: str, obj: dict[str, Any] | None) -> StreamMark:
        if data == "[DONE]":
            return COMPLETE
        if event == "error" or (obj is not None and "error" in obj):
            return FAILED
        return None


DIALECT = OpenAIChat()

__all__ = ["DIALECT", "OPENAI", "OpenAIChat", "OpenAICodec"]
