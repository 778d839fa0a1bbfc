"""Issue 3's conformance matrix: every client dialect against every backend dialect.

The official SDKs (openai, for Chat Completions and for the Responses API,
anthropic, google-genai) talk to the real stack (Envoy + ext_proc + mock
providers: the default config plus a Responses-only provider, and Bedrock). "Client X x
backend Y" is SDK X calling the model whose primary backend speaks dialect Y. Each cell of
``test_matrix`` asserts, in the client's own terms: the content, the
finish/stop reason, the usage (the mocks count words), the echoed model name,
the ``x-gateway-backend`` header, and on the backend side (the mock's
``last_request``) that the request arrived in the backend's format.

The README's "Conformance matrix" table is generated from the parametrize
ids below (``matrix_markdown``) and ``test_readme_matrix_is_generated``
keeps the two equal; ``python -m tests.test_translation_matrix`` prints it.

Bedrock is a backend only (no client speaks it): this module runs the default
stack plus a mock Bedrock provider and a model on it. Converse takes images as
bytes only, so that model drops the clients' URL image (``drop_unsupported``);
without it the URL is refused with a 400 (``test_bedrock_e2e``).

The "reasoning" and "cached" cells reuse the per-dialect conversations of
``tests/test_reasoning_e2e.py`` and ``tests/test_caching_e2e.py`` (the ways each SDK's users echo
an assistant turn, or repeat a long prefix); the Claude models set ``auto_cache`` so that clients
which cannot mark breakpoints get cache reads there too.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import BaseModel

from ext_proc.config import DEFAULT_CONFIG
from ext_proc.routing.health import BASE_COOLDOWN
from gateway_tools.supervisor import Stack
from tests.cloud import CLOUD_BACKENDS, cloud_config
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import aws_credentials, bedrock_provider, config_on_free_ports, start_stack
from tests.test_caching_e2e import anthropic_turns, gemini_turns, openai_turns, responses_turns
from tests.test_reasoning_e2e import CLIENT_TYPES as REASONING_CLIENTS

CLIENTS = ("openai", "anthropic", "gemini", "openai_responses")
# backend dialect -> (client-facing model, upstream model) of the model whose primary it is
BACKENDS = {
    "openai": ("gpt-5.5", "gpt-5.5"),
    "anthropic": ("claude-sonnet-4-6", "claude-sonnet-4-6"),
    "gemini": ("gemini-3.5-flash", "gemini-3.5-flash"),
    "openai_responses": ("gpt-5.5-responses", "gpt-5.5"),
    "bedrock": ("bedrock-claude", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
}
CELLS = (
    "plain",
    "streamed",
    "tools",
    "streamed_tools",
    "images",
    "system",
    "structured",
    "pdf",
    "reasoning",
    "cached",
)
PAIRS = [(c, b) for c in CLIENTS for b in BACKENDS]
PAIR_IDS = [f"{c}-{b}" for c, b in PAIRS]
# Cloud backends (tests/cloud.py, a stack of their own): each speaks the wire format of a dialect above.
ALL_BACKENDS = {**BACKENDS, **CLOUD_BACKENDS}
WIRE = {
    **{b: b for b in BACKENDS},
    "vertex_gemini": "gemini",
    "vertex_anthropic": "anthropic",
    "azure_openai": "openai",
}
CLOUD_PAIRS = [(c, b) for c in CLIENTS for b in CLOUD_BACKENDS]
CLOUD_PAIR_IDS = [f"{c}-{b}" for c, b in CLOUD_PAIRS]

# canonical outcome -> the finish/stop reason each client dialect reports for it
FINISH = {
    "openai": {"end": "stop", "tool": "tool_calls", "length": "length", "stop_sequence": "stop"},
    "anthropic": {
        "end": "end_turn",
        "tool": "tool_use",
        "length": "max_tokens",
        "stop_sequence": "stop_sequence",
    },
    "gemini": {"end": "STOP", "tool": "STOP", "length": "MAX_TOKENS", "stop_sequence": "STOP"},
    # A response's status; a cut one also says why (incomplete_details.reason).
    "openai_responses": {
        "end": "completed",
        "tool": "completed",
        "length": "incomplete:max_output_tokens",
        "stop_sequence": "completed",
    },
}
# The Responses API has no stop sequences, and asks for at least 16 output tokens.
NO_STOP = "openai_responses"
MIN_OUTPUT = {"openai_responses": 16}

TOOL = "lookup"
TOOL_SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
OTHER_TOOL = "convert"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
PNG_B64 = base64.b64encode(PNG).decode()
IMAGE_URL = "https://example.com/images/cat.png"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PDF_B64 = base64.b64encode(PDF).decode()
# A schema every provider's structured output takes as is (strict-mode rules: closed, all required).
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "words": {"type": "integer"}},
    "required": ["answer", "words"],
    "additionalProperties": False,
}
TOOL_RESULT = "42 degrees"

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def words(text: str) -> int:
    return len(text.split())


def matrix_config(base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default config plus a mock Bedrock provider, a Responses-only provider and the model
    each is primary for."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text()) if base is None else base
    cfg["providers"]["bedrock"] = bedrock_provider()
    model, upstream = BACKENDS["bedrock"]
    cfg["models"][model] = {
        "backends": [{"provider": "bedrock", "model": upstream}],
        "drop_unsupported": True,
        "auto_cache": True,
    }
    # Clients that cannot mark cache breakpoints get them on the breakpoint backends (the
    # "cached" cell; docs/caching.md).
    cfg["models"][BACKENDS["anthropic"][0]]["auto_cache"] = True
    cfg["providers"]["openai_responses"] = {
        "dialect": "openai_responses",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "MOCK_OPENAI_RESPONSES_API_KEY",
        "mock": True,
    }
    model, upstream = BACKENDS["openai_responses"]
    cfg["models"][model] = {
        "backends": [
            {"provider": "openai_responses", "model": upstream},
            {"provider": "openai", "model": "gpt-5.5"},
        ]
    }
    return cfg


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's stack (it shadows the session's default one): with a Bedrock backend and a
    Responses backend (conftest's ``mocks`` fixture resets its mock providers)."""
    tmp = tmp_path_factory.mktemp("matrix")
    with aws_credentials(tmp):
        stack = start_stack(tmp, config_on_free_ports(matrix_config()))
    yield stack
    stack.stop()


# ---- one adapter per official SDK: same questions, answers in neutral form ---------------------


@dataclass
class Call:
    id: str
    name: str
    args: dict[str, Any]
    raw_args: str
    signature: bytes | None = None  # Gemini: the call's thought signature, echoed back as given


@dataclass
class Result:
    text: str = ""
    finish: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    model: str = ""
    backend: str | None = None
    calls: list[Call] = field(default_factory=list)
    stop_sequence: str | None = None


@dataclass
class Ask:
    """One request, in dialect-neutral terms."""

    model: str
    text: str
    stream: bool = False
    system: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)  # (user|assistant, text) before ``text``
    images: bool = False
    tools: bool = False
    tool_choice: str | None = None  # "auto" or a tool name (forced)
    tool_call: Call | None = None  # answer this call of ours with TOOL_RESULT after ``text``
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, stop
    schema: dict[str, Any] | None = None  # structured output: the answer is JSON of this schema
    pdf: bool = False  # a base64 PDF ("report.pdf") after the text


def with_arguments(res: Result, parts: dict[int, list[str]]) -> Result:
    """Streamed tool calls: join each call's argument fragments (keyed by stream index) and parse them."""
    for c, idx in zip(res.calls, sorted(parts), strict=True):
        c.raw_args = "".join(parts[idx])
        c.args = json.loads(c.raw_args)
    return res


class SDKClient:
    sdk: Any

    def ask(self, a: Ask) -> Result:
        raise NotImplementedError

    def models(self) -> list[str]:
        return [m.id for m in self.sdk.models.list()]


class OpenAIClient(SDKClient):
    def __init__(self, gateway: Stack):
        self.sdk = openai.OpenAI(
            base_url=gateway.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20
        )

    def kwargs(self, a: Ask) -> dict[str, Any]:
        msgs: list[dict[str, Any]] = [{"role": "system", "content": a.system}] if a.system else []
        msgs += [{"role": r, "content": t} for r, t in a.history]
        content: Any = a.text
        if a.images:
            content = [
                {"type": "text", "text": a.text},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": IMAGE_URL}},
            ]
        if a.pdf:
            content = [
                {"type": "text", "text": a.text},
                {
                    "type": "file",
                    "file": {"filename": "report.pdf", "file_data": f"data:application/pdf;base64,{PDF_B64}"},
                },
            ]
        msgs.append({"role": "user", "content": content})
        if a.tool_call is not None:
            c = a.tool_call
            msgs.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.raw_args},
                        }
                    ],
                }
            )
            msgs.append({"role": "tool", "tool_call_id": c.id, "content": TOOL_RESULT})
        kw: dict[str, Any] = {"model": a.model, "messages": msgs}
        if a.tools:
            kw["tools"] = [
                {
                    "type": "function",
                    "function": {"name": n, "description": f"{n} a thing", "parameters": TOOL_SCHEMA},
                }
                for n in (TOOL, OTHER_TOOL)
            ]
        if a.tool_choice == "auto":
            kw["tool_choice"] = "auto"
        elif a.tool_choice:
            kw["tool_choice"] = {"type": "function", "function": {"name": a.tool_choice}}
        if a.schema is not None:
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": a.schema, "strict": True},
            }
        kw.update(a.params)
        return kw

    def ask(self, a: Ask) -> Result:
        kw = self.kwargs(a)
        if not a.stream:
            raw = self.sdk.chat.completions.with_raw_response.create(**kw)
            c = raw.parse()
            msg = c.choices[0].message
            calls = [
                Call(t.id, t.function.name, json.loads(t.function.arguments), t.function.arguments)
                for t in msg.tool_calls or ()
            ]
            return Result(
                msg.content or "",
                c.choices[0].finish_reason,
                c.usage.prompt_tokens,
                c.usage.completion_tokens,
                c.usage.prompt_tokens_details.cached_tokens,
                c.model,
                raw.headers.get("x-gateway-backend"),
                calls,
            )
        raw = self.sdk.chat.completions.with_raw_response.create(
            **kw, stream=True, stream_options={"include_usage": True}
        )
        res = Result(backend=raw.headers.get("x-gateway-backend"))
        parts: dict[int, list[str]] = {}
        for chunk in raw.parse():
            res.model = chunk.model
            if chunk.usage is not None:
                res.input_tokens, res.output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                res.cached_tokens = chunk.usage.prompt_tokens_details.cached_tokens
            for ch in chunk.choices:
                res.text += ch.delta.content or ""
                for tc in ch.delta.tool_calls or ():
                    if tc.id:
                        res.calls.append(Call(tc.id, tc.function.name, {}, ""))
                        parts[tc.index] = []
                    parts[tc.index].append(tc.function.arguments or "")
                res.finish = ch.finish_reason or res.finish
        return with_arguments(res, parts)


class AnthropicClient(SDKClient):
    def __init__(self, gateway: Stack):
        self.sdk = anthropic.Anthropic(base_url=gateway.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)

    def kwargs(self, a: Ask) -> dict[str, Any]:
        msgs: list[dict[str, Any]] = [{"role": r, "content": t} for r, t in a.history]
        content: Any = a.text
        if a.images:
            content = [
                {"type": "text", "text": a.text},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
            ]
        if a.pdf:
            content = [
                {"type": "text", "text": a.text},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
                    "title": "report.pdf",
                },
            ]
        msgs.append({"role": "user", "content": content})
        if a.tool_call is not None:
            c = a.tool_call
            msgs.append(
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}],
                }
            )
            msgs.append(
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": c.id, "content": TOOL_RESULT}],
                }
            )
        p = dict(a.params)
        kw: dict[str, Any] = {"model": a.model, "messages": msgs, "max_tokens": p.pop("max_tokens", 1024)}
        if "stop" in p:
            kw["stop_sequences"] = p.pop("stop")
        if a.schema is not None:
            p["output_config"] = {"format": {"type": "json_schema", "schema": a.schema}}
        if p:  # this SDK version has no sampling arguments (temperature, top_p, top_k): send them raw
            kw["extra_body"] = p
        if a.system:
            kw["system"] = a.system
        if a.tools:
            kw["tools"] = [
                {"name": n, "description": f"{n} a thing", "input_schema": TOOL_SCHEMA}
                for n in (TOOL, OTHER_TOOL)
            ]
        if a.tool_choice == "auto":
            kw["tool_choice"] = {"type": "auto"}
        elif a.tool_choice:
            kw["tool_choice"] = {"type": "tool", "name": a.tool_choice}
        return kw

    def ask(self, a: Ask) -> Result:
        kw = self.kwargs(a)
        if not a.stream:
            raw = self.sdk.messages.with_raw_response.create(**kw)
            m = raw.parse()
            text = "".join(b.text for b in m.content if b.type == "text")
            calls = [
                Call(b.id, b.name, b.input, json.dumps(b.input)) for b in m.content if b.type == "tool_use"
            ]
            return Result(
                text,
                m.stop_reason,
                m.usage.input_tokens,
                m.usage.output_tokens,
                m.usage.cache_read_input_tokens,
                m.model,
                raw.headers.get("x-gateway-backend"),
                calls,
                m.stop_sequence,
            )
        raw = self.sdk.messages.with_raw_response.create(**kw, stream=True)
        res = Result(backend=raw.headers.get("x-gateway-backend"))
        parts: dict[int, list[str]] = {}
        for ev in raw.parse():
            if ev.type == "message_start":
                res.model = ev.message.model
                res.input_tokens = ev.message.usage.input_tokens
                res.cached_tokens = ev.message.usage.cache_read_input_tokens
            elif ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                res.calls.append(Call(ev.content_block.id, ev.content_block.name, {}, ""))
                parts[ev.index] = []
            elif ev.type == "content_block_delta":
                if ev.delta.type == "text_delta":
                    res.text += ev.delta.text
                elif ev.delta.type == "input_json_delta":
                    parts[ev.index].append(ev.delta.partial_json)
            elif ev.type == "message_delta":
                res.finish, res.stop_sequence = ev.delta.stop_reason, ev.delta.stop_sequence
                res.output_tokens = ev.usage.output_tokens
                # A backend that reports usage only at the end (OpenAI, Gemini) fills the input count
                # in message_delta, as the SDK's own stream accumulator reads it.
                if ev.usage.input_tokens is not None:
                    res.input_tokens = ev.usage.input_tokens
        return with_arguments(res, parts)


class GeminiClient(SDKClient):
    def __init__(self, gateway: Stack):
        # Keep the client referenced: it closes its connection when collected.
        self.sdk = genai.Client(
            api_key=DEMO_KEY, http_options=types.HttpOptions(base_url=gateway.base_url, timeout=20_000)
        )

    def request(self, a: Ask) -> tuple[list[types.Content], types.GenerateContentConfig]:
        contents = [
            types.Content(role="user" if r == "user" else "model", parts=[types.Part.from_text(text=t)])
            for r, t in a.history
        ]
        parts = [types.Part.from_text(text=a.text)]
        if a.images:
            parts += [
                types.Part.from_bytes(data=PNG, mime_type="image/png"),
                types.Part.from_uri(file_uri=IMAGE_URL, mime_type="image/png"),
            ]
        if a.pdf:
            parts.append(types.Part.from_bytes(data=PDF, mime_type="application/pdf"))
        contents.append(types.Content(role="user", parts=parts))
        if a.tool_call is not None:
            c = a.tool_call
            contents.append(
                types.Content(
                    role="model",
                    parts=[
                        types.Part(
                            function_call=types.FunctionCall(id=c.id, name=c.name, args=c.args),
                            thought_signature=c.signature,
                        )
                    ],
                )
            )
            contents.append(
                types.Content(
                    role="user",
                    parts=[
                        types.Part(
                            function_response=types.FunctionResponse(
                                id=c.id, name=c.name, response={"result": TOOL_RESULT}
                            )
                        )
                    ],
                )
            )
        p = dict(a.params)
        cfg = types.GenerateContentConfig(
            system_instruction=a.system,
            temperature=p.pop("temperature", None),
            top_p=p.pop("top_p", None),
            max_output_tokens=p.pop("max_tokens", None),
            stop_sequences=p.pop("stop", None),
            **p,
        )
        if a.schema is not None:
            cfg.response_mime_type = "application/json"
            cfg.response_json_schema = a.schema
        if a.tools:
            cfg.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=n, description=f"{n} a thing", parameters_json_schema=TOOL_SCHEMA
                        )
                        for n in (TOOL, OTHER_TOOL)
                    ]
                )
            ]
        if a.tool_choice == "auto":
            cfg.tool_config = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode="AUTO")
            )
        elif a.tool_choice:
            cfg.tool_config = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(
                    mode="ANY", allowed_function_names=[a.tool_choice]
                )
            )
        return contents, cfg

    @staticmethod
    def _absorb(res: Result, r: types.GenerateContentResponse) -> None:
        if r.sdk_http_response is not None and r.sdk_http_response.headers and res.backend is None:
            res.backend = r.sdk_http_response.headers.get("x-gateway-backend")
        res.model = r.model_version or res.model
        if r.usage_metadata is not None:
            res.input_tokens = r.usage_metadata.prompt_token_count
            res.output_tokens = r.usage_metadata.candidates_token_count
            res.cached_tokens = r.usage_metadata.cached_content_token_count
        cand = (r.candidates or [None])[0]
        if cand is None:
            return
        if cand.finish_reason is not None:
            res.finish = cand.finish_reason.value
        for part in (cand.content.parts if cand.content else None) or ():
            if part.text and not part.thought:  # thoughts are reasoning, not the answer
                res.text += part.text
            if part.function_call is not None:
                fc = part.function_call
                res.calls.append(
                    Call(
                        fc.id or "",
                        fc.name or "",
                        dict(fc.args or {}),
                        json.dumps(fc.args),
                        part.thought_signature,
                    )
                )

    def ask(self, a: Ask) -> Result:
        contents, cfg = self.request(a)
        res = Result()
        if a.stream:
            for chunk in self.sdk.models.generate_content_stream(
                model=a.model, contents=contents, config=cfg
            ):
                self._absorb(res, chunk)
        else:
            self._absorb(res, self.sdk.models.generate_content(model=a.model, contents=contents, config=cfg))
        return res

    def models(self) -> list[str]:
        return [(m.name or "").removeprefix("models/") for m in self.sdk.models.list()]


class ResponsesClient(SDKClient):
    """The openai SDK's Responses API, stateless here (the whole conversation in ``input``)."""

    def __init__(self, gateway: Stack):
        self.sdk = openai.OpenAI(
            base_url=gateway.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20
        )

    def kwargs(self, a: Ask) -> dict[str, Any]:
        items: list[dict[str, Any]] = [{"role": r, "content": t} for r, t in a.history]
        content: Any = a.text
        if a.images:
            content = [
                {"type": "input_text", "text": a.text},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"},
                {"type": "input_image", "image_url": IMAGE_URL, "detail": "auto"},
            ]
        if a.pdf:
            content = [
                {"type": "input_text", "text": a.text},
                {
                    "type": "input_file",
                    "filename": "report.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF_B64}",
                },
            ]
        items.append({"role": "user", "content": content})
        if a.tool_call is not None:
            c = a.tool_call
            items += [
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.raw_args},
                {"type": "function_call_output", "call_id": c.id, "output": TOOL_RESULT},
            ]
        kw: dict[str, Any] = {"model": a.model, "input": items}
        if a.system:
            kw["instructions"] = a.system
        if a.tools:  # not strict: the schema has no additionalProperties: false
            kw["tools"] = [
                {
                    "type": "function",
                    "name": n,
                    "description": f"{n} a thing",
                    "parameters": TOOL_SCHEMA,
                    "strict": False,
                }
                for n in (TOOL, OTHER_TOOL)
            ]
        if a.tool_choice == "auto":
            kw["tool_choice"] = "auto"
        elif a.tool_choice:
            kw["tool_choice"] = {"type": "function", "name": a.tool_choice}
        p = dict(a.params)
        if "max_tokens" in p:
            kw["max_output_tokens"] = p.pop("max_tokens")
        assert "stop" not in p, "the Responses API has no stop sequences"
        if a.schema is not None:
            kw["text"] = {
                "format": {"type": "json_schema", "name": "answer", "schema": a.schema, "strict": True}
            }
        kw.update(p)
        return kw

    @staticmethod
    def _final(res: Result, r: Any) -> None:
        res.finish = r.status + (f":{r.incomplete_details.reason}" if r.incomplete_details else "")
        res.model = r.model
        res.input_tokens, res.output_tokens = r.usage.input_tokens, r.usage.output_tokens
        res.cached_tokens = r.usage.input_tokens_details.cached_tokens

    def ask(self, a: Ask) -> Result:
        kw = self.kwargs(a)
        if not a.stream:
            raw = self.sdk.responses.with_raw_response.create(**kw)
            r = raw.parse()
            res = Result(
                r.output_text,
                backend=raw.headers.get("x-gateway-backend"),
                calls=[
                    Call(o.call_id, o.name, json.loads(o.arguments), o.arguments)
                    for o in r.output
                    if o.type == "function_call"
                ],
            )
            self._final(res, r)
            return res
        raw = self.sdk.responses.with_raw_response.create(**kw, stream=True)
        res = Result(backend=raw.headers.get("x-gateway-backend"))
        parts: dict[int, list[str]] = {}
        for ev in raw.parse():
            if ev.type == "response.output_text.delta":
                res.text += ev.delta
            elif ev.type == "response.output_item.added" and ev.item.type == "function_call":
                res.calls.append(Call(ev.item.call_id, ev.item.name, {}, ""))
                parts[ev.output_index] = []
            elif ev.type == "response.function_call_arguments.delta":
                parts[ev.output_index].append(ev.delta)
            elif ev.type in ("response.completed", "response.incomplete"):
                self._final(res, ev.response)
        return with_arguments(res, parts)


ADAPTERS = {
    "openai": OpenAIClient,
    "anthropic": AnthropicClient,
    "gemini": GeminiClient,
    "openai_responses": ResponsesClient,
}


@pytest.fixture(scope="module")
def sdks(gateway: Stack) -> dict[str, Any]:
    return {name: cls(gateway) for name, cls in ADAPTERS.items()}


# ---- what the backend received, in its own format ------------------------------------------------


def _camel(obj: Any) -> Any:
    """Gemini's REST API takes camelCase and snake_case alike (the genai SDK sends some snake_case
    keys, which pass through untouched): compare in camelCase."""
    if isinstance(obj, dict):
        return {
            "".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): _camel(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj


def _unmarked(obj: Any) -> Any:
    """Without cache breakpoints (``cache_control`` keys, Converse ``cachePoint`` blocks): the
    Claude models' auto_cache places them (the "cached" cell), the other cells compare the rest."""
    if isinstance(obj, dict):
        return {k: _unmarked(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [_unmarked(v) for v in obj if not (isinstance(v, dict) and set(v) == {"cachePoint"})]
    return obj


def sent(mocks: MockAdmin, backend: str) -> dict[str, Any]:
    body = _unmarked(mocks.stats(backend)["last_request"]["body"])
    return _camel(body) if WIRE[backend] == "gemini" else body


def system_text(backend: str, body: dict[str, Any]) -> str | None:
    if backend == "openai":
        first = body["messages"][0]
        return first["content"] if first["role"] in ("system", "developer") else None
    if backend == "anthropic":
        s = body.get("system")
        return s if isinstance(s, str) or s is None else " ".join(b["text"] for b in s)
    if backend == "bedrock":
        return " ".join(b["text"] for b in body["system"]) if body.get("system") else None
    if backend == "openai_responses":
        return body.get("instructions")
    si = body.get("systemInstruction")
    return " ".join(p["text"] for p in si["parts"]) if si else None


def turn_roles(backend: str, body: dict[str, Any]) -> list[str]:
    if backend == "gemini":
        return [c.get("role", "user") for c in body["contents"]]
    if backend == "openai_responses":
        return [i["role"] for i in body["input"] if i.get("type", "message") == "message"]
    return [m["role"] for m in body["messages"] if m["role"] not in ("system", "developer")]


def images_of(backend: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    if backend == "openai":
        return [p for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
    if backend == "anthropic":
        return [b for b in body["messages"][-1]["content"] if b["type"] == "image"]
    if backend == "bedrock":
        return [b for b in body["messages"][-1]["content"] if "image" in b]
    if backend == "openai_responses":
        return [p for p in body["input"][-1]["content"] if p["type"] == "input_image"]
    return [p for p in body["contents"][-1]["parts"] if "text" not in p]


EXPECTED_IMAGES = {
    "openai": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
    ],
    "anthropic": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
    ],
    "gemini": [
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
        {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}},
    ],
    "openai_responses": [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"},
        {"type": "input_image", "image_url": IMAGE_URL, "detail": "auto"},
    ],
    "bedrock": [{"image": {"format": "png", "source": {"bytes": PNG_B64}}}],  # the URL image dropped
}


def schema_sent(backend: str, body: dict[str, Any]) -> dict[str, Any]:
    """The structured-output schema a backend received, in its own field."""
    if backend == "openai":
        rf = body["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
        return rf["json_schema"]["schema"]
    if backend == "anthropic":
        return body["output_config"]["format"]["schema"]
    if backend == "bedrock":
        return json.loads(body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"])
    if backend == "openai_responses":
        fmt = body["text"]["format"]
        assert fmt["type"] == "json_schema" and fmt["strict"] is True
        return fmt["schema"]
    gc = body["generationConfig"]
    assert gc["responseMimeType"] == "application/json"
    return gc["responseJsonSchema"]


def documents_of(backend: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(media type, base64 data) of each document a backend received, from its own blocks."""
    if backend == "openai":
        files = [p["file"]["file_data"] for p in body["messages"][-1]["content"] if p["type"] == "file"]
        return [tuple(f[5:].split(";base64,", 1)) for f in files]  # type: ignore[misc]
    if backend == "anthropic":
        docs = [b["source"] for b in body["messages"][-1]["content"] if b["type"] == "document"]
        return [(d["media_type"], d["data"]) for d in docs]
    if backend == "bedrock":
        docs = [b["document"] for b in body["messages"][-1]["content"] if "document" in b]
        return [("application/" + d["format"], d["source"]["bytes"]) for d in docs]
    if backend == "openai_responses":
        files = [p["file_data"] for p in body["input"][-1]["content"] if p["type"] == "input_file"]
        return [tuple(f[5:].split(";base64,", 1)) for f in files]  # type: ignore[misc]
    blobs = [p["inlineData"] for p in body["contents"][-1]["parts"] if "inlineData" in p]
    # The genai SDK sends URL-safe base64 (Gemini takes both alphabets): compare in the standard one.
    return [(b["mimeType"], b["data"].translate(str.maketrans("-_", "+/"))) for b in blobs]


def tool_names(backend: str, body: dict[str, Any]) -> list[str]:
    if backend == "openai":
        return [t["function"]["name"] for t in body["tools"]]
    if backend in ("anthropic", "openai_responses"):
        return [t["name"] for t in body["tools"]]
    if backend == "bedrock":
        return [t["toolSpec"]["name"] for t in body["toolConfig"]["tools"]]
    return [d["name"] for t in body["tools"] for d in t["functionDeclarations"]]


def tool_schema(backend: str, body: dict[str, Any]) -> dict[str, Any]:
    if backend == "openai":
        return body["tools"][0]["function"]["parameters"]
    if backend == "anthropic":
        return body["tools"][0]["input_schema"]
    if backend == "bedrock":
        return body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
    if backend == "openai_responses":
        return body["tools"][0]["parameters"]
    decl = body["tools"][0]["functionDeclarations"][0]
    return decl.get("parametersJsonSchema") or decl["parameters"]


def tool_choice(backend: str, body: dict[str, Any]) -> Any:
    if backend == "gemini":
        return body["toolConfig"]["functionCallingConfig"]
    if backend == "bedrock":
        return body["toolConfig"]["toolChoice"]
    return body["tool_choice"]


EXPECTED_CHOICE = {
    "openai": {"auto": "auto", OTHER_TOOL: {"type": "function", "function": {"name": OTHER_TOOL}}},
    "anthropic": {"auto": {"type": "auto"}, OTHER_TOOL: {"type": "tool", "name": OTHER_TOOL}},
    "gemini": {"auto": {"mode": "AUTO"}, OTHER_TOOL: {"mode": "ANY", "allowedFunctionNames": [OTHER_TOOL]}},
    "bedrock": {"auto": {"auto": {}}, OTHER_TOOL: {"tool": {"name": OTHER_TOOL}}},
    "openai_responses": {"auto": "auto", OTHER_TOOL: {"type": "function", "name": OTHER_TOOL}},
}


def answered_call(backend: str, body: dict[str, Any]) -> tuple[str, str, str]:
    """(id of the assistant's tool call, id its result answers, result text) in the backend's history."""
    if backend == "openai":
        call, result = body["messages"][-2]["tool_calls"][0], body["messages"][-1]
        assert result["role"] == "tool"
        return call["id"], result["tool_call_id"], result["content"]
    if backend == "anthropic":
        call, result = body["messages"][-2]["content"][0], body["messages"][-1]["content"][0]
        assert (call["type"], result["type"]) == ("tool_use", "tool_result")
        content = result["content"]
        text = content if isinstance(content, str) else "".join(b["text"] for b in content)
        return call["id"], result["tool_use_id"], text
    if backend == "openai_responses":
        call, result = body["input"][-2], body["input"][-1]
        assert (call["type"], result["type"]) == ("function_call", "function_call_output")
        return call["call_id"], result["call_id"], result["output"]
    if backend == "bedrock":
        call, result = (
            body["messages"][-2]["content"][0]["toolUse"],
            body["messages"][-1]["content"][0]["toolResult"],
        )
        return call["toolUseId"], result["toolUseId"], "".join(c["text"] for c in result["content"])
    call, result = body["contents"][-2]["parts"][0]["functionCall"], body["contents"][-1]["parts"][0]
    fr = result["functionResponse"]
    assert fr["name"] == call["name"] == TOOL
    return call["id"], fr["id"], fr["response"]["result"]


# ---- the matrix ------------------------------------------------------------------------------------


def check_common(res: Result, client: str, backend: str, finish: str, usage: tuple[int, int]) -> None:
    model, upstream = ALL_BACKENDS[backend]
    assert res.model == model  # the name the client asked for
    assert res.finish == FINISH[client][finish]
    assert (res.input_tokens, res.output_tokens) == usage
    assert res.cached_tokens in (0, None)  # these prompts are too short for the mocks to cache
    assert res.backend == f"{backend}/{upstream}"


def run_plain(sdk: Any, mocks: MockAdmin, client: str, backend: str, stream: bool) -> None:
    model, upstream = ALL_BACKENDS[backend]
    text = "stream me please" if stream else "hello there"
    res = sdk.ask(Ask(model, text, stream=stream))
    reply = f"[{backend}:{upstream}] {text}"
    assert res.text == reply
    assert res.calls == []
    check_common(res, client, backend, "end", (words(text), words(reply)))
    st = mocks.stats(backend)
    assert st["requests"] == 1 and st["streamed"] == int(stream)


def run_tools(sdk: Any, mocks: MockAdmin, client: str, backend: str, stream: bool) -> None:
    model, upstream = ALL_BACKENDS[backend]
    text = "use tool now"
    first = sdk.ask(Ask(model, text, stream=stream, tools=True, tool_choice="auto"))
    assert first.text == ""
    check_common(first, client, backend, "tool", (3, 1))
    body = sent(mocks, backend)
    assert tool_names(WIRE[backend], body) == [TOOL, OTHER_TOOL]
    assert tool_schema(WIRE[backend], body) == TOOL_SCHEMA
    assert tool_choice(WIRE[backend], body) == EXPECTED_CHOICE[WIRE[backend]]["auto"]
    [call] = first.calls
    assert (call.name, call.args) == (TOOL, {"echo": text})  # streamed arguments reassembled
    # the id the client got is the id the backend issued; a Gemini call that carries a thought
    # signature reaches a client of another dialect with both sealed in its id (docs/reasoning.md)
    [issued] = mocks.stats(backend)["tool_call_ids"]
    sealed = WIRE[backend] == "gemini" and WIRE.get(client, client) != "gemini" and call.id.startswith("gwr1")
    assert call.id == issued or sealed

    final = sdk.ask(Ask(model, text, stream=stream, tools=True, tool_call=call))
    reply = f"[{backend}:{upstream}] tool result: {TOOL_RESULT}"
    assert final.text == reply and final.calls == []
    check_common(final, client, backend, "end", (3, words(reply)))
    # the backend saw our result matched to its own call
    assert answered_call(WIRE[backend], sent(mocks, backend)) == (issued, issued, TOOL_RESULT)
    assert mocks.stats(backend)["streamed"] == 2 * int(stream)


def run_images(sdk: Any, mocks: MockAdmin, client: str, backend: str) -> None:
    model, upstream = ALL_BACKENDS[backend]
    text = "describe this image"
    res = sdk.ask(Ask(model, text, images=True))
    reply = f"[{backend}:{upstream}] {text}"
    assert res.text == reply
    check_common(res, client, backend, "end", (3, 4))
    assert images_of(WIRE[backend], sent(mocks, backend)) == EXPECTED_IMAGES[WIRE[backend]]


def run_system(sdk: Any, mocks: MockAdmin, client: str, backend: str) -> None:
    model, upstream = ALL_BACKENDS[backend]
    history = [("user", "first question"), ("assistant", "first answer")]
    res = sdk.ask(Ask(model, "second question", system="be brief", history=history))
    reply = f"[{backend}:{upstream}] second question"
    assert res.text == reply
    check_common(res, client, backend, "end", (8, 3))  # system + every turn's words
    body = sent(mocks, backend)
    assert system_text(WIRE[backend], body) == "be brief"
    assert turn_roles(WIRE[backend], body) == (
        ["user", "model", "user"] if WIRE[backend] == "gemini" else ["user", "assistant", "user"]
    )


def run_structured(sdk: Any, mocks: MockAdmin, client: str, backend: str) -> None:
    """Structured output in the client's own terms reaches the backend in its own field, and the
    JSON answer (the mocks fill strings with the reply, integers with its word count) comes back."""
    model, upstream = ALL_BACKENDS[backend]
    text = "answer as json"
    reply = f"[{backend}:{upstream}] {text}"
    for stream in (False, True):
        res = sdk.ask(Ask(model, text, stream=stream, schema=ANSWER_SCHEMA))
        assert json.loads(res.text) == {"answer": reply, "words": words(reply)}
        check_common(res, client, backend, "end", (words(text), words(res.text)))
        assert schema_sent(WIRE[backend], sent(mocks, backend)) == ANSWER_SCHEMA
    assert mocks.stats(backend)["streamed"] == 1


def run_pdf(sdk: Any, mocks: MockAdmin, client: str, backend: str) -> None:
    """A base64 PDF in the client's own part type reaches the backend as its document type
    (plain and streamed)."""
    model, upstream = ALL_BACKENDS[backend]
    text = "summarize this report"
    reply = f"[{backend}:{upstream}] {text}"
    for stream in (False, True):
        res = sdk.ask(Ask(model, text, stream=stream, pdf=True))
        assert res.text == reply
        check_common(res, client, backend, "end", (words(text), words(reply)))
        assert documents_of(WIRE[backend], sent(mocks, backend)) == [("application/pdf", PDF_B64)]
    assert mocks.stats(backend)["streamed"] == 1


def reasoning_sent(backend: str, body: dict[str, Any]) -> Any:
    """The reasoning controls a backend received, in its own field."""
    if backend == "openai":
        return body["reasoning_effort"]
    if backend == "openai_responses":
        return body["reasoning"]["effort"]
    if backend == "anthropic":
        return body["thinking"]
    if backend == "bedrock":
        return body["additionalModelRequestFields"]["thinking"]
    tc = body["generationConfig"]["thinkingConfig"]
    # a Gemini client's budget stays a budget; an effort becomes a level (docs/reasoning.md)
    return tc.get("thinkingBudget") or tc["thinkingLevel"].lower()


# Every client asks for "low" (or its budget, 2048 tokens): what each backend dialect gets for it.
EXPECTED_REASONING = {
    "openai": "low",
    "openai_responses": "low",
    "anthropic": {"type": "enabled", "budget_tokens": 2048},
    "bedrock": {"type": "enabled", "budget_tokens": 2048},
    "gemini": "low",
}
THINKING_MOCKS = ("anthropic", "bedrock", "gemini", "openai_responses")  # the others return no reasoning text
CLAUDE_WIRES = ("anthropic", "bedrock")  # a Chat Completions client gets Claude's thinking only


def run_reasoning(stack: Stack, mocks: MockAdmin, client: str, backend: str) -> None:
    """Reasoning on in the client's own terms, a tool call, the assistant turn echoed as the SDK's
    users do (tests/test_reasoning_e2e.py) and the tool result sent: the conversation continues
    (the mocks reject a lost signature) and the backend got its own reasoning controls."""
    model, upstream = ALL_BACKENDS[backend]
    wire = WIRE[backend]
    talk = REASONING_CLIENTS[client](stack)
    history, call_id, reasoning = talk.first(model, False)
    assert call_id
    expected = EXPECTED_REASONING[wire]
    if wire == "gemini" and client in ("anthropic", "gemini"):
        expected = 2048  # a client's budget stays a budget on Gemini
    assert reasoning_sent(wire, sent(mocks, backend)) == expected
    if wire in THINKING_MOCKS and not (client == "openai" and wire not in CLAUDE_WIRES):
        # the thinking reaches the client in its dialect's field (a Chat Completions client
        # cannot ask Gemini or GPT for thoughts or a summary: docs/reasoning.md)
        assert reasoning, "no reasoning text reached the client"
    answer = talk.follow(model, history, False)
    assert answer == f"[{backend}:{upstream}] tool result: sunny"
    assert reasoning_sent(wire, sent(mocks, backend)) == expected
    assert mocks.stats(backend)["requests"] == 2


CACHE_TURNS = {
    "openai": lambda stack, model: [r for r, _ in openai_turns(stack, model, False, turns=2)],
    "anthropic": lambda stack, model: [r for r, _ in anthropic_turns(stack, model, False)],
    "gemini": lambda stack, model: gemini_turns(stack, model, False, turns=2),
    "openai_responses": lambda stack, model: [r for r, _ in responses_turns(stack, model, False, turns=2)],
}


def run_cached(stack: Stack, mocks: MockAdmin, client: str, backend: str) -> None:
    """Two turns behind a 1200-word system prompt (tests/test_caching_e2e.py): no cache read on
    the first, the prefix read on the second, in the client's own usage field. The Anthropic
    client marks its system prompt; for the others the breakpoint backends' models set
    auto_cache, and the rest cache on their own (docs/caching.md)."""
    reads = CACHE_TURNS[client](stack, ALL_BACKENDS[backend][0])
    assert reads[0] == 0 and reads[1] >= 1024, reads
    assert mocks.stats(backend)["requests"] == 2


def run_cell(stack: Stack, sdk: Any, mocks: MockAdmin, client: str, backend: str, cell: str) -> None:
    if cell == "reasoning":
        run_reasoning(stack, mocks, client, backend)
    elif cell == "cached":
        run_cached(stack, mocks, client, backend)
    elif cell in ("plain", "streamed"):
        run_plain(sdk, mocks, client, backend, stream=cell == "streamed")
    elif cell in ("tools", "streamed_tools"):
        run_tools(sdk, mocks, client, backend, stream=cell == "streamed_tools")
    elif cell == "images":
        run_images(sdk, mocks, client, backend)
    elif cell == "structured":
        run_structured(sdk, mocks, client, backend)
    elif cell == "pdf":
        run_pdf(sdk, mocks, client, backend)
    else:
        run_system(sdk, mocks, client, backend)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=PAIR_IDS)
def test_matrix(
    gateway: Stack, sdks: dict[str, Any], mocks: MockAdmin, client: str, backend: str, cell: str
) -> None:
    run_cell(gateway, sdks[client], mocks, client, backend, cell)


# ---- the same matrix against the cloud backends (Vertex AI, Azure OpenAI mocks) -----------------------


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, Any]]]:
    """One model per cloud backend (tests/cloud.py): Gemini on Vertex with a key file, Claude on
    Vertex with application default credentials, Azure OpenAI with an API key."""
    tmp = tmp_path_factory.mktemp("cloud-matrix")
    cfg, env = cloud_config(tmp)
    cfg["models"][CLOUD_BACKENDS["vertex_anthropic"][0]]["auto_cache"] = True  # the "cached" cell
    stack = start_stack(tmp, cfg, {**env, "AZURE_OPENAI_API_KEY": "azure-" + DEMO_KEY})
    try:
        yield stack, {name: cls(stack) for name, cls in ADAPTERS.items()}
    finally:
        stack.stop()


def sent_to_cloud(mocks: MockAdmin, backend: str) -> dict[str, Any]:
    """What the cloud received besides the body: its own path and credentials."""
    last = mocks.stats(backend)["last_request"]
    _, upstream = CLOUD_BACKENDS[backend]
    headers = {k.lower(): v for k, v in last["headers"].items()}
    if backend == "azure_openai":
        assert last["path"] == f"/openai/deployments/{upstream}/chat/completions"
        assert last["query"] == {"api-version": "2024-10-21"}
        assert headers["api-key"] == "***" and "authorization" not in headers
    else:
        publisher = "google" if backend == "vertex_gemini" else "anthropic"
        prefix = f"/v1/projects/gateway-test-project/locations/us-central1/publishers/{publisher}/models/{upstream}:"
        assert last["path"].startswith(prefix), last["path"]
        assert headers["authorization"] == "Bearer ***"
        assert not {"x-goog-api-key", "x-api-key", "anthropic-version"} & set(headers)
    return last


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("client", "backend"), CLOUD_PAIRS, ids=CLOUD_PAIR_IDS)
def test_cloud_matrix(cloud: tuple[Stack, dict[str, Any]], client: str, backend: str, cell: str) -> None:
    stack, sdks = cloud
    with clean_mocks(stack) as mocks:
        run_cell(stack, sdks[client], mocks, client, backend, cell)
        last = sent_to_cloud(mocks, backend)
        if backend == "vertex_anthropic":  # Claude on Vertex: the model in the path, the version in the body
            assert last["body"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in last["body"]


# ---- beyond the matrix: parameters, limits, refusals, errors, model lists ------------------------------


@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=PAIR_IDS)
def test_forced_tool_choice(sdks: dict[str, Any], mocks: MockAdmin, client: str, backend: str) -> None:
    model, _ = BACKENDS[backend]
    res = sdks[client].ask(Ask(model, "what is the weather", tools=True, tool_choice=OTHER_TOOL))
    [call] = res.calls
    assert (call.name, call.args) == (OTHER_TOOL, {"echo": "what is the weather"})
    assert tool_choice(backend, sent(mocks, backend)) == EXPECTED_CHOICE[backend][OTHER_TOOL]


SAMPLING_SENT = {  # backend -> where temperature, top_p, max tokens and stop sequences land
    # gpt-5.5 takes its cap as max_completion_tokens (the catalog's output_cap_field).
    "openai": lambda b: (b["temperature"], b["top_p"], b["max_completion_tokens"], b.get("stop")),
    "anthropic": lambda b: (b["temperature"], b["top_p"], b["max_tokens"], b.get("stop_sequences")),
    "gemini": lambda b: tuple(
        b["generationConfig"].get(k) for k in ("temperature", "topP", "maxOutputTokens", "stopSequences")
    ),
    "bedrock": lambda b: tuple(
        b["inferenceConfig"].get(k) for k in ("temperature", "topP", "maxTokens", "stopSequences")
    ),
    "openai_responses": lambda b: (b["temperature"], b["top_p"], b["max_output_tokens"], b.get("stop")),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=PAIR_IDS)
def test_sampling_max_tokens_and_stop(
    sdks: dict[str, Any], mocks: MockAdmin, client: str, backend: str, stream: bool
) -> None:
    """Stop sequences where both ends have them (a Chat client's stop to a Responses backend is
    refused: tests/test_responses_api.py); a token limit the backend takes (a Responses backend
    asks for 16 or more)."""
    model, upstream = BACKENDS[backend]
    sdk = sdks[client]
    stops = NO_STOP not in (client, backend)
    cap = MIN_OUTPUT.get(backend, 2)
    text = " ".join(["alpha", "beta", "gamma", *(f"w{i}" for i in range(cap))][: cap + 1])
    params = {"temperature": 0.5, "top_p": 0.9, "max_tokens": cap, **({"stop": ["HALT"]} if stops else {})}
    cut = sdk.ask(Ask(model, text, stream=stream, params=params))
    assert cut.text == " ".join(f"[{backend}:{upstream}] {text}".split()[:cap])
    check_common(cut, client, backend, "length", (cap + 1, cap))
    assert SAMPLING_SENT[backend](sent(mocks, backend)) == (0.5, 0.9, cap, ["HALT"] if stops else None)
    if not stops:
        return

    stopped = sdk.ask(Ask(model, "alpha beta HALT gamma", stream=stream, params={**params, "max_tokens": 50}))
    assert stopped.text == f"[{backend}:{upstream}] alpha beta"
    # Anthropic and Bedrock backends say a stop sequence matched (only Anthropic says which);
    # OpenAI and Gemini report a plain stop.
    outcome = "stop_sequence" if backend in ("anthropic", "bedrock") else "end"
    check_common(stopped, client, backend, outcome, (4, 3))
    if client == "anthropic":
        assert stopped.stop_sequence == ("HALT" if backend == "anthropic" else None)


@pytest.mark.parametrize("client", ["openai", "gemini", "openai_responses"])
def test_anthropic_backend_gets_default_max_tokens(
    gateway: Stack, sdks: dict[str, Any], mocks: MockAdmin, client: str
) -> None:
    sdks[client].ask(Ask("claude-sonnet-4-6", "hello"))
    default = gateway.config.models["claude-sonnet-4-6"].default_max_tokens
    assert sent(mocks, "anthropic")["max_tokens"] == default


def _raw_post(gateway: Stack, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(
        gateway.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_unexpressible_fields_are_400_naming_the_field(
    gateway: Stack, sdks: dict[str, Any], mocks: MockAdmin
) -> None:
    # n > 1 to Anthropic, from an OpenAI client
    with pytest.raises(openai.BadRequestError) as oe:
        sdks["openai"].sdk.chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert oe.value.status_code == 400
    assert oe.value.body["param"] == "n" and "'n'" in oe.value.body["message"]
    assert oe.value.body["type"] == "invalid_request_error"
    # top_k to OpenAI, from an Anthropic client
    with pytest.raises(anthropic.BadRequestError) as ae:
        sdks["anthropic"].sdk.messages.create(
            model="gpt-5.5",
            max_tokens=10,
            extra_body={"top_k": 5},
            messages=[{"role": "user", "content": "hi"}],
        )
    assert ae.value.status_code == 400
    assert ae.value.body["type"] == "error" and ae.value.body["error"]["type"] == "invalid_request_error"
    assert "'top_k'" in ae.value.body["error"]["message"]
    # candidateCount > 1 to Anthropic, from a Gemini client: named in the client's own terms
    with pytest.raises(genai_errors.ClientError) as ge:
        sdks["gemini"].sdk.models.generate_content(
            model="claude-sonnet-4-6", contents="hi", config=types.GenerateContentConfig(candidate_count=2)
        )
    assert ge.value.code == 400 and ge.value.status == "INVALID_ARGUMENT"
    assert "'generationConfig.candidateCount'" in ge.value.message
    # top_k to OpenAI, from a Gemini client
    with pytest.raises(genai_errors.ClientError) as ge2:
        sdks["gemini"].sdk.models.generate_content(
            model="gpt-5.5", contents="hi", config=types.GenerateContentConfig(top_k=5)
        )
    assert ge2.value.code == 400 and "'generationConfig.topK'" in ge2.value.message
    assert sum(mocks.stats(p)["requests"] for p in BACKENDS) == 0


class Answer(BaseModel):
    answer: str
    words: int


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_sdk_structured_output_helpers(sdks: dict[str, Any], mocks: MockAdmin, backend: str) -> None:
    """Each SDK's own structured-output helper with a pydantic model (openai
    ``chat.completions.parse``, anthropic ``messages.parse``, google-genai ``response_schema``)
    against every backend: the answer parses into the model."""
    model, upstream = BACKENDS[backend]
    text = "answer as json"
    want = Answer(answer=f"[{backend}:{upstream}] {text}", words=4)
    msgs: Any = [{"role": "user", "content": text}]
    c = sdks["openai"].sdk.chat.completions.parse(model=model, messages=msgs, response_format=Answer)
    assert c.choices[0].message.parsed == want
    m = sdks["anthropic"].sdk.messages.parse(model=model, max_tokens=200, messages=msgs, output_format=Answer)
    assert m.parsed_output == want
    g = sdks["gemini"].sdk.models.generate_content(
        model=model,
        contents=text,
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Answer),
    )
    assert g.parsed == want


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_json_mode_without_a_schema(sdks: dict[str, Any], mocks: MockAdmin, backend: str) -> None:
    """Gemini's JSON mode (no schema) with no "json" in the prompt: OpenAI backends get the
    same request in a form they accept (OpenAI refuses json_object without the word), Gemini
    its own; Anthropic and Converse take a schema only: a 400 naming the client's field, why
    (dropped where the model sets drop_unsupported)."""
    model, _ = BACKENDS[backend]
    config = types.GenerateContentConfig(response_mime_type="application/json")
    if backend == "bedrock":  # this module's Bedrock model sets drop_unsupported: left out
        sdks["gemini"].sdk.models.generate_content(model=model, contents="give me data", config=config)
        assert "outputConfig" not in sent(mocks, backend)
        return
    if backend == "anthropic":
        with pytest.raises(genai_errors.ClientError) as e:
            sdks["gemini"].sdk.models.generate_content(model=model, contents="give me data", config=config)
        assert e.value.code == 400 and "'generationConfig.responseMimeType'" in e.value.message
        assert "without a schema" in e.value.message and mocks.stats(backend)["requests"] == 0
        return
    r = sdks["gemini"].sdk.models.generate_content(model=model, contents="give me data", config=config)
    json.loads(r.text or "")  # JSON (the mocks answer any-JSON requests with a JSON string)
    body = sent(mocks, backend)
    if backend == "openai":
        assert body["response_format"]["type"] == "json_schema"
    elif backend == "openai_responses":
        assert body["text"]["format"]["type"] == "json_schema"


def test_bookkeeping_reaches_a_gemini_model(gateway: Stack, sdks: dict[str, Any], mocks: MockAdmin) -> None:
    """A coding agent's metadata.user_id and an IDE's user / safety_identifier / metadata / store
    towards Gemini, which has no such fields: answered, the fields dropped (issue 14)."""
    model, upstream = BACKENDS["gemini"]
    m = sdks["anthropic"].sdk.messages.create(
        model=model,
        max_tokens=50,
        metadata={"user_id": "agent-user-1"},
        messages=[{"role": "user", "content": "hi"}],
    )
    assert m.content[0].text == f"[gemini:{upstream}] hi"
    c = sdks["openai"].sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        user="ide-user",
        safety_identifier="hash",
        metadata={"session": "s"},
        store=True,
    )
    assert c.choices[0].message.content == f"[gemini:{upstream}] hi"
    body = sent(mocks, "gemini")
    assert not {"user", "metadata", "safetyIdentifier", "store"} & set(body)


def test_several_candidates_between_openai_and_gemini(sdks: dict[str, Any], mocks: MockAdmin) -> None:
    """OpenAI ``n`` <-> Gemini ``candidateCount``: every candidate comes back, usage counts them
    all, streamed or not (a stream carries each answer under its own index)."""
    g_model, g_up = BACKENDS["gemini"]
    c = sdks["openai"].sdk.chat.completions.create(
        model=g_model, messages=[{"role": "user", "content": "hi"}], n=2
    )
    reply = f"[gemini:{g_up}] hi"
    assert [(ch.index, ch.message.content) for ch in c.choices] == [(0, reply), (1, reply)]
    assert c.usage.completion_tokens == 2 * 2
    assert sent(mocks, "gemini")["generationConfig"]["candidateCount"] == 2
    o_model, o_up = BACKENDS["openai"]
    r = sdks["gemini"].sdk.models.generate_content(
        model=o_model, contents="hi", config=types.GenerateContentConfig(candidate_count=2)
    )
    assert [cand.content.parts[0].text for cand in r.candidates] == [f"[openai:{o_up}] hi"] * 2
    assert sent(mocks, "openai")["n"] == 2
    text: dict[int, str] = {}
    finish: dict[int, str | None] = {}
    usage = None
    for chunk in sdks["openai"].sdk.chat.completions.create(
        model=g_model,
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    ):
        usage = chunk.usage or usage
        for ch in chunk.choices:
            text[ch.index] = text.get(ch.index, "") + (ch.delta.content or "")
            finish[ch.index] = ch.finish_reason or finish.get(ch.index)
    assert text == {0: reply, 1: reply} and finish == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 2 * 2
    assert sent(mocks, "gemini")["generationConfig"]["candidateCount"] == 2
    streamed: dict[int, str] = {}
    reasons: dict[int, Any] = {}
    for g_chunk in sdks["gemini"].sdk.models.generate_content_stream(
        model=o_model, contents="hi", config=types.GenerateContentConfig(candidate_count=2)
    ):
        for cand in g_chunk.candidates or []:
            streamed[cand.index or 0] = streamed.get(cand.index or 0, "") + "".join(
                p.text or "" for p in (cand.content.parts if cand.content else None) or []
            )
            reasons[cand.index or 0] = cand.finish_reason or reasons.get(cand.index or 0)
    assert streamed == {0: f"[openai:{o_up}] hi", 1: f"[openai:{o_up}] hi"}
    assert reasons == {0: types.FinishReason.STOP, 1: types.FinishReason.STOP}
    assert sent(mocks, "openai")["n"] == 2 and sent(mocks, "openai")["stream"] is True


def test_a_gemini_files_api_uri_is_refused_for_other_providers(
    sdks: dict[str, Any], mocks: MockAdmin
) -> None:
    """A Files API URI only Gemini can read is never handed to another provider as a URL: a 400
    in Gemini's format naming the part and saying why."""
    uri = "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
    with pytest.raises(genai_errors.ClientError) as e:
        sdks["gemini"].sdk.models.generate_content(
            model=BACKENDS["anthropic"][0],
            contents=[
                types.Part.from_text(text="read"),
                types.Part.from_uri(file_uri=uri, mime_type="application/pdf"),
            ],
        )
    assert e.value.code == 400 and "'contents[0].parts[1].fileData'" in e.value.message
    assert "Files API" in e.value.message
    assert mocks.stats("anthropic")["requests"] == 0


def test_gemini_key_in_query_and_header(gateway: Stack, mocks: MockAdmin) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
    path = "/v1beta/models/claude-sonnet-4-6:generateContent"
    by_query = _raw_post(gateway, f"{path}?key={DEMO_KEY}", body, {})
    by_header = _raw_post(gateway, path, body, {"x-goog-api-key": DEMO_KEY})
    for status, raw in (by_query, by_header):
        assert status == 200
        reply = json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"]
        assert reply == "[anthropic:claude-sonnet-4-6] hello there"
    assert _raw_post(gateway, path, body, {})[0] == 401


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_anthropic_stream_event_sequence(gateway: Stack, mocks: MockAdmin, backend: str) -> None:
    """Anthropic clients get the full event sequence, pings included (the SDK hides pings)."""
    model, _ = BACKENDS[backend]
    req = {
        "model": model,
        "max_tokens": 100,
        "stream": True,
        "tools": [{"name": TOOL, "input_schema": TOOL_SCHEMA}],
        "messages": [{"role": "user", "content": "use tool now"}],
    }
    headers = {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"}
    status, raw = _raw_post(gateway, "/v1/messages", req, headers)
    assert status == 200
    events = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and "ping" in events
    assert events[-2:] == ["message_delta", "message_stop"]
    blocks = [e for e in events if e.startswith("content_block")]
    assert blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop"
    assert "content_block_delta" in blocks


def test_model_listings(gateway: Stack, sdks: dict[str, Any]) -> None:
    served = list(gateway.config.models)
    assert sdks["openai"].models() == served
    assert sdks["anthropic"].models() == served
    assert sdks["gemini"].models() == served
    assert sdks["openai_responses"].models() == served


# ---- provider errors, on a stack of their own (backend health must not leak into other tests) --------

ALL_THREE = "every-backend"  # a model whose failover chain is all three providers


@pytest.fixture(scope="module")
def error_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MockAdmin, dict[str, Any]]]:
    """Each matrix model served by its primary alone (a provider error reaches the client as is,
    not hidden by failover), plus one model failing over across all three providers."""
    cfg = matrix_config()
    chain = cfg["models"]["gpt-5.5"]["backends"]
    cfg["models"] = {
        model: {"backends": [{"provider": backend, "model": upstream}]}
        for backend, (model, upstream) in BACKENDS.items()
    }
    cfg["models"][ALL_THREE] = {"backends": chain}
    tmp = tmp_path_factory.mktemp("matrix-errors")
    with aws_credentials(tmp):
        stack = start_stack(tmp, config_on_free_ports(cfg))
    try:
        yield MockAdmin(stack), {name: cls(stack) for name, cls in ADAPTERS.items()}
    finally:
        stack.stop()


def _error_of(client: str, exc: BaseException) -> tuple[int, str, str]:
    """(status, error type in the client's format, message) of an SDK exception."""
    if client in ("openai", "openai_responses"):
        assert isinstance(exc, openai.APIStatusError)
        body: Any = exc.body
        return exc.status_code, body["type"], body["message"]
    if client == "anthropic":
        assert isinstance(exc, anthropic.APIStatusError)
        body = exc.body
        assert body["type"] == "error"
        return exc.status_code, body["error"]["type"], body["error"]["message"]
    assert isinstance(exc, genai_errors.APIError)
    return exc.code, exc.status or "", exc.message or ""


def settle(admin: MockAdmin, sdks: dict[str, Any] | None = None, backend: str = "") -> None:
    """No faults, and the previous test's 50 ms rate-limit cool-down over: the provider answers,
    not the gateway's health table."""
    admin.reset()
    time.sleep(0.1)
    if backend == "bedrock" and sdks is not None:
        # Bedrock sends no Retry-After: a 429 leaves it cooling for the gateway's own back-off,
        # and the first request after that is the probe that ends it.
        time.sleep(BASE_COOLDOWN + 0.2)
        sdks["openai"].ask(Ask(BACKENDS[backend][0], "hello"))
        admin.reset()


def _failure(sdk: Any, ask: Ask) -> BaseException:
    try:
        sdk.ask(ask)
    except (openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError) as e:
        return e
    raise AssertionError("the request did not fail")


RATE_LIMIT_TYPES = {
    "openai": "requests",
    "anthropic": "rate_limit_error",
    "gemini": "RESOURCE_EXHAUSTED",
    "openai_responses": "requests",
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=PAIR_IDS)
def test_provider_429_is_429_in_client_format(
    error_stack: Any, client: str, backend: str, stream: bool
) -> None:
    admin, sdks = error_stack
    settle(admin, sdks, backend)
    admin.fault(backend, mode="rate_limit", retry_after=0.05)
    err = _failure(sdks[client], Ask(BACKENDS[backend][0], "hello", stream=stream))
    status, etype, message = _error_of(client, err)
    assert (status, etype) == (429, RATE_LIMIT_TYPES[client])
    assert admin.stats(backend)["by_status"] == {"429": 1}
    assert message  # the provider's words, never an empty body
    admin.reset()


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=PAIR_IDS)
def test_provider_refusing_the_gateway_key_is_502_in_client_format(
    error_stack: Any, client: str, backend: str, status: int
) -> None:
    """With no other backend, a provider's 401/403 reaches the client as the gateway's failure
    (502, its dialect's server error) naming the backend whose key was refused, never as a
    401/403 about the client's own key."""
    admin, sdks = error_stack
    settle(admin, sdks, backend)
    admin.fault(backend, mode="error", status=status)
    model = BACKENDS[backend][0]
    err = _failure(sdks[client], Ask(model, "hello"))
    got, etype, message = _error_of(client, err)
    assert (got, etype) == (
        502,
        {
            "openai": "server_error",
            "anthropic": "api_error",
            "gemini": "INTERNAL",
            "openai_responses": "server_error",
        }[client],
    )
    name = f"{backend}/{BACKENDS[backend][1]}"
    prefix = f"the provider of backend '{name}' refused the gateway's credentials (HTTP {status}: "
    assert message.startswith(prefix)
    assert message[len(prefix) :].strip(" )")  # the provider's own words follow
    admin.reset()
    # Once the provider takes the key again, so does the gateway (and Envoy's outlier detection,
    # which counts the 502s, sees a success before it would eject the backend).
    assert sdks[client].ask(Ask(model, "hello")).text.endswith("hello")


CONTEXT_MESSAGES = {  # backend -> how that provider words a context-length error
    "openai": "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "130000 tokens. Please reduce the length of the messages.",
    "anthropic": "prompt is too long: 210000 tokens > 200000 maximum",
    "gemini": "The input token count (1100000) exceeds the maximum number of tokens allowed (1048576).",
    "bedrock": "Input is too long for requested model.",
    "openai_responses": "Your input exceeds the context window of this model. Please adjust your input and try "
    "again.",
}


@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=PAIR_IDS)
def test_context_length_is_400_in_client_format(error_stack: Any, client: str, backend: str) -> None:
    admin, sdks = error_stack
    settle(admin, sdks, backend)
    admin.fault(backend, mode="error", status=400, message=CONTEXT_MESSAGES[backend])
    err = _failure(sdks[client], Ask(BACKENDS[backend][0], "hello"))
    status, etype, message = _error_of(client, err)
    assert (status, message) == (400, CONTEXT_MESSAGES[backend])
    assert (
        etype
        == {
            "openai": "invalid_request_error",
            "anthropic": "invalid_request_error",
            "gemini": "INVALID_ARGUMENT",
            "openai_responses": "invalid_request_error",
        }[client]
    )
    if (
        client in ("openai", "openai_responses") and backend != client
    ):  # same dialect: the provider's own body
        assert err.body["code"] == "context_length_exceeded"  # type: ignore[attr-defined]
    assert admin.stats(backend)["by_status"] == {"400": 1}
    admin.reset()


@pytest.mark.parametrize("client", CLIENTS)
def test_rate_limit_on_every_backend_is_429(error_stack: Any, client: str) -> None:
    """Last in this file: the failed chain leaves the backends cooling down for a while."""
    admin, sdks = error_stack
    admin.reset()
    for provider in BACKENDS:
        admin.fault(provider, mode="rate_limit", retry_after=0.05)
    err = _failure(sdks[client], Ask(ALL_THREE, "hello"))
    # From the last provider tried, or from the gateway itself once it knows all three are limited.
    assert _error_of(client, err)[:2] == (429, RATE_LIMIT_TYPES[client])
    assert not any("200" in admin.stats(p)["by_status"] for p in BACKENDS)
    admin.reset()


# ---- the README's conformance matrix ----------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- conformance-matrix:begin -->", "<!-- conformance-matrix:end -->"
LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gemini": "Gemini",
    "openai_responses": "OpenAI Responses",
    "bedrock": "Bedrock",
}


CLOUD_LABELS = {
    "vertex_gemini": "Gemini on Vertex AI",
    "vertex_anthropic": "Claude on Vertex AI",
    "azure_openai": "Azure OpenAI",
}


def matrix_markdown() -> str:
    """The README table: one row per client x backend pair, one column per cell, each cell the test id."""
    head = ["client SDK", "backend", *(c.replace("_", " ") for c in CELLS)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for test, pairs, ids, labels in (
        ("test_matrix", PAIRS, PAIR_IDS, LABELS),
        ("test_cloud_matrix", CLOUD_PAIRS, CLOUD_PAIR_IDS, CLOUD_LABELS),
    ):
        for (client, backend), pair in zip(pairs, ids, strict=True):
            cells = [f"`{test}[{pair}-{cell}]`" for cell in CELLS]
            rows.append(
                f"| {LABELS[client]} | {labels[backend]} ({ALL_BACKENDS[backend][0]}) | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(rows)


def test_readme_matrix_is_generated() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the conformance matrix markers"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == matrix_markdown(), "README matrix is stale: run python -m tests.test_translation_matrix"


if __name__ == "__main__":
    print(matrix_markdown())
