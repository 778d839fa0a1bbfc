"""Operations besides chat: embeddings and token counting, their IR and codec contracts.

A chat request and an embeddings request share nothing but the envelope (a model,
a key, usage): embeddings get their own IR (``EmbedRequest``/``EmbedResponse``)
and their own codec (``EmbeddingsCodec``), which a dialect offers when its API has
an embeddings endpoint (``Dialect.embeddings``). Token counting counts a *chat*
request, so its IR is the chat IR (``ChatRequest``) and a number; its codec
(``CountingCodec``) reads a client's counting request, renders the count, and,
for dialects whose API has a counting endpoint, builds the provider's request
and reads its answer (docs/architecture.md, "Operations").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..errors import GatewayError
from .fields import answer_count, bad_answer, invalid_answer
from .ir import ChatRequest

# One input of an embeddings request: text, or token ids (for dialects that take them).
EmbedInput = str | list[int]


@dataclass(slots=True)
class EmbedRequest:
    """What a client asks to embed, whatever its dialect."""

    inputs: list[EmbedInput]
    dimensions: int | None = None  # output dimensionality; None: the model's own
    task: str | None = None  # a retrieval task hint, in the task-type vocabulary (RETRIEVAL_QUERY, ...)
    title: str | None = None  # a document title (retrieval documents)
    user: str | None = None  # the client's end-user id
    base64: bool = False  # the client wants vectors as base64 of little-endian float32
    single: bool = False  # the client sent one input, not a list: its answer is one embedding
    # fields only the client's own wire has: sent to a backend of that wire, refused elsewhere
    extra: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the wire the request was parsed from


@dataclass(slots=True)
class EmbedResponse:
    """Vectors in input order, and the input tokens the provider counted (None: it did not say)."""

    vectors: list[list[float]]
    input_tokens: int | None = None
    model: str = ""


class EmbeddingsCodec(ABC):
    """One dialect's embeddings wire format, in both roles."""

    @abstractmethod
    def parse_request(self, body: dict[str, Any], path_model: str | None, action: str) -> EmbedRequest:
        """A client's (or an earlier attempt's) request body; ``action`` is the call's own word
        for the operation (``ClientCall.action``). Raises ``GatewayError`` (400) naming the field."""

    @abstractmethod
    def build_request(self, req: EmbedRequest, upstream_model: str) -> dict[str, Any]:
        """The body for a provider of this dialect; ``GatewayError`` (400) when ``req`` asks
        for something this dialect cannot express."""

    @abstractmethod
    def request_path(self, upstream_model: str) -> str:
        """The provider path (under the provider's base path) of the embeddings endpoint."""

    @abstractmethod
    def parse_response(self, data: Any) -> EmbedResponse:
        """A provider's 200 body; ``GatewayError`` (502) when it is not an answer."""

    @abstractmethod
    def render_response(self, resp: EmbedResponse, req: EmbedRequest, input_tokens: int) -> dict[str, Any]:
        """The client's answer; ``input_tokens`` is the provider's count or the gateway's estimate."""


class CountingCodec(ABC):
    """One dialect's token-counting wire format: the client side always, the provider
    side when its API has a counting endpoint (``forwards``)."""

    #: the dialect's API has a counting endpoint (the provider side below works)
    forwards: bool = False

    @abstractmethod
    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A client's counting request as the chat request body it counts (parsed by the
        dialect's chat codec). Raises ``GatewayError`` (400) naming the field."""

    @abstractmethod
    def render_count(self, tokens: int) -> dict[str, Any]:
        """The client's answer."""

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        """A chat request body built for this dialect, as its counting endpoint's body."""
        raise GatewayError("invalid_request", "this backend has no token counting endpoint")

    def request_path(self, upstream_model: str) -> str:
        raise GatewayError("invalid_request", "this backend has no token counting endpoint")

    def parse_count(self, data: Any) -> int:
        """A counting endpoint's 200 body: the input tokens; ``GatewayError`` (502) otherwise."""
        raise GatewayError("api_error", "this backend has no token counting endpoint", status=502)


class EndpointCounting(CountingCodec):
    """A dialect whose counting endpoint (``path``) takes the chat request's ``counted``
    fields with the backend's model, and answers the count in ``count_field``."""

    forwards = True
    path: str
    counted: tuple[str, ...]
    count_field: str

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = {k: chat_body[k] for k in self.counted if k in chat_body}
        out["model"] = upstream_model
        return out

    def request_path(self, upstream_model: str) -> str:
        return self.path

    def parse_count(self, data: Any) -> int:
        if not isinstance(data, dict) or self.count_field not in data:
            raise invalid_answer(f"it has no '{self.count_field}'")
        return answer_count(data[self.count_field], self.count_field)


def answer_vector(vec: Any, where: str) -> list[float]:
    """A provider's vector: a list of finite numbers (a 502 otherwise)."""
    if not isinstance(vec, list) or not vec:
        raise bad_answer(where, "a non-empty list of numbers")
    out: list[float] = []
    for x in vec:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise bad_answer(where, "a non-empty list of finite numbers")
        out.append(float(x))
    return out


def estimate_tokens(inputs: list[EmbedInput], chars_per_token: int) -> int:
    """Input tokens of an embeddings request, estimated: token-id inputs count exactly."""
    return sum(len(i) if isinstance(i, list) else max(1, len(i) // chars_per_token) for i in inputs)


__all__ = [
    "ChatRequest",
    "CountingCodec",
    "EmbedInput",
    "EmbedRequest",
    "EmbedResponse",
    "EmbeddingsCodec",
    "EndpointCounting",
    "answer_vector",
    "estimate_tokens",
]
