"""The Responses dialect and the conversation-state hooks without Envoy.

- the request path (``plan.start``, ``plan.serve_state``, ``plan.plan``, ``finish.keep``): which
  requests are operations on stored state, how a continued request is expanded before admission,
  which requests keep their answer, tenant isolation;
- the in-process conversation store's bounds (entries, bytes, time to live);
- the codec against the official SDK's own types: every stream fixture of the other dialects
  re-encoded as Responses events accumulates, with the SDK's stream helper, to the backend's
  content; every response fixture renders to a valid ``Response``; every request fixture builds
  for a Responses backend (or is refused naming the field) and rebuilds identically;
- refusals and same-dialect round trips of what the IR cannot carry.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from ext_proc.admission.estimate import MEDIA_TOKENS, input_tokens
from ext_proc.conversations import MemoryConversations, StoreUnavailable
from ext_proc.dialects import CODECS, get_dialect
from ext_proc.dialects.openai_responses import state as stored
from ext_proc.errors import GatewayError
from ext_proc.request import finish as F
from ext_proc.request.answer import judge_body
from ext_proc.request.plan import Answer, RoutePlan, Started, serve_state, start
from ext_proc.translation.ir import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    ReasoningPart,
    StreamError,
    TextPart,
    ToolCallPart,
    Usage,
)
from ext_proc.translation.sse import SSEReader
from tests.test_codecs import FIX, REQUESTS, RESPONSES, STREAMS, _collapse, _src, decode, load
from tests.test_request_path import KEY, budgets, do_plan, run, started, state_of

RESPONSES_API = {":method": "POST", ":path": "/v1/responses", "authorization": f"Bearer {KEY}"}
CODEC = CODECS["openai_responses"]
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def headers(method: str, path: str) -> dict[str, str]:
    return {":method": method, ":path": path, "authorization": f"Bearer {KEY}"}


def body_of(answer: Answer) -> Any:
    return orjson.loads(answer.body)


def answer_json(text: str, rid: str = "resp_1") -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "response",
            "status": "completed",
            "model": "gpt-5.5",
            "output": [
                {
                    "id": "msg_a",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
        }
    )


# ---- the request path --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/v1/responses/resp_1", "get"),
        ("DELETE", "/v1/responses/resp_1", "delete"),
        ("GET", "/v1/responses/resp_1/input_items?limit=2", "input_items"),
        ("GET", "/responses/resp_1", "get"),
    ],
)
def test_stored_response_operations_are_state_operations(method: str, path: str, action: str) -> None:
    result = start(state_of(), headers(method, path), end_of_stream=True)
    assert isinstance(result, Started)
    assert (result.call.dialect, result.call.operation, result.call.resource, result.call.action) == (
        "openai_responses",
        "state",
        "resp_1",
        action,
    )
    assert result.call.query == ("limit=2" if "?" in path else "")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/responses/resp_1/cancel"), ("PUT", "/v1/responses"), ("POST", "/v1/responses/resp_1")],
)
def test_other_responses_paths_are_404(method: str, path: str) -> None:
    answer = start(state_of(), headers(method, path), end_of_stream=False)
    assert isinstance(answer, Answer) and answer.status == 404
    assert (
        body_of(answer)["error"]["code"] == "unknown_url"
    )  # an unknown endpoint, not a model: no "model_not_found"


def test_an_answer_is_kept_then_served_and_only_to_its_tenant() -> None:
    state = state_of()
    p = do_plan(state, RESPONSES_API, {"model": "claude-sonnet-4-6", "input": "hi there"})
    assert isinstance(p, RoutePlan) and p.keeper is not None
    assert p.primary.name == "anthropic/claude-sonnet-4-6" and p.ir is not None
    run(F.keep(p.keeper, answer_json("kept")[:10], False, 200))
    run(F.keep(p.keeper, answer_json("kept")[10:], True, 200))
    got = run(serve_state(state, started(state, headers("GET", "/v1/responses/resp_1"))))
    assert got.status == 200 and body_of(got)["output"][0]["content"][0]["text"] == "kept"
    assert body_of(got)["store"] is True
    items = run(serve_state(state, started(state, headers("GET", "/v1/responses/resp_1/input_items"))))
    [item] = body_of(items)["data"]
    assert item["role"] == "user" and item["content"] == [{"type": "input_text", "text": "hi there"}]
    assert item["id"].startswith("msg_") and body_of(items)["has_more"] is False
    other = Started(
        started(state, headers("GET", "/v1/responses/resp_1")).call,
        get_dialect("openai_responses"),
        "someone-else",
        None,
        0.0,
    )
    missing = run(serve_state(state, other))
    assert (
        missing.status == 404
        and body_of(missing)["error"]["message"] == "Response with id 'resp_1' not found."
    )
    gone = run(serve_state(state, started(state, headers("DELETE", "/v1/responses/resp_1"))))
    assert body_of(gone) == {"id": "resp_1", "object": "response", "deleted": True}
    again = run(serve_state(state, started(state, headers("GET", "/v1/responses/resp_1"))))
    assert again.status == 404


@pytest.mark.parametrize(
    ("status", "body", "kept"),
    [
        (200, {"model": "gpt-5.5", "input": "x"}, True),
        (200, {"model": "gpt-5.5", "input": "x", "store": False}, False),
        (429, {"model": "gpt-5.5", "input": "x"}, False),
    ],
)
def test_what_is_kept(status: int, body: dict[str, Any], kept: bool) -> None:
    state = state_of()
    p = do_plan(state, RESPONSES_API, body)
    assert isinstance(p, RoutePlan)
    if p.keeper is not None:
        run(F.keep(p.keeper, answer_json("a"), True, status))
    assert (run(state.conversations.get("demo", "resp_1")) is not None) is kept


def test_a_stream_is_kept_from_its_terminal_event() -> None:
    state = state_of()
    p = do_plan(state, RESPONSES_API, {"model": "gemini-3.5-flash", "input": "hi", "stream": True})
    assert isinstance(p, RoutePlan) and p.keeper is not None and p.ir is not None
    enc = CODEC.stream_encoder(p.ir)
    raw = b"".join(
        enc.encode(e)
        for e in (
            MessageStart("x", "m"),
            BlockStart(0, "text"),
            BlockDelta(0, "yo"),
            BlockStop(0),
            MessageDelta("end_turn", None, Usage(1, 1)),
            MessageStop(),
        )
    )
    for i in range(0, len(raw), 37):  # cut anywhere
        run(F.keep(p.keeper, raw[i : i + 37], i + 37 >= len(raw), 200))
    rid = orjson.loads(raw.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
    record = orjson.loads(run(state.conversations.get("demo", rid)))
    assert record["inputs"] == 1 and [i["role"] for i in record["items"]] == ["user", "assistant"]
    assert (
        record["items"][1]["content"][0]["text"] == "yo" and record["response"]["output"] is None
    )  # kept once
    got = run(serve_state(state, started(state, headers("GET", f"/v1/responses/{rid}"))))
    assert body_of(got)["output"] == record["items"][1:]


def test_a_continued_request_is_expanded_before_admission() -> None:
    """Admission reserves for the whole conversation the backend will see, not just the new turn."""
    state = state_of(budgets)
    first = do_plan(
        state, RESPONSES_API, {"model": "gpt-5.5", "input": "word " * 400, "max_output_tokens": 20}
    )
    assert isinstance(first, RoutePlan) and first.ticket is not None and first.keeper is not None
    run(F.keep(first.keeper, answer_json("short answer"), True, 200))
    state.admission.settle(first.ticket, 200, first.primary.name, Usage(400, 2))  # type: ignore[union-attr]
    nxt = do_plan(
        state,
        RESPONSES_API,
        {"model": "gpt-5.5", "input": "more", "previous_response_id": "resp_1", "max_output_tokens": 20},
    )
    assert isinstance(nxt, RoutePlan) and nxt.ticket is not None
    assert nxt.ticket.tokens >= first.ticket.tokens  # the earlier 400 words are in it
    assert [i.get("role") for i in nxt.body["input"]] == ["user", "assistant", "user"]
    sent = orjson.loads(nxt.new_body or b"")
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["max_completion_tokens"] == 20  # gpt-5.5 takes the cap there (catalog)


def test_an_unreachable_store_is_a_503() -> None:
    class Down(MemoryConversations):
        async def get(self, tenant: str, key: str) -> bytes | None:
            raise StoreUnavailable("the conversation store did not answer (TimeoutError)")

    state = state_of()
    state.conversations = Down()
    answer = do_plan(
        state, RESPONSES_API, {"model": "gpt-5.5", "input": "x", "previous_response_id": "resp_1"}
    )
    assert isinstance(answer, Answer) and answer.status == 503
    assert "did not answer" in body_of(answer)["error"]["message"]
    got = run(serve_state(state, started(state, headers("GET", "/v1/responses/resp_1"))))
    assert got.status == 503


def test_input_items_stay_stable_across_turns() -> None:
    """An input message's id is derived from its place and content: the same in every later turn,
    though a backend is sent the message without it."""
    turn1 = stored.normalize([{"role": "user", "content": "hello"}])
    replayed = stored.replayable(turn1)
    assert "id" not in replayed[0]
    turn2 = stored.normalize([*replayed, {"role": "user", "content": "hello"}])
    assert turn2[0]["id"] == turn1[0]["id"] != turn2[1]["id"]
    kept = stored.replayable(
        [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "e"},
        ]
    )
    assert [i["id"] for i in kept] == ["rs_2"]


def test_responses_input_is_estimated_like_chat_turns() -> None:
    dialect = get_dialect("openai_responses")
    image = {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 40_000, "detail": "auto"}
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "x" * 400}, image]}],
    }
    # 408 characters of text / 4, one image counted flat, one turn
    assert input_tokens(body, dialect) == 408 // 4 + MEDIA_TOKENS + 4 + 1
    assert dialect.requested_output({"max_output_tokens": 77}) == (77, None)


# ---- the in-process store ------------------------------------------------------------------


def test_memory_store_bounds_entries_bytes_and_age() -> None:
    now = [0.0]
    store = MemoryConversations(ttl_s=10, max_entries=3, max_bytes=100, clock=lambda: now[0])

    async def go() -> None:
        for i in range(4):
            await store.put("t", f"k{i}", b"x" * 10)
        assert len(store) == 3 and await store.get("t", "k0") is None  # the oldest went first
        await store.get("t", "k1")  # used: now the newest
        await store.put("t", "big", b"y" * 80)  # 30 + 80 bytes > 100: the least recently used go
        assert await store.get("t", "k2") is None and await store.get("t", "k1") == b"x" * 10
        assert store.bytes <= 100
        assert await store.get("u", "k1") is None  # another tenant's key is a miss
        assert await store.delete("t", "k3") and not await store.delete("t", "k3")
        now[0] = 11
        assert await store.get("t", "k1") is None and len(store) == 1  # expired
        assert not await store.delete("t", "big")  # expired: nothing to delete
        assert len(store) == 0 and store.bytes == 0

    asyncio.run(go())


# ---- the codec, checked by the SDK's own types -----------------------------------------------


def responses_stream(events: list[Any], req: ChatRequest | None = None) -> list[Any]:
    enc = CODEC.stream_encoder(req or ChatRequest(model="client-model", messages=[], stream=True))
    raw = b"".join(enc.encode(e) for e in events)
    out = []
    for sse in SSEReader().feed(raw):
        ev = EVENTS.validate_python(orjson.loads(sse.data))
        assert ev.type == sse.event
        out.append(ev)
    return out


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_every_stream_fixture_is_a_valid_responses_stream(path: Path) -> None:
    events = decode(path.read_bytes(), _src(path))
    want_text, want_calls = _collapse(events)
    out = responses_stream(events)
    assert [e.sequence_number for e in out] == list(range(len(out)))
    assert out[0].type == "response.created" and out[1].type == "response.in_progress"
    if any(isinstance(e, StreamError) for e in events):
        assert [e.type for e in out[-2:]] == ["error", "response.failed"]
        assert out[-1].response.status == "failed" and out[-1].response.error.message
        return
    assert out[-1].type in ("response.completed", "response.incomplete")
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for ev in out:
        state.handle_event(ev)
    final = out[-1].response
    assert final.output_text == want_text
    assert [
        (o.call_id, o.name, orjson.loads(o.arguments)) for o in final.output if o.type == "function_call"
    ] == want_calls
    if out[-1].type == "response.completed":  # the SDK's helper completes on this event only
        assert state._completed_response is not None and state._completed_response.output_text == want_text
    # and back: the Responses decoder gives the same content
    raw = b"".join(
        b"event: " + e.type.encode() + b"\ndata: " + orjson.dumps(e.model_dump(mode="json")) + b"\n\n"
        for e in out
    )
    again = decode_responses(raw)
    assert _collapse(again) == (want_text, want_calls)


def decode_responses(raw: bytes) -> list[Any]:
    dec = CODEC.stream_decoder()
    out: list[Any] = []
    for sse in SSEReader().feed(raw):
        out += dec.feed(sse)
    return out + dec.close()


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_every_response_fixture_renders_a_valid_response(path: Path) -> None:
    case = load(path)
    resp = CODECS[case["dialect"]].parse_response(case["body"])
    resp.model = "client-model"
    echo = {"instructions": "be brief", "metadata": {"k": "v"}, "temperature": 0.3}
    rendered = CODEC.render_reply(resp, ChatRequest(model="m", messages=[], echo=echo))
    r = Response.model_validate(rendered)
    assert r.model == "client-model" and r.id.startswith("resp_")
    assert (r.instructions, r.metadata, r.temperature) == ("be brief", {"k": "v"}, 0.3)
    assert r.output_text == "".join(p.text for p in resp.content if isinstance(p, TextPart))
    assert [(o.call_id, o.name, o.arguments) for o in r.output if o.type == "function_call"] == [
        (p.id, p.name, p.arguments) for p in resp.content if isinstance(p, ToolCallPart)
    ]
    assert r.status == ("incomplete" if resp.stop_reason in ("max_tokens", "content_filter") else "completed")
    assert r.usage.input_tokens == resp.usage.input_tokens
    back = CODEC.parse_response(rendered)  # a Responses backend's answer reads back the same
    # (reasoning as this dialect's own, a call's own signature sealed into its id by the gateway)
    assert (_plain(back.content), back.usage) == (_plain(resp.content), resp.usage)


def _plain(content: list[Any]) -> list[Any]:
    return [
        ReasoningPart(p.text)
        if isinstance(p, ReasoningPart)
        else ToolCallPart(p.id, p.name, p.arguments)
        if isinstance(p, ToolCallPart)
        else p
        for p in content
    ]


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_every_request_fixture_builds_for_a_responses_backend(path: Path) -> None:
    case = load(path)
    ir = CODECS[case["dialect"]].parse_request(
        case["body"], case.get("path_model"), case.get("path_stream", False)
    )
    try:
        built = CODEC.build_request(ir, "up", default_max_tokens=4096)
    except GatewayError as e:
        assert (e.status, e.kind) == (400, "invalid_request") and e.param and e.param in e.message
        built = CODEC.build_request(ir, "up", default_max_tokens=4096, drop_unsupported=True)
    assert built["store"] is False and built["model"] == "up"
    again = CODEC.build_request(CODEC.parse_request(built), "up", default_max_tokens=4096)
    assert again == built  # the failover stage re-parses what the router stage built
    for tool in built.get("tools", []):
        assert isinstance(tool["strict"], bool)  # always said: the Responses API defaults to strict


def test_fixture_dir_is_the_codec_fixtures() -> None:
    assert FIX.name == "codecs" and REQUESTS and RESPONSES and STREAMS


# ---- what the IR cannot carry -----------------------------------------------------------------


def parse(**body: Any) -> ChatRequest:
    return CODEC.parse_request({"model": "m", "input": "hi", **body})


@pytest.mark.parametrize(
    ("body", "unmapped"),
    [
        ({"tools": [{"type": "web_search"}]}, ["tools[0]"]),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
            ["input[0].content[0]"],
        ),
        (
            {
                "input": [
                    {"role": "user", "content": "x"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_file", "file_url": "https://example.com/a.pdf"}],
                    },
                ]
            },
            ["input[2].output[0]"],
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
            ["input[0].content[0]"],
        ),
        ({"reasoning": {"summary": "auto", "context": "all"}}, ["reasoning.context"]),
        ({"reasoning": {"effort": None, "summary": None}}, []),
        ({"include": ["reasoning.encrypted_content"]}, []),
        ({"include": ["message.output_text.logprobs"]}, ["include"]),
        ({"text": {"format": {"type": "text"}, "verbosity": "low"}}, ["text.verbosity"]),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, ["tool_choice"]),
        ({"truncation": "disabled", "store": True, "metadata": {"a": "b"}, "prompt_cache_key": "k"}, []),
        ({"truncation": "auto"}, ["truncation"]),
        (
            {"input": [{"role": "user", "content": "x"}, {"type": "web_search_call", "id": "ws_1"}]},
            ["input[1]"],
        ),
    ],
)
def test_unmapped(body: dict[str, Any], unmapped: list[str]) -> None:
    ir = parse(**body)
    assert ir.unmapped == unmapped
    for target in ("openai", "anthropic", "gemini"):
        if not unmapped:
            continue
        with pytest.raises(GatewayError) as e:
            CODECS[target].build_request(ir, "x", default_max_tokens=10)
        assert e.value.param == unmapped[0]
        CODECS[target].build_request(ir, "x", default_max_tokens=10, drop_unsupported=True)


def test_top_level_settings_go_back_to_a_responses_backend() -> None:
    """Failover from a Responses primary re-parses its body: what the IR does not carry is put back."""
    ir = parse(reasoning={"effort": "high", "summary": "auto"}, text={"verbosity": "low"})
    built = CODEC.build_request(ir, "x", default_max_tokens=10)
    assert built["reasoning"] == {"effort": "high", "summary": "auto"} and built["text"] == {
        "verbosity": "low"
    }


def test_reasoning_effort_is_chat_completions_reasoning_effort() -> None:
    ir = parse(reasoning={"effort": "low"})
    assert ir.unmapped == [] and ir.reasoning_effort == "low"
    assert CODECS["openai"].build_request(ir, "x", default_max_tokens=10)["reasoning_effort"] == "low"
    chat = CODECS["openai"].parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "minimal"}
    )
    assert CODEC.build_request(chat, "x", default_max_tokens=10)["reasoning"] == {"effort": "minimal"}
    # The effort table (translation.reasoning) maps it onto thinking budgets and levels.
    ant = CODECS["anthropic"].build_request(ir, "x", default_max_tokens=10)
    assert ant["thinking"] == {"type": "enabled", "budget_tokens": 2048} and ant["max_tokens"] == 10 + 2048
    gem = CODECS["gemini"].build_request(chat, "x", default_max_tokens=10)
    assert gem["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "minimal"}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (
            {"input": [{"type": "function_call_output", "call_id": "c9", "output": "1"}]},
            "input[0].call_id",
            "No tool call found for function call output with call_id c9.",
        ),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0]",
            "item references are not supported",
        ),
        ({"input": [{"type": "banana"}]}, "input[0].type", "unknown input item type 'banana'"),
        ({"input": []}, "input", "must not be empty"),
        (
            {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]},
            "input",
            "no user, assistant or tool",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
            "needs 'image_url' or 'file_id'",
        ),
        (
            {
                "input": [
                    {"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}
                ]
            },
            None,
            "",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "non-empty string"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
            "must be an object",
        ),
        (
            {"text": {"format": {"type": "yaml"}}},
            "text.format.type",
            "must be 'text', 'json_object' or 'json_schema'",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice", "must be 'auto', 'none', 'required' or an object"),
    ],
)
def test_invalid_input_names_the_field(body: dict[str, Any], param: str | None, says: str) -> None:
    if param is None:  # an assistant's image is not refused on parse, only where it cannot go
        assert parse(**body).unmapped == ["input[0].content[0]"]
        return
    with pytest.raises(GatewayError) as e:
        parse(**body)
    assert (e.value.status, e.value.param) == (400, param)
    assert says in e.value.message


def test_chat_stop_sequences_cannot_reach_a_responses_backend() -> None:
    ir = ChatRequest(model="m", messages=[Message("user", [TextPart("hi")])], stop=["HALT"], seed=3)
    with pytest.raises(GatewayError) as e:
        CODEC.build_request(ir, "x", default_max_tokens=10)
    assert e.value.param == "stop"
    dropped = CODEC.build_request(ir, "x", default_max_tokens=10, drop_unsupported=True)
    assert "stop" not in dropped and "seed" not in dropped


def test_error_rendering_and_parsing() -> None:
    gone = CODEC.render_error(
        GatewayError(
            "invalid_request", "Previous response with id 'r' not found.", param="previous_response_id"
        )
    )
    assert gone["error"]["code"] == "previous_response_not_found"
    assert CODEC.render_error(GatewayError("not_found", "no such endpoint"))["error"]["code"] is None
    assert (
        CODEC.render_error(GatewayError("not_found", "m", param="model"))["error"]["code"]
        == "model_not_found"
    )
    ctx = CODEC.parse_error(
        400,
        orjson.dumps(
            {
                "error": {
                    "message": "Your input exceeds the context window of this model.",
                    "type": "invalid_request_error",
                }
            }
        ),
    )
    assert ctx.kind == "context_length"
    raw = CODEC.render_stream_error(GatewayError("rate_limit", "slow down"))
    ev = EVENTS.validate_python(orjson.loads(raw.split(b"data: ", 1)[1]))
    assert (ev.type, ev.code, ev.message) == ("error", "rate_limit_exceeded", "slow down")
    [err] = decode_responses(raw)
    assert isinstance(err, StreamError) and err.error.kind == "rate_limit"


def test_a_cut_responses_stream_is_an_error() -> None:
    out = responses_stream([MessageStart("x", "m"), BlockStart(0, "text"), BlockDelta(0, "hal")])
    raw = b"".join(
        b"event: " + e.type.encode() + b"\ndata: " + orjson.dumps(e.model_dump(mode="json")) + b"\n\n"
        for e in out
    )
    events = decode_responses(raw)
    assert (
        isinstance(events[-1], StreamError)
        and events[-1].error.message == "upstream stream ended unexpectedly"
    )


def test_usage_counts_cache_reads_and_writes() -> None:
    resp = CODEC.parse_response(
        {
            "id": "r",
            "model": "m",
            "status": "completed",
            "output": [],
            "usage": {
                "input_tokens": 10,
                "output_tokens": 2,
                "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 3},
                "output_tokens_details": {"reasoning_tokens": 1},
                "total_tokens": 12,
            },
        }
    )
    assert resp.usage == Usage(10, 2, 4, 3, 1)
    assert CODEC.usage_of(
        {"type": "response.completed", "response": {"usage": {"input_tokens": 1, "output_tokens": 1}}}
    ) == Usage(1, 1)
    assert CODEC.usage_of({"type": "response.output_text.delta", "delta": "x"}) is None


# ---- what a Responses backend sends that is not an answer (issues 13, 15) ------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"output": True}, "'output' must be an array"),
        ({"output": [{"type": "message", "content": True}]}, "'output[0].content' must be an array"),
        ({"output": [5]}, "'output[0]' must be an object"),
        (
            {"output": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}]},
            "'output[0].arguments' must be a string",
        ),
        ({"output": [], "usage": {"input_tokens": "5"}}, "'usage.input_tokens' must be a token count"),
        (
            {"output": [], "usage": {"output_tokens": 2**64 - 1}},
            "'usage.output_tokens' must be a token count",
        ),
        ({"output": [], "status": "incomplete", "incomplete_details": 1}, "'incomplete_details' must be"),
        ({"status": "failed", "error": {"code": "server_error", "message": "boom"}}, "it was an error: boom"),
        ({"error": {"message": "quota"}}, "it was an error: quota"),
    ],
)
def test_a_wrongly_typed_answer_is_a_failed_attempt(body: dict[str, Any], says: str) -> None:
    """The guard stage judges a 200 by ``parse_response``: a wrong type is a 502 naming the
    provider's field (failed over), never a TypeError escaping the guard."""
    err = judge_body(CODEC, orjson.dumps({"id": "resp_1", "model": "gpt-5.5", **body}), "application/json")
    assert err is not None and (err.status, err.kind) == (502, "api_error")
    assert says in err.message and err.message.startswith("the provider's answer was invalid")
    with pytest.raises(GatewayError):  # and the same-wire pass-through reads the usage through it
        CODEC.usage_of(body) if "usage" in body else CODEC.parse_response(body)


def _event(kind: str, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


@pytest.mark.parametrize(
    ("event", "says"),
    [
        (_event("response.output_text.delta", output_index=[1], content_index=0, delta="x"), "output_index"),
        (_event("response.output_text.delta", output_index=0, content_index=0, delta=[1] * 3), "'delta'"),
        (_event("response.output_item.added", output_index=1, item=True), "'item' must be an object"),
        (
            _event(
                "response.output_item.added",
                output_index=1,
                item={"type": "function_call", "call_id": "c", "name": "f", "arguments": [[[]]]},
            ),
            "'item.arguments'",
        ),
        (
            _event("response.completed", response={"status": "completed", "usage": {"input_tokens": 2**63}}),
            "'response.usage.input_tokens'",
        ),
    ],
)
def test_a_wrongly_typed_stream_event_ends_the_stream_with_a_502(event: bytes, says: str) -> None:
    opening = (
        _event("response.created", response={"id": "resp_1", "model": "gpt-5.5"})
        + _event(
            "response.output_item.added", output_index=0, item={"type": "message", "id": "m", "content": []}
        )
        + _event("response.content_part.added", output_index=0, content_index=0, part={"type": "output_text"})
    )
    events = decode_responses(opening + event)
    assert isinstance(events[-1], StreamError), events
    assert events[-1].error.status == 502 and says in events[-1].error.message
    assert not any(isinstance(e, StreamError) for e in events[:-1])


@pytest.mark.parametrize(
    ("item", "param"),
    [({"type": [1]}, "input[0].type"), ({"type": {"k": "v"}, "role": "user"}, "input[0].type")],
)
def test_a_wrongly_typed_input_item_is_a_400_naming_it(item: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as e:
        CODEC.parse_request({"model": "m", "input": [item]})
    assert (e.value.status, e.value.param) == (400, param) and param in e.value.message


PDF = "JVBERi0xLjQK"  # "%PDF-1.4\n"


@pytest.mark.parametrize(
    ("target", "media_type", "sent"),
    [
        ("gemini", "application/pdf", {"inlineData": {"mimeType": "application/pdf", "data": PDF}}),
        ("gemini", "text/plain", {"inlineData": {"mimeType": "text/plain", "data": PDF}}),
        (
            "anthropic",
            "application/pdf",
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                "title": "a.pdf",
            },
        ),
        (
            "anthropic",
            "text/plain",
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "%PDF-1.4\n"},
                "title": "a.pdf",
            },
        ),
        (
            "openai",
            "application/pdf",
            {
                "type": "file",
                "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
            },
        ),
        (
            "openai_responses",
            "application/pdf",
            {"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
        ),
    ],
)
def test_input_files_reach_the_backends_that_take_them(target: str, media_type: str, sent: Any) -> None:
    ir = parse(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "read this"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": f"data:{media_type};base64,{PDF}",
                    },
                ],
            }
        ]
    )
    assert ir.unmapped == []
    codec = CODECS[target]
    if sent is None:
        with pytest.raises(GatewayError) as e:
            codec.build_request(ir, "x", default_max_tokens=10)
        assert e.value.param == "messages[0].content[1]"
        return
    body = codec.build_request(ir, "x", default_max_tokens=10)
    last = {
        "gemini": lambda b: b["contents"][-1]["parts"],
        "anthropic": lambda b: b["messages"][-1]["content"],
        "openai": lambda b: b["messages"][-1]["content"],
        "openai_responses": lambda b: b["input"][-1]["content"],
    }[target](body)
    assert last[1] == sent


def test_a_file_by_url() -> None:
    ir = parse(
        input=[{"role": "user", "content": [{"type": "input_file", "file_url": "https://example.com/r.pdf"}]}]
    )
    doc = CODECS["anthropic"].build_request(ir, "x", default_max_tokens=10)["messages"][0]["content"][0]
    assert doc == {"type": "document", "source": {"type": "url", "url": "https://example.com/r.pdf"}}
    with pytest.raises(GatewayError):  # Chat Completions file parts take inline data only
        CODECS["openai"].build_request(ir, "x", default_max_tokens=10)
    assert CODEC.build_request(ir, "x", default_max_tokens=10)["input"][0]["content"] == [
        {"type": "input_file", "file_url": "https://example.com/r.pdf"}
    ]


def with_responses_backend(data: dict[str, Any]) -> None:
    data["providers"]["resp"] = {
        "dialect": "openai_responses",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "MOCK_OPENAI_API_KEY",
    }
    data["models"]["alias"] = {"backends": [{"provider": "resp", "model": "gpt-5-mini"}]}


def test_a_responses_backend_passes_through_renamed_and_kept() -> None:
    """Same dialect: the body gets the upstream model and store: false (nothing else changes);
    the answer, streamed, comes back with the client's model name in its response objects."""
    from ext_proc.request.responses import make_translator

    state = state_of(with_responses_backend)
    body = {
        "model": "alias",
        "input": "hi",
        "stream": True,
        "metadata": {"a": "b"},
        "tools": [{"type": "web_search"}],
    }
    p = do_plan(state, RESPONSES_API, body)
    assert isinstance(p, RoutePlan) and p.ir is None and p.keeper is not None
    assert orjson.loads(p.new_body or b"") == {**body, "model": "gpt-5-mini", "store": False}
    assert p.set_headers[":path"] == "/v1/responses" and p.set_headers["authorization"] == "Bearer sk-openai"
    done: list[Any] = []
    tr = make_translator(
        client=get_dialect("openai_responses"),
        backend=p.primary,
        status=200,
        stream=True,
        model="alias",
        ir=None,
        body=p.body,
        on_done=lambda *a: done.append(a),
        redact=state.redact,
    )
    upstream = responses_stream(
        [
            MessageStart("x", "m"),
            BlockStart(0, "text"),
            BlockDelta(0, "hey"),
            BlockStop(0),
            MessageDelta("end_turn", None, Usage(2, 1)),
            MessageStop(),
        ]
    )
    for ev in upstream:
        if hasattr(ev, "response"):
            ev.response.model = "gpt-5-mini"  # what the backend says
    raw = b"".join(
        b"event: "
        + e.type.encode()
        + b"\ndata: "
        + orjson.dumps(e.model_dump(mode="json", exclude_none=True))
        + b"\n\n"
        for e in upstream
    )
    out = tr.feed(raw, True) or b""
    run(F.keep(p.keeper, out, True, 200))
    events = [orjson.loads(e.data) for e in SSEReader().feed(out)]
    assert [e["response"]["model"] for e in events if "response" in e] == ["alias"] * 3
    assert done == [(200, p.primary.name, Usage(2, 1))]
    final = events[-1]["response"]
    kept = run(serve_state(state, started(state, headers("GET", f"/v1/responses/{final['id']}"))))
    assert body_of(kept)["model"] == "alias" and body_of(kept)["store"] is True
