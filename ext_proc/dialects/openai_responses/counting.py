"""Responses token counting: ``POST /v1/responses/input_tokens``.

The API reference (https://platform.openai.com/docs/api-reference/responses/input-tokens)
takes the input of a Responses request (``model``, ``input``, ``instructions``,
``tools``, ...) and answers ``{"object": "response.input_tokens", "input_tokens": N}``.
The gateway serves it for any backend with its own estimate or the backend's count.
"""

from __future__ import annotations

from typing import Any

from ...translation.operations import CountingCodec


class ResponsesCounting(CountingCodec):
    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": tokens}


RESPONSES_COUNTING = ResponsesCounting()
