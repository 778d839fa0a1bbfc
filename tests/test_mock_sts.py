"""The mock AWS STS of a mock Bedrock account (``gateway_tools.mocks.sts``), driven by botocore.

botocore's ``sts`` client serialises ``AssumeRoleWithWebIdentity`` from the service model and
parses the answer (and the query protocol's error document) as every AWS SDK does; its credential
chain (web identity) reaches the mock through the standard endpoint override
``AWS_ENDPOINT_URL_STS``. Raw form posts are used for what the SDK will not send (missing
parameters, values its own validation refuses). Each rule the mock enforces is tested here.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import Session

from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.mocks.bedrock import _Bedrock
from gateway_tools.mocks.sts import STS

NAME = "bdrk-sts"
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/llm-gateway"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
TTL_S = 3.0


@pytest.fixture(scope="module")
def mocks() -> Iterator[BackgroundMocks]:
    bg = start_in_thread([MockSpec(NAME, "bedrock", 0, "", region=REGION, role_arn=ROLE, token_ttl_s=TTL_S)])
    yield bg
    bg.stop()


def server(mocks: BackgroundMocks, name: str = NAME) -> _Bedrock:
    s = mocks.mocks.servers[name]
    assert isinstance(s, _Bedrock) and s.sts is not None
    return s


def sts_of(mocks: BackgroundMocks, name: str = NAME) -> STS:
    sts = server(mocks, name).sts
    assert sts is not None
    return sts


def url(mocks: BackgroundMocks) -> str:
    return f"http://127.0.0.1:{mocks.ports[NAME]}"


def sts_client(mocks: BackgroundMocks) -> Any:
    """botocore's STS client, unsigned as its web identity fetcher makes it."""
    return Session().create_client(
        "sts",
        region_name=REGION,
        endpoint_url=url(mocks),
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )


def bedrock(mocks: BackgroundMocks, creds: dict[str, Any], token: str | None = None) -> Any:
    return Session().create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=url(mocks),
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"] if token is None else token,
        config=Config(retries={"max_attempts": 1}),
    )


def assume(mocks: BackgroundMocks, token: str | None = None, role: str = ROLE) -> dict[str, Any]:
    out: dict[str, Any] = sts_client(mocks).assume_role_with_web_identity(
        RoleArn=role,
        RoleSessionName="gateway-test",
        WebIdentityToken=sts_of(mocks).identity_token() if token is None else token,
    )
    return out


def form_post(mocks: BackgroundMocks, fields: dict[str, str] | None) -> tuple[int, str, str]:
    """POST a query form (None: no form at all); (status, error code, message)."""
    conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[NAME], timeout=10)
    try:
        if fields is None:
            conn.request("POST", "/", body=b"{}", headers={"content-type": "application/json"})
        else:
            body = urllib.parse.urlencode(fields).encode()
            conn.request(
                "POST", "/", body=body, headers={"content-type": "application/x-www-form-urlencoded"}
            )
        resp = conn.getresponse()
        raw = resp.read().decode()
    finally:
        conn.close()
    doc = ET.fromstring(raw)
    if resp.status == 200:
        return 200, "", raw
    assert doc.tag == f"{NS}ErrorResponse" and doc.find(f"{NS}RequestId") is not None, raw
    err = doc.find(f"{NS}Error")
    assert err is not None and err.findtext(f"{NS}Type") == "Sender", raw
    return resp.status, err.findtext(f"{NS}Code") or "", err.findtext(f"{NS}Message") or ""


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


# ---- AssumeRoleWithWebIdentity --------------------------------------------------------------


def test_assume_role_with_web_identity_through_botocore(mocks: BackgroundMocks) -> None:
    before = sts_of(mocks).issued
    out = assume(mocks)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SecretAccessKey"] and creds["SessionToken"]
    left = (creds["Expiration"] - datetime.now(timezone.utc)).total_seconds()
    assert 0 < left <= TTL_S + 1  # the mock's short lifetime, in whole seconds as STS reports it
    assert out["AssumedRoleUser"]["Arn"] == "arn:aws:sts::123456789012:assumed-role/llm-gateway/gateway-test"
    assert out["Audience"] == "sts.amazonaws.com"
    assert out["SubjectFromWebIdentityToken"].startswith("system:serviceaccount:")
    again = assume(mocks)["Credentials"]
    assert again["AccessKeyId"] != creds["AccessKeyId"]  # numbered: every call a new set
    assert sts_of(mocks).issued == before + 2


def test_botocores_credential_chain_reaches_it_through_the_endpoint_override(
    mocks: BackgroundMocks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, and AWS_ENDPOINT_URL_STS naming the mock."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(sts_of(mocks).identity_token())
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url(mocks))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert os.environ["AWS_ENDPOINT_URL_STS"] == url(mocks)
    creds = Session().get_credentials()
    assert creds is not None and creds.method == "assume-role-with-web-identity"
    frozen = creds.get_frozen_credentials()
    assert frozen.access_key in sts_of(mocks).credentials


@pytest.mark.parametrize(
    ("missing", "code"),
    [
        ("Action", "MissingAction"),
        ("Version", "MissingParameter"),
        ("RoleArn", "MissingParameter"),
        ("RoleSessionName", "MissingParameter"),
        ("WebIdentityToken", "MissingParameter"),
    ],
)
def test_a_missing_parameter_is_named(mocks: BackgroundMocks, missing: str, code: str) -> None:
    fields = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": ROLE,
        "RoleSessionName": "s1",
        "WebIdentityToken": sts_of(mocks).identity_token(),
    }
    del fields[missing]
    status, got, message = form_post(mocks, fields)
    assert (status, got) == (400, code)
    if code == "MissingParameter":
        assert message == f"The request must contain the parameter {missing}"


def test_not_a_form_other_actions_and_versions(mocks: BackgroundMocks) -> None:
    assert form_post(mocks, None)[:2] == (400, "MissingAction")
    base = {"Version": "2011-06-15", "RoleArn": ROLE, "RoleSessionName": "s1", "WebIdentityToken": "abcd"}
    assert form_post(mocks, {**base, "Action": "AssumeRole"})[:2] == (400, "InvalidAction")
    status, code, message = form_post(
        mocks, {**base, "Action": "AssumeRoleWithWebIdentity", "Version": "2010-01-01"}
    )
    assert (status, code) == (400, "InvalidAction") and "2010-01-01" in message


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("RoleSessionName", "a", "roleSessionName"),
        ("RoleSessionName", "has space", "roleSessionName"),
        ("RoleSessionName", "x" * 65, "roleSessionName"),
        ("RoleArn", "arn:aws:iam::1:r", "roleArn"),
        ("WebIdentityToken", "abc", "webIdentityToken"),
        ("DurationSeconds", "899", "durationSeconds"),
        ("DurationSeconds", "43201", "durationSeconds"),
        ("DurationSeconds", "ten", "durationSeconds"),
    ],
)
def test_constraints_are_validation_errors(
    mocks: BackgroundMocks, field: str, value: str, where: str
) -> None:
    fields = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": ROLE,
        "RoleSessionName": "s1",
        "WebIdentityToken": sts_of(mocks).identity_token(),
        field: value,
    }
    status, code, message = form_post(mocks, fields)
    assert (status, code) == (400, "ValidationError")
    assert message.startswith("1 validation error detected: ") and f"at '{where}'" in message


def test_a_token_the_provider_did_not_issue_is_an_invalid_identity_token(mocks: BackgroundMocks) -> None:
    real = sts_of(mocks).identity_token()
    header, body, _sig = real.split(".")
    for token in ("not-a-jwt", f"{header}.{body}.forged-signature", "a.b.c"):
        with pytest.raises(ClientError) as ei:
            assume(mocks, token=token)
        err = ei.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err["Error"]["Code"] == "InvalidIdentityToken"
        assert err["Error"]["Message"].startswith(
            "The web identity token that was passed could not be validated"
        )
    # Another provider's key signs another token: not one this provider issued either.
    other = start_in_thread([MockSpec("other", "bedrock", 0, "", region=REGION, role_arn=ROLE)])
    try:
        foreign = sts_of(other, "other").identity_token()
    finally:
        other.stop()
    with pytest.raises(ClientError) as ei:
        assume(mocks, token=foreign)
    assert ei.value.response["Error"]["Code"] == "InvalidIdentityToken"


def test_an_expired_identity_token_and_an_untrusting_role(mocks: BackgroundMocks) -> None:
    stale = sts_of(mocks).identity_token(ttl_s=-60)
    with pytest.raises(ClientError) as ei:
        assume(mocks, token=stale)
    assert ei.value.response["Error"]["Code"] == "ExpiredTokenException"
    assert ei.value.response["Error"]["Message"].startswith(
        "The web identity token that was passed is expired"
    )
    with pytest.raises(ClientError) as ei:
        assume(mocks, role="arn:aws:iam::123456789012:role/someone-else")
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert ei.value.response["Error"]["Code"] == "AccessDenied"
    assert "sts:AssumeRoleWithWebIdentity" in ei.value.response["Error"]["Message"]
    refused = sts_of(mocks).refused
    assert refused["ExpiredTokenException"] >= 1 and refused["AccessDenied"] >= 1


# ---- Bedrock with the credentials it issued ---------------------------------------------------


def test_bedrock_accepts_them_until_they_expire(mocks: BackgroundMocks) -> None:
    sts = sts_of(mocks)
    creds = assume(mocks)["Credentials"]
    client = bedrock(mocks, creds)
    out = client.converse(modelId=MODEL, messages=[user("hi")])
    assert out["output"]["message"]["content"] == [{"text": f"[{NAME}:{MODEL}] hi"}]
    assert sts.used[creds["AccessKeyId"]] == 1
    # The session token is part of the credentials: another one is refused.
    with pytest.raises(ClientError) as ei:
        bedrock(mocks, creds, token=creds["SessionToken"] + "x").converse(
            modelId=MODEL, messages=[user("hi")]
        )
    assert ei.value.response["Error"]["Code"] == "UnrecognizedClientException"
    # Past their Expiration: 403 ExpiredTokenException, as Bedrock answers it.
    time.sleep(max(0.0, (creds["Expiration"] - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    with pytest.raises(ClientError) as ei:
        client.converse(modelId=MODEL, messages=[user("hi")])
    err = ei.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert (err["Error"]["Code"], err["Error"]["Message"]) == (
        "ExpiredTokenException",
        "The security token included in the request is expired",
    )
    assert sts.expired_used[creds["AccessKeyId"]] == 1
    assert bedrock(mocks, assume(mocks)["Credentials"]).converse(modelId=MODEL, messages=[user("hi")])


def test_credentials_it_never_issued_are_unrecognized(mocks: BackgroundMocks) -> None:
    fake = {"AccessKeyId": "ASIAMOCKSTS999999999", "SecretAccessKey": "x" * 40, "SessionToken": "t" * 40}
    with pytest.raises(ClientError) as ei:
        bedrock(mocks, fake).converse(modelId=MODEL, messages=[user("hi")])
    assert ei.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_the_admin_endpoint(mocks: BackgroundMocks) -> None:
    def call(method: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", mocks.ports[NAME], timeout=10)
        try:
            conn.request(method, "/_mock/sts", body=None if body is None else json.dumps(body).encode())
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    status, state = call("GET")
    assert status == 200 and state["role_arn"] == ROLE and state["credential_ttl_s"] == TTL_S
    status, state = call("POST", {"credential_ttl_s": 1800, "identity_token": True})
    assert status == 200 and state["credential_ttl_s"] == 1800
    creds = assume(mocks, token=state["identity_token"])["Credentials"]
    assert (creds["Expiration"] - datetime.now(timezone.utc)).total_seconds() > 1700
    assert call("POST", {"credential_ttl_s": 0})[0] == 400
    assert call("POST", {"unknown": 1})[0] == 400
    assert call("DELETE")[0] == 405
    assert call("POST", {"credential_ttl_s": TTL_S})[0] == 200
    # No secret in what it shows: access key ids only.
    text = json.dumps(call("GET")[1])
    assert creds["SecretAccessKey"] not in text and creds["SessionToken"] not in text
