"""Gemini generateContent: the model and streaming are in the path
(``POST /v1beta/models/{model}:generateContent`` / ``:streamGenerateContent``),
the key in ``x-goog-api-key`` or ``?key=``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ...translation.operations import CountingCodec, EmbeddingsCodec
from ..base import COMPLETE, FAILED, ClientCall, Dialect, StreamMark, clamp_cap
from .codec import GEMINI, GeminiCodec, media_beside_responses
from .counting import GEMINI_COUNTING
from .counting import VERB as COUNT_VERB
from .embeddings import BATCH, GEMINI_EMBEDDINGS, SINGLE

if TYPE_CHECKING:
    from ...catalog.caps import ModelCaps

PREFIXES = ("/v1beta/models", "/v1/models")
VERBS = frozenset({"generateContent", "streamGenerateContent"})
EMBED_VERBS = frozenset({SINGLE, BATCH})


class Gemini(Dialect):
    name = "gemini"
    genai_provider = "gcp.gemini"
    catalog_family = "gemini"
    genai_operation = "generate_content"
    codec = GEMINI
    embeddings: EmbeddingsCodec | None = GEMINI_EMBEDDINGS
    counting: CountingCodec | None = GEMINI_COUNTING
    key_headers: tuple[str, ...] = ("x-goog-api-key",)
    auth_hint = "send it in the 'x-goog-api-key' header or the 'key' query parameter"
    credential_header_names: tuple[str, ...] = ("x-goog-api-key",)
    provider_response_headers = ("x-goog-api-client",)
    turn_keys = ("contents",)
    setting_keys = frozenset(
        {
            "model",
            "role",
            "type",
            "generationConfig",
            "generation_config",
            "safetySettings",
            "safety_settings",
        }
    )
    media_keys = frozenset({"inline_data", "inlineData", "file_data", "fileData"})

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        for prefix in PREFIXES:
            if not path.startswith(prefix):
                continue
            rest = unquote(path[len(prefix) :].lstrip("/"))
            if prefix == "/v1/models" and ":" not in rest and not self.claims(headers) and query_key is None:
                return None  # the other dialects' GET /v1/models
            if ":" in rest:
                model, _, verb = rest.rpartition(":")
                if method == "POST" and verb in EMBED_VERBS:
                    return ClientCall(self.name, "embed", model=model, query_key=query_key, action=verb)
                if method == "POST" and verb == COUNT_VERB:
                    return ClientCall(self.name, "count_tokens", model=model, query_key=query_key)
                if method == "POST" and verb in VERBS:
                    return ClientCall(
                        self.name,
                        "chat",
                        model=model,
                        stream=verb == "streamGenerateContent",
                        query_key=query_key,
                    )
                return ClientCall(self.name, "unknown", model=model, query_key=query_key)
            if method == "GET":
                return ClientCall(
                    self.name, "get_model" if rest else "list_models", model=rest or None, query_key=query_key
                )
            return ClientCall(self.name, "unknown", query_key=query_key)
        return None

    def model_listing(self, models: list[str], one: str | None = None) -> dict[str, Any]:
        items = [
            {
                "name": f"models/{m}",
                "displayName": m,
                "description": "served by llm-gateway",
                "supportedGenerationMethods": sorted(VERBS),
            }
            for m in models
        ]
        return items[0] if one is not None else {"models": items}

    def request_model(self, call: ClientCall, body: dict[str, Any]) -> Any:
        return call.model

    def request_stream(self, call: ClientCall, body: dict[str, Any]) -> bool:
        return call.stream

    def requested_output(self, body: dict[str, Any]) -> tuple[Any, Any]:
        gen = body.get("generationConfig") or body.get("generation_config")
        if not isinstance(gen, dict):
            return None, None
        return (
            gen.get("maxOutputTokens") or gen.get("max_output_tokens"),
            gen.get("candidateCount") or gen.get("candidate_count"),
        )

    def credential_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def fit_body(self, body: dict[str, Any], caps: ModelCaps | None) -> dict[str, Any]:
        """A passed-through output cap above the model's max output, clamped (catalog); the
        API takes both spellings of the field. A model without multimodal function responses
        (catalog ``tool_result_media: false``) gets a tool result's media beside it."""
        cap = caps.max_output_tokens if caps else None
        for path in (("generationConfig", "maxOutputTokens"), ("generation_config", "max_output_tokens")):
            body = clamp_cap(body, path, cap)
        if caps is not None and caps.tool_result_media is False:  # no multimodal function responses
            body = media_beside_responses(body)
        return body

    def stream_mark(self, event: str | None, data: str, obj: dict[str, Any] | None) -> StreamMark:
        if event == "error" or (obj is not None and "error" in obj):
            return FAILED
        cands = obj.get("candidates") if obj is not None else None
        if isinstance(cands, list):
            for cand in cands:
                if isinstance(cand, dict) and cand.get("finishReason"):
                    return COMPLETE
        return None


DIALECT = Gemini()

__all__ = ["DIALECT", "GEMINI", "Gemini", "GeminiCodec"]
