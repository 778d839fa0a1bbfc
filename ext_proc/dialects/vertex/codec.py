"""Claude on Vertex AI: the Anthropic Messages wire format, with the model in the URL
instead of the body and ``anthropic_version: vertex-2023-10-16`` in the body instead of a
header (Anthropic, "Claude on Vertex AI"; Google Cloud, "Request predictions with Claude
models"). Errors come in two shapes: Anthropic's from the model, Google's (``{"error":
{"code", "message", "status"}}``) from Vertex itself (authentication, quota, unknown model)."""

from __future__ import annotations

from typing import Any

import orjson

from ...errors import GatewayError
from ...translation.fields import error_json
from ...translation.ir import ChatRequest
from ..anthropic_messages.codec import AnthropicCodec

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def to_vertex(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages body as Vertex takes it."""
    out = {k: v for k, v in body.items() if k != "model"}
    out["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
    return out


def from_vertex(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """A Vertex body back in the Messages form (``model`` when known)."""
    out = {k: v for k, v in body.items() if k != "anthropic_version"}
    if model is not None and "model" not in out:
        out["model"] = model
    return out


class VertexAnthropicCodec(AnthropicCodec):
    dialect = "vertex_anthropic"

    def parse_request(
        self, body: dict[str, Any], path_model: str | None = None, path_stream: bool = False
    ) -> ChatRequest:
        return super().parse_request(
            from_vertex(body, path_model) if isinstance(body, dict) else body, path_model, path_stream
        )

    def build_request(
        self,
        req: ChatRequest,
        upstream_model: str,
        *,
        default_max_tokens: int,
        drop_unsupported: bool = False,
    ) -> dict[str, Any]:
        return to_vertex(
            super().build_request(
                req, upstream_model, default_max_tokens=default_max_tokens, drop_unsupported=drop_unsupported
            )
        )

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        # Vertex's own errors ({"error": {"code", "message", "status"}}, kind from the status)
        # parse like Anthropic's; some come as a one-element array.
        obj = error_json(body)
        if isinstance(obj, list) and obj and isinstance(obj[0], dict):
            body = orjson.dumps(obj[0])
        return super().parse_error(status, body)


VERTEX_ANTHROPIC = VertexAnthropicCodec()
