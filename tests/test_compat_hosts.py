"""OpenAI-compatible hosts (vLLM, SGLang, Groq, Together, Fireworks, xAI, DeepSeek, Mistral,
OpenRouter...) through the real stack: each known deviation, played by the OpenAI mock's quirk
modes, reaches every client SDK as that client expects.

- Reasoning in ``reasoning_content`` (vLLM, SGLang, DeepSeek, xAI) or ``reasoning`` (Groq,
  OpenRouter), in messages and stream deltas: OpenAI clients get it as the host sent it;
  Anthropic clients get thinking blocks and Gemini clients thought parts, apart from the answer.
- Streams without usage (a host ignoring ``stream_options``) still complete.
- A host refusing ``stream_options`` (Mistral's 422): ``drop_fields: [stream_options]`` in its
  provider block; its usage, on the last chunk, is still read.
- Error shapes: ``{"object": "error", ...}`` and ``{"detail": ...}`` become each client's error
  with the host's status and words; Mistral's validation errors (a message that is an object, or
  a bare list) become "field: problem" text.
- OpenRouter: numeric error codes (as the status, or as a stream's first event) keep their
  status; an error chunk mid-stream ends the client's stream with an error; its attribution
  headers (``headers:`` in the provider block) are sent.
- Together: content repeated as ``text``, usage on the last chunk with its choices, finish
  reason ``eos``: the answer once, a normal end, the usage counted.
- DeepSeek's cache hits (``prompt_cache_hit_tokens``) are cached input tokens.
"""

from __future__ import annotations

import time
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
# OpenRouter's optional attribution headers (OpenRouter docs "API Reference", "Headers").
OPENROUTER_HEADERS = {"HTTP-Referer": "https://app.example.com", "X-Title": "Example App"}
# A host's reasoning, by the field it sends it in: (model, provider, upstream model, mock mode).
REASONING_HOSTS = {
    "reasoning_content": ("qwen3", "vllm", "Qwen/Qwen3-8B", "reasoning"),  # vLLM, SGLang, DeepSeek, xAI
    "reasoning": ("gpt-oss", "groq", "openai/gpt-oss-20b", "reasoning_field"),  # Groq, OpenRouter
}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = config_on_free_ports(
        {
            "providers": {
                "vllm": {**HOST, "api_key_env": "VLLM_API_KEY"},
                "mistral": {**HOST, "api_key_env": "MISTRAL_API_KEY", "drop_fields": ["stream_options"]},
                "groq": {**HOST, "api_key_env": "GROQ_API_KEY"},
                "openrouter": {**HOST, "api_key_env": "OPENROUTER_API_KEY", "headers": OPENROUTER_HEADERS},
                "together": {**HOST, "api_key_env": "TOGETHER_API_KEY"},
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
                "gpt-oss": {"backends": [{"provider": "groq", "model": "openai/gpt-oss-20b"}]},
                "deepseek-r1": {"backends": [{"provider": "openrouter", "model": "deepseek/deepseek-r1"}]},
                "llama-3.3": {
                    "backends": [{"provider": "together", "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"}]
                },
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
@pytest.mark.parametrize("field", list(REASONING_HOSTS))
def test_a_hosts_reasoning_is_reasoning_for_other_dialects(
    hosts: Stack, hmocks: MockAdmin, field: str, client: str, stream: bool
) -> None:
    """The host's reasoning (``reasoning_content``, or Groq's ``reasoning``) is the model's
    reasoning in the client's dialect (docs/reasoning.md): an Anthropic thinking block, Gemini
    thought parts; never mixed into the answer; its tokens are output tokens, as the host counts them."""
    model, provider, upstream, mode = REASONING_HOSTS[field]
    hmocks.fault(provider, mode=mode)
    res = ask(hosts, client, model, "think about this", stream=stream)
    reply = f"[{provider}:{upstream}] think about this"
    thought = "Thinking about: think about this"
    assert res.text == reply  # the reasoning is not mixed into the answer
    assert res.finish == {"anthropic": "end_turn", "gemini": "STOP"}[client]
    # completion_tokens counts the reasoning too, as these hosts do (DeepSeek API "Reasoning Model":
    # reasoning tokens are billed as output): Anthropic's output_tokens include it, Gemini counts
    # thoughts apart (thoughtsTokenCount)
    assert res.output_tokens == words(reply) + (words(thought) if client == "anthropic" else 0)
    assert _thinking(hosts, client, model, stream) == thought


def _thinking(stack: Stack, client: str, model: str, stream: bool) -> str:
    """The reasoning text the client SDK got: Anthropic thinking blocks, Gemini thought parts."""
    text = "think about this"
    if client == "anthropic":
        asdk = ADAPTERS[client](stack).sdk
        msgs: Any = [{"role": "user", "content": text}]
        if stream:
            with asdk.messages.stream(model=model, max_tokens=100, messages=msgs) as s:
                msg = s.get_final_message()
        else:
            msg = asdk.messages.create(model=model, max_tokens=100, messages=msgs)
        assert msg.content[0].type == "thinking"  # the thinking comes first
        return "".join(b.thinking for b in msg.content if b.type == "thinking")
    gsdk = ADAPTERS[client](stack).sdk
    if stream:
        chunks = list(gsdk.models.generate_content_stream(model=model, contents=text))
    else:
        chunks = [gsdk.models.generate_content(model=model, contents=text)]
    return "".join(
        p.text or ""
        for c in chunks
        for cand in c.candidates or ()
        for p in (cand.content.parts if cand.content else None) or ()
        if p.thought
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("field", list(REASONING_HOSTS))
def test_a_hosts_reasoning_reaches_openai_clients_as_sent(
    hosts: Stack, hmocks: MockAdmin, field: str, stream: bool
) -> None:
    """Same wire: an OpenAI client gets the host's reasoning in the host's own field."""
    model, provider, upstream, mode = REASONING_HOSTS[field]
    hmocks.fault(provider, mode=mode)
    sdk = openai.OpenAI(base_url=hosts.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
    msgs: Any = [{"role": "user", "content": "think about this"}]
    if not stream:
        msg = sdk.chat.completions.create(model=model, messages=msgs).choices[0].message
        reasoning, content = (msg.model_extra or {}).get(field), msg.content
    else:
        reasoning, content = "", ""
        for chunk in sdk.chat.completions.create(model=model, messages=msgs, stream=True):
            for choice in chunk.choices:
                reasoning += (choice.delta.model_extra or {}).get(field) or ""
                content += choice.delta.content or ""
    assert reasoning == "Thinking about: think about this"
    assert content == f"[{provider}:{upstream}] think about this"


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


# Mistral's validation errors: the message is an object ({"detail": [...]}) or the list is bare.
VALIDATION = "top_p: Input should be a valid number; store: Extra inputs are not permitted"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("shape", ["validation_error", "validation_detail"])
def test_mistrals_validation_errors_are_readable(
    hosts: Stack, hmocks: MockAdmin, shape: str, client: str
) -> None:
    """Each of the host's validation entries becomes "field: problem" in the client's error,
    with the host's 422 (an OpenAI client gets the host's own body)."""
    hmocks.fault("mistral", mode=shape)
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as e:
        ask(hosts, client, "mistral-large", "hello")
    err: Any = e.value
    if client == "openai":
        assert err.status_code == 422
        detail = err.body["detail"] if shape == "validation_detail" else err.body["message"]["detail"]
        assert [d["loc"] for d in detail] == [["body", "top_p"], ["body", "store"]]
        return
    assert _status_message(client, err) == (422, VALIDATION)
    if client == "anthropic":
        assert err.body["error"]["type"] == "invalid_request_error"
    else:
        assert err.status == "INVALID_ARGUMENT"


# OpenRouter: the HTTP status again as a numeric error.code (docs "Errors").
OPENROUTER_ERRORS = {
    402: ("Insufficient credits. Add more using https://openrouter.ai/credits", "invalid_request_error"),
    429: ("Rate limit exceeded: free-models-per-min.", "rate_limit_error"),
}
GEMINI_STATUS = {402: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED"}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("status", list(OPENROUTER_ERRORS))
@pytest.mark.parametrize("where", ["response", "first_event"])
def test_openrouter_errors_reach_the_client_with_their_status(
    hosts: Stack, hmocks: MockAdmin, where: str, status: int, client: str
) -> None:
    """A numeric error.code, as the response's own status or as a stream's first event (a 200
    that opened with an error, before any token): the client gets that status and the words."""
    text, anthropic_type = OPENROUTER_ERRORS[status]
    mode = "error_code" if where == "response" else "stream_error_first"
    hmocks.fault("openrouter", mode=mode, status=status, message=text)
    try:
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as e:
            ask(hosts, client, "deepseek-r1", "hello", stream=where == "first_event")
    finally:
        if status == 429:  # the gateway cools a rate-limited backend down: let the next test find it back
            hmocks.reset()
            _until_served(hosts, "deepseek-r1")
    err: Any = e.value
    if client == "openai":
        assert err.status_code == status
        assert err.body["message"] == text if "message" in err.body else err.body["error"]["message"] == text
        return
    got_status, message = _status_message(client, err)
    assert got_status == status
    assert message.startswith(text)
    if client == "anthropic":
        assert err.body["error"]["type"] == anthropic_type
    else:
        assert err.status == GEMINI_STATUS[status]


def _until_served(stack: Stack, model: str, within_s: float = 10.0) -> None:
    """Wait until ``model`` answers again (its backend's rate-limit cool-down is over)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            ask(stack, "openai", model, "are you back")
            return
        except openai.RateLimitError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("client", CLIENTS)
def test_openrouter_error_mid_stream_ends_the_clients_stream_with_an_error(
    hosts: Stack, hmocks: MockAdmin, client: str
) -> None:
    """After tokens went out, OpenRouter's error chunk (finish_reason "error") cannot become a
    status: the client gets the text so far, then an error in its dialect, never a stream that
    looks complete."""
    hmocks.fault("openrouter", mode="stream_error_mid", message="Provider disconnected unexpectedly")
    text, failure = _stream_until_error(hosts, client, "deepseek-r1", "tell me a story")
    assert text == "[openrouter:deepseek/deepseek-r1] tell me a story"
    assert "Provider disconnected unexpectedly" in failure


def _stream_until_error(stack: Stack, client: str, model: str, prompt: str) -> tuple[str, str]:
    """The text a client SDK streamed before the stream failed, and the failure's words."""
    sdk = ADAPTERS[client](stack).sdk
    msgs: Any = [{"role": "user", "content": prompt}]
    text = ""
    try:
        if client == "openai":
            for chunk in sdk.chat.completions.create(model=model, messages=msgs, stream=True):
                text += "".join(c.delta.content or "" for c in chunk.choices)
        elif client == "anthropic":
            with sdk.messages.stream(model=model, max_tokens=100, messages=msgs) as s:
                for piece in s.text_stream:
                    text += piece
        else:
            for chunk in sdk.models.generate_content_stream(model=model, contents=prompt):
                text += chunk.text or ""
    except (openai.APIError, anthropic.APIError, genai_errors.APIError) as e:
        return text, str(e)
    raise AssertionError(f"the stream ended without an error: {text!r}")


def test_openrouter_attribution_headers_are_sent(hosts: Stack, hmocks: MockAdmin) -> None:
    """The provider block's headers go with every request to the host."""
    res = ask(hosts, "anthropic", "deepseek-r1", "who is asking")
    assert res.text == "[openrouter:deepseek/deepseek-r1] who is asking"
    sent = {k.lower(): v for k, v in hmocks.stats("openrouter")["last_request"]["headers"].items()}
    assert {k.lower(): v for k, v in OPENROUTER_HEADERS.items()}.items() <= sent.items()


@pytest.mark.parametrize("client", CLIENTS)
def test_together_usage_on_the_last_chunk_with_its_choices(
    hosts: Stack, hmocks: MockAdmin, client: str
) -> None:
    """Together repeats each piece of content as the choice's ``text``, ends with finish_reason
    "eos" and puts the usage on that last chunk: the answer is said once, ends normally, and its
    usage is counted."""
    hmocks.fault("together", mode="usage_with_choices")
    res = ask(hosts, client, "llama-3.3", "count my words", stream=True)
    reply = "[together:meta-llama/Llama-3.3-70B-Instruct-Turbo] count my words"
    assert res.finish == {"openai": "eos", "anthropic": "end_turn", "gemini": "STOP"}[client]
    assert res.text == reply
    assert (res.input_tokens, res.output_tokens) == (3, words(reply))
