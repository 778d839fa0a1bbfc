"""Bedrock backends through the real stack: failover to and from Bedrock, signatures per
attempt, event-stream failures before and after the first token, what clients see.

One stack: the default mock providers, a mock Bedrock provider (``bedrock``), a second
one whose stream guard is off (``bedrock-unguarded``), and ``bedrock-stale``: a Bedrock
provider whose profile holds the right key id with a wrong secret, pointed at a mock this
module starts with the real secret (so the mock refuses its signatures with a 403, as AWS
would). Two more on mocks of this module's: ``bedrock-session`` signs with temporary
credentials (a session token), and ``bedrock-wrong-region`` signs for another region than
its endpoint serves (a proxy in front of Bedrock hides the region from the config check),
refused as AWS refuses it. After all of it, no AWS secret, session token or signature is in
the stack's logs, metrics or client responses. Everything a client sends goes through the official SDKs' wire formats
(``tests.test_failover`` requests) and must come back with zero client errors where a
later tier can answer.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.stack import (
    AWS_KEY_ID,
    AWS_REGION,
    AWS_SECRET,
    aws_credentials,
    bedrock_provider,
    config_on_free_ports,
    start_stack,
    written_by,
)
from tests.test_failover import hammer, request_for, text_of
from tests.test_provider_headers import CLIENTS, check_withheld

UPSTREAM = "anthropic.claude-3-5-sonnet-20240620-v1:0"
N = 30
DIALECTS = ("openai", "anthropic", "gemini")


@pytest.fixture(scope="module")
def stale_mock() -> Iterator[BackgroundMocks]:
    """The AWS account behind ``bedrock-stale``: it knows the real secret of AWS_KEY_ID."""
    bg = start_in_thread(
        [MockSpec("bedrock-stale", "bedrock", 0, AWS_SECRET, key_id=AWS_KEY_ID, region=AWS_REGION)]
    )
    yield bg
    bg.stop()


# Temporary credentials (an assumed role's): the key id, secret and session token the mock of
# ``bedrock-session`` verifies signatures with, and the profile of the stack holds.
SESSION_KEY_ID = "ASIAGATEWAYSESSION"
SESSION_SECRET = "session-secret-access-key-never-shown"
SESSION_TOKEN = "session-token-never-shown-" + "Zm9vYmFy" * 8
WRONG_REGION = "us-west-2"  # what bedrock-wrong-region signs for; its endpoint serves AWS_REGION


@pytest.fixture(scope="module")
def aws_accounts() -> Iterator[BackgroundMocks]:
    """Bedrock in AWS_REGION for the test account (behind ``bedrock-wrong-region``), and for the
    role whose temporary credentials ``bedrock-session`` holds."""
    bg = start_in_thread(
        [
            MockSpec("bedrock-east", "bedrock", 0, AWS_SECRET, key_id=AWS_KEY_ID, region=AWS_REGION),
            MockSpec(
                "bedrock-session",
                "bedrock",
                0,
                SESSION_SECRET,
                key_id=SESSION_KEY_ID,
                session_token=SESSION_TOKEN,
                region=AWS_REGION,
            ),
        ]
    )
    yield bg
    bg.stop()


STREAM_FAULTS = {
    "throttling-event": {"mode": "stream_error", "status": 429},
    "unavailable-event": {"mode": "stream_error", "status": 503},
    "malformed-frame": {"mode": "stream_malformed"},
    "http-503": {"mode": "error", "status": 503},
    "http-429": {"mode": "rate_limit"},
}
ANTHROPIC_FAULTS = {
    "error-503": {"mode": "error", "status": 503},
    "overloaded-event": {"mode": "stream_error"},
}
STREAMS = {"plain": False, "streamed": True}
# (fault, mode): an overloaded event exists in streams only
ANTHROPIC_CASES = [("error-503", "plain"), ("error-503", "streamed"), ("overloaded-event", "streamed")]


def case(*parts: str) -> str:
    """A model (and backend-name suffix) of its own per test case: backend health and Envoy's
    outlier detection learned in one case must not make the next skip the backend under test."""
    return "-".join(parts)


def _backend(provider: str, model: str, name: str) -> dict[str, str]:
    return {"provider": provider, "model": model, "name": name}


def models() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dialect in DIALECTS:
        for fault, mode in ANTHROPIC_CASES:
            c = case("claude", fault, dialect, mode)  # Anthropic direct first, the same model on Bedrock next
            out[c] = {
                "backends": [
                    _backend("anthropic", "claude-sonnet-4-6", f"anthropic/{c}"),
                    _backend("bedrock", UPSTREAM, f"bedrock/{c}"),
                ]
            }
        for mode in STREAMS:
            c = case("stale", dialect, mode)  # a wrong secret first, a good Bedrock provider next
            out[c] = {
                "backends": [
                    _backend("bedrock-stale", UPSTREAM, f"bedrock-stale/{c}"),
                    _backend("bedrock", UPSTREAM, f"bedrock/{c}"),
                ]
            }
        for fault in STREAM_FAULTS:
            c = case("bedrock-first", fault, dialect)  # Bedrock first, OpenAI next
            out[c] = {
                "backends": [
                    _backend("bedrock", UPSTREAM, f"bedrock/{c}"),
                    _backend("openai", "gpt-5.5", f"openai/{c}"),
                ]
            }
        for mode in STREAMS:
            c = case("wrong-region", dialect, mode)  # signed for the wrong region first, a good one next
            out[c] = {
                "backends": [
                    _backend("bedrock-wrong-region", UPSTREAM, f"bedrock-wrong-region/{c}"),
                    _backend("bedrock", UPSTREAM, f"bedrock/{c}"),
                ]
            }
        for model in ("wrong-region-alone", "scan-refused"):  # nothing to fail over to
            c = case(model, dialect)
            out[c] = {"backends": [_backend("bedrock-wrong-region", UPSTREAM, f"bedrock-wrong-region/{c}")]}
        c = case("scan-stale", dialect)
        out[c] = {"backends": [_backend("bedrock-stale", UPSTREAM, f"bedrock-stale/{c}")]}
    out["session-first"] = {"backends": [{"provider": "bedrock-session", "model": UPSTREAM}]}
    out["bedrock-first"] = {
        "backends": [{"provider": "bedrock", "model": UPSTREAM}, {"provider": "openai", "model": "gpt-5.5"}]
    }
    out["bedrock-alone"] = {"backends": [{"provider": "bedrock-unguarded", "model": UPSTREAM}]}
    return out


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, stale_mock: BackgroundMocks, aws_accounts: BackgroundMocks
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("bedrock")
    (tmp / "aws-credentials").write_text(
        f"[stale]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = rotated-away-secret\n"
        f"[session]\naws_access_key_id = {SESSION_KEY_ID}\naws_secret_access_key = {SESSION_SECRET}\n"
        f"aws_session_token = {SESSION_TOKEN}\n"
    )
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["providers"]["bedrock"] = bedrock_provider()
    cfg["providers"]["bedrock-unguarded"] = bedrock_provider(guard_first_event=False)
    cfg["providers"]["bedrock-stale"] = {
        "dialect": "bedrock",
        "aws_region": AWS_REGION,
        "aws_profile": "stale",
        "base_url": f"http://127.0.0.1:{stale_mock.ports['bedrock-stale']}",
    }
    cfg["providers"]["bedrock-session"] = {
        "dialect": "bedrock",
        "aws_region": AWS_REGION,
        "aws_profile": "session",
        "base_url": f"http://127.0.0.1:{aws_accounts.ports['bedrock-session']}",
    }
    cfg["providers"]["bedrock-wrong-region"] = {  # the default chain: the test account's own key
        "dialect": "bedrock",
        "aws_region": WRONG_REGION,
        "base_url": f"http://127.0.0.1:{aws_accounts.ports['bedrock-east']}",
    }
    cfg["models"] = models()
    with aws_credentials(tmp):
        s = start_stack(tmp, config_on_free_ports(cfg))
    yield s
    s.stop()


@pytest.fixture
def admin(stack: Stack) -> Iterator[MockAdmin]:
    a = MockAdmin(stack)
    a.reset()
    yield a
    a.reset()


def _post(
    stack: Stack, dialect: str, model: str, stream: bool, text: str
) -> tuple[int, dict[str, str], bytes]:
    path, headers, body = request_for(dialect, model, stream, text)

    async def go() -> tuple[int, dict[str, str], bytes]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s,
            s.post(stack.base_url + path, json=body, headers=headers) as r,
        ):
            return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()

    return asyncio.run(go())


# ---- failover to and from Bedrock ------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("fault", "mode"), ANTHROPIC_CASES, ids=[f"{f}-{m}" for f, m in ANTHROPIC_CASES])
def test_anthropic_direct_fails_over_to_bedrock(
    stack: Stack, admin: MockAdmin, dialect: str, mode: str, fault: str
) -> None:
    """The failover attempt is re-translated into Converse and signed over that body (the mock checks)."""
    admin.fault("anthropic", **ANTHROPIC_FAULTS[fault])
    c = case("claude", fault, dialect, mode)
    out = asyncio.run(hammer(stack, dialect, c, STREAMS[mode], n=N, concurrency=8, expect_prefix="[bedrock:"))
    assert out.statuses == Counter({200: N}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({f"bedrock/{c}": N})
    assert admin.stats("anthropic")["faulted"] >= 1  # the primary was tried, and failed
    assert admin.stats("bedrock")["by_status"] == {"200": N}


@pytest.mark.parametrize("mode", list(STREAMS))
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_wrong_secret_fails_over_with_zero_client_errors(
    stack: Stack, admin: MockAdmin, stale_mock: BackgroundMocks, dialect: str, mode: str
) -> None:
    server = stale_mock.mocks.servers["bedrock-stale"]
    before = server.stats.by_status.get("403", 0)
    c = case("stale", dialect, mode)
    out = asyncio.run(hammer(stack, dialect, c, STREAMS[mode], n=N, concurrency=8, expect_prefix="[bedrock:"))
    assert out.statuses == Counter({200: N}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({f"bedrock/{c}": N})
    # The stale provider was tried and refused the signature, as AWS would (then skipped while it
    # cools down); every good attempt was signed again, for its own provider, over its own body.
    assert server.stats.by_status.get("403", 0) > before and set(server.stats.by_status) == {"403"}
    assert admin.stats("bedrock")["by_status"] == {"200": N}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fault", list(STREAM_FAULTS))
def test_a_bedrock_stream_failing_before_its_first_token_fails_over(
    stack: Stack, admin: MockAdmin, dialect: str, fault: str
) -> None:
    """An exception frame or a corrupt frame in place of the first event is held by the stream
    guard and turned into the attempt's status: Envoy fails over, the client never sees it."""
    admin.fault("bedrock", **STREAM_FAULTS[fault])
    c = case("bedrock-first", fault, dialect)
    out = asyncio.run(hammer(stack, dialect, c, True, n=N, concurrency=8, expect_prefix="[openai:"))
    assert out.statuses == Counter({200: N}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({f"openai/{c}": N})
    assert admin.stats("bedrock")["faulted"] >= 1


# ---- what clients see ---------------------------------------------------------------------------

ERROR_EVENT = {  # client dialect -> how its error event names (rate limit, bad gateway)
    "openai": ("rate_limit_exceeded", "server_error"),
    "anthropic": ("rate_limit_error", "api_error"),
    "gemini": ("RESOURCE_EXHAUSTED", "INTERNAL"),
}


def _stream_error(dialect: str, raw: bytes) -> dict[str, Any]:
    """The error event of a client stream (and nothing after it)."""
    blocks = [b for b in raw.decode().replace("\r\n", "\n").split("\n\n") if b.strip()]
    last = blocks[-1]
    data = json.loads(next(line[5:] for line in last.split("\n") if line.startswith("data:")))
    if dialect == "anthropic":
        assert last.startswith("event: error")
        return {"type": data["error"]["type"], "message": data["error"]["message"]}
    err = data["error"]
    return {
        "type": (err.get("code") or err["type"]) if dialect == "openai" else err["status"],
        "message": err["message"],
    }


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fault", ["throttling-event", "malformed-frame"])
def test_unguarded_stream_failures_are_error_events_in_the_clients_dialect(
    stack: Stack, admin: MockAdmin, dialect: str, fault: str
) -> None:
    """Without the guard (or once the stream started) the 200 has gone: the stream ends with a
    well-formed error event in the client's own dialect, never a hang or a silent end."""
    admin.fault("bedrock-unguarded", **STREAM_FAULTS[fault])
    status, headers, raw = _post(stack, dialect, "bedrock-alone", True, "hello")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    err = _stream_error(dialect, raw)
    throttled, malformed = ERROR_EVENT[dialect]
    if fault == "throttling-event":
        assert err == {"type": throttled, "message": "Too many requests, please wait before trying again."}
    else:
        assert err["type"] == malformed and "malformed event-stream frame" in err["message"]
    assert text_of(dialect, True, raw)[1] is False


@pytest.mark.parametrize("dialect", DIALECTS)
def test_streams_reach_clients_as_sse_without_provider_headers(
    stack: Stack, admin: MockAdmin, dialect: str
) -> None:
    status, headers, raw = _post(stack, dialect, "bedrock-first", True, "stream me please")
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")  # not the backend's event-stream framing
    assert text_of(dialect, True, raw) == (f"[bedrock:{UPSTREAM}] stream me please", True)
    assert headers["x-gateway-backend"] == f"bedrock/{UPSTREAM}"
    leaked = [h for h in headers if h.startswith(("x-amz", "x-amzn")) or h == "authorization"]
    assert not leaked
    plain = _post(stack, dialect, "bedrock-first", False, "hello")
    assert plain[0] == 200 and plain[1]["content-type"].startswith("application/json")


def test_what_converse_cannot_take_is_a_400_naming_the_field(stack: Stack, admin: MockAdmin) -> None:
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(
            model="bedrock-alone",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    ],
                }
            ],
        )
    assert ei.value.body["param"] == "messages[0].content[1]"  # type: ignore[index]
    assert "bedrock backend" in ei.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(
            model="bedrock-alone", messages=[{"role": "user", "content": "hi"}], seed=1
        )
    assert ei.value.body["param"] == "seed"  # type: ignore[index]
    assert admin.stats("bedrock-unguarded")["requests"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
def test_no_bedrock_header_reaches_a_client(
    stack: Stack, admin: MockAdmin, client: str, stream: bool
) -> None:
    """Bedrock's request id (and any x-amzn-*) reaches no client (tests/test_provider_headers.py)."""
    sent = check_withheld(stack, admin, "bedrock", client, "bedrock-first", stream)
    assert "x-amzn-requestid" in sent, sent


# ---- a request signed for the wrong region ------------------------------------------------------


@pytest.mark.parametrize("mode", list(STREAMS))
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_signature_for_the_wrong_region_fails_over(
    stack: Stack, admin: MockAdmin, aws_accounts: BackgroundMocks, dialect: str, mode: str
) -> None:
    """Bedrock refuses a signature scoped to another region than its own with a 403 (the config
    check cannot see the region behind a proxy's URL): the gateway's fault, failed over."""
    server = aws_accounts.mocks.servers["bedrock-east"]
    before = server.stats.by_status.get("403", 0)
    c = case("wrong-region", dialect, mode)
    out = asyncio.run(hammer(stack, dialect, c, STREAMS[mode], n=N, concurrency=8, expect_prefix="[bedrock:"))
    assert out.statuses == Counter({200: N}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({f"bedrock/{c}": N})
    assert server.stats.by_status.get("403", 0) > before and set(server.stats.by_status) == {"403"}


REFUSED = {  # client dialect -> the error type of a 502 (a provider refused the gateway's credentials)
    "openai": "server_error",
    "anthropic": "api_error",
    "gemini": "INTERNAL",
}


def _error(dialect: str, raw: bytes) -> tuple[str, str]:
    """(type, message) of a non-streamed error body in the client's dialect."""
    body = json.loads(raw)
    if dialect == "anthropic":
        assert body["type"] == "error"
        return body["error"]["type"], body["error"]["message"]
    err = body["error"]
    return (err["type"] if dialect == "openai" else err["status"]), err["message"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_wrong_region_with_nothing_to_fail_over_to_is_a_clear_error(
    stack: Stack, admin: MockAdmin, dialect: str
) -> None:
    """The client learns whose credentials were refused and AWS's reason, in its own dialect."""
    status, _, raw = _post(stack, dialect, case("wrong-region-alone", dialect), False, "hello")
    assert status == 502, raw
    kind, message = _error(dialect, raw)
    assert kind == REFUSED[dialect], raw
    assert f"backend 'bedrock-wrong-region/{case('wrong-region-alone', dialect)}'" in message, message
    assert "refused the gateway's credentials" in message and "scoped to a valid region" in message, message


# ---- no AWS secret anywhere ----------------------------------------------------------------------


def test_no_aws_secret_in_logs_metrics_or_responses(stack: Stack, admin: MockAdmin) -> None:
    """Last in this module, after all its Bedrock traffic, and with traffic of its own: answers
    signed with temporary credentials, and refused ones (a rotated secret, the wrong region).
    Neither secret access key, the session token, nor any signature is in the stack's logs
    (ext_proc's, Envoy's, the access log), its /metrics, or what clients got."""
    texts: dict[str, str] = {}
    for dialect in DIALECTS:
        for stream in (False, True):
            status, headers, raw = _post(stack, dialect, "session-first", stream, "signed with a session")
            assert status == 200, raw  # the session token was sent and verified by the mock
            assert text_of(dialect, stream, raw)[0] == f"[bedrock-session:{UPSTREAM}] signed with a session"
            texts[f"response {dialect} stream={stream}"] = json.dumps(headers) + raw.decode()
        for model in ("scan-refused", "scan-stale"):
            status, headers, raw = _post(stack, dialect, case(model, dialect), False, "refused")
            assert status == 502, raw
            texts[f"response {dialect} {model}"] = json.dumps(headers) + raw.decode()
    texts.update(written_by(stack, "bedrock-session/"))
    # What is scanned saw the traffic: the refusals were logged, the session answers logged and counted.
    assert "refused the gateway's credentials" in texts["ext_proc-0.log"]
    assert "bedrock-session/" in texts["access.log"]
    assert any("bedrock-session/" in t for n, t in texts.items() if n.startswith("metrics:"))
    secrets = {
        "secret access key": AWS_SECRET,
        "rotated secret": "rotated-away-secret",
        "session secret": SESSION_SECRET,
        "session token": SESSION_TOKEN,
        "a signature": "Signature=",
        "a security-token header": "x-amz-security-token",
    }
    leaks = [f"{what} in {name}" for name, text in texts.items() for what, s in secrets.items() if s in text]
    assert not leaks, leaks
