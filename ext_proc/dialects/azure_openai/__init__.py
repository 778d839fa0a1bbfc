"""Azure OpenAI as a backend: OpenAI Chat Completions under Azure's deployment paths.

- ``/openai/deployments/{deployment}/chat/completions?api-version={api_version}``, the
  backend's ``model`` being the deployment name (``api_version`` defaults to the GA version
  2024-10-21); with ``api_version: v1``, the v1 API ``/openai/v1/chat/completions``, which
  takes the deployment name as the body's ``model`` (Microsoft Learn, "Azure OpenAI in Azure
  AI Foundry Models REST API reference" and "API version lifecycle").
- Credentials: the resource key in ``api-key``, or a Microsoft Entra ID token
  (provider ``oauth``: a token file, or the client-credentials grant with scope
  ``https://cognitiveservices.azure.com/.default``) as ``Authorization: Bearer``.
- Responses are OpenAI's plus content-filter annotations (``prompt_filter_results``,
  ``choices[].content_filter_results``, a first stream chunk without choices). A filtered
  completion ends with ``finish_reason: content_filter``, which the openai codec maps to the
  safety stop reason; a filtered prompt is a 400 whose ``code`` is ``content_filter``.

A provider-side variant of the openai dialect: OpenAI clients pass through to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..base import ClientCall
from ..openai_chat import OPENAI, OpenAIChat

DEFAULT_API_VERSION = "2024-10-21"
V1 = "v1"


class AzureOpenAI(OpenAIChat):
    name = "azure_openai"
    genai_provider = "azure.ai.openai"  # OpenTelemetry GenAI name
    codec = OPENAI  # Azure's bodies and errors are OpenAI's, with extra annotations
    shares_wire_of = "openai"
    catalog_family = "azure_openai"
    key_headers = ()  # no client surface
    auth_hint = ""
    credential_header_names = ("api-key", "authorization")
    provider_response_headers = (
        *OpenAIChat.provider_response_headers,
        "apim-request-id",
        "azureml-model-session",
        "x-ms-region",
        "x-ms-deployment-name",
        "x-ms-rai-invoked",
    )
    provider_fields = {"api_version": False}

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        return None

    def claims(self, headers: dict[str, str]) -> bool:
        return False

    def credential_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}

    def provider_path(self, provider: Any, upstream_model: str, stream: bool) -> str:
        version = provider.api_version or DEFAULT_API_VERSION
        if version == V1:
            return "/openai/v1/chat/completions"
        return f"/openai/deployments/{quote(upstream_model, safe='')}/chat/completions?api-version={version}"

    def embeddings_path(self, provider: Any, upstream_model: str) -> str:
        version = provider.api_version or DEFAULT_API_VERSION
        if version == V1:
            return "/openai/v1/embeddings"
        return f"/openai/deployments/{quote(upstream_model, safe='')}/embeddings?api-version={version}"

    def provider_problems(self, provider: Mapping[str, Any]) -> list[str]:
        if provider.get("auth_header"):
            return [
                "auth_header: Azure OpenAI takes its key in 'api-key' (set by the dialect) or an Entra ID "
                "token (oauth)"
            ]
        return []


DIALECT = AzureOpenAI()

__all__ = ["DEFAULT_API_VERSION", "DIALECT", "AzureOpenAI"]
