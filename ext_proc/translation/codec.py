"""The contract every dialect codec fulfils.

A codec knows one wire format (one per dialect package in ``ext_proc.dialects``)
in both roles:

- facing a *client* of that dialect: parse its request, render responses,
  stream events and errors for it;
- facing a *backend* of that dialect: build the request body and path, parse
  its responses, stream events and errors.

Request parsing is the same function in both roles (the wire format is the
same), which is what lets the per-attempt upstream stage re-translate a body
already translated for the primary backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..errors import GatewayError, unsupported
from .fields import set_path
from .ir import ChatRequest, ChatResponse, StreamEvent, Usage
from .media import ANY_MEDIA, MediaRules
from .names import ANY, ToolRules
from .sse import SSEEvent


def client_field(req: ChatRequest, name: str) -> str:
    """``name`` (an IR field) as the client of ``req`` spelled it."""
    return req.field_names.get(name, name)


def apply_unmapped(req: ChatRequest, body: dict[str, Any], dialect: str, drop: bool) -> None:
    """The client's unmapped fields in a body built for ``dialect``: put back when the
    client spoke ``dialect`` itself, else refused (400 naming the field, with the reason
    the parser gave) or, with ``drop``, left out."""
    same = req.source_dialect == dialect
    for path in req.unmapped:
        if same and path in req.unmapped_values:
            set_path(body, path, req.unmapped_values[path])
        elif not drop or path in req.unmapped_required:
            raise unsupported(path, dialect, req.unmapped_reasons.get(path))


def refuse_json_mode(req: ChatRequest, dialect: str) -> None:
    """For targets whose structured output takes a schema only: JSON mode without one is refused
    (naming the client's field) rather than sent as a schema that would change the answer."""
    rf = req.response_format
    if rf is not None and rf.type != "text" and rf.schema is None:
        raise unsupported(
            client_field(req, "response_format"),
            dialect,
            "it has no JSON mode without a schema; send a JSON schema",
        )


class StreamDecoder(ABC):
    """Turns a backend's SSE events into IR stream events (stateful, one per stream)."""

    @abstractmethod
    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        """IR events for one SSE event (often none, sometimes several)."""

    @abstractmethod
    def close(self) -> list[StreamEvent]:
        """Called when the byte stream ends. A stream that ended without its
        terminal event yields a ``StreamError`` here, never a silent end."""

    def opening(self) -> bool:
        """Did the event just fed only go on opening the message (an event of the dialect's
        preamble that says nothing yet)? The answer guard keeps holding then, so an error
        that follows the preamble is still failed over."""
        return False


class StreamEncoder(ABC):
    """Turns IR stream events into a client's SSE bytes (stateful, one per stream)."""

    @abstractmethod
    def encode(self, event: StreamEvent) -> bytes:
        """Wire bytes for one IR event (may be empty)."""


class Codec(ABC):
    #: dialect name used in config (the registry key)
    dialect: str
    #: IR request field -> this dialect's spelling, where it differs (for refusals)
    field_names: dict[str, str] = {}
    #: what this dialect's providers accept as tool names and tool-call ids (``translation.names``
    #: fits a request's to it; a per-model catalog may override it there, in ``rules_for``)
    tool_rules: ToolRules = ANY
    #: the image and document media types this dialect's providers document accepting
    #: (``catalog.limits`` refuses or drops others; a model's catalog entry may narrow it)
    media: MediaRules = ANY_MEDIA
    #: its responses can carry several answers to one request (``ChatResponse.more``)
    several_answers: bool = False
    #: how a backend of this dialect can be told how hard to think ("budget", "adaptive",
    #: "level", "effort"; ``translation.reasoning``), the default first; its config may override
    reasoning_styles: tuple[str, ...] = ("effort",)
    # How many prompt-cache breakpoints (the IR parts' ``cache``) a request of this dialect may
    # carry; 0: none (they are dropped), and a model's ``auto_cache`` places none for it.
    cache_breakpoints: int = 0

    # ---- requests ----------------------------------------------------------
    @abstractmethod
    def parse_request(
        self, body: dict[str, Any], path_model: str | None = None, path_stream: bool = False
    ) -> ChatRequest:
        """Wire request -> IR. ``path_model``/``path_stream`` come from the URL
        for dialects that put them there. Raises ``GatewayError``
        (400, naming the field) for invalid input. Fields the IR cannot carry
        go to ``ChatRequest.unmapped``."""

    @abstractmethod
    def build_request(
        self,
        req: ChatRequest,
        upstream_model: str,
        *,
        default_max_tokens: int,
        drop_unsupported: bool = False,
    ) -> dict[str, Any]:
        """IR -> wire request body for a backend of this dialect. Raises
        ``GatewayError`` naming the field for anything this dialect cannot
        express, unless ``drop_unsupported``."""

    @abstractmethod
    def request_path(self, upstream_model: str, stream: bool) -> str:
        """Path (and query) of the backend endpoint, relative to the provider's base path."""

    # ---- responses ---------------------------------------------------------
    @abstractmethod
    def parse_response(self, body: dict[str, Any]) -> ChatResponse:
        """Backend's non-streamed success body -> IR."""

    @abstractmethod
    def render_response(self, resp: ChatResponse) -> dict[str, Any]:
        """IR -> client's non-streamed success body (``resp.model`` is the name the client asked for)."""

    def render_reply(self, resp: ChatResponse, req: ChatRequest | None) -> dict[str, Any]:
        """``render_response`` for the client whose request was ``req`` (None when unknown). A
        dialect whose responses repeat the request's settings (``ChatRequest.echo``) overrides it."""
        return self.render_response(resp)

    # ---- streams -----------------------------------------------------------
    @abstractmethod
    def stream_decoder(self, answers: int = 1) -> StreamDecoder:
        """Decoder for a backend stream; ``answers``: how many were asked for (``n``), in a
        dialect that streams several at once."""

    @abstractmethod
    def stream_encoder(self, req: ChatRequest) -> StreamEncoder:
        """Encoder for a client stream; ``req`` gives the model name to echo
        and options such as ``stream_include_usage``."""

    # ---- same-dialect pass-through ------------------------------------------
    @abstractmethod
    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        """Usage in a success body or in one parsed stream event's data, if it has any."""

    @abstractmethod
    def rename_model(self, body: dict[str, Any], model: str) -> bool:
        """Set the model name a success body or stream event's data reports to
        ``model`` (in place); True if the body carried one. Lets same-dialect
        traffic echo the client's model name without a full translation."""

    # ---- errors ------------------------------------------------------------
    @abstractmethod
    def parse_error(self, status: int, body: bytes) -> GatewayError:
        """Backend's error response -> ``GatewayError`` keeping the status
        faithful (429 stays 429; a context-length error stays 400 with kind
        ``context_length``). Must cope with non-JSON bodies."""

    @abstractmethod
    def render_error(self, err: GatewayError) -> dict[str, Any]:
        """``GatewayError`` -> the client's error body."""

    def error_status(self, err: GatewayError) -> int:
        """The HTTP status sent with ``render_error`` (most dialects keep the error's own)."""
        return err.status

    @abstractmethod
    def render_stream_error(self, err: GatewayError) -> bytes:
        """A well-formed in-stream error event in this dialect (for a stream
        that breaks after it started)."""
