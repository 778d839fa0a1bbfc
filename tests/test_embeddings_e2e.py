"""Embeddings and token counting through the real stack (Envoy, ext_proc, mock providers),
with the official SDKs as clients.

Embedding models (``kind: embedding``) are served by OpenAI and Gemini backends in both
directions: the mocks' vectors are deterministic (``mocks.embeddings.vector``), so a test
knows the exact vector each backend returns for a text. Token counts are forwarded to a
counting endpoint when every backend of the model has one (Anthropic, Gemini, Responses
providers, Gemini and Claude on Vertex AI, Bedrock), else answered with the gateway's
estimate and ``x-gateway-token-count: estimate``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google import genai
from google.genai import types
from prometheus_client.parser import text_string_to_metric_families

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.mocks.embeddings import vector
from gateway_tools.supervisor import Stack
from tests.cloud import LOCATION, PROJECT, cloud_providers, with_clouds
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import aws_credentials, bedrock_provider, start_stack

OA_EMBED = "text-embedding-3-small"  # OpenAI primary, Gemini second
GM_EMBED = "gemini-embedding-001"  # Gemini primary, OpenAI second
COUNTS_ANTHROPIC = "claude-counted"  # Anthropic then Gemini: both count
COUNTS_GEMINI = "gemini-counted"  # Gemini then Anthropic: both count
COUNTS_RESPONSES = "responses-counted"  # a Responses backend then Anthropic: both count
AZ_EMBED = "azure-embedding"  # an Azure deployment, then Azure's v1 API
# The cloud counting backends: each model has one of them primary and the other two next.
# A cross-region inference profile, as newer Claude models are invoked on Bedrock: counted
# under its base model (the Bedrock mock refuses to count a profile ID, as Bedrock does).
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6"
CLOUD_COUNTERS = {
    "vertex_gemini": "gemini-3.5-flash",
    "vertex_anthropic": "claude-sonnet-4-6",
    "bedrock": BEDROCK_MODEL,
}
ESTIMATE_HEADER = "x-gateway-token-count"


def embeddings_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["models"][OA_EMBED] = {
        "kind": "embedding",
        "backends": [
            # priced: cost is input tokens at the input price ($20 per million here)
            {"provider": "openai", "model": "text-embedding-3-small", "price": {"input": 20.0}},
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
    # Azure OpenAI: a deployment (api-version path) and the v1 API (Entra ID token), OpenAI's wire.
    providers = cloud_providers()
    cfg["providers"]["azure_openai"] = providers["azure_openai"]
    cfg["providers"]["azure_entra"] = providers["azure_entra"]
    cfg["models"][AZ_EMBED] = {
        "kind": "embedding",
        "backends": [
            {"provider": "azure_openai", "model": "embed-deployment"},
            {"provider": "azure_entra", "model": "text-embedding-3-large"},
        ],
    }
    cfg["providers"]["openai_responses"] = {
        "dialect": "openai_responses",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "MOCK_OPENAI_RESPONSES_API_KEY",
        "mock": True,
    }
    cfg["models"][COUNTS_RESPONSES] = {
        "backends": [
            {"provider": "openai_responses", "model": "gpt-5-mini"},
            {"provider": "anthropic", "model": "claude-sonnet-4-6"},
        ]
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
    # Gemini and Claude on Vertex AI, and Bedrock: each primary of one model, the others next;
    # and per (primary, client SDK) one model of its own for failover, whose backends are named
    # for it so that health learned in one case never steers another.
    cfg["providers"]["vertex_gemini"] = providers["vertex_gemini"]
    cfg["providers"]["vertex_anthropic"] = providers["vertex_anthropic"]
    cfg["providers"]["bedrock"] = bedrock_provider()
    for primary in CLOUD_COUNTERS:
        chain = [primary, *(p for p in CLOUD_COUNTERS if p != primary)]
        cfg["models"][counted(primary)] = {
            "backends": [{"provider": p, "model": CLOUD_COUNTERS[p]} for p in chain]
        }
        for client in COUNT_CLIENTS:
            m = failover_model(primary, client)
            cfg["models"][m] = {
                "backends": [{"provider": p, "model": CLOUD_COUNTERS[p], "name": f"{p}/{m}"} for p in chain]
            }
    return cfg


COUNT_CLIENTS = ("anthropic", "gemini", "openai_responses")


def counted(primary: str) -> str:
    """The model whose backends are the three cloud counters, ``primary`` first."""
    return f"{primary.replace('_', '-')}-counted"


def failover_model(primary: str, client: str) -> str:
    return f"{counted(primary)}-failover-{client.replace('_', '-')}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("embeddings")
    cfg, env = with_clouds(embeddings_config(), tmp)
    with aws_credentials(tmp):  # the Bedrock mock checks signatures by the test account's secret
        stack = start_stack(tmp, cfg, env)
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


# (client, backend) -> the embedding model whose primary is that backend, its upstream model, dimensions
EMBED_BACKENDS = {
    "openai": (OA_EMBED, "text-embedding-3-small", 1536),
    "gemini": (GM_EMBED, "gemini-embedding-001", 3072),
}
EMBED_PAIRS = [(c, b) for c in ("openai", "gemini") for b in EMBED_BACKENDS]


@pytest.mark.parametrize(("client", "backend"), EMBED_PAIRS, ids=[f"{c}-{b}" for c, b in EMBED_PAIRS])
def test_embed(gateway: Stack, mocks: MockAdmin, client: str, backend: str) -> None:
    """Both SDKs against both backends: the vectors are the backend's (the mock's deterministic
    ones), in the client's shape; the backend receives its own format."""
    model, upstream, full = EMBED_BACKENDS[backend]
    texts = ["hello world", "bye"]
    if client == "openai":
        # float explicitly, then the SDK's default (base64, decoded by the SDK) with dimensions
        r = oa(gateway).embeddings.create(model=model, input=texts, encoding_format="float")
        assert [d.index for d in r.data] == [0, 1] and r.model == model
        got = [d.embedding for d in r.data]
        # OpenAI's count (the mock counts words: 2 + 1), else the gateway's estimate
        # (characters / 4, at least 1 per input: 11 // 4 + 1)
        assert r.usage.prompt_tokens == 3
        r = oa(gateway).embeddings.create(model=model, input="a cat sat", dimensions=8)
        short = r.data[0].embedding
    else:
        g = gm(gateway)
        e = g.models.embed_content(model=model, contents=texts)
        assert e.embeddings is not None
        got = [x.values or [] for x in e.embeddings]
        e = g.models.embed_content(
            model=model, contents="a cat sat", config=types.EmbedContentConfig(output_dimensionality=8)
        )
        assert e.embeddings is not None
        short = e.embeddings[0].values or []
    assert close(got[0], vector("hello world", full)) and close(got[1], vector("bye", full))
    assert close(short, vector("a cat sat", full)[:8] if backend == "gemini" else vector("a cat sat", 8))
    req = sent(mocks, backend)
    if backend == "openai":
        assert req["path"] == "/v1/embeddings"
        assert req["body"]["model"] == upstream and req["body"]["dimensions"] == 8
    else:
        assert req["path"] == f"/v1beta/models/{upstream}:batchEmbedContents"
        assert req["body"]["requests"] == [
            {
                "model": f"models/{upstream}",
                "content": {"parts": [{"text": "a cat sat"}]},
                "outputDimensionality": 8,
            }
        ]


def test_azure_deployment_and_v1_embeddings(gateway: Stack, mocks: MockAdmin) -> None:
    r = oa(gateway).embeddings.create(model=AZ_EMBED, input="azure text", encoding_format="float")
    assert close(r.data[0].embedding, vector("azure text", 768))  # a deployment the mock does not know: 768
    req = sent(mocks, "azure_openai")
    assert req["path"] == "/openai/deployments/embed-deployment/embeddings" and req["query"]["api-version"]
    mocks.fault("azure_openai", mode="error", status=503)
    r = oa(gateway).embeddings.create(model=AZ_EMBED, input="azure text", encoding_format="float")
    assert close(r.data[0].embedding, vector("azure text", 3072))  # the v1 API's text-embedding-3-large
    assert sent(mocks, "azure_entra")["path"] == "/openai/v1/embeddings"


def metric(stack: Stack, name: str, **labels: str) -> float:
    cfg = stack.config
    url = f"http://{cfg.ext_proc.address}:{cfg.ext_proc.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_embeddings_metrics_and_cost(gateway: Stack, mocks: MockAdmin) -> None:
    backend = f"openai/{EMBED_BACKENDS['openai'][1]}"
    before = (
        metric(gateway, "llm_gateway_requests_total", model=OA_EMBED, backend=backend, status="200"),
        metric(gateway, "llm_gateway_tokens_total", model=OA_EMBED, backend=backend, kind="input"),
        metric(gateway, "llm_gateway_cost_usd_total", model=OA_EMBED, backend=backend),
    )
    oa(gateway).embeddings.create(
        model=OA_EMBED, input=["one two three four five"] * 2, encoding_format="float"
    )
    after = (
        metric(gateway, "llm_gateway_requests_total", model=OA_EMBED, backend=backend, status="200"),
        metric(gateway, "llm_gateway_tokens_total", model=OA_EMBED, backend=backend, kind="input"),
        metric(gateway, "llm_gateway_cost_usd_total", model=OA_EMBED, backend=backend),
    )
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 10  # the provider's count: five words twice
    assert after[2] - before[2] == pytest.approx(10 * 20.0 / 1_000_000)


def test_openai_client_token_ids_reach_an_openai_backend(gateway: Stack, mocks: MockAdmin) -> None:
    r = oa(gateway).embeddings.create(model=OA_EMBED, input=[[1, 2, 3]], encoding_format="float")
    assert len(r.data) == 1 and r.usage.prompt_tokens == 3
    assert sent(mocks, "openai")["body"]["input"] == [[1, 2, 3]]


def test_token_ids_towards_gemini_are_a_clear_400(gateway: Stack, mocks: MockAdmin) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oa(gateway).embeddings.create(model=GM_EMBED, input=[[1, 2, 3]])
    assert "token ids" in e.value.message and "input[0]" in e.value.message
    assert mocks.stats("gemini")["requests"] == 0


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


# backend -> (a model whose backends all count, with this one primary; else one answered by estimate)
COUNT_BACKENDS = {
    "anthropic": COUNTS_ANTHROPIC,
    "gemini": COUNTS_GEMINI,
    "openai_responses": COUNTS_RESPONSES,
    "openai": "gpt-5.5",
    **{p: counted(p) for p in CLOUD_COUNTERS},
}
VERTEX = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers"
COUNT_PATHS = {
    "anthropic": "/v1/messages/count_tokens",
    "gemini": "/v1beta/models/gemini-3.5-flash:countTokens",
    "openai_responses": "/v1/responses/input_tokens",
    # Vertex AI REST reference, publishers.models.countTokens
    "vertex_gemini": f"{VERTEX}/google/models/gemini-3.5-flash:countTokens",
    # Google Cloud, "Count tokens for Claude models": one endpoint, the model in the body
    "vertex_anthropic": f"{VERTEX}/anthropic/models/count-tokens:rawPredict",
    # Bedrock CountTokens, the profile's base model (the mock's stats show the path decoded)
    "bedrock": "/model/anthropic.claude-sonnet-4-6/count-tokens",
}
COUNT_PAIRS = [(c, b) for c in COUNT_CLIENTS for b in COUNT_BACKENDS]


def count(gateway: Stack, client: str, model: str, text: str) -> tuple[int, dict[str, str]]:
    """(input tokens, response headers) of a count by ``client``'s SDK."""
    if client == "anthropic":
        r = ant(gateway).messages.with_raw_response.count_tokens(
            model=model, system="be brief", messages=[{"role": "user", "content": text}]
        )
        return r.parse().input_tokens, dict(r.headers)
    if client == "gemini":
        g = gm(gateway).models.count_tokens(model=model, contents=text)
        assert g.total_tokens is not None and g.sdk_http_response is not None
        return g.total_tokens, dict(g.sdk_http_response.headers or {})
    o = oa(gateway).responses.input_tokens.with_raw_response.count(model=model, input=text)
    return o.parse().input_tokens, dict(o.headers)


@pytest.mark.parametrize(("client", "backend"), COUNT_PAIRS, ids=[f"{c}-{b}" for c, b in COUNT_PAIRS])
def test_count(gateway: Stack, mocks: MockAdmin, client: str, backend: str) -> None:
    """Every counting client against every backend: forwarded (translated) to the backend's
    counting endpoint where it has one, else the gateway's estimate, marked as such."""
    text = "count these words " * 25  # 450 characters: about 112 tokens by the estimate
    tokens, headers = count(gateway, client, COUNT_BACKENDS[backend], text)
    headers = {k.lower(): v for k, v in headers.items()}
    if backend == "openai":
        assert headers[ESTIMATE_HEADER] == "estimate"
        assert 100 <= tokens <= 140
        assert all(mocks.stats(p)["requests"] == 0 for p in ("openai", "anthropic", "gemini"))
        return
    assert ESTIMATE_HEADER not in headers
    assert tokens >= 75  # the mock's count: words of every text
    req = sent(mocks, backend)
    assert req["path"] == COUNT_PATHS[backend]
    if backend == "anthropic":
        assert req["body"]["model"] == "claude-sonnet-4-6" and "max_tokens" not in req["body"]
    elif backend == "openai_responses":
        assert req["body"]["model"] == "gpt-5-mini" and "store" not in req["body"]
    elif backend == "gemini":
        assert req["body"]["generateContentRequest"]["model"] == "models/gemini-3.5-flash"
    else:
        assert_cloud_count(req["body"], backend)


def assert_cloud_count(body: dict[str, Any], backend: str) -> None:
    """A cloud counter's body: its counting endpoint's form, nothing of generation."""
    if backend == "vertex_gemini":  # Vertex's CountTokensRequest: the fields themselves
        assert "contents" in body and "generateContentRequest" not in body and "model" not in body
    elif backend == "vertex_anthropic":  # Anthropic's count body, the model in it
        assert body["model"] == "claude-sonnet-4-6" and body["messages"] and "max_tokens" not in body
    else:  # CountTokensInput's converse member: the input side of a Converse request
        assert list(body) == ["input"] and body["input"]["converse"]["messages"]
        assert "inferenceConfig" not in body["input"]["converse"]


FAILOVER_CASES = [(p, c) for p in CLOUD_COUNTERS for c in COUNT_CLIENTS]


@pytest.mark.parametrize(("primary", "client"), FAILOVER_CASES, ids=[f"{p}-{c}" for p, c in FAILOVER_CASES])
def test_count_fails_over_across_cloud_counters(
    gateway: Stack, mocks: MockAdmin, primary: str, client: str
) -> None:
    """A count whose primary cloud fails (503) goes to the next backend's counting endpoint,
    rebuilt for it (a Vertex Claude body read back as Converse for Bedrock, signed over its
    final body; a Converse one as Gemini's ...): the client gets that provider's count."""
    mocks.fault(primary, mode="error", status=503)
    chain = [primary, *(p for p in CLOUD_COUNTERS if p != primary)]
    tokens, headers = count(gateway, client, failover_model(primary, client), "fail over these words")
    headers = {k.lower(): v for k, v in headers.items()}
    assert ESTIMATE_HEADER not in headers
    assert tokens >= 4  # the next backend's count
    assert mocks.stats(primary)["requests"] >= 1 and sent(mocks, primary)["path"] == COUNT_PATHS[primary]
    second = chain[1]
    req = sent(mocks, second)
    assert req["path"] == COUNT_PATHS[second]
    assert_cloud_count(req["body"], second)


def test_count_fails_over_to_another_counting_backend(gateway: Stack, mocks: MockAdmin) -> None:
    mocks.fault("anthropic", mode="error", status=503)
    r = ant(gateway).messages.count_tokens(
        model=COUNTS_ANTHROPIC, messages=[{"role": "user", "content": "hi"}]
    )
    assert r.input_tokens > 0
    assert sent(mocks, "gemini")["path"].endswith(":countTokens")


def test_count_of_an_invalid_request_is_a_400_in_the_client_dialect(gateway: Stack, mocks: MockAdmin) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(gateway).messages.count_tokens(
            model=COUNTS_ANTHROPIC, messages=[{"role": "robot", "content": "x"}]
        )
    assert "role" in e.value.message
    assert mocks.stats("anthropic")["requests"] == 0


# ---------------------------------------------------------------------------- the README's table

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- operations-matrix:begin -->", "<!-- operations-matrix:end -->"
LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gemini": "Gemini",
    "openai_responses": "OpenAI Responses",
    "vertex_gemini": "Gemini on Vertex AI",
    "vertex_anthropic": "Claude on Vertex AI",
    "bedrock": "Bedrock",
}


def operations_markdown() -> str:
    """The README table of embeddings and token counting: one row per client x backend, each
    cell the test that covers it (a count on a backend without a counting endpoint is estimated)."""
    rows = ["| client SDK | backend | embeddings | token count |", "|---|---|---|---|"]
    for client in ("openai", "gemini", "anthropic", "openai_responses"):
        for backend in ("openai", "anthropic", "gemini", "openai_responses", *CLOUD_COUNTERS):
            embed = f"`test_embed[{client}-{backend}]`" if (client, backend) in EMBED_PAIRS else "—"
            if (client, backend) in COUNT_PAIRS:
                how = " (estimate)" if backend == "openai" else ""
                if backend in CLOUD_COUNTERS:  # failing over to the next cloud counter
                    how = f", `test_count_fails_over_across_cloud_counters[{backend}-{client}]`"
                cnt = f"`test_count[{client}-{backend}]`{how}"
            else:
                cnt = "—"
            if embed != "—" or cnt != "—":
                rows.append(f"| {LABELS[client]} | {LABELS[backend]} | {embed} | {cnt} |")
    return "\n".join(rows)


def test_readme_operations_matrix_is_generated() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the operations matrix markers"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == operations_markdown(), "README table is stale: run python -m tests.test_embeddings_e2e"


if __name__ == "__main__":
    print(operations_markdown())
