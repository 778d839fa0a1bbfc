"""Anthropic token counting: ``POST /v1/messages/count_tokens``.

The API reference (https://docs.anthropic.com/en/api/messages-count-tokens) takes a
Messages request without ``max_tokens``: ``model``, ``messages``, ``system``,
``tools``, ``tool_choice``, ``thinking`` (and a few beta fields), and answers
``{"input_tokens": N}``.
"""

from __future__ import annotations

from typing import Any

from ...errors import invalid
from ...translation.fields import answer_count, invalid_answer
from ...translation.operations import CountingCodec

PATH = "/v1/messages/count_tokens"
# What the counting endpoint takes of a Messages request (everything else is about generation).
COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
# A Messages request needs max_tokens; counting never generates, so any value parses.
PLACEHOLDER_MAX_TOKENS = 1


class AnthropicCounting(CountingCodec):
    forwards = True

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("max_tokens", "stream"):
            if key in body:
                raise invalid(f"{key}: Extra inputs are not permitted", key)
        return {**body, "max_tokens": PLACEHOLDER_MAX_TOKENS}

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"input_tokens": tokens}

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


ANTHROPIC_COUNTING = AnthropicCounting()

__all__ = ["ANTHROPIC_COUNTING", "PATH", "AnthropicCounting"]
