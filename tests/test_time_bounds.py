"""Every request ends within its bounds, through the real stack.

A provider that answers 200 and then stalls or trickles is failed over while
nothing has reached the client; with no other backend the client gets a clean
timeout error in its own dialect, and a stream that already started ends with
an error event in its dialect. Bounds are short here (1.5 s per attempt); each
check bounds the wait generously instead of timing it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google.genai import errors as genai_errors

from ext_proc.config import DEFAULT_CONFIG
from ext_proc.supervisor import Stack
from tests.conftest import MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack
from tests.test_failover import CASES, hammer
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
TIMEOUT_TYPES = {"openai": "server_error", "anthropic": "timeout_error", "gemini": "DEADLINE_EXCEEDED"}


def bounds_config() -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for provider in ("openai", "anthropic", "gemini"):
        upstream = cfg["models"]["gpt-4o"]["backends"][["openai", "anthropic", "gemini"].index(provider)]["model"]
        cfg["models"][f"solo-{provider}"] = {"backends": [{"provider": provider, "model": upstream}]}
    for model in cfg["models"].values():
        model["per_try_timeout_ms"] = PER_TRY_MS
        model["per_try_idle_timeout_ms"] = PER_TRY_MS
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
def test_answer_going_wrong_after_its_headers_fails_over(bounded: Stack, bmocks: MockAdmin, fault: str,
                                                         dialect: str) -> None:
    """Non-streamed: the held headers keep the attempt retriable until its body is complete."""
    model, primary, fallback = CASES[dialect]
    bmocks.fault(primary, **BODY_FAULTS[fault])
    out = asyncio.run(hammer(bounded, dialect, model, False, n=4, concurrency=4,
                             expect_prefix=f"[{fallback.split('/')[0]}:"))
    assert out.statuses == Counter({200: 4}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({fallback: 4})
    assert out.seconds < 25  # one per-try timeout, then the next tier (a hang would take minutes)


@pytest.mark.parametrize("client", list(SOLO))
@pytest.mark.parametrize("fault", ["headers_stall", "trickle"])
def test_single_backend_going_wrong_after_its_headers_is_a_timeout_error(bounded: Stack, bmocks: MockAdmin,
                                                                          fault: str, client: str) -> None:
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
