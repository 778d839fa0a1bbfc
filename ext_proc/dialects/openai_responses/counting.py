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

from ...translation.operations import EndpointCounting

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


class ResponsesCounting(EndpointCounting):
    path, counted, count_field = PATH, COUNTED, "input_tokens"

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": tokens}


RESPONSES_COUNTING = ResponsesCounting()
