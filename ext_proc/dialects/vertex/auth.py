"""Google credentials for Vertex AI: a service-account key file, or application default
credentials, through google-auth. Tokens are fetched on the credential's refresh thread
(``ext_proc.credentials``), never on a request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timezone
from pathlib import Path
from typing import Any

from ...credentials import CredentialError, TokenSource, describe

# Vertex AI accepts the cloud-platform scope (Vertex AI REST reference, "Authorization scopes").
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GoogleCredentials(TokenSource):
    """OAuth2 access tokens of a Google identity. ``credentials_file``: a service-account key
    (or any credentials file google-auth loads); unset: application default credentials
    (``GOOGLE_APPLICATION_CREDENTIALS`` in the gateway's environment, gcloud's ADC file, or the
    metadata server on Google Cloud)."""

    def __init__(self, credentials_file: str | None, env: Mapping[str, str]):
        self.file = credentials_file or env.get("GOOGLE_APPLICATION_CREDENTIALS") or None
        self.key = ("google", self.file or "adc")
        self.label = (
            f"Google credentials {self.file}"
            if credentials_file
            else f"Google application default credentials{f' ({self.file})' if self.file else ''}"
        )
        self._creds: Any = None
        self._session: Any = None

    def load(self) -> None:
        import google.auth
        from google.auth import exceptions

        try:
            creds = _from_file(self.file) if self.file else google.auth.default(scopes=[SCOPE])[0]
        except (exceptions.GoogleAuthError, OSError, ValueError, KeyError) as e:
            where = (
                f"gcp_credentials_file: cannot load {self.file}"
                if self.file
                else "no Google application default credentials"
            )
            raise CredentialError(f"{where}: {describe(e)}") from None
        self._creds = creds

    def fetch(self) -> tuple[str, float | None]:
        import requests
        from google.auth.transport.requests import Request

        if self._creds is None:
            self.load()
        if self._session is None:
            self._session = requests.Session()
        self._creds.refresh(Request(self._session))
        expiry = self._creds.expiry  # naive UTC (google-auth's convention)
        return self._creds.token, expiry.replace(tzinfo=timezone.utc).timestamp() if expiry else None


def _from_file(path: str) -> Any:
    """The credentials of a key file, by its declared type (google-auth's type-specific loaders: the
    generic one is deprecated because it accepts any type from any source)."""
    info = json.loads(Path(path).read_text())
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    if kind == "authorized_user":  # gcloud auth application-default login
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=[SCOPE])
    if kind == "external_account":  # workload identity federation
        from google.auth import aws, identity_pool

        source = info.get("credential_source") or {}
        loader = aws if str(source.get("environment_id", "")).startswith("aws") else identity_pool
        return loader.Credentials.from_info(info, scopes=[SCOPE])
    raise ValueError(
        f"unsupported credentials type {kind!r} (service_account, authorized_user or external_account)"
    )
