"""What a dialect is: one API wire format, in both roles.

A dialect package owns everything about its wire format, so adding one is one
package and one registry line (docs/architecture.md, "Adding a dialect"):

- the **codec** (``translation.codec.Codec``): requests, responses, stream
  events and errors to and from the IR;
- the **client surface**: which paths and methods it serves, where its clients
  put their key, the hint a keyless client gets, its model listing, the status
  its clients expect for an error, where a request names its model and whether
  it streams, what it asks for in output tokens (admission);
- the **provider side**: the path of a backend endpoint, the credential headers
  (or a signing hook that sees the final body, with credentials the dialect
  loads itself when its providers take no API key), how its providers frame a
  stream (SSE or a framing of their own), the pass-through rules for
  same-dialect traffic (model rename, usage injection, end-of-stream marks),
  and provider response headers that must not reach a client.
- for stateful client APIs, **conversation state**: filling a request in from
  stored state before it is translated (``expand``), keeping its answer when
  the response ends (``keeper``), and the operations on that state the
  gateway answers itself (``serve_state``).

Nothing outside ``ext_proc/dialects/`` names a dialect or one of its wire keys
(``tests/test_layout.py`` greps for them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..conversations import ConversationStore
from ..credentials import TokenSource, oauth_source
from ..errors import GatewayError
from ..translation.codec import Codec
from ..translation.framing import SSE, StreamFraming
from ..translation.operations import CountingCodec, EmbeddingsCodec

if TYPE_CHECKING:
    from ..catalog.caps import ModelCaps

# "state": an operation on conversation state the gateway keeps (e.g. reading a
# stored answer), answered by the dialect itself (``Dialect.serve_state``), never routed.
# "embed": an embeddings request (``Dialect.embeddings``); "count_tokens": counting a chat
# request's input tokens (``Dialect.counting``): docs/architecture.md, "Operations";
# "completion": a text completion (prompt, suffix), pass-through only (``Dialect.completion_path``).
Operation = Literal[
    "chat", "embed", "count_tokens", "completion", "list_models", "get_model", "state", "unknown"
]

# What a same-dialect stream event says about the stream's end.
COMPLETE: Literal["complete"] = "complete"  # the stream's terminal event: it ended well
FAILED: Literal["failed"] = "failed"  # an in-band error event: the dialect's own way of saying it failed
StreamMark = Literal["complete", "failed"] | None


@dataclass(slots=True)
class ClientCall:
    """A client request line, classified: which dialect, which operation."""

    dialect: str
    operation: Operation
    model: str | None = None  # from the path (e.g. GET /v1/models/{id}, or dialects that route by path)
    stream: bool = False  # from the path, for dialects that say it there
    query_key: str | None = None  # a key sent as a query parameter
    resource: str | None = None  # what a "state" operation names (e.g. a stored answer's id)
    action: str = ""  # what a "state" operation does with it, in the dialect's own words
    query: str = ""  # the request line's query string (set by the registry)


class ResponseKeeper(ABC):
    """A dialect's finish effect: sees the bytes a client receives for one request and, when
    the response has ended, keeps what later requests of the conversation need."""

    @abstractmethod
    def observe(self, data: bytes) -> None:
        """Bytes on their way to the client (in order, the whole response)."""

    @abstractmethod
    async def keep(self, status: int) -> None:
        """The response ended with ``status``. Never raises: the client already has its answer."""


def clamp_cap(body: dict[str, Any], path: tuple[str, ...], cap: int | None) -> dict[str, Any]:
    """``body`` with the integer at ``path`` (an output cap) at most ``cap``: a new body,
    copied along the path, when it changes; ``body`` itself otherwise."""
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if cap is None or not isinstance(value, int) or isinstance(value, bool) or value <= cap:
        return body
    head, *rest = path
    inner = body[head]
    return {**body, head: clamp_cap(inner, tuple(rest), cap) if rest else cap}


class Dialect(ABC):
    """One wire format; a shared, stateless instance per dialect."""

    #: the name used in config (``providers.*.dialect``) and in metric labels
    name: str
    codec: Codec
    #: request headers in which its clients send their key (removed before a request leaves)
    key_headers: tuple[str, ...] = ()
    #: what a client that sent no key is told
    auth_hint: str = ""
    #: headers this dialect may set towards a provider for credentials or version (reset on every attempt)
    credential_header_names: tuple[str, ...] = ()
    #: API version headers every request to a provider of this dialect carries
    version_headers: dict[str, str] = {}
    #: provider response headers that would confuse another dialect's client or expose the provider account
    provider_response_headers: tuple[str, ...] = ()
    #: a provider of this dialect may serve its endpoint at an operator-given path (``chat_path``)
    custom_path: bool = False
    #: how providers of this dialect cut a stream into events (content type and reader)
    stream_framing: StreamFraming = SSE
    #: providers take an API key (``api_key_env``/``api_key_file``); False: they authenticate
    #: with credentials the dialect loads itself (``load_credentials``) and signs with (``sign``)
    needs_api_key: bool = True
    #: provider config fields only this dialect's providers take -> whether each is required
    #: (a dialect may check more in ``provider_problems``)
    provider_fields: dict[str, bool] = {}
    #: JSON keys that hold the conversation's turns (token estimate)
    turn_keys: tuple[str, ...] = ()
    #: JSON keys that are settings, not prompt text (token estimate)
    setting_keys: frozenset[str] = frozenset()
    #: JSON keys that hold media (token estimate counts them flat)
    media_keys: frozenset[str] = frozenset()
    #: OpenTelemetry GenAI names: ``gen_ai.provider.name`` of its providers (the
    #: conventions name the API a client speaks, not the host behind it) and
    #: ``gen_ai.operation.name`` of its chat call
    genai_provider: str = ""
    genai_operation: str = "chat"
    #: the dialect whose wire format (bodies, responses, streams) this one shares, when it is
    #: a cloud's variant of a provider API: clients of that dialect pass through to it
    shares_wire_of: str | None = None
    #: its embeddings wire format, when its API has an embeddings endpoint (client and provider side)
    embeddings: EmbeddingsCodec | None = None
    #: its token-counting wire format: the client side, and the provider side when ``counting.forwards``
    counting: CountingCodec | None = None
    #: the section of the model capability catalog (``ext_proc/catalog/models.yaml``) its
    #: backends' models are looked up in; empty: none (no limits known)
    catalog_family: str = ""
    #: path (under a provider's base URL) of this dialect's text completions (prompt, suffix:
    #: code completion), served pass-through only, to providers of this wire; None: none
    completion_path: str | None = None

    @property
    def wire(self) -> str:
        """The wire format: dialects with the same one pass bodies and streams through
        (``passthrough_body`` adjusts what differs, e.g. where the model is named)."""
        return self.shares_wire_of or self.name

    # ---- client surface -----------------------------------------------------
    @abstractmethod
    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        """This dialect's call for a request line it serves, else None. ``path``
        has no query and no trailing slash."""

    def client_key(self, headers: dict[str, str]) -> str | None:
        """The gateway key in this dialect's key header, if the client sent one there."""
        for h in self.key_headers:
            if headers.get(h):
                return headers[h]
        return None

    def claims(self, headers: dict[str, str]) -> bool:
        """Do the headers say a client of this dialect sent the request (for
        paths several dialects share, and for unknown paths)?"""
        return any(h in headers for h in self.key_headers)

    @abstractmethod
    def model_listing(self, models: list[str], one: str | None = None) -> dict[str, Any]:
        """The configured models in this dialect's list (or single model) format."""

    def request_model(self, call: ClientCall, body: dict[str, Any]) -> Any:
        """The model a chat request names (any JSON value: the caller checks it)."""
        return body.get("model")

    def request_stream(self, call: ClientCall, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def is_completion(self, body: dict[str, Any]) -> bool:
        """Is ``body`` (as sent to a provider of this dialect) a text completion? A failover
        attempt learns the operation from its body alone."""
        return False

    def error_status(self, err: GatewayError) -> int:
        """The HTTP status a client of this dialect gets for ``err``."""
        return self.codec.error_status(err)

    @abstractmethod
    def requested_output(self, body: dict[str, Any]) -> tuple[Any, Any]:
        """(max output tokens, number of choices) as the request asks, raw JSON values."""

    # ---- provider side ------------------------------------------------------
    def request_path(self, upstream_model: str, stream: bool) -> str:
        return self.codec.request_path(upstream_model, stream)

    def provider_path(self, provider: Any, upstream_model: str, stream: bool) -> str:
        """Path (and query) under the provider's base URL; dialects whose path holds
        provider settings (a cloud project, an API version) override this."""
        return self.request_path(upstream_model, stream)

    def embeddings_path(self, provider: Any, upstream_model: str) -> str:
        """Path (and query) of the embeddings endpoint under the provider's base URL."""
        assert self.embeddings is not None
        return self.embeddings.request_path(upstream_model)

    def counting_path(self, provider: Any, upstream_model: str) -> str:
        """Path (and query) of the token-counting endpoint under the provider's base URL."""
        assert self.counting is not None
        return self.counting.request_path(upstream_model)

    def provider_problems(self, provider: Mapping[str, Any]) -> list[str]:
        """What is wrong with a provider block of this dialect beyond its schema (raw config
        data, possibly malformed), each as "field: what is wrong"."""
        return []

    def token_source(self, name: str, provider: Any, env: Mapping[str, str]) -> TokenSource | None:
        """The provider's short-lived bearer token, when it has one instead of a static key:
        the operator's ``oauth`` block by default; cloud dialects bring their identity's.
        Building it does no I/O (``TokenSource.load`` does)."""
        return oauth_source(name, provider.oauth, env) if getattr(provider, "oauth", None) else None

    def token_headers(self, token: str) -> dict[str, str]:
        """Headers that carry a bearer token to a provider of this dialect."""
        return {"authorization": f"Bearer {token}"}

    @abstractmethod
    def credential_headers(self, key: str) -> dict[str, str]:
        """Headers that carry ``key`` to a provider of this dialect."""

    def sign(self, provider: Any, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """Per-attempt headers computed over the final body (request signing); ``provider``
        is the backend's ``config.Provider`` (not imported: config imports the dialects).
        Static credentials need none: they are computed once per config. Called on the
        request path: it only computes (credentials are loaded by ``load_credentials``)."""
        return {}

    def load_credentials(self, provider: Any) -> str | None:
        """For dialects that need no API key: load the credentials ``sign`` uses and keep
        them fresh off the request path. Called once per config version (at startup, on a
        reload, by ``check``); returns what is wrong, in words, when they cannot be loaded."""
        return None

    def passthrough_body(
        self, body: dict[str, Any], upstream_model: str, stream: bool
    ) -> dict[str, Any] | None:
        """Same-wire request (a client body, or ``client_body`` of a sibling's): the body
        with only what must change (the model name); None when nothing changes."""
        if "model" in body and body["model"] != upstream_model:
            return {**body, "model": upstream_model}
        return None

    def fit_body(self, body: dict[str, Any], caps: ModelCaps | None) -> dict[str, Any]:
        """A body for a backend (built or passed through), fitted to what its model takes on
        the wire (``catalog``: e.g. the field the output cap goes in); the same object when
        nothing changes, a new one otherwise (``body`` may be the client's own)."""
        return body

    def client_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A body built for a provider of this dialect, back in its wire's client form
        (a failover attempt to a sibling dialect starts from it)."""
        return body

    def strips_added_usage(self, body: dict[str, Any] | None) -> bool:
        """Did ``passthrough_body`` ask the provider for stream usage the client did not?"""
        return False

    def is_added_usage_event(self, obj: dict[str, Any]) -> bool:
        """The usage-only stream event that ``passthrough_body`` asked for."""
        return False

    @abstractmethod
    def stream_mark(self, event: str | None, data: str, obj: dict[str, Any] | None) -> StreamMark:
        """Same-dialect stream: does this event end the stream well, or fail it?
        ``obj`` is the event's data as a JSON object, when it is one."""

    # ---- conversation state (stateful client APIs; docs/architecture.md, "Adding a dialect") --------
    async def expand(
        self, store: ConversationStore, tenant: str, call: ClientCall, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The request with what it refers to in stored state filled in (e.g. the earlier turns of
        the answer it continues), before it is admitted and translated, so any backend can serve it.
        Raises ``GatewayError`` (a 4xx) for a reference that does not resolve for ``tenant``, and
        ``conversations.StoreUnavailable`` when the store does not answer."""
        return body

    def keeper(
        self, store: ConversationStore, tenant: str, call: ClientCall, body: dict[str, Any]
    ) -> ResponseKeeper | None:
        """What keeps this (expanded) request's answer for later requests; None keeps nothing."""
        return None

    async def serve_state(self, store: ConversationStore, tenant: str, call: ClientCall) -> tuple[int, Any]:
        """Answer a "state" operation of ``match``: (status, JSON body). Raises like ``expand``."""
        raise GatewayError("not_found", "no such endpoint")
