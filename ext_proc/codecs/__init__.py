"""Dialect codecs: one shared, stateless instance per dialect.

Per-stream state lives in the decoders and encoders the codecs hand out, so
the instances below are safe to share across concurrent requests.
"""

from __future__ import annotations

from ..errors import GatewayError
from .anthropic import ANTHROPIC, AnthropicCodec
from .base import Codec, StreamDecoder, StreamEncoder
from .gemini import GEMINI, GeminiCodec
from .openai import OPENAI, OpenAICodec

CODECS: dict[str, Codec] = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI}


def get_codec(dialect: str) -> Codec:
    """The codec for a dialect name from config; unknown names are a gateway bug or bad config."""
    try:
        return CODECS[dialect]
    except KeyError:
        raise GatewayError("api_error", f"unknown dialect {dialect!r}; expected one of {sorted(CODECS)}") from None


__all__ = [
    "CODECS",
    "AnthropicCodec",
    "Codec",
    "GeminiCodec",
    "OpenAICodec",
    "StreamDecoder",
    "StreamEncoder",
    "get_codec",
]
