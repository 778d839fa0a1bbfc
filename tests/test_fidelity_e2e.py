"""End to end through Envoy, ext_proc and the mock providers, with the official SDKs as clients:
tool names a target does not allow round-trip (the backend gets its own spelling, the client
sees its own name back, streamed and not), odd tool-call ids are fitted, a tool result's error
marker reaches an OpenAI backend, and a late system message keeps its place."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.stack import config_on_free_ports, start_stack

# Valid for an Anthropic client (up to 128 of [a-zA-Z0-9_-]), too long for OpenAI (64).
LONG = "mcp__workspace_tools__" + "read_file_contents_with_line_numbers_and_metadata_" * 2
# Valid for a Gemini client (dots and colons), not for Anthropic or OpenAI.
DOTTED = "workspace.files:read"
SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}}
OPENAI_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
ANTHROPIC_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")


def received(mocks: MockAdmin, provider: str) -> dict[str, Any]:
    """The body the provider's mock received last."""
    return mocks.stats(provider)["last_request"]["body"]


def anthropic_sdk(gateway: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)


def openai_sdk(gateway: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("stream", [False, True])
def test_a_long_tool_name_round_trips_through_an_openai_backend(
    gateway: Stack, mocks: MockAdmin, stream: bool
) -> None:
    sdk = anthropic_sdk(gateway)
    kwargs: dict[str, Any] = {
        "model": "gpt-5.5",  # OpenAI first
        "max_tokens": 200,
        "tools": [{"name": LONG, "description": "read a file", "input_schema": SCHEMA}],
        "messages": [{"role": "user", "content": "use tool please"}],
    }
    if stream:
        with sdk.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = sdk.messages.create(**kwargs)
    sent = received(mocks, "openai")["tools"][0]["function"]["name"]
    assert sent != LONG and OPENAI_NAME.fullmatch(sent)
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert [c.name for c in calls] == [LONG]
    assert msg.stop_reason == "tool_use"

    # The next turn: the client's history holds its own name and the backend's id; the backend
    # gets the same spelling again, so history and tools still match.
    follow = {
        **kwargs,
        "messages": [
            *kwargs["messages"],
            {"role": "assistant", "content": [c.model_dump(exclude_none=True) for c in calls]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "42 lines"}],
            },
        ],
    }
    follow.pop("tools")
    follow["tools"] = kwargs["tools"]
    again = sdk.messages.create(**follow)
    body = received(mocks, "openai")
    assert body["tools"][0]["function"]["name"] == sent
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == sent
    assert "tool result: 42 lines" in again.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_a_dotted_gemini_function_name_round_trips_through_an_anthropic_backend(
    gateway: Stack, mocks: MockAdmin, stream: bool
) -> None:
    client = genai.Client(
        api_key=DEMO_KEY, http_options=types.HttpOptions(base_url=gateway.base_url, timeout=20_000)
    )
    cfg = types.GenerateContentConfig(
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(name=DOTTED, description="read", parameters_json_schema=SCHEMA)
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=[DOTTED])
        ),
    )
    model = "claude-sonnet-4-6"  # Anthropic first
    if stream:
        calls = [
            fc
            for chunk in client.models.generate_content_stream(model=model, contents="read it", config=cfg)
            for fc in (chunk.function_calls or [])
        ]
    else:
        calls = (
            client.models.generate_content(model=model, contents="read it", config=cfg).function_calls or []
        )
    body = received(mocks, "anthropic")
    sent = body["tools"][0]["name"]
    assert sent != DOTTED and ANTHROPIC_NAME.fullmatch(sent)
    assert body["tool_choice"] == {"type": "tool", "name": sent}
    assert [c.name for c in calls] == [DOTTED]


def test_odd_tool_call_ids_are_fitted_for_anthropic_and_still_pair(gateway: Stack, mocks: MockAdmin) -> None:
    odd = "call:7f3a|tool.read/1"  # an id another provider made; Anthropic takes ^[a-zA-Z0-9_-]+$
    sdk = openai_sdk(gateway)
    out = sdk.chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[
            {"role": "user", "content": "read it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": odd, "type": "function", "function": {"name": "read", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": odd, "content": "file body"},
        ],
        tools=[{"type": "function", "function": {"name": "read", "parameters": SCHEMA}}],
    )
    body = received(mocks, "anthropic")
    use = body["messages"][1]["content"][0]
    result = body["messages"][2]["content"][0]
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", use["id"]) and use["id"] == result["tool_use_id"]
    assert "tool result: file body" in (out.choices[0].message.content or "")


def test_a_tool_result_error_reaches_an_openai_backend(gateway: Stack, mocks: MockAdmin) -> None:
    sdk = anthropic_sdk(gateway)
    sdk.messages.create(
        model="gpt-5.5",
        max_tokens=100,
        tools=[{"name": "get_weather", "input_schema": SCHEMA}],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "HTTP 503", "is_error": True}
                ],
            },
        ],
    )
    tool_msg = received(mocks, "openai")["messages"][-1]
    assert tool_msg == {"role": "tool", "tool_call_id": "toolu_1", "content": "[tool error] HTTP 503"}


def test_a_late_developer_message_keeps_its_place_at_an_anthropic_backend(
    gateway: Stack, mocks: MockAdmin
) -> None:
    sdk = openai_sdk(gateway)
    sdk.chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Plan a trip."},
            {"role": "assistant", "content": "Where to?"},
            {"role": "developer", "content": "Answer in French from now on."},
            {"role": "user", "content": "Paris."},
        ],
    )
    body = received(mocks, "anthropic")
    assert body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    last = body["messages"][2]["content"]
    texts = [last] if isinstance(last, str) else [b["text"] for b in last]
    assert texts == ["<system-message>\nAnswer in French from now on.\n</system-message>", "Paris."]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Stack, MockAdmin]]:
    """A stack of its own: an earlier failover leaves the OpenAI backend cooling down, and the
    next request would go to Anthropic first."""
    stack = start_stack(tmp_path, config_on_free_ports())
    try:
        yield stack, MockAdmin(stack)
    finally:
        stack.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_names_come_back_after_failover_to_a_backend_of_the_clients_own_wire(
    fresh: tuple[Stack, MockAdmin], stream: bool
) -> None:
    """The OpenAI primary fails; the attempt to Anthropic re-translates the body fitted for
    OpenAI, so Anthropic sees OpenAI's spelling, and the Anthropic client still gets its own."""
    gateway, mocks = fresh
    mocks.fault("openai", mode="error", status=500)
    sdk = anthropic_sdk(gateway)
    kwargs: dict[str, Any] = {
        "model": "gpt-5.5",
        "max_tokens": 200,
        "tools": [{"name": LONG, "input_schema": SCHEMA}],
        "messages": [{"role": "user", "content": "use tool please"}],
    }
    if stream:
        with sdk.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = sdk.messages.create(**kwargs)
    assert mocks.stats("openai")["by_status"] == {"500": 1}
    assert mocks.stats("anthropic")["requests"] == 1
    sent = received(mocks, "anthropic")["tools"][0]["name"]
    assert sent != LONG and OPENAI_NAME.fullmatch(sent)
    assert [b.name for b in msg.content if b.type == "tool_use"] == [LONG]
