"""One model on three clouds: Claude from Anthropic direct, then on Bedrock, then on Vertex.

Every attempt lands on a different wire (Anthropic Messages with an API key; Converse signed
with SigV4 over its own body; Anthropic-on-Vertex with a Google access token and the model in
the path), so each one is translated, authenticated and signed again for the backend it lands
on. Under concurrent load from the four official SDK clients (Chat Completions, Messages,
Gemini, Responses), plain, streamed and with tools, each fault of the failover tests leaves no
client-visible error: the answer comes from the first tier that can give it. A refused
credential on two clouds at once (a revoked Anthropic key, a rotated AWS secret) is the
providers' fault, failed over and counted in the metric the credential alert reads.

Nothing reaches a real cloud: Bedrock and Vertex are the mocks of tests/stack.py and
tests/cloud.py, which check signatures and tokens as the services do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.supervisor import Stack
from tests.cloud import cloud_providers, with_clouds
from tests.conftest import MockAdmin, clean_mocks
from tests.stack import AWS_KEY_ID, AWS_REGION, AWS_SECRET, aws_credentials, bedrock_provider, start_stack
from tests.test_observability import metrics
from tests.test_translation_matrix import ADAPTERS, TOOL, Ask, Result

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
CLAUDE = "claude-sonnet-4-6"
ON_BEDROCK = "anthropic.claude-sonnet-4-6"
CLIENTS = ("openai", "anthropic", "gemini", "openai_responses")
N = 24  # requests per client and case: a third plain, a third streamed, a third streamed with tools
CONCURRENCY = 8

# case -> (faults per mock provider, the Bedrock provider of the chain, the tier that answers)
CASES: dict[str, tuple[dict[str, dict[str, Any]], str, str]] = {
    "anthropic-down": ({"anthropic": {"mode": "down"}}, "bedrock", "bedrock"),
    "anthropic-and-bedrock-failing": (
        {"anthropic": {"mode": "error", "status": 529}, "bedrock": {"mode": "error", "status": 503}},
        "bedrock",
        "vertex_anthropic",
    ),
    "anthropic-and-bedrock-throttled": (
        {"anthropic": {"mode": "rate_limit", "retry_after": 30}, "bedrock": {"mode": "rate_limit"}},
        "bedrock",
        "vertex_anthropic",
    ),
    # Both fail in band, after a 200: an overloaded_error event, a throttlingException frame.
    "in-band-stream-errors": (
        {"anthropic": {"mode": "stream_error"}, "bedrock": {"mode": "stream_error", "status": 429}},
        "bedrock",
        "vertex_anthropic",
    ),
    # Anthropic refuses the gateway's key; the AWS profile holds a rotated-away secret.
    "credentials-refused": (
        {"anthropic": {"mode": "error", "status": 401}},
        "bedrock-stale",
        "vertex_anthropic",
    ),
}
# An in-band error exists in streams only: a plain request to those mocks is answered.
STREAMED_ONLY = {"in-band-stream-errors"}
UPSTREAM = {
    "anthropic": CLAUDE,
    "bedrock": ON_BEDROCK,
    "bedrock-stale": ON_BEDROCK,
    "vertex_anthropic": CLAUDE,
}


def model_of(case: str, client: str) -> str:
    """A model (and backend names) per case and client: health learned by one test must not make
    the next skip the backend it faults."""
    return f"claude-{case}-{client}"


def chain(case: str, client: str) -> list[dict[str, str]]:
    m = model_of(case, client)
    bedrock = CASES[case][1]
    return [
        {"provider": p, "model": UPSTREAM[p], "name": f"{p}/{m}"}
        for p in ("anthropic", bedrock, "vertex_anthropic")
    ]


@pytest.fixture(scope="module")
def stale_account() -> Iterator[BackgroundMocks]:
    """The AWS account behind ``bedrock-stale``: it knows the real secret of AWS_KEY_ID, so the
    rotated-away one in the stale profile is refused with a 403 as AWS would."""
    bg = start_in_thread(
        [MockSpec("bedrock-stale", "bedrock", 0, AWS_SECRET, key_id=AWS_KEY_ID, region=AWS_REGION)]
    )
    yield bg
    bg.stop()


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory, stale_account: BackgroundMocks) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("cross-cloud")
    (tmp / "aws-credentials").write_text(
        f"[stale]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = rotated-away-secret\n"
    )
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["providers"]["bedrock"] = bedrock_provider()
    cfg["providers"]["vertex_anthropic"] = cloud_providers()["vertex_anthropic"]
    cfg["models"] = {
        model_of(case, client): {
            "backends": chain(case, client),
            "per_try_timeout_ms": 5000,
            "per_try_idle_timeout_ms": 5000,
        }
        for case in CASES
        for client in CLIENTS
    }
    cfg, env = with_clouds(cfg, tmp)
    # Added after the ports are chosen: its mock is this module's, already listening.
    cfg["providers"]["bedrock-stale"] = {
        "dialect": "bedrock",
        "aws_region": AWS_REGION,
        "aws_profile": "stale",
        "base_url": f"http://127.0.0.1:{stale_account.ports['bedrock-stale']}",
    }
    with aws_credentials(tmp):
        stack = start_stack(tmp, cfg, env)
    yield stack
    stack.stop()


@pytest.fixture
def admin(clouds: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(clouds) as a:
        yield a


def asks(model: str, streamed_only: bool) -> list[Ask]:
    """N requests of three shapes (two if ``streamed_only``), each with its own text (so a
    mixed-up answer shows)."""
    out = []
    for n in range(N):
        shape = 1 + n % 2 if streamed_only else n % 3
        out.append(
            Ask(
                model,
                f"question number {n}",
                stream=shape > 0,
                system="Answer briefly." if shape == 1 else None,
                tools=shape == 2,
                tool_choice=TOOL if shape == 2 else None,
            )
        )
    return out


def credential_refusals(stack: Stack) -> dict[str, float]:
    """``llm_gateway_credential_refusals_total`` by backend: the series the credential alert reads."""
    alert = next(
        r
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
        if r.get("alert") == "LLMGatewayCredentialRefused"
    )
    assert "llm_gateway_credential_refusals_total" in alert["expr"]
    out: Counter[str] = Counter()
    for (name, labels), value in metrics(stack).items():
        if name == "llm_gateway_credential_refusals_total":
            out[dict(labels)["backend"]] += value
    return dict(out)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(CASES))
def test_claude_fails_over_across_three_clouds_under_load(
    clouds: Stack, admin: MockAdmin, stale_account: BackgroundMocks, case: str, client: str
) -> None:
    faults, bedrock, answers = CASES[case]
    for provider, fault in faults.items():
        admin.fault(provider, **fault)
    model = model_of(case, client)
    refusals_before = credential_refusals(clouds)
    sdk = ADAPTERS[client](clouds)

    def one(a: Ask) -> tuple[Ask, Result | BaseException]:
        try:
            return a, sdk.ask(a)
        except Exception as e:  # every failure is reported below, with its request
            return a, e

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(one, asks(model, case in STREAMED_ONLY)))

    failed = [(a.text, repr(r)) for a, r in outcomes if isinstance(r, BaseException)]
    assert not failed, failed[:3]
    results = [(a, r) for a, r in outcomes if isinstance(r, Result)]
    assert Counter(r.backend for _, r in results) == Counter({f"{answers}/{model}": N})
    prefix = f"[{answers}:{UPSTREAM[answers]}]"
    for a, r in results:
        if a.tools:  # a forced tool call, its arguments parsed from the client's own dialect
            assert [c.name for c in r.calls] == [TOOL], (a, r)
            assert isinstance(r.calls[0].args, dict) and "echo" in r.calls[0].args, (a, r)
        else:
            assert r.text == f"{prefix} {a.text}", (a, r)
    assert admin.stats(answers)["by_status"] == {"200": N}
    for provider in faults:  # each faulted tier was really tried before the next answered
        assert admin.stats(provider)["faulted"] >= 1, provider
    if bedrock == "bedrock-stale":  # the rotated secret was tried, and its signatures refused
        assert stale_account.mocks.servers["bedrock-stale"].stats.by_status.get("403", 0) >= 1
    if case == "credentials-refused":
        refusals = credential_refusals(clouds)
        for backend in (f"anthropic/{model}", f"{bedrock}/{model}"):
            assert refusals.get(backend, 0) > refusals_before.get(backend, 0), (backend, refusals)
