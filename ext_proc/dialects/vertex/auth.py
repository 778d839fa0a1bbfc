"""Google credentials for Vertex AI: a service-account key file, or application default
credentials, through google-auth. Tokens are fetched on the credential's refresh thread
(``ext_proc.credentials``), never on a request."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timezone
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
        self.label = (f"Google credentials {self.file}" if credentials_file else
                      f"Google application default credentials{f' ({self.file})' if self.file else ''}")
        self._creds: Any = None
        self._session: Any = None

    def load(self) -> None:
        import google.auth
        from google.auth import exceptions

        try:
            if self.file:
                creds, _ = google.auth.load_credentials_from_file(self.file, scopes=[SCOPE])
            else:
                creds, _ = google.auth.default(scopes=[SCOPE])
        except exceptions.GoogleAuthError as e:
            where = f"gcp_credentials_file: cannot load {self.file}" if self.file else \
                "no Google application default credentials"
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
