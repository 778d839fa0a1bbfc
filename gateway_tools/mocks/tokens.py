"""OAuth2 access tokens for the cloud mocks (Vertex AI, Azure OpenAI): each mock runs its own
token endpoint and accepts only the bearer tokens that endpoint issued, until they expire.

``/_mock/auth`` (not counted in ``/_mock/stats``, never faulted): ``GET`` says how many tokens
were issued and refused; ``POST {"token_ttl_s": 2}`` sets the lifetime of tokens issued from
now on, ``{"revoke": true}`` makes every issued token invalid (a rotated key, a revoked grant),
``{"issue": true}`` answers with a fresh token (a test playing a sidecar that writes a token
file), ``{"token_delay_s": 1.5}`` makes the token endpoint that slow. The default lifetime is the spec's ``token_ttl_s`` (``llm-gateway mock-providers``
reads it from ``LLM_GATEWAY_MOCK_TOKEN_TTL_S``), so a test can make refreshes frequent.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from aiohttp import web

from .common import _json_response, _try_json


class TokenIssuer:
    """Issued tokens and their expiry; counts of what was issued and refused."""

    def __init__(self, prefix: str, ttl_s: float, default_scope: str = ""):
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.default_scope = default_scope  # of tokens handed out by /_mock/auth
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.scopes: dict[str, str] = {}
        self.issued = 0
        self.refused = 0
        self.delay_s = 0.0  # the token endpoint's answer time

    async def delay(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    def issue(self, scope: str = "") -> tuple[str, float]:
        token = self.prefix + secrets.token_urlsafe(32)
        now = time.monotonic()
        self.tokens = {t: e for t, e in self.tokens.items() if e > now}  # forget expired ones
        self.tokens[token] = now + self.ttl_s
        self.scopes[token] = scope
        self.scopes = {t: s for t, s in self.scopes.items() if t in self.tokens}
        self.issued += 1
        return token, self.ttl_s

    def state(self, token: str) -> str:
        """ "valid", "expired" or "unknown" (never issued here, or revoked)."""
        expiry = self.tokens.get(token)
        if expiry is None:
            return "unknown"
        return "valid" if time.monotonic() < expiry else "expired"

    def refuse(self) -> None:
        self.refused += 1

    async def endpoint(self, request: web.Request) -> web.Response:
        """``/_mock/auth``."""
        if request.method == "POST":
            body = _try_json(await request.read())
            if not isinstance(body, dict) or set(body) - {"token_ttl_s", "revoke", "issue", "token_delay_s"}:
                return _json_response(
                    400,
                    {
                        "error": "body: {token_ttl_s: seconds, revoke: bool, issue: bool, "
                        "token_delay_s: seconds}"
                    },
                )
            delay = body.get("token_delay_s")
            if delay is not None:
                if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
                    return _json_response(400, {"error": "token_delay_s must be a non-negative number"})
                self.delay_s = float(delay)
            ttl = body.get("token_ttl_s")
            if ttl is not None:
                if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
                    return _json_response(400, {"error": "token_ttl_s must be a positive number"})
                self.ttl_s = float(ttl)
            if body.get("revoke"):
                self.tokens.clear()
            if body.get("issue"):
                token, ttl_s = self.issue(self.default_scope)
                return _json_response(200, {"access_token": token, "expires_in": ttl_s, **self.as_json()})
        elif request.method != "GET":
            return _json_response(405, {"error": "use GET or POST"})
        return _json_response(200, self.as_json())

    def as_json(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "issued": self.issued,
            "refused": self.refused,
            "token_ttl_s": self.ttl_s,
            "token_delay_s": self.delay_s,
            "valid": sum(1 for e in self.tokens.values() if e > now),
        }


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def form(request: web.Request) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body (RFC 6749 section 4.4.2, 4.1.3), or None."""
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}
