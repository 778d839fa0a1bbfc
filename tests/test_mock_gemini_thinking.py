"""The Gemini mock's thought signatures, as strict as the real API
(https://ai.google.dev/gemini-api/docs/thought-signatures): a thinking model signs its function
calls; a function call of the current turn sent back without its signature, or with one it did
not issue, is a 400. Driven with the official google-genai SDK, which keeps the signature (bytes)
on the part it echoes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread

GM, KEY = "gem", "gm-test-key-0123456789abcdef"
THINKING = gt.ThinkingConfig(thinking_level=gt.ThinkingLevel.LOW, include_thoughts=True)


@pytest.fixture(scope="module")
def mocks() -> Iterator[BackgroundMocks]:
    bg = start_in_thread([MockSpec(GM, "gemini", 0, KEY)])
    yield bg
    bg.stop()


@pytest.fixture(scope="module")
def client(mocks: BackgroundMocks) -> genai.Client:
    return genai.Client(
        api_key=KEY,
        http_options=gt.HttpOptions(
            base_url=f"http://127.0.0.1:{mocks.ports[GM]}", retry_options=gt.HttpRetryOptions(attempts=1)
        ),
    )


def _config(thinking: gt.ThinkingConfig | None = THINKING) -> gt.GenerateContentConfig:
    tool = gt.Tool(function_declarations=[gt.FunctionDeclaration(name="get_weather", description="Weather")])
    return gt.GenerateContentConfig(
        tools=[tool],
        thinking_config=thinking,
        automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True),
    )


USER = gt.Content(role="user", parts=[gt.Part(text="use tool for weather")])


def _first_turn(client: genai.Client, config: gt.GenerateContentConfig) -> gt.Content:
    r = client.models.generate_content(model="gemini-3.5-flash", contents=[USER], config=config)
    assert r.candidates and r.candidates[0].content
    return r.candidates[0].content


def _result(call: Any) -> gt.Content:
    return gt.Content(
        role="user",
        parts=[
            gt.Part(
                function_response=gt.FunctionResponse(id=call.id, name=call.name, response={"result": "sun"})
            )
        ],
    )


def test_a_thinking_model_signs_its_calls_and_shows_thoughts(client: genai.Client) -> None:
    turn = _first_turn(client, _config())
    parts = turn.parts or []
    assert parts[0].thought is True and parts[0].text
    call_part = parts[-1]
    assert call_part.function_call is not None and call_part.thought_signature
    follow = client.models.generate_content(
        model="gemini-3.5-flash", contents=[USER, turn, _result(call_part.function_call)], config=_config()
    )
    assert follow.text is not None and "tool result: sun" in follow.text
    assert follow.usage_metadata is not None and (follow.usage_metadata.thoughts_token_count or 0) > 0


def test_a_call_sent_back_without_its_signature_is_a_400(client: genai.Client) -> None:
    turn = _first_turn(client, _config())
    call = next(p.function_call for p in turn.parts or [] if p.function_call)
    stripped = gt.Content(role="model", parts=[gt.Part(function_call=call)])
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(
            model="gemini-3.5-flash", contents=[USER, stripped, _result(call)], config=_config()
        )
    assert e.value.code == 400
    assert "Function call is missing a thought_signature in functionCall parts" in str(e.value)


def test_a_signature_not_issued_for_the_call_is_a_400(client: genai.Client) -> None:
    turn = _first_turn(client, _config())
    call = next(p.function_call for p in turn.parts or [] if p.function_call)
    forged = gt.Content(role="model", parts=[gt.Part(function_call=call, thought_signature=b"forged")])
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(
            model="gemini-3.5-flash", contents=[USER, forged, _result(call)], config=_config()
        )
    assert e.value.code == 400 and "Thought signature is not valid" in str(e.value)


def test_without_thinking_nothing_is_signed_or_checked(client: genai.Client) -> None:
    plain = _config(None)
    turn = _first_turn(client, plain)
    call_part = (turn.parts or [])[-1]
    assert call_part.thought_signature is None and not any(p.thought for p in turn.parts or [])
    stripped = gt.Content(role="model", parts=[gt.Part(function_call=call_part.function_call)])
    follow = client.models.generate_content(
        model="gemini-3.5-flash", contents=[USER, stripped, _result(call_part.function_call)], config=plain
    )
    assert follow.text is not None


def test_earlier_turns_are_not_checked(client: genai.Client) -> None:
    """Only the current turn's calls are validated (thought-signatures docs)."""
    turn = _first_turn(client, _config())
    call = next(p.function_call for p in turn.parts or [] if p.function_call)
    stripped = gt.Content(role="model", parts=[gt.Part(function_call=call)])
    later = gt.Content(role="model", parts=[gt.Part(text="It is sunny.")])
    again = gt.Content(role="user", parts=[gt.Part(text="thanks")])
    follow = client.models.generate_content(
        model="gemini-3.5-flash", contents=[USER, stripped, _result(call), later, again], config=_config()
    )
    assert follow.text is not None
