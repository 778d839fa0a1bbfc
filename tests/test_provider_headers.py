"""Headers between clients and providers, through the real stack: what a provider says about the
operator's account never reaches a client.

The mock providers send on every answer what the real ones send (OpenAI's organisation, project
and rate limits, Anthropic's organisation id and rate limits, Google's front-end headers, Azure's
region and quota, Bedrock's request id); Envoy removes every header a dialect lists
(``PROVIDER_RESPONSE_HEADERS``, README "Headers to providers") on the way back. Checked for each
client dialect against each backend, plain, streamed and for a provider's error relayed to the
client. ``check_withheld`` is shared with the stacks that have the other backends
(tests/test_responses_api.py, tests/test_cloud_providers.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from ext_proc.envoy_config import PROVIDER_RESPONSE_HEADERS
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin
from tests.test_failover import request_for

# backend kind of the default stack -> the model whose first backend it is
BACKENDS = {"openai": "gpt-5.5", "anthropic": "claude-sonnet-4-6", "gemini": "gemini-3.5-flash"}
CLIENTS = ("openai", "anthropic", "gemini", "responses")
# What a provider must never tell a client through the gateway, named here independently of the
# gateway's own list: its account (organisation, project, its limits), its region and request ids,
# its front end. A header the provider sent whose name is one of these (or starts so) fails the test;
# x-request-id is the gateway's own on the way back (checked by value).
WITHHELD = frozenset({"request-id", "server-timing", "alt-svc"})
WITHHELD_PREFIXES = ("openai-", "anthropic-", "x-ratelimit-", "x-ms-", "x-amzn-", "azureml-", "apim-")
# The headers that say whose account it is, as the real providers send them (the mocks too).
ACCOUNT = {"openai": "openai-organization", "anthropic": "anthropic-organization-id"}


def withheld(name: str) -> bool:
    return name in WITHHELD or name.startswith(WITHHELD_PREFIXES)


def client_request(client: str, model: str, stream: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(path, headers, body) of a one-turn request of ``client``'s dialect."""
    if client == "responses":
        body = {"model": model, "input": "hi", "stream": stream}
        return "/v1/responses", {"authorization": f"Bearer {DEMO_KEY}"}, body
    return request_for(client, model, stream, "hi")


def call(stack: Stack, client: str, model: str, stream: bool) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of the answer, read to its end."""
    path, headers, body = client_request(client, model, stream)
    req = urllib.request.Request(
        stack.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={**headers, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def check_withheld(
    stack: Stack, mocks: MockAdmin, provider: str, client: str, model: str, stream: bool, status: int = 200
) -> dict[str, str]:
    """A request of ``client`` to ``model`` is answered by ``provider``, which sent its account
    headers; the client gets ``status`` and none of them. The provider's headers."""
    got_status, got, body = call(stack, client, model, stream)
    assert got_status == status, body[:500]
    answer = mocks.stats(provider)["last_response"]
    assert answer is not None, f"{provider} was not asked"
    sent = answer["headers"]
    private = {h for h in sent if withheld(h)}
    assert private, f"{provider} sent no account header, so this checks nothing: {sent}"
    leaked = private & set(got)
    assert not leaked, {h: got[h] for h in leaked}
    assert not set(got) & set(PROVIDER_RESPONSE_HEADERS) - {"x-request-id"}, got  # nor any other's
    # The request id a client sees is the gateway's (the access log's, the one the provider was
    # sent), never the provider's.
    assert got.get("x-request-id") and got["x-request-id"] != sent.get("x-request-id"), (got, sent)
    asked = {k.lower(): v for k, v in mocks.stats(provider)["last_request"]["headers"].items()}
    assert got["x-request-id"] == asked.get("x-request-id"), (got, asked)
    return sent


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_no_provider_account_header_reaches_a_client(
    gateway: Stack, mocks: MockAdmin, backend: str, client: str, stream: bool
) -> None:
    sent = check_withheld(gateway, mocks, backend, client, BACKENDS[backend], stream)
    assert backend not in ACCOUNT or ACCOUNT[backend] in sent, sent


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_relayed_provider_error_carries_no_account_header(
    gateway: Stack, mocks: MockAdmin, backend: str, client: str
) -> None:
    """A provider's 400 is the client's (no failover): relayed, translated, without the headers."""
    mocks.fault(backend, mode="error", status=400)
    check_withheld(gateway, mocks, backend, client, BACKENDS[backend], False, status=400)


def test_the_gateway_lists_every_header_the_providers_name_their_account_in() -> None:
    """The account headers are in the list Envoy removes (a header missing there would leak)."""
    assert set(ACCOUNT.values()) <= set(PROVIDER_RESPONSE_HEADERS)
