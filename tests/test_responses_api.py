"""The OpenAI Responses API through the real stack, with the official ``openai`` SDK.

Two gateway replicas (each its own Envoy, ext_proc and mock providers) share one
real Redis, where stored responses live: a conversation started on one replica
is continued, read and deleted on the other, and may move between backends of
any dialect. Every backend dialect answers Responses clients: OpenAI Chat,
Anthropic, Gemini (through the IR) and a Responses backend (passed through,
model renamed and ``store: false``). Bad input is a 4xx in OpenAI's error
format, never a 500.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.redis_server import RedisServer
from tests.stack import config_on_free_ports, start_stack
from tests.test_provider_headers import CLIENTS, check_withheld

OTHER_KEY = "other-tenant-key"
# backend dialect -> (model whose primary speaks it, its upstream model, the mock provider)
BACKENDS = {
    "openai": ("gpt-5.5", "gpt-5.5"),
    "anthropic": ("claude-sonnet-4-6", "claude-sonnet-4-6"),
    "gemini": ("gemini-3.5-flash", "gemini-3.5-flash"),
    "openai_responses": ("gpt-5-mini", "gpt-5-mini"),
}
MAX_CONVERSATION = 64 * 1024
FAILOVER = "gpt-5-nano"
PREAMBLE = "gpt-5.5-preamble"
REFUSING = "gpt-5-pro"
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "look a thing up",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"echo": {"type": "string"}},
        "required": ["echo"],
        "additionalProperties": False,
    },
}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def responses_config(redis_url: str) -> dict[str, Any]:
    """The default stack plus a Responses-only provider, a second tenant, and Redis for stored responses."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["providers"]["openai_responses"] = {
        "dialect": "openai_responses",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "MOCK_OPENAI_RESPONSES_API_KEY",
        "mock": True,
    }
    cfg["models"]["gpt-5-mini"] = {
        "backends": [
            {"provider": "openai_responses", "model": "gpt-5-mini"},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
    }
    # Failed over by one test: its primary's health is its own (another upstream model, another backend).
    cfg["models"][FAILOVER] = {
        "backends": [
            {"provider": "openai_responses", "model": FAILOVER},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
    }
    # Its primary fails in-band after the stream's preamble (its own health, as FAILOVER's).
    cfg["models"][PREAMBLE] = {
        "backends": [
            {"provider": "openai_responses", "model": PREAMBLE},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
    }
    # Refused by the Responses backend itself: failed attempts count against a backend's health.
    cfg["models"][REFUSING] = {"backends": [{"provider": "openai_responses", "model": REFUSING}]}
    cfg["tenants"]["other"] = {"api_keys": [{"sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest()}]}
    cfg["redis"] = {"url": redis_url, "key_prefix": "responses-e2e"}
    cfg["conversations"] = {"max_conversation_bytes": MAX_CONVERSATION}
    # Replicas share the secret that seals reasoning signatures (docs/reasoning.md): each stack
    # here has mock keys of its own, from which it would derive a secret of its own.
    cfg["reasoning"] = {"signing_key_env": "GATEWAY_REASONING_KEY"}
    return cfg


SHARED_ENV = {"GATEWAY_REASONING_KEY": "replicas-share-this-secret"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[Stack, Stack]]:
    a = start_stack(
        tmp_path_factory.mktemp("replica-a"),
        config_on_free_ports(responses_config(redis_server.url)),
        SHARED_ENV,
    )
    try:
        b = start_stack(
            tmp_path_factory.mktemp("replica-b"),
            config_on_free_ports(responses_config(redis_server.url)),
            SHARED_ENV,
        )
    except BaseException:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


@pytest.fixture(scope="module")
def gateway(replicas: tuple[Stack, Stack]) -> Stack:
    """Replica A: conftest's ``mocks`` fixture resets its mock providers around each test."""
    return replicas[0]


@pytest.fixture
def mocks_b(replicas: tuple[Stack, Stack]) -> Iterator[MockAdmin]:
    with clean_mocks(replicas[1]) as admin:
        yield admin


def client(stack: Stack, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def sent(mocks: MockAdmin, provider: str) -> dict[str, Any]:
    return mocks.stats(provider)["last_request"]["body"]


def raw(stack: Stack, method: str, path: str, body: Any = None, key: str = DEMO_KEY) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        stack.base_url + path,
        data=data,
        method=method,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def reply(backend: str, text: str) -> str:
    return f"[{backend}:{BACKENDS[backend][1]}] {text}"


def openai_error(body: Any) -> dict[str, Any]:
    """The error of an OpenAI-format error body (and that it is one)."""
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


# ---- one turn, every backend ------------------------------------------------------------------


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_create(gateway: Stack, mocks: MockAdmin, backend: str) -> None:
    model, upstream = BACKENDS[backend]
    raw_resp = client(gateway).responses.with_raw_response.create(
        model=model, input="hello there", instructions="be brief", metadata={"ticket": "T-1"}, temperature=0.5
    )
    r = raw_resp.parse()
    assert raw_resp.headers["x-gateway-backend"] == f"{backend}/{upstream}"
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output_text == reply(backend, "hello there") and r.model == model
    [msg] = r.output
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (4, 3, 7)
    assert (
        r.usage.input_tokens_details.cached_tokens == 0
        and r.usage.output_tokens_details.reasoning_tokens == 0
    )
    body = sent(mocks, backend)
    if backend == "openai_responses":  # passed through: model renamed, nothing stored upstream
        assert body["store"] is False and "previous_response_id" not in body
        assert (body["input"], body["instructions"], body["metadata"]) == (
            "hello there",
            "be brief",
            {"ticket": "T-1"},
        )
    else:  # settings the client gave are echoed, as the API does
        assert (r.instructions, r.metadata, r.temperature, r.store) == (
            "be brief",
            {"ticket": "T-1"},
            0.5,
            True,
        )
    if backend == "anthropic":
        assert body["system"] == "be brief" and body["messages"] == [
            {"role": "user", "content": "hello there"}
        ]
        assert body["temperature"] == 0.5 and body["max_tokens"] == 4096


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_stream_event_sequence(gateway: Stack, mocks: MockAdmin, backend: str) -> None:
    """The raw stream is the typed sequence the SDK parses, numbered from 0; the SDK's helper
    accumulates it to the same answer."""
    model, _ = BACKENDS[backend]
    events = []
    req = urllib.request.Request(
        gateway.base_url + "/v1/responses",
        method="POST",
        data=json.dumps({"model": model, "input": "stream me please", "stream": True}).encode(),
        headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    name = None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            ev = EVENTS.validate_python(json.loads(line[6:]))
            assert ev.type == name
            events.append(ev)
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(deltas) == reply(backend, "stream me please") == events[-4].text
    final = events[-1].response
    assert final.id == events[0].response.id and final.status == "completed"
    assert final.output_text == reply(backend, "stream me please")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)
    assert mocks.stats(backend)["streamed"] == 1

    with client(gateway).responses.stream(model=model, input="and the helper too") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        done = stream.get_final_response()
    assert "".join(texts) == done.output_text == reply(backend, "and the helper too")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tool_round_trip_on_the_other_replica(
    replicas: tuple[Stack, Stack], mocks: MockAdmin, mocks_b: MockAdmin, backend: str, stream: bool
) -> None:
    """A call from replica A, its output sent to replica B with ``previous_response_id``: the id the
    client got is the backend's, and B's backend sees the call and its output matched."""
    a, b = replicas
    model, _ = BACKENDS[backend]

    def ask(stack: Stack, **kw: Any) -> Any:
        c = client(stack)
        if not stream:
            return c.responses.create(model=model, tools=[TOOL], **kw)
        with c.responses.stream(model=model, tools=[TOOL], **kw) as s:
            for _ in s:
                pass
            return s.get_final_response()

    first = ask(a, input="use tool now")
    [call] = first.output
    assert call.type == "function_call" and call.name == "lookup" and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"echo": "use tool now"}
    [issued] = mocks.stats(backend)["tool_call_ids"]
    # A Gemini 3 call carries its thought signature, sealed into the id the client gets
    # (docs/reasoning.md); replica B opens it and gives the backend its own id and signature.
    sealed = backend == "gemini" and call.call_id.startswith("gwr1")
    assert call.call_id == issued or sealed
    if stream:
        assert call.parsed_arguments == {
            "echo": "use tool now"
        }  # the helper parsed the strict tool's arguments
    final = ask(
        b,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "42 degrees"}],
    )
    assert final.output_text == reply(backend, "tool result: 42 degrees")
    assert final.usage.input_tokens == 3
    # The gateway's own answer echoes the request; a Responses backend's echoes what it was sent.
    assert final.previous_response_id == (None if backend == "openai_responses" else first.id)
    assert client(a).responses.retrieve(final.id).previous_response_id == first.id  # as kept
    body = sent(mocks_b, backend)
    if backend == "openai_responses":
        assert [i["type"] for i in body["input"]] == ["message", "function_call", "function_call_output"]
        assert body["input"][1]["call_id"] == body["input"][2]["call_id"] == call.call_id
        assert body["store"] is False and "previous_response_id" not in body
    elif backend == "openai":
        assert (
            body["messages"][-2]["tool_calls"][0]["id"]
            == body["messages"][-1]["tool_call_id"]
            == call.call_id
        )
    elif backend == "anthropic":
        assert body["messages"][-1]["content"][0]["tool_use_id"] == call.call_id
        assert body["tools"][0]["input_schema"] == TOOL["parameters"]
    else:
        assert body["contents"][-1]["parts"][0]["functionResponse"]["id"] == issued
        model_turn = body["contents"][-2]["parts"][0]
        assert model_turn["functionCall"]["id"] == issued
        assert model_turn.get("thoughtSignature") or not sealed
    assert mocks_b.stats(backend)["streamed"] == int(stream)


class Answer(BaseModel):
    answer: str
    words: int


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_parse_with_a_pydantic_model(gateway: Stack, mocks: MockAdmin, backend: str, stream: bool) -> None:
    """``responses.parse`` / ``responses.stream(text_format=...)``: the SDK's strict schema of the
    model reaches every backend in its own structured-output field (Anthropic's
    ``output_config.format`` too), and the answer parses into the model."""
    model, _ = BACKENDS[backend]
    c = client(gateway)
    if stream:
        with c.responses.stream(model=model, input="answer in json", text_format=Answer) as s:
            parsed = s.get_final_response()
    else:
        parsed = c.responses.parse(model=model, input="answer in json", text_format=Answer)
    assert parsed.output_parsed == Answer(answer=reply(backend, "answer in json"), words=4)
    schema = Answer.model_json_schema()
    body = sent(mocks, backend)
    if backend == "openai":
        assert body["response_format"]["json_schema"]["schema"]["properties"] == schema["properties"]
        assert body["response_format"]["json_schema"]["strict"] is True  # the SDK's schema is a strict one
    elif backend == "anthropic":
        fmt = body["output_config"]["format"]
        assert fmt["type"] == "json_schema" and fmt["schema"]["properties"] == schema["properties"]
        assert fmt["schema"]["additionalProperties"] is False
    elif backend == "gemini":
        assert body["generationConfig"]["responseJsonSchema"]["properties"] == schema["properties"]
    else:
        assert body["text"]["format"]["strict"] is True and body["text"]["format"]["name"] == "Answer"


PDF = "JVBERi0xLjQK"  # "%PDF-1.4\n", base64
PDF_SENT = {  # backend -> the file part it received, in its own format
    "openai": {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
    },
    "anthropic": {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "a.pdf",
    },
    "gemini": {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
    "openai_responses": {
        "type": "input_file",
        "filename": "a.pdf",
        "file_data": f"data:application/pdf;base64,{PDF}",
    },
}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_pdf_reaches_every_backend(gateway: Stack, mocks: MockAdmin, backend: str) -> None:
    r = client(gateway).responses.create(
        model=BACKENDS[backend][0],
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "summarise this"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                    },
                ],
            }
        ],
    )
    assert r.output_text == reply(backend, "summarise this")
    body = sent(mocks, backend)
    last = {
        "openai": lambda: body["messages"][-1]["content"],
        "anthropic": lambda: body["messages"][-1]["content"],
        "gemini": lambda: body["contents"][-1]["parts"],
        "openai_responses": lambda: body["input"][-1]["content"],
    }
    assert last[backend]()[1] == PDF_SENT[backend]


# ---- conversation state ------------------------------------------------------------------------


def test_conversation_across_replicas_and_backends(
    replicas: tuple[Stack, Stack], mocks: MockAdmin, mocks_b: MockAdmin
) -> None:
    """Turn 1 on A (Anthropic), turn 2 on B (Gemini), turn 3 on A (Responses backend, streamed):
    each backend gets the whole conversation; retrieval, input items and deletion work anywhere."""
    a, b = replicas
    one = client(a).responses.create(
        model="claude-sonnet-4-6", input="first question", instructions="be brief"
    )
    two = client(b).responses.create(
        model="gemini-3.5-flash", input="second question", previous_response_id=one.id
    )
    assert two.output_text == reply("gemini", "second question")
    # instructions are not carried over (as the API says); every earlier turn is
    assert [c["role"] for c in sent(mocks_b, "gemini")["contents"]] == ["user", "model", "user"]
    assert "systemInstruction" not in sent(mocks_b, "gemini")
    assert two.usage.input_tokens == 2 + 3 + 2
    with client(a).responses.stream(
        model="gpt-5-mini", input="third question", previous_response_id=two.id
    ) as s:
        for _ in s:
            pass
        three = s.get_final_response()
    assert three.output_text == reply("openai_responses", "third question")
    body = sent(mocks, "openai_responses")
    assert [(i.get("role"), "id" in i) for i in body["input"]] == [
        ("user", False),
        ("assistant", True),
        ("user", False),
        ("assistant", True),
        ("user", False),
    ]

    got = client(b).responses.retrieve(three.id)
    assert got.output_text == three.output_text and got.id == three.id
    items = client(b).responses.input_items.list(three.id, order="asc")
    assert [(i.role, i.content[0].text) for i in items.data] == [
        ("user", "first question"),
        ("assistant", reply("anthropic", "first question")),
        ("user", "second question"),
        ("assistant", reply("gemini", "second question")),
        ("user", "third question"),
    ]
    first_items = client(a).responses.input_items.list(one.id)
    assert first_items.data[0].id == items.data[0].id  # the same message keeps its id in later turns
    page = client(a).responses.input_items.list(three.id, limit=2)  # newest first by default
    assert [i.id for i in page.data] == [items.data[4].id, items.data[3].id] and page.has_more

    client(a).responses.delete(three.id)
    with pytest.raises(openai.NotFoundError):
        client(b).responses.retrieve(three.id)
    with pytest.raises(openai.BadRequestError) as e:
        client(b).responses.create(model="gpt-5.5", input="more", previous_response_id=three.id)
    assert e.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    assert e.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_continuation_fails_over_to_another_backend(gateway: Stack, mocks: MockAdmin) -> None:
    first = client(gateway).responses.create(model=FAILOVER, input="remember this")
    assert first.output_text == f"[openai_responses:{FAILOVER}] remember this"
    mocks.fault("openai_responses", mode="error", status=503)
    raw_resp = client(gateway).responses.with_raw_response.create(
        model=FAILOVER, input="and now?", previous_response_id=first.id
    )
    assert raw_resp.headers["x-gateway-backend"] == "anthropic/claude-sonnet-4-6"
    r = raw_resp.parse()
    assert r.output_text == "[anthropic:claude-sonnet-4-6] and now?"
    assert [m["role"] for m in sent(mocks, "anthropic")["messages"]] == ["user", "assistant", "user"]
    assert client(gateway).responses.retrieve(r.id).output_text == r.output_text  # kept after a failover too


def test_an_error_after_the_streams_preamble_fails_over(gateway: Stack, mocks: MockAdmin) -> None:
    """The Responses backend opens its stream (response.created, response.in_progress), then sends
    an error event: the answer guard holds through the preamble and fails the attempt over, so the
    client's stream comes whole from the next tier."""
    mocks.fault("openai_responses", mode="stream_error")
    with client(gateway).responses.with_streaming_response.create(
        model=PREAMBLE, input="stream through an error", stream=True
    ) as r:
        assert r.headers["x-gateway-backend"] == "anthropic/claude-sonnet-4-6"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == (
        "[anthropic:claude-sonnet-4-6] stream through an error"
    )
    assert not any(e["type"] == "error" for e in events)
    assert mocks.stats("openai_responses")["requests"] >= 1


def test_another_tenant_never_sees_a_response(replicas: tuple[Stack, Stack], mocks: MockAdmin) -> None:
    a, b = replicas
    mine = client(a).responses.create(model="gpt-5.5", input="my secret")
    other = client(b, OTHER_KEY)
    with pytest.raises(openai.NotFoundError) as e:
        other.responses.retrieve(mine.id)
    assert e.value.body["message"] == f"Response with id '{mine.id}' not found."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.BadRequestError) as e2:
        other.responses.create(model="gpt-5.5", input="tell me", previous_response_id=mine.id)
    assert e2.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    # exactly what an unknown id gets
    status, unknown = raw(b, "GET", "/v1/responses/resp_unknown", key=OTHER_KEY)
    assert status == 404 and openai_error(unknown)["message"] == "Response with id 'resp_unknown' not found."
    assert client(a).responses.retrieve(mine.id).output_text == mine.output_text  # still there for its tenant


def test_store_false_keeps_nothing(gateway: Stack, mocks: MockAdmin) -> None:
    r = client(gateway).responses.create(model="claude-sonnet-4-6", input="forget me", store=False)
    assert r.store is False and r.output_text
    with pytest.raises(openai.NotFoundError):
        client(gateway).responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError):
        client(gateway).responses.create(model="gpt-5.5", input="again", previous_response_id=r.id)


def test_reasoning_items_pass_through_and_come_back(gateway: Stack, mocks: MockAdmin) -> None:
    """A Responses backend's reasoning items reach the client and are stored. Replayed to a backend
    that stores nothing, they go back only with their encrypted content (the mock, like the API,
    answers 404 for a reasoning item it cannot resolve)."""
    c = client(gateway)
    plain = c.responses.create(
        model="gpt-5-mini", input="think first", reasoning={"effort": "low", "summary": "auto"}
    )
    assert [o.type for o in plain.output] == ["reasoning", "message"]
    assert plain.output[0].summary[0].text and plain.usage.output_tokens_details.reasoning_tokens == 2
    nxt = c.responses.create(model="gpt-5-mini", input="go on", previous_response_id=plain.id)
    assert nxt.output_text == reply("openai_responses", "go on")
    assert [i["type"] for i in sent(mocks, "openai_responses")["input"]] == ["message", "message", "message"]

    enc = c.responses.create(
        model="gpt-5-mini",
        input="think first",
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
    )
    assert enc.output[0].encrypted_content
    c.responses.create(model="gpt-5-mini", input="go on", previous_response_id=enc.id)
    replayed = sent(mocks, "openai_responses")["input"]
    assert [i["type"] for i in replayed] == ["message", "reasoning", "message", "message"]
    assert replayed[1]["encrypted_content"] == enc.output[0].encrypted_content
    # Reasoning translates (docs/reasoning.md): Claude gets a thinking budget from the effort
    # table, Chat Completions reasoning_effort; a summary asked of a backend that gives none is
    # no refusal (the reasoning text is shown where the backend has it).
    c.responses.create(model="claude-sonnet-4-6", input="x", reasoning={"effort": "high"})
    assert sent(mocks, "anthropic")["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    c.responses.create(model="gpt-5.5", input="x", reasoning={"effort": "high", "summary": "auto"})
    assert sent(mocks, "openai")["reasoning_effort"] == "high"


def test_oversized_conversations_are_a_clear_400(gateway: Stack, mocks: MockAdmin) -> None:
    c = client(gateway)
    # The mocks echo the input: a stored turn holds it twice (input and output).
    words = "word " * (MAX_CONVERSATION // 25)
    kept = c.responses.create(model="gpt-5.5", input=words)
    assert len(c.responses.input_items.list(kept.id).data) == 1
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="gpt-5.5", input=words * 3, previous_response_id=kept.id)
    assert e.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert f"more than this gateway keeps ({MAX_CONVERSATION} bytes)" in e.value.body["message"]  # type: ignore[index]
    big = c.responses.create(model="gpt-5.5", input=words * 3)  # answered, kept without its conversation
    assert c.responses.retrieve(big.id).output_text == big.output_text
    for call in (
        lambda: c.responses.input_items.list(big.id),
        lambda: c.responses.create(model="gpt-5.5", input="more", previous_response_id=big.id),
    ):
        with pytest.raises(openai.BadRequestError) as e2:
            call()
        assert "was not kept whole" in e2.value.body["message"]  # type: ignore[index]
    assert mocks.stats("openai")["requests"] == 2


# ---- refusals ---------------------------------------------------------------------------------

BAD: list[tuple[str, str, Any, int, str | None, str]] = [
    # (id, model, body, status, param, words in the message)
    ("not-json", "gpt-5.5", b"{nope", 400, None, "not valid JSON"),
    ("input-number", "gpt-5.5", {"input": 5}, 400, "input", "'input' must be a string or an array"),
    ("input-missing", "gpt-5.5", {}, 400, "input", "missing required field 'input'"),
    ("item-not-object", "gpt-5.5", {"input": ["hi"]}, 400, "input[0]", "must be an object"),
    (
        "item-without-type",
        "claude-sonnet-4-6",
        {"input": [{"content": "hi"}]},
        400,
        "input[0].type",
        "must be a string",
    ),
    (
        "unknown-item-type",
        "gemini-3.5-flash",
        {"input": [{"type": "banana"}]},
        400,
        "input[0].type",
        "unknown input item type 'banana'",
    ),
    (
        "tool-role",
        "gpt-5.5",
        {"input": [{"role": "tool", "content": "x"}]},
        400,
        "input[0].role",
        "must be one of user, assistant, system, developer",
    ),
    (
        "bad-part",
        "gpt-5.5",
        {"input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        400,
        "input[0].content[0].type",
        "must be one of input_text, input_image, input_file",
    ),
    (
        "orphan-output",
        "claude-sonnet-4-6",
        {"input": [{"type": "function_call_output", "call_id": "call_nobody", "output": "1"}]},
        400,
        "input[0].call_id",
        "No tool call found for function call output with call_id call_nobody.",
    ),
    (
        "orphan-output-passthrough",
        REFUSING,
        {"input": [{"type": "function_call_output", "call_id": "call_nobody", "output": "1"}]},
        400,
        "input",
        "No tool call found for function call output with call_id call_nobody.",
    ),
    (
        "unknown-previous",
        "gpt-5.5",
        {"input": "hi", "previous_response_id": "resp_nobody"},
        400,
        "previous_response_id",
        "Previous response with id 'resp_nobody' not found.",
    ),
    (
        "previous-not-string",
        "gpt-5.5",
        {"input": "hi", "previous_response_id": 7},
        400,
        "previous_response_id",
        "must be a non-empty string",
    ),
    (
        "builtin-tool",
        "claude-sonnet-4-6",
        {"input": "hi", "tools": [{"type": "web_search"}]},
        400,
        "tools[0]",
        "'tools[0]' cannot be expressed for an anthropic backend",
    ),
    (
        "item-reference",
        "gpt-5.5",
        {"input": [{"type": "item_reference", "id": "msg_1"}]},
        400,
        "input[0]",
        "item references are not supported",
    ),
    (
        "conversation",
        "gpt-5-mini",
        {"input": "hi", "conversation": "conv_1"},
        400,
        "conversation",
        "the Conversations API is not supported",
    ),
    (
        "too-short-max-output",
        REFUSING,
        {"input": "hi", "max_output_tokens": 2},
        400,
        "max_output_tokens",
        "Expected a value >= 16",
    ),
]


@pytest.mark.parametrize(
    ("model", "body", "status", "param", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_a_4xx_in_openai_format(
    gateway: Stack, mocks: MockAdmin, model: str, body: Any, status: int, param: str | None, says: str
) -> None:
    payload = body if isinstance(body, bytes) else {"model": model, **body}
    got, answer = raw(gateway, "POST", "/v1/responses", payload)
    err = openai_error(answer)
    assert (got, err["param"]) == (status, param), answer
    assert says in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/v1/responses/resp_nobody", 404, "Response with id 'resp_nobody' not found."),
        ("GET", "/v1/responses/not%20an%20id", 404, "not found"),
        ("DELETE", "/v1/responses/resp_nobody", 404, "Response with id 'resp_nobody' not found."),
        ("GET", "/v1/responses/resp_nobody/input_items", 404, "not found"),
        ("POST", "/v1/responses/resp_nobody/cancel", 404, "no such endpoint"),
        ("PUT", "/v1/responses", 404, "no such endpoint"),
    ],
)
def test_stored_response_paths_refuse_cleanly(
    gateway: Stack, method: str, path: str, status: int, says: str
) -> None:
    got, answer = raw(gateway, method, path, {} if method in ("POST", "PUT") else None)
    assert got == status and says in openai_error(answer)["message"]


def test_input_items_query_is_checked(gateway: Stack, mocks: MockAdmin) -> None:
    r = client(gateway).responses.create(model="gpt-5.5", input="list me")
    for query, param in (
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("order=up", "order"),
        ("after=msg_nobody", "after"),
    ):
        status, answer = raw(gateway, "GET", f"/v1/responses/{r.id}/input_items?{query}")
        assert (status, openai_error(answer)["param"]) == (400, param)


def test_passthrough_refusals_and_builtin_tools(gateway: Stack, mocks: MockAdmin) -> None:
    """The Responses backend itself takes built-in tools; a Chat client's stop sequences cannot reach it."""
    r = client(gateway).responses.create(
        model="gpt-5-mini", input="search the web", tools=[{"type": "web_search"}]
    )
    assert r.output_text == reply("openai_responses", "search the web")
    assert sent(mocks, "openai_responses")["tools"] == [{"type": "web_search"}]
    with pytest.raises(openai.BadRequestError) as e:
        openai.OpenAI(
            base_url=gateway.base_url + "/v1", api_key=DEMO_KEY, max_retries=0
        ).chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}], stop=["HALT"]
        )
    assert e.value.body["param"] == "stop"  # type: ignore[index]
    assert "cannot be expressed for an openai_responses backend" in e.value.body["message"]  # type: ignore[index]


def test_metrics_count_responses_requests(gateway: Stack, mocks: MockAdmin) -> None:
    from tests.test_observability import metrics

    def count() -> float:
        return sum(
            v
            for (name, labels), v in metrics(gateway).items()
            if name == "llm_gateway_requests_total"
            and ("dialect", "openai_responses") in labels
            and ("backend", "anthropic/claude-sonnet-4-6") in labels
            and ("status", "200") in labels
        )

    before = count()
    client(gateway).responses.create(model="claude-sonnet-4-6", input="count me")
    assert count() == before + 1
    hits = [
        v
        for (name, labels), v in metrics(gateway).items()
        if name == "llm_gateway_conversation_store_total" and dict(labels) == {"op": "put", "outcome": "ok"}
    ]
    assert hits and hits[0] >= 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_responses_backend_tells_no_client_its_account(
    gateway: Stack, mocks: MockAdmin, client: str, stream: bool
) -> None:
    """The Responses-only provider's account headers (OpenAI's: organisation, project, limits,
    request id) reach no client, Responses or other (tests/test_provider_headers.py)."""
    sent = check_withheld(gateway, mocks, "openai_responses", client, "gpt-5-mini", stream)
    assert "openai-organization" in sent, sent
