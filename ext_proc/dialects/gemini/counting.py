"""Gemini token counting: ``models/{model}:countTokens``.

The API reference (https://ai.google.dev/api/tokens) takes either ``contents`` or a
whole ``generateContentRequest`` (not both: they are mutually exclusive), and
answers ``{"totalTokens": N, ...}``. The gateway always sends providers a
``generateContentRequest`` (it carries the system instruction and tools too).
"""

from __future__ import annotations

from typing import Any

from ...errors import invalid
from ...translation.fields import answer_count, invalid_answer, type_error
from ...translation.operations import CountingCodec
from .embeddings import bare

VERB = "countTokens"


class GeminiCounting(CountingCodec):
    forwards = True

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        extra = set(body) - {"contents", "generateContentRequest"}
        if extra:
            key = sorted(extra)[0]
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}"', key)
        if "contents" in body and "generateContentRequest" in body:
            raise invalid("'contents' and 'generateContentRequest' are mutually exclusive", "contents")
        if "generateContentRequest" in body:
            inner = body["generateContentRequest"]
            if not isinstance(inner, dict):
                raise type_error("generateContentRequest", "an object")
            return {k: v for k, v in inner.items() if k != "model"}
        if "contents" not in body:
            raise invalid("one of 'contents' or 'generateContentRequest' is required", "contents")
        return {"contents": body["contents"]}

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"totalTokens": tokens}

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        return {"generateContentRequest": {"model": f"models/{bare(upstream_model)}", **chat_body}}

    def request_path(self, upstream_model: str) -> str:
        return f"/v1beta/models/{bare(upstream_model)}:{VERB}"

    def parse_count(self, data: Any) -> int:
        if not isinstance(data, dict) or "totalTokens" not in data:
            raise invalid_answer("it has no 'totalTokens'")
        return answer_count(data["totalTokens"], "totalTokens")


GEMINI_COUNTING = GeminiCounting()
