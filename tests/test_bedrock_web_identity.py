"""A Bedrock provider whose AWS credentials come from web identity (EKS IRSA, any OIDC provider),
through the real stack, while those credentials expire and are refreshed.

The mock Bedrock account (``gateway_tools.mocks.sts``) is also its STS: the gateway's ext_proc
gets ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE`` (a token of the mock's OIDC provider,
written as the kubelet writes it) and ``AWS_ENDPOINT_URL_STS`` naming the mock, and botocore's
credential chain calls ``AssumeRoleWithWebIdentity`` there. The credentials it issues live a few
seconds: inside botocore's 15-minute refresh window from the start, so the gateway's background
thread replaces them every third of their life while official SDK clients send traffic. The mock
refuses any request signed with expired credentials (403 ``ExpiredTokenException``, which would
fail the client's request: Bedrock is the model's only backend). Nothing the STS issued, nor the
identity token, may reach the stack's logs or /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import openai
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from ext_proc.dialects.bedrock_converse import aws
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.mocks.bedrock import _Bedrock
from gateway_tools.mocks.sts import STS
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY
from tests.stack import AWS_REGION, aws_credentials, config_on_free_ports, start_stack, written_by

ROLE = "arn:aws:iam::123456789012:role/llm-gateway"
UPSTREAM = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MODEL = "claude-web-identity"
LIFETIME_S = 9.0  # of each set of credentials: inside botocore's refresh window (15 min) all along
TRAFFIC_S = 12.0  # more than a lifetime: the credentials in use at the start expire meanwhile


@pytest.fixture(scope="module")
def account() -> Iterator[BackgroundMocks]:
    bg = start_in_thread(
        [MockSpec("bedrock-wi", "bedrock", 0, "", region=AWS_REGION, role_arn=ROLE, token_ttl_s=LIFETIME_S)]
    )
    yield bg
    bg.stop()


def sts_of(account: BackgroundMocks) -> STS:
    server = account.mocks.servers["bedrock-wi"]
    assert isinstance(server, _Bedrock) and server.sts is not None
    return server.sts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, account: BackgroundMocks) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("web-identity")
    token_file = tmp / "token"  # where EKS projects the service account's token
    token_file.write_text(sts_of(account).identity_token())
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["providers"]["bedrock-wi"] = {
        "dialect": "bedrock",
        "aws_region": AWS_REGION,
        "base_url": f"http://127.0.0.1:{account.ports['bedrock-wi']}",
    }
    cfg["models"][MODEL] = {"backends": [{"provider": "bedrock-wi", "model": UPSTREAM}]}
    with aws_credentials(  # no static keys anywhere: the environment's would come first in the chain
        tmp,
        static=False,
        AWS_ROLE_ARN=ROLE,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
        AWS_ROLE_SESSION_NAME="llm-gateway",
        AWS_ENDPOINT_URL_STS=f"http://127.0.0.1:{account.ports['bedrock-wi']}",
    ) as env:  # set in this process too: the supervisor checks credentials here
        s = start_stack(tmp, config_on_free_ports(cfg), env=env)
        with aws._LOCK:  # the supervisor's check loaded a source here: only the ext_proc's refresh
            checked = aws._SOURCES.pop(None, None)
        if checked is not None:
            checked.stop()
    yield s
    s.stop()


def _one(stack: Stack, k: int) -> str | None:
    """One request through an official SDK (OpenAI or Anthropic, streamed or not); what went
    wrong, or None."""
    text = f"request {k}"
    want = f"[bedrock-wi:{UPSTREAM}] {text}"
    stream = k % 2 == 1
    try:
        if k % 4 < 2:
            oa = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
            if stream:
                chunks = oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": text}], stream=True
                )
                got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                r = oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
                got = r.choices[0].message.content or ""
        else:
            an = anthropic.Anthropic(base_url=stack.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)
            msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": text}]
            if stream:
                with an.messages.stream(model=MODEL, max_tokens=64, messages=msgs) as s:
                    got = "".join(s.text_stream)
            else:
                m = an.messages.create(model=MODEL, max_tokens=64, messages=msgs)
                got = "".join(b.text for b in m.content if b.type == "text")
    except Exception as e:  # counted as a client error
        return f"{type(e).__name__}: {e}"
    return None if got == want else f"answer {got!r}"


def test_web_identity_credentials_are_refreshed_while_traffic_flows(
    stack: Stack, account: BackgroundMocks
) -> None:
    sts = sts_of(account)
    stats = account.mocks.servers["bedrock-wi"].stats
    issued_at_start = sts.issued
    deadline = time.monotonic() + TRAFFIC_S
    results: list[str | None] = []

    def worker(w: int) -> None:
        k = w
        while time.monotonic() < deadline:
            results.append(_one(stack, k))
            k += 4

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    errors = [r for r in results if r is not None]
    assert results and not errors, errors[:3]
    # Every request reached Bedrock signed with credentials the STS issued and still valid.
    assert stats.by_status == {"200": len(results)}, stats.by_status
    assert not sts.expired_used, f"signed with expired credentials: {dict(sts.expired_used)}"
    assert sum(sts.used.values()) == len(results)
    # The credentials changed while traffic flowed, by the background refresh: new ones came
    # from the STS every third of a lifetime or so, not once per request.
    assert len(sts.used) >= 2, dict(sts.used)
    refreshed = sts.issued - issued_at_start
    assert refreshed >= 2
    assert refreshed < len(results) / 2, (refreshed, len(results))
    assert not sts.refused, dict(sts.refused)


def test_no_credential_of_the_sts_in_logs_or_metrics(stack: Stack, account: BackgroundMocks) -> None:
    """After the traffic: no secret access key, session token or identity token the STS handed
    out is in the stack's logs (ext_proc's, Envoy's, the access log) or its /metrics."""
    sts = sts_of(account)
    assert _one(stack, 0) is None
    texts = written_by(stack, "bedrock-wi/")
    # What is scanned saw it: the credentials were loaded by web identity, the traffic logged and counted.
    assert (
        "AWS credentials of the default chain loaded (assume-role-with-web-identity"
        in texts["ext_proc-0.log"]
    )
    assert "bedrock-wi/" in texts["access.log"]
    assert any("bedrock-wi/" in t for n, t in texts.items() if n.startswith("metrics:"))
    token_file = Path(stack.env["AWS_WEB_IDENTITY_TOKEN_FILE"])
    secrets = {"the identity token": token_file.read_text().strip()}
    for key, issued in sts.credentials.items():
        secrets[f"the secret of {key}"] = issued.secret
        secrets[f"the session token of {key}"] = issued.token
    assert len(secrets) >= 5
    leaks = [f"{what} in {name}" for name, text in texts.items() for what, s in secrets.items() if s in text]
    assert not leaks, leaks
    assert "Signature=" not in "".join(texts.values())
