"""The mock Azure OpenAI resource: Chat Completions under Azure's paths, keys and tokens, with
Azure's content filtering.

- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` (Microsoft Learn,
  "Azure OpenAI in Azure AI Foundry Models REST API reference"): the deployment is the model,
  ``api-version`` is required and must be a published one (else 404 ``Resource not found``);
  ``stream_options`` exists from 2024-09-01-preview on. ``POST /openai/v1/chat/completions``
  (the v1 API, "API version lifecycle"): no ``api-version`` (or ``preview``), the deployment in
  the body's ``model``. Bodies are validated as the OpenAI mock does.
- Deployments: the resource serves only the deployments created on it (``MockSpec.deployments``);
  any other name, in the path or (v1 API) in the body's ``model``, is a 404 ``DeploymentNotFound``.
- Authentication: the resource key in ``api-key``, or a Microsoft Entra ID bearer token with
  the ``https://cognitiveservices.azure.com`` audience ("Authentication": keys or Entra ID) that
  this mock's own token endpoint issued and that has not expired.
- ``POST /{tenant}/oauth2/v2.0/token``: the Microsoft identity platform's client-credentials
  grant (Microsoft Learn, "OAuth 2.0 client credentials flow"): ``client_id`` and
  ``client_secret`` of the spec, a ``scope`` ending in ``/.default``. ``/_mock/auth``: see ``tokens``.
- Content filtering ("Content filtering", "content filter annotations"): every answer carries
  ``prompt_filter_results`` and per-choice ``content_filter_results`` (a stream opens with a
  chunk without choices that holds the prompt's); a last user turn containing ``violence`` is a
  filtered prompt (400, ``code: content_filter``); a reply reaching the word ``gore`` is cut
  there with ``finish_reason: content_filter``.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from .common import MockSpec, _Handler, _json_response, _Reject
from .embeddings import openai_embeddings
from .openai_chat import _oa_text, _OpenAI
from .tokens import TokenIssuer, bearer, form

SCOPE = "https://cognitiveservices.azure.com/.default"
# Published data-plane versions (Learn, "API version lifecycle"), GA and preview.
_API_VERSIONS = frozenset(
    {
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        "2024-05-01-preview",
        "2024-07-01-preview",
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-02-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
_STREAM_OPTIONS_SINCE = "2024-09-01"
_TENANT = re.compile(r"^([0-9a-fA-F-]{36}|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|common|organizations)$")
_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
PROMPT_TRIGGER = "violence"
COMPLETION_TRIGGER = "gore"


def _results(filtered: str | None = None) -> dict[str, Any]:
    return {
        c: {"filtered": c == filtered, "severity": "high" if c == filtered else "safe"} for c in _CATEGORIES
    }


def _prompt_results(filtered: str | None = None) -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": _results(filtered)}]


def _azure_error(http_status: int, message: str, code: str | None = None, **extra: Any) -> _Reject:
    return _Reject(http_status, {"error": {"code": code or str(http_status), "message": message, **extra}})


class _EntraTokens(TokenIssuer):
    """Entra ID access tokens are JWTs (unsigned here: only the mock reads them)."""

    def issue(self, scope: str = "") -> tuple[str, float]:
        token, ttl = super().issue(scope)
        del self.tokens[token]
        expiry, kept_scope = time.monotonic() + ttl, self.scopes.pop(token)

        def part(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

        # exp to the millisecond (RFC 7519 NumericDate may be fractional): a reader must not see a
        # 2 s token expire up to a second early.
        claims = {
            "aud": "https://cognitiveservices.azure.com",
            "exp": round(time.time() + ttl, 3),
            "iat": int(time.time()),
            "jti": secrets.token_hex(8),
        }
        jwt = f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(claims)}.{secrets.token_urlsafe(16)}"
        self.tokens[jwt] = expiry
        self.scopes[jwt] = kept_scope
        return jwt, ttl


# Azure's answer for a deployment name the resource does not have, as the service sends it
# (Microsoft Q&A, "How do I resolve error DeploymentNotFound for Azure OpenAI Python API call?",
# https://learn.microsoft.com/en-us/answers/questions/1189174 : HTTP 404 with this body, the
# same in the SDKs' errors quoted in the Azure-Samples and microsoft/autogen issue threads).
_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)


class _Azure(_OpenAI):
    """One Azure OpenAI resource, serving the deployments created on it (``spec.deployments``)."""

    quirks = ()  # compatible hosts' quirks are the OpenAI mock's

    def __init__(self, spec: MockSpec) -> None:
        super().__init__(spec)
        self.tokens = _EntraTokens("", spec.token_ttl_s, SCOPE)
        self.deployments = frozenset(spec.deployments)

    def check_deployment(self, name: Any) -> None:
        """A deployment the resource does not have is Azure's 404 ``DeploymentNotFound``. (A v1
        body without a string ``model`` is left to the body validation's own 400.)"""
        if isinstance(name, str) and name not in self.deployments:
            raise _azure_error(404, _DEPLOYMENT_NOT_FOUND, "DeploymentNotFound")

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [
            ("POST", "/openai/deployments/{deployment}/chat/completions", self.deployment_chat),
            ("POST", "/openai/v1/chat/completions", self.v1_chat),
            # Embeddings: a deployment's (the path names the model) or the v1 API's
            # (https://learn.microsoft.com/azure/ai-services/openai/reference#embeddings)
            ("POST", "/openai/deployments/{deployment}/embeddings", self.deployment_embeddings),
            ("POST", "/openai/v1/embeddings", self.v1_embeddings),
        ]

    def admin_routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/{tenant}/oauth2/v2.0/token", self.token),
            ("*", "/_mock/auth", self.tokens.endpoint),
        ]

    def extra_headers(self) -> dict[str, str]:
        """Azure OpenAI's response headers (learn.microsoft.com/azure/ai-services/openai/quotas-limits:
        the remaining quota of the deployment in x-ratelimit-remaining-*; the API Management request
        id, the region and the model session of the resource)."""
        return {
            "apim-request-id": str(uuid.uuid4()),
            "x-request-id": str(uuid.uuid4()),
            "x-ms-region": "East US",
            "azureml-model-session": "d015-20250808164853",
            "x-ms-rai-invoked": "true",
            "x-ratelimit-remaining-requests": "999",
            "x-ratelimit-remaining-tokens": "149990",
        }

    def model_of(self, request: web.Request, body: Any) -> str | None:
        return request.match_info.get("deployment") or super().model_of(request, body)

    # errors: Azure's {"error": {"code": "<status>", "message"}} -----------------------------
    def rate_limit_error(self, retry_after: float) -> _Reject:
        ra = f"{retry_after:g}"
        err = _azure_error(
            429,
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            f"2024-10-21 have exceeded token rate limit of your current AIServices S0 pricing "
            f"tier. Please retry after {ra} seconds.",
        )
        err.headers = {"retry-after": ra, "x-ratelimit-remaining-requests": "0"}
        return err

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise _azure_error(404, "Resource not found")

    def auth_state(self, request: web.Request) -> str:
        key = request.headers.get("api-key")
        if key is not None:
            return "valid" if self.spec.api_key and key == self.spec.api_key else "invalid"
        token = bearer(request)
        if token is None:
            return "missing"
        state = self.tokens.state(token)
        if state == "valid" and self.tokens.scopes.get(token) != SCOPE:
            return "wrong_audience"
        return state

    def check_auth(self, request: web.Request) -> None:
        state = self.auth_state(request)
        if state == "valid":
            return
        self.tokens.refuse()
        if state == "missing":
            raise _azure_error(
                401,
                "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.",
            )
        if state == "invalid":
            raise _azure_error(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
            )
        raise _azure_error(
            401,
            "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or have expired.",
        )

    # model calls ---------------------------------------------------------------------------
    async def deployment_chat(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        version = request.query.get("api-version")
        if version not in _API_VERSIONS:
            raise _azure_error(404, "Resource not found")
        self.check_deployment(request.match_info["deployment"])
        if isinstance(body, dict):
            if "stream_options" in body and version[:10] < _STREAM_OPTIONS_SINCE:
                raise self.error(400, "Unrecognized request argument supplied: stream_options")
            body = {**body, "model": request.match_info["deployment"]}  # the path names the model
        return await self.filtered_chat(request, body, cut)

    async def v1_chat(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        if request.query.get("api-version") not in (None, "preview"):
            raise _azure_error(400, "API version not supported", "BadRequest")
        self.check_deployment(body.get("model") if isinstance(body, dict) else None)  # the model names it
        return await self.filtered_chat(request, body, cut)

    async def deployment_embeddings(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        if request.query.get("api-version") not in _API_VERSIONS:
            raise _azure_error(404, "Resource not found")
        self.check_deployment(request.match_info["deployment"])
        if isinstance(body, dict):
            body = {**body, "model": request.match_info["deployment"]}  # the path names the model
        return await openai_embeddings(self, request, body, cut)

    async def v1_embeddings(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        if request.query.get("api-version") not in (None, "preview"):
            raise _azure_error(400, "API version not supported", "BadRequest")
        self.check_deployment(body.get("model") if isinstance(body, dict) else None)  # the model names it
        return await openai_embeddings(self, request, body, cut)

    async def filtered_chat(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        if isinstance(body, dict) and isinstance(body.get("messages"), list):
            users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            if users and PROMPT_TRIGGER in _oa_text(users[-1].get("content")).lower():
                raise _azure_error(
                    400,
                    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                    "policy. Please modify your prompt and retry. To learn more about our content filtering "
                    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                    "content_filter",
                    param="prompt",
                    status=400,
                    innererror={
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": _results("violence"),
                    },
                )
        resp = await self.chat(request, body, cut)
        if not isinstance(resp, web.Response) or resp.status != 200 or not isinstance(resp.body, bytes):
            return resp  # a stream: annotated in send_stream
        out = orjson.loads(resp.body)
        out["prompt_filter_results"] = _prompt_results()
        for choice in out.get("choices", []):
            msg = choice.get("message") or {}
            text = msg.get("content")
            hit = text.lower().find(COMPLETION_TRIGGER) if isinstance(text, str) else -1
            if hit >= 0:
                msg["content"] = text[:hit].rstrip()
                choice["finish_reason"] = "content_filter"
            choice["content_filter_results"] = _results("violence" if hit >= 0 else None)
        return _json_response(200, out, self.extra_headers())

    async def send_stream(
        self,
        request: web.Request,
        events: list[bytes],
        cut: bool,
        content_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """Annotate chat chunks as Azure does, and cut a reply that reaches the completion trigger."""
        out: list[bytes] = []
        filtered: set[int] = set()
        for ev in events:
            data = ev[6:].strip() if ev.startswith(b"data: ") else b""
            obj = orjson.loads(data) if data.startswith(b"{") else None
            if not isinstance(obj, dict) or "choices" not in obj:
                out.append(ev)
                continue
            if not out:  # the prompt's annotations open the stream, in a chunk of their own
                out.append(
                    b"data: "
                    + orjson.dumps(
                        {
                            "choices": [],
                            "created": 0,
                            "id": "",
                            "model": "",
                            "object": "",
                            "prompt_filter_results": _prompt_results(),
                        }
                    )
                    + b"\n\n"
                )
            keep = []
            for choice in obj["choices"]:
                i = choice.get("index", 0)
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str) and COMPLETION_TRIGGER in content.lower():
                    filtered.add(i)
                if i in filtered and not choice.get("finish_reason"):
                    continue  # filtered output is withheld
                if i in filtered:
                    choice["finish_reason"] = "content_filter"
                choice["content_filter_results"] = _results("violence" if i in filtered else None)
                keep.append(choice)
            if keep or not obj["choices"]:
                obj["choices"] = keep
                out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
        return await super().send_stream(request, out, cut, content_type, headers)

    # the Entra ID token endpoint -----------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        """Client-credentials grant as the Microsoft identity platform answers it (RFC 6749 4.4, 5.2)."""
        await self.tokens.delay()
        tenant = request.match_info["tenant"]
        if not _TENANT.match(tenant):
            return _json_response(
                400,
                {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                },
            )
        data = await form(request)
        if data is None:
            return _json_response(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS900144: The request body must contain the following parameter: "
                    "'grant_type'.",
                },
            )
        if data.get("grant_type") != "client_credentials":
            return _json_response(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "AADSTS70003: The app requested an unsupported grant type.",
                },
            )
        client_id = data.get("client_id", "")
        if not self.spec.client_id or client_id != self.spec.client_id:
            return _json_response(
                400,
                {
                    "error": "unauthorized_client",
                    "error_description": f"AADSTS700016: Application with identifier '{client_id}' was not found in "
                    f"the directory '{tenant}'.",
                },
            )
        if data.get("client_secret") != self.spec.client_secret:
            return _json_response(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                    "in the request is the client secret value, not the client secret ID.",
                },
            )
        scope = data.get("scope", "")
        if not scope.endswith("/.default"):
            return _json_response(
                400,
                {
                    "error": "invalid_scope",
                    "error_description": f"AADSTS1002012: The provided value for scope {scope} is not valid. Client "
                    "credential flows must have a scope value with /.default suffixed to the "
                    "resource identifier (application ID URI).",
                },
            )
        token, ttl = self.tokens.issue(scope)
        expires = int(ttl) if ttl >= 1 else ttl
        return _json_response(
            200,
            {"token_type": "Bearer", "expires_in": expires, "ext_expires_in": expires, "access_token": token},
        )
