"""Token counting on Vertex AI, for both publishers (provider side only: no client speaks
these dialects, so ``chat_body`` reads back a body the gateway built, on failover).

- Gemini: ``POST .../publishers/google/models/{model}:countTokens`` (Vertex AI REST
  reference, ``projects.locations.publishers.models.countTokens`` /
  ``projects.locations.endpoints.countTokens``). Unlike the Gemini API's, its
  ``CountTokensRequest`` has no ``generateContentRequest``: it takes ``contents``,
  ``systemInstruction``, ``tools`` and ``generationConfig`` themselves (and ``model``,
  ``instances``, which the gateway does not send: the model is in the path), and answers
  ``{"totalTokens": N, "promptTokensDetails": [...]}`` (``CountTokensResponse``).
- Claude: ``POST .../publishers/anthropic/models/count-tokens:rawPredict`` (Google Cloud,
  "Count tokens for Claude models"): an Anthropic ``count_tokens`` body with the model *in
  the body* ("The request body must contain the model ID"), answered as Anthropic answers
  (``{"input_tokens": N}``). ``anthropic_version`` goes in the body as for every Vertex call,
  as the official SDK's Vertex client sends it (``AnthropicVertex``: ``setdefault
  ("anthropic_version", ...)`` on every request, the model kept in the body for this path).
"""

from __future__ import annotations

from typing import Any

from ...errors import invalid
from ..anthropic_messages.counting import AnthropicCounting
from ..gemini.counting import GeminiCounting
from .codec import VERTEX_ANTHROPIC_VERSION, from_vertex

GEMINI_VERB = "countTokens"
# What Vertex's CountTokensRequest takes of a GenerateContentRequest (the rest is generation).
GEMINI_COUNTED = ("contents", "systemInstruction", "tools", "generationConfig")
# Claude's counting endpoint is one pseudo-model of the anthropic publisher.
CLAUDE_MODEL, CLAUDE_VERB = "count-tokens", "rawPredict"


class VertexGeminiCounting(GeminiCounting):
    """Vertex's countTokens: the request's fields at the top level, the model in the path
    (``VertexGemini.counting_path``)."""

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        extra = set(body) - set(GEMINI_COUNTED)
        if extra:
            key = sorted(extra)[0]
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}"', key)
        return dict(body)

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        return {k: chat_body[k] for k in GEMINI_COUNTED if k in chat_body}

    def request_path(self, upstream_model: str) -> str:
        raise NotImplementedError("Vertex paths name the project: see VertexGemini.counting_path")


class VertexClaudeCounting(AnthropicCounting):
    """Claude's count-tokens on Vertex: Anthropic's body, model included, plus ``anthropic_version``."""

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return super().chat_body(from_vertex(body))

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        return {
            **super().build_request(chat_body, upstream_model),
            "anthropic_version": VERTEX_ANTHROPIC_VERSION,
        }

    def request_path(self, upstream_model: str) -> str:
        raise NotImplementedError("Vertex paths name the project: see VertexAnthropic.counting_path")


VERTEX_GEMINI_COUNTING = VertexGeminiCounting()
VERTEX_CLAUDE_COUNTING = VertexClaudeCounting()
