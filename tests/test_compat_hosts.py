"""OpenAI-compatible hosts (vLLM, SGLang, Groq, Together, Fireworks, xAI, DeepSeek, Mistral,
OpenRouter...) through the real stack: each known deviation, played by the OpenAI mock's quirk
modes, reaches every client SDK as that client expects.

- ``reasoning_content`` in messages and stream deltas: OpenAI clients get it as the host sent it;
  the IR has no reasoning part, so Anthropic and Gemini clients get the answer without it.
- Streams without usage (a host ignoring ``stream_options``) still complete.
- A host refusing ``stream_options`` (Mistral's 422): ``drop_fields: [stream_options]`` in its
  provider block; its usage, on the last chunk, is still read.
- Error shapes: ``{"object": "error", ...}`` and ``{"detail": ...}`` become each client's error
  with the host's status and words.
- DeepSeek's cache hits (``prompt_cache_hit_tokens``) are cached input tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors

from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack
from tests.test_translation_matrix import ADAPTERS, Ask, words

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

HOST = {"dialect": "openai", "base_url": "http://127.0.0.1:1/v1", "mock": True}
CLIENTS = ("openai", "anthropic", "gemini")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = config_on_free_ports(
        {
            "providers": {
                "vllm": {**HOST, "api_key_env": "VLLM_API_KEY"},
                "mistral": {**HOST, "api_key_env": "MISTRAL_API_KEY", "drop_fields": ["stream_options"]},
            },
            "models": {
                "qwen3": {"backends": [{"provider": "vllm", "model": "Qwen/Qwen3-8B"}]},
                # One per client whose backend answers 404 (misconfigured: it cools down, alone).
                **{
                    f"qwen3-404-{c}": {
                        "backends": [{"provider": "vllm", "model": "Qwen/Qwen3-8B", "name": f"vllm/404-{c}"}]
                    }
                    for c in CLIENTS
                },
                "mistral-large": {"backends": [{"provider": "mistral", "model": "mistral-large-latest"}]},
            },
            "tenants": {"demo": {"api_keys": [{"env": "DEMO_TENANT_KEY"}]}},
        }
    )
    stack = start_stack(tmp_path_factory.mktemp("compat-hosts"), cfg, {"DEMO_TENANT_KEY": DEMO_KEY})
    yield stack
    stack.stop()


@pytest.fixture
def hmocks(hosts: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(hosts) as admin:
        yield admin


def ask(stack: Stack, client: str, model: str, text: str, stream: bool = False) -> Any:
    return ADAPTERS[client](stack).ask(Ask(model, text, stream=stream))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", ["anthropic", "gemini"])
def test_reasoning_content_is_reasoning_for_other_dialects(
    hosts: Stack, hmocks: MockAdmin, client: str, stream: bool
) -> None:
    """The host's reasoning is the model's reasoning in the client's dialect (docs/reasoning.md),
    never mixed into the answer; its tokens are output tokens, as the host counts them."""
    hmocks.fault("vllm", mode="reasoning")
    res = ask(hosts, client, "qwen3", "think about this", stream=stream)
    reply = "[vllm:Qwen/Qwen3-8B] think about this"
    thought = "Thinking about: think about this"
    assert res.text == reply  # the reasoning is not mixed into the answer
    assert res.finish == {"anthropic": "end_turn", "gemini": "STOP"}[client]
    # completion_tokens counts the reasoning too, as these hosts do (DeepSeek API "Reasoning Model":
    # reasoning tokens are billed as output): Anthropic's output_tokens include it, Gemini counts
    # thoughts apart (thoughtsTokenCount)
    assert res.output_tokens == words(reply) + (words(thought) if client == "anthropic" else 0)
    if client == "anthropic" and not stream:
        asdk = anthropic.Anthropic(base_url=hosts.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)
        msg = asdk.messages.create(
            model="qwen3", max_tokens=100, messages=[{"role": "user", "content": "think about this"}]
        )
        first = msg.content[0]
        assert first.type == "thinking" and first.thinking == thought


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_reasoning_content_reaches_openai_clients_as_sent(
    hosts: Stack, hmocks: MockAdmin, stream: bool
) -> None:
    hmocks.fault("vllm", mode="reasoning")
    sdk = openai.OpenAI(base_url=hosts.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
    msgs: Any = [{"role": "user", "content": "think about this"}]
    if not stream:
        msg = sdk.chat.completions.create(model="qwen3", messages=msgs).choices[0].message
        reasoning, content = (msg.model_extra or {}).get("reasoning_content"), msg.content
    else:
        reasoning, content = "", ""
        for chunk in sdk.chat.completions.create(model="qwen3", messages=msgs, stream=True):
            for choice in chunk.choices:
                reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                content += choice.delta.content or ""
    assert reasoning == "Thinking about: think about this"
    assert content == "[vllm:Qwen/Qwen3-8B] think about this"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_stream_without_usage_still_completes(hosts: Stack, hmocks: MockAdmin, client: str) -> None:
    """A host that ignores stream_options sends no usage: the stream ends well all the same."""
    hmocks.fault("vllm", mode="no_stream_usage")
    res = ask(hosts, client, "qwen3", "count nothing", stream=True)
    assert res.text == "[vllm:Qwen/Qwen3-8B] count nothing"
    assert res.finish == {"openai": "stop", "anthropic": "end_turn", "gemini": "STOP"}[client]
    assert hmocks.stats("vllm")["last_request"]["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("client", CLIENTS)
def test_drop_fields_serves_a_host_that_refuses_stream_options(
    hosts: Stack, hmocks: MockAdmin, client: str
) -> None:
    """Mistral refuses stream_options (422) and reports usage on its last chunk anyway: with
    drop_fields the gateway never sends it, and still reads the usage."""
    hmocks.fault("mistral", mode="strict_stream_options")
    res = ask(hosts, client, "mistral-large", "stream me fully", stream=True)
    reply = "[mistral:mistral-large-latest] stream me fully"
    assert res.text == reply
    assert (res.input_tokens, res.output_tokens) == (3, words(reply))
    assert "stream_options" not in hmocks.stats("mistral")["last_request"]["body"]


@pytest.mark.parametrize("client", CLIENTS)
def test_without_drop_fields_the_hosts_422_reaches_the_client_readably(
    hosts: Stack, hmocks: MockAdmin, client: str
) -> None:
    hmocks.fault("vllm", mode="strict_stream_options")
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as e:
        ask(hosts, client, "qwen3", "stream me", stream=True)
    status, message = _status_message(client, e.value)
    assert status == 422
    if client != "openai":  # an OpenAI client gets the host's own body
        assert message == "stream_options.include_usage: Extra inputs are not permitted"


def _status_message(client: str, err: Any) -> tuple[int, str]:
    if client == "openai":
        body = err.body if isinstance(err.body, dict) else {}
        return err.status_code, str(body.get("message") or body.get("detail") or "")
    if client == "anthropic":
        return err.status_code, err.body["error"]["message"]
    return err.code, err.message


ERROR_SHAPES = {
    "error_object": (
        400,
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
    ),
    "error_detail": (404, "Not Found"),
}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("shape", list(ERROR_SHAPES))
def test_compatible_hosts_error_shapes(hosts: Stack, hmocks: MockAdmin, shape: str, client: str) -> None:
    status, text = ERROR_SHAPES[shape]
    hmocks.fault("vllm", mode=shape, status=status, message=text)
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as e:
        ask(hosts, client, f"qwen3-404-{client}" if status == 404 else "qwen3", "hello")
    got_status, message = _status_message(client, e.value)
    err: Any = e.value
    if status == 404:
        # The host has no such path or model: the backend's config is wrong, not the client's
        # request (README "Failover"): a 502 naming the backend, in the host's own words.
        assert got_status == 502 and message.endswith(f"(HTTP 404: {text})"), message
        assert "is misconfigured" in message, message
        return
    assert (got_status, message) == (status, text)
    if client == "anthropic":
        assert err.body["error"]["type"] == "invalid_request_error"
    elif client == "gemini":
        assert err.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
def test_deepseek_cache_hits_are_cached_input(
    hosts: Stack, hmocks: MockAdmin, client: str, stream: bool
) -> None:
    """Six prompt words, three of them cache hits (prompt_cache_hit_tokens)."""
    hmocks.fault("vllm", mode="cache_hit_usage")
    text = "one two three four five six"
    msgs: Any = [{"role": "user", "content": text}]
    if client == "openai":  # same wire: the host's usage as it sent it
        sdk = openai.OpenAI(base_url=hosts.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
        if stream:
            chunks = list(
                sdk.chat.completions.create(
                    model="qwen3", messages=msgs, stream=True, stream_options={"include_usage": True}
                )
            )
            usage = next(c.usage for c in chunks if c.usage is not None)
        else:
            usage = sdk.chat.completions.create(model="qwen3", messages=msgs).usage
        assert usage is not None and usage.prompt_tokens == 6
        assert (usage.model_extra or {})["prompt_cache_hit_tokens"] == 3
    elif client == "anthropic":  # Anthropic counts cache reads apart from input_tokens
        asdk = anthropic.Anthropic(base_url=hosts.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)
        if stream:
            with asdk.messages.stream(model="qwen3", max_tokens=100, messages=msgs) as s:
                au = s.get_final_message().usage
        else:
            au = asdk.messages.create(model="qwen3", max_tokens=100, messages=msgs).usage
        assert (au.input_tokens, au.cache_read_input_tokens) == (3, 3)
    else:
        res = ask(hosts, client, "qwen3", text, stream=stream)
        assert (res.input_tokens, res.cached_tokens) == (6, 3)
