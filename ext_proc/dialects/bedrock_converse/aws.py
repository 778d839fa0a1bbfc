"""AWS credentials and Signature Version 4, for providers that sign their requests.

Credentials come from botocore's standard chain (environment variables, web
identity, the shared credentials and config files with ``aws_profile``, container
and instance roles), never from the gateway config. They are loaded once per
credential source (a profile, or the default chain) when a config is loaded,
and temporary ones are refreshed by a background thread before they expire (it looks
every ``REFRESH_POLL_S``, sooner for credentials that live less than a few polls; botocore
refreshes within 15 minutes of the expiry, web identity by a new ``AssumeRoleWithWebIdentity``
with the token file read again):
``sign`` runs on the event loop for every attempt and only computes (botocore's
refresh can make network calls, which must never block a request).

Nothing here logs a credential: not the keys, not the session token, not the
canonical request (which holds the token). botocore's ``SigV4Auth.add_auth``
logs the canonical request at debug level, so the signature is computed from
its parts instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from datetime import datetime, timezone

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ProfileNotFound
from botocore.session import Session

log = logging.getLogger("llm_gateway.aws")

SERVICE = "bedrock"  # the SigV4 signing name of the Bedrock runtime (its service model's signingName)
REFRESH_POLL_S = (
    30.0  # how often a temporary credential's expiry is looked at (botocore refreshes 15 min early)
)
MIN_POLL_S = 0.25  # the shortest wait between two looks, however short-lived the credentials
RETRY_FIRST_S = 2.0  # after a failed refresh, try again this soon, doubling up to REFRESH_POLL_S

# Environment variables that decide what the chain resolves to (their values are hashed, never kept).
_CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_ENDPOINT_URL",  # where the chain's STS calls go (web identity, assumed roles)
    "AWS_ENDPOINT_URL_STS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def _file_stamp(path: str) -> str:
    try:
        st = os.stat(os.path.expanduser(path))
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}"


def _fingerprint(profile: str | None) -> str:
    """What the chain would resolve for ``profile`` depends on: the environment and the
    shared files. Unchanged: the source loaded before still stands (no reload)."""
    env = [os.environ.get(k, "") for k in _CHAIN_ENV]
    files = [
        _file_stamp(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")),
        _file_stamp(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")),
    ]
    return hashlib.sha256("\0".join([profile or "", *env, *files]).encode()).hexdigest()


class CredentialSource:
    """The credentials of one profile (None: the default chain), current ones in ``frozen``."""

    def __init__(
        self, profile: str | None, credentials: Credentials, frozen: ReadOnlyCredentials, fingerprint: str
    ):
        self.profile = profile
        self.fingerprint = fingerprint
        self.method = getattr(credentials, "method", None) or "unknown"
        self.frozen = frozen  # replaced whole by the refresher: a reader never sees half an update
        self._credentials = credentials
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if isinstance(credentials, RefreshableCredentials):
            self._thread = threading.Thread(
                target=self._refresh_loop, name=f"aws-credentials-{self.label}", daemon=True
            )
            self._thread.start()

    @property
    def label(self) -> str:
        return f"profile {self.profile}" if self.profile else "default chain"

    @property
    def refreshing(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        self._stop.set()

    def _refresh_loop(self) -> None:
        """botocore refreshes when the expiry is near; asking often costs nothing until then."""
        delay, failures = _next_poll(self._credentials), 0
        while not self._stop.wait(delay):
            try:
                self.frozen = self._credentials.get_frozen_credentials()
                delay, failures = _next_poll(self._credentials), 0
            except Exception as e:  # keep the last credentials: they may still be valid
                log.warning(
                    "could not refresh the AWS credentials of the %s (%s): %s",
                    self.label,
                    type(e).__name__,
                    _describe(e),
                )
                failures += 1
                delay = min(RETRY_FIRST_S * 2 ** (failures - 1), REFRESH_POLL_S)


def _next_poll(credentials: Credentials) -> float:
    """When to look at ``credentials`` again: every REFRESH_POLL_S, or after a third of what is
    left of their life when that is sooner, so credentials that live less than a poll (or are
    within botocore's refresh window for their whole life) are replaced well before they expire
    and no request is signed with expired ones."""
    expiry = getattr(credentials, "_expiry_time", None)  # botocore's RefreshableCredentials' own
    if not isinstance(expiry, datetime) or expiry.tzinfo is None:
        return REFRESH_POLL_S
    left = (expiry - datetime.now(timezone.utc)).total_seconds()
    return min(REFRESH_POLL_S, max(MIN_POLL_S, left / 3))


def _describe(e: BaseException) -> str:
    """An exception's text, short (botocore's messages name files and variables, not secrets)."""
    return str(e).replace("\n", " ")[:300]


_LOCK = threading.Lock()
_SOURCES: dict[str | None, CredentialSource] = {}


def load(profile: str | None) -> str | None:
    """Load (or keep) the credential source of ``profile``; what is wrong when none loads.

    Called when a config is loaded, never per request. A source whose environment and
    files have not changed is kept with its refresher."""
    fingerprint = _fingerprint(profile)
    with _LOCK:
        current = _SOURCES.get(profile)
    if current is not None and current.fingerprint == fingerprint:
        return None
    try:
        credentials = Session(profile=profile).get_credentials()
    except ProfileNotFound:
        return f"aws_profile: the AWS profile '{profile}' is in neither the shared credentials file nor the config file"
    except (BotoCoreError, ValueError, OSError) as e:
        return f"cannot load AWS credentials ({type(e).__name__}): {_describe(e)}"
    if credentials is None:
        where = (
            f"the profile '{profile}' of the shared credentials or config file"
            if profile
            else (
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the shared credentials and config files, "
                "web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), container or instance roles"
            )
        )
        return f"no AWS credentials found (looked in {where})"
    try:
        frozen = credentials.get_frozen_credentials()
    except Exception as e:  # a web identity or role that cannot be assumed, an unreachable endpoint...
        return f"cannot load AWS credentials ({type(e).__name__}): {_describe(e)}"
    if not frozen.access_key or not frozen.secret_key:
        return "the AWS credentials found have no access key or no secret key"
    source = CredentialSource(profile, credentials, frozen, fingerprint)
    with _LOCK:
        old = _SOURCES.get(profile)
        _SOURCES[profile] = source
    if old is not None:
        old.stop()
    log.info(
        "AWS credentials of the %s loaded (%s%s)",
        source.label,
        source.method,
        ", refreshed before they expire" if source.refreshing else "",
    )
    return None


def current(profile: str | None) -> ReadOnlyCredentials | None:
    """The credentials to sign with now (never blocks)."""
    source = _SOURCES.get(profile)
    return source.frozen if source is not None else None


def signature_headers(
    credentials: ReadOnlyCredentials,
    region: str,
    host: str,
    path: str,
    body: bytes,
    now: datetime | None = None,
) -> dict[str, str]:
    """SigV4 headers for ``POST https://{host}{path}`` with ``body``: ``authorization``,
    ``x-amz-date`` and, for temporary credentials, ``x-amz-security-token``.

    Signed: ``host`` (the value the request will carry), ``x-amz-date`` and the token;
    the payload hash covers the body, so a byte changed after signing fails the request."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": host, "x-amz-date": stamp}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers=headers)
    request.context["timestamp"] = stamp
    auth = SigV4Auth(credentials, SERVICE, region)
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    signed = auth.signed_headers(auth.headers_to_sign(request))
    del headers["host"]  # Envoy sets it (auto_host_rewrite); it was signed with that value
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers
