"""Anthropic token counting: ``POST /v1/messages/count_tokens``.

The API reference (https://docs.anthropic.com/en/api/messages-count-tokens) takes a
Messages request without ``max_tokens``: ``model``, ``messages``, ``system``,
``tools``, ``tool_choice``, ``thinking`` (and a few beta fields), and answers
``{"input_tokens": N}``.
"""

from __future__ import annotations

from typing import Any

from ...errors import invalid
from ...translation.operations import EndpointCounting

PATH = "/v1/messages/count_tokens"
# What the counting endpoint takes of a Messages request (everything else is about generation).
COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
# A Messages request needs max_tokens; counting never generates, so any value parses.
PLACEHOLDER_MAX_TOKENS = 1


class AnthropicCounting(EndpointCounting):
    path, counted, count_field = PATH, COUNTED, "input_tokens"

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("max_tokens", "stream"):
            if key in body:
                raise invalid(f"{key}: Extra inputs are not permitted", key)
        return {**body, "max_tokens": PLACEHOLDER_MAX_TOKENS}

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"input_tokens": tokens}


ANTHROPIC_COUNTING = AnthropicCounting()

__all__ = ["ANTHROPIC_COUNTING", "PATH", "AnthropicCounting"]
