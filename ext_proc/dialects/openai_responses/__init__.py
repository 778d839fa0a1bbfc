"""OpenAI Responses: ``POST /v1/responses``, key as ``Authorization: Bearer``.

Stateful: a request may continue a stored response (``previous_response_id``),
and ``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``
read and forget stored responses. The gateway keeps them itself (``state``) and
answers those operations without a backend; backends of this dialect are always
sent ``store: false``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...conversations import ConversationStore
from ..base import COMPLETE, FAILED, ClientCall, Dialect, ResponseKeeper, StreamMark, clamp_cap
from ..openai_chat import DIALECT as CHAT
from ..openai_chat.embeddings import OPENAI_EMBEDDINGS
from . import state
from .codec import RESPONSES, ResponsesCodec
from .counting import RESPONSES_COUNTING

if TYPE_CHECKING:
    from ...catalog.caps import ModelCaps

PATHS = ("/v1/responses", "/responses")
_TERMINAL = frozenset({"response.completed", "response.incomplete"})
_FAILURES = frozenset({"response.failed", "error"})


class OpenAIResponses(Dialect):
    name = "openai_responses"
    genai_provider = "openai"  # OpenTelemetry GenAI name: the provider, not its API
    codec = RESPONSES
    counting = RESPONSES_COUNTING
    embeddings = OPENAI_EMBEDDINGS  # the same platform serves /v1/embeddings beside /v1/responses
    catalog_family = "openai"
    key_headers = ("authorization",)
    auth_hint = "send it as 'Authorization: Bearer <key>'"
    credential_header_names = ("authorization",)
    provider_response_headers = CHAT.provider_response_headers  # the same provider
    custom_path = True
    turn_keys = ("input",)
    setting_keys = frozenset(
        {
            "model",
            "stream",
            "max_output_tokens",
            "temperature",
            "top_p",
            "metadata",
            "user",
            "role",
            "type",
            "store",
            "include",
            "previous_response_id",
            "parallel_tool_calls",
            "tool_choice",
            "reasoning",
            "truncation",
            "service_tier",
            "prompt_cache_key",
            "safety_identifier",
            "call_id",
            "status",
            "detail",
        }
    )
    media_keys = frozenset({"image_url", "file_data"})

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        for prefix in PATHS:
            if path == prefix:
                return ClientCall(self.name, "chat" if method == "POST" else "unknown")
            if not path.startswith(prefix + "/"):
                continue
            rid, _, sub = path[len(prefix) + 1 :].partition("/")
            if rid == "input_tokens" and not sub and method == "POST":
                return ClientCall(self.name, "count_tokens")
            if not sub and method in ("GET", "DELETE"):
                return ClientCall(self.name, "state", resource=rid, action=method.lower())
            if sub == "input_items" and method == "GET":
                return ClientCall(self.name, "state", resource=rid, action="input_items")
            return ClientCall(self.name, "unknown")  # cancel, compact: not served
        return None

    def client_key(self, headers: dict[str, str]) -> str | None:
        return CHAT.client_key(headers)

    def claims(self, headers: dict[str, str]) -> bool:
        return False  # a bearer key on another path is a Chat Completions client's (the default)

    def model_listing(self, models: list[str], one: str | None = None) -> dict[str, Any]:
        return CHAT.model_listing(models, one)

    def requested_output(self, body: dict[str, Any]) -> tuple[Any, Any]:
        return body.get("max_output_tokens"), None

    def credential_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def fit_body(self, body: dict[str, Any], caps: ModelCaps | None) -> dict[str, Any]:
        """A passed-through ``max_output_tokens`` above the model's max output, clamped (catalog)."""
        return clamp_cap(body, ("max_output_tokens",), caps.max_output_tokens if caps else None)

    def passthrough_body(
        self, body: dict[str, Any], upstream_model: str, stream: bool
    ) -> dict[str, Any] | None:
        """The model renamed, and ``store: false``: the gateway keeps the conversation (already
        expanded from ``previous_response_id``), the backend keeps nothing."""
        out = {**body, "model": upstream_model, "store": False}
        out.pop("previous_response_id", None)
        return out

    def stream_mark(self, event: str | None, data: str, obj: dict[str, Any] | None) -> StreamMark:
        kind = event or (obj.get("type") if obj is not None else None)
        if kind in _TERMINAL:
            return COMPLETE
        if kind in _FAILURES:
            return FAILED
        return None

    async def expand(
        self, store: ConversationStore, tenant: str, call: ClientCall, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await state.expand(store, tenant, body)

    def keeper(
        self, store: ConversationStore, tenant: str, call: ClientCall, body: dict[str, Any]
    ) -> ResponseKeeper | None:
        return state.keeper(store, tenant, body, self.request_stream(call, body))

    async def serve_state(self, store: ConversationStore, tenant: str, call: ClientCall) -> tuple[int, Any]:
        return await state.serve(store, tenant, call)


DIALECT = OpenAIResponses()

__all__ = ["DIALECT", "RESPONSES", "OpenAIResponses", "ResponsesCodec"]
