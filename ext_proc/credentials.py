"""Short-lived provider credentials (OAuth2 bearer tokens), refreshed off the request path.

A cloud provider's credential is a token that expires (within an hour for Google and
Entra ID). Getting one is a blocking HTTP call, so it never happens on a request: one
daemon thread per credential fetches the first token as soon as the credential is first
used, then each next one before the current one expires; a request only reads the cached
token (``RefreshingToken.current``, an attribute read). Tokens are cached per process and
shared by every provider and config version that uses the same credential (``shared``),
so a config reload fetches nothing for a credential it already had.

Where a token comes from is a ``TokenSource``: the generic ones here (a token file that
another process keeps fresh, the OAuth2 client-credentials grant) or a dialect's own
(Google service accounts and application default credentials, ``dialects.vertex``).
Neither tokens nor secrets reach a log: failures name the credential by its label.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("llm_gateway.credentials")

REFRESH_LEAD_S = 300.0  # refresh this long before expiry (at half-life for tokens shorter than 10 min)
MIN_WAIT_S = 0.2
RETRY_MAX_S = 30.0  # a failing fetch is retried with back-off up to this
REJECTED_MIN_INTERVAL_S = 1.0  # a provider refusing a token triggers at most one early refresh a second
TOKEN_FILE_POLL_S = 1.0  # a token file is re-read this often (its writer may replace it any time)
FETCH_TIMEOUT_S = 30.0


class CredentialError(Exception):
    """A credential that cannot be loaded or fetched; the message says why, never a secret."""


class TokenSource(ABC):
    """Where a provider's bearer tokens come from."""

    #: identity: sources with the same key share one cached token per process
    key: tuple[str, ...]
    #: the credential in logs and errors (a file name, a client id), never a secret
    label: str
    #: fetch again at least this often, whatever the token's expiry (e.g. a token file)
    max_wait: float | None = None

    def load(self) -> None:
        """Read what fetching needs (key files, secrets) and check it; no network call where
        avoidable. Raises ``CredentialError``: a credential that cannot be loaded is a start-up
        error, not a failing request."""
        return None

    @abstractmethod
    def fetch(self) -> tuple[str, float | None]:
        """Blocking (runs on the refresh thread): a fresh token and when it expires
        (epoch seconds; None when the token does not say)."""


class RefreshingToken:
    """One credential's current token, kept fresh by a daemon thread."""

    def __init__(self, source: TokenSource):
        self.source = source
        self._held: tuple[str, float | None] | None = None
        self._wake = threading.Event()
        self._tried = threading.Event()  # the first fetch has finished, well or not
        self._last_forced = 0.0
        self._thread = threading.Thread(target=self._run, name=f"token {source.label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def current(self) -> str | None:
        """The token to send now; None before the first fetch and once it has expired
        (the provider then refuses the attempt and Envoy fails over)."""
        held = self._held
        if held is None:
            return None
        token, expiry = held
        if expiry is not None and time.time() >= expiry:
            return None
        return token

    def rejected(self) -> None:
        """A provider refused the token before its expiry (revoked, rotated): fetch a new one now."""
        now = time.monotonic()
        if now - self._last_forced >= REJECTED_MIN_INTERVAL_S:
            self._last_forced = now
            self._wake.set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first fetch has finished (start-up only); True if a token is held."""
        self._tried.wait(timeout)
        return self._held is not None

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                token, expiry = self.source.fetch()
                if not token:
                    raise CredentialError("the token endpoint returned no token")
                self._held = (token, expiry)
                if failures:
                    log.info("token of %s refreshed again", self.source.label)
                failures = 0
                wait = self._next_wait(expiry)
            except Exception as e:  # any failure: keep the old token until it expires, retry
                failures += 1
                wait = min(RETRY_MAX_S, 2.0 ** (failures - 1))
                if self.source.max_wait is not None:
                    wait = max(wait, self.source.max_wait)
                log.error(
                    "cannot get a token for %s (attempt %d, next in %.0f s): %s",
                    self.source.label,
                    failures,
                    wait,
                    describe(e),
                )
            self._tried.set()
            self._wake.wait(wait)
            self._wake.clear()

    def _next_wait(self, expiry: float | None) -> float:
        if expiry is None:
            return self.source.max_wait or REFRESH_LEAD_S
        lifetime = expiry - time.time()
        wait = max(MIN_WAIT_S, lifetime - min(REFRESH_LEAD_S, lifetime / 2))
        return min(wait, self.source.max_wait) if self.source.max_wait is not None else wait


def describe(e: BaseException) -> str:
    """An exception in one line for a log, bounded (token endpoints answer with long bodies)."""
    text = str(e).replace("\n", " ").strip()
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


# ---- the per-process cache -----------------------------------------------------------------------

_SHARED: dict[tuple[str, ...], RefreshingToken] = {}
_LOCK = threading.Lock()


def shared(source: TokenSource) -> RefreshingToken:
    """The process's refreshing token for ``source``'s credential, loaded and started on first use."""
    with _LOCK:
        found = _SHARED.get(source.key)
        if found is None:
            source.load()
            found = _SHARED[source.key] = RefreshingToken(source)
            found.start()
        return found


def check(source: TokenSource) -> None:
    """Can the credential be loaded? (config checks; nothing is fetched)."""
    with _LOCK:
        if source.key in _SHARED:
            return
    source.load()


def wait_ready(timeout: float) -> list[str]:
    """At start-up, give every credential in use its first fetch (up to ``timeout`` in all);
    the labels of those still without a token."""
    deadline = time.monotonic() + timeout
    with _LOCK:
        tokens = list(_SHARED.values())
    return [t.source.label for t in tokens if not t.wait_ready(max(0.0, deadline - time.monotonic()))]


# ---- generic sources: a token file, the OAuth2 client-credentials grant -----------------------------


def oauth_source(name: str, settings: Any, env: Mapping[str, str]) -> TokenSource:
    """The source a provider's ``oauth`` block describes (``config.OAuth``)."""
    if settings.token_file:
        return TokenFile(settings.token_file)
    if settings.client_secret_env:
        secret = env.get(settings.client_secret_env, "").strip()
        if not secret:
            raise CredentialError(
                f"oauth.client_secret_env: environment variable {settings.client_secret_env} is not set"
            )
    else:
        try:
            secret = Path(settings.client_secret_file).read_text().strip()
        except OSError as e:
            raise CredentialError(
                f"oauth.client_secret_file: cannot read {settings.client_secret_file}: {e.strerror}"
            ) from None
        if not secret:
            raise CredentialError(f"oauth.client_secret_file: {settings.client_secret_file} is empty")
    return ClientCredentials(settings.token_url, settings.client_id, secret, settings.scope)


class TokenFile(TokenSource):
    """A token another process keeps fresh in a file (a sidecar, a CLI): re-read every second."""

    max_wait = TOKEN_FILE_POLL_S

    def __init__(self, path: str):
        self.path = path
        self.key = ("token-file", path)
        self.label = f"token file {path}"

    def load(self) -> None:
        self.fetch()

    def fetch(self) -> tuple[str, float | None]:
        try:
            token = Path(self.path).read_text().strip()
        except OSError as e:
            raise CredentialError(f"cannot read {self.path}: {e.strerror}") from None
        if not token:
            raise CredentialError(f"{self.path} is empty")
        return token, jwt_expiry(token)


class ClientCredentials(TokenSource):
    """OAuth2 client-credentials grant (RFC 6749 section 4.4), client secret in the form body
    (section 2.3.1), as Entra ID and most identity providers take it."""

    def __init__(self, token_url: str, client_id: str, secret: str, scope: str | None):
        self.token_url, self.client_id, self.scope = token_url, client_id, scope
        self._secret = secret
        digest = hashlib.sha256(secret.encode()).hexdigest()[:16]  # a new secret is a new credential
        self.key = ("oauth-client", token_url, client_id, scope or "", digest)
        self.label = f"OAuth client {client_id} at {urllib.parse.urlsplit(token_url).netloc}"

    def fetch(self) -> tuple[str, float | None]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret,
        }
        if self.scope:
            form["scope"] = self.scope
        req = urllib.request.Request(
            self.token_url,
            data=urllib.parse.urlencode(form).encode(),
            method="POST",
            headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S) as r:
                obj = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise CredentialError(f"token endpoint answered {e.code}: {_oauth_error(e.read())}") from None
        except (OSError, ValueError) as e:
            raise CredentialError(f"token endpoint unreachable or unreadable: {describe(e)}") from None
        token = obj.get("access_token") if isinstance(obj, dict) else None
        if not isinstance(token, str) or not token:
            raise CredentialError("token endpoint answered without an access_token")
        expires_in = obj.get("expires_in")
        try:
            return token, time.time() + float(expires_in) if expires_in is not None else jwt_expiry(token)
        except (TypeError, ValueError):
            return token, jwt_expiry(token)


def _oauth_error(body: bytes) -> str:
    """RFC 6749 section 5.2 error and description, or the start of a non-JSON body."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200] or "(empty body)"
    if isinstance(obj, dict) and obj.get("error"):
        return f"{obj['error']}: {obj.get('error_description') or ''}".strip(": ")[:300]
    return str(obj)[:200]


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT access token (read, not verified: only to schedule the next
    refresh); None for opaque tokens."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
