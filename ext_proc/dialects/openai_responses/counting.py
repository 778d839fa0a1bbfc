"""Responses token counting: ``POST /v1/responses/input_tokens``.

The API reference (https://platform.openai.com/docs/api-reference/responses/input-tokens)
takes the input side of a Responses request (``model``, ``input``, ``instructions``,
``tools``, ``tool_choice``, ``reasoning``, ``text``, ``truncation``,
``parallel_tool_calls``, ``conversation``, ``previous_response_id``) and answers
``{"object": "response.input_tokens", "input_tokens": N}``. Providers of this dialect
are asked through the same endpoint.
"""

from __future__ import annotations

from typing import Any

from ...translation.fields import answer_count, invalid_answer
from ...translation.operations import CountingCodec

PATH = "/responses/input_tokens"
# What the counting endpoint takes (the gateway keeps conversations itself: it never
# sends conversation or previous_response_id, which expand() has resolved).
COUNTED = (
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "reasoning",
    "text",
    "truncation",
    "parallel_tool_calls",
)


class ResponsesCounting(CountingCodec):
    forwards = True

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": tokens}

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = {k: chat_body[k] for k in COUNTED if k in chat_body}
        out["model"] = upstream_model
        return out

    def request_path(self, upstream_model: str) -> str:
        return PATH

    def parse_count(self, data: Any) -> int:
        if not isinstance(data, dict) or "input_tokens" not in data:
            raise invalid_answer("it has no 'input_tokens'")
        return answer_count(data["input_tokens"], "input_tokens")


RESPONSES_COUNTING = ResponsesCounting()
