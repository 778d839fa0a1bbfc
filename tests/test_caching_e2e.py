"""Prompt caching through the real stack (Envoy, ext_proc, strict mocks) with the official SDKs
(docs/caching.md): a model's ``auto_cache`` gives OpenAI and Gemini clients cache reads on an
Anthropic backend from their second turn on (none without it); an Anthropic client's
``cache_control`` reaches Anthropic as is and Bedrock as ``cachePoint`` blocks; every client
dialect sees its cache reads on the second turn, plain and streamed; ``prompt_cache_key`` reaches
a Responses backend; a Gemini ``cachedContent`` is refused towards other backends; cost and
metrics count reads and writes at their own prices. The mocks cache prompts of 1024+ words."""

from __future__ import annotations

import urllib.request
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
from tests.stack import aws_credentials, bedrock_provider, config_on_free_ports, start_stack

BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PRICE = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}
# Every backend dialect, each model with auto_cache (which only the explicit-caching ones use).
MATRIX_BACKENDS = {
    "openai": ("openai", "gpt-5.5"),
    "anthropic": ("anthropic", "claude-sonnet-4-6"),
    "gemini": ("gemini", "gemini-3.5-flash"),
    "openai_responses": ("openai_responses", "gpt-5.5"),
    "bedrock": ("bedrock", BEDROCK_MODEL),
}
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])


def claude_model(auto: bool, price: bool = False) -> dict[str, Any]:
    backend: dict[str, Any] = {"provider": "anthropic", "model": "claude-sonnet-4-6"}
    if price:
        backend["price"] = PRICE
    return {"backends": [backend], "auto_cache": auto}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("caching")
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["providers"]["bedrock"] = bedrock_provider()
    cfg["providers"]["openai_responses"] = {
        "dialect": "openai_responses",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "MOCK_OPENAI_RESPONSES_API_KEY",
        "mock": True,
    }
    # One model per test where state (the mocks' caches, metrics) must not leak between tests.
    for name in ("oa", "oa-stream", "gem", "gem-stream", "resp", "resp-stream"):
        cfg["models"][f"claude-auto-{name}"] = claude_model(True)
        cfg["models"][f"claude-plain-{name}"] = claude_model(False)
    cfg["models"]["claude-priced"] = claude_model(True, price=True)
    cfg["models"]["claude-bedrock"] = {"backends": [{"provider": "bedrock", "model": BEDROCK_MODEL}]}
    cfg["models"]["gpt-responses"] = {"backends": [{"provider": "openai_responses", "model": "gpt-5.5"}]}
    for backend, (provider, upstream) in MATRIX_BACKENDS.items():
        cfg["models"][f"matrix-{backend}"] = {
            "backends": [{"provider": provider, "model": upstream}],
            "auto_cache": True,
        }
    with aws_credentials(tmp):
        s = start_stack(tmp, config_on_free_ports(cfg))
    yield s
    s.stop()


@pytest.fixture
def cmocks(stack: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(stack) as admin:
        yield admin


def long_prompt(seed: str, n: int = 1200) -> str:
    """A system prompt long enough for the mocks to cache (1024+ words)."""
    return " ".join(f"{seed}{k}" for k in range(n))


def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)


def claude(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)


def gem(stack: Stack) -> genai.Client:
    return genai.Client(
        api_key=DEMO_KEY, http_options=types.HttpOptions(base_url=stack.base_url, timeout=20_000)
    )


def sent(admin: MockAdmin, provider: str) -> dict[str, Any]:
    return admin.stats(provider)["last_request"]["body"]


# ---- clients that cannot say it: auto_cache ---------------------------------------------------


def openai_turns(stack: Stack, model: str, stream: bool, turns: int = 3) -> list[tuple[int, int]]:
    """(cache reads, cache writes) an OpenAI client sees per turn of one growing conversation."""
    messages: list[Any] = [{"role": "system", "content": long_prompt(f"rule-{model}-{stream}-")}]
    out = []
    for t in range(turns):
        messages.append({"role": "user", "content": f"question number {t}"})
        if stream:
            text, usage = "", None
            for chunk in oai(stack).chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            ):
                text += "".join(c.delta.content or "" for c in chunk.choices)
                usage = chunk.usage or usage
        else:
            res = oai(stack).chat.completions.create(model=model, messages=messages)
            text, usage = res.choices[0].message.content or "", res.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        details = usage.prompt_tokens_details
        out.append((details.cached_tokens or 0, getattr(details, "cache_write_tokens", None) or 0))
        messages.append({"role": "assistant", "content": text})
    return out


@STREAMS
def test_openai_client_on_anthropic_reads_the_cache_from_its_second_turn(
    stack: Stack, cmocks: MockAdmin, stream: bool
) -> None:
    name = "oa-stream" if stream else "oa"
    auto = openai_turns(stack, f"claude-auto-{name}", stream)
    assert auto[0][0] == 0 and auto[0][1] > 1200  # the first turn writes system + question
    assert all(read > 1200 for read, _ in auto[1:]), auto  # later turns read the previous prompt
    assert all(write > 0 for _, write in auto[1:]), auto  # and write their own end
    body = sent(cmocks, "anthropic")
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    plain = openai_turns(stack, f"claude-plain-{name}", stream)
    assert plain == [(0, 0)] * 3
    assert "cache_control" not in str(sent(cmocks, "anthropic"))


def gemini_turns(stack: Stack, model: str, stream: bool, turns: int = 3) -> list[int]:
    """cachedContentTokenCount a Gemini client sees per turn of one growing conversation."""
    config = types.GenerateContentConfig(system_instruction=long_prompt(f"norm-{model}-{stream}-"))
    contents: list[types.Content] = []
    client = gem(stack)  # kept: a collected client closes its connection pool
    out = []
    for t in range(turns):
        contents.append(types.Content(role="user", parts=[types.Part(text=f"question number {t}")]))
        if stream:
            text, usage = "", None
            for chunk in client.models.generate_content_stream(model=model, contents=contents, config=config):
                text += chunk.text or ""
                usage = chunk.usage_metadata or usage
        else:
            res = client.models.generate_content(model=model, contents=contents, config=config)
            text, usage = res.text or "", res.usage_metadata
        assert usage is not None
        out.append(usage.cached_content_token_count or 0)
        contents.append(types.Content(role="model", parts=[types.Part(text=text)]))
    return out


@STREAMS
def test_gemini_client_on_anthropic_reads_the_cache_from_its_second_turn(
    stack: Stack, cmocks: MockAdmin, stream: bool
) -> None:
    name = "gem-stream" if stream else "gem"
    auto = gemini_turns(stack, f"claude-auto-{name}", stream)
    assert auto[0] == 0 and all(read > 1200 for read in auto[1:]), auto
    assert gemini_turns(stack, f"claude-plain-{name}", stream) == [0, 0, 0]


def responses_turns(stack: Stack, model: str, stream: bool, turns: int = 3) -> list[tuple[int, int]]:
    """(cache reads, cache writes) a Responses client sees per turn of one growing conversation."""
    client = oai(stack)
    items: list[Any] = []
    out = []
    for t in range(turns):
        items.append({"role": "user", "content": f"question number {t}"})
        kwargs: dict[str, Any] = {
            "model": model,
            "instructions": long_prompt(f"law-{model}-{stream}-"),
            "input": items,
            "store": False,
        }
        if stream:
            final = None
            for ev in client.responses.create(**kwargs, stream=True):
                if ev.type == "response.completed":
                    final = ev.response
            assert final is not None
        else:
            final = client.responses.create(**kwargs)
        assert final.usage is not None
        details = final.usage.input_tokens_details
        out.append((details.cached_tokens, getattr(details, "cache_write_tokens", None) or 0))
        items.append({"role": "assistant", "content": final.output_text})
    return out


@STREAMS
def test_responses_client_on_anthropic_reads_the_cache_from_its_second_turn(
    stack: Stack, cmocks: MockAdmin, stream: bool
) -> None:
    name = "resp-stream" if stream else "resp"
    turns = responses_turns(stack, f"claude-auto-{name}", stream)
    assert turns[0][0] == 0 and all(r > 1200 for r, _ in turns[1:]), turns
    assert all(w > 0 for _, w in turns), turns


# ---- clients that say it ----------------------------------------------------------------------


def anthropic_turns(stack: Stack, model: str, stream: bool, turns: int = 2) -> list[tuple[int, int]]:
    """(cache reads, cache writes) an Anthropic client marking its system prompt sees per turn."""
    system: Any = [
        {
            "type": "text",
            "text": long_prompt(f"canon-{model}-{stream}-"),
            "cache_control": {"type": "ephemeral"},
        }
    ]
    out = []
    for t in range(turns):
        messages: Any = [{"role": "user", "content": f"question number {t}"}]
        if stream:
            with claude(stack).messages.stream(
                model=model, max_tokens=100, system=system, messages=messages
            ) as s:
                usage = s.get_final_message().usage
        else:
            usage = (
                claude(stack)
                .messages.create(model=model, max_tokens=100, system=system, messages=messages)
                .usage
            )
        out.append((usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0))
    return out


@STREAMS
def test_anthropic_cache_control_reaches_anthropic(stack: Stack, cmocks: MockAdmin, stream: bool) -> None:
    turns = anthropic_turns(stack, "claude-sonnet-4-6", stream)
    assert turns[0][0] == 0 and turns[0][1] >= 1200
    assert turns[1][0] >= 1200 and turns[1][1] == 0
    assert sent(cmocks, "anthropic")["system"][0]["cache_control"] == {"type": "ephemeral"}


@STREAMS
def test_anthropic_cache_control_reaches_bedrock_as_a_cache_point(
    stack: Stack, cmocks: MockAdmin, stream: bool
) -> None:
    turns = anthropic_turns(stack, "claude-bedrock", stream)
    assert turns[0][0] == 0 and turns[0][1] >= 1200  # Bedrock's cacheWriteInputTokens
    assert turns[1][0] >= 1200 and turns[1][1] == 0  # and cacheReadInputTokens
    system = sent(cmocks, "bedrock")["system"]
    assert system[-1] == {"cachePoint": {"type": "default"}} and "text" in system[0]


def test_cache_control_towards_a_backend_without_breakpoints_is_dropped(
    stack: Stack, cmocks: MockAdmin
) -> None:
    """gpt-5.5 on OpenAI caches on its own: the Anthropic client's marks go, the answer comes,
    and the second turn's automatic cache read shows in the Anthropic usage."""
    turns = anthropic_turns(stack, "gpt-5.5", stream=False)
    assert turns[0][0] == 0 and turns[1][0] >= 1024
    assert "cache_control" not in str(sent(cmocks, "openai"))


@STREAMS
def test_openai_and_gemini_clients_see_their_providers_cache_reads(
    stack: Stack, cmocks: MockAdmin, stream: bool
) -> None:
    """Same wire, automatic caching: the second turn's reads reach the client (OpenAI in steps
    of 128, Gemini implicit caching)."""
    reads = [r for r, _ in openai_turns(stack, "gpt-5.5", stream, turns=2)]
    assert reads[0] == 0 and reads[1] >= 1024 and reads[1] % 128 == 0
    greads = gemini_turns(stack, "gemini-3.5-flash", stream, turns=2)
    assert greads[0] == 0 and greads[1] >= 1024


def test_prompt_cache_key_reaches_a_responses_backend(stack: Stack, cmocks: MockAdmin) -> None:
    oai(stack).chat.completions.create(
        model="gpt-responses", messages=[{"role": "user", "content": "hi"}], prompt_cache_key="tenant-7-agent"
    )
    assert sent(cmocks, "openai_responses")["prompt_cache_key"] == "tenant-7-agent"
    oai(stack).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], prompt_cache_key="k"
    )
    assert "prompt_cache_key" not in sent(cmocks, "anthropic")  # a hint only OpenAI reads


def test_gemini_cached_content_reaches_gemini_and_is_refused_elsewhere(
    stack: Stack, cmocks: MockAdmin
) -> None:
    client = gem(stack)
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(
            model="claude-bedrock",
            contents="hi",
            config=types.GenerateContentConfig(cached_content="cachedContents/abc123"),
        )
    assert e.value.code == 400
    assert "cachedContent" in (e.value.message or "")
    assert "provider state" in (e.value.message or "")
    assert cmocks.stats("bedrock")["requests"] == 0
    client.models.generate_content(  # its own provider's state: Gemini gets it as sent
        model="gemini-3.5-flash",
        contents="hi",
        config=types.GenerateContentConfig(cached_content="cachedContents/abc123"),
    )
    assert sent(cmocks, "gemini")["cachedContent"] == "cachedContents/abc123"


# ---- cost and metrics -------------------------------------------------------------------------


def scrape(stack: Stack, metric: str, **labels: str) -> float:
    """Sum of ``metric`` over every ext_proc process for series with these labels."""
    total = 0.0
    for port in stack.config.metrics_ports():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(metric + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_cost_and_metrics_count_cache_reads_and_writes(stack: Stack, cmocks: MockAdmin) -> None:
    messages: list[Any] = [{"role": "system", "content": long_prompt("cost")}]
    expected_cost = 0.0
    reads = writes = 0
    for t in range(2):
        messages.append({"role": "user", "content": f"question number {t}"})
        res = oai(stack).chat.completions.create(model="claude-priced", messages=messages)
        u = res.usage
        assert u is not None and u.prompt_tokens_details is not None
        read = u.prompt_tokens_details.cached_tokens or 0
        write = getattr(u.prompt_tokens_details, "cache_write_tokens", None) or 0
        fresh = u.prompt_tokens - read - write
        expected_cost += (
            fresh * PRICE["input"]
            + read * PRICE["cached_input"]
            + write * PRICE["cache_write"]
            + u.completion_tokens * PRICE["output"]
        ) / 1e6
        reads, writes = reads + read, writes + write
        messages.append({"role": "assistant", "content": res.choices[0].message.content})
    assert reads > 1200 and writes > 1200
    labels = {"model": "claude-priced"}
    assert scrape(stack, "llm_gateway_tokens_total", kind="cache_read", **labels) == reads
    assert scrape(stack, "llm_gateway_tokens_total", kind="cache_write", **labels) == writes
    assert scrape(stack, "llm_gateway_cost_usd_total", **labels) == pytest.approx(expected_cost, rel=1e-6)


# ---- every client against every backend ---------------------------------------------------------


@pytest.mark.parametrize("backend", list(MATRIX_BACKENDS))
@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini", "openai_responses"])
@STREAMS
def test_second_turn_reports_cache_reads_in_every_client_dialect(
    stack: Stack, cmocks: MockAdmin, client: str, backend: str, stream: bool
) -> None:
    """A two-turn conversation with a 1200-word system prompt: no read on the first turn, a read
    of the prefix on the second, in the client's own usage fields (OpenAI
    ``prompt_tokens_details.cached_tokens``, Anthropic ``cache_read_input_tokens``, Gemini
    ``cachedContentTokenCount``, Responses ``input_tokens_details.cached_tokens``), whether the
    backend caches automatically or by breakpoints (the Anthropic client marks its system
    prompt; for the others the model's auto_cache does)."""
    model = f"matrix-{backend}"
    if client == "openai":
        reads = [r for r, _ in openai_turns(stack, model, stream, turns=2)]
    elif client == "anthropic":
        reads = [r for r, _ in anthropic_turns(stack, model, stream)]
    elif client == "gemini":
        reads = gemini_turns(stack, model, stream, turns=2)
    else:
        reads = [r for r, _ in responses_turns(stack, model, stream, turns=2)]
    assert reads[0] == 0 and reads[1] >= 1024, reads
