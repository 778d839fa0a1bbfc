"""The mock Google Vertex AI: Gemini models (``publishers/google``) and Claude models
(``publishers/anthropic``) of one project, behind Google OAuth2.

- ``POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
  and ``:streamGenerateContent`` validate bodies as the Gemini mock does (Vertex takes the same
  ``GenerateContentRequest``; Vertex AI REST reference, ``projects.locations.publishers.models``).
- ``POST .../publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict`` take an
  Anthropic Messages body without ``model`` and with ``anthropic_version: vertex-2023-10-16``
  (Anthropic, "Claude on Vertex AI"), validated as the Anthropic mock does.
- ``POST .../publishers/google/models/{model}:countTokens`` counts a Gemini request: Vertex's
  ``CountTokensRequest`` (Vertex AI REST reference, ``projects.locations.publishers.models.
  countTokens`` and ``projects.locations.endpoints.countTokens``: ``model``, ``instances``,
  ``contents``, ``systemInstruction``, ``tools``, ``generationConfig``; no ``generateContentRequest``
  as the Gemini API has), answered ``{"totalTokens", "promptTokensDetails"}`` (``CountTokensResponse``).
- ``POST .../publishers/anthropic/models/count-tokens:rawPredict`` counts a Claude request
  (Google Cloud, "Count tokens for Claude models"): an Anthropic ``count_tokens`` body that
  names its model ("The request body must contain the model ID"), validated as the Anthropic
  mock validates ``count_tokens``, answered ``{"input_tokens": N}``.
- Every model call needs ``Authorization: Bearer`` with a token this mock's own token endpoint
  issued and that has not expired (Vertex AI REST reference, "Authentication": OAuth 2.0 with the
  ``cloud-platform`` scope); the path's project must be the service account's.
- ``POST /token`` is Google's OAuth2 token endpoint for service accounts: the JWT-bearer grant
  (RFC 7523; Google Identity, "Using OAuth 2.0 for Server to Server Applications"), the JWT signed
  with the key of ``spec.credentials_file`` (whose ``token_uri`` points here). ``/_mock/auth``:
  see ``tokens``.

Vertex's own errors (authentication, permission, quota, unknown model) are Google's
``{"error": {"code", "message", "status"}}`` on both publishers; the models' own are their
API's. One server serves both publishers, so one mock stands for a project.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from .anthropic_messages import _Anthropic
from .common import _INBAND_ERRORS, _INVALID, MockSpec, _Handler, _json_response, _Provider, _Reject, _Stats
from .embeddings import anthropic_count
from .gemini import GOOGLE_FRONTEND_HEADERS, _Gemini
from .tokens import TokenIssuer, bearer, form

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# "aud ... When making an access token request this value is always https://oauth2.googleapis.com/token"
# (Google Identity, "Using OAuth 2.0 for Server to Server Applications"), wherever the token URI is.
AUDIENCE = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERSION = "vertex-2023-10-16"
COUNT_MODEL = "count-tokens"  # Claude's counting endpoint: one pseudo-model of the anthropic publisher
# Vertex AI REST reference, CountTokensRequest: its fields
_COUNT_FIELDS = frozenset(
    {"model", "instances", "contents", "systemInstruction", "tools", "generationConfig"}
)
_LOCATION = re.compile(r"^(global|[a-z]+-[a-z]+\d+)$")  # us-central1, europe-west4, global
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_NO_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class _Account:
    """The service account whose tokens the mock accepts: from its key file, as Google knows it."""

    def __init__(self, path: str):
        from cryptography.hazmat.primitives import serialization

        info = json.loads(Path(path).read_text())
        self.email: str = info["client_email"]
        self.project: str = info["project_id"]
        self.key_id: str = info["private_key_id"]
        private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        self.public_pem = (
            private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )


class _Publisher:
    """What the Vertex server lends its publishers: its stats and its authentication."""

    vertex: _Vertex

    @property
    def stats(self) -> _Stats:
        return self.vertex.stats

    @stats.setter
    def stats(self, value: _Stats) -> None:
        pass  # the Vertex server's own stats are the ones kept

    def extra_headers(self) -> dict[str, str]:
        return self.vertex.extra_headers()  # Google's, whichever publisher (no Anthropic account)


class _VertexGemini(_Publisher, _Gemini):
    # Vertex AI, "Gemini API reference", fileData.fileUri: Cloud Storage (gs://) URIs and HTTP(S)
    # URLs of files.
    file_uri = re.compile(r"^(gs://|https?://)\S+$")

    def __init__(self, vertex: _Vertex) -> None:
        self.vertex = vertex
        super().__init__(vertex.spec)

    def check_auth(self, request: web.Request) -> None:
        self.vertex.check_auth(request)

    async def count(self, request: web.Request, body: Any, model: str, resource: str) -> web.StreamResponse:
        """Vertex's countTokens: the request's own fields at the top level."""
        if body is _INVALID or not isinstance(body, dict):
            raise self.invalid("Invalid JSON payload received. Expected an object.")
        for key in body:
            # CountTokensRequest's fields (Vertex AI REST reference); anything else, including the
            # Gemini API's generateContentRequest, is an unknown name.
            if key not in _COUNT_FIELDS:
                raise self.invalid(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
        # "model: ... The name of the publisher model requested to serve the prediction. Format:
        # projects/{project}/locations/{location}/publishers/*/models/*"
        named = body.get("model")
        if named is not None and named != resource:
            raise self.invalid(f"model: must be the publisher model of the request's path ({resource})")
        if "instances" in body:
            # "instances ... Schema is identical to the prediction schema of the underlying model":
            # Gemini models take contents (their generateContent has no instances).
            raise self.invalid("instances: Gemini models count contents; instances is not supported")
        convo, _ = self.validate(model, {k: v for k, v in body.items() if k != "model"})
        return _json_response(
            200,
            {
                "totalTokens": convo.input_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": convo.input_tokens}],
            },
        )


class _VertexClaude(_Publisher, _Anthropic):
    def __init__(self, vertex: _Vertex) -> None:
        self.vertex = vertex
        super().__init__(vertex.spec)

    def check_headers(self, request: web.Request) -> None:
        self.vertex.check_auth(request)  # the version is in the body on Vertex, not a header

    async def predict(
        self, request: web.Request, body: Any, cut: bool, model: str, verb: str
    ) -> web.StreamResponse:
        if not isinstance(body, dict):
            return await self.messages(request, body, cut)  # the Anthropic mock's own complaint
        # Anthropic, "Claude on Vertex AI": model is not passed in the body (it is in the URL) and
        # anthropic_version is passed in the body, set to vertex-2023-10-16.
        if "model" in body:
            raise self.invalid("model: Extra inputs are not permitted")
        version = body.get("anthropic_version")
        if version is None:
            raise self.invalid("anthropic_version: Field required")
        if version != VERSION:
            raise self.invalid(f"anthropic_version: Input should be '{VERSION}'")
        # Google Cloud, "Request predictions with Claude models": streamRawPredict with "stream": true
        # streams, rawPredict answers whole.
        if (verb == "streamRawPredict") != (body.get("stream") is True):
            raise self.invalid(
                f"stream: must be {'true' if verb == 'streamRawPredict' else 'false or absent'} for {verb}"
            )
        messages_body = {k: v for k, v in body.items() if k != "anthropic_version"}
        messages_body["model"] = model
        return await self.messages(request, messages_body, cut)

    async def count(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        """count-tokens:rawPredict: Anthropic's count_tokens body, the model in it."""
        if isinstance(body, dict):
            # Google Cloud, "Count tokens for Claude models": "The request body must contain the
            # model ID of the model you want to count tokens for."
            if not isinstance(body.get("model"), str) or not body["model"]:
                raise self.invalid("model: Field required")
            # The official SDK's Vertex client sends anthropic_version in every body (AnthropicVertex,
            # _prepare_options: its own API version, not necessarily Vertex's); Google's counting
            # example omits it. Neither source says it is checked here: it is set aside.
            body = {k: v for k, v in body.items() if k != "anthropic_version"}
        return await anthropic_count(self, request, body, cut)


class _Vertex(_Provider):
    """One Vertex AI project serving Gemini and Claude models."""

    dialect = "vertex"

    def __init__(self, spec: MockSpec) -> None:
        super().__init__(spec)
        if not spec.credentials_file:
            raise ValueError(
                f"mock {spec.name}: a Vertex AI mock needs the service-account key file "
                "(gcp_credentials_file or GOOGLE_APPLICATION_CREDENTIALS)"
            )
        self.account = _Account(spec.credentials_file)
        self.tokens = TokenIssuer("ya29.mock-", spec.token_ttl_s, SCOPE)
        self.gemini = _VertexGemini(self)
        self.claude = _VertexClaude(self)

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [
            (
                "POST",
                "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model_action}",
                self.predict,
            )
        ]

    def admin_routes(self) -> list[tuple[str, str, Any]]:
        return [("POST", "/token", self.token), ("*", "/_mock/auth", self.tokens.endpoint)]

    @staticmethod
    def split(request: web.Request) -> tuple[str, str]:
        model, _, verb = request.match_info.get("model_action", "").rpartition(":")
        return model, verb

    def model_of(self, request: web.Request, body: Any) -> str | None:
        return self.split(request)[0] or None

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return self.split(request)[1] in ("streamGenerateContent", "streamRawPredict")

    def inband_error(self, request: web.Request, status: int) -> bytes:
        return _INBAND_ERRORS["anthropic" if request.match_info.get("publisher") == "anthropic" else "gemini"]

    def extra_headers(self) -> dict[str, str]:
        return dict(GOOGLE_FRONTEND_HEADERS)

    # Vertex's own errors are Google's, whichever publisher -----------------------------
    def fault_error(self, status: int) -> _Reject:
        return self.gemini.fault_error(status)

    def rate_limit_error(self, retry_after: float) -> _Reject:
        err = self.gemini.rate_limit_error(retry_after)
        err.body["error"]["message"] = (
            "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_"
            "minute_per_project_per_base_model. Please submit a quota increase request."
        )
        return err

    def too_large(self) -> _Reject:
        return self.gemini.too_large()

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise self.gemini.error(404, f"The requested URL {request.path} was not found on this server.")

    # authentication --------------------------------------------------------------------
    def auth_state(self, request: web.Request) -> str:
        token = bearer(request)
        return "missing" if token is None else self.tokens.state(token)

    def check_auth(self, request: web.Request) -> None:
        state = self.auth_state(request)
        if state == "valid":
            token = bearer(request) or ""
            if SCOPE not in self.tokens.scopes.get(token, "").split():
                raise self.gemini.error(
                    403,
                    "Request had insufficient authentication scopes.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                            "domain": "googleapis.com",
                        }
                    ],
                )
            return
        self.tokens.refuse()
        if state == "missing":
            raise self.gemini.error(401, _NO_CREDENTIALS)
        reason = "ACCESS_TOKEN_EXPIRED" if state == "expired" else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        raise self.gemini.error(
            401,
            _UNAUTHENTICATED,
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {
                        "service": "aiplatform.googleapis.com",
                        "method": "google.cloud.aiplatform.v1.PredictionService.GenerateContent",
                    },
                }
            ],
        )

    # model calls -----------------------------------------------------------------------
    async def predict(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        project, location = request.match_info["project"], request.match_info["location"]
        publisher = request.match_info["publisher"]
        model, verb = self.split(request)
        resource = f"projects/{project}/locations/{location}/publishers/{publisher}/models/{model}"
        if project != self.account.project:
            # The identity has no role on another project (IAM: aiplatform.endpoints.predict).
            raise self.gemini.error(
                403,
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
            )
        if not _LOCATION.match(location):
            raise self.gemini.error(400, f"Location {location} is not supported.")
        if publisher == "google" and verb in ("generateContent", "streamGenerateContent") and model:
            return await self.gemini.generate(request, body, cut)
        if publisher == "google" and verb == "countTokens" and model:
            return await self.gemini.count(request, body, model, resource)
        if publisher == "anthropic" and model == COUNT_MODEL and verb == "rawPredict":
            return await self.claude.count(request, body, cut)
        if publisher == "anthropic" and verb in ("rawPredict", "streamRawPredict") and model:
            return await self.claude.predict(request, body, cut, model, verb)
        raise self.gemini.error(
            404, f"Publisher Model `{resource}` was not found or your project does not have access to it."
        )

    # the OAuth2 token endpoint ---------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        """RFC 7523 JWT-bearer grant as Google's token endpoint answers it (errors per RFC 6749 5.2)."""
        from google.auth import exceptions, jwt

        await self.tokens.delay()
        data = await form(request)
        if data is None:
            return _json_response(400, {"error": "invalid_request", "error_description": "Bad Request"})
        if data.get("grant_type") != JWT_BEARER:
            return _json_response(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Invalid grant_type: {data.get('grant_type', '')}",
                },
            )
        a = self.account
        try:
            # Signature (by the key the JWT's kid names), Google's audience, iat/exp in range.
            claims = jwt.decode(data.get("assertion", ""), certs={a.key_id: a.public_pem}, audience=AUDIENCE)
        except (exceptions.GoogleAuthError, ValueError) as e:
            text = str(e)
            description = (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim."
                if "expired" in text or "early" in text or "iat" in text
                else "Invalid JWT Signature."
            )
            return _json_response(400, {"error": "invalid_grant", "error_description": description})
        if claims.get("iss") != a.email:
            return _json_response(
                400, {"error": "invalid_grant", "error_description": "Invalid grant: account not found"}
            )
        if float(claims.get("exp", 0)) - float(claims.get("iat", 0)) > 3600:
            return _json_response(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                    "reasonable timeframe. Check your iat and exp values in the JWT claim.",
                },
            )
        token, ttl = self.tokens.issue(str(claims.get("scope", "")))
        return _json_response(
            200, {"access_token": token, "expires_in": int(ttl) if ttl >= 1 else ttl, "token_type": "Bearer"}
        )
