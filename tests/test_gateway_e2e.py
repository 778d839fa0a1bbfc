"""The foundation, end to end: OpenAI clients through the real Envoy + ext_proc to the mocks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.conftest import DEMO_KEY, MockAdmin


def client(gateway, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def post(
    gateway,
    path: str,
    body: bytes | dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        gateway.base_url + path,
        data=data,
        method="POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


@pytest.mark.parametrize(
    ("model", "provider", "upstream"),
    [
        ("gpt-5.5", "openai", "gpt-5.5"),
        ("claude-sonnet-4-6", "anthropic", "claude-sonnet-4-6"),
    ],
)
def test_chat_completion_reaches_primary_backend(
    gateway, mocks: MockAdmin, model: str, provider: str, upstream: str
) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == f"[{provider}:{upstream}] hi"
    assert completion.model == model  # the name the client asked for
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 1 and completion.usage.completion_tokens == 2
    assert raw.headers["x-gateway-backend"] == f"{provider}/{upstream}"
    assert mocks.stats(provider)["requests"] == 1


def test_translated_request_carries_system_and_history(gateway, mocks: MockAdmin) -> None:
    completion = client(gateway).chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
        max_tokens=50,
        temperature=0.2,
        stop=["END"],
    )
    assert completion.choices[0].message.content == "[anthropic:claude-sonnet-4-6] second question"
    sent = mocks.stats("anthropic")["last_request"]["body"]
    assert sent["system"] in ("be brief", [{"type": "text", "text": "be brief"}])
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2 and sent["stop_sequences"] == ["END"]
    # words: "be brief" + "first question" + "first answer" + "second question"
    assert completion.usage.prompt_tokens == 8


def test_anthropic_backend_gets_default_max_tokens(gateway, mocks: MockAdmin) -> None:
    client(gateway).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello"}]
    )
    sent = mocks.stats("anthropic")["last_request"]["body"]
    assert sent["max_tokens"] == gateway.config.models["claude-sonnet-4-6"].default_max_tokens


def test_provider_credentials_replace_the_client_key(gateway, mocks: MockAdmin) -> None:
    client(gateway).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello"}]
    )
    headers = {k.lower(): v for k, v in mocks.stats("anthropic")["last_request"]["headers"].items()}
    assert "authorization" not in headers  # the client's gateway key never leaves the gateway
    assert headers["x-api-key"] != DEMO_KEY
    assert headers["anthropic-version"] == "2023-06-01"


def test_client_internal_headers_are_stripped(gateway, mocks: MockAdmin) -> None:
    status, _, body = post(
        gateway,
        "/v1/chat/completions",
        {"model": "gpt-5.5", "messages": [{"role": "user", "content": "x"}]},
        {
            "authorization": f"Bearer {DEMO_KEY}",
            "x-gw-pre": "anthropic/claude-sonnet-4-6",
            "x-gw-route": "claude-sonnet-4-6",
            "x-gw-stream": "1",
        },
    )
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "[openai:gpt-5.5] x"
    headers = {k.lower() for k in mocks.stats("openai")["last_request"]["headers"]}
    assert not any(h.startswith("x-gw-") for h in headers)


def test_unknown_model_is_404(gateway, mocks: MockAdmin) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client(gateway).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404
    assert "gpt-9" in e.value.message
    assert e.value.body["param"] == "model"
    assert sum(mocks.stats(p)["requests"] for p in ("openai", "anthropic", "gemini")) == 0


def test_missing_and_unknown_keys_are_401(gateway) -> None:
    status, _, body = post(gateway, "/v1/chat/completions", {"model": "gpt-5.5", "messages": []})
    assert status == 401 and "missing API key" in body["error"]["message"]
    with pytest.raises(openai.AuthenticationError) as e:
        client(gateway, key="not-a-key").chat.completions.create(
            model="gpt-5.5", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt-5.5", "messages": [', None),
        (b"[1, 2]", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    ],
)
def test_malformed_requests_are_400(gateway, body: bytes, param: str | None) -> None:
    status, headers, err = post(
        gateway, "/v1/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"}
    )
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert err["error"]["type"] == "invalid_request_error"
    assert err["error"]["param"] == param


def test_missing_required_field_in_translated_request_is_400(gateway, mocks: MockAdmin) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client(gateway).chat.completions.create(model="claude-sonnet-4-6", messages=None)  # type: ignore[arg-type]
    assert e.value.status_code == 400
    assert "messages" in e.value.message
    assert mocks.stats("anthropic")["requests"] == 0


def test_models_endpoint_lists_configured_models(gateway) -> None:
    ids = [m.id for m in client(gateway).models.list()]
    assert ids == list(gateway.config.models)
