"""Provider 200s that are not answers, and provider errors that quote our key, through the real stack.

The official SDKs talk to Envoy + ext_proc + mock providers. For each
non-answer (``mock_providers.NON_ANSWERS``: empty, HTML, an error object, cut
short, wrongly typed), streamed and not, from each provider as the primary:

- with a second backend the client never sees it: the fallback answers;
- with one backend the client gets a 502 in its own dialect saying the
  provider's answer was invalid -- never a 200 with an empty or fake body.

The answer guard judges what response headers give it a reason to (no or a
zero length, a type that is not JSON, every stream's first event); a
non-streamed JSON 200 of a declared length only for providers with
``check_every_answer`` (the ``*-strict`` providers here). Without it such a
body is found by the router stage after its 200 went out: the client's
response is aborted (never a success) and the next request goes elsewhere.

A stream cut short after a valid first event cannot be failed over any more
(its headers went to the client with that event): the client gets an error
event in its dialect, never a stream that looks complete.

Every case has models and backends of its own: what Envoy's outlier
detection and the gateway's health table learn in one case (the primary
fails) must not route the next case around the fault it is about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.mocks import NON_ANSWERS
from gateway_tools.supervisor import Stack
from tests.conftest import MockAdmin
from tests.stack import config_on_free_ports, start_stack
from tests.test_failover import request_for, text_of
from tests.test_mock_providers import _transport_errors
from tests.test_translation_matrix import ADAPTERS, Ask, _error_of, _failure

PROVIDERS = ("openai", "anthropic", "gemini")
# What the Gemini SDK lets through of a broken response (it does not wrap transport errors).
TRANSPORT_ERRORS = _transport_errors("RemoteProtocolError", "ReadError")
FALLBACK = {"openai": "anthropic", "anthropic": "gemini", "gemini": "openai"}
# Non-answers whose headers look like an answer's (JSON of a declared length, not streamed).
BODY_ONLY = ("error_object_200", "truncated_200", "wrong_types_200")
UPSTREAM = "m"
STREAMS = {False: "plain", True: "streamed"}
# What a client of each dialect is told for a provider's invalid answer (kind api_error).
API_ERROR_TYPE = {"openai": "server_error", "anthropic": "api_error", "gemini": "INTERNAL"}


def judged_by(provider: str, fault: str, stream: bool) -> str:
    """The mock to fault: the ``-strict`` twin where only ``check_every_answer`` judges the body."""
    return f"{provider}-strict" if fault in BODY_ONLY and not stream else provider


def failover_model(fault: str, stream: bool, primary: str, client: str) -> str:
    return f"fo-{fault}-{STREAMS[stream]}-{primary}-{client}"


def single_model(fault: str, stream: bool, client: str) -> str:
    return f"one-{fault}-{STREAMS[stream]}-{client}"


def single_provider(fault: str, stream: bool, client: str) -> str:
    """The one backend's provider: across a fault's three clients, each provider once."""
    return PROVIDERS[(PROVIDERS.index(client) + int(stream)) % 3]


def faults_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for provider in PROVIDERS:
        cfg["providers"][f"{provider}-strict"] = {
            **cfg["providers"][provider],
            "check_every_answer": True,
            "api_key_env": f"MOCK_{provider.upper()}_STRICT_KEY",
        }
    models: dict[str, Any] = {}
    for fault in NON_ANSWERS:
        for stream in STREAMS:
            for client in PROVIDERS:
                for primary in PROVIDERS:
                    name = failover_model(fault, stream, primary, client)
                    judge = judged_by(primary, fault, stream)
                    models[name] = {
                        "backends": [
                            {"provider": judge, "model": UPSTREAM, "name": f"{judge}/{name}"},
                            {
                                "provider": FALLBACK[primary],
                                "model": UPSTREAM,
                                "name": f"{FALLBACK[primary]}/fallback",
                            },
                        ]
                    }
                name = single_model(fault, stream, client)
                judge = judged_by(single_provider(fault, stream, client), fault, stream)
                models[name] = {
                    "backends": [{"provider": judge, "model": UPSTREAM, "name": f"{judge}/{name}"}]
                }
            for client in PROVIDERS:  # the router stage's last line, without check_every_answer
                name = f"late-{fault}-{client}"
                models[name] = {
                    "backends": [
                        {"provider": client, "model": UPSTREAM, "name": f"{client}/{name}"},
                        {
                            "provider": FALLBACK[client],
                            "model": UPSTREAM,
                            "name": f"{FALLBACK[client]}/fallback",
                        },
                    ]
                }
    for provider in PROVIDERS:
        models[f"echo-{provider}"] = {"backends": [{"provider": provider, "model": UPSTREAM}]}
    cfg["models"] = models
    return config_on_free_ports(cfg)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("invalid-answers"), faults_config())
    yield s
    s.stop()


@pytest.fixture
def admin(stack: Stack) -> Iterator[MockAdmin]:
    a = MockAdmin(stack)
    a.reset()
    yield a
    a.reset()


@pytest.fixture(scope="module")
def sdks(stack: Stack) -> dict[str, Any]:
    return {name: cls(stack) for name, cls in ADAPTERS.items()}


def raw_stream(stack: Stack, client: str, model: str) -> tuple[int, str, bool]:
    """(status, reply text or ``<error ...>``, whether the stream ended properly) over plain HTTP."""
    path, headers, body = request_for(client, model, True, "one two three four five six")

    async def go() -> tuple[int, str, bool]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s,
            s.post(stack.base_url + path, json=body, headers=headers) as r,
        ):
            raw = await r.read()
            return (
                (r.status, *text_of(client, True, raw))
                if r.status == 200
                else (r.status, raw.decode(), False)
            )

    return asyncio.run(go())


@pytest.mark.parametrize("client", PROVIDERS)
@pytest.mark.parametrize("primary", PROVIDERS)
@pytest.mark.parametrize("stream", list(STREAMS), ids=list(STREAMS.values()))
@pytest.mark.parametrize("fault", NON_ANSWERS)
def test_a_non_answer_fails_over_invisibly(
    stack: Stack, sdks: dict[str, Any], admin: MockAdmin, fault: str, stream: bool, primary: str, client: str
) -> None:
    model, judge = failover_model(fault, stream, primary, client), judged_by(primary, fault, stream)
    admin.fault(judge, mode=fault)
    text = "one two three four five six"
    if fault == "truncated_200" and stream:
        # Its first event was an answer: headers went on with it, no failover is possible any more.
        status, got, done = raw_stream(stack, client, model)
        assert status == 200 and not done and got.startswith("<error"), got
        return
    res = sdks[client].ask(Ask(model, text, stream=stream))
    fallback = FALLBACK[primary]
    assert res.text == f"[{fallback}:{UPSTREAM}] {text}"
    assert res.backend in (f"{fallback}/fallback", None)  # the Gemini SDK hides headers of streams
    primary_stats = admin.stats(judge)
    assert primary_stats["faulted"] == 1 and primary_stats["by_status"] == {"200": 1}  # it did answer 200


@pytest.mark.parametrize("client", PROVIDERS)
@pytest.mark.parametrize("stream", list(STREAMS), ids=list(STREAMS.values()))
@pytest.mark.parametrize("fault", NON_ANSWERS)
def test_a_non_answer_from_the_only_backend_is_a_502_in_the_clients_dialect(
    stack: Stack, sdks: dict[str, Any], admin: MockAdmin, fault: str, stream: bool, client: str
) -> None:
    model = single_model(fault, stream, client)
    provider = judged_by(single_provider(fault, stream, client), fault, stream)
    admin.fault(provider, mode=fault)
    if fault == "truncated_200" and stream:
        status, got, done = raw_stream(stack, client, model)
        assert status == 200 and not done and got.startswith("<error"), got
        return
    err = _failure(sdks[client], Ask(model, "one two three", stream=stream))
    status, etype, message = _error_of(client, err)
    assert (status, etype) == (502, API_ERROR_TYPE[client]), message
    assert "the provider's answer was invalid" in message and f"{provider}/{model}" in message
    assert admin.stats(provider)["by_status"] == {"200": 1}


@pytest.mark.parametrize("client", PROVIDERS)
@pytest.mark.parametrize("fault", BODY_ONLY)
def test_an_unjudged_non_answer_is_aborted_never_delivered(
    stack: Stack, sdks: dict[str, Any], admin: MockAdmin, fault: str, client: str
) -> None:
    """Without ``check_every_answer`` a JSON 200 of a declared length reaches the router stage
    unjudged. It is no answer: the client's response is aborted (the SDK raises a connection
    error, and would retry), and the backend is skipped from the next request on."""
    model = f"late-{fault}-{client}"
    admin.fault(client, mode=fault)
    ask = Ask(model, "one two three")
    with pytest.raises((openai.APIConnectionError, anthropic.APIConnectionError, *TRANSPORT_ERRORS)):
        sdks[client].ask(ask)
    res = sdks[client].ask(ask)
    assert res.text == f"[{FALLBACK[client]}:{UPSTREAM}] one two three"
    assert admin.stats(client)["requests"] == 1  # the second request went straight to the fallback


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("client", PROVIDERS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_quoting_our_key_never_shows_it_to_the_client(
    stack: Stack, admin: MockAdmin, client: str, provider: str, status: int
) -> None:
    key = stack.env[stack.config.providers[provider].api_key_env or ""]
    admin.fault(provider, mode="echo_key", status=status)
    for stream in STREAMS:
        path, headers, body = request_for(client, f"echo-{provider}", stream, "hello")

        async def go() -> tuple[int, bytes]:
            async with (
                aiohttp.ClientSession() as s,
                s.post(stack.base_url + path, json=body, headers=headers) as r,  # noqa: B023
            ):
                return r.status, await r.read()

        got, raw = asyncio.run(go())
        assert got == (502 if status == 401 else status)  # a refused gateway key is the gateway's failure
        assert key.encode() not in raw and b"[REDACTED]" in raw, raw
        assert b"Incorrect API key provided" in raw  # the provider's words, minus the key
    assert admin.stats(provider)["faulted"] == 2
