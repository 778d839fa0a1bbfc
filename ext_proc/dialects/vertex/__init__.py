"""Google Vertex AI as a backend: Gemini models (``vertex_gemini``) and Claude models
(``vertex_anthropic``), each a thin variant of the dialect whose wire format it speaks.

- Paths name the project, the region and the publisher:
  ``/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
  (``:streamGenerateContent?alt=sse``) and ``.../publishers/anthropic/models/{model}:rawPredict``
  (``:streamRawPredict``); token counts: ``.../publishers/google/models/{model}:countTokens``
  and ``.../publishers/anthropic/models/count-tokens:rawPredict`` (``counting``); all under
  ``https://{location}-aiplatform.googleapis.com`` (``https://aiplatform.googleapis.com``
  for ``global``).
- Credentials are Google OAuth2 access tokens (``auth.GoogleCredentials``: a service-account
  key or application default credentials), sent as ``Authorization: Bearer``; no API key.
- Bodies: Gemini's are the Gemini API's; Claude's are Anthropic Messages without ``model``
  and with ``anthropic_version`` (``codec``). Clients of the same wire pass through, so an
  Anthropic client keeps every Messages feature on Claude on Vertex.

These are provider-side dialects only: no client request is classified as one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from ..anthropic_messages import AnthropicMessages
from ..base import ClientCall
from ..gemini import GEMINI, Gemini
from .auth import GoogleCredentials
from .codec import VERTEX_ANTHROPIC, VERTEX_ANTHROPIC_VERSION, VertexAnthropicCodec, from_vertex, to_vertex
from .counting import (
    CLAUDE_MODEL,
    CLAUDE_VERB,
    GEMINI_VERB,
    VERTEX_CLAUDE_COUNTING,
    VERTEX_GEMINI_COUNTING,
)

FIELDS = {"gcp_project": False, "gcp_location": False, "gcp_credentials_file": False}  # see provider_problems


class _Vertex:
    """What both Vertex publishers share: no client surface, Google credentials, project paths."""

    auth_hint = ""
    version_headers: dict[str, str] = {}
    genai_provider = "gcp.vertex_ai"  # OpenTelemetry GenAI name of the host API
    needs_api_key = False
    provider_fields = FIELDS
    custom_path = False
    publisher = ""

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        return None  # provider side only

    def claims(self, headers: dict[str, str]) -> bool:
        return False

    def credential_headers(self, key: str) -> dict[str, str]:
        return {}  # no API keys: provider_problems refuses them

    def token_source(self, name: str, provider: Any, env: Mapping[str, str]) -> Any:
        if getattr(provider, "oauth", None):  # a token another process mints (e.g. a file)
            return super().token_source(name, provider, env)  # type: ignore[misc]
        return GoogleCredentials(provider.gcp_credentials_file, env)

    def model_path(self, provider: Any, upstream_model: str) -> str:
        model = upstream_model[7:] if upstream_model.startswith("models/") else upstream_model
        return (
            f"/v1/projects/{provider.gcp_project}/locations/{provider.gcp_location}"
            f"/publishers/{self.publisher}/models/{quote(model, safe='@.-_')}"
        )

    def provider_problems(self, provider: Mapping[str, Any]) -> list[str]:
        problems = [
            f"{f}: required for Vertex AI" for f in ("gcp_project", "gcp_location") if not provider.get(f)
        ]
        for f in ("api_key_env", "api_key_file", "auth_header"):
            if provider.get(f):
                problems.append(
                    f"{f}: Vertex AI takes Google credentials (gcp_credentials_file, or application "
                    "default credentials when unset), not an API key"
                )
        location, base = provider.get("gcp_location"), provider.get("base_url")
        host = urlsplit(base).hostname if isinstance(base, str) else None
        if isinstance(location, str) and host and host.endswith("aiplatform.googleapis.com"):
            expected = (
                "aiplatform.googleapis.com"
                if location == "global"
                else f"{location}-aiplatform.googleapis.com"
            )
            if host != expected:
                problems.append(f"base_url: Vertex AI serves location '{location}' at https://{expected}")
        return problems


class VertexGemini(_Vertex, Gemini):
    key_headers = ()  # no client surface
    credential_header_names = ("authorization",)
    name = "vertex_gemini"
    codec = GEMINI
    shares_wire_of = "gemini"
    catalog_family = "vertex_gemini"
    publisher = "google"
    embeddings = None  # not carried to Vertex yet (its embeddings endpoint differs): `check` says so
    counting = VERTEX_GEMINI_COUNTING

    def provider_path(self, provider: Any, upstream_model: str, stream: bool) -> str:
        verb = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return self.model_path(provider, upstream_model) + verb

    def counting_path(self, provider: Any, upstream_model: str) -> str:
        return f"{self.model_path(provider, upstream_model)}:{GEMINI_VERB}"


class VertexAnthropic(_Vertex, AnthropicMessages):
    key_headers = ()  # no client surface
    credential_header_names = ("authorization",)
    name = "vertex_anthropic"
    codec = VERTEX_ANTHROPIC
    shares_wire_of = "anthropic"
    catalog_family = "vertex_anthropic"
    publisher = "anthropic"
    counting = VERTEX_CLAUDE_COUNTING

    def provider_path(self, provider: Any, upstream_model: str, stream: bool) -> str:
        return self.model_path(provider, upstream_model) + (":streamRawPredict" if stream else ":rawPredict")

    def counting_path(self, provider: Any, upstream_model: str) -> str:
        # one endpoint for every Claude model: the model is named in the body (``counting``)
        return f"{self.model_path(provider, CLAUDE_MODEL)}:{CLAUDE_VERB}"

    def passthrough_body(
        self, body: dict[str, Any], upstream_model: str, stream: bool
    ) -> dict[str, Any] | None:
        return to_vertex(body)  # the model is in the path

    def client_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return from_vertex(body)


VERTEX_GEMINI = VertexGemini()
VERTEX_CLAUDE = VertexAnthropic()
DIALECTS = (VERTEX_GEMINI, VERTEX_CLAUDE)

__all__ = [
    "DIALECTS",
    "VERTEX_ANTHROPIC",
    "VERTEX_ANTHROPIC_VERSION",
    "VERTEX_CLAUDE",
    "VERTEX_GEMINI",
    "GoogleCredentials",
    "VertexAnthropic",
    "VertexAnthropicCodec",
    "VertexGemini",
]
