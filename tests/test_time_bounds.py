"""Every request ends within its bounds, through the real stack.

A provider that answers 200 and then stalls or trickles is failed over while
nothing has reached the client; with no other backend the client gets a clean
timeout error in its own dialect, and a stream that already started ends with
an error event in its dialect. Bounds are short here (1.5 s per attempt); each
check bounds the wait generously instead of timing it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import yaml
from google.genai import errors as genai_errors

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.supervisor import Stack
from tests.conftest import MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack
from tests.test_failover import CASES, hammer, request_for, text_of
from tests.test_translation_matrix import ADAPTERS, Ask, _error_of

PER_TRY_MS = 1500
# client dialect -> a model served by one backend of another dialect
SOLO = {"openai": "solo-anthropic", "anthropic": "solo-gemini", "gemini": "solo-openai"}
SOLO_PROVIDER = {"solo-anthropic": "anthropic", "solo-gemini": "gemini", "solo-openai": "openai"}
# A 200 that goes wrong after its headers; trickle: about 300 bytes at 10 per second.
BODY_FAULTS = {
    "headers_stall": {"mode": "headers_stall"},
    "stream_stall": {"mode": "stream_stall"},
    "trickle": {"mode": "trickle", "delay_ms": 100},
}
CAPPED = "capped"
TIMEOUT_TYPES = {"openai": "server_error", "anthropic": "timeout_error", "gemini": "DEADLINE_EXCEEDED"}


def bounds_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for provider in ("openai", "anthropic", "gemini"):
        upstream = cfg["models"]["gpt-5.5"]["backends"][["openai", "anthropic", "gemini"].index(provider)][
            "model"
        ]
        cfg["models"][f"solo-{provider}"] = {"backends": [{"provider": provider, "model": upstream}]}
    # The unguarded path too: these providers let a stream's headers go before its first event.
    for provider in ("openai", "gemini"):
        cfg["providers"][provider]["guard_first_event"] = False
    for model in cfg["models"].values():
        model["per_try_timeout_ms"] = PER_TRY_MS
        model["per_try_idle_timeout_ms"] = PER_TRY_MS
    # Quiet streams are let be for 10 s, whole streams for 4 s.
    cfg["models"][CAPPED] = {
        **cfg["models"]["solo-openai"],
        "per_try_idle_timeout_ms": 10_000,
        "max_stream_duration_ms": 4_000,
    }
    return config_on_free_ports(cfg)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("bounds"), bounds_config())
    yield stack
    stack.stop()


@pytest.fixture
def bmocks(bounded: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(bounded) as admin:
        yield admin


@pytest.mark.parametrize("dialect", list(CASES))
@pytest.mark.parametrize("fault", list(BODY_FAULTS))
def test_answer_going_wrong_after_its_headers_fails_over(
    bounded: Stack, bmocks: MockAdmin, fault: str, dialect: str
) -> None:
    """Non-streamed: the held headers keep the attempt retriable until its body is complete."""
    model, primary, fallback = CASES[dialect]
    bmocks.fault(primary, **BODY_FAULTS[fault])
    out = asyncio.run(
        hammer(
            bounded, dialect, model, False, n=4, concurrency=4, expect_prefix=f"[{fallback.split('/')[0]}:"
        )
    )
    assert out.statuses == Counter({200: 4}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({fallback: 4})
    assert out.seconds < 25  # one per-try timeout, then the next tier (a hang would take minutes)


@pytest.mark.parametrize("client", list(SOLO))
@pytest.mark.parametrize("fault", ["headers_stall", "trickle"])
def test_single_backend_going_wrong_after_its_headers_is_a_timeout_error(
    bounded: Stack, bmocks: MockAdmin, fault: str, client: str
) -> None:
    model = SOLO[client]
    bmocks.fault(SOLO_PROVIDER[model], **BODY_FAULTS[fault])
    sdk = ADAPTERS[client](bounded)
    t0 = time.monotonic()
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as exc:
        sdk.ask(Ask(model, "hello"))
    assert time.monotonic() - t0 < 15
    status, etype, message = _error_of(client, exc.value)
    assert (status, etype) == (504, TIMEOUT_TYPES[client]), message
    assert "timeout" in message


@pytest.mark.parametrize("dialect", list(CASES))
@pytest.mark.parametrize("fault", ["headers_stall", "trickle"])
def test_stream_going_wrong_before_its_first_event_fails_over(
    bounded: Stack, bmocks: MockAdmin, fault: str, dialect: str
) -> None:
    """A guarded backend's stream (its headers held until the first event) is still retriable."""
    bmocks.fault("anthropic", **BODY_FAULTS[fault])
    out = asyncio.run(
        hammer(bounded, dialect, "claude-sonnet-4-6", True, n=4, concurrency=4, expect_prefix="[openai:")
    )
    assert out.statuses == Counter({200: 4}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({"openai/gpt-5.5": 4})
    assert out.seconds < 25


async def read_stream(stack: Stack, client: str, model: str, text: str) -> tuple[int, bytes]:
    """Status and the whole body of a streamed request; a connection cut raises."""
    path, headers, body = request_for(client, model, True, text)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as s,
        s.post(stack.base_url + path, json=body, headers=headers) as r,
    ):
        return r.status, await r.read()


def stream_error(client: str, raw: bytes) -> tuple[str, str]:
    """(error type in the client's dialect, message) of the stream's error event."""
    text, done = text_of(client, True, raw)
    assert not done and text.startswith("<error "), text
    event = raw.decode().replace("\r\n", "\n").rstrip("\n").split("\n\n")[-1]
    data = json.loads(event.split("data:", 1)[1])
    if client == "anthropic":
        assert event.startswith("event: error")
        return data["error"]["type"], data["error"]["message"]
    if client == "openai":
        return data["error"]["type"] + "/" + str(data["error"]["code"]), data["error"]["message"]
    return data["error"]["status"], data["error"]["message"]


STREAM_TIMEOUT_TYPES = {
    "openai": "server_error/timeout",
    "anthropic": "timeout_error",
    "gemini": "DEADLINE_EXCEEDED",
}


@pytest.mark.parametrize("client", list(SOLO))
@pytest.mark.parametrize("fault", ["stream_stall", "trickle"])
def test_stream_going_quiet_ends_with_an_error_event(
    bounded: Stack, bmocks: MockAdmin, fault: str, client: str
) -> None:
    """Events already went to the client (or the provider trickles bytes that make no event):
    after per_try_idle_timeout_ms without an event the client gets an error event in its
    dialect and a well-formed end of stream, never a hang or a cut connection. A backend whose
    first event is awaited (guard_first_event) has sent the client nothing yet: a 504."""
    model = SOLO[client]
    provider = SOLO_PROVIDER[model]
    bmocks.fault(provider, **BODY_FAULTS[fault])
    t0 = time.monotonic()
    status, raw = asyncio.run(read_stream(bounded, client, model, "one two three four five six seven eight"))
    assert time.monotonic() - t0 < 20
    if fault == "trickle" and bounded.config.providers[provider].guard_first_event:
        assert status == 504
        assert TIMEOUT_TYPES[client] in raw.decode()
        return
    assert status == 200
    etype, message = stream_error(client, raw)
    assert etype == STREAM_TIMEOUT_TYPES[client]
    assert (
        message
        == f"backend '{provider}/{bounded.config.chains[model][0].upstream_model}' sent no event for 1.5 s"
    )


@pytest.mark.parametrize("client", list(SOLO))
def test_stream_reaching_its_maximum_duration_ends_with_an_error_event(
    bounded: Stack, bmocks: MockAdmin, client: str
) -> None:
    """Events keep coming (a byte every 2 ms), but the whole stream would outlast the 4 s cap."""
    bmocks.fault("openai", mode="trickle", delay_ms=2)
    t0 = time.monotonic()
    status, raw = asyncio.run(read_stream(bounded, client, CAPPED, " ".join(["word"] * 40)))
    assert time.monotonic() - t0 < 20
    assert status == 200
    text, _ = text_of(client, True, raw.rsplit(b"\n\n", 2)[0] + b"\n\n")
    assert text.startswith("[openai:gpt-5.5]"), text  # part of the answer arrived
    etype, message = stream_error(client, raw)
    assert etype == STREAM_TIMEOUT_TYPES[client]
    assert message == "the stream reached the gateway's maximum duration of 4 s"


def test_unguarded_stream_stalling_before_its_first_event_is_cut_within_bounds(
    bounded: Stack, bmocks: MockAdmin
) -> None:
    """The known gap: without guard_first_event the stream's 200 went to the client at once and
    no event ever came, so nothing can be failed over or written: Envoy's backstop closes the
    connection (per_try_idle_timeout_ms + 5 s), and the client's read fails instead of hanging."""
    assert not bounded.config.providers["openai"].guard_first_event
    bmocks.fault("openai", mode="headers_stall")
    t0 = time.monotonic()
    with pytest.raises(aiohttp.ClientPayloadError):
        asyncio.run(read_stream(bounded, "anthropic", "solo-openai", "hello"))
    assert time.monotonic() - t0 < 20
