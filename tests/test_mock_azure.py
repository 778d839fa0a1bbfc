"""The mock Azure OpenAI resource knows its deployments, as the real one does.

Driven by the official ``openai`` SDK's ``AzureOpenAI`` client (the client Azure documents), so the
paths it builds for deployments and the v1 API are the real ones, and by raw HTTP for the exact
error body. A deployment the resource does not have is Azure's 404 ``DeploymentNotFound``; a wrong
key or ``api-version`` is refused before the deployment is looked at.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway_tools.cli import deployments_of
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread

KEY = "azure-mock-key"
DEPLOYED = ("gpt-4o-prod", "embed-prod")
NOT_FOUND = {
    "error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again.",
    }
}


@pytest.fixture(scope="module")
def azure() -> Iterator[BackgroundMocks]:
    bg = start_in_thread([MockSpec("az", "azure_openai", 0, KEY, deployments=DEPLOYED)])
    yield bg
    bg.stop()


def base(azure: BackgroundMocks) -> str:
    return f"http://127.0.0.1:{azure.ports['az']}"


def post(azure: BackgroundMocks, path: str, body: dict[str, Any], key: str = KEY) -> tuple[int, Any]:
    req = urllib.request.Request(
        base(azure) + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "api-key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize("deployment", ["gpt-4o-prd", "gpt-4o", "GPT-4O-PROD"])
def test_an_unknown_deployment_is_azures_404(azure: BackgroundMocks, deployment: str) -> None:
    path = f"/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
    assert post(azure, path, CHAT) == (404, NOT_FOUND)
    assert post(azure, "/openai/v1/chat/completions", {**CHAT, "model": deployment}) == (404, NOT_FOUND)
    embed = f"/openai/deployments/{deployment}/embeddings?api-version=2024-10-21"
    assert post(azure, embed, {"input": "x"}) == (404, NOT_FOUND)
    assert post(azure, "/openai/v1/embeddings", {"input": "x", "model": deployment}) == (404, NOT_FOUND)


def test_the_created_deployments_answer(azure: BackgroundMocks) -> None:
    status, body = post(
        azure, "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21", CHAT
    )
    assert status == 200 and body["choices"][0]["message"]["content"] == "[az:gpt-4o-prod] hello"
    status, body = post(azure, "/openai/v1/embeddings", {"input": "x", "model": "embed-prod"})
    assert status == 200 and body["data"], body


def test_key_and_api_version_are_checked_before_the_deployment(azure: BackgroundMocks) -> None:
    status, body = post(
        azure, "/openai/deployments/nope/chat/completions?api-version=2024-10-21", CHAT, key="wrong"
    )
    assert status == 401 and "invalid subscription key" in body["error"]["message"]
    status, body = post(azure, "/openai/deployments/nope/chat/completions?api-version=2019-01-01", CHAT)
    assert (status, body["error"]["message"]) == (404, "Resource not found")


@pytest.mark.parametrize("v1", [False, True], ids=["deployment-path", "v1"])
def test_the_azure_sdk_sees_deployment_not_found(azure: BackgroundMocks, v1: bool) -> None:
    if v1:
        sdk: openai.OpenAI = openai.OpenAI(
            base_url=base(azure) + "/openai/v1", api_key="unused", max_retries=0
        )
        sdk = sdk.with_options(default_headers={"api-key": KEY})
    else:
        sdk = openai.AzureOpenAI(
            azure_endpoint=base(azure), api_key=KEY, api_version="2024-10-21", max_retries=0
        )
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(model="gpt-4o-prd", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "DeploymentNotFound"
    ok = sdk.chat.completions.create(model="gpt-4o-prod", messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content == "[az:gpt-4o-prod] hi"


def test_llm_gateway_mock_providers_deploys_what_the_config_routes_to() -> None:
    """``llm-gateway up`` starts a resource with a deployment per backend on it, chat and embeddings."""
    from tests.cloud import cloud_providers
    from tests.test_bedrock_auth import parsed

    providers = cloud_providers()
    providers["azure_entra"]["oauth"]["token_url"] = "http://127.0.0.1:1/tenant/oauth2/v2.0/token"
    cfg = parsed(
        {
            "providers": {"azure_openai": providers["azure_openai"], "azure_entra": providers["azure_entra"]},
            "models": {
                "gpt": {"backends": [{"provider": "azure_openai", "model": "gpt-4o-prod"}]},
                "mini": {"backends": [{"provider": "azure_openai", "model": "gpt-4o-mini"}]},
                "embed": {
                    "kind": "embedding",
                    "backends": [{"provider": "azure_openai", "model": "embed-prod"}],
                },
                "ha": {"backends": [{"provider": "azure_entra", "model": "gpt-4o-ha"}]},
            },
        }
    )
    assert deployments_of(cfg, "azure_openai") == ("embed-prod", "gpt-4o-mini", "gpt-4o-prod")
    assert deployments_of(cfg, "azure_entra") == ("gpt-4o-ha",)
