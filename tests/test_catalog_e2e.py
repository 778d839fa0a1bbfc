"""The capability catalog through the real stack (Envoy, ext_proc, mock providers) with the
official SDKs: a max tokens above the target model's output limit is clamped, too many stop
sequences are refused in the client's dialect naming its field, OpenAI reasoning models get
``max_completion_tokens``, a backend's ``capabilities:`` block limits a model the catalog does
not know, and ``llm-gateway status`` warns about a retiring model (docs/catalog.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

HI: Any = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["models"]["old-claude"] = {"backends": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}
    cfg["models"]["capped"] = {
        "backends": [
            {
                "provider": "openai",
                "model": "local-llm",
                "capabilities": {"max_output_tokens": 50, "max_stop_sequences": 1},
            }
        ]
    }
    cfg["models"]["lenient-claude"] = {
        "drop_unsupported": True,
        "backends": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}],
    }
    s = start_stack(tmp_path_factory.mktemp("catalog"), config_on_free_ports(cfg))
    yield s
    s.stop()


@pytest.fixture
def cmocks(stack: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(stack) as admin:
        yield admin


def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)


def claude(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)


def sent(admin: MockAdmin, provider: str) -> dict[str, Any]:
    return admin.stats(provider)["last_request"]["body"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_max_tokens_above_the_model_output_is_clamped(stack: Stack, cmocks: MockAdmin, stream: bool) -> None:
    """gemini-3.5-flash takes at most 65,536 output tokens: a client's 200,000 would be the
    backend's 400; it reaches Gemini as 65,536 and the client gets its answer."""
    if stream:
        text = ""
        for chunk in oai(stack).chat.completions.create(
            model="gemini-3.5-flash", messages=HI, max_tokens=200_000, stream=True
        ):
            text += "".join(c.delta.content or "" for c in chunk.choices)
    else:
        res = oai(stack).chat.completions.create(model="gemini-3.5-flash", messages=HI, max_tokens=200_000)
        text = res.choices[0].message.content or ""
    assert "hi there" in text
    assert sent(cmocks, "gemini")["generationConfig"]["maxOutputTokens"] == 65_536


def test_a_passed_through_max_tokens_is_clamped_too(stack: Stack, cmocks: MockAdmin) -> None:
    """An Anthropic client on Claude (same API, passed through): 200,000 reaches claude-sonnet-4-6
    as its 128,000."""
    res = claude(stack).messages.create(model="claude-sonnet-4-6", max_tokens=200_000, messages=HI)
    assert res.stop_reason == "end_turn"
    assert sent(cmocks, "anthropic")["max_tokens"] == 128_000


def test_too_many_stop_sequences_are_refused_in_the_clients_dialect(stack: Stack, cmocks: MockAdmin) -> None:
    """gpt-5.5 (Chat Completions) takes at most 4 stop sequences: an Anthropic client's 5 get
    Anthropic's 400 naming stop_sequences, and nothing reaches OpenAI."""
    with pytest.raises(anthropic.BadRequestError) as e:
        claude(stack).messages.create(
            model="gpt-5.5", max_tokens=100, messages=HI, stop_sequences=["a1", "b2", "c3", "d4", "e5"]
        )
    assert e.value.status_code == 400
    body: Any = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == (
        "'stop_sequences' has 5 stop sequences; the backend model 'gpt-5.5' accepts at most 4"
    )
    assert cmocks.stats("openai")["requests"] == 0
    # Four are fine.
    ok = claude(stack).messages.create(
        model="gpt-5.5", max_tokens=100, messages=HI, stop_sequences=["a1"] * 4
    )
    assert ok.stop_reason == "end_turn"
    assert sent(cmocks, "openai")["stop"] == ["a1"] * 4


def test_openai_reasoning_models_get_max_completion_tokens(stack: Stack, cmocks: MockAdmin) -> None:
    """gpt-5.5 refuses max_tokens: translated (Anthropic client) and passed-through (OpenAI
    client) requests both reach it as max_completion_tokens."""
    claude(stack).messages.create(model="gpt-5.5", max_tokens=100, messages=HI)
    body = sent(cmocks, "openai")
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    oai(stack).chat.completions.create(model="gpt-5.5", messages=HI, max_tokens=30)
    body = sent(cmocks, "openai")
    assert body["max_completion_tokens"] == 30 and "max_tokens" not in body


def test_a_config_capabilities_block_limits_an_unknown_model(stack: Stack, cmocks: MockAdmin) -> None:
    """``capabilities:`` on a self-hosted model: its output cap is clamped even on the
    same wire, and a Gemini client's two stop sequences are refused naming its field."""
    oai(stack).chat.completions.create(model="capped", messages=HI, max_tokens=1000)
    assert sent(cmocks, "openai")["max_tokens"] == 50
    client = genai.Client(
        api_key=DEMO_KEY, http_options=types.HttpOptions(base_url=stack.base_url, timeout=20_000)
    )
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(
            model="capped", contents="hi there", config=types.GenerateContentConfig(stop_sequences=["x", "y"])
        )
    assert e.value.code == 400
    assert e.value.message == (
        "'generationConfig.stopSequences' has 2 stop sequences; the backend model 'local-llm' accepts at most 1"
    )
    assert cmocks.stats("openai")["requests"] == 1


PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def _image_turn(media_type: str) -> Any:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in it?"},
                {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{PNG_B64}"}},
            ],
        }
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_image_jpg_data_url_reaches_claude_as_image_jpeg(
    stack: Stack, cmocks: MockAdmin, stream: bool
) -> None:
    """OpenAI clients write ``data:image/jpg``; Anthropic takes only ``image/jpeg`` (its mock
    refuses ``image/jpg`` as the API does): the gateway spells it the Anthropic way."""
    if stream:
        chunks = list(
            oai(stack).chat.completions.create(
                model="claude-sonnet-4-6", messages=_image_turn("image/jpg"), stream=True
            )
        )
        assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"
    else:
        res = oai(stack).chat.completions.create(model="claude-sonnet-4-6", messages=_image_turn("image/jpg"))
        assert res.choices[0].finish_reason == "stop"
    block = sent(cmocks, "anthropic")["messages"][0]["content"][1]
    assert block["source"] == {"type": "base64", "media_type": "image/jpeg", "data": PNG_B64}


def test_an_image_type_claude_does_not_take_is_refused_naming_the_clients_part(
    stack: Stack, cmocks: MockAdmin
) -> None:
    """``image/heic`` (Gemini takes it, Anthropic does not): an OpenAI client's 400 names its own
    part, nothing reaches Anthropic; a model with ``drop_unsupported`` sends the turn without it."""
    with pytest.raises(openai.BadRequestError) as e:
        oai(stack).chat.completions.create(model="claude-sonnet-4-6", messages=_image_turn("image/heic"))
    assert e.value.status_code == 400
    body: Any = e.value.body
    assert body["param"] == "messages[0].content[1]"
    assert body["message"].startswith(
        "'messages[0].content[1]' is image type 'image/heic', which the backend model 'claude-sonnet-4-6' "
        "does not accept (it takes image/gif, image/jpeg, image/png, image/webp)"
    )
    assert cmocks.stats("anthropic")["requests"] == 0
    res = oai(stack).chat.completions.create(model="lenient-claude", messages=_image_turn("image/heic"))
    assert res.choices[0].finish_reason == "stop"
    assert sent(cmocks, "anthropic")["messages"][0]["content"] == "what is in it?"


def test_status_warns_about_the_retiring_model(stack: Stack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway_tools",
            "status",
            str(stack.config_file),
            "--json",
            "--interval",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    # claude-sonnet-4-5 retires on 2026-11-30: within the default 90 days, or past.
    assert len(warnings) == 1 and warnings[0].startswith(
        "backend 'anthropic/claude-sonnet-4-5': model 'claude-sonnet-4-5' retire"
    )
