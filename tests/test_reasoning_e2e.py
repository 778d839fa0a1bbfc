"""Reasoning through the real stack (Envoy + ext_proc + mocks), with the official SDKs.

For every client dialect against every backend dialect (Claude on Anthropic, Bedrock and
Vertex AI; Gemini on the Gemini API and Vertex AI; GPT on the Responses API; an
OpenAI-compatible Chat Completions host that returns ``reasoning_content``), streamed and not:
reasoning on, the model calls a tool, the client echoes what it was given in its SDK's
ordinary way and sends the tool result, and the conversation continues. The mocks are as
strict as the real APIs (docs/reasoning.md): the Anthropic and Bedrock mocks reject a
tool-result turn whose assistant turn lost its signed thinking block (or reasoningContent), the Gemini mock a function call that lost
its thought signature; so a lost or altered signature fails the test. A forged signature, one
sealed for another tenant, and an effort the backend's config does not take are 4xx in the
client's own dialect.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.supervisor import Stack
from tests.cloud import cloud_providers, with_clouds
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import aws_credentials, bedrock_provider, start_stack

OTHER_KEY = "other-tenant-key"
# backend (the model is think-<backend>) -> the mock provider that serves it
BACKENDS = {
    "claude": "anthropic",
    "bedrock": "bedrock",
    "gemini": "gemini",
    "gpt": "openai_responses",
    "chat": "vllm",  # an OpenAI-compatible host: reasoning_content (the mock's "reasoning" quirk)
    "vertex-claude": "vertex_anthropic",
    "vertex-gemini": "vertex_gemini",
}
CLAUDES = ("claude", "bedrock", "vertex-claude")
GEMINIS = ("gemini", "vertex-gemini")
BEDROCK_CLAUDE = "anthropic.claude-sonnet-4-6"  # Claude on Bedrock (the mock thinks for Claude)
CLIENTS = ("openai", "anthropic", "gemini", "openai_responses")
ASK = "use tool for weather in Paris"
TOOL = "get_weather"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def reasoning_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["models"] = {
        "think-claude": {"backends": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}]},
        "think-gemini": {"backends": [{"provider": "gemini", "model": "gemini-3.5-flash"}]},
        "plain-gpt": {"backends": [{"provider": "openai", "model": "gpt-5.5"}]},
        # A Claude model that takes only some efforts (docs/reasoning.md "Per-backend config").
        "think-picky": {
            "backends": [
                {
                    "provider": "anthropic",
                    "model": "claude-opus-4-6",
                    "reasoning": {"style": "adaptive", "efforts": ["low", "medium", "high"]},
                }
            ]
        },
    }
    cfg["providers"]["openai_responses"] = {
        "dialect": "openai_responses",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "MOCK_OPENAI_RESPONSES_API_KEY",
        "mock": True,
    }
    cfg["models"]["think-gpt"] = {"backends": [{"provider": "openai_responses", "model": "gpt-5-mini"}]}
    cfg["providers"]["bedrock"] = bedrock_provider()
    cfg["models"]["think-bedrock"] = {"backends": [{"provider": "bedrock", "model": BEDROCK_CLAUDE}]}
    cfg["tenants"]["other"] = {"api_keys": [{"env": "OTHER_TENANT_KEY"}]}
    # A vLLM-style host (reasoning_content, no signatures) and Claude / Gemini on Vertex AI.
    cfg["providers"]["vllm"] = {
        "dialect": "openai",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "VLLM_API_KEY",
        "mock": True,
    }
    cfg["models"]["think-chat"] = {"backends": [{"provider": "vllm", "model": "Qwen/Qwen3-8B"}]}
    clouds = cloud_providers()
    for name, upstream in (("vertex_anthropic", "claude-sonnet-4-6"), ("vertex_gemini", "gemini-3.5-flash")):
        cfg["providers"][name] = clouds[name]
        cfg["models"]["think-" + name.replace("_anthropic", "-claude").replace("_gemini", "-gemini")] = {
            "backends": [{"provider": name, "model": upstream}]
        }
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    os.environ["OTHER_TENANT_KEY"] = OTHER_KEY
    tmp = tmp_path_factory.mktemp("reasoning")
    cfg, env = with_clouds(reasoning_config(), tmp)
    with aws_credentials(tmp):
        s = start_stack(tmp, cfg, {"OTHER_TENANT_KEY": OTHER_KEY, **env})
    yield s
    s.stop()


@pytest.fixture
def mocks(stack: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(stack) as admin:
        admin.fault("vllm", mode="reasoning")  # the host returns its reasoning as reasoning_content
        yield admin


# ---- one client per dialect: ask, echo, answer -------------------------------------------


class OpenAIChat:
    """Chat Completions: the assistant message is echoed as the SDK gives it, minus the
    non-standard ``reasoning_content`` (what a strict client keeps: content and tool calls)."""

    def __init__(self, stack: Stack, key: str = DEMO_KEY) -> None:
        self.sdk = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=30)
        self.tools = [{"type": "function", "function": {"name": TOOL, "parameters": SCHEMA}}]

    def first(self, model: str, stream: bool) -> tuple[list[Any], str, str]:
        msgs: list[Any] = [{"role": "user", "content": ASK}]
        kw: dict[str, Any] = {
            "model": model,
            "messages": msgs,
            "tools": self.tools,
            "reasoning_effort": "low",
        }
        if not stream:
            r = self.sdk.chat.completions.create(**kw)
            m = r.choices[0].message
            assert m.tool_calls, m
            calls = [tc.model_dump() for tc in m.tool_calls]
            reasoning = (m.model_extra or {}).get("reasoning_content") or ""
        else:
            acc: dict[int, dict[str, Any]] = {}
            reasoning = ""
            for chunk in self.sdk.chat.completions.create(**kw, stream=True):
                for ch in chunk.choices:
                    reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
                    for tc in ch.delta.tool_calls or []:
                        slot = acc.setdefault(
                            tc.index,
                            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                        )
                        slot["id"] += tc.id or ""
                        if tc.function is not None:
                            slot["function"]["name"] += tc.function.name or ""
                            slot["function"]["arguments"] += tc.function.arguments or ""
            calls = [acc[i] for i in sorted(acc)]
        msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
        msgs.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"})
        return msgs, calls[0]["id"], reasoning

    def follow(self, model: str, msgs: list[Any], stream: bool) -> str:
        kw = {"model": model, "messages": msgs, "tools": self.tools, "reasoning_effort": "low"}
        if not stream:
            return self.sdk.chat.completions.create(**kw).choices[0].message.content or ""
        return "".join(
            ch.delta.content or ""
            for chunk in self.sdk.chat.completions.create(**kw, stream=True)
            for ch in chunk.choices
        )


class AnthropicMessages:
    """Messages: the answer's content blocks are echoed whole (thinking blocks included)."""

    def __init__(self, stack: Stack, key: str = DEMO_KEY) -> None:
        self.sdk = anthropic.Anthropic(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)
        self.tools = [{"name": TOOL, "input_schema": SCHEMA}]
        self.thinking: dict[str, Any] = {"type": "enabled", "budget_tokens": 2048}
        self.output_config: dict[str, Any] | None = None

    def _call(self, model: str, msgs: list[Any], stream: bool) -> Any:
        kw: dict[str, Any] = {
            "model": model,
            "max_tokens": 4096,
            "messages": msgs,
            "tools": self.tools,
            "thinking": self.thinking,
        }
        if self.output_config is not None:
            kw["output_config"] = self.output_config
        if not stream:
            return self.sdk.messages.create(**kw)
        with self.sdk.messages.stream(**kw) as s:
            return s.get_final_message()

    def first(self, model: str, stream: bool) -> tuple[list[Any], str, str]:
        msgs: list[Any] = [{"role": "user", "content": ASK}]
        r = self._call(model, msgs, stream)
        use = [b for b in r.content if b.type == "tool_use"]
        assert use, r
        reasoning = "".join(b.thinking for b in r.content if b.type == "thinking")
        msgs.append({"role": "assistant", "content": r.content})
        msgs.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use[0].id, "content": "sunny"}],
            }
        )
        return msgs, use[0].id, reasoning

    def follow(self, model: str, msgs: list[Any], stream: bool) -> str:
        r = self._call(model, msgs, stream)
        return "".join(b.text for b in r.content if b.type == "text")


class Gemini:
    """generateContent: the model's content is echoed as the SDK gives it (thought signatures,
    bytes, included); a stream's parts are gathered into one content."""

    def __init__(self, stack: Stack, key: str = DEMO_KEY) -> None:
        self.sdk = genai.Client(
            api_key=key,
            http_options=gt.HttpOptions(
                base_url=stack.base_url, timeout=30_000, retry_options=gt.HttpRetryOptions(attempts=1)
            ),
        )
        self.config = gt.GenerateContentConfig(
            tools=[
                gt.Tool(
                    function_declarations=[gt.FunctionDeclaration(name=TOOL, parameters_json_schema=SCHEMA)]
                )
            ],
            thinking_config=gt.ThinkingConfig(thinking_budget=2048, include_thoughts=True),
            automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True),
        )

    def _call(self, model: str, contents: list[Any], stream: bool) -> gt.Content:
        if not stream:
            r = self.sdk.models.generate_content(model=model, contents=contents, config=self.config)
            assert r.candidates and r.candidates[0].content
            return r.candidates[0].content
        parts: list[gt.Part] = []
        for chunk in self.sdk.models.generate_content_stream(
            model=model, contents=contents, config=self.config
        ):
            if chunk.candidates and chunk.candidates[0].content:
                parts += chunk.candidates[0].content.parts or []
        return gt.Content(role="model", parts=parts)

    def first(self, model: str, stream: bool) -> tuple[list[Any], str, str]:
        contents: list[Any] = [gt.Content(role="user", parts=[gt.Part(text=ASK)])]
        turn = self._call(model, contents, stream)
        call = next(p.function_call for p in turn.parts or [] if p.function_call)
        reasoning = "".join(p.text or "" for p in turn.parts or [] if p.thought)
        contents.append(turn)
        contents.append(
            gt.Content(
                role="user",
                parts=[
                    gt.Part(
                        function_response=gt.FunctionResponse(
                            id=call.id, name=call.name, response={"result": "sunny"}
                        )
                    )
                ],
            )
        )
        return contents, call.id or "", reasoning

    def follow(self, model: str, contents: list[Any], stream: bool) -> str:
        turn = self._call(model, contents, stream)
        return "".join(p.text or "" for p in turn.parts or [] if not p.thought)


class Responses:
    """Responses: the answer's output items are echoed whole (reasoning items included)."""

    def __init__(self, stack: Stack, key: str = DEMO_KEY) -> None:
        self.sdk = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=30)
        self.tools = [{"type": "function", "name": TOOL, "parameters": SCHEMA, "strict": False}]

    def _call(self, model: str, items: list[Any], stream: bool) -> Any:
        kw: dict[str, Any] = {
            "model": model,
            "input": items,
            "tools": self.tools,
            "reasoning": {"effort": "low", "summary": "auto"},
            # stateless, as the API asks: the reasoning comes back encrypted with the answer
            "store": False,
            "include": ["reasoning.encrypted_content"],
        }
        if not stream:
            return self.sdk.responses.create(**kw)
        with self.sdk.responses.stream(**kw) as s:
            return s.get_final_response()

    def first(self, model: str, stream: bool) -> tuple[list[Any], str, str]:
        items: list[Any] = [{"role": "user", "content": ASK}]
        r = self._call(model, items, stream)
        calls = [o for o in r.output if o.type == "function_call"]
        assert calls, r
        reasoning = "".join(s.text for o in r.output if o.type == "reasoning" for s in o.summary)
        items += [o.model_dump(exclude_none=True) for o in r.output]
        items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"})
        return items, calls[0].call_id, reasoning

    def follow(self, model: str, items: list[Any], stream: bool) -> str:
        return self._call(model, items, stream).output_text


CLIENT_TYPES = {
    "openai": OpenAIChat,
    "anthropic": AnthropicMessages,
    "gemini": Gemini,
    "openai_responses": Responses,
}


# ---- the conversation -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("client", CLIENTS)
def test_tool_conversation_with_reasoning_continues(
    stack: Stack, mocks: MockAdmin, client: str, backend: str, stream: bool
) -> None:
    c = CLIENT_TYPES[client](stack)
    model = f"think-{backend}"
    history, call_id, reasoning = c.first(model, stream)
    assert call_id
    if not (backend in ("gemini", "vertex-gemini", "gpt") and client == "openai"):
        # The model's reasoning text reaches the client in its own dialect's field (Gemini and
        # GPT show it only when thoughts or a summary are asked for, which a Chat Completions
        # client cannot ask).
        assert reasoning, "no reasoning text reached the client"
    answer = c.follow(model, history, stream)
    assert "tool result: sunny" in answer
    check_continued(mocks, backend, "enabled")


def check_continued(mocks: MockAdmin, backend: str, mode: str) -> None:
    """The backend got the signature back (its mock checked it) and the thinking settings
    (``mode``: Claude's thinking type)."""
    last = mocks.stats(BACKENDS[backend])["last_request"]["body"]
    if backend in ("claude", "vertex-claude"):
        assert last["thinking"]["type"] == mode
        assistant = [m for m in last["messages"] if m["role"] == "assistant"][-1]
        assert assistant["content"][0]["type"] == "thinking" and assistant["content"][0]["signature"]
        assert "gwr1" not in str(last)
    elif backend == "bedrock":
        assert last["additionalModelRequestFields"]["thinking"]["type"] == mode
        assistant = [m for m in last["messages"] if m["role"] == "assistant"][-1]
        # the mock's own signature came back (the gateway unsealed the client's token)
        assert assistant["content"][0]["reasoningContent"]["reasoningText"]["signature"]
    elif backend == "gpt":
        assert last["reasoning"]["effort"] and last["include"] == ["reasoning.encrypted_content"]
        replayed = [i for i in last["input"] if i.get("type") == "reasoning"]
        assert replayed and replayed[0]["encrypted_content"].startswith("gAAAAA")  # the provider's own
    elif backend == "chat":
        # The host's reasoning is unsigned: nothing of it goes back (compatible servers take no
        # reasoning in the history), the call id is the host's own, no gateway token leaks.
        assert last["reasoning_effort"] not in (None, "none")
        assistant = [m for m in last["messages"] if m["role"] == "assistant"][-1]
        assert "reasoning_content" not in assistant and "gwr1" not in str(last)
        assert assistant["tool_calls"][0]["id"].startswith("call_")
    else:
        assert "thinkingConfig" in last["generationConfig"]
        model_turn = [c for c in last["contents"] if c.get("role") == "model"][-1]
        assert any("functionCall" in p and p.get("thoughtSignature") for p in model_turn["parts"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("effort", [None, "max"], ids=["default", "max"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_adaptive_thinking_from_the_anthropic_sdk_continues(
    stack: Stack, mocks: MockAdmin, backend: str, effort: str | None, stream: bool
) -> None:
    """A coding agent's default: ``thinking: {type: adaptive}`` (and ``output_config.effort``),
    a tool loop on every backend. The effort reaches each in its own terms (max: the highest it
    takes), and a Responses backend is asked for the encrypted reasoning it needs back."""
    c = AnthropicMessages(stack)
    c.thinking = {"type": "adaptive"}
    if effort is not None:
        c.output_config = {"effort": effort}
    model = f"think-{backend}"
    history, call_id, reasoning = c.first(model, stream)
    assert call_id and reasoning, "no thinking block reached the client"
    first = mocks.stats(BACKENDS[backend])["last_request"]["body"]
    assert "tool result: sunny" in c.follow(model, history, stream)
    check_continued(mocks, backend, "adaptive")
    # What the first request asked of the backend.
    if backend in ("claude", "vertex-claude"):
        assert first["thinking"] == {"type": "adaptive"}
        assert first.get("output_config") == ({"effort": effort} if effort else None)
    elif backend == "bedrock":
        extra = first["additionalModelRequestFields"]
        assert extra["thinking"] == {"type": "adaptive"}
        assert extra.get("output_config") == ({"effort": effort} if effort else None)
    elif backend in GEMINIS:
        tc = first["generationConfig"]["thinkingConfig"]
        assert tc == (
            {"thinkingLevel": "high", "includeThoughts": True}
            if effort
            else {"thinkingBudget": -1, "includeThoughts": True}
        )
    elif backend == "gpt":
        assert first["reasoning"] == {"effort": "xhigh" if effort else "medium", "summary": "auto"}
        assert first["include"] == ["reasoning.encrypted_content"]
    else:
        assert first["reasoning_effort"] == ("xhigh" if effort else "medium")


# ---- forged, foreign and refused ----------------------------------------------------------------


def _sealed_call_id(stack: Stack) -> str:
    _, call_id, _ = OpenAIChat(stack).first("think-gemini", False)
    assert call_id.startswith("gwr1")
    return call_id


def test_a_forged_signature_is_a_400_in_each_dialect(stack: Stack, mocks: MockAdmin) -> None:
    good = _sealed_call_id(stack)
    forged = good[:-5] + ("AAAAA" if not good.endswith("AAAAA") else "BBBBB")
    chat = OpenAIChat(stack)
    msgs = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": forged, "type": "function", "function": {"name": TOOL, "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": forged, "content": "sunny"},
    ]
    with pytest.raises(openai.BadRequestError) as oe:
        chat.follow("think-gemini", msgs, False)
    assert "did not issue" in oe.value.message
    # Named where the client put it (before, the IR's messages[1].content[0].id).
    assert oe.value.body["param"] == "messages[1].tool_calls[0].id"  # type: ignore[index]

    ant = AnthropicMessages(stack)
    amsgs: list[Any] = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "gwr1" + "A" * 40},
                {"type": "tool_use", "id": "toolu_1", "name": TOOL, "input": {}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]},
    ]
    with pytest.raises(anthropic.BadRequestError) as ae:
        ant.follow("think-gemini", amsgs, False)
    assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "did not issue" in ae.value.body["error"]["message"]  # type: ignore[index]

    gem = Gemini(stack)
    contents = [
        gt.Content(role="user", parts=[gt.Part(text=ASK)]),
        gt.Content(
            role="model", parts=[gt.Part(function_call=gt.FunctionCall(id=forged, name=TOOL, args={}))]
        ),
        gt.Content(
            role="user",
            parts=[
                gt.Part(function_response=gt.FunctionResponse(id=forged, name=TOOL, response={"result": "x"}))
            ],
        ),
    ]
    with pytest.raises(genai_errors.ClientError) as ge:
        gem.follow("think-claude", contents, False)
    assert ge.value.code == 400 and "did not issue" in str(ge.value)
    assert "contents[1].parts[0].functionCall.id" in str(ge.value)

    resp = Responses(stack)
    items = [
        {"role": "user", "content": ASK},
        {"type": "function_call", "call_id": forged, "name": TOOL, "arguments": "{}"},
        {"type": "function_call_output", "call_id": forged, "output": "x"},
    ]
    with pytest.raises(openai.BadRequestError) as re_:
        resp.follow("think-claude", items, False)
    assert "did not issue" in re_.value.message
    assert re_.value.body["param"] == "input[1].call_id"  # type: ignore[index]


def test_another_tenants_signature_is_refused(stack: Stack, mocks: MockAdmin) -> None:
    """A token is sealed with a key of the tenant it was issued to: another tenant echoing it
    (a leaked or copied conversation) gets a 400, and nothing of it reaches a provider."""
    msgs, theirs, _ = OpenAIChat(stack).first("think-gemini", False)
    assert theirs.startswith("gwr1")
    other = OpenAIChat(stack, OTHER_KEY)
    before = mocks.stats("gemini")["requests"]
    with pytest.raises(openai.BadRequestError):
        other.follow("think-gemini", msgs, False)
    assert mocks.stats("gemini")["requests"] == before
    assert "tool result: sunny" in OpenAIChat(stack).follow("think-gemini", msgs, False)


def test_sealed_signatures_never_reach_a_provider_even_in_the_clients_dialect(
    stack: Stack, mocks: MockAdmin
) -> None:
    """A conversation begun on Gemini continues on an OpenAI backend (the client's own dialect,
    otherwise passed through): the sealed ids are unsealed first, the provider sees its peers'
    plain call ids and nothing of the gateway's tokens."""
    msgs, call_id, _ = OpenAIChat(stack).first("think-gemini", False)
    assert call_id.startswith("gwr1")
    answer = OpenAIChat(stack).follow("plain-gpt", msgs, False)
    assert "tool result: sunny" in answer
    sent = mocks.stats("openai")["last_request"]["body"]
    assert "gwr1" not in str(sent)
    assert sent["messages"][1]["tool_calls"][0]["id"] == sent["messages"][2]["tool_call_id"] != call_id


def test_an_effort_the_backend_does_not_take_is_a_400_naming_the_clients_field(
    stack: Stack, mocks: MockAdmin
) -> None:
    chat = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as e:
        chat.chat.completions.create(
            model="think-picky", messages=[{"role": "user", "content": "hi"}], reasoning_effort="xhigh"
        )
    assert e.value.body["param"] == "reasoning_effort"  # type: ignore[index]
    assert "xhigh" in e.value.message
    # An accepted effort goes to the backend as adaptive thinking with that effort.
    chat.chat.completions.create(
        model="think-picky", messages=[{"role": "user", "content": "hi"}], reasoning_effort="high"
    )
    last = mocks.stats("anthropic")["last_request"]["body"]
    assert last["thinking"] == {"type": "adaptive"} and last["output_config"] == {"effort": "high"}
    gem = Gemini(stack)
    gem.config.thinking_config = gt.ThinkingConfig(thinking_level=gt.ThinkingLevel.MINIMAL)
    with pytest.raises(genai_errors.ClientError) as ge:
        gem.follow("think-picky", [gt.Content(role="user", parts=[gt.Part(text="hi")])], False)
    assert ge.value.code == 400 and "generationConfig.thinkingConfig.thinkingLevel" in str(ge.value)


def test_reasoning_tokens_are_reported_in_each_dialect(stack: Stack, mocks: MockAdmin) -> None:
    """Gemini counts thoughts apart (thoughtsTokenCount): an OpenAI client sees them as
    completion_tokens_details.reasoning_tokens, a Responses client as output_tokens_details."""
    chat = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=30)
    r = chat.chat.completions.create(
        model="think-gemini", messages=[{"role": "user", "content": "hello there"}], reasoning_effort="low"
    )
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    assert (r.usage.completion_tokens_details.reasoning_tokens or 0) > 0
    assert r.usage.completion_tokens > r.usage.completion_tokens_details.reasoning_tokens  # type: ignore[operator]
    rr = chat.responses.create(
        model="think-gemini", input="hello there", reasoning={"effort": "low"}, store=False
    )
    assert rr.usage is not None and rr.usage.output_tokens_details.reasoning_tokens > 0
    # and in the metrics, as their own kind of token
    seen = 0.0
    for port in stack.config.metrics_ports():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as m:
            for line in m.read().decode().splitlines():
                ours = 'kind="reasoning"' in line and 'model="think-gemini"' in line
                if line.startswith("llm_gateway_tokens_total{") and ours:
                    seen += float(line.rsplit(" ", 1)[1])
    assert seen >= 2 * r.usage.completion_tokens_details.reasoning_tokens  # type: ignore[union-attr]


# ---- Claude on Bedrock ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_client_gets_bedrock_claudes_reasoning_and_usage(
    stack: Stack, mocks: MockAdmin, stream: bool
) -> None:
    """Chat Completions with ``reasoning_effort`` on Claude on Bedrock: the thinking budget goes
    out as ``additionalModelRequestFields.thinking``, the mock's signed ``reasoningContent``
    comes back as ``reasoning_content``, and the usage counts the thinking as Bedrock does (in
    its output tokens)."""
    chat = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=30)
    kw: dict[str, Any] = {
        "model": "think-bedrock",
        "messages": [{"role": "user", "content": "hello there"}],
        "reasoning_effort": "low",
    }
    if not stream:
        r = chat.chat.completions.create(**kw)
        reasoning = (r.choices[0].message.model_extra or {}).get("reasoning_content") or ""
        content, usage = r.choices[0].message.content or "", r.usage
    else:
        reasoning, content, usage = "", "", None
        for chunk in chat.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
            for ch in chunk.choices:
                reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
                content += ch.delta.content or ""
            usage = chunk.usage or usage
    assert reasoning == "Thinking about: hello there"
    assert content == f"[bedrock:{BEDROCK_CLAUDE}] hello there"
    last = mocks.stats("bedrock")["last_request"]["body"]
    assert last["additionalModelRequestFields"]["thinking"]["type"] == "enabled"
    assert (
        last["inferenceConfig"]["maxTokens"]
        > last["additionalModelRequestFields"]["thinking"]["budget_tokens"]
    )
    # outputTokens: the answer's words and the thought's
    assert usage is not None and usage.completion_tokens == len(content.split()) + len(reasoning.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_clients_sealed_bedrock_signature_round_trips_and_a_tampered_one_is_a_400(
    stack: Stack, mocks: MockAdmin, stream: bool
) -> None:
    """An Anthropic client on Claude on Bedrock gets the thinking block with a signature the
    gateway sealed; echoed in the tool-result turn it reaches the mock as the mock's own
    signature (the mock checks it); altered, it is a 400 in the Anthropic dialect and the mock
    never sees the turn."""
    from gateway_tools.mocks.anthropic_messages import _sign

    ant = AnthropicMessages(stack)
    history, _, reasoning = ant.first("think-bedrock", stream)
    assert reasoning == f"Thinking about: {ASK}"
    thinking = next(b for b in history[1]["content"] if b.type == "thinking")
    assert thinking.signature.startswith("gwr1") and thinking.signature != _sign(reasoning)
    assert "tool result: sunny" in ant.follow("think-bedrock", history, stream)
    sent = mocks.stats("bedrock")["last_request"]["body"]
    echoed = sent["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]
    assert echoed == {"text": reasoning, "signature": _sign(reasoning)}

    before = mocks.stats("bedrock")["requests"]
    sig = thinking.signature
    tampered = sig[:-5] + ("AAAAA" if not sig.endswith("AAAAA") else "BBBBB")
    forged = [
        history[0],
        {
            "role": "assistant",
            "content": [
                b.model_dump() if b.type != "thinking" else {**b.model_dump(), "signature": tampered}
                for b in history[1]["content"]
            ],
        },
        history[2],
    ]
    with pytest.raises(anthropic.BadRequestError) as e:
        ant.follow("think-bedrock", forged, stream)
    assert e.value.status_code == 400
    assert e.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "did not issue" in e.value.body["error"]["message"]  # type: ignore[index]
    assert mocks.stats("bedrock")["requests"] == before


@pytest.mark.parametrize("backend", ["bedrock", "claude", "vertex-claude", "gemini", "gpt", "chat"])
def test_an_effort_without_thinking_under_a_small_max_tokens_is_answered(
    stack: Stack, mocks: MockAdmin, backend: str
) -> None:
    """``output_config.effort: low`` without ``thinking`` and ``max_tokens: 1000`` (a coding
    agent's quick side call): every backend answers. On a budget backend the effort's budget
    (2048) cannot fit below the limit, so the request goes without thinking rather than a 400
    ("'max_tokens' must be more than 1024 for the model to think") no other target gives."""
    sdk = anthropic.Anthropic(base_url=stack.base_url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    r = sdk.messages.create(
        model=f"think-{backend}",
        max_tokens=1000,
        messages=[{"role": "user", "content": "hello there"}],
        output_config={"effort": "low"},
    )
    assert r.stop_reason == "end_turn" and "hello there" in "".join(
        b.text for b in r.content if b.type == "text"
    )
    last = mocks.stats(BACKENDS[backend])["last_request"]["body"]
    if backend == "bedrock":
        assert "thinking" not in last.get("additionalModelRequestFields", {})
        assert last["inferenceConfig"]["maxTokens"] == 1000
    elif backend in ("claude", "vertex-claude"):  # the client's own dialect: as it asked
        assert last["output_config"] == {"effort": "low"} and "thinking" not in last
    elif backend == "gemini":
        assert last["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "low"}
    elif backend == "gpt":
        assert last["reasoning"]["effort"] == "low"
    else:
        assert last["reasoning_effort"] == "low"
