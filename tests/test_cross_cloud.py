"""One model on three clouds: Claude from Anthropic direct, then on Bedrock, then on Vertex.

Every attempt lands on a different wire (Anthropic Messages with an API key; Converse signed
with SigV4 over its own body; Anthropic-on-Vertex with a Google access token and the model in
the path), so each one is translated, authenticated and signed again for the backend it lands
on. Under concurrent load from the four official SDK clients (Chat Completions, Messages,
Gemini, Responses), plain, streamed and with tools, each fault of the failover tests
(test_failover.FAULTS, on both tiers before Vertex, and the clouds' own: 529, throttling, in-band
stream errors) leaves no client-visible error: the answer comes from the first tier that can give
it, also with Vertex first in the chain. A refused credential on two clouds at once (a revoked
Anthropic key, a rotated AWS secret) is the providers' fault, failed over and counted in the metric
the credential alert reads. With Vertex faulted too the chain is exhausted: each client gets an
honest error in its own dialect, within the per-try timeouts.

Nothing reaches a real cloud: Bedrock and Vertex are the mocks of tests/stack.py and
tests/cloud.py, which check signatures and tokens as the services do.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from tests.test_failover import FAULTS
from tests.test_observability import metrics
from tests.test_translation_matrix import ADAPTERS, TOOL, Ask, Result, _error_of

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
CLAUDE = "claude-sonnet-4-6"
ON_BEDROCK = "anthropic.claude-sonnet-4-6"
CLIENTS = ("openai", "anthropic", "gemini", "openai_responses")
N = 24  # requests per client and case: a third plain, a third streamed, a third streamed with tools
CONCURRENCY = 8

THREE_CLOUDS = ("anthropic", "bedrock", "vertex_anthropic")


@dataclass(frozen=True)
class Case:
    """Faults per mock provider, the chain's providers in failover order, and the provider that
    answers (None: every tier is faulted, the client gets the chain's error)."""

    faults: dict[str, dict[str, Any]]
    answers: str | None
    order: tuple[str, ...] = THREE_CLOUDS
    # A timeout fault needs a per-try timeout it is beyond (test_failover's 1 s); others never wait.
    per_try_ms: int = 5000


def both_first(fault: dict[str, Any]) -> Case:
    """``fault`` on Anthropic direct and on Bedrock: Vertex answers."""
    per_try = 1000 if fault["mode"] in ("stall", "slow") else 5000
    return Case({"anthropic": fault, "bedrock": fault}, "vertex_anthropic", per_try_ms=per_try)


CASES: dict[str, Case] = {
    "anthropic-down": Case({"anthropic": {"mode": "down"}}, "bedrock"),
    "anthropic-and-bedrock-failing": Case(
        {"anthropic": {"mode": "error", "status": 529}, "bedrock": {"mode": "error", "status": 503}},
        "vertex_anthropic",
    ),
    "anthropic-and-bedrock-throttled": Case(
        {"anthropic": {"mode": "rate_limit", "retry_after": 30}, "bedrock": {"mode": "rate_limit"}},
        "vertex_anthropic",
    ),
    # Both fail in band, after a 200: an overloaded_error event, a throttlingException frame.
    "in-band-stream-errors": Case(
        {"anthropic": {"mode": "stream_error"}, "bedrock": {"mode": "stream_error", "status": 429}},
        "vertex_anthropic",
    ),
    # Anthropic refuses the gateway's key; the AWS profile holds a rotated-away secret.
    "credentials-refused": Case(
        {"anthropic": {"mode": "error", "status": 401}},
        "vertex_anthropic",
        order=("anthropic", "bedrock-stale", "vertex_anthropic"),
    ),
    # Every fault mode of the failover tests, on both tiers before Vertex.
    **{f"first-two-{name}": both_first(fault) for name, fault in FAULTS.items()},
    # Vertex first: its faults are failed over like any tier's, to Bedrock, then Anthropic.
    "vertex-first-down": Case(
        {"vertex_anthropic": {"mode": "down"}}, "bedrock", order=("vertex_anthropic", "bedrock", "anthropic")
    ),
    "vertex-first-and-bedrock-failing": Case(
        {"vertex_anthropic": {"mode": "error", "status": 500}, "bedrock": {"mode": "rate_limit"}},
        "anthropic",
        order=("vertex_anthropic", "bedrock", "anthropic"),
    ),
}
# Every tier faulted, Vertex too: the chain is exhausted and the client gets the last tier's error
# in its own dialect: case -> (the case, the status, the error type per client dialect, and whether
# each request is streamed). A stalled stream waits out each tier's per-try idle timer plus its 5 s
# backstop (see SLOW_STREAMS): one is asked, by test_a_stream_stalled_on_every_cloud_is_not_a_hang.
EXHAUSTED: dict[str, tuple[Case, int, dict[str, str], tuple[bool, ...]]] = {
    "all-three-overloaded": (
        Case(
            {
                "anthropic": {"mode": "error", "status": 529},
                "bedrock": {"mode": "error", "status": 503},
                "vertex_anthropic": {"mode": "error", "status": 503},
            },
            None,
        ),
        503,
        {
            "openai": "server_error",
            "anthropic": "overloaded_error",
            "gemini": "UNAVAILABLE",
            "openai_responses": "server_error",
        },
        (False, True, False, True),
    ),
    "all-three-stalled": (
        Case({p: {"mode": "stall"} for p in THREE_CLOUDS}, None, per_try_ms=1000),
        504,
        {
            "openai": "server_error",
            "anthropic": "timeout_error",
            "gemini": "DEADLINE_EXCEEDED",
            "openai_responses": "server_error",
        },
        (False,),
    ),
}
ALL_CASES = {**CASES, **{name: case for name, (case, *_) in EXHAUSTED.items()}}
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
    return [{"provider": p, "model": UPSTREAM[p], "name": f"{p}/{m}"} for p in ALL_CASES[case].order]


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
            "per_try_timeout_ms": c.per_try_ms,
            "per_try_idle_timeout_ms": c.per_try_ms,
        }
        for case, c in ALL_CASES.items()
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


# A known gap, the same in test_failover's ``slow``/streamed case: a stream's attempt is bounded
# before its first byte by Envoy's per-try idle timer, which backs up the router stage's own by
# BACKSTOP_GRACE_MS (5 s) - so a provider 3 s slow to answer a stream is waited for, not failed
# over at per_try_idle_timeout_ms. Strict: the day it is fixed, this says so.
ONE_CLIENT = {"first-two-slow": "openai", "first-two-stall": "anthropic"}
SLOW_STREAMS = pytest.mark.xfail(
    strict=True,
    reason="streams: a provider slow before its headers is failed over only after "
    "per_try_idle_timeout_ms + BACKSTOP_GRACE_MS (test_failover slow-streamed fails the same way)",
)


@pytest.mark.parametrize(
    ("case", "client"),
    [
        # The slow case's gap is the same for every client dialect: one shows it. A stall costs
        # each tier its idle timer (12 s a case): the failover it shows is the same for every
        # client too, so one client runs it.
        pytest.param(c, client, marks=SLOW_STREAMS) if c == "first-two-slow" else (c, client)
        for c in CASES
        for client in CLIENTS
        if c not in ONE_CLIENT or client == ONE_CLIENT[c]
    ],
)
def test_claude_fails_over_across_three_clouds_under_load(
    clouds: Stack, admin: MockAdmin, stale_account: BackgroundMocks, case: str, client: str
) -> None:
    c = CASES[case]
    faults, answers = c.faults, c.answers
    assert answers is not None
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
    assert Counter(r.backend for _, r in results) == Counter({f"{answers}/{model}": N}), [
        (a.stream, a.tools, r.backend) for a, r in results
    ]
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
    if case == "credentials-refused":  # the rotated secret was tried, and its signatures refused
        assert stale_account.mocks.servers["bedrock-stale"].stats.by_status.get("403", 0) >= 1
        refusals = credential_refusals(clouds)
        for backend in (f"anthropic/{model}", f"bedrock-stale/{model}"):
            assert refusals.get(backend, 0) > refusals_before.get(backend, 0), (backend, refusals)


def ask_all_faulted(
    clouds: Stack, case: str, client: str, streams: tuple[bool, ...]
) -> list[tuple[int, str, str]]:
    """Ask ``client``'s model of ``case`` once per entry of ``streams``, one after another (each
    pays the whole chain); every one must fail: (status, error type, message) of each."""
    sdk = ADAPTERS[client](clouds)
    errors = []
    for n, stream in enumerate(streams):
        ask = Ask(model_of(case, client), f"question number {n}", stream=stream)
        try:
            sdk.ask(ask)
        except Exception as e:  # the SDK's status error, read here
            errors.append(_error_of(client, e))
        else:
            raise AssertionError(f"{case}: {ask} was answered with every tier faulted")
    return errors


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(EXHAUSTED))
def test_vertex_failing_too_is_an_honest_error_in_the_clients_dialect(
    clouds: Stack, admin: MockAdmin, case: str, client: str
) -> None:
    """Vertex, the last tier, faulted as well: every tier was tried, and each client gets the
    chain's error in its own dialect (the status and error type its SDK expects), soon: a stall
    on every cloud is bounded by the per-try timeouts, never a hang."""
    c, status, kinds, streams = EXHAUSTED[case]
    for provider, fault in c.faults.items():
        admin.fault(provider, **fault)
    started = time.monotonic()
    errors = ask_all_faulted(clouds, case, client, streams)
    took = time.monotonic() - started
    assert [(s, k) for s, k, _ in errors] == [(status, kinds[client])] * len(streams), errors
    assert all(message for _, _, message in errors), errors
    for provider in THREE_CLOUDS:  # each cloud was really tried, Vertex last
        assert admin.stats(provider)["faulted"] >= 1, provider
    # Each request over three tiers: within their per-try timeouts, with room for a loaded machine.
    assert took < len(streams) * (len(THREE_CLOUDS) * c.per_try_ms / 1000 + 2), took


def test_a_stream_stalled_on_every_cloud_is_not_a_hang(clouds: Stack, admin: MockAdmin) -> None:
    """A stream no cloud answers ends with a 504 in the client's dialect once each tier's idle
    timer (per_try_idle_timeout_ms, backed up 5 s later by Envoy's) has run out."""
    c = EXHAUSTED["all-three-stalled"][0]
    for provider, fault in c.faults.items():
        admin.fault(provider, **fault)
    started = time.monotonic()
    [(status, kind, message)] = ask_all_faulted(clouds, "all-three-stalled", "openai", (True,))
    took = time.monotonic() - started
    assert (status, kind) == (504, "server_error") and "could answer" in message, message
    assert took < len(THREE_CLOUDS) * (c.per_try_ms / 1000 + 5) + 3, took
