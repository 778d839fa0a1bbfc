"""Images inside tool results (issue 14: content the target can take must not be refused).

A coding agent's tool returns a screenshot; each target gets it the best way it can take it:
Gemini inside the ``functionResponse`` (``parts`` of ``inlineData``, multimodal function
responses), OpenAI Chat as a user message right after the turn's tool messages (a tool message
takes text only), Responses in ``function_call_output.output`` (input_text / input_image items),
Bedrock in ``toolResult.content`` (image blocks). Codec level first, then the mocks' rules for
those shapes, then end to end with the official anthropic SDK against every backend."""

from __future__ import annotations

import copy
import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext_proc.catalog import CapabilityOverrides, lookup, resolve
from ext_proc.dialects import CODECS, get_dialect
from ext_proc.errors import GatewayError
from ext_proc.translation.ir import ImagePart, TextPart, ToolResultPart
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.stack import aws_credentials, config_on_free_ports, start_stack
from tests.test_translation_matrix import BACKENDS, matrix_config

GEMINI_2 = "gemini-two"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
URL = "https://example.com/shot.png"
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
TOOLS = [{"name": "screenshot", "description": "take a screenshot", "input_schema": {"type": "object"}}]


def turn(*results: dict[str, Any], after: str | None = None) -> dict[str, Any]:
    """An Anthropic request: the assistant called ``screenshot`` once per result, the user
    answers with the results (and ``after`` text)."""
    calls = [{"type": "tool_use", "id": r["tool_use_id"], "name": "screenshot", "input": {}} for r in results]
    user: list[dict[str, Any]] = list(results)
    if after is not None:
        user.append({"type": "text", "text": after})
    return {
        "model": "m",
        "max_tokens": 100,
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "what is on screen?"},
            {"role": "assistant", "content": calls},
            {"role": "user", "content": user},
        ],
    }


def result(call_id: str, *content: dict[str, Any], is_error: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id, "content": list(content)}
    if is_error:
        out["is_error"] = True
    return out


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def build(backend: str, body: dict[str, Any], client: str = "anthropic") -> dict[str, Any]:
    req = CODECS[client].parse_request(copy.deepcopy(body), "m")
    return CODECS[backend].build_request(req, "up", default_max_tokens=100)


# ---- Gemini: inside the functionResponse -----------------------------------------------------------


def test_gemini_gets_the_image_inside_the_function_response() -> None:
    body = build("gemini", turn(result("toolu_1", text("a login form"), IMAGE)))
    parts = body["contents"][-1]["parts"]
    assert parts == [
        {
            "functionResponse": {
                "id": "toolu_1",
                "name": "screenshot",
                "response": {"result": "a login form"},
                "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}],
            }
        }
    ]


def test_gemini_an_error_result_with_an_image_keeps_both() -> None:
    body = build("gemini", turn(result("toolu_1", text("crashed"), IMAGE, is_error=True)))
    fr = body["contents"][-1]["parts"][0]["functionResponse"]
    assert fr["response"] == {"error": "crashed"}
    assert fr["parts"] == [{"inlineData": {"mimeType": "image/png", "data": PNG}}]


def test_gemini_a_url_image_goes_beside_the_function_response() -> None:
    """FunctionResponseFileData is not for the Gemini API: a URL image is a part of the turn."""
    url_image = {"type": "image", "source": {"type": "url", "url": URL}}
    body = build("gemini", turn(result("toolu_1", url_image), after="and now?"))
    parts = body["contents"][-1]["parts"]
    assert "parts" not in parts[0]["functionResponse"]
    assert parts[1:] == [
        {"text": "Images returned by tool call toolu_1:"},
        {"fileData": {"mimeType": "image/png", "fileUri": URL}},
        {"text": "and now?"},
    ]


def test_gemini_an_image_type_a_function_response_does_not_take_goes_beside_it() -> None:
    """Inside a function response: png, jpeg, webp (Gemini 3 guide); HEIC is fine as a part."""
    heic = {"type": "image", "source": {"type": "base64", "media_type": "image/heic", "data": PNG}}
    req = CODECS["anthropic"].parse_request(turn(result("toolu_1", text("shot"), heic, IMAGE)), "m")
    body = CODECS["gemini"].build_request(req, "up", default_max_tokens=100)  # (no catalog media check)
    parts = body["contents"][-1]["parts"]
    assert parts[0]["functionResponse"]["parts"] == [{"inlineData": {"mimeType": "image/png", "data": PNG}}]
    assert parts[1:] == [
        {"text": "Images returned by tool call toolu_1:"},
        {"inlineData": {"mimeType": "image/heic", "data": PNG}},
    ]


def test_gemini_client_multimodal_function_response_reaches_anthropic() -> None:
    gemini = {
        "contents": [
            {"role": "user", "parts": [{"text": "what is on screen?"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "screenshot", "args": {}}}]},
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "id": "c1",
                            "name": "screenshot",
                            "response": {"result": "a form"},
                            "parts": [{"inline_data": {"mime_type": "image/png", "data": PNG}}],
                        }
                    }
                ],
            },
        ]
    }
    body = build("anthropic", gemini, client="gemini")
    block = body["messages"][-1]["content"][0]
    assert block["type"] == "tool_result"
    assert block["content"] == [{"type": "text", "text": "a form"}, IMAGE]


# ---- OpenAI Chat: a user message after the turn's tool messages ------------------------------------


def test_openai_gets_the_images_in_a_user_message_after_the_tool_messages() -> None:
    body = build(
        "openai",
        turn(
            result("toolu_1", text("page one"), IMAGE),
            result("toolu_2", text("no image here")),
            after="compare them",
        ),
    )
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "user", "user"]
    assert msgs[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "page one"}
    assert msgs[3] == {"role": "tool", "tool_call_id": "toolu_2", "content": "no image here"}
    assert msgs[4]["content"] == [
        {"type": "text", "text": "Images returned by tool call toolu_1:"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    assert msgs[5]["content"] == "compare them"


def test_openai_images_of_several_results_share_one_user_message() -> None:
    body = build("openai", turn(result("toolu_1", IMAGE), result("toolu_2", IMAGE, IMAGE)))
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "user"]
    assert msgs[2]["content"] == "" and msgs[3]["content"] == ""
    kinds = [p["type"] if p["type"] != "text" else p["text"] for p in msgs[4]["content"]]
    assert kinds == [
        "Images returned by tool call toolu_1:",
        "image_url",
        "Images returned by tool call toolu_2:",
        "image_url",
        "image_url",
    ]


def test_openai_error_marker_stays_on_the_tool_message() -> None:
    body = build("openai", turn(result("toolu_1", IMAGE, is_error=True)))
    assert body["messages"][2]["content"] == "[tool error]"
    assert body["messages"][3]["role"] == "user"


def test_openai_body_read_back_puts_the_images_into_their_results() -> None:
    """A body built for OpenAI and read again (a failover that re-translates it) gives the
    images back to their tool results; an ordinary user message after tool messages stays."""
    built = build("openai", turn(result("toolu_1", text("one"), IMAGE), result("toolu_2", IMAGE), after="go"))
    req = CODECS["openai"].parse_request(built, "m")
    tools = [m for m in req.messages if m.role == "tool"]
    assert len(tools) == 1
    got = {p.tool_call_id: p.content for p in tools[0].parts if isinstance(p, ToolResultPart)}
    assert got["toolu_1"] == [TextPart("one"), ImagePart(media_type="image/png", data=PNG)]
    assert got["toolu_2"] == [ImagePart(media_type="image/png", data=PNG)]
    assert req.messages[-1].role == "user" and req.messages[-1].parts == [TextPart("go")]
    again = CODECS["anthropic"].build_request(req, "up", default_max_tokens=100)
    assert again["messages"][-1]["content"][0]["content"][-1] == IMAGE


@pytest.mark.parametrize(
    "content",
    [
        # names a call this turn did not make
        [
            {"type": "text", "text": "Images returned by tool call c9:"},
            {"type": "image_url", "image_url": {"url": URL}},
        ],
        # names the call but brings no image
        [{"type": "text", "text": "Images returned by tool call c1:"}],
        # the user's own words after the images
        [
            {"type": "text", "text": "Images returned by tool call c1:"},
            {"type": "image_url", "image_url": {"url": URL}},
            {"type": "text", "text": "what is this?"},
        ],
        "Images returned by tool call c1:",
    ],
    ids=["other call", "no image", "own words", "string"],
)
def test_openai_user_message_that_only_looks_like_tool_images_stays_a_user_message(content: Any) -> None:
    oa = _oa_tool("done")
    oa["messages"].append({"role": "user", "content": content})
    req = CODECS["openai"].parse_request(oa, "m")
    assert req.messages[-1].role == "user"
    result = next(p for m in req.messages if m.role == "tool" for p in m.parts)
    assert isinstance(result, ToolResultPart) and result.content == [TextPart("done")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.sampled_from(["t", "i"]), max_size=4),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
def test_openai_tool_images_round_trip(shapes: list[list[str]], after: bool) -> None:
    """Any mix of text and images in any number of results: the OpenAI body keeps every tool
    message right after the assistant turn, and reading it back gives each result its own
    content (text joined, as a tool message carries it)."""
    results = [
        result(f"toolu_{n}", *[text(f"r{n}") if k == "t" else IMAGE for k in shape])
        for n, shape in enumerate(shapes)
    ]
    built = build("openai", turn(*results, after="next" if after else None))
    roles = [m["role"] for m in built["messages"]]
    assert roles[2 : 2 + len(shapes)] == ["tool"] * len(shapes)
    req = CODECS["openai"].parse_request(built, "m")
    got = {p.tool_call_id: p for m in req.messages if m.role == "tool" for p in m.parts}
    for n, shape in enumerate(shapes):
        content = got[f"toolu_{n}"].content  # type: ignore[union-attr]
        assert sum(isinstance(c, ImagePart) for c in content) == shape.count("i")
        assert "".join(c.text for c in content if isinstance(c, TextPart)) == f"r{n}" * shape.count("t")
    assert (req.messages[-1].parts == [TextPart("next")]) is after


# ---- Responses and Bedrock: in the result itself -----------------------------------------------------


def test_responses_gets_the_image_in_the_function_call_output() -> None:
    body = build("openai_responses", turn(result("toolu_1", text("a form"), IMAGE)))
    out = [i for i in body["input"] if i["type"] == "function_call_output"]
    assert out == [
        {
            "type": "function_call_output",
            "call_id": "toolu_1",
            "output": [
                {"type": "input_text", "text": "a form"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
            ],
        }
    ]


def test_bedrock_gets_the_image_in_the_tool_result() -> None:
    body = build("bedrock", turn(result("toolu_1", text("a form"), IMAGE)))
    block = body["messages"][-1]["content"][0]["toolResult"]
    assert block["content"] == [{"text": "a form"}, {"image": {"format": "png", "source": {"bytes": PNG}}}]


# ---- the mocks enforce the real shapes --------------------------------------------------------------

OA_KEY = "sk-test-openai-0123456789abcdef"
GM_KEY = "gm-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def raw_mocks() -> Iterator[BackgroundMocks]:
    bg = start_in_thread([MockSpec("oai", "openai", 0, OA_KEY), MockSpec("gem", "gemini", 0, GM_KEY)])
    yield bg
    bg.stop()


def _post(
    mocks: BackgroundMocks, name: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[name], timeout=10)
    try:
        conn.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers}
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _oa_tool(content: Any) -> dict[str, Any]:
    return {
        "model": "gpt-5.5",
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": content},
        ],
    }


def test_openai_mock_refuses_an_image_in_a_tool_message(raw_mocks: BackgroundMocks) -> None:
    """ChatCompletionToolMessageParam.content: a string or text parts (openai SDK)."""
    auth = {"Authorization": f"Bearer {OA_KEY}"}
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    status, body = _post(raw_mocks, "oai", "/v1/chat/completions", _oa_tool([image]), auth)
    assert status == 400
    assert body["error"]["param"] == "messages[2].content[0].type"
    assert "Supported values are: 'text'" in body["error"]["message"]
    ok = _oa_tool([{"type": "text", "text": "done"}])
    ok["messages"].append({"role": "user", "content": [{"type": "text", "text": "x"}, image]})
    status, body = _post(raw_mocks, "oai", "/v1/chat/completions", ok, auth)
    assert status == 200, body


def _gm_loop(parts: Any) -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "what is on screen?"}]},
            {
                "role": "model",
                "parts": [
                    # the documented dummy signature (Gemini 3 checks the current turn's calls)
                    {
                        "functionCall": {"name": "screenshot", "args": {}},
                        "thoughtSignature": "skip_thought_signature_validator",
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "screenshot", "response": {"result": "x"}, "parts": parts}}
                ],
            },
        ],
        "tools": [
            {"functionDeclarations": [{"name": "screenshot", "parametersJsonSchema": {"type": "object"}}]}
        ],
    }


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([{"inlineData": {"mimeType": "image/png", "data": PNG}}], None),
        ([{"inline_data": {"mime_type": "image/png", "data": PNG}}], None),
        ([{"text": "not a FunctionResponsePart"}], 'Unknown name "text"'),
        ([{"inlineData": {"mimeType": "image/png", "data": PNG, "detail": "high"}}], 'Unknown name "detail"'),
        ([{"functionCall": {"name": "screenshot"}}], 'Unknown name "functionCall"'),
        (
            [{"inline_data": {"mime_type": "image/png", "data": PNG}, "fileData": {"fileUri": URL}}],
            "oneof field 'data' is already set. Cannot set 'fileData'",
        ),
        ([{"inlineData": {"mimeType": "image/heic", "data": PNG}}], "Unsupported MIME type: image/heic"),
    ],
    ids=["inlineData", "snake_case", "text", "unknown blob field", "function call", "both", "heic"],
)
def test_gemini_mock_takes_documented_function_response_parts_only(
    raw_mocks: BackgroundMocks, parts: Any, message: str | None
) -> None:
    """FunctionResponsePart holds inlineData or fileData only (google-genai SDK types.py)."""
    path = "/v1beta/models/gemini-3.5-flash:generateContent"
    status, body = _post(raw_mocks, "gem", path, _gm_loop(parts), {"x-goog-api-key": GM_KEY})
    if message is None:
        assert status == 200, body
    else:
        assert status == 400, body
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert message in body["error"]["message"]


def test_gemini_mock_refuses_function_response_parts_before_gemini_3(raw_mocks: BackgroundMocks) -> None:
    """A Gemini 3 feature: Gemini 2.x answers 400; the same media beside the response pass."""
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    image = {"inlineData": {"mimeType": "image/png", "data": PNG}}
    status, body = _post(raw_mocks, "gem", path, _gm_loop([image]), {"x-goog-api-key": GM_KEY})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT", body
    assert body["error"]["message"] == "function_response.parts is not supported for this model."
    beside = _gm_loop([])
    del beside["contents"][-1]["parts"][0]["functionResponse"]["parts"]
    beside["contents"][-1]["parts"].append(image)
    status, body = _post(raw_mocks, "gem", path, beside, {"x-goog-api-key": GM_KEY})
    assert status == 200, body


# ---- end to end: the anthropic SDK, every backend ----------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The conformance matrix's stack: OpenAI, Gemini, Responses and Bedrock backends, and a
    model on Gemini 2.5."""
    tmp = tmp_path_factory.mktemp("toolimg")
    cfg = matrix_config()
    # A Gemini 2.x backend (the catalog: no media inside a function response).
    cfg["models"][GEMINI_2] = {"backends": [{"provider": "gemini", "model": "gemini-2.5-flash"}]}
    with aws_credentials(tmp):
        stack = start_stack(tmp, config_on_free_ports(cfg))
    yield stack
    stack.stop()


def _received(mocks: MockAdmin, provider: str) -> dict[str, Any]:
    return mocks.stats(provider)["last_request"]["body"]


@pytest.mark.parametrize("backend", ["openai", "gemini", "openai_responses", "bedrock", "gemini-2"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_result_image_reaches_every_backend(
    gateway: Stack, mocks: MockAdmin, backend: str, stream: bool
) -> None:
    sdk = anthropic.Anthropic(base_url=gateway.base_url, api_key=DEMO_KEY, max_retries=0, timeout=30)
    model = GEMINI_2 if backend == "gemini-2" else BACKENDS[backend][0]
    first = sdk.messages.create(
        model=model,
        max_tokens=200,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "tool", "name": "screenshot"},
        messages=[{"role": "user", "content": "take a screenshot"}],
    )
    call = next(b for b in first.content if b.type == "tool_use")
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": 200,
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "take a screenshot"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": [text("the page"), IMAGE]},
                    {"type": "text", "text": "what do you see?"},
                ],
            },
        ],
    }
    if stream:
        with sdk.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = sdk.messages.create(**kwargs)
    assert msg.stop_reason in ("end_turn", "tool_use", "max_tokens")
    got = _received(mocks, "gemini" if backend == "gemini-2" else backend)
    if backend == "openai":
        msgs = got["messages"]
        tool_at = next(i for i, m in enumerate(msgs) if m["role"] == "tool")
        assert msgs[tool_at - 1]["role"] == "assistant" and msgs[tool_at]["content"] == "the page"
        assert msgs[tool_at + 1]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
        }
        call_id = msgs[tool_at]["tool_call_id"]  # the backend's spelling of the id
        assert msgs[tool_at + 1]["content"][0] == {
            "type": "text",
            "text": f"Images returned by tool call {call_id}:",
        }
        assert msgs[tool_at + 2] == {"role": "user", "content": "what do you see?"}
    elif backend == "gemini":
        fr = got["contents"][-1]["parts"][0]["functionResponse"]
        assert fr["response"] == {"result": "the page"}
        assert fr["parts"] == [{"inlineData": {"mimeType": "image/png", "data": PNG}}]
    elif backend == "gemini-2":  # beside the response, after a text naming the call
        parts = got["contents"][-1]["parts"]
        assert "parts" not in parts[0]["functionResponse"]
        assert parts[1:] == [
            {"text": f"Images returned by tool call {parts[0]['functionResponse']['id']}:"},  # its own id
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"text": "what do you see?"},
        ]
    elif backend == "openai_responses":
        out = next(i for i in got["input"] if i["type"] == "function_call_output")
        assert out["output"][1]["type"] == "input_image"
        assert out["output"][1]["image_url"] == f"data:image/png;base64,{PNG}"
    else:
        tr = got["messages"][-1]["content"][0]["toolResult"]
        assert {"image": {"format": "png", "source": {"bytes": PNG}}} in tr["content"]


# ---- Gemini models without multimodal function responses (catalog) ---------------------------------


def test_catalog_records_which_gemini_models_take_media_in_function_responses() -> None:
    assert lookup("gemini", "gemini-2.5-flash").tool_result_media is False  # type: ignore[union-attr]
    assert lookup("vertex_gemini", "gemini-2.5-pro").tool_result_media is False  # type: ignore[union-attr]
    assert lookup("gemini", "gemini-3.5-flash").tool_result_media is None  # type: ignore[union-attr]


@pytest.mark.parametrize("dialect", ["gemini", "vertex_gemini"])
def test_gemini_2_gets_the_images_beside_the_function_responses(dialect: str) -> None:
    body = build(
        "gemini", turn(result("toolu_1", text("one"), IMAGE), result("toolu_2", text("two")), after="go")
    )
    fitted = get_dialect(dialect).fit_body(body, lookup(dialect, "gemini-2.5-flash"))
    assert fitted is not body and "parts" in body["contents"][-1]["parts"][0]["functionResponse"]
    parts = fitted["contents"][-1]["parts"]
    assert [next(iter(p)) for p in parts] == [
        "functionResponse",
        "functionResponse",
        "text",
        "inlineData",
        "text",
    ]
    assert "parts" not in parts[0]["functionResponse"]
    assert parts[2] == {"text": "Images returned by tool call toolu_1:"}
    assert parts[3] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[4] == {"text": "go"}
    # Gemini 3: left as built (the same object).
    assert get_dialect(dialect).fit_body(body, lookup(dialect, "gemini-3.5-flash")) is body


def test_gemini_2_passthrough_body_in_snake_case_is_fitted_too() -> None:
    body = _gm_loop([{"inline_data": {"mime_type": "image/png", "data": PNG}}])
    body["contents"][-1]["parts"] = [
        {"function_response": body["contents"][-1]["parts"][0]["functionResponse"]}
    ]
    fitted = get_dialect("gemini").fit_body(body, lookup("gemini", "gemini-2.5-pro"))
    parts = fitted["contents"][-1]["parts"]
    assert "parts" not in parts[0]["function_response"]
    assert parts[1:] == [
        {"text": "Images returned by tool call screenshot:"},
        {"inline_data": {"mime_type": "image/png", "data": PNG}},
    ]


def test_a_backend_can_say_its_model_takes_no_media_in_function_responses() -> None:
    caps = resolve("gemini", "my-gemini", CapabilityOverrides(tool_result_media=False))
    body = build("gemini", turn(result("toolu_1", IMAGE)))
    fitted = get_dialect("gemini").fit_body(body, caps)
    assert fitted["contents"][-1]["parts"][1:] == [
        {"text": "Images returned by tool call toolu_1:"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
    ]


# ---- the parsers of these shapes, fuzzed ------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_mime = (
    st.sampled_from(["image/png", "image/jpeg", "application/pdf", "audio/wav", "text/plain", "x"]) | _json
)
_blob = st.fixed_dictionaries(
    {}, optional={"mimeType": _mime, "mime_type": _mime, "data": st.just(PNG) | _json}
)
_file = st.fixed_dictionaries(
    {}, optional={"mimeType": _mime, "fileUri": st.sampled_from([URL, "gs://b/o.png", ""]) | _json}
)
_fr_part = st.fixed_dictionaries(
    {}, optional={"inlineData": _blob, "inline_data": _blob, "fileData": _file, "text": _json}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_fr_part, max_size=4) | _json)
def test_gemini_function_response_parts_parse_or_get_a_clear_400(parts: Any) -> None:
    """Whatever a Gemini client puts in ``functionResponse.parts``: a request whose tool result
    holds the images among them, or a 400 naming the client's field; never a 500."""
    body = _gm_loop(parts)
    body["contents"][1]["parts"][0]["functionCall"]["id"] = "c1"
    body["contents"][2]["parts"][0]["functionResponse"]["id"] = "c1"
    try:
        req = CODECS["gemini"].parse_request(copy.deepcopy(body), "m")
    except GatewayError as e:
        assert e.status == 400 and e.param and "functionResponse.parts" in e.param, e
        return
    res = next(p for m in req.messages if m.role == "tool" for p in m.parts)
    assert isinstance(res, ToolResultPart)
    images = [c for c in res.content if isinstance(c, ImagePart)]
    assert all(c.data is not None or c.url == URL for c in images)
    for backend in ("anthropic", "openai", "openai_responses", "bedrock"):
        try:
            CODECS[backend].build_request(req, "up", default_max_tokens=100, drop_unsupported=True)
        except GatewayError as e:
            assert e.status == 400, e
