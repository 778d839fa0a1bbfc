"""Embeddings and token-counting codecs, the mocks' rules for them, and their config check,
without Envoy: property tests for every parser of client or provider input (nothing but a
``GatewayError`` ever leaves one; what a codec builds, its own parser reads back), and
one test per validation rule a mock enforces."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext_proc.config import DEFAULT_CONFIG, ConfigError, parse_config
from ext_proc.dialects import get_dialect
from ext_proc.errors import GatewayError
from ext_proc.translation.operations import EmbedRequest, EmbedResponse
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.mocks.embeddings import vector

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPENAI = get_dialect("openai").embeddings
GEMINI = get_dialect("gemini").embeddings
assert OPENAI is not None and GEMINI is not None
COUNTERS = {
    n: get_dialect(n).counting
    for n in ("anthropic", "gemini", "openai_responses", "vertex_gemini", "vertex_anthropic", "bedrock")
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Bodies that look like embeddings requests, with wrong parts: reach deeper than random JSON.
texts = st.text(min_size=1, max_size=20).filter(str.strip)
openai_bodies = st.fixed_dictionaries(
    {
        "input": st.one_of(
            texts, st.lists(texts, max_size=4), st.lists(st.integers(-2, 99), max_size=4), json_values
        )
    },
    optional={
        "dimensions": st.one_of(st.integers(-2, 4000), json_values),
        "encoding_format": st.sampled_from(["float", "base64", "hex"]),
        "user": json_values,
        "extra": json_values,
    },
)
gemini_one = st.fixed_dictionaries(
    {"content": st.one_of(st.builds(lambda t: {"parts": [{"text": t}]}, texts), json_values)},
    optional={
        "model": st.sampled_from(["models/m", "m", "models/other"]),
        "taskType": st.sampled_from(["RETRIEVAL_QUERY", "NOPE"]),
        "outputDimensionality": st.one_of(st.integers(-1, 10), json_values),
        "title": json_values,
    },
)
gemini_bodies = st.one_of(
    gemini_one, st.builds(lambda rs: {"requests": rs}, st.lists(gemini_one, max_size=3)), json_values
)
vectors = st.lists(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=6), min_size=1, max_size=4)


def _only_gateway_errors(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except GatewayError as e:
        assert 400 <= e.status < 600
        return e


@SETTINGS
@given(body=openai_bodies)
def test_openai_parse_request_only_4xx(body: dict[str, Any]) -> None:
    out = _only_gateway_errors(OPENAI.parse_request, body, None, "")
    if isinstance(out, GatewayError):
        assert out.status == 400 and out.param
    else:
        assert out.inputs and all(i for i in out.inputs)


@SETTINGS
@given(body=gemini_bodies, action=st.sampled_from(["embedContent", "batchEmbedContents"]))
def test_gemini_parse_request_only_4xx(body: Any, action: str) -> None:
    out = _only_gateway_errors(
        GEMINI.parse_request, body if isinstance(body, dict) else {"x": body}, "m", action
    )
    if isinstance(out, GatewayError):
        assert out.status == 400
    else:
        assert out.inputs and all(isinstance(i, str) and i.strip() for i in out.inputs)


@SETTINGS
@given(data=json_values, which=st.sampled_from(["openai", "gemini"]))
def test_parse_response_only_502(data: Any, which: str) -> None:
    codec = OPENAI if which == "openai" else GEMINI
    out = _only_gateway_errors(codec.parse_response, data)
    assert not isinstance(out, GatewayError) or out.status == 502


@SETTINGS
@given(inputs=st.lists(texts, min_size=1, max_size=5), dims=st.none() | st.integers(1, 4096))
def test_built_requests_parse_back(inputs: list[str], dims: int | None) -> None:
    """What a codec sends a provider, the same dialect's parser reads as the same request."""
    req = EmbedRequest(list(inputs), dims)
    oa = OPENAI.parse_request(OPENAI.build_request(req, "up"), None, "")
    assert (oa.inputs, oa.dimensions) == (inputs, dims)
    gm = GEMINI.parse_request(GEMINI.build_request(req, "up"), "up", "batchEmbedContents")
    assert (gm.inputs, gm.dimensions) == ([" ".join([t]) for t in inputs], dims)


@SETTINGS
@given(vecs=vectors, b64=st.booleans(), single=st.booleans())
def test_rendered_answers_parse_back(vecs: list[list[float]], b64: bool, single: bool) -> None:
    """A client's rendered answer, read as a provider's answer of its dialect, has the same
    vectors (base64 is float32: the strategy draws float32 values)."""
    req = EmbedRequest(["x"] * len(vecs), base64=b64)
    resp = EmbedResponse(vecs, 7, "m")
    assert OPENAI.parse_response(OPENAI.render_response(resp, req, 7)).vectors == vecs
    greq = EmbedRequest(["x"], single=True) if single else req
    gvecs = vecs[:1] if single else vecs
    assert GEMINI.parse_response(GEMINI.render_response(EmbedResponse(gvecs), greq, 0)).vectors == gvecs


@SETTINGS
@given(
    body=st.dictionaries(
        st.sampled_from(
            [
                "contents",
                "generateContentRequest",
                "max_tokens",
                "messages",
                "x",
                "input",
                "anthropic_version",
                "systemInstruction",
            ]
        ),
        st.one_of(
            json_values,
            st.fixed_dictionaries({}, optional={"converse": json_values, "invokeModel": json_values}),
        ),
        max_size=3,
    )
)
def test_counting_chat_body_only_4xx(body: dict[str, Any]) -> None:
    for codec in COUNTERS.values():
        assert codec is not None
        out = _only_gateway_errors(codec.chat_body, body)
        assert not isinstance(out, GatewayError) or out.status == 400


@SETTINGS
@given(
    data=json_values
    | st.dictionaries(st.sampled_from(["input_tokens", "totalTokens", "inputTokens"]), json_values)
)
def test_parse_count_only_502(data: Any) -> None:
    for name in COUNTERS:
        codec = COUNTERS[name]
        assert codec is not None
        out = _only_gateway_errors(codec.parse_count, data)
        assert isinstance(out, int | GatewayError)
        assert not isinstance(out, GatewayError) or out.status == 502


@SETTINGS
@given(
    turns=st.lists(texts, min_size=1, max_size=4),
    system=st.none() | texts,
    target=st.sampled_from(["vertex_gemini", "vertex_anthropic", "bedrock"]),
)
def test_cloud_counting_bodies_read_back(turns: list[str], system: str | None, target: str) -> None:
    """What the gateway sends a cloud counting endpoint, read back on failover, rebuilds to
    the same body for that endpoint and to the same counted request for every other."""
    from ext_proc.request import operations as ops

    client = get_dialect("anthropic")
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    if len(messages) % 2 == 0:
        messages.append({"role": "user", "content": "go"})
    body: dict[str, Any] = {"model": "m", "messages": messages, **({"system": system} if system else {})}
    chat, ir = ops.count_chat(client, body, None)
    dst = get_dialect(target)
    assert dst.counting is not None
    sent = ops.build_count(client, chat, ir, dst, "up.model:0", 1024, False)
    back = dst.counting.chat_body(sent)
    assert ops.build_count(dst, back, None, dst, "up.model:0", 1024, False, "up.model:0") == sent
    direct = ops.build_count(client, chat, ir, client, "m", 1024, False)
    again = ops.build_count(dst, back, None, client, "m", 1024, False, "up.model:0")
    assert _blocks(again["messages"]) == _blocks(direct["messages"])
    assert _blocks(again.get("system")) == _blocks(direct.get("system"))


def _blocks(v: Any) -> Any:
    """Anthropic content with a string as its one text block (the two forms are the same)."""
    if isinstance(v, str):
        return [{"type": "text", "text": v}]
    if isinstance(v, list):
        return [
            {**m, "content": _blocks(m["content"])} if isinstance(m, dict) and "role" in m else m for m in v
        ]
    return v


def test_bedrock_counts_an_inference_profile_under_its_base_model() -> None:
    """CountTokens refuses cross-region profile IDs (see bedrock_converse/counting.py)."""
    codec = COUNTERS["bedrock"]
    assert codec is not None
    assert (
        codec.request_path("us.anthropic.claude-sonnet-4-6")
        == "/model/anthropic.claude-sonnet-4-6/count-tokens"
    )
    assert codec.request_path("global.anthropic.c-v1:0") == "/model/anthropic.c-v1%3A0/count-tokens"
    assert codec.request_path("cohere.command-r-v1:0") == "/model/cohere.command-r-v1%3A0/count-tokens"
    arn = "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.x"
    assert codec.request_path(arn) == f"/model/{arn.replace(':', '%3A').replace('/', '%2F')}/count-tokens"


def test_openai_rules_name_the_field() -> None:
    cases = [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": ["a"] * 2049}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ]
    for body, param in cases:
        with pytest.raises(GatewayError) as e:
            OPENAI.parse_request(body, None, "")
        assert e.value.param == param, body


def test_gemini_batch_settings_must_agree() -> None:
    one = {"model": "models/m", "content": {"parts": [{"text": "a"}]}}
    with pytest.raises(GatewayError) as e:
        GEMINI.parse_request(
            {"requests": [one, {**one, "outputDimensionality": 3}]}, "m", "batchEmbedContents"
        )
    assert e.value.param == "requests[1]"


def test_config_check_names_backends_without_embeddings() -> None:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["models"]["emb"] = {"kind": "embedding", "backends": [{"provider": "anthropic", "model": "x"}]}
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump(cfg), "c.yaml")
    assert any(
        "models.emb.backends[0].provider: 'anthropic' (dialect anthropic) has no embeddings endpoint" in p
        for p in e.value.problems
    )


# ---------------------------------------------------------------------------- the mocks' rules

KEYS = {"oa": "sk-oa", "an": "sk-an", "gm": "gm-key"}


@pytest.fixture(scope="module")
def mocks() -> Iterator[BackgroundMocks]:
    bg = start_in_thread(
        [
            MockSpec("oa", "openai", 0, KEYS["oa"]),
            MockSpec("an", "anthropic", 0, KEYS["an"]),
            MockSpec("gm", "gemini", 0, KEYS["gm"]),
        ]
    )
    yield bg
    bg.stop()


def post(mocks: BackgroundMocks, name: str, path: str, body: Any) -> tuple[int, Any]:
    headers = {
        "oa": {"authorization": f"Bearer {KEYS['oa']}"},
        "an": {"x-api-key": KEYS["an"], "anthropic-version": "2023-06-01"},
        "gm": {"x-goog-api-key": KEYS["gm"]},
    }[name]
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[name], timeout=10)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **headers})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "text-embedding-3-small", "input": "ok", "dimensions": 4}, 200),
        ({"model": "text-embedding-3-small", "input": ""}, 400),  # "cannot be an empty string"
        ({"model": "text-embedding-3-small", "input": ["a"] * 2049}, 400),  # "2048 dimensions or less"
        (
            {"model": "text-embedding-ada-002", "input": "a", "dimensions": 4},
            400,
        ),  # text-embedding-3 and later only
        ({"model": "text-embedding-3-small", "input": "a", "encoding_format": "hex"}, 400),  # float or base64
    ],
)
def test_mock_openai_embeddings_rules(mocks: BackgroundMocks, body: dict[str, Any], status: int) -> None:
    code, out = post(mocks, "oa", "/v1/embeddings", body)
    assert code == status, out
    if status == 200:
        assert out["data"][0]["embedding"] == pytest.approx(vector("ok", 4))
        assert out["usage"]["prompt_tokens"] == 1


@pytest.mark.parametrize(
    ("action", "body", "status"),
    [
        (
            "batchEmbedContents",
            {"requests": [{"model": "models/m", "content": {"parts": [{"text": "a"}]}}]},
            200,
        ),
        (
            "batchEmbedContents",
            {"requests": [{"model": "models/x", "content": {"parts": [{"text": "a"}]}}]},
            400,
        ),
        (
            "embedContent",
            {"content": {"parts": [{"text": "a"}]}, "colour": 1},
            400,
        ),  # proto JSON: unknown name
        ("embedContent", {"content": {"parts": [{"text": "a"}]}, "taskType": "NOPE"}, 400),  # TaskType enum
        ("embedContent", {"content": {"parts": []}}, 400),  # content is required
        ("countTokens", {"contents": [{"role": "user", "parts": [{"text": "a b"}]}]}, 200),
        ("countTokens", {"contents": [], "generateContentRequest": {"model": "models/m"}}, 400),  # exclusive
    ],
)
def test_mock_gemini_rules(mocks: BackgroundMocks, action: str, body: dict[str, Any], status: int) -> None:
    code, out = post(mocks, "gm", f"/v1beta/models/m:{action}", body)
    assert code == status, out
    if code == 200 and action == "countTokens":
        assert out["totalTokens"] >= 2


def test_mock_gemini_output_dimensionality_truncates(mocks: BackgroundMocks) -> None:
    code, out = post(
        mocks,
        "gm",
        "/v1beta/models/gemini-embedding-001:embedContent",
        {"content": {"parts": [{"text": "t"}]}, "outputDimensionality": 5},
    )
    assert code == 200 and out["embedding"]["values"] == pytest.approx(vector("t", 3072)[:5])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "a b c"}]}, 200),
        (
            {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]},
            400,
        ),
    ],
)
def test_mock_anthropic_count_rules(mocks: BackgroundMocks, body: dict[str, Any], status: int) -> None:
    code, out = post(mocks, "an", "/v1/messages/count_tokens", body)
    assert code == status, out
    if code == 200:
        assert out == {"input_tokens": out["input_tokens"]} and out["input_tokens"] >= 3


# ---------------------------------------------------------------------------- the plan, without Envoy


def _state(budgets: bool) -> Any:
    from ext_proc.state import GatewayState

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if budgets:
        data["tenants"]["demo"]["limits"] = {"tokens_per_minute": 10_000_000}
    data["models"]["emb"] = {
        "kind": "embedding",
        "default_max_tokens": 5000,
        "backends": [
            {"provider": "openai", "model": "text-embedding-3-small"},
            {"provider": "gemini", "model": "g-emb"},
        ],
    }
    data["models"]["counted"] = {
        "backends": [{"provider": "gemini", "model": "g"}, {"provider": "anthropic", "model": "c"}]
    }
    env = {"MOCK_OPENAI_API_KEY": "k", "MOCK_ANTHROPIC_API_KEY": "k", "MOCK_GEMINI_API_KEY": "k"}
    return GatewayState(parse_config(yaml.safe_dump(data), "x.yaml"), env=env)


def _plan(state: Any, dialect: str, call: Any, body: dict[str, Any]) -> Any:
    import asyncio

    from ext_proc.dialects import get_dialect
    from ext_proc.request.plan import Started, plan

    started = Started(call, get_dialect(dialect), "demo", None, 0.0)
    return asyncio.run(plan(state, started, json.dumps(body).encode()))


def test_embeddings_admission_reserves_input_only() -> None:
    from ext_proc.dialects import ClientCall
    from ext_proc.request.plan import RoutePlan

    state = _state(budgets=True)
    routed = _plan(state, "openai", ClientCall("openai", "embed"), {"model": "emb", "input": "x" * 400})
    assert isinstance(routed, RoutePlan) and routed.ticket is not None
    assert routed.ticket.tokens < 200  # the input estimate: no 5000 output tokens reserved
    assert routed.set_headers[":path"] == "/v1/embeddings" and routed.operation == "embed"


def test_count_plans() -> None:
    """Forwarded where every backend counts (translated for the primary), else estimated."""
    from ext_proc.dialects import ClientCall
    from ext_proc.request.plan import Answer, RoutePlan

    state = _state(budgets=False)
    body = {"model": "counted", "messages": [{"role": "user", "content": "hello"}]}
    routed = _plan(state, "anthropic", ClientCall("anthropic", "count_tokens"), body)
    assert isinstance(routed, RoutePlan) and routed.set_headers[":path"] == "/v1beta/models/g:countTokens"
    assert json.loads(routed.new_body)["generateContentRequest"]["model"] == "models/g"
    answer = _plan(state, "anthropic", ClientCall("anthropic", "count_tokens"), {**body, "model": "gpt-5.5"})
    assert isinstance(answer, Answer) and answer.status == 200
    assert (
        answer.headers == {"x-gateway-token-count": "estimate"}
        and json.loads(answer.body)["input_tokens"] > 0
    )
    refused = _plan(state, "anthropic", ClientCall("anthropic", "count_tokens"), {**body, "model": "emb"})
    assert isinstance(refused, Answer) and refused.status == 400 and b"embedding model" in refused.body


def test_mock_responses_input_tokens_rules() -> None:
    """``/v1/responses/input_tokens`` takes the input side of a request only."""
    bg = start_in_thread([MockSpec("rs", "openai_responses", 0, "sk-rs")])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", bg.ports["rs"], timeout=10)
        for body, status in (
            ({"model": "m", "input": "a b c"}, 200),
            ({"model": "m", "input": "a", "max_output_tokens": 16}, 400),
        ):
            conn.request(
                "POST",
                "/v1/responses/input_tokens",
                json.dumps(body),
                {"content-type": "application/json", "authorization": "Bearer sk-rs"},
            )
            r = conn.getresponse()
            out = json.loads(r.read())
            assert r.status == status, out
            if status == 200:
                assert out["object"] == "response.input_tokens" and out["input_tokens"] >= 3
    finally:
        bg.stop()


def test_answer_guard_judges_operation_answers() -> None:
    """The guard (``check_every_answer``) reads an embedding model's 200 with its embeddings
    codec, and a chat model's on a counting backend as a chat answer or a count."""
    from ext_proc.request.answer import PASS, AnswerCheck, Failed
    from ext_proc.request.operations import judge

    oa, an = get_dialect("openai"), get_dialect("anthropic")
    embedding = json.dumps({"data": [{"index": 0, "embedding": [0.1, 0.2]}], "usage": {"prompt_tokens": 1}})
    check = AnswerCheck(oa.codec, "b", False, "application/json", parse=judge(oa, "embedding"))
    assert check.feed(embedding.encode(), True) == PASS
    check = AnswerCheck(oa.codec, "b", False, "application/json", parse=judge(oa, "embedding"))
    assert isinstance(check.feed(b'{"data": [{"embedding": "not base64!"}]}', True), Failed)
    assert judge(oa, "chat") is None  # a Chat Completions backend counts nothing: chat answers only
    for body, ok in ((b'{"input_tokens": 12}', True), (b'{"input_tokens": "x"}', False)):
        check = AnswerCheck(an.codec, "b", False, "application/json", parse=judge(an, "chat"))
        assert (check.feed(body, True) == PASS) is ok
