"""The mock providers, driven by the official OpenAI, Anthropic and Gemini SDKs.

The SDKs are the judges of wire fidelity here: if a mock's paths, headers,
bodies or SSE sequences drifted from the real APIs, these clients would fail to
parse them. Raw HTTP is used only where an SDK hides the detail under test
(event names, headers, requests an SDK refuses to send).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from gateway_tools.mocks import FAULT_MODES, BackgroundMocks, MockSpec, start, start_in_thread

OA, AN, GM = "oai", "claude", "gem"  # provider names differ from dialects on purpose
KEYS = {
    OA: "sk-test-openai-0123456789abcdef",
    AN: "sk-ant-test-0123456789abcdef",
    GM: "gm-test-key-0123456789abcdef",
}
MODEL = "test-model-1"


# --------------------------------------------------------------------------- fixtures and helpers


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


@pytest.fixture(autouse=True)
def _reset(mocks: BackgroundMocks) -> None:
    for name in (OA, AN, GM):
        assert _raw(mocks, name, "DELETE", "/_mock/faults")[0] == 200
        assert _raw(mocks, name, "DELETE", "/_mock/stats")[0] == 200


def _raw(
    mocks: BackgroundMocks,
    name: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP exchange; returns status, lower-cased headers and the body bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[name], timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _fault(mocks: BackgroundMocks, name: str, **spec: Any) -> dict[str, Any]:
    status, _, body = _raw(mocks, name, "POST", "/_mock/faults", spec)
    assert status == 200, body
    return json.loads(body)


def _stats(mocks: BackgroundMocks, name: str) -> dict[str, Any]:
    status, _, body = _raw(mocks, name, "GET", "/_mock/stats")
    assert status == 200
    return json.loads(body)


def _sse(raw: bytes) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, data) pairs."""
    events = []
    for block in re.split(r"\r?\n\r?\n", raw.decode()):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


def _transport_errors(*names: str) -> tuple[type[BaseException], ...]:
    """The HTTP library's exception classes the Gemini SDK lets through unwrapped."""
    found: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found += [getattr(module, n) for n in names if hasattr(module, n)]
    assert found, "no HTTP client library found"
    return tuple(found)


def _oa(mocks: BackgroundMocks, key: str | None = None, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{mocks.ports[OA]}/v1",
        api_key=key or KEYS[OA],
        max_retries=0,
        timeout=timeout,
    )


def _an(mocks: BackgroundMocks, key: str | None = None, timeout: float = 5.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{mocks.ports[AN]}",
        api_key=key or KEYS[AN],
        max_retries=0,
        timeout=timeout,
    )


_GM_CLIENTS: list[genai.Client] = []


def _gm(mocks: BackgroundMocks, key: str | None = None, timeout_ms: int = 5000) -> genai.Client:
    # Kept referenced: a genai.Client closes its HTTP client when garbage-collected, which would
    # break ``_gm(mocks).models.generate_content(...)`` one-liners.
    client = genai.Client(
        api_key=key or KEYS[GM],
        http_options=gt.HttpOptions(
            base_url=f"http://127.0.0.1:{mocks.ports[GM]}",
            timeout=timeout_ms,
            retry_options=gt.HttpRetryOptions(attempts=1),
        ),
    )
    _GM_CLIENTS.append(client)
    return client


AN_HEADERS = {"x-api-key": KEYS[AN], "anthropic-version": "2023-06-01"}
GM_HEADERS = {"x-goog-api-key": KEYS[GM]}
OA_HEADERS = {"Authorization": f"Bearer {KEYS[OA]}"}
OA_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "other_tool", "parameters": {"type": "object", "properties": {}}},
    },
]
AN_TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"name": "other_tool", "input_schema": {"type": "object", "properties": {}}},
]


# --------------------------------------------------------------------------- OpenAI


def test_openai_plain_reply_and_usage(mocks: BackgroundMocks) -> None:
    r = _oa(mocks).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse"},
            {"role": "user", "content": "hello there world"},
        ],
    )
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == f"[{OA}:{MODEL}] hello there world"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 4, 10)
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0


def test_openai_content_parts_and_multi_turn(mocks: BackgroundMocks) -> None:
    r = _oa(mocks).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "rules here"}]},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "text", "text": "this picture"},
                ],
            },
        ],
    )
    assert r.choices[0].message.content == f"[{OA}:{MODEL}] look at this picture"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 2 + 2 + 2 + 4


def test_openai_stream_matches_plain_text(mocks: BackgroundMocks) -> None:
    client = _oa(mocks)
    msgs: Any = [{"role": "user", "content": "hello there world"}]
    plain = client.chat.completions.create(model=MODEL, messages=msgs)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=msgs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == [f"[{OA}:{MODEL}]", " hello", " there", " world"]  # one chunk per word
    assert "".join(contents) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_wire_format(mocks: BackgroundMocks) -> None:
    status, headers, body = _raw(
        mocks,
        OA,
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "a b"}], "stream": True},
        OA_HEADERS,
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = _sse(body)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all("usage" not in c for c in chunks)  # no include_usage: no usage key at all
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}


def test_openai_tool_call_round_trip(mocks: BackgroundMocks) -> None:
    client = _oa(mocks)
    user: Any = {"role": "user", "content": "use tool for weather"}
    r = client.chat.completions.create(model=MODEL, messages=[user], tools=OA_TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert re.fullmatch(r"call_[0-9a-f]+", call.id)
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "use tool for weather"}
    assert r.usage is not None and r.usage.completion_tokens == 1

    follow = client.chat.completions.create(
        model=MODEL,
        tools=OA_TOOLS,
        messages=[
            user,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny and warm"},
        ],
    )
    assert follow.choices[0].message.content == f"[{OA}:{MODEL}] tool result: sunny and warm"
    assert follow.choices[0].finish_reason == "stop"


def test_openai_tool_choice(mocks: BackgroundMocks) -> None:
    client = _oa(mocks)
    msgs: Any = [{"role": "user", "content": "use tool please"}]
    none = client.chat.completions.create(model=MODEL, messages=msgs, tools=OA_TOOLS, tool_choice="none")
    assert none.choices[0].message.content == f"[{OA}:{MODEL}] use tool please"
    named = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "no trigger words"}],
        tools=OA_TOOLS,
        tool_choice={"type": "function", "function": {"name": "other_tool"}},
    )
    calls = named.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "other_tool"


def test_openai_streamed_tool_call(mocks: BackgroundMocks) -> None:
    chunks = list(
        _oa(mocks).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "use tool now"}], tools=OA_TOOLS, stream=True
        )
    )
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first = deltas[0]
    assert first.index == 0 and first.type == "function"
    assert first.id is not None and re.fullmatch(r"call_[0-9a-f]+", first.id)
    assert first.function is not None and first.function.name == "get_weather"
    fragments = [d.function.arguments for d in deltas[1:] if d.function and d.function.arguments]
    assert len(fragments) > 1  # arguments arrive split over several chunks
    assert all(d.id is None for d in deltas[1:])
    assert json.loads("".join(fragments)) == {"city": "use tool now"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


def test_openai_tool_message_pairing_is_enforced(mocks: BackgroundMocks) -> None:
    client = _oa(mocks)
    call = {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL,
            tools=OA_TOOLS,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [call]},  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": "call_other", "content": "x"},
            ],
        )
    assert e.value.status_code == 400
    assert "must be a response to a preceeding message with 'tool_calls'" in e.value.message
    with pytest.raises(openai.BadRequestError) as e2:
        client.chat.completions.create(
            model=MODEL,
            tools=OA_TOOLS,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [call]},  # type: ignore[list-item]
                {"role": "user", "content": "again"},
            ],
        )
    assert "did not have response messages: call_abc" in e2.value.message
    with pytest.raises(openai.BadRequestError) as e3:
        bad_call = {**call, "function": {"name": "get_weather", "arguments": {"city": "x"}}}
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [bad_call]},  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": "call_abc", "content": "x"},
            ],
        )
    body: Any = e3.value.body
    assert body["param"] == "messages[1].tool_calls[0].function.arguments"
    assert body["code"] == "invalid_type"


def test_openai_wrong_key(mocks: BackgroundMocks) -> None:
    wrong = "sk-wrong-key-9876543210"
    with pytest.raises(openai.AuthenticationError) as e:
        _oa(mocks, key=wrong).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 401
    body: Any = e.value.body
    assert body["type"] == "invalid_request_error"
    assert body["code"] == "invalid_api_key"
    assert body["param"] is None
    assert body["message"].startswith("Incorrect API key provided: ")
    assert wrong not in body["message"]
    status, _, raw = _raw(mocks, OA, "POST", "/v1/chat/completions", {"model": MODEL, "messages": []})
    assert status == 401
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"


def test_openai_validation_errors(mocks: BackgroundMocks) -> None:
    status, _, raw = _raw(mocks, OA, "POST", "/v1/chat/completions", {"model": MODEL}, OA_HEADERS)
    assert status == 400
    assert json.loads(raw) == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter",
        }
    }
    client = _oa(mocks)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"top_k": 3}
        )
    assert e.value.body["message"] == "Unrecognized request argument supplied: top_k"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e2:
        client.chat.completions.create(model=MODEL, messages=[{"role": "human", "content": "hi"}])  # type: ignore[misc,list-item]
    body: Any = e2.value.body
    assert (body["param"], body["code"]) == ("messages[0].role", "invalid_value")
    with pytest.raises(openai.BadRequestError) as e3:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=0
        )
    assert (e3.value.body["param"], e3.value.body["code"]) == ("max_tokens", "integer_below_min_value")  # type: ignore[index]


def test_openai_max_tokens_truncates(mocks: BackgroundMocks) -> None:
    client = _oa(mocks)
    msgs: Any = [{"role": "user", "content": "one two three four"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2)
    assert r.choices[0].message.content == f"[{OA}:{MODEL}] one"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 2
    r2 = client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=3)
    assert r2.choices[0].message.content == f"[{OA}:{MODEL}] one two"
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"[{OA}:{MODEL}] one"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_openai_models_list(mocks: BackgroundMocks) -> None:
    models = _oa(mocks).models.list()
    ids = [m.id for m in models]
    assert "gpt-5.5" in ids
    assert all(m.object == "model" for m in models)


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_plain_reply_and_usage(mocks: BackgroundMocks) -> None:
    m = _an(mocks).messages.create(
        model=MODEL,
        max_tokens=100,
        system="be brief please",
        messages=[{"role": "user", "content": "hello there world"}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert re.fullmatch(r"msg_[A-Za-z0-9]+", m.id)
    assert m.model == MODEL
    assert len(m.content) == 1
    block = m.content[0]
    assert block.type == "text"
    assert block.text == f"[{AN}:{MODEL}] hello there world"
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.output_tokens) == (6, 4)
    assert m.usage.cache_read_input_tokens == 0
    assert m.usage.cache_creation_input_tokens == 0


def test_anthropic_blocks_and_system_list(mocks: BackgroundMocks) -> None:
    m = _an(mocks).messages.create(
        model=MODEL,
        max_tokens=100,
        system=[{"type": "text", "text": "sys one"}, {"type": "text", "text": "sys two"}],
        messages=[
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok then"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                    {"type": "text", "text": "in here"},
                ],
            },
        ],
    )
    assert m.content[0].type == "text"
    assert m.content[0].text == f"[{AN}:{MODEL}] what is in here"
    assert m.usage.input_tokens == 4 + 1 + 2 + 4


def test_anthropic_stream_matches_plain_text(mocks: BackgroundMocks) -> None:
    client = _an(mocks)
    msgs: Any = [{"role": "user", "content": "hello there world"}]
    plain = client.messages.create(model=MODEL, max_tokens=100, messages=msgs)
    with client.messages.stream(model=MODEL, max_tokens=100, messages=msgs) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == [f"[{AN}:{MODEL}]", " hello", " there", " world"]
    assert plain.content[0].type == "text"
    assert "".join(pieces) == plain.content[0].text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


def test_anthropic_stream_event_sequence(mocks: BackgroundMocks) -> None:
    status, headers, raw = _raw(
        mocks,
        AN,
        "POST",
        "/v1/messages",
        {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "a b"}], "stream": True},
        AN_HEADERS,
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = _sse(raw)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == n for (n, _), d in zip(events, data, strict=True))
    start_msg = data[0]["message"]
    assert start_msg["content"] == [] and start_msg["stop_reason"] is None
    assert (start_msg["usage"]["input_tokens"], start_msg["usage"]["output_tokens"]) == (2, 1)
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert [d["delta"] for d in data[3:6]] == [
        {"type": "text_delta", "text": f"[{AN}:{MODEL}]"},
        {"type": "text_delta", "text": " a"},
        {"type": "text_delta", "text": " b"},
    ]
    assert data[7]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[7]["usage"]["output_tokens"] == 3


def test_anthropic_tool_use_round_trip(mocks: BackgroundMocks) -> None:
    client = _an(mocks)
    user: Any = {"role": "user", "content": "use tool for weather"}
    m = client.messages.create(model=MODEL, max_tokens=100, tools=AN_TOOLS, messages=[user])
    assert m.stop_reason == "tool_use"
    assert len(m.content) == 1
    block = m.content[0]
    assert block.type == "tool_use"
    assert re.fullmatch(r"toolu_[0-9a-f]+", block.id)
    assert block.name == "get_weather"
    assert block.input == {"city": "use tool for weather"}
    assert m.usage.output_tokens == 1

    assistant: Any = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}],
    }
    follow = client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=AN_TOOLS,
        messages=[
            user,
            assistant,
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny and warm"}],
            },
        ],
    )
    assert follow.content[0].type == "text"
    assert follow.content[0].text == f"[{AN}:{MODEL}] tool result: sunny and warm"
    assert follow.stop_reason == "end_turn"
    blocks = client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=AN_TOOLS,
        messages=[
            user,
            assistant,
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": block.id,
                        "content": [
                            {"type": "text", "text": "part one"},
                            {"type": "text", "text": "part two"},
                        ],
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    )
    assert blocks.content[0].type == "text"
    assert blocks.content[0].text == f"[{AN}:{MODEL}] tool result: part one part two"


def test_anthropic_streamed_tool_use(mocks: BackgroundMocks) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "tools": AN_TOOLS,
        "messages": [{"role": "user", "content": "use tool now"}],
        "stream": True,
    }
    status, _, raw = _raw(mocks, AN, "POST", "/v1/messages", body, AN_HEADERS)
    assert status == 200
    data = [json.loads(d) for _, d in _sse(raw)]
    start_block = data[1]["content_block"]
    assert start_block["type"] == "tool_use" and start_block["input"] == {}
    assert re.fullmatch(r"toolu_[0-9a-f]+", start_block["id"])
    fragments = [d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta"]
    assert all(d["delta"]["type"] == "input_json_delta" for d in data if d["type"] == "content_block_delta")
    assert len([f for f in fragments if f]) > 1
    assert json.loads("".join(fragments)) == {"city": "use tool now"}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"

    with _an(mocks).messages.stream(
        model=MODEL, max_tokens=100, tools=AN_TOOLS, messages=[{"role": "user", "content": "use tool now"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "use tool now"}


def test_anthropic_tool_result_pairing_is_enforced(mocks: BackgroundMocks) -> None:
    client = _an(mocks)
    assistant: Any = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {}}],
    }
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            tools=AN_TOOLS,
            messages=[
                {"role": "user", "content": "hi"},
                assistant,
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_zzz", "content": "x"}],
                },
            ],
        )
    body: Any = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages.2.content.0: unexpected `tool_use_id` found")
    with pytest.raises(anthropic.BadRequestError) as e2:
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            tools=AN_TOOLS,
            messages=[
                {"role": "user", "content": "hi"},
                assistant,
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "first"},
                        {"type": "tool_result", "tool_use_id": "toolu_abc", "content": "x"},
                    ],
                },
            ],
        )
    assert "Did not find 1 `tool_result` block(s) at the beginning of this message" in e2.value.message


def test_anthropic_auth_and_version_headers(mocks: BackgroundMocks) -> None:
    with pytest.raises(anthropic.AuthenticationError) as e:
        _an(mocks, key="sk-ant-wrong").messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 401
    body: Any = e.value.body
    assert body["type"] == "error"
    assert body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    good = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    status, _, raw = _raw(mocks, AN, "POST", "/v1/messages", good, AN_HEADERS)  # the classic x-api-key header
    assert status == 200 and json.loads(raw)["content"][0]["text"] == f"[{AN}:{MODEL}] hi"
    status, _, raw = _raw(mocks, AN, "POST", "/v1/messages", good, {"x-api-key": KEYS[AN]})
    assert status == 400
    assert json.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    status, _, raw = _raw(mocks, AN, "POST", "/v1/messages", good, {"anthropic-version": "2023-06-01"})
    assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"


def test_anthropic_validation_errors(mocks: BackgroundMocks) -> None:
    no_max = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    status, _, raw = _raw(mocks, AN, "POST", "/v1/messages", no_max, AN_HEADERS)
    assert status == 400
    body = json.loads(raw)
    assert body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    client = _an(mocks)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}], extra_body={"foo": 1}
        )
    assert e.value.body["error"]["message"] == "foo: Extra inputs are not permitted"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as e2:
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],  # type: ignore[list-item,misc]
        )
    assert 'Unexpected role "system"' in e2.value.message
    with pytest.raises(anthropic.BadRequestError) as e3:
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],  # type: ignore[list-item,typeddict-item]
        )
    assert "Input tag 'image_url' found using 'type'" in e3.value.message


def test_anthropic_max_tokens_and_stop_sequences(mocks: BackgroundMocks) -> None:
    client = _an(mocks)
    msgs: Any = [{"role": "user", "content": "one two three four"}]
    m = client.messages.create(model=MODEL, max_tokens=2, messages=msgs)
    assert m.content[0].type == "text" and m.content[0].text == f"[{AN}:{MODEL}] one"
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 2
    s = client.messages.create(model=MODEL, max_tokens=50, messages=msgs, stop_sequences=["three"])
    assert s.content[0].type == "text" and s.content[0].text == f"[{AN}:{MODEL}] one two"
    assert (s.stop_reason, s.stop_sequence) == ("stop_sequence", "three")
    with client.messages.stream(model=MODEL, max_tokens=2, messages=msgs) as stream:
        assert "".join(stream.text_stream) == f"[{AN}:{MODEL}] one"
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_anthropic_structured_output(mocks: BackgroundMocks) -> None:
    """output_config.format: the reply is JSON of the schema; an object schema that is not closed
    (additionalProperties: false) is refused, as Anthropic's structured outputs refuse it."""
    client = _an(mocks)
    msgs: Any = [{"role": "user", "content": "name it"}]
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    closed_schema = {**schema, "additionalProperties": False}
    m = client.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=msgs,
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": closed_schema}}},
    )
    assert m.content[0].type == "text"
    assert json.loads(m.content[0].text) == {"name": f"[{AN}:{MODEL}] name it"}
    for bad, words in (
        ({"type": "json_schema", "schema": schema}, "'additionalProperties' must be explicitly set to false"),
        ({"type": "json_object"}, "expected tags: 'json_schema'"),
        ({"type": "json_schema"}, "output_config.format.schema: Field required"),
    ):
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(
                model=MODEL, max_tokens=50, messages=msgs, extra_body={"output_config": {"format": bad}}
            )
        assert words in e.value.message


# --------------------------------------------------------------------------- Gemini


def test_gemini_plain_reply_and_usage(mocks: BackgroundMocks) -> None:
    r = _gm(mocks).models.generate_content(
        model=MODEL,
        contents="hello there world",
        config=gt.GenerateContentConfig(system_instruction="be brief please"),
    )
    assert r.text == f"[{GM}:{MODEL}] hello there world"
    assert r.candidates is not None and len(r.candidates) == 1
    cand = r.candidates[0]
    assert cand.finish_reason == gt.FinishReason.STOP
    assert cand.content is not None and cand.content.role == "model"
    assert cand.index == 0
    assert r.model_version == MODEL
    assert r.response_id
    u = r.usage_metadata
    assert u is not None
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (6, 4, 10)


def test_gemini_stream_matches_plain_text(mocks: BackgroundMocks) -> None:
    client = _gm(mocks)
    plain = client.models.generate_content(model=MODEL, contents="hello there world")
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hello there world"))
    texts = [c.text for c in chunks]
    assert texts == [f"[{GM}:{MODEL}]", " hello", " there", " world"]  # one event per word
    assert "".join(t or "" for t in texts) == plain.text
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finishes == [None, None, None, gt.FinishReason.STOP]
    counts = [
        (c.usage_metadata.prompt_token_count, c.usage_metadata.candidates_token_count)
        for c in chunks
        if c.usage_metadata
    ]
    assert counts == [(3, 1), (3, 2), (3, 3), (3, 4)]  # every chunk, cumulative


def test_gemini_stream_wire_formats(mocks: BackgroundMocks) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "a b"}]}]}
    status, headers, raw = _raw(
        mocks, GM, "POST", f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", body, GM_HEADERS
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = _sse(raw)
    assert all(name is None for name, _ in events)
    sse_texts = [json.loads(d)["candidates"][0]["content"]["parts"][0]["text"] for _, d in events]
    status, headers, raw = _raw(
        mocks, GM, "POST", f"/v1beta/models/{MODEL}:streamGenerateContent", body, GM_HEADERS
    )
    assert status == 200 and headers["content-type"].startswith("application/json")
    array = json.loads(raw)  # without alt=sse the stream is one JSON array
    assert isinstance(array, list) and len(array) == 3
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in array] == sse_texts
    assert "".join(sse_texts) == f"[{GM}:{MODEL}] a b"
    assert array[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "finishReason" not in array[0]["candidates"][0]


def test_gemini_function_call_round_trip(mocks: BackgroundMocks) -> None:
    client = _gm(mocks)
    tools = [
        gt.Tool(
            function_declarations=[
                gt.FunctionDeclaration(
                    name="get_weather",
                    description="Weather for a city",
                    parameters=gt.Schema(
                        type=gt.Type.OBJECT, properties={"city": gt.Schema(type=gt.Type.STRING)}
                    ),
                ),
                gt.FunctionDeclaration(name="other_tool"),
            ]
        )
    ]
    config = gt.GenerateContentConfig(
        tools=tools, automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True)
    )
    user = gt.Content(role="user", parts=[gt.Part(text="use tool for weather")])
    r = client.models.generate_content(model=MODEL, contents=[user], config=config)
    assert r.function_calls is not None and len(r.function_calls) == 1
    call = r.function_calls[0]
    assert call.name == "get_weather"
    assert call.args == {"city": "use tool for weather"}
    assert call.id
    assert r.candidates is not None and r.candidates[0].finish_reason == gt.FinishReason.STOP
    assert r.usage_metadata is not None and r.usage_metadata.candidates_token_count == 1

    model_turn = gt.Content(role="model", parts=[gt.Part(function_call=call)])
    result = gt.Content(
        role="user",
        parts=[
            gt.Part(
                function_response=gt.FunctionResponse(
                    id=call.id, name=call.name, response={"result": "sunny"}
                )
            )
        ],
    )
    follow = client.models.generate_content(model=MODEL, contents=[user, model_turn, result], config=config)
    assert follow.text == f"[{GM}:{MODEL}] tool result: sunny"
    as_json = gt.Content(
        role="user",
        parts=[gt.Part(function_response=gt.FunctionResponse(name=call.name, response={"temp": 21}))],
    )
    follow2 = client.models.generate_content(model=MODEL, contents=[user, model_turn, as_json], config=config)
    assert follow2.text == f'[{GM}:{MODEL}] tool result: {{"temp":21}}'

    streamed = list(client.models.generate_content_stream(model=MODEL, contents=[user], config=config))
    assert len(streamed) == 1  # a function call arrives whole in one chunk
    assert streamed[0].function_calls is not None
    assert streamed[0].function_calls[0].args == {"city": "use tool for weather"}


def test_gemini_function_turn_order_is_enforced(mocks: BackgroundMocks) -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "x"}}}],
            },
        ]
    }
    status, _, raw = _raw(mocks, GM, "POST", f"/v1beta/models/{MODEL}:generateContent", body, GM_HEADERS)
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert (
        err["message"]
        == "Please ensure that function response turn comes immediately after a function call turn."
    )


def test_gemini_keys(mocks: BackgroundMocks) -> None:
    with pytest.raises(genai_errors.ClientError) as e:
        _gm(mocks, key="wrong-key").models.generate_content(model=MODEL, contents="hi")
    assert e.value.code == 400
    assert e.value.status == "INVALID_ARGUMENT"
    assert e.value.message == "API key not valid. Please pass a valid API key."
    details: Any = e.value.details
    assert details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    status, _, raw = _raw(mocks, GM, "POST", f"/v1beta/models/{MODEL}:generateContent", body)
    assert status == 403 and json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"
    status, _, raw = _raw(mocks, GM, "POST", f"/v1beta/models/{MODEL}:generateContent?key={KEYS[GM]}", body)
    assert status == 200
    assert json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"] == f"[{GM}:{MODEL}] hi"


def test_gemini_unknown_fields_and_snake_case(mocks: BackgroundMocks) -> None:
    path = f"/v1beta/models/{MODEL}:generateContent"
    status, _, raw = _raw(
        mocks, GM, "POST", path, {"contents": [{"parts": [{"text": "hi"}]}], "foo": 1}, GM_HEADERS
    )
    assert status == 400
    err = json.loads(raw)["error"]
    assert (err["code"], err["status"]) == (400, "INVALID_ARGUMENT")
    assert err["message"] == 'Invalid JSON payload received. Unknown name "foo": Cannot find field.'
    assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    bad_schema = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
                    }
                ]
            }
        ],
    }
    status, _, raw = _raw(mocks, GM, "POST", path, bad_schema, GM_HEADERS)
    assert status == 400
    assert json.loads(raw)["error"]["message"] == (
        'Invalid JSON payload received. Unknown name "additionalProperties" at '
        "'tools[0].function_declarations[0].parameters': Cannot find field."
    )
    snake = {
        "contents": [{"role": "user", "parts": [{"text": "one two three four"}]}],
        "system_instruction": {"parts": [{"text": "sys words"}]},
        "generation_config": {"max_output_tokens": 2, "temperature": 0.5},
    }
    status, _, raw = _raw(mocks, GM, "POST", path, snake, GM_HEADERS)
    assert status == 200
    out = json.loads(raw)
    assert out["candidates"][0]["content"]["parts"][0]["text"] == f"[{GM}:{MODEL}] one"
    assert out["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert out["usageMetadata"]["promptTokenCount"] == 6
    status, _, raw = _raw(mocks, GM, "POST", path, {"contents": []}, GM_HEADERS)
    assert status == 400 and "contents is not specified" in json.loads(raw)["error"]["message"]


def test_gemini_max_output_tokens_truncates(mocks: BackgroundMocks) -> None:
    client = _gm(mocks)
    config = gt.GenerateContentConfig(max_output_tokens=3)
    r = client.models.generate_content(model=MODEL, contents="one two three four", config=config)
    assert r.text == f"[{GM}:{MODEL}] one two"
    assert r.candidates is not None and r.candidates[0].finish_reason == gt.FinishReason.MAX_TOKENS
    assert r.usage_metadata is not None and r.usage_metadata.candidates_token_count == 3
    chunks = list(
        client.models.generate_content_stream(model=MODEL, contents="one two three four", config=config)
    )
    assert "".join(c.text or "" for c in chunks) == f"[{GM}:{MODEL}] one two"
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == gt.FinishReason.MAX_TOKENS


# --------------------------------------------------------------------------- faults


def test_fault_endpoint_shape(mocks: BackgroundMocks) -> None:
    active = _fault(mocks, OA, mode="error", status=503, rate=0.5)
    assert active == {"mode": "error", "status": 503, "retry_after": 1.0, "delay_ms": 1000, "rate": 0.5}
    status, _, raw = _raw(mocks, OA, "GET", "/_mock/faults")
    assert status == 200 and json.loads(raw) == active
    status, _, raw = _raw(mocks, OA, "POST", "/_mock/faults", {"mode": "explode"})
    assert status == 400 and "mode" in json.loads(raw)["error"]
    status, _, raw = _raw(mocks, OA, "DELETE", "/_mock/faults")
    assert status == 200 and json.loads(raw)["mode"] == "ok"
    assert set(FAULT_MODES) == {
        "ok",
        "down",
        "error",
        "rate_limit",
        "stall",
        "slow",
        "stream_cut",
        "stream_error",
        "headers_stall",
        "stream_stall",
        "trickle",
        "stream_malformed",
        "echo_key",
        "empty_200",
        "html_200",
        "error_object_200",
        "truncated_200",
        "wrong_types_200",
    }


# provider -> (path, headers, body) of a chat request, plain and streamed
def _chat(name: str, stream: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
    msgs = [{"role": "user", "content": "one two three four five six"}]
    if name == OA:
        return "/v1/chat/completions", OA_HEADERS, {"model": MODEL, "messages": msgs, "stream": stream}
    if name == AN:
        return (
            "/v1/messages",
            AN_HEADERS,
            {"model": MODEL, "max_tokens": 50, "messages": msgs, "stream": stream},
        )
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return (
        f"/v1beta/models/{MODEL}:{verb}",
        GM_HEADERS,
        {"contents": [{"role": "user", "parts": [{"text": msgs[0]["content"]}]}]},
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("name", [OA, AN, GM])
def test_fault_non_answers(mocks: BackgroundMocks, name: str, stream: bool) -> None:
    """The 200s that are not answers: what each one puts on the wire."""
    path, headers, body = _chat(name, stream)
    _, _, good = _raw(mocks, name, "POST", path, body, headers)
    first_array = {OA: "choices", AN: "message" if stream else "content", GM: "candidates"}[name]

    _fault(mocks, name, mode="empty_200")
    status, hdrs, raw = _raw(mocks, name, "POST", path, body, headers)
    assert (status, raw) == (200, b"")
    assert hdrs["content-type"].startswith("text/event-stream" if stream else "application/json")
    _fault(mocks, name, mode="html_200")
    status, hdrs, raw = _raw(mocks, name, "POST", path, body, headers)
    assert status == 200 and hdrs["content-type"].startswith("text/html") and raw.startswith(b"<html>")
    _fault(mocks, name, mode="error_object_200")
    status, _, raw = _raw(mocks, name, "POST", path, body, headers)
    assert status == 200 and "error" in json.loads(raw)
    _fault(mocks, name, mode="truncated_200")
    status, _, raw = _raw(mocks, name, "POST", path, body, headers)
    assert status == 200 and 0 < len(raw) < len(good)
    if stream:  # whole events, but not all of them: no terminal event
        assert 0 < len(_sse(raw)) < len(_sse(good))
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
    _fault(mocks, name, mode="wrong_types_200")
    status, _, raw = _raw(mocks, name, "POST", path, body, headers)
    first = json.loads(_sse(raw)[0][1]) if stream else json.loads(raw)
    assert status == 200 and first[first_array] == 1.5


@pytest.mark.parametrize(("name", "status"), [(OA, 401), (AN, 401), (GM, 400)])
def test_fault_echo_key_quotes_the_credential(mocks: BackgroundMocks, name: str, status: int) -> None:
    _fault(mocks, name, mode="echo_key", status=status)
    path, headers, body = _chat(name, False)
    got, _, raw = _raw(mocks, name, "POST", path, body, headers)
    assert got == status and KEYS[name] in json.loads(raw)["error"]["message"]


def test_fault_error_status_and_bodies(mocks: BackgroundMocks) -> None:
    for name in (OA, AN, GM):
        _fault(mocks, name, mode="error", status=503)
    with pytest.raises(openai.InternalServerError) as oe:
        _oa(mocks).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert oe.value.status_code == 503
    assert oe.value.body["type"] == "server_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as ae:
        _an(mocks).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ae.value.status_code == 503
    assert ae.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(genai_errors.ServerError) as ge:
        _gm(mocks).models.generate_content(model=MODEL, contents="hi")
    assert (ge.value.code, ge.value.status) == (503, "UNAVAILABLE")

    _fault(mocks, AN, mode="error", status=529)
    with pytest.raises(anthropic.OverloadedError) as oe529:
        _an(mocks).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert oe529.value.status_code == 529
    assert oe529.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_fault_rate_limit(mocks: BackgroundMocks) -> None:
    for name in (OA, AN, GM):
        _fault(mocks, name, mode="rate_limit", retry_after=2)
    with pytest.raises(openai.RateLimitError) as oe:
        _oa(mocks).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert oe.value.status_code == 429
    assert oe.value.response.headers["retry-after"] == "2"
    assert oe.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as ae:
        _an(mocks).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ae.value.response.headers["retry-after"] == "2"
    assert ae.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(genai_errors.ClientError) as ge:
        _gm(mocks).models.generate_content(model=MODEL, contents="hi")
    assert (ge.value.code, ge.value.status) == (429, "RESOURCE_EXHAUSTED")
    status, headers, _ = _raw(
        mocks, GM, "POST", f"/v1beta/models/{MODEL}:generateContent", {"contents": []}, GM_HEADERS
    )
    assert status == 429 and headers["retry-after"] == "2"


def test_fault_down(mocks: BackgroundMocks) -> None:
    for name in (OA, AN, GM):
        _fault(mocks, name, mode="down")
    with pytest.raises(openai.APIConnectionError):
        _oa(mocks).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.APIConnectionError):
        _an(mocks).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(_transport_errors("RemoteProtocolError")):
        _gm(mocks).models.generate_content(model=MODEL, contents="hi")
    with pytest.raises(http.client.RemoteDisconnected):
        _raw(mocks, OA, "GET", "/v1/models", headers=OA_HEADERS)
    assert _stats(mocks, OA)["faulted"] == 2  # /_mock/* itself is never faulted


def test_fault_stall_ends_when_client_gives_up(mocks: BackgroundMocks) -> None:
    for name in (OA, AN, GM):
        _fault(mocks, name, mode="stall")
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _oa(mocks, timeout=0.3).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.APITimeoutError):
        _an(mocks, timeout=0.3).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(_transport_errors("ReadTimeout")):
        _gm(mocks, timeout_ms=300).models.generate_content(model=MODEL, contents="hi")
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_stats(mocks, n)["stalling"] for n in (OA, AN, GM)):
        time.sleep(0.05)
    assert [_stats(mocks, n)["stalling"] for n in (OA, AN, GM)] == [
        0,
        0,
        0,
    ]  # no stalled task outlives its client


def test_fault_slow(mocks: BackgroundMocks) -> None:
    _fault(mocks, OA, mode="slow", delay_ms=300)
    client = _oa(mocks)
    t0 = time.monotonic()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 >= 0.3
    assert r.choices[0].message.content == f"[{OA}:{MODEL}] hi"
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = next(iter(stream))
    assert time.monotonic() - t0 >= 0.3
    assert first.choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in stream) == f"[{OA}:{MODEL}] hi"


def test_fault_stream_cut(mocks: BackgroundMocks) -> None:
    for name in (OA, AN, GM):
        _fault(mocks, name, mode="stream_cut")
    msgs: Any = [{"role": "user", "content": "one two three four five six"}]

    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for c in _oa(mocks).chat.completions.create(model=MODEL, messages=msgs, stream=True):
            got.append(c.choices[0].finish_reason or "")
    assert "stop" not in got

    events: list[str] = []
    with pytest.raises(_transport_errors("RemoteProtocolError")):
        for ev in _an(mocks).messages.create(model=MODEL, max_tokens=50, messages=msgs, stream=True):
            events.append(ev.type)
    assert "message_stop" not in events

    with pytest.raises(_transport_errors("RemoteProtocolError")):
        list(_gm(mocks).models.generate_content_stream(model=MODEL, contents="one two three four five six"))

    body = {"model": MODEL, "messages": msgs, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[OA], timeout=5)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {**OA_HEADERS, "Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    partial = _sse(cut.value.partial)
    assert 0 < len(partial) < 10  # 10 events in full: role, 8 words, finish (and [DONE])
    assert all(d != "[DONE]" for _, d in partial)
    conn.close()

    with pytest.raises(openai.APIConnectionError):  # non-streaming: headers and half a body
        _oa(mocks).chat.completions.create(model=MODEL, messages=msgs)
    status, _, _ = _raw(mocks, OA, "POST", "/v1/chat/completions", {"model": MODEL}, OA_HEADERS)
    assert status == 400  # requests the mock rejects are answered whole


def test_body_faults_answer_200_then_stall_or_trickle(mocks: BackgroundMocks) -> None:
    """headers_stall: a 200 and nothing more; stream_stall: half the events; trickle: the whole
    reply, slowly. Reads are bounded by a socket timeout."""
    words = "one two three four five six"
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": words}], "stream": True})
    headers = {**OA_HEADERS, "Content-Type": "application/json"}

    def partial(mode: str) -> tuple[int, bytes]:
        _fault(mocks, OA, mode=mode)
        conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[OA], timeout=1.5)
        try:
            conn.request("POST", "/v1/chat/completions", body, headers)
            resp = conn.getresponse()
            got = b""
            with pytest.raises(TimeoutError):
                while chunk := resp.read1(1024):
                    got += chunk
            return resp.status, got
        finally:
            conn.close()

    assert partial("headers_stall") == (200, b"")
    status, got = partial("stream_stall")
    assert status == 200 and 0 < len(_sse(got)) < 8 and b"[DONE]" not in got
    _fault(mocks, OA, mode="trickle", delay_ms=1)
    reply = _oa(mocks).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": words}])
    assert reply.choices[0].message.content == f"[{OA}:{MODEL}] {words}"


def test_fault_rate_is_deterministic(mocks: BackgroundMocks) -> None:
    _fault(mocks, OA, mode="error", status=503, rate=0.5)
    client = _oa(mocks)
    outcomes = []
    for _ in range(6):
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            outcomes.append(200)
        except openai.InternalServerError as e:
            outcomes.append(e.status_code)
    assert outcomes == [200, 503, 200, 503, 200, 503]
    assert _stats(mocks, OA)["faulted"] == 3


# --------------------------------------------------------------------------- stats and lifecycle


def test_stats_counts_and_redaction(mocks: BackgroundMocks) -> None:
    oa = _oa(mocks)
    oa.chat.completions.create(model="m-a", messages=[{"role": "user", "content": "hi"}])
    list(oa.chat.completions.create(model="m-b", messages=[{"role": "user", "content": "hi"}], stream=True))
    with pytest.raises(openai.AuthenticationError):
        _oa(mocks, key="sk-bad-0000000000000").chat.completions.create(
            model="m-a", messages=[{"role": "user", "content": "hi"}]
        )
    _fault(mocks, OA, mode="error", status=500)
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(model="m-a", messages=[{"role": "user", "content": "last one"}])
    st = _stats(mocks, OA)
    assert st["requests"] == 4
    assert st["by_model"] == {"m-a": 3, "m-b": 1}
    assert st["by_status"] == {"200": 2, "401": 1, "500": 1}
    assert (st["faulted"], st["streamed"]) == (1, 1)
    last = st["last_request"]
    assert last["path"] == "/v1/chat/completions"
    assert last["body"]["messages"] == [{"role": "user", "content": "last one"}]
    assert last["headers"]["Authorization"] == "Bearer ***"
    assert KEYS[OA] not in json.dumps(st)

    _gm(mocks).models.generate_content(model="gm-x", contents="hi")
    gst = _stats(mocks, GM)
    assert gst["by_model"] == {"gm-x": 1}
    assert gst["last_request"]["headers"]["x-goog-api-key"] == "***"
    _raw(mocks, GM, "POST", f"/v1beta/models/{MODEL}:generateContent?key={KEYS[GM]}", {"contents": []})
    assert _stats(mocks, GM)["last_request"]["query"] == {"key": "***"}

    status, _, raw = _raw(mocks, OA, "DELETE", "/_mock/stats")
    assert status == 200 and json.loads(raw)["requests"] == 0
    assert _stats(mocks, OA)["by_status"] == {}


def test_start_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        asyncio.run(start([MockSpec("x", "openai", 0, "k"), MockSpec("x", "gemini", 0, "k")]))


def test_start_and_stop_on_explicit_port(mocks: BackgroundMocks) -> None:
    async def main() -> None:
        first = await start([MockSpec("a", "anthropic", 0, "k")])
        port = first.ports["a"]
        await first.stop()
        again = await start([MockSpec("a", "anthropic", port, "k")])  # the port is free again after stop()
        assert again.ports == {"a": port}
        await again.stop()

    asyncio.run(main())


def test_run_forever_stops_cleanly_on_sigterm() -> None:
    code = (
        "from gateway_tools.mocks import MockSpec, run_forever; "
        "run_forever([MockSpec('o', 'openai', 0, 'k'), MockSpec('g', 'gemini', 0, 'k')])"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        ports = [int(m.group(1)) for line in lines if (m := re.search(r":(\d+)\s*$", line))]
        assert len(ports) == 2, lines
        conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=5)
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer k"})
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- compatible hosts' quirks


def _oa_chat(mocks: BackgroundMocks, stream: bool) -> tuple[int, dict[str, str], bytes]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "one two"}], "stream": stream}
    return _raw(mocks, OA, "POST", "/v1/chat/completions", body, OA_HEADERS)


def test_quirk_groq_reasoning_field(mocks: BackgroundMocks) -> None:
    """Groq's reasoning_format "parsed": the thinking in ``reasoning``, never ``reasoning_content``."""
    _fault(mocks, OA, mode="reasoning_field")
    _, _, raw = _oa_chat(mocks, False)
    msg = json.loads(raw)["choices"][0]["message"]
    assert msg["reasoning"] == "Thinking about: one two" and "reasoning_content" not in msg
    _, _, raw = _oa_chat(mocks, True)
    deltas = [json.loads(d)["choices"][0]["delta"] for _, d in _sse(raw) if d.startswith("{")]
    deltas = [d for d in deltas if d]
    assert "".join(d.get("reasoning", "") for d in deltas) == "Thinking about: one two"
    assert not any("reasoning_content" in d for d in deltas)


@pytest.mark.parametrize("mode", ["validation_error", "validation_detail"])
def test_quirk_mistral_validation_errors(mocks: BackgroundMocks, mode: str) -> None:
    _fault(mocks, OA, mode=mode)
    status, _, raw = _oa_chat(mocks, False)
    body = json.loads(raw)
    detail = body["detail"] if mode == "validation_detail" else body["message"]["detail"]
    assert status == 422 and [(d["loc"], d["msg"]) for d in detail] == [
        (["body", "top_p"], "Input should be a valid number"),
        (["body", "store"], "Extra inputs are not permitted"),
    ]
    if mode == "validation_error":
        assert body["object"] == "error" and body["type"] == "invalid_request_error"


def test_quirk_openrouter_error_code(mocks: BackgroundMocks) -> None:
    """The status again as error.code; Retry-After on a 429."""
    _fault(mocks, OA, mode="error_code", status=429, retry_after=2, message="slow down")
    status, headers, raw = _oa_chat(mocks, False)
    assert (status, headers["retry-after"]) == (429, "2")
    assert json.loads(raw)["error"]["code"] == 429 and json.loads(raw)["error"]["message"] == "slow down"
    _fault(mocks, OA, mode="error_code", status=402)
    status, headers, raw = _oa_chat(mocks, False)
    assert status == 402 and json.loads(raw)["error"]["code"] == 402 and "retry-after" not in headers


def test_quirk_openrouter_stream_errors(mocks: BackgroundMocks) -> None:
    """Before the first token: a 200, the keep-alive comment, then the numeric-code error. After
    tokens: a chunk with the standard fields, a top-level error and finish_reason "error"; no [DONE]."""
    _fault(mocks, OA, mode="stream_error_first", status=429)
    status, _, raw = _oa_chat(mocks, True)
    assert status == 200 and raw.startswith(b": OPENROUTER PROCESSING\n\n")
    assert [json.loads(d) for _, d in _sse(raw) if d] == [
        {
            "error": {
                "code": 429,
                "message": "Provider returned error",
                "metadata": {"provider_name": "Mock", "raw": None},
            }
        }
    ]
    _fault(mocks, OA, mode="stream_error_mid")
    status, _, raw = _oa_chat(mocks, True)
    events = [d for _, d in _sse(raw)]
    assert status == 200 and "[DONE]" not in events
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in events[:-1])
    assert text.endswith("one two")
    last = json.loads(events[-1])
    assert last["object"] == "chat.completion.chunk" and last["error"]["code"] == "server_error"
    assert last["choices"][0]["finish_reason"] == "error"


def test_quirk_together_usage_with_choices(mocks: BackgroundMocks) -> None:
    """Content repeated as ``text``; usage only on the last chunk, with finish_reason "eos", even
    when stream_options asks for a usage chunk."""
    _fault(mocks, OA, mode="usage_with_choices")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "one two"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, _, raw = _raw(mocks, OA, "POST", "/v1/chat/completions", body, OA_HEADERS)
    chunks = [json.loads(d) for _, d in _sse(raw) if d.startswith("{")]
    assert all(c["choices"] for c in chunks)  # no separate usage chunk
    for c in chunks:
        choice = c["choices"][0]
        if choice["delta"].get("content"):
            assert choice["text"] == choice["delta"]["content"] and "token_id" in choice["delta"]
    assert [c["usage"] is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["choices"][0]["finish_reason"] == "eos"
