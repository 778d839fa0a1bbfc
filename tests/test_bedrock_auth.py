"""AWS credentials and SigV4 for Bedrock providers, and their config, without the stack.

Nothing here reaches AWS: credentials come from environment variables and a temporary
shared credentials file, the instance metadata service is disabled, and signatures are
checked against botocore's own ``SigV4Auth.add_auth``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials, RefreshableCredentials
from hypothesis import given
from hypothesis import strategies as st

from ext_proc.config import ConfigError, GatewayConfig, parse_config
from ext_proc.dialects import DIALECTS
from ext_proc.dialects.bedrock_converse import aws, endpoint_region
from ext_proc.state import GatewayState

ROOT = Path(__file__).resolve().parent.parent
KEY_ID = "AKIDTESTEXAMPLE"
SECRET = "test-secret-never-logged"
TOKEN = "test-session-token-never-logged"

AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def _forget_sources() -> None:
    with aws._LOCK:
        for source in aws._SOURCES.values():
            source.stop()
        aws._SOURCES.clear()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No credentials but the test's own; no instance metadata; no source left from another test."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _forget_sources()
    yield tmp_path
    _forget_sources()


def config(provider: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    p = {
        "dialect": "bedrock",
        "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com",
        "aws_region": "us-east-1",
        **(provider or {}),
    }
    return {
        "providers": {"bedrock": p, **extra},
        "models": {"claude": {"backends": [{"provider": "bedrock", "model": "anthropic.claude-v2:1"}]}},
    }


def parsed(data: dict[str, Any]) -> GatewayConfig:
    return parse_config(yaml.safe_dump(data), "gw.yaml")


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parsed(data)
    return ei.value.problems


# ---- config -------------------------------------------------------------------------------------


def test_a_bedrock_provider_needs_no_api_key_and_takes_none() -> None:
    parsed(config())
    assert problems_of(config({"api_key_env": "BEDROCK_KEY"})) == [
        "gw.yaml: providers.bedrock: providers of dialect 'bedrock' authenticate with credentials of their own: "
        "remove api_key_env / api_key_file"
    ]


def test_aws_fields_belong_to_bedrock_providers() -> None:
    assert problems_of(config({"aws_region": None})) == [
        "gw.yaml: providers.bedrock.aws_region: required for providers of dialect 'bedrock'"
    ]
    openai = {
        "dialect": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "K",
        "aws_region": "us-east-1",
        "aws_profile": "p",
    }
    assert problems_of(config(openai=openai)) == [
        "gw.yaml: providers.openai.aws_region: only providers of dialect bedrock take it",
        "gw.yaml: providers.openai.aws_profile: only providers of dialect bedrock take it",
    ]
    assert any("aws_region" in p for p in problems_of(config({"aws_region": "Mars"})))


def test_the_region_signed_for_must_be_the_endpoints() -> None:
    """A signature scoped to another region than the endpoint's is refused by AWS on every
    request: a config error naming both, not a 403 at run time."""
    assert problems_of(config({"base_url": "https://bedrock-runtime.eu-west-1.amazonaws.com"})) == [
        "gw.yaml: providers.bedrock.base_url: https://bedrock-runtime.eu-west-1.amazonaws.com serves "
        "region 'eu-west-1' but aws_region is 'us-east-1': requests signed for 'us-east-1' are refused "
        "there; set aws_region: eu-west-1 or base_url: https://bedrock-runtime.us-east-1.amazonaws.com"
    ]
    for other in (
        "https://bedrock-runtime-fips.us-west-2.amazonaws.com",
        "https://vpce-0abc-1234.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com",
    ):
        [problem] = problems_of(config({"base_url": other}))
        assert "aws_region is 'us-east-1'" in problem and other in problem
    # Agreeing endpoints, and hosts that name no region (a proxy, a mock), are the operator's call.
    for fine in (
        "https://bedrock-runtime.us-east-1.amazonaws.com",
        "https://bedrock-runtime-fips.us-east-1.amazonaws.com",
        "https://llm-proxy.internal.example",
        "http://127.0.0.1:8080",
    ):
        parsed(config({"base_url": fine}))
    parsed(
        config(
            {"base_url": "https://bedrock-runtime.cn-north-1.amazonaws.com.cn", "aws_region": "cn-north-1"}
        )
    )


@given(
    st.from_regex(r"[a-z]{2}(-[a-z]{1,9}){1,2}-[1-9]", fullmatch=True),
    st.sampled_from(["bedrock-runtime", "bedrock-runtime-fips"]),
    st.sampled_from(["", "vpce."]),
    st.sampled_from([".amazonaws.com", ".amazonaws.com.cn"]),
    st.booleans(),
)
def test_endpoint_region_reads_every_runtime_host_form(
    region: str, service: str, vpce: str, suffix: str, upper: bool
) -> None:
    host = f"{'vpce-01-ab.' if vpce else ''}{service}.{region}.{vpce}{suffix.lstrip('.')}"
    url = f"https://{host.upper() if upper else host}/"
    assert endpoint_region(url) == region
    # Not Bedrock's runtime: another service, or the region only in a path.
    assert endpoint_region(f"https://bedrock.{region}.amazonaws.com") is None
    assert endpoint_region(f"https://proxy.example/bedrock-runtime.{region}.amazonaws.com") is None


def test_the_dialect_declares_what_config_checks() -> None:
    bedrock = DIALECTS["bedrock"]
    assert bedrock.needs_api_key is False and bedrock.provider_fields == {
        "aws_region": True,
        "aws_profile": False,
    }
    # The client-facing dialects take API keys and no cloud fields (the other clouds declare their own).
    assert all(
        DIALECTS[n].needs_api_key and not DIALECTS[n].provider_fields
        for n in ("openai", "anthropic", "gemini")
    )


def test_startup_fails_naming_the_provider_without_credentials() -> None:
    with pytest.raises(ConfigError) as ei:
        GatewayState(parsed(config()))
    [problem] = ei.value.problems
    assert problem.startswith(
        "gw.yaml: providers.bedrock: no AWS credentials found (looked in AWS_ACCESS_KEY_ID"
    )


def test_a_missing_profile_is_named(aws_env: Path) -> None:
    (aws_env / "credentials").write_text(
        f"[other]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
    )
    with pytest.raises(ConfigError) as ei:
        GatewayState(parsed(config({"aws_profile": "team"})))
    assert ei.value.problems == [
        "gw.yaml: providers.bedrock: aws_profile: the AWS profile 'team' is in neither the "
        "shared credentials file nor the config file"
    ]


def run_check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ext_proc", "check", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_loads_the_credentials(aws_env: Path) -> None:
    path = aws_env / "gw.yaml"
    path.write_text(yaml.safe_dump(config()))
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    failed = run_check(path, env)
    assert failed.returncode == 1
    assert "providers.bedrock: no AWS credentials found" in failed.stderr
    ok = run_check(path, {**env, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert ok.returncode == 0 and ": OK (1 providers, 1 models" in ok.stdout, ok.stderr
    assert SECRET not in ok.stdout + ok.stderr


# ---- loading and signing --------------------------------------------------------------------------------


def botocore_signature(
    creds: ReadOnlyCredentials,
    region: str,
    host: str,
    path: str,
    body: bytes,
    now: datetime,
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """What botocore's own signer (add_auth) writes for the same request at the same instant."""
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    req = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers={"host": host})
    SigV4Auth(creds, "bedrock", region).add_auth(req)
    assert req.headers["X-Amz-Date"] == headers["x-amz-date"]
    if creds.token:
        assert req.headers["X-Amz-Security-Token"] == headers["x-amz-security-token"]
    return req.headers["Authorization"]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["static", "temporary"])
def test_signature_is_botocores(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    creds = ReadOnlyCredentials(KEY_ID, SECRET, token)
    now = datetime(2025, 3, 1, 12, 30, 5, tzinfo=timezone.utc)
    path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    headers = aws.signature_headers(
        creds, "eu-west-3", "bedrock-runtime.eu-west-3.amazonaws.com", path, body, now
    )
    assert headers["x-amz-date"] == "20250301T123005Z"
    assert ("x-amz-security-token" in headers) == bool(token)
    assert headers["authorization"] == botocore_signature(
        creds, "eu-west-3", "bedrock-runtime.eu-west-3.amazonaws.com", path, body, now, headers, monkeypatch
    )
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20250301/eu-west-3/bedrock/aws4_request, SignedHeaders=host;x-amz-date"
    )
    # The payload hash covers the body: one byte more, another signature.
    assert (
        aws.signature_headers(
            creds, "eu-west-3", "bedrock-runtime.eu-west-3.amazonaws.com", path, body + b" ", now
        )["authorization"]
        != headers["authorization"]
    )


def test_the_dialect_signs_with_the_providers_profile(monkeypatch: pytest.MonkeyPatch, aws_env: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    (aws_env / "credentials").write_text(
        f"[team]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
        f"aws_session_token = {TOKEN}\n"
    )
    state = GatewayState(parsed(config({"aws_profile": "team"})))
    target = state.router.targets["bedrock/anthropic.claude-v2:1"]
    body = b'{"messages":[]}'
    headers = target.request_headers(True, body)
    assert headers[":path"] == "/model/anthropic.claude-v2%3A1/converse-stream"
    assert headers["content-type"] == "application/json" and headers["content-length"] == str(len(body))
    assert f"Credential={KEY_ID}/" in headers["authorization"]  # the profile wins over the environment
    assert headers["x-amz-security-token"] == TOKEN
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["authorization"]
    # The default chain reads the environment.
    default = GatewayState(parsed(config()))
    assert (
        "Credential=AKIDFROMENV/"
        in default.router.targets["bedrock/anthropic.claude-v2:1"].request_headers(False, body)[
            "authorization"
        ]
    )


def test_an_unloaded_source_sends_the_request_unsigned(caplog: pytest.LogCaptureFixture) -> None:
    provider = parsed(config()).providers["bedrock"]
    with caplog.at_level(logging.ERROR):
        assert DIALECTS["bedrock"].sign(provider, {":path": "/model/m/converse"}, b"{}") == {}
    assert "no AWS credentials loaded" in caplog.text


def test_a_source_is_kept_while_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert aws.load(None) is None
    first = aws._SOURCES[None]
    assert aws.load(None) is None and aws._SOURCES[None] is first  # a config reload: nothing to fetch
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated")
    assert aws.load(None) is None and aws._SOURCES[None] is not first
    assert aws.current(None) == ReadOnlyCredentials(KEY_ID, "rotated", None, None)


# ---- temporary credentials: refreshed in the background, signing never waits ---------------------


class SlowSTS:
    """A refresh that takes a while (a network call), handing out numbered credentials."""

    def __init__(self, delay: float):
        self.delay = delay
        self.calls = 0
        self.fail = False
        self.hold = threading.Lock()  # while a test holds it, a refresh cannot finish
        self.arrived = threading.Condition()
        self.blocked = 0  # refreshes started and not yet past ``hold``

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        with self.arrived:
            self.blocked += 1
            self.arrived.notify_all()
        with self.hold:
            self.blocked -= 1  # inside the lock: while a test holds it, this cannot happen
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError(f"STS unreachable (no {SECRET} here)")
        expiry = datetime.now(timezone.utc) + timedelta(minutes=5)  # always inside the 15-minute window
        return {
            "access_key": f"ASIA{self.calls}",
            "secret_key": f"{SECRET}-{self.calls}",
            "token": f"{TOKEN}-{self.calls}",
            "expiry_time": expiry.isoformat(),
        }


def test_temporary_credentials_refresh_off_the_request_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(aws, "REFRESH_POLL_S", 0.05)
    monkeypatch.setattr(aws, "RETRY_FIRST_S", 0.05)
    sts = SlowSTS(delay=0.3)
    creds = RefreshableCredentials.create_from_metadata(sts(), sts, "assume-role-with-web-identity")
    source = aws.CredentialSource("web", creds, creds.get_frozen_credentials(), "fp")
    aws._SOURCES["web"] = source
    assert source.refreshing
    first = aws.current("web")
    assert first is not None and first.access_key.startswith("ASIA")
    # Hold the background thread inside a refresh: signing meanwhile must not wait for it
    # (it would wait forever; the refresh ends only after the signer has answered).
    sts.hold.acquire()
    with sts.arrived:
        assert sts.arrived.wait_for(lambda: sts.blocked > 0, 10), "no refresh started"
    signed: list[ReadOnlyCredentials] = []

    def sign() -> None:
        creds_now = aws.current("web")
        assert creds_now is not None
        aws.signature_headers(creds_now, "us-east-1", "h", "/model/m/converse", b"{}")
        signed.append(creds_now)

    signer = threading.Thread(target=sign, daemon=True)
    signer.start()
    signer.join(30)
    released = not signer.is_alive()
    sts.hold.release()
    assert released and len(signed) == 1, "signing waited for a refresh in progress"
    deadline = time.monotonic() + 5
    while aws.current("web") == first and time.monotonic() < deadline:
        time.sleep(0.01)
    second = aws.current("web")
    assert second is not None and second != first, "the background refresh never replaced the credentials"
    # A failing refresh keeps the last credentials (and says so, without a secret).
    with caplog.at_level(logging.WARNING):
        sts.fail = True
        calls = sts.calls
        while sts.calls < calls + 2 and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert aws.current("web") is not None
        source.stop()
    assert "could not refresh the AWS credentials of the profile web" in caplog.text
    assert SECRET not in caplog.text.replace(f"no {SECRET} here", "") and TOKEN not in caplog.text


def _expiring_in(seconds: float | None) -> RefreshableCredentials:
    expiry = None if seconds is None else datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return RefreshableCredentials(KEY_ID, SECRET, TOKEN, expiry, lambda: {}, "test")


@pytest.mark.parametrize(
    ("left_s", "low", "high"),
    [
        (3600, aws.REFRESH_POLL_S, aws.REFRESH_POLL_S),  # long-lived: the regular poll
        (6, 1.9, 2.0),  # lives less than a poll: looked at again after a third of what is left
        (0.3, aws.MIN_POLL_S, aws.MIN_POLL_S),  # about to expire: never a busy loop
        (-5, aws.MIN_POLL_S, aws.MIN_POLL_S),  # expired (a refresh failing): as often as allowed
        (None, aws.REFRESH_POLL_S, aws.REFRESH_POLL_S),  # no expiry known
    ],
)
def test_the_refresh_poll_comes_within_a_credentials_life(
    left_s: float | None, low: float, high: float
) -> None:
    """Credentials that live seconds (inside botocore's 15-minute refresh window all their
    life) are replaced every third of their life, so none is signed with once expired."""
    assert low <= aws._next_poll(_expiring_in(left_s)) <= high


def test_loading_logs_no_secret(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        state = GatewayState(parsed(config()))
        state.router.targets["bedrock/anthropic.claude-v2:1"].request_headers(False, b"{}")
    assert "AWS credentials of the default chain loaded (env)" in caplog.text
    assert SECRET not in caplog.text and TOKEN not in caplog.text


def test_sources_are_shared_by_profile_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config reloads on the event loop and refresh threads touch the registry at once."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            assert aws.load(None) is None
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and aws.current(None) == ReadOnlyCredentials(KEY_ID, SECRET, None, None)
