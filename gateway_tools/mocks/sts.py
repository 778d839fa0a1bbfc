"""The mock AWS STS of a mock Bedrock account: ``AssumeRoleWithWebIdentity``, the call botocore's
credential chain makes for web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``: EKS
IRSA, any OIDC provider), served on the Bedrock mock's own port (``POST /``), so botocore reaches
it through the standard endpoint override (``AWS_ENDPOINT_URL_STS``).

The temporary credentials it issues are numbered, live ``ttl_s`` seconds (short, so a test sees
them expire and be refreshed; real STS issues at least 900 seconds), and the Bedrock mock accepts
requests signed with them (session token checked) until they expire, then refuses them as Bedrock
does (403 ``ExpiredTokenException``).

It also plays the OIDC provider whose tokens the role trusts (the cluster's service-account
issuer): ``identity_token()`` issues a JWT signed with the mock's own key; any other token is
not one the provider issued.

Sources, cited at each rule below:

- [AssumeRole] https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html
  (request parameters, the response's ``AssumeRoleWithWebIdentityResult``, the action's errors
  ``InvalidIdentityToken``, ``ExpiredToken``, ``IDPRejectedClaim``...), whose constraints botocore's
  ``sts`` service model repeats (``RoleArn`` 20-2048 characters, ``RoleSessionName`` 2-64 of
  ``[\\w+=,.@-]``, ``WebIdentityToken`` 4-20000, ``DurationSeconds`` 900-43200);
- [Common] https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html and
  CommonParameters.html (``Action`` and ``Version`` on every query request, ``MissingParameter``,
  ``InvalidAction``, ``ValidationError`` with the constraint named);
- [Query] the query protocol's error document ``<ErrorResponse><Error><Type>Sender</Type>
  <Code/><Message/></Error><RequestId/></ErrorResponse>``, as STS and IAM send it (one quoted in
  cfn-sphere/cfn-sphere#55);
- [Trust] https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_create_for-idp_oidc.html: the
  role's trust policy names the OIDC provider and its audience (``sts.amazonaws.com`` for EKS);
  a caller the trust policy does not allow is ``AccessDenied`` ("Not authorized to perform
  sts:AssumeRoleWithWebIdentity");
- [Expired] Bedrock refuses a request signed with expired temporary credentials with 403
  ``ExpiredTokenException``, "The security token included in the request is expired"
  (anthropics/claude-code#28032 quotes it from Bedrock; IAM's Common Error Types lists
  ``ExpiredTokenException`` as a 403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

import orjson
from aiohttp import web

from .common import _json_response, _try_json
from .tokens import form

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
VERSION = "2011-06-15"
AUDIENCE = "sts.amazonaws.com"  # [Trust] the audience EKS service-account tokens carry for IRSA
ISSUER = "https://oidc.mock.llm-gateway.invalid"  # the OIDC provider the role trusts
_SESSION_NAME = re.compile(r"[\w+=,.@-]*")  # [AssumeRole] RoleSessionName
_ROLE_ARN_CHARS = re.compile(r"[\t\n\r\u0020-\u007e\u0085\u00a0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")
_INVALID_TOKEN = (  # [AssumeRole] InvalidIdentityToken
    "The web identity token that was passed could not be validated by AWS. Get a new identity "
    "token from the identity provider and then retry the request."
)
_EXPIRED_TOKEN = (  # [AssumeRole] ExpiredToken
    "The web identity token that was passed is expired or is not valid. Get a new identity token "
    "from the identity provider and then retry the request."
)
EXPIRED_CREDENTIALS = "The security token included in the request is expired"  # [Expired]


@dataclass(frozen=True)
class Issued:
    """One set of temporary credentials: what Bedrock verifies signatures with, until ``expiry``."""

    secret: str
    token: str
    expiry: float  # wall-clock seconds (the Expiration STS reports)


class _StsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class STS:
    """Web identity -> temporary credentials for one role; the credentials it issued and how
    the Bedrock mock used them (``stats``)."""

    def __init__(self, role_arn: str, ttl_s: float) -> None:
        self.role_arn = role_arn
        self.ttl_s = ttl_s
        self.account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else "123456789012"
        self._key = secrets.token_bytes(32)  # the OIDC provider's signing key
        self.credentials: dict[str, Issued] = {}  # access key id -> credentials
        self.issued = 0
        self.identity_tokens = 0
        self.refused: Counter[str] = Counter()  # STS error code -> count
        self.used: Counter[str] = Counter()  # access key id -> requests Bedrock accepted
        self.expired_used: Counter[str] = Counter()  # access key id -> requests refused as expired

    # the OIDC provider ---------------------------------------------------------------
    def identity_token(
        self, subject: str = "system:serviceaccount:llm-gateway:gateway", ttl_s: float = 86400
    ) -> str:
        """A service-account token of the trusted OIDC provider (what the kubelet projects
        into the pod at ``AWS_WEB_IDENTITY_TOKEN_FILE``): a JWT signed with the mock's key."""
        now = int(time.time())
        header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
        claims = {"iss": ISSUER, "sub": subject, "aud": [AUDIENCE], "iat": now, "exp": math.ceil(now + ttl_s)}
        body = _b64(orjson.dumps(claims))
        signature = _b64(hmac.new(self._key, f"{header}.{body}".encode(), hashlib.sha256).digest())
        self.identity_tokens += 1
        return f"{header}.{body}.{signature}"

    def _claims(self, token: str) -> dict[str, Any]:
        """[AssumeRole] a token the provider did not sign (or not a JWT) is InvalidIdentityToken;
        one past its ``exp`` is ExpiredToken; [Trust] another audience is InvalidIdentityToken."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _StsError(400, "InvalidIdentityToken", _INVALID_TOKEN)
        expected = _b64(hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            raise _StsError(400, "InvalidIdentityToken", _INVALID_TOKEN)
        claims = orjson.loads(_unb64(parts[1]))
        if claims.get("iss") != ISSUER or AUDIENCE not in (claims.get("aud") or []):
            raise _StsError(400, "InvalidIdentityToken", _INVALID_TOKEN)
        if time.time() >= float(claims.get("exp", 0)):  # the model's error code: ExpiredTokenException
            raise _StsError(400, "ExpiredTokenException", _EXPIRED_TOKEN)
        return dict(claims)

    # Bedrock's side ------------------------------------------------------------------
    def lookup(self, access_key: str) -> Issued | None:
        return self.credentials.get(access_key)

    def expired(self, issued: Issued) -> bool:
        return time.time() >= issued.expiry

    # the STS endpoint ----------------------------------------------------------------
    async def endpoint(self, request: web.Request) -> web.Response:
        """``POST /`` with a query-protocol form."""
        data = await form(request)
        try:
            if data is None:
                # [Common] a query request is a form (or a query string): without one there is no action
                raise _StsError(400, "MissingAction", "Missing Action")
            return self._answer(data)
        except _StsError as e:
            self.refused[e.code] += 1
            return _xml(e.status, _error_document(e))

    def _answer(self, data: dict[str, str]) -> web.Response:
        action = data.get("Action")
        if not action:
            raise _StsError(400, "MissingAction", "Missing Action")  # [Common]
        if action != "AssumeRoleWithWebIdentity":
            raise _StsError(400, "InvalidAction", f"Could not find operation {action} for version {VERSION}")
        if "Version" not in data:  # [Common] Version is required on every query request
            raise _StsError(400, "MissingParameter", "The request must contain the parameter Version")
        if data["Version"] != VERSION:
            raise _StsError(
                400, "InvalidAction", f"Could not find operation {action} for version {data['Version']}"
            )
        for name in ("RoleArn", "RoleSessionName", "WebIdentityToken"):  # [AssumeRole] required
            if name not in data:
                raise _StsError(400, "MissingParameter", f"The request must contain the parameter {name}")
        role, session, token = data["RoleArn"], data["RoleSessionName"], data["WebIdentityToken"]
        problems = []  # [Common] ValidationError: "N validation error(s) detected: ..."
        if not 20 <= len(role) <= 2048 or not _ROLE_ARN_CHARS.fullmatch(role):
            problems.append(
                f"Value '{role}' at 'roleArn' failed to satisfy constraint: Member must have "
                "length greater than or equal to 20"
            )
        if not 2 <= len(session) <= 64 or not _SESSION_NAME.fullmatch(session):
            problems.append(
                f"Value '{session}' at 'roleSessionName' failed to satisfy constraint: Member "
                "must satisfy regular expression pattern: [\\w+=,.@-]* and length 2-64"
            )
        if not 4 <= len(token) <= 20000:  # the token is not echoed: it is a secret
            problems.append(
                "Value at 'webIdentityToken' failed to satisfy constraint: Member must have "
                "length between 4 and 20000"
            )
        duration = data.get("DurationSeconds")
        if duration is not None and (not duration.isdigit() or not 900 <= int(duration) <= 43200):
            problems.append(
                f"Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member "
                "must have value between 900 and 43200"
            )
        if problems:
            n = len(problems)
            raise _StsError(
                400,
                "ValidationError",
                f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(problems),
            )
        claims = self._claims(token)
        if role != self.role_arn:  # [Trust] only this role trusts the provider
            raise _StsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        return _xml(200, self._issue(session, claims))

    def _issue(self, session: str, claims: dict[str, Any]) -> str:
        """[AssumeRole] the response document; the credentials numbered, ``ttl_s`` long."""
        self.issued += 1
        key = f"ASIAMOCKSTS{self.issued:09d}"
        expiry = float(math.ceil(time.time() + self.ttl_s))  # STS reports whole seconds
        issued = Issued(secrets.token_urlsafe(30), "IQoJmock" + secrets.token_urlsafe(96), expiry)
        now = time.time()
        self.credentials = {k: c for k, c in self.credentials.items() if c.expiry > now - 3600}
        self.credentials[key] = issued
        role_name = self.role_arn.rsplit("/", 1)[-1]
        return (
            f'<AssumeRoleWithWebIdentityResponse xmlns="{NAMESPACE}">'
            "<AssumeRoleWithWebIdentityResult>"
            f"<SubjectFromWebIdentityToken>{escape(str(claims['sub']))}</SubjectFromWebIdentityToken>"
            f"<Audience>{AUDIENCE}</Audience>"
            "<AssumedRoleUser>"
            f"<Arn>arn:aws:sts::{self.account}:assumed-role/{escape(role_name)}/{escape(session)}</Arn>"
            f"<AssumedRoleId>AROAMOCKSTSROLE:{escape(session)}</AssumedRoleId>"
            "</AssumedRoleUser>"
            "<Credentials>"
            f"<SessionToken>{issued.token}</SessionToken>"
            f"<SecretAccessKey>{issued.secret}</SecretAccessKey>"
            f"<Expiration>{_iso(expiry)}</Expiration>"
            f"<AccessKeyId>{key}</AccessKeyId>"
            "</Credentials>"
            f"<Provider>{ISSUER.removeprefix('https://')}</Provider>"
            "</AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{_request_id()}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )

    # /_mock/sts ----------------------------------------------------------------------
    async def admin(self, request: web.Request) -> web.Response:
        """``GET``: what was issued, used and refused. ``POST {"credential_ttl_s": s}`` sets the
        lifetime of credentials issued from now on; ``{"identity_token": true}`` answers with a
        token of the trusted OIDC provider (a test playing the kubelet that writes the token file)."""
        if request.method == "POST":
            body = _try_json(await request.read())
            if not isinstance(body, dict) or set(body) - {"credential_ttl_s", "identity_token"}:
                return _json_response(
                    400, {"error": "body: {credential_ttl_s: seconds, identity_token: bool}"}
                )
            ttl = body.get("credential_ttl_s")
            if ttl is not None:
                if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
                    return _json_response(400, {"error": "credential_ttl_s must be a positive number"})
                self.ttl_s = float(ttl)
            if body.get("identity_token"):
                return _json_response(200, {"identity_token": self.identity_token(), **self.as_json()})
        elif request.method != "GET":
            return _json_response(405, {"error": "use GET or POST"})
        return _json_response(200, self.as_json())

    def as_json(self) -> dict[str, Any]:
        """Counts and access key ids (not secrets: AWS shows them in logs and consoles)."""
        return {
            "role_arn": self.role_arn,
            "credential_ttl_s": self.ttl_s,
            "issued": self.issued,
            "identity_tokens": self.identity_tokens,
            "refused": dict(self.refused),
            "used": dict(self.used),
            "expired_used": dict(self.expired_used),
        }


def _request_id() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _error_document(e: _StsError) -> str:
    """[Query] the error document."""
    kind = "Sender" if e.status < 500 else "Receiver"
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{kind}</Type><Code>{e.code}</Code>'
        f"<Message>{escape(e.message)}</Message></Error><RequestId>{_request_id()}</RequestId></ErrorResponse>"
    )


def _xml(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/xml")
