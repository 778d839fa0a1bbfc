"""The mock providers are as strict as the real ones, and produce what the real ones produce.

Each rule a mock enforces (see the comments citing the documentation in
``gateway_tools/mocks``) is exercised here over plain HTTP: the request the real provider
refuses gets the real status, error shape and wording, and the same request made valid passes.
The second half checks what the mocks can now produce: thinking with signatures, parallel tool
calls, refusals, cache usage, several candidates and tool arguments that conform to the tool's
schema."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import jsonschema
import pytest
from google.oauth2 import service_account
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.mocks.common import _tool_args
from gateway_tools.mocks.openai_chat import _oa_strict_problem
from gateway_tools.ports import free_port
from tests.cloud import LOCATION, PROJECT, service_account_key

OA, AN, GM = "oai", "claude", "gem"
KEYS = {
    OA: "sk-test-openai-0123456789abcdef",
    AN: "sk-ant-test-0123456789abcdef",
    GM: "gm-test-key-0123456789abcdef",
}
HEADERS = {
    OA: {"Authorization": f"Bearer {KEYS[OA]}"},
    AN: {"x-api-key": KEYS[AN], "anthropic-version": "2023-06-01"},
    GM: {"x-goog-api-key": KEYS[GM]},
}
MODEL = "test-model-1"


@pytest.fixture(scope="module")
def mocks() -> Any:
    bg = start_in_thread(
        [
            MockSpec(OA, "openai", 0, KEYS[OA]),
            MockSpec(AN, "anthropic", 0, KEYS[AN]),
            MockSpec(GM, "gemini", 0, KEYS[GM]),
        ]
    )
    yield bg
    bg.stop()


def _post(mocks: BackgroundMocks, name: str, path: str, body: Any) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[name], timeout=10)
    try:
        conn.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **HEADERS[name]}
        )
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode())
    finally:
        conn.close()


def _sse(raw: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in raw.splitlines()
        if line.startswith("data: ") and line[6:] != "[DONE]"
    ]


# --------------------------------------------------------------------------- Anthropic


def _an(messages: list[Any], **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 4096, "messages": messages, **kw}


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


AN_TOOL = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
THINK = {"type": "enabled", "budget_tokens": 2048}


def _tool_turn(first: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A conversation ending in a tool result; ``first`` opens the assistant turn."""
    use = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    return [
        _user("weather?"),
        {"role": "assistant", "content": [*(first or []), use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}]},
    ]


def _image(media_type: str) -> dict[str, Any]:
    """A base64 image block (a 1x1 PNG's bytes) labelled ``media_type``."""
    data = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _cached(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}


ANTHROPIC_RULES: list[tuple[str, dict[str, Any], dict[str, Any] | None, str]] = [
    (
        "whitespace-only text block",
        _an(
            [_user("hi"), {"role": "assistant", "content": [{"type": "text", "text": " \n"}]}, _user("go on")]
        ),
        _an(
            [_user("hi"), {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}, _user("go on")]
        ),
        "messages: text content blocks must contain non-whitespace text",
    ),
    (
        "whitespace-only user string",
        _an([_user("  ")]),
        _an([_user("hi")]),
        "messages: text content blocks must contain non-whitespace text",
    ),
    (
        "prefill ending in whitespace",
        _an([_user("hi"), {"role": "assistant", "content": "The answer is "}]),
        _an([_user("hi"), {"role": "assistant", "content": "The answer is"}]),
        "messages: final assistant content cannot end with trailing whitespace",
    ),
    (
        "thinking with tool_choice any",
        _an([_user("hi")], thinking=THINK, tools=[AN_TOOL], tool_choice={"type": "any"}),
        _an([_user("hi")], thinking=THINK, tools=[AN_TOOL], tool_choice={"type": "auto"}),
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
    (
        "thinking with a named tool_choice",
        _an(
            [_user("hi")],
            thinking=THINK,
            tools=[AN_TOOL],
            tool_choice={"type": "tool", "name": "get_weather"},
        ),
        _an([_user("hi")], thinking=THINK, tools=[AN_TOOL]),
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
    (
        "thinking with temperature below 1",
        _an([_user("hi")], thinking=THINK, temperature=0.5),
        _an([_user("hi")], thinking=THINK, temperature=1),
        "`temperature` may only be set to 1 when thinking is enabled",
    ),
    (
        "thinking with top_k",
        _an([_user("hi")], thinking=THINK, top_k=5),
        _an([_user("hi")], thinking=THINK),
        "`top_k` must be unset when thinking is enabled",
    ),
    (
        "budget_tokens below 1024",
        _an([_user("hi")], thinking={"type": "enabled", "budget_tokens": 1000}),
        _an([_user("hi")], thinking={"type": "enabled", "budget_tokens": 1024}),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    (
        "budget_tokens not below max_tokens",
        _an([_user("hi")], max_tokens=2048, thinking=THINK),
        _an([_user("hi")], max_tokens=2049, thinking=THINK),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    (
        "tool_use replayed without its thinking block",
        _an(_tool_turn(), thinking=THINK, tools=[AN_TOOL]),
        _an(_tool_turn(), tools=[AN_TOOL]),
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`.",
    ),
    (
        "a thinking block whose signature was changed",
        _an(
            _tool_turn([{"type": "thinking", "thinking": "hmm", "signature": "Zm9yZ2Vk"}]),
            thinking=THINK,
            tools=[AN_TOOL],
        ),
        _an(_tool_turn([{"type": "redacted_thinking", "data": "opaque"}]), thinking=THINK, tools=[AN_TOOL]),
        "messages.1.content.0: Invalid `signature` in `thinking` block",
    ),
    (
        "five cache breakpoints",
        _an([{"role": "user", "content": [_cached(w) for w in ["a", "b", "c", "d", "e"]]}]),
        _an([{"role": "user", "content": [_cached(w) for w in ["a", "b", "c", "d"]]}]),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    (
        "tool_use id outside the pattern",
        _an(
            [
                _user("hi"),
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "call.1", "name": "f", "input": {}}],
                },
            ]
        ),
        None,
        "tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
    ),
    (
        "tool name longer than 128 characters",
        _an([_user("hi")], tools=[{**AN_TOOL, "name": "t" * 129}]),
        _an([_user("hi")], tools=[{**AN_TOOL, "name": "t" * 128}]),
        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
    ),
    (
        "tool name with a dot",
        _an([_user("hi")], tools=[{**AN_TOOL, "name": "fs.read"}]),
        _an([_user("hi")], tools=[{**AN_TOOL, "name": "fs_read"}]),
        "tools.0.custom.name: String should match pattern",
    ),
    (
        "image media_type image/jpg",
        _an([{"role": "user", "content": [_image("image/jpg"), {"type": "text", "text": "what is it?"}]}]),
        _an([{"role": "user", "content": [_image("image/jpeg"), {"type": "text", "text": "what is it?"}]}]),
        "base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
    ),
    (
        "image media_type image/heic",
        _an([{"role": "user", "content": [_image("image/heic")]}]),
        _an([{"role": "user", "content": [_image("image/png")]}]),
        "base64.media_type: Input should be 'image/jpeg'",
    ),
]


@pytest.mark.parametrize(
    ("rule", "bad", "good", "message"), ANTHROPIC_RULES, ids=[r[0] for r in ANTHROPIC_RULES]
)
def test_anthropic_rejects_what_the_api_rejects(
    mocks: BackgroundMocks, rule: str, bad: dict[str, Any], good: dict[str, Any] | None, message: str
) -> None:
    status, body = _post(mocks, AN, "/v1/messages", bad)
    assert status == 400, body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert message in body["error"]["message"], body
    if good is not None:
        status, body = _post(mocks, AN, "/v1/messages", good)
        assert status == 200, (rule, body)


def test_anthropic_whitespace_block_next_to_text_passes(mocks: BackgroundMocks) -> None:
    content = [{"type": "text", "text": " "}, {"type": "text", "text": "hello"}]
    status, body = _post(mocks, AN, "/v1/messages", _an([{"role": "user", "content": content}]))
    assert status == 200, body


def test_anthropic_thinking_round_trip(mocks: BackgroundMocks) -> None:
    """Thinking on: a signed thinking block comes first; sent back as given, the tool loop goes on."""
    status, first = _post(
        mocks, AN, "/v1/messages", _an([_user("use tool for Paris")], thinking=THINK, tools=[AN_TOOL])
    )
    assert status == 200, first
    kinds = [b["type"] for b in first["content"]]
    assert kinds == ["thinking", "tool_use"]
    assert first["content"][0]["signature"] and first["content"][0]["thinking"]
    use = first["content"][1]
    assert use["input"] == {"city": "use tool for Paris"}
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "sunny"}],
    }
    history = [_user("use tool for Paris"), {"role": "assistant", "content": first["content"]}, result]
    status, second = _post(mocks, AN, "/v1/messages", _an(history, thinking=THINK, tools=[AN_TOOL]))
    assert status == 200, second
    assert second["content"][-1]["text"].endswith("tool result: sunny")
    dropped = [history[0], {"role": "assistant", "content": [use]}, result]
    status, third = _post(mocks, AN, "/v1/messages", _an(dropped, thinking=THINK, tools=[AN_TOOL]))
    assert status == 400, third


def test_anthropic_streams_thinking_then_text(mocks: BackgroundMocks) -> None:
    status, raw = _post(mocks, AN, "/v1/messages", _an([_user("hello there")], thinking=THINK, stream=True))
    assert status == 200
    events = _sse(raw)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    thought = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    assert thought == "Thinking about: hello there"
    assert [d["type"] for d in deltas].count("signature_delta") == 1
    assert "".join(d["text"] for d in deltas if d["type"] == "text_delta") == f"[{AN}:{MODEL}] hello there"


def test_anthropic_parallel_tool_calls_and_refusal(mocks: BackgroundMocks) -> None:
    other = {
        "name": "get_time",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}},
    }
    status, body = _post(
        mocks, AN, "/v1/messages", _an([_user("use all tools please")], tools=[AN_TOOL, other])
    )
    assert status == 200, body
    assert [(b["name"], b["input"]) for b in body["content"]] == [
        ("get_weather", {"city": "use all tools please"}),
        ("get_time", {"tz": "UTC"}),
    ]
    one = {"type": "auto", "disable_parallel_tool_use": True}
    status, body = _post(
        mocks, AN, "/v1/messages", _an([_user("use all tools")], tools=[AN_TOOL, other], tool_choice=one)
    )
    assert status == 200 and body["stop_reason"] == "end_turn", body  # no parallel calls: plain text
    status, body = _post(mocks, AN, "/v1/messages", _an([_user("refuse this")]))
    assert status == 200 and body["stop_reason"] == "refusal", body


def test_anthropic_cache_write_then_read(mocks: BackgroundMocks) -> None:
    """A breakpoint after 1200 words: written on the first request, read on the second."""
    system = [_cached(" ".join(f"w{k}" for k in range(1200)))]
    body = _an([_user("question one")], system=system)
    status, first = _post(mocks, AN, "/v1/messages", body)
    assert status == 200, first
    assert first["usage"]["cache_creation_input_tokens"] == 1200
    assert first["usage"]["cache_read_input_tokens"] == 0
    assert first["usage"]["input_tokens"] == 2
    status, second = _post(mocks, AN, "/v1/messages", _an([_user("question two")], system=system))
    assert status == 200, second
    assert second["usage"]["cache_read_input_tokens"] == 1200
    assert second["usage"]["cache_creation_input_tokens"] == 0
    short = _an([_user("hi")], system=[_cached("too short to cache")])
    status, third = _post(mocks, AN, "/v1/messages", short)
    assert status == 200, third
    assert third["usage"]["cache_creation_input_tokens"] == 0  # under the model's minimum


# --------------------------------------------------------------------------- OpenAI


def _oa(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [_user("hello")], **kw}


def _fn(name: str = "get_weather", **kw: Any) -> dict[str, Any]:
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": name, "parameters": params, **kw}}


STRICT_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}

OPENAI_RULES: list[tuple[str, dict[str, Any], dict[str, Any] | None, str, str | None]] = [
    (
        "json_object without the word json",
        _oa(response_format={"type": "json_object"}),
        _oa(messages=[_user("answer in JSON")], response_format={"type": "json_object"}),
        "'messages' must contain the word 'json' in some form",
        "messages",
    ),
    (
        "json_schema without a name",
        _oa(response_format={"type": "json_schema", "json_schema": {"schema": STRICT_SCHEMA}}),
        _oa(response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": STRICT_SCHEMA}}),
        "Missing required parameter: 'response_format.json_schema.name'.",
        "response_format.json_schema.name",
    ),
    (
        "strict json_schema without additionalProperties false",
        _oa(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "out",
                    "strict": True,
                    "schema": {**STRICT_SCHEMA, "additionalProperties": True},
                },
            }
        ),
        _oa(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "strict": True, "schema": STRICT_SCHEMA},
            }
        ),
        "Invalid schema for response_format 'out': In context=(), 'additionalProperties' is required to be supplied and to be false.",
        "response_format",
    ),
    (
        "strict json_schema with an optional property",
        _oa(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "strict": True, "schema": {**STRICT_SCHEMA, "required": []}},
            }
        ),
        None,
        "'required' is required to be supplied and to be an array including every key in properties. Missing 'a'.",
        "response_format",
    ),
    (
        "strict function without additionalProperties false",
        _oa(tools=[_fn(strict=True)]),
        _oa(
            tools=[
                {"type": "function", "function": {"name": "f", "strict": True, "parameters": STRICT_SCHEMA}}
            ]
        ),
        "Invalid schema for function 'get_weather': In context=(), 'additionalProperties' is required",
        "tools[0].function.parameters",
    ),
    (
        "top_logprobs without logprobs",
        _oa(top_logprobs=3),
        _oa(top_logprobs=3, logprobs=True),
        "'logprobs': must be true when 'top_logprobs' is specified",
        "logprobs",
    ),
    (
        "top_logprobs above 20",
        _oa(top_logprobs=21, logprobs=True),
        _oa(top_logprobs=20, logprobs=True),
        "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, but got 21 instead.",
        "top_logprobs",
    ),
    (
        "max_tokens above the model's output limit",
        _oa(model="gpt-4o", max_tokens=16385),
        _oa(model="gpt-4o", max_tokens=16384),
        "max_tokens is too large: 16385. This model supports at most 16384 completion tokens",
        "max_tokens",
    ),
    (
        "max_completion_tokens above the model's output limit",
        _oa(model="gpt-4.1-mini", max_completion_tokens=40000),
        _oa(model="gpt-4.1-mini", max_completion_tokens=32768),
        "max_completion_tokens is too large: 40000. This model supports at most 32768 completion tokens",
        "max_completion_tokens",
    ),
    (
        "max_tokens on a reasoning model",
        _oa(model="o3-mini", max_tokens=100),
        _oa(model="o3-mini", max_completion_tokens=100),
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "max_tokens",
    ),
    (
        "temperature on a reasoning model",
        _oa(model="o4-mini", temperature=0.2),
        _oa(model="o4-mini", temperature=1),
        "Unsupported value: 'temperature' does not support 0.2 with this model.",
        "temperature",
    ),
    (
        "max_tokens on a gpt-5 model",
        _oa(model="gpt-5.5", max_tokens=100),
        _oa(model="gpt-5.5", max_completion_tokens=100),
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "max_tokens",
    ),
    (
        "max_tokens on gpt-5-mini",
        _oa(model="gpt-5-mini", max_tokens=100),
        _oa(model="gpt-5-chat-latest", max_tokens=100),  # the chat-tuned variant is no reasoning model
        "Unsupported parameter: 'max_tokens' is not supported with this model.",
        "max_tokens",
    ),
    (
        "temperature on gpt-5 (5.0), whatever the effort",
        _oa(model="gpt-5-mini", temperature=0.5),
        _oa(model="gpt-5-mini", temperature=1, reasoning_effort="low"),
        "Unsupported value: 'temperature' does not support 0.5 with this model. Only the default (1) value is supported.",
        "temperature",
    ),
    (
        "temperature on gpt-5.5 while it reasons",
        _oa(model="gpt-5.5", temperature=0.5, reasoning_effort="high"),
        _oa(model="gpt-5.5", temperature=0.5, reasoning_effort="none"),
        "Unsupported value: 'temperature' does not support 0.5 with this model.",
        "temperature",
    ),
    (
        "temperature on gpt-5.5 with its default effort (none) is taken",
        _oa(model="gpt-5.5", temperature=0.5, reasoning_effort="low"),
        _oa(model="gpt-5.5", temperature=0.5),
        "Only the default (1) value is supported.",
        "temperature",
    ),
    (
        "top_p on a reasoning model",
        _oa(model="o3", top_p=0.5),
        _oa(model="o3", top_p=1),
        "Unsupported parameter: 'top_p' is not supported with this model.",
        "top_p",
    ),
    (
        "top_p on gpt-5.5 while it reasons",
        _oa(model="gpt-5.5", top_p=0.9, reasoning_effort="medium"),
        _oa(model="gpt-5.5", top_p=0.9),
        "Unsupported parameter: 'top_p' is not supported with this model.",
        "top_p",
    ),
    (
        "five stop sequences",
        _oa(stop=["a", "b", "c", "d", "e"]),
        _oa(stop=["a", "b", "c", "d"]),
        "Invalid 'stop': array too long. Expected an array with maximum length 4",
        "stop",
    ),
    (
        "tool name longer than 64 characters",
        _oa(tools=[_fn("f" * 65)]),
        _oa(tools=[_fn("f" * 64)]),
        "Invalid 'tools[0].function.name': string too long. Expected a string with maximum length 64",
        "tools[0].function.name",
    ),
    (
        "tool name with a dot",
        _oa(tools=[_fn("fs.read")]),
        _oa(tools=[_fn("fs_read")]),
        "Invalid 'tools[0].function.name': string does not match pattern.",
        "tools[0].function.name",
    ),
]


@pytest.mark.parametrize(
    ("rule", "bad", "good", "message", "param"), OPENAI_RULES, ids=[r[0] for r in OPENAI_RULES]
)
def test_openai_rejects_what_the_api_rejects(
    mocks: BackgroundMocks,
    rule: str,
    bad: dict[str, Any],
    good: dict[str, Any] | None,
    message: str,
    param: str | None,
) -> None:
    status, body = _post(mocks, OA, "/v1/chat/completions", bad)
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert message in body["error"]["message"], body
    assert body["error"]["param"] == param
    if good is not None:
        status, body = _post(mocks, OA, "/v1/chat/completions", good)
        assert status == 200, (rule, body)


# --------------------------------------------------------------------------- OpenAI Responses API


def _rs(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "hello", **kw}


def _rs_fn(name: str = "get_weather", **kw: Any) -> dict[str, Any]:
    """A Responses function tool (flat: name and parameters beside the type)."""
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "name": name, "parameters": params, **kw}


def _turns(item: dict[str, Any]) -> list[dict[str, Any]]:
    """A conversation with ``item`` between two user turns."""
    return [_user("hi"), item, _user("go on")]


def _said(item_id: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "id": item_id,
        "content": [{"type": "output_text", "text": "ok"}],
    }


def _called(item_id: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "{}",
    }


def _parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": "look"}, *parts]}]


def _schema_format(schema: dict[str, Any], name: str = "out", strict: bool = True) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "name": name, "strict": strict, "schema": schema}}


IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}
LONG_KEY = "k" * 65
# (rule, bad request, the same request made valid or None, message fragment, param, code)
RESPONSES_RULES: list[tuple[str, dict[str, Any], dict[str, Any] | None, str, str, str | None]] = [
    (
        "unknown parameter",
        _rs(max_completion_tokens=100),
        _rs(max_output_tokens=100),
        "Unknown parameter: 'max_completion_tokens'.",
        "max_completion_tokens",
        "unknown_parameter",
    ),
    (
        "unknown field of an input item",
        _rs(input=[{"role": "user", "content": "hi", "name": "bob"}]),
        _rs(input=[{"role": "user", "content": "hi"}]),
        "Unknown parameter: 'input[0].name'.",
        "input[0].name",
        "unknown_parameter",
    ),
    (
        "a Chat Completions tool (no name beside its type)",
        _rs(tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]),
        _rs(tools=[_rs_fn(strict=False)]),
        "Missing required parameter: 'tools[0].name'.",
        "tools[0].name",
        "missing_required_parameter",
    ),
    (
        "assistant message id without the msg prefix",
        _rs(input=_turns(_said("item_3bc5a3fa"))),
        _rs(input=_turns(_said("msg_3bc5a3fa"))),
        "Invalid 'input[1].id': 'item_3bc5a3fa'. Expected an ID that begins with 'msg'.",
        "input[1].id",
        "invalid_value",
    ),
    (
        "function_call id without the fc prefix",
        _rs(input=_turns(_called("call_1"))),
        _rs(input=_turns(_called("fc_1"))),
        "Invalid 'input[1].id': 'call_1'. Expected an ID that begins with 'fc'.",
        "input[1].id",
        "invalid_value",
    ),
    (
        "input_image with neither image_url nor file_id",
        _rs(input=_parts({"type": "input_image", "detail": "auto"})),
        _rs(input=_parts({**IMAGE, "detail": "auto"})),
        "Invalid 'input[0].content[1]': one of 'image_url' or 'file_id' must be provided.",
        "input[0].content[1]",
        "missing_required_parameter",
    ),
    (
        "input_image with a URL that is neither http(s) nor data",
        _rs(input=_parts({"type": "input_image", "image_url": "example.com/cat.png"})),
        _rs(input=_parts({"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="})),
        "Invalid 'input[0].content[1].image_url'. Expected a valid URL",
        "input[0].content[1].image_url",
        "invalid_value",
    ),
    (
        "input_image detail outside its values",
        _rs(input=_parts({**IMAGE, "detail": "medium"})),
        _rs(input=_parts({**IMAGE, "detail": "high"})),
        "Invalid value: 'medium'. Supported values are: 'low', 'high', 'auto', and 'original'.",
        "input[0].content[1].detail",
        "invalid_value",
    ),
    (
        "input_image with a Chat Completions image_url object's key",
        _rs(input=_parts({**IMAGE, "url": "https://example.com/cat.png"})),
        _rs(input=_parts(IMAGE)),
        "Unknown parameter: 'input[0].content[1].url'.",
        "input[0].content[1].url",
        "unknown_parameter",
    ),
    (
        "input_file with no data, id or URL",
        _rs(input=_parts({"type": "input_file", "filename": "a.pdf"})),
        _rs(
            input=_parts({"type": "input_file", "filename": "a.pdf", "file_url": "https://example.com/a.pdf"})
        ),
        "Invalid 'input[0].content[1]': one of 'file_data', 'file_id' or 'file_url' must be provided.",
        "input[0].content[1]",
        "missing_required_parameter",
    ),
    (
        "input_file with an unknown key",
        _rs(input=_parts({"type": "input_file", "file_id": "file-1", "mime_type": "application/pdf"})),
        _rs(input=_parts({"type": "input_file", "file_id": "file-1"})),
        "Unknown parameter: 'input[0].content[1].mime_type'.",
        "input[0].content[1].mime_type",
        "unknown_parameter",
    ),
    (
        "an input part in an assistant message",
        _rs(input=_turns({"role": "assistant", "content": [{"type": "input_text", "text": "ok"}]})),
        _rs(input=_turns({"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]})),
        "Invalid value: 'input_text'. Supported values are: 'output_text' and 'refusal'.",
        "input[1].content[0].type",
        "invalid_value",
    ),
    (
        "function tool strict by default with an open schema",
        _rs(tools=[_rs_fn()]),
        _rs(tools=[_rs_fn(strict=False)]),
        "Invalid schema for function 'get_weather': In context=(), 'additionalProperties' is required to be "
        "supplied and to be false.",
        "tools[0].parameters",
        "invalid_function_parameters",
    ),
    (
        "strict function tool with an optional property",
        _rs(tools=[_rs_fn(parameters={**STRICT_SCHEMA, "required": []})]),
        _rs(tools=[_rs_fn(parameters=STRICT_SCHEMA)]),
        "'required' is required to be supplied and to be an array including every key in properties. "
        "Missing 'a'.",
        "tools[0].parameters",
        "invalid_function_parameters",
    ),
    (
        "strict json_schema format with a nested open object",
        _rs(
            text=_schema_format({**STRICT_SCHEMA, "properties": {"a": {"type": "object", "properties": {}}}})
        ),
        _rs(text=_schema_format(STRICT_SCHEMA)),
        "Invalid schema for response_format 'out': In context=('properties', 'a'), 'additionalProperties' "
        "is required to be supplied and to be false.",
        "text.format.schema",
        None,
    ),
    (
        "tool name with a dot",
        _rs(tools=[_rs_fn("fs.read", strict=False)]),
        _rs(tools=[_rs_fn("fs_read", strict=False)]),
        "Invalid 'tools[0].name': string does not match pattern. Expected a string that matches the "
        "pattern '^[a-zA-Z0-9_-]+$'.",
        "tools[0].name",
        "invalid_value",
    ),
    (
        "tool name longer than 64 characters",
        _rs(tools=[_rs_fn("f" * 65, strict=False)]),
        _rs(tools=[_rs_fn("f" * 64, strict=False)]),
        "Invalid 'tools[0].name': string too long. Expected a string with maximum length 64, but got a "
        "string with length 65 instead.",
        "tools[0].name",
        "string_above_max_length",
    ),
    (
        "tool_choice naming a function that is not among the tools",
        _rs(tools=[_rs_fn(strict=False)], tool_choice={"type": "function", "name": "get_time"}),
        _rs(tools=[_rs_fn(strict=False)], tool_choice={"type": "function", "name": "get_weather"}),
        "Tool choice 'function' not found in 'tools' parameter.",
        "tool_choice",
        None,
    ),
    (
        "message role tool (a Chat Completions role)",
        _rs(input=[{"role": "tool", "content": "sunny"}]),
        _rs(input=[{"role": "developer", "content": "be brief"}, _user("hi")]),
        "Invalid value: 'tool'. Supported values are: 'user', 'assistant', 'system', and 'developer'.",
        "input[0].role",
        "invalid_value",
    ),
    (
        "text.format name with a space",
        _rs(text=_schema_format(STRICT_SCHEMA, name="my answer")),
        _rs(text=_schema_format(STRICT_SCHEMA, name="my_answer")),
        "Invalid 'text.format.name': string does not match pattern. Expected a string that matches the "
        "pattern '^[a-zA-Z0-9_-]+$'.",
        "text.format.name",
        "invalid_value",
    ),
    (
        "text.format json_schema without a name",
        _rs(text={"format": {"type": "json_schema", "schema": STRICT_SCHEMA}}),
        _rs(text={"format": {"type": "json_schema", "name": "out", "schema": STRICT_SCHEMA}}),
        "Missing required parameter: 'text.format.name'.",
        "text.format.name",
        "missing_required_parameter",
    ),
    (
        "conversation together with previous_response_id",
        _rs(conversation="conv_1", previous_response_id="resp_1"),
        None,
        "Mutually exclusive parameters: 'conversation' and 'previous_response_id'.",
        "conversation",
        "mutually_exclusive_parameters",
    ),
    (
        "metadata with 17 pairs",
        _rs(metadata={f"k{i}": "v" for i in range(17)}),
        _rs(metadata={f"k{i}": "v" for i in range(16)}),
        "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an "
        "object with 17 properties instead.",
        "metadata",
        "object_above_max_properties",
    ),
    (
        "metadata value longer than 512 characters",
        _rs(metadata={"note": "x" * 513}),
        _rs(metadata={"note": "x" * 512}),
        "Invalid 'metadata.note': string too long. Expected a string with maximum length 512, but got a "
        "string with length 513 instead.",
        "metadata.note",
        "string_above_max_length",
    ),
    (
        "metadata key longer than 64 characters",
        _rs(metadata={LONG_KEY: "v"}),
        _rs(metadata={LONG_KEY[:64]: "v"}),
        "string too long. Expected a string with maximum length 64, but got a string with length 65 instead.",
        f"metadata.{LONG_KEY}",
        "string_above_max_length",
    ),
    (
        "metadata value that is not a string",
        _rs(metadata={"n": 5}),
        _rs(metadata={"n": "5"}),
        "Invalid type for 'metadata.n': expected a string, but got an integer instead.",
        "metadata.n",
        "invalid_type",
    ),
]


@pytest.mark.parametrize(
    ("rule", "bad", "good", "message", "param", "code"), RESPONSES_RULES, ids=[r[0] for r in RESPONSES_RULES]
)
def test_responses_rejects_what_the_api_rejects(
    mocks: BackgroundMocks,
    rule: str,
    bad: dict[str, Any],
    good: dict[str, Any] | None,
    message: str,
    param: str,
    code: str | None,
) -> None:
    """Each rule of the mock's POST /v1/responses: the API's 400 body (type, message, param, code),
    and the same request made valid passes."""
    status, body = _post(mocks, OA, "/v1/responses", bad)
    assert status == 400, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error"
    assert message in body["error"]["message"], body
    assert (body["error"]["param"], body["error"]["code"]) == (param, code), body
    if good is not None:
        status, body = _post(mocks, OA, "/v1/responses", good)
        assert status == 200, (rule, body)


def test_responses_parallel_calls_are_one_item_each() -> None:
    """``use all tools`` on the Responses API: one ``function_call`` item per declared tool, plain
    and streamed (the mock used to answer only the first call; found by the agent corpus)."""
    bg = start_in_thread([MockSpec(OA, "openai", 0, KEYS[OA])])
    try:
        tools = [
            {
                "type": "function",
                "name": n,
                "strict": False,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
            for n in ("first", "second", "third")
        ]
        body = {"model": MODEL, "input": "use all tools", "tools": tools}
        status, out = _post(bg, OA, "/v1/responses", body)
        assert status == 200, out
        calls = [o for o in out["output"] if o["type"] == "function_call"]
        assert [c["name"] for c in calls] == ["first", "second", "third"]
        assert len({c["call_id"] for c in calls}) == 3
        status, raw = _post(bg, OA, "/v1/responses", {**body, "stream": True})
        added = [e["item"]["name"] for e in _sse(raw) if e.get("type") == "response.output_item.added"]
        assert status == 200 and added == ["first", "second", "third"], raw
        status, out = _post(bg, OA, "/v1/responses", {**body, "parallel_tool_calls": False})
        assert [o["type"] for o in out["output"]] == ["message"], out  # no parallel calls: plain text
    finally:
        bg.stop()


def test_openai_parallel_calls_conforming_arguments_and_choices(mocks: BackgroundMocks) -> None:
    nested = {
        "type": "function",
        "function": {
            "name": "plan",
            "parameters": {
                "type": "object",
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 2,
                        "items": {
                            "type": "object",
                            "properties": {"n": {"type": "integer", "minimum": 5}},
                            "required": ["n"],
                        },
                    },
                    "mode": {"type": "string", "enum": ["fast", "slow"]},
                    "when": {"type": "string", "format": "date"},
                    "note": {"type": "string"},
                },
                "required": ["steps", "mode", "when"],
            },
        },
    }
    status, body = _post(
        mocks, OA, "/v1/chat/completions", _oa(messages=[_user("use all tools")], tools=[_fn(), nested], n=2)
    )
    assert status == 200, body
    assert len(body["choices"]) == 2
    for choice in body["choices"]:
        calls = choice["message"]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["get_weather", "plan"]
        assert json.loads(calls[0]["function"]["arguments"]) == {"city": "use all tools"}
        assert json.loads(calls[1]["function"]["arguments"]) == {
            "steps": [{"n": 5}, {"n": 5}],
            "mode": "fast",
            "when": "2025-01-01",
        }
    ids = [c["id"] for ch in body["choices"] for c in ch["message"]["tool_calls"]]
    assert len(set(ids)) == 4
    status, body = _post(
        mocks,
        OA,
        "/v1/chat/completions",
        _oa(messages=[_user("use all tools")], tools=[_fn(), nested], parallel_tool_calls=False),
    )
    assert body["choices"][0]["finish_reason"] == "stop"  # parallel calls off: no call on this marker

    status, raw = _post(
        mocks,
        OA,
        "/v1/chat/completions",
        _oa(messages=[_user("use all tools")], tools=[_fn(), nested], stream=True),
    )
    calls: dict[int, dict[str, Any]] = {}
    for chunk in _sse(raw):
        for piece in chunk["choices"][0]["delta"].get("tool_calls") or [] if chunk["choices"] else []:
            call = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
            call["name"] += piece.get("function", {}).get("name") or ""
            call["arguments"] += piece.get("function", {}).get("arguments") or ""
    assert [calls[k]["name"] for k in sorted(calls)] == ["get_weather", "plan"]
    assert json.loads(calls[0]["arguments"]) == {"city": "use all tools"}


def test_openai_refusal_reasoning_and_cached_tokens(mocks: BackgroundMocks) -> None:
    status, body = _post(mocks, OA, "/v1/chat/completions", _oa(messages=[_user("refuse to help")]))
    assert status == 200, body
    msg = body["choices"][0]["message"]
    assert msg["content"] is None and msg["refusal"].startswith("I can't help with that")
    status, raw = _post(
        mocks, OA, "/v1/chat/completions", _oa(messages=[_user("refuse to help")], stream=True)
    )
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in _sse(raw) if c["choices"])
    assert refusal == msg["refusal"]
    status, body = _post(mocks, OA, "/v1/chat/completions", _oa(model="o3", reasoning_effort="low"))
    assert status == 200, body
    details = body["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == 3 and body["usage"]["completion_tokens"] == 3 + 2
    long = " ".join(f"w{k}" for k in range(1300))
    first = _oa(messages=[{"role": "system", "content": long}, _user("one")])
    status, body = _post(mocks, OA, "/v1/chat/completions", first)
    assert status == 200, body
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    second = _oa(messages=[{"role": "system", "content": long}, _user("two")])
    status, body = _post(mocks, OA, "/v1/chat/completions", second)
    assert status == 200, body
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1280  # 128-token increments


# --------------------------------------------------------------------------- Gemini


def _gm(contents: list[Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"contents": contents or [{"role": "user", "parts": [{"text": "hello"}]}], **kw}


GM_TOOLS = [
    {"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": AN_TOOL["input_schema"]}]}
]


def _gm_loop(call_part: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [call_part]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}],
        },
    ]


CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}

GEMINI_RULES: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, str]] = [
    (
        "function call replayed without its thought signature",
        "gemini-3.5-flash",
        _gm(_gm_loop(CALL), tools=GM_TOOLS),
        _gm(_gm_loop({**CALL, "thoughtSignature": "skip_thought_signature_validator"}), tools=GM_TOOLS),
        "Function call is missing a thought_signature in functionCall parts.",
    ),
    (
        "function call replayed with a forged thought signature",
        "gemini-3.5-flash",
        _gm(_gm_loop({**CALL, "thoughtSignature": "Zm9yZ2Vk"}), tools=GM_TOOLS),
        None,
        "Corrupted thought signature.",
    ),
    (
        "parametersJsonSchema that is not an object schema",
        MODEL,
        _gm(tools=[{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "string"}}]}]),
        _gm(tools=[{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}]),
        "parameters_json_schema: Invalid JSON schema: must describe an object",
    ),
    (
        "parametersJsonSchema with an unknown type",
        MODEL,
        _gm(
            tools=[
                {
                    "functionDeclarations": [
                        {
                            "name": "f",
                            "parametersJsonSchema": {"type": "object", "properties": {"a": {"type": "text"}}},
                        }
                    ]
                }
            ]
        ),
        None,
        'Invalid JSON schema: unknown type "text"',
    ),
    (
        "six stop sequences",
        MODEL,
        _gm(generationConfig={"stopSequences": list("abcdef")}),
        _gm(generationConfig={"stopSequences": list("abcde")}),
        "stop_sequences: at most 5 stop sequences",
    ),
    (
        "a Cloud Storage fileData URI",
        MODEL,
        _gm(
            [
                {
                    "role": "user",
                    "parts": [
                        {"text": "see"},
                        {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/x.png"}},
                    ],
                }
            ]
        ),
        _gm(
            [
                {
                    "role": "user",
                    "parts": [
                        {"text": "see"},
                        {
                            "fileData": {
                                "mimeType": "image/png",
                                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
                            }
                        },
                    ],
                }
            ]
        ),
        "Invalid or unsupported file uri: gs://b/x.png",
    ),
    (
        "thinking budget together with a level",
        "gemini-3.5-flash",
        _gm(generationConfig={"thinkingConfig": {"thinkingBudget": 1024, "thinkingLevel": "low"}}),
        _gm(generationConfig={"thinkingConfig": {"thinkingLevel": "low"}}),
        "You can only set only one of thinking budget and thinking level.",
    ),
    (
        "thinking level on a Gemini 2.5 model",
        "gemini-2.5-flash",
        _gm(generationConfig={"thinkingConfig": {"thinkingLevel": "high"}}),
        _gm(generationConfig={"thinkingConfig": {"thinkingBudget": 1024}}),
        "Thinking level is not supported for this model.",
    ),
    (
        "thinking budget out of the model's range",
        "gemini-2.5-pro",
        _gm(generationConfig={"thinkingConfig": {"thinkingBudget": 64}}),
        _gm(generationConfig={"thinkingConfig": {"thinkingBudget": 128}}),
        "The thinking budget (64) is invalid.",
    ),
]


@pytest.mark.parametrize(
    ("rule", "model", "bad", "good", "message"), GEMINI_RULES, ids=[r[0] for r in GEMINI_RULES]
)
def test_gemini_rejects_what_the_api_rejects(
    mocks: BackgroundMocks,
    rule: str,
    model: str,
    bad: dict[str, Any],
    good: dict[str, Any] | None,
    message: str,
) -> None:
    path = f"/v1beta/models/{model}:generateContent"
    status, body = _post(mocks, GM, path, bad)
    assert status == 400, body
    assert body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["code"] == 400
    assert message in body["error"]["message"], body
    if good is not None:
        status, body = _post(mocks, GM, path, good)
        assert status == 200, (rule, body)


def test_gemini_signatures_round_trip_and_older_turns_are_free(mocks: BackgroundMocks) -> None:
    """Gemini 3: the call comes with a signature; replayed as given the loop goes on. Calls of an
    earlier turn (before the latest user text) need none."""
    path = "/v1beta/models/gemini-3.5-flash:generateContent"
    user = {"role": "user", "parts": [{"text": "use all tools"}]}
    tools = [{"functionDeclarations": [GM_TOOLS[0]["functionDeclarations"][0], {"name": "get_time"}]}]
    status, body = _post(mocks, GM, path, _gm([user], tools=tools))
    assert status == 200, body
    parts = body["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in parts] == ["get_weather", "get_time"]
    assert "thoughtSignature" in parts[0] and "thoughtSignature" not in parts[1]
    assert parts[0]["functionCall"]["args"] == {"city": "use all tools"}
    assert parts[1]["functionCall"]["args"] == {"echo": "use all tools"}
    responses = {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": p["functionCall"]["name"], "response": {"result": "ok"}}}
            for p in parts
        ],
    }
    status, body = _post(
        mocks, GM, path, _gm([user, {"role": "model", "parts": parts}, responses], tools=tools)
    )
    assert status == 200, body
    older = [
        *_gm_loop(CALL),
        {"role": "model", "parts": [{"text": "It is sunny."}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    status, body = _post(mocks, GM, path, _gm(older, tools=GM_TOOLS))
    assert status == 200, body


def test_gemini_thoughts_candidates_refusal_and_cache(mocks: BackgroundMocks) -> None:
    path = "/v1beta/models/gemini-3.5-flash:generateContent"
    config = {"thinkingConfig": {"includeThoughts": True}, "candidateCount": 2}
    status, body = _post(mocks, GM, path, _gm(generationConfig=config))
    assert status == 200, body
    assert len(body["candidates"]) == 2
    for cand in body["candidates"]:
        assert cand["content"]["parts"][0] == {"text": "Thinking about: hello", "thought": True}
        assert cand["content"]["parts"][1]["text"] == f"[{GM}:gemini-3.5-flash] hello"
    assert body["usageMetadata"]["thoughtsTokenCount"] == 3 * 2
    status, body = _post(mocks, GM, path, _gm([{"role": "user", "parts": [{"text": "refuse now"}]}]))
    assert status == 200, body
    assert body["candidates"][0]["finishReason"] == "SAFETY" and "content" not in body["candidates"][0]
    long = " ".join(f"w{k}" for k in range(1100))
    for expected in (None, 1024):
        status, body = _post(mocks, GM, path, _gm([{"role": "user", "parts": [{"text": long}]}]))
        assert status == 200, body
        assert body["usageMetadata"].get("cachedContentTokenCount") == expected


# --------------------------------------------------------------------------- properties of the argument generator

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@st.composite
def _numbers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["integer", "number"]))
    schema: dict[str, Any] = {"type": kind}
    lo = draw(st.none() | st.integers(-50, 50))
    if lo is not None:
        schema[draw(st.sampled_from(["minimum", "exclusiveMinimum"]))] = lo
    hi = draw(st.none() | st.integers(lo + 2 if lo is not None else -50, 120))
    if hi is not None:
        schema[draw(st.sampled_from(["maximum", "exclusiveMaximum"]))] = hi
    return schema


@st.composite
def _strings(draw: st.DrawFn) -> dict[str, Any]:
    choice = draw(st.sampled_from(["plain", "enum", "format", "length"]))
    if choice == "enum":
        return {"type": "string", "enum": draw(st.lists(_names, min_size=1, max_size=3, unique=True))}
    if choice == "format":
        return {
            "type": "string",
            "format": draw(st.sampled_from(["date", "date-time", "email", "uuid", "ipv4"])),
        }
    if choice == "length":
        lo = draw(st.integers(0, 30))
        return {"type": "string", "minLength": lo, "maxLength": draw(st.integers(max(lo, 1), 40))}
    return {"type": "string"}


_leaves = _numbers() | _strings() | st.just({"type": "boolean"}) | st.just({"type": ["string", "null"]})


def _containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        if draw(st.booleans()):
            lo = draw(st.integers(0, 3))
            return {
                "type": "array",
                "items": draw(children),
                "minItems": lo,
                "maxItems": draw(st.integers(max(lo, 1), 5)),
            }
        props = draw(st.dictionaries(_names, children, max_size=4))
        required = draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    return build()


_schemas = st.recursive(_leaves, _containers, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(props=st.dictionaries(_names, _schemas, max_size=5), data=st.data(), text=st.text(max_size=40))
def test_tool_arguments_always_conform_to_the_tool_schema(
    props: dict[str, Any], data: st.DataObject, text: str
) -> None:
    """Whatever schema a tool declares, the arguments a mock calls it with validate against it."""
    required = data.draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
    schema = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    args = _tool_args(schema, text)
    jsonschema.validate(args, schema, format_checker=jsonschema.FormatChecker())
    assert set(args) == set(required or props)  # minimal: the required ones (all when none is)


@settings(max_examples=200, deadline=None)
@given(schema=_schemas)
def test_strict_schema_check_accepts_closed_schemas_and_finds_open_ones(schema: dict[str, Any]) -> None:
    """The OpenAI mock's strict-schema check: a schema whose every object is closed and fully
    required passes; opening any object is reported."""

    def close(s: Any) -> Any:
        if not isinstance(s, dict):
            return s
        out = {k: close(v) for k, v in s.items() if k != "properties"}
        if "properties" in s:
            out["properties"] = {k: close(v) for k, v in s["properties"].items()}
            out["required"] = list(s["properties"])
        if "items" in s:
            out["items"] = close(s["items"])
        return out

    root = {
        "type": "object",
        "properties": {"x": close(schema)},
        "required": ["x"],
        "additionalProperties": False,
    }
    assert _oa_strict_problem(root, root) is None
    opened = {**root, "additionalProperties": True}
    assert _oa_strict_problem(opened, opened) is not None


def test_vertex_takes_cloud_storage_uris_the_gemini_api_refuses(
    mocks: BackgroundMocks, tmp_path: Path
) -> None:
    """fileData URIs: gs:// is Vertex AI's (Vertex "Gemini API reference"), refused by the Gemini API."""
    port = free_port()
    key = service_account_key(tmp_path / "sa.json", f"http://127.0.0.1:{port}/token")
    vertex = start_in_thread([MockSpec("vx", "vertex_gemini", port, "", credentials_file=str(key))])
    try:
        creds = service_account.Credentials.from_service_account_file(
            str(key), scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        creds.refresh(google.auth.transport.requests.Request())
        part = {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.png"}}
        body = _gm([{"role": "user", "parts": [{"text": "see"}, part]}])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        path = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/gemini-3.5-flash:generateContent"
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {creds.token}"},
        )
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
    finally:
        vertex.stop()
    status, refused = _post(mocks, GM, f"/v1beta/models/{MODEL}:generateContent", body)
    assert (
        status == 400
        and refused["error"]["message"] == "Invalid or unsupported file uri: gs://bucket/cat.png"
    )
