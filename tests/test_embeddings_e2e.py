"""Embeddings and token counting through the real stack (Envoy, ext_proc, mock providers),
with the official SDKs as clients.

Embedding models (``kind: embedding``) are served by OpenAI and Gemini backends in both
directions: the mocks' vectors are deterministic (``mocks.embeddings.vector``), so a test
knows the exact vector each backend returns for a text. Token counts are forwarded to a
counting endpoint when every backend of the model has one (Anthropic, Gemini), else
answered with the gateway's estimate and ``x-gateway-token-count: estimate``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google import genai
from google.genai import types

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.mocks.embeddings import vector
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack

OA_EMBED = "text-embedding-3-small"  # OpenAI primary, Gemini second
GM_EMBED = "gemini-embedding-001"  # Gemini primary, OpenAI second
COUNTS_ANTHROPIC = "claude-counted"  # Anthropic then Gemini: both count
COUNTS_GEMINI = "gemini-counted"  # Gemini then Anthropic: both count
ESTIMATE_HEADER = "x-gateway-token-count"


def embeddings_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["models"][OA_EMBED] = {
        "kind": "embedding",
        "backends": [
            {"provider": "openai", "model": "text-embedding-3-small"},
            {"provider": "gemini", "model": "gemini-embedding-001"},
        ],
    }
    cfg["models"][GM_EMBED] = {
        "kind": "embedding",
        "backends": [
            {"provider": "gemini", "model": "gemini-embedding-001"},
            {"provider": "openai", "model": "text-embedding-3-small"},
        ],
    }
    cfg["models"][COUNTS_ANTHROPIC] = {
        "backends": [
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
            {"provider": "gemini", "model": "gemini-3.5-flash"},
        ]
    }
    cfg["models"][COUNTS_GEMINI] = {
        "backends": [
            {"provider": "gemini", "model": "gemini-3.5-flash"},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
    }
    return cfg


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("embeddings"), config_on_free_ports(embeddings_config()))
    yield stack
    stack.stop()


@pytest.fixture
def mocks(gateway: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(gateway) as admin:
        yield admin


def oa(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)


_GM_CLIENTS: list[genai.Client] = []


def gm(stack: Stack) -> genai.Client:
    # Kept referenced: a genai.Client closes its HTTP client when garbage-collected.
    client = genai.Client(
        api_key=DEMO_KEY, http_options=types.HttpOptions(base_url=stack.base_url, timeout=20_000)
    )
    _GM_CLIENTS.append(client)
    return client


def ant(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)


def sent(mocks: MockAdmin, provider: str) -> dict[str, Any]:
    return mocks.stats(provider)["last_request"]  # type: ignore[no-any-return]


def raw(stack: Stack, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(
        stack.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), {k.lower(): v for k, v in e.headers.items()}


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------- embeddings


def test_openai_client_openai_backend_float(gateway: Stack, mocks: MockAdmin) -> None:
    r = oa(gateway).embeddings.create(model=OA_EMBED, input=["hello world", "bye"], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    assert close(r.data[0].embedding, vector("hello world", 1536))
    assert close(r.data[1].embedding, vector("bye", 1536))
    assert r.model == OA_EMBED
    assert r.usage.prompt_tokens == 3  # the provider's own count (words in the mock)
    assert sent(mocks, "openai")["path"] == "/v1/embeddings"
    assert sent(mocks, "openai")["body"]["model"] == "text-embedding-3-small"


def test_openai_client_gemini_backend_base64_dimensions(gateway: Stack, mocks: MockAdmin) -> None:
    # The SDK asks for base64 by default and decodes it: the gateway encodes the Gemini vectors.
    r = oa(gateway).embeddings.create(model=GM_EMBED, input="a cat sat", dimensions=8)
    assert close(r.data[0].embedding, vector("a cat sat", 3072)[:8])
    assert r.usage.prompt_tokens >= 1  # Gemini reports no count: the gateway's estimate
    req = sent(mocks, "gemini")
    assert req["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert req["body"]["requests"] == [
        {
            "model": "models/gemini-embedding-001",
            "content": {"parts": [{"text": "a cat sat"}]},
            "outputDimensionality": 8,
        }
    ]


def test_openai_client_token_ids_reach_an_openai_backend(gateway: Stack, mocks: MockAdmin) -> None:
    r = oa(gateway).embeddings.create(model=OA_EMBED, input=[[1, 2, 3]], encoding_format="float")
    assert len(r.data) == 1 and r.usage.prompt_tokens == 3
    assert sent(mocks, "openai")["body"]["input"] == [[1, 2, 3]]


def test_token_ids_towards_gemini_are_a_clear_400(gateway: Stack, mocks: MockAdmin) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oa(gateway).embeddings.create(model=GM_EMBED, input=[[1, 2, 3]])
    assert "token ids" in e.value.message and "input[0]" in e.value.message
    assert mocks.stats("gemini")["requests"] == 0


def test_genai_client_both_backends(gateway: Stack, mocks: MockAdmin) -> None:
    client = gm(gateway)
    r = client.models.embed_content(model=GM_EMBED, contents=["one", "two three"])
    assert r.embeddings is not None and len(r.embeddings) == 2
    assert close(r.embeddings[1].values or [], vector("two three", 3072))
    r = client.models.embed_content(
        model=OA_EMBED, contents="query text", config=types.EmbedContentConfig(output_dimensionality=16)
    )
    assert r.embeddings is not None
    assert close(r.embeddings[0].values or [], vector("query text", 16))
    body = sent(mocks, "openai")["body"]
    assert body["dimensions"] == 16 and body["input"] == ["query text"]


def test_genai_embed_content_single_verb(gateway: Stack, mocks: MockAdmin) -> None:
    status, body, _ = raw(
        gateway,
        f"/v1beta/models/{OA_EMBED}:embedContent",
        {"content": {"parts": [{"text": "solo"}]}},
        {"x-goog-api-key": DEMO_KEY},
    )
    assert status == 200
    assert close(body["embedding"]["values"], vector("solo", 1536))


def test_gemini_task_type_towards_openai_is_refused(gateway: Stack, mocks: MockAdmin) -> None:
    with pytest.raises(genai.errors.ClientError) as e:
        gm(gateway).models.embed_content(
            model=OA_EMBED, contents="q", config=types.EmbedContentConfig(task_type="RETRIEVAL_QUERY")
        )
    assert e.value.code == 400 and "taskType" in str(e.value)


def test_gemini_batch_model_must_match(gateway: Stack, mocks: MockAdmin) -> None:
    status, body, _ = raw(
        gateway,
        f"/v1beta/models/{GM_EMBED}:batchEmbedContents",
        {"requests": [{"model": "models/other", "content": {"parts": [{"text": "x"}]}}]},
        {"x-goog-api-key": DEMO_KEY},
    )
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT" and "requests[0].model" in body["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"input": ""}, "input"), ({"input": ["ok", ""]}, "input[1]"), ({"input": ["x"] * 2049}, "input")],
)
def test_openai_input_rules(gateway: Stack, mocks: MockAdmin, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oa(gateway).embeddings.create(model=OA_EMBED, **kwargs)
    assert e.value.param == param  # type: ignore[attr-defined]
    assert mocks.stats("openai")["requests"] == 0


def test_operation_and_model_kind_must_agree(gateway: Stack, mocks: MockAdmin) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oa(gateway).embeddings.create(model="gpt-5.5", input="x")
    assert "not an embedding model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        oa(gateway).chat.completions.create(model=OA_EMBED, messages=[{"role": "user", "content": "x"}])
    assert "is an embedding model" in e.value.message


def test_embeddings_fail_over_across_dialects(gateway: Stack, mocks: MockAdmin) -> None:
    mocks.fault("openai", mode="error", status=503)
    r = oa(gateway).embeddings.with_raw_response.create(
        model=OA_EMBED, input="failover", encoding_format="float"
    )
    assert r.headers["x-gateway-backend"].startswith("gemini/")
    assert close(r.parse().data[0].embedding, vector("failover", 3072))
    assert sent(mocks, "gemini")["path"].endswith(":batchEmbedContents")


# ---------------------------------------------------------------------------- token counting


def test_anthropic_count_forwarded_to_anthropic(gateway: Stack, mocks: MockAdmin) -> None:
    r = ant(gateway).messages.with_raw_response.count_tokens(
        model=COUNTS_ANTHROPIC, messages=[{"role": "user", "content": "count these four words"}]
    )
    assert ESTIMATE_HEADER not in r.headers
    assert r.parse().input_tokens > 0
    req = sent(mocks, "anthropic")
    assert req["path"] == "/v1/messages/count_tokens"
    assert "max_tokens" not in req["body"] and req["body"]["model"] == "claude-sonnet-4-6"


def test_anthropic_count_estimated_for_an_openai_backed_model(gateway: Stack, mocks: MockAdmin) -> None:
    r = ant(gateway).messages.with_raw_response.count_tokens(
        model="gpt-5.5", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert r.headers[ESTIMATE_HEADER] == "estimate"
    assert 90 <= r.parse().input_tokens <= 120
    assert all(mocks.stats(p)["requests"] == 0 for p in ("openai", "anthropic", "gemini"))


def test_anthropic_count_translated_to_gemini_count_tokens(gateway: Stack, mocks: MockAdmin) -> None:
    r = ant(gateway).messages.count_tokens(
        model=COUNTS_GEMINI, system="be brief", messages=[{"role": "user", "content": "hello there"}]
    )
    assert r.input_tokens > 0
    req = sent(mocks, "gemini")
    assert req["path"] == "/v1beta/models/gemini-3.5-flash:countTokens"
    inner = req["body"]["generateContentRequest"]
    assert inner["model"] == "models/gemini-3.5-flash" and "systemInstruction" in inner


def test_count_fails_over_to_another_counting_backend(gateway: Stack, mocks: MockAdmin) -> None:
    mocks.fault("anthropic", mode="error", status=503)
    r = ant(gateway).messages.count_tokens(
        model=COUNTS_ANTHROPIC, messages=[{"role": "user", "content": "hi"}]
    )
    assert r.input_tokens > 0
    assert sent(mocks, "gemini")["path"].endswith(":countTokens")


def test_genai_count_tokens_forwarded_and_estimated(gateway: Stack, mocks: MockAdmin) -> None:
    client = gm(gateway)
    r = client.models.count_tokens(model=COUNTS_GEMINI, contents="five words in this text")
    assert r.total_tokens is not None and r.total_tokens > 0
    assert sent(mocks, "gemini")["path"].endswith(":countTokens")
    r = client.models.count_tokens(model="gpt-5.5", contents="y" * 80)
    assert r.total_tokens is not None and 15 <= r.total_tokens <= 30
    assert r.sdk_http_response is not None and r.sdk_http_response.headers is not None
    assert r.sdk_http_response.headers.get(ESTIMATE_HEADER) == "estimate"


def test_responses_input_tokens_estimated(gateway: Stack, mocks: MockAdmin) -> None:
    client = oa(gateway)
    if not hasattr(client.responses, "input_tokens"):
        pytest.skip("the installed openai SDK has no responses.input_tokens")
    r = client.responses.input_tokens.with_raw_response.count(model="gpt-5.5", input="z" * 200)
    assert r.headers[ESTIMATE_HEADER] == "estimate"
    assert r.parse().input_tokens >= 40


def test_count_of_an_invalid_request_is_a_400_in_the_client_dialect(gateway: Stack, mocks: MockAdmin) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(gateway).messages.count_tokens(
            model=COUNTS_ANTHROPIC, messages=[{"role": "robot", "content": "x"}]
        )
    assert "role" in e.value.message
    assert mocks.stats("anthropic")["requests"] == 0
