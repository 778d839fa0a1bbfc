"""Cloud backends for end-to-end tests: Vertex AI projects and Azure OpenAI resources played by
mocks that run their own token endpoints, and the credentials the gateway needs for them.

Nothing here reaches Google or Microsoft: each service-account key is generated for the test
(RSA, with ``cryptography``) and its ``token_uri`` is its Vertex mock; the Entra ID token URL of
an Azure provider is its Azure mock.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports

PROJECT = "gateway-test-project"
LOCATION = "us-central1"
TENANT = "00000000-0000-4000-8000-000000000001"
CLIENT_ID = "11111111-2222-4333-8444-555555555555"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
DEMO_DIGEST = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"  # sha256 of DEMO_KEY
assert DEMO_KEY == "demo-key"

# provider (named after its dialect) -> (client-facing model, upstream model or deployment)
CLOUD_BACKENDS = {
    "vertex_gemini": ("gemini-on-vertex", "gemini-3.5-flash"),
    "vertex_anthropic": ("claude-on-vertex", "claude-sonnet-4-6"),
    "azure_openai": ("gpt-on-azure", "gpt-4o-prod"),
}


def service_account_key(path: Path, token_uri: str, project: str = PROJECT) -> Path:
    """A Google service-account key file, as the console downloads it, for a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    name = f"gateway-{secrets.token_hex(3)}"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": secrets.token_hex(20),
                "private_key": pem,
                "client_email": f"{name}@{project}.iam.gserviceaccount.com",
                "client_id": str(secrets.randbelow(10**20)),
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": token_uri,
                "universe_domain": "googleapis.com",
            }
        )
    )
    return path


def cloud_providers() -> dict[str, Any]:
    """Two Vertex projects (a key file; application default credentials) and two Azure
    resources (an API key; Entra ID client credentials on the v1 API), all mocks."""
    vertex = {
        "base_url": "http://127.0.0.1:1",
        "gcp_project": PROJECT,
        "gcp_location": LOCATION,
        "mock": True,
    }
    return {
        "vertex_gemini": {"dialect": "vertex_gemini", **vertex, "gcp_credentials_file": "<key>"},
        "vertex_anthropic": {"dialect": "vertex_anthropic", **vertex},  # application default credentials
        "azure_openai": {
            "dialect": "azure_openai",
            "base_url": "http://127.0.0.1:1",
            "api_key_env": "AZURE_OPENAI_API_KEY",
            "mock": True,
        },
        "azure_entra": {
            "dialect": "azure_openai",
            "base_url": "http://127.0.0.1:1",
            "api_version": "v1",
            "oauth": {
                "token_url": "<token url>",
                "client_id": CLIENT_ID,
                "client_secret_env": "AZURE_CLIENT_SECRET",
                "scope": AZURE_SCOPE,
            },
            "mock": True,
        },
    }


def with_clouds(cfg: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """``cfg`` (which names some of ``cloud_providers()``) on free ports, with each cloud's
    credentials pointed at its mock; the environment the stack needs for them."""
    cfg = config_on_free_ports(cfg)
    env: dict[str, str] = {}
    for name, p in cfg["providers"].items():
        if p["dialect"].startswith("vertex_"):
            key = service_account_key(tmp / f"{name}-key.json", p["base_url"] + "/token")
            if "gcp_credentials_file" in p:
                p["gcp_credentials_file"] = str(key)
            else:
                env["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
        oauth = p.get("oauth")
        if oauth and oauth.get("token_url"):
            oauth["token_url"] = f"{p['base_url']}/{TENANT}/oauth2/v2.0/token"
            env[oauth["client_secret_env"]] = "secret-" + secrets.token_urlsafe(12)
    return cfg, env


def cloud_config(
    tmp: Path, models: dict[str, Any] | None = None, extra_providers: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A gateway whose models are served by the cloud mocks (by default one model per cloud
    backend, ``CLOUD_BACKENDS``), plus ``extra_providers``."""
    providers = {**cloud_providers(), **(extra_providers or {})}
    if models is None:
        models = {
            model: {"backends": [{"provider": p, "model": upstream}]}
            for p, (model, upstream) in CLOUD_BACKENDS.items()
        }
    used = {b["provider"] for m in models.values() for b in m["backends"]}
    cfg = {
        "providers": {n: p for n, p in providers.items() if n in used},
        "models": models,
        "tenants": {"demo": {"api_keys": [{"sha256": DEMO_DIGEST}]}},
    }
    return with_clouds(cfg, tmp)
