"""The supervisor (``Stack``, what ``up`` runs) starts dead workers and mocks again.

Issue 13: one dead child took the whole gateway down. Now a dead worker or
mock process is started again after a back-off and counted; only a crash loop
(``RESTART_LIMIT`` crashes within ``RESTART_WINDOW_S``) or a dead Envoy ends
the stack. Every process killed here is a child of the test's own stack.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway_tools import supervisor
from gateway_tools.supervisor import Child, Stack
from tests.conftest import MockAdmin
from tests.stack import config_on_free_ports, start_stack

BOUND_S = 30.0


def wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def child(stack: Stack, name: str) -> Child:
    return next(c for c in stack.children if c.name == name)


def restarted(stack: Stack, name: str) -> float:
    with urllib.request.urlopen(stack.urls()["supervisor metrics"], timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'llm_gateway_worker_restarts_total{{child="{name}"}}'):
                return float(line.split()[-1])
    raise AssertionError(f"no restart count for {name}")


def kill_and_wait_for_restart(stack: Stack, name: str) -> None:
    c = child(stack, name)
    assert c.proc is not None
    old = c.proc.pid
    os.kill(old, signal.SIGKILL)
    wait_for(f"{name} started again", lambda: c.proc is not None and c.proc.pid != old)


def test_dead_workers_and_mocks_are_started_again_with_back_off(tmp_path: Path, capsys) -> None:
    stack = start_stack(tmp_path, config_on_free_ports())
    try:
        assert restarted(stack, "ext_proc-0") == 0 and restarted(stack, "mock-providers") == 0
        for expected in (1, 2):
            t = time.monotonic()
            kill_and_wait_for_restart(stack, "ext_proc-0")
            # Back-off doubles with each crash within the window (0.25 s, then 0.5 s).
            assert time.monotonic() - t >= supervisor.RESTART_BACKOFF_BASE_S * 2 ** (expected - 1)
            assert restarted(stack, "ext_proc-0") == expected
        kill_and_wait_for_restart(stack, "mock-providers")
        assert restarted(stack, "mock-providers") == 1
        # The new mock process serves on the same port.
        wait_for("the mocks answer", lambda: _answers(MockAdmin(stack)))
        out = capsys.readouterr().out
        assert "ext_proc-0 stopped (signal SIGKILL); starting it again in 0.25s" in out
        assert "ext_proc-0 stopped (signal SIGKILL); starting it again in 0.5s" in out
        assert "mock-providers started again" in out
        assert stack.failure is None and child(stack, "envoy").proc.poll() is None  # type: ignore[union-attr]
    finally:
        stack.stop()


def _answers(mocks: MockAdmin) -> bool:
    try:
        mocks.stats("openai")
        return True
    except OSError:
        return False


def test_a_crash_loop_ends_the_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_LIMIT", 3)
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_BASE_S", 0.01)
    stack = start_stack(tmp_path, config_on_free_ports())
    try:
        for _ in range(2):
            kill_and_wait_for_restart(stack, "ext_proc-0")
        assert stack.failure is None
        c = child(stack, "ext_proc-0")
        assert c.proc is not None
        os.kill(c.proc.pid, signal.SIGKILL)
        wait_for("the supervisor gives up", lambda: stack.failure is not None)
        assert "ext_proc-0 stopped (signal SIGKILL): 3 crashes within 60s, giving up" in str(stack.failure)
        with pytest.raises(supervisor.StackError):
            stack.raise_if_failed()
        assert restarted(stack, "ext_proc-0") == 2
    finally:
        stack.stop()
