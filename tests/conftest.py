from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import settings

from gateway_tools.supervisor import Stack
from tests.stack import config_on_free_ports, start_stack

DEMO_KEY = "demo-key"

# Property tests draw the same examples on every run, so a CI run is reproducible and never
# fails on a fresh draw; `pytest --hypothesis-profile explore` searches with new random ones.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile("reproducible")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The default stack (three mock providers, three models) on free ports."""
    stack = start_stack(tmp_path_factory.mktemp("gateway"), config_on_free_ports())
    yield stack
    stack.stop()


class MockAdmin:
    """The mock providers' fault and stats API."""

    def __init__(self, stack: Stack):
        self.stack = stack

    def url(self, provider: str, path: str) -> str:
        p = self.stack.config.providers[provider]
        return f"http://{p.host}:{p.port}{path}"

    def _call(self, method: str, provider: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url(provider, path), data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read()
        return json.loads(text) if text else None

    def stats(self, provider: str) -> dict[str, Any]:
        return self._call("GET", provider, "/_mock/stats")

    def reset(self) -> None:
        for name in self.stack.config.mock_providers():
            self._call("DELETE", name, "/_mock/faults")
            self._call("DELETE", name, "/_mock/stats")

    def fault(self, provider: str, **fault: Any) -> None:
        self._call("POST", provider, "/_mock/faults", fault)


@contextmanager
def clean_mocks(stack: Stack) -> Iterator[MockAdmin]:
    """The mock providers of ``stack`` with no faults and zeroed stats, before and after."""
    admin = MockAdmin(stack)
    admin.reset()
    try:
        yield admin
    finally:
        admin.reset()


@pytest.fixture
def mocks(gateway: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(gateway) as admin:
        yield admin
