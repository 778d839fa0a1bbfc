"""The mock Bedrock runtime, driven by botocore's own ``bedrock-runtime`` client.

botocore is the AWS SDK's core: it serialises Converse requests from the service model,
signs them with SigV4, and parses Converse answers and ConverseStream event streams the
way every AWS SDK does. If the mock's paths, bodies, frames or error shapes drifted from
the real service, this client would fail on them. Raw HTTP (signed by hand) is used for
what the SDK will not send: a wrong secret, a stale date, a body changed after signing,
invalid shapes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from botocore.session import Session

from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread

NAME = "bdrk"
KEY_ID = "AKIDMOCKTEST"
SECRET = "mock-secret-0123456789"
REGION = "eu-central-1"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "lookup",
                "description": "look up a thing",
                "inputSchema": {"json": {"type": "object", "properties": {"echo": {"type": "string"}}}},
            }
        },
        {"toolSpec": {"name": "convert", "inputSchema": {"json": {"type": "object"}}}},
    ]
}


@pytest.fixture(scope="module")
def mocks() -> Iterator[BackgroundMocks]:
    bg = start_in_thread([MockSpec(NAME, "bedrock", 0, SECRET, key_id=KEY_ID, region=REGION)])
    yield bg
    bg.stop()


@pytest.fixture(autouse=True)
def _reset(mocks: BackgroundMocks) -> None:
    for path in ("/_mock/faults", "/_mock/stats"):
        assert _raw(mocks, "DELETE", path)[0] == 200


def client(mocks: BackgroundMocks, secret: str = SECRET, key_id: str = KEY_ID) -> Any:
    return Session().create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{mocks.ports[NAME]}",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


def _raw(
    mocks: BackgroundMocks,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[NAME], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        try:
            raw = resp.read()
        except http.client.IncompleteRead as cut:  # the connection dropped mid-body: what arrived
            raw = cut.partial
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw
    finally:
        conn.close()


def signed(
    mocks: BackgroundMocks,
    body: Any,
    *,
    path: str | None = None,
    secret: str = SECRET,
    when: datetime | None = None,
    send: bytes | None = None,
    region: str = REGION,
    token: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` signed like a client would (at ``when``), optionally sending other bytes."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = path or "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    host = f"127.0.0.1:{mocks.ports[NAME]}"
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": host, "x-amz-date": stamp, "content-type": "application/json"}
    if token:
        headers["x-amz-security-token"] = token
    req = AWSRequest(method="POST", url=f"http://{host}{path}", data=raw, headers=headers)
    req.context["timestamp"] = stamp
    auth = SigV4Auth(Credentials(KEY_ID, secret, token), "bedrock", region)
    sig = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={auth.scope(req)}, "
        f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(req))}, Signature={sig}"
    )
    del headers["host"]
    return _raw(mocks, "POST", path, raw if send is None else send, headers)


def _fault(mocks: BackgroundMocks, **spec: Any) -> None:
    assert _raw(mocks, "POST", "/_mock/faults", json.dumps(spec).encode())[0] == 200


def _stats(mocks: BackgroundMocks) -> dict[str, Any]:
    return json.loads(_raw(mocks, "GET", "/_mock/stats")[2])


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


# --------------------------------------------------------------------------- through botocore


def test_converse_answers_in_the_mock_style(mocks: BackgroundMocks) -> None:
    out = client(mocks).converse(
        modelId=MODEL,
        system=[{"text": "be brief"}],
        messages=[user("hello there")],
        inferenceConfig={"maxTokens": 50},
    )
    assert out["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": f"[{NAME}:{MODEL}] hello there"}],
    }
    assert out["stopReason"] == "end_turn"
    assert out["usage"] == {"inputTokens": 4, "outputTokens": 3, "totalTokens": 7}
    st = _stats(mocks)
    assert st["by_model"] == {MODEL: 1} and st["by_status"] == {"200": 1}
    last = st["last_request"]
    assert last["auth"] == "valid" and last["headers"]["Authorization"] == "***"
    assert last["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse"


def test_converse_stream_sends_event_stream_frames_one_word_each(mocks: BackgroundMocks) -> None:
    out = client(mocks).converse_stream(modelId=MODEL, messages=[user("stream me please")])
    events = list(out["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    pieces = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    assert pieces == ["[bdrk:anthropic.claude-3-5-sonnet-20240620-v1:0]", " stream", " me", " please"]
    assert events[-1]["metadata"]["usage"] == {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    assert _stats(mocks)["streamed"] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_on_use_tool_and_results_after(mocks: BackgroundMocks, stream: bool) -> None:
    bedrock = client(mocks)
    call = bedrock.converse_stream if stream else bedrock.converse
    out = call(
        modelId=MODEL, messages=[user("use tool now")], toolConfig={**TOOLS, "toolChoice": {"auto": {}}}
    )
    if stream:
        events = list(out["stream"])
        start = next(e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e)
        args = "".join(
            e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e
        )
        use = {**start, "input": json.loads(args)}
        assert next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e) == "tool_use"
    else:
        [block] = out["output"]["message"]["content"]
        use = block["toolUse"]
        assert out["stopReason"] == "tool_use"
    assert (use["name"], use["input"]) == ("lookup", {"echo": "use tool now"})
    assert _stats(mocks)["tool_call_ids"] == [use["toolUseId"]]
    final = bedrock.converse(
        modelId=MODEL,
        toolConfig=TOOLS,
        messages=[
            user("use tool now"),
            {"role": "assistant", "content": [{"toolUse": use}]},
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "42"}]}}],
            },
        ],
    )
    assert final["output"]["message"]["content"] == [{"text": f"[{NAME}:{MODEL}] tool result: 42"}]


@pytest.mark.parametrize("stream", [False, True])
def test_use_all_tools_is_one_tool_use_block_per_tool(mocks: BackgroundMocks, stream: bool) -> None:
    """Parallel tool calls, as Claude on Converse makes them: one ``toolUse`` block each, with its
    own id (the mock used to answer only the first call; found by the agent corpus)."""
    bedrock = client(mocks)
    call = bedrock.converse_stream if stream else bedrock.converse
    out = call(modelId=MODEL, messages=[user("use all tools")], toolConfig=TOOLS)
    if stream:
        events = list(out["stream"])
        starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
        uses = [
            (s["contentBlockIndex"], s["start"]["toolUse"]["name"], s["start"]["toolUse"]["toolUseId"])
            for s in starts
        ]
        assert [i for i, _, _ in uses] == [0, 1]
        names, ids = [n for _, n, _ in uses], [t for _, _, t in uses]
    else:
        blocks = out["output"]["message"]["content"]
        names, ids = [b["toolUse"]["name"] for b in blocks], [b["toolUse"]["toolUseId"] for b in blocks]
    assert names == ["lookup", "convert"]
    assert len(set(ids)) == 2 and _stats(mocks)["tool_call_ids"][-2:] == ids


def test_forced_tool_choice_and_limits(mocks: BackgroundMocks) -> None:
    bedrock = client(mocks)
    out = bedrock.converse(
        modelId=MODEL,
        messages=[user("what is it")],
        toolConfig={**TOOLS, "toolChoice": {"tool": {"name": "convert"}}},
    )
    assert out["output"]["message"]["content"][0]["toolUse"]["name"] == "convert"
    cut = bedrock.converse(
        modelId=MODEL, messages=[user("alpha beta gamma")], inferenceConfig={"maxTokens": 2}
    )
    assert (cut["stopReason"], cut["output"]["message"]["content"]) == (
        "max_tokens",
        [{"text": f"[{NAME}:{MODEL}] alpha"}],
    )
    stop = bedrock.converse(
        modelId=MODEL, messages=[user("alpha HALT beta")], inferenceConfig={"stopSequences": ["HALT"]}
    )
    assert stop["stopReason"] == "stop_sequence"


def test_images_are_bytes(mocks: BackgroundMocks) -> None:
    png = bytes.fromhex("89504e470d0a1a0a")
    out = client(mocks).converse(
        modelId=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"text": "describe this"},
                    {"image": {"format": "png", "source": {"bytes": png}}},
                ],
            }
        ],
    )
    assert out["output"]["message"]["content"] == [{"text": f"[{NAME}:{MODEL}] describe this"}]


def test_text_format_answers_json_of_the_schema(mocks: BackgroundMocks) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    out = client(mocks).converse(
        modelId=MODEL,
        messages=[user("name it")],
        outputConfig={
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": json.dumps(schema)}}}
        },
    )
    [block] = out["output"]["message"]["content"]
    assert json.loads(block["text"]) == {"answer": f"[{NAME}:{MODEL}] name it"}


# --------------------------------------------------------------------------- signatures


def _error(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str, str]:
    status, headers, body = status_headers_body
    return status, headers.get("x-amzn-errortype", "").split(":")[0], json.loads(body)["message"]


def test_a_correct_signature_is_accepted(mocks: BackgroundMocks) -> None:
    status, headers, body = signed(mocks, {"messages": [user("hi")]})
    assert status == 200, body
    assert json.loads(body)["output"]["message"]["content"] == [{"text": f"[{NAME}:{MODEL}] hi"}]
    assert headers["x-amzn-requestid"]


def test_a_wrong_secret_is_refused(mocks: BackgroundMocks) -> None:
    with pytest.raises(ClientError) as ei:
        client(mocks, secret="not-the-secret").converse(modelId=MODEL, messages=[user("hi")])
    err = ei.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err["Error"]["Code"] == "InvalidSignatureException"
    assert err["Error"]["Message"].startswith("The request signature we calculated does not match")
    assert _error(signed(mocks, {"messages": [user("hi")]}, secret="wrong"))[:2] == (
        403,
        "InvalidSignatureException",
    )


def test_a_body_changed_after_signing_is_refused(mocks: BackgroundMocks) -> None:
    body = {"messages": [user("hi")]}
    changed = json.dumps({"messages": [user("ho")]}).encode()
    assert _error(signed(mocks, body, send=changed))[:2] == (403, "InvalidSignatureException")


@pytest.mark.parametrize(
    "minutes, message", [(-6, "Signature expired: "), (6, "Signature not yet current: ")]
)
def test_a_signature_older_or_newer_than_five_minutes_is_refused(
    mocks: BackgroundMocks, minutes: int, message: str
) -> None:
    when = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    status, etype, text = _error(signed(mocks, {"messages": [user("hi")]}, when=when))
    assert (status, etype) == (403, "InvalidSignatureException") and text.startswith(message)
    within = datetime.now(timezone.utc) - timedelta(minutes=4)
    assert signed(mocks, {"messages": [user("hi")]}, when=within)[0] == 200


def test_unknown_keys_other_regions_missing_auth_and_tokens(mocks: BackgroundMocks) -> None:
    with pytest.raises(ClientError) as ei:
        client(mocks, key_id="AKIDSOMEONEELSE").converse(modelId=MODEL, messages=[user("hi")])
    assert ei.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert _error(signed(mocks, {"messages": [user("hi")]}, region="us-east-1"))[:2] == (
        403,
        "InvalidSignatureException",
    )
    assert _error(signed(mocks, {"messages": [user("hi")]}, token="a-token-this-key-has-not"))[:2] == (
        403,
        "UnrecognizedClientException",
    )
    path = "/model/m.x/converse"
    assert _error(_raw(mocks, "POST", path, b'{"messages": []}'))[:2] == (
        403,
        "MissingAuthenticationTokenException",
    )
    bad = {"authorization": "AWS4-HMAC-SHA256 Credential=x", "x-amz-date": "20250101T000000Z"}
    assert _error(_raw(mocks, "POST", path, b"{}", bad))[:2] == (403, "IncompleteSignatureException")
    assert _stats(mocks)["by_status"] == {"403": 5}


# --------------------------------------------------------------------------- request validation


@pytest.mark.parametrize(
    "body, fragment",
    [
        (
            {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]},
            "A conversation must start with a user message",
        ),
        (
            {"messages": [user("a"), user("b")]},
            "A conversation must alternate between user and assistant roles",
        ),
        (
            {"messages": [user("   ")]},
            "The text field in the ContentBlock object at messages.0.content.0 is blank",
        ),
        (
            {"messages": [{"role": "user", "content": []}]},
            "The content field in the Message object at messages.0 is empty",
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]},
            "Union at 'messages.0.content.0' must have exactly one member set",
        ),
        (
            {"messages": [user("hi")], "inferenceConfig": {"temperature": 1.5}},
            "Value at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1",
        ),
        (
            {"messages": [user("hi")], "inferenceConfig": {"maxTokens": 0}},
            "Value at 'inferenceConfig.maxTokens' failed to satisfy constraint",
        ),
        ({"messages": [user("hi")], "inference_config": {}}, "Unknown member 'inference_config'"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}]}
                ]
            },
            "Member must satisfy enum value set: [png, jpeg, gif, webp]",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    {
                        "role": "assistant",
                        "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {}}}],
                    },
                    user("next"),
                ],
                "toolConfig": TOOLS,
            },
            "Expected toolResult blocks at messages.2.content for the following Ids: t1",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    {
                        "role": "assistant",
                        "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {}}}],
                    },
                    {
                        "role": "user",
                        "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "r"}]}}],
                    },
                ]
            },
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "t9", "content": []}}]}
                ],
                "toolConfig": TOOLS,
            },
            "does not match any toolUse block of the previous turn",
        ),
        (
            {"messages": [user("hi")], "toolConfig": {**TOOLS, "toolChoice": {"tool": {"name": "nope"}}}},
            "The tool nope in toolConfig.toolChoice is not in toolConfig.tools.",
        ),
        (
            {"messages": [user("hi")], "toolConfig": {"tools": []}},
            "Value at 'toolConfig.tools' failed to satisfy",
        ),
        (
            {"messages": [user("hi")], "requestMetadata": {"user": "bad\u00e9"}},
            "Value at 'requestMetadata.user'",
        ),
    ],
)
def test_invalid_requests_are_400_validation_exceptions(
    mocks: BackgroundMocks, body: dict[str, Any], fragment: str
) -> None:
    status, etype, message = _error(signed(mocks, body))
    assert (status, etype) == (400, "ValidationException")
    assert fragment in message


def test_a_malformed_body_and_unknown_paths(mocks: BackgroundMocks) -> None:
    assert _error(signed(mocks, b"{not json"))[:2] == (400, "SerializationException")
    assert _error(signed(mocks, {"messages": [user("hi")]}, path="/model/x.y/invoke"))[:2] == (
        404,
        "UnknownOperationException",
    )


# --------------------------------------------------------------------------- faults


def _frames(raw: bytes) -> list[Any]:
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return list(buf)


@pytest.mark.parametrize(
    "status, exception",
    [
        (429, "throttlingException"),
        (503, "serviceUnavailableException"),
        (500, "internalServerException"),
        (400, "validationException"),
    ],
)
def test_stream_error_is_an_exception_frame_first(
    mocks: BackgroundMocks, status: int, exception: str
) -> None:
    _fault(mocks, mode="stream_error", status=status)
    out = client(mocks).converse_stream(modelId=MODEL, messages=[user("hi")])
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(EventStreamError) as ei:
        list(out["stream"])
    assert ei.value.response["Error"]["Code"] == exception


def test_stream_malformed_is_a_frame_with_a_bad_checksum(mocks: BackgroundMocks) -> None:
    _fault(mocks, mode="stream_malformed")
    status, headers, raw = signed(
        mocks,
        {"messages": [user("hi")]},
        path="/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
    )
    assert status == 200 and headers["content-type"] == "application/vnd.amazon.eventstream"
    with pytest.raises(ChecksumMismatch):
        _frames(raw)


def test_error_and_rate_limit_faults_speak_bedrock(mocks: BackgroundMocks) -> None:
    _fault(mocks, mode="error", status=400, message="Input is too long for requested model.")
    with pytest.raises(ClientError) as ei:
        client(mocks).converse(modelId=MODEL, messages=[user("hi")])
    assert (ei.value.response["Error"]["Code"], ei.value.response["Error"]["Message"]) == (
        "ValidationException",
        "Input is too long for requested model.",
    )
    _fault(mocks, mode="rate_limit", retry_after=3)
    status, headers, _ = signed(mocks, {"messages": [user("hi")]})
    assert (status, headers["x-amzn-errortype"].split(":")[0]) == (429, "ThrottlingException")
    assert "retry-after" not in headers  # Bedrock sends none


def test_stream_cut_drops_the_connection_mid_stream(mocks: BackgroundMocks) -> None:
    _fault(mocks, mode="stream_cut")
    status, _, raw = signed(
        mocks, {"messages": [user("one two three four five six")]}, path="/model/m.x/converse-stream"
    )
    assert status == 200
    frames = _frames(raw)
    assert frames and frames[-1].headers[":event-type"] != "metadata"


def test_stats_never_keep_a_secret(mocks: BackgroundMocks) -> None:
    signed(mocks, {"messages": [user("hi")]}, token="session-token-value")
    text = json.dumps(_stats(mocks))
    assert "session-token-value" not in text and hashlib.sha256(SECRET.encode()).hexdigest() not in text
    assert SECRET not in text


def test_cache_points_are_written_then_read(mocks: BackgroundMocks) -> None:
    """A cachePoint after 1200 words of system prompt: written on the first call, read on the
    second (Bedrock prompt caching; inputTokens leaves out what the cache counts)."""
    system = [{"text": " ".join(f"cp{k}" for k in range(1200))}, {"cachePoint": {"type": "default"}}]
    first = client(mocks).converse(modelId=MODEL, system=system, messages=[user("question one")])
    assert first["usage"]["cacheWriteInputTokens"] == 1200
    assert first["usage"]["cacheReadInputTokens"] == 0
    assert first["usage"]["inputTokens"] == 2
    second = client(mocks).converse(modelId=MODEL, system=system, messages=[user("question two")])
    assert second["usage"]["cacheReadInputTokens"] == 1200
    assert second["usage"]["cacheWriteInputTokens"] == 0
    plain = client(mocks).converse(modelId=MODEL, system=system[:1], messages=[user("question three")])
    assert "cacheReadInputTokens" not in plain["usage"]  # no cache point: nothing cached or read


# --------------------------------------------------------------------------- extended thinking

# https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-extended-thinking.html
THINK = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def _think_turn(mocks: BackgroundMocks, stream: bool, **kw: Any) -> dict[str, Any]:
    """The answer to a tool-asking prompt with thinking on, as the (non-streamed) message."""
    bedrock = client(mocks)
    args: dict[str, Any] = {
        "modelId": MODEL,
        "messages": [user("use tool now")],
        "toolConfig": TOOLS,
        "inferenceConfig": {"maxTokens": 2048},
        "additionalModelRequestFields": THINK,
        **kw,
    }
    if not stream:
        out = bedrock.converse(**args)
        assert out["stopReason"] == "tool_use"
        return {"content": out["output"]["message"]["content"], "usage": out["usage"]}
    events = list(bedrock.converse_stream(**args)["stream"])
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    reasoning = [d["delta"]["reasoningContent"] for d in deltas if "reasoningContent" in d["delta"]]
    # the text first, word by word, then the signature, all at index 0; no contentBlockStart
    assert all(d["contentBlockIndex"] == 0 for d in deltas if "reasoningContent" in d["delta"])
    assert "signature" in reasoning[-1] and all("text" in r for r in reasoning[:-1])
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert [s["contentBlockIndex"] for s in starts] == [1]
    [stop0] = [e for e in events if e.get("contentBlockStop", {}).get("contentBlockIndex") == 0]
    assert events.index(stop0) < events.index(next(e for e in events if "contentBlockStart" in e))
    args_json = "".join(d["delta"]["toolUse"]["input"] for d in deltas if "toolUse" in d["delta"])
    text = "".join(r.get("text", "") for r in reasoning)
    return {
        "content": [
            {"reasoningContent": {"reasoningText": {"text": text, "signature": reasoning[-1]["signature"]}}},
            {"toolUse": {**starts[0]["start"]["toolUse"], "input": json.loads(args_json)}},
        ],
        "usage": events[-1]["metadata"]["usage"],
    }


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("thinking", [THINK, {"thinking": {"type": "adaptive"}}], ids=["budget", "adaptive"])
def test_thinking_answers_with_a_signed_reasoning_block_first(
    mocks: BackgroundMocks, stream: bool, thinking: dict[str, Any]
) -> None:
    from gateway_tools.mocks.anthropic_messages import _sign

    turn = _think_turn(mocks, stream, additionalModelRequestFields=thinking)
    reasoning, use = turn["content"]
    text = reasoning["reasoningContent"]["reasoningText"]["text"]
    assert text == "Thinking about: use tool now"
    assert reasoning["reasoningContent"]["reasoningText"]["signature"] == _sign(text)
    assert use["toolUse"]["name"] == "lookup"
    # the thinking counts in outputTokens: 1 tool call + 5 words of thought
    assert turn["usage"]["outputTokens"] == 6
    assert turn["usage"]["totalTokens"] == turn["usage"]["inputTokens"] + 6
    # the tool-result turn with the reasoning echoed is accepted
    final = client(mocks).converse(
        modelId=MODEL,
        toolConfig=TOOLS,
        inferenceConfig={"maxTokens": 2048},
        additionalModelRequestFields=thinking,
        messages=[
            user("use tool now"),
            {"role": "assistant", "content": turn["content"]},
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": use["toolUse"]["toolUseId"], "content": [{"text": "42"}]}}
                ],
            },
        ],
    )
    content = final["output"]["message"]["content"]
    assert content[0]["reasoningContent"]["reasoningText"]["text"].startswith("Thinking about:")
    assert content[1] == {"text": f"[{NAME}:{MODEL}] tool result: 42"}


def test_no_thinking_without_it_or_off_claude(mocks: BackgroundMocks) -> None:
    """Thinking disabled, or a model that is not Claude: no reasoning block."""
    bedrock = client(mocks)
    off = bedrock.converse(
        modelId=MODEL,
        messages=[user("hello")],
        additionalModelRequestFields={"thinking": {"type": "disabled"}},
    )
    assert off["output"]["message"]["content"] == [{"text": f"[{NAME}:{MODEL}] hello"}]
    nova = bedrock.converse(
        modelId="amazon.nova-pro-v1:0", messages=[user("hello")], additionalModelRequestFields=THINK
    )
    assert [next(iter(b)) for b in nova["output"]["message"]["content"]] == ["text"]


def _tool_history(reasoning: list[dict[str, Any]]) -> list[dict[str, Any]]:
    use = {"toolUseId": "tooluse_1", "name": "lookup", "input": {}}
    return [
        user("use tool now"),
        {"role": "assistant", "content": [*reasoning, {"toolUse": use}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "x"}]}}]},
    ]


def _signed_reasoning(text: str = "hmm") -> dict[str, Any]:
    from gateway_tools.mocks.anthropic_messages import _sign

    return {"reasoningContent": {"reasoningText": {"text": text, "signature": _sign(text)}}}


# Each rule: Claude's extended-thinking rules (claude-messages-extended-thinking, "Feature
# compatibility", and Anthropic's extended-thinking page the mock's Anthropic rules cite),
# relayed as Bedrock relays the model's refusals: a ValidationException "The model returned the
# following errors: ...".
@pytest.mark.parametrize(
    "body, fragment",
    [
        (
            {"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1000}}},
            "budget_tokens: Input should be greater than or equal to 1024",
        ),
        (
            {
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 4096}},
                "inferenceConfig": {"maxTokens": 4096},
            },
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        (
            {"additionalModelRequestFields": {"thinking": {"type": "enabled"}}},
            "thinking.enabled.budget_tokens: Field required",
        ),
        (
            {"additionalModelRequestFields": {"thinking": {"type": "sometimes"}}},
            "does not match any of the expected tags",
        ),
        (
            {
                "additionalModelRequestFields": THINK,
                "inferenceConfig": {"maxTokens": 2048, "temperature": 0.5},
            },
            "`temperature` may only be set to 1 when thinking is enabled",
        ),
        (
            {"additionalModelRequestFields": THINK, "inferenceConfig": {"maxTokens": 2048, "topP": 0.5}},
            "`top_p` must be greater than or equal to 0.95",
        ),
        (
            {"additionalModelRequestFields": {**THINK, "top_k": 5}, "inferenceConfig": {"maxTokens": 2048}},
            "`top_k` must be unset when thinking is enabled",
        ),
        (
            {
                "additionalModelRequestFields": THINK,
                "inferenceConfig": {"maxTokens": 2048},
                "toolConfig": {**TOOLS, "toolChoice": {"any": {}}},
            },
            "Thinking may not be enabled when tool_choice forces tool use",
        ),
        (  # the turn answering tool results lost its reasoning
            {
                "additionalModelRequestFields": THINK,
                "inferenceConfig": {"maxTokens": 2048},
                "toolConfig": TOOLS,
                "messages": _tool_history([]),
            },
            "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`",
        ),
        (  # a signature the mock did not issue
            {
                "additionalModelRequestFields": THINK,
                "inferenceConfig": {"maxTokens": 2048},
                "toolConfig": TOOLS,
                "messages": _tool_history(
                    [{"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "Zm9yZ2Vk"}}}]
                ),
            },
            "messages.1.content.0: Invalid `signature` in `thinking` block",
        ),
        (  # an unsigned reasoning text is not Claude's
            {
                "toolConfig": TOOLS,
                "messages": _tool_history([{"reasoningContent": {"reasoningText": {"text": "hmm"}}}]),
            },
            "messages.1.content.0: Invalid `signature` in `thinking` block",
        ),
        (
            {"messages": [{"role": "user", "content": [_signed_reasoning()]}]},
            "A reasoningContent block at messages.0.content.0.reasoningContent must be in an assistant message",
        ),
        (
            {"toolConfig": TOOLS, "messages": _tool_history([{"reasoningContent": {"reasoningText": {}}}])},
            "Value at 'messages.1.content.0.reasoningContent.reasoningText.text'",
        ),
        (
            {
                "toolConfig": TOOLS,
                "messages": _tool_history([{"reasoningContent": {"redactedContent": "%%"}}]),
            },
            "Value at 'messages.1.content.0.reasoningContent.redactedContent'",
        ),
    ],
)
def test_thinking_rules_are_400_validation_exceptions(
    mocks: BackgroundMocks, body: dict[str, Any], fragment: str
) -> None:
    status, etype, message = _error(signed(mocks, {"messages": [user("use tool now")], **body}))
    assert (status, etype) == (400, "ValidationException")
    assert fragment in message


def test_signed_history_passes_the_thinking_rules(mocks: BackgroundMocks) -> None:
    """The same tool turn with its signed reasoning (or redacted reasoning) first is accepted."""
    body = {
        "additionalModelRequestFields": THINK,
        "inferenceConfig": {"maxTokens": 2048},
        "toolConfig": TOOLS,
    }
    for reasoning in (_signed_reasoning(), {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}}):
        status, _, raw = signed(mocks, {**body, "messages": _tool_history([reasoning])})
        assert status == 200, raw
        assert json.loads(raw)["output"]["message"]["content"][1]["text"].endswith("tool result: x")


# --------------------------------------------------------------------------- CountTokens

COUNT_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/count-tokens"


def test_count_tokens_through_botocore(mocks: BackgroundMocks) -> None:
    """botocore's own CountTokens call (its service model's path, body and answer): a Converse
    input is counted as Converse counts it, an InvokeModel body by its words."""
    c = client(mocks)
    out = c.count_tokens(
        modelId=MODEL,
        input={"converse": {"messages": [user("count these four words")], "system": [{"text": "be brief"}]}},
    )
    assert out["inputTokens"] == 6
    raw = c.count_tokens(modelId=MODEL, input={"invokeModel": {"body": b'{"prompt": "three more words"}'}})
    assert raw["inputTokens"] == 4
    last = _stats(mocks)["last_request"]
    assert last["path"] == f"/model/{MODEL}/count-tokens" and "converse" not in last["body"]["input"]


def test_count_tokens_needs_a_signature(mocks: BackgroundMocks) -> None:
    body = {"input": {"converse": {"messages": [user("hi")]}}}
    with pytest.raises(ClientError) as e:
        client(mocks, secret="wrong").count_tokens(modelId=MODEL, input=body["input"])
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    # a body changed after signing
    assert signed(mocks, body, path=COUNT_PATH, send=json.dumps({"input": {}}).encode())[0] == 403


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        # CountTokensRequest: input is required
        ({}, COUNT_PATH, "Value at 'input' failed to satisfy constraint: Member must not be null"),
        ({"input": {"converse": {"messages": [user("hi")]}}, "modelId": "x"}, COUNT_PATH, "Unknown member"),
        # CountTokensInput is a union: exactly one member
        ({"input": {}}, COUNT_PATH, "exactly one member"),
        (
            {"input": {"converse": {"messages": [user("hi")]}, "invokeModel": {"body": "e30="}}},
            COUNT_PATH,
            "exactly one member",
        ),
        # ConverseTokensRequest takes the input side of Converse only
        (
            {"input": {"converse": {"messages": [user("hi")], "inferenceConfig": {"maxTokens": 5}}}},
            COUNT_PATH,
            "Unknown member 'inferenceConfig' at 'input.converse'",
        ),
        # ... validated as Converse validates it
        (
            {"input": {"converse": {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}}},
            COUNT_PATH,
            "A conversation must start with a user message",
        ),
        # InvokeModelTokensRequest.body: a blob, base64 in JSON
        ({"input": {"invokeModel": {"body": "not base64!"}}}, COUNT_PATH, "input.invokeModel.body"),
        # profile IDs and ARNs are not counted (the mock's comment cites the reports)
        (
            {"input": {"converse": {"messages": [user("hi")]}}},
            "/model/us.anthropic.claude-sonnet-4-6/count-tokens",
            "The provided model doesn't support counting tokens.",
        ),
        (
            {"input": {"converse": {"messages": [user("hi")]}}},
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aapplication-inference-profile%2Fx/count-tokens",
            "The provided model doesn't support counting tokens.",
        ),
        # FoundationModelVersionIdentifier: [a-zA-Z_.\-/0-9:]+
        (
            {"input": {"converse": {"messages": [user("hi")]}}},
            "/model/bad%20model/count-tokens",
            "Value at 'modelId' failed to satisfy",
        ),
    ],
)
def test_count_tokens_invalid_requests_are_validation_exceptions(
    mocks: BackgroundMocks, body: dict[str, Any], path: str, fragment: str
) -> None:
    status, etype, message = _error(signed(mocks, body, path=path))
    assert (status, etype) == (400, "ValidationException")
    assert fragment in message


def test_count_tokens_faults_speak_bedrock(mocks: BackgroundMocks) -> None:
    _fault(mocks, mode="error", status=503)
    status, etype, _ = _error(
        signed(mocks, {"input": {"converse": {"messages": [user("hi")]}}}, path=COUNT_PATH)
    )
    assert (status, etype) == (503, "ServiceUnavailableException")
