"""Live config changes under load: no failed requests, each change effective within seconds."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ext_proc.config import ConfigError
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports, free_ports


class Load:
    """A steady background client: OpenAI-format requests to a set of models."""

    def __init__(self, stack: Stack, models: list[str], concurrency: int = 8):
        self.stack = stack
        self.models = models
        self.concurrency = concurrency
        self.results: list[tuple[str, int, str]] = []  # (model, status, backend)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._worker(session, i) for i in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            model = self.models[(i + n) % len(self.models)]
            n += 1
            body = {"model": model, "messages": [{"role": "user", "content": f"load {i} {n}"}]}
            try:
                async with session.post(
                    self.stack.base_url + "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {DEMO_KEY}"},
                ) as r:
                    await r.read()
                    self.results.append((model, r.status, r.headers.get("x-gateway-backend", "")))
            except aiohttp.ClientError as e:
                self.results.append((model, -1, repr(e)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def chat(stack: Stack, model: str) -> tuple[int, str, dict[str, Any]]:
    req = urllib.request.Request(
        stack.base_url + "/v1/chat/completions",
        method="POST",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers.get("x-gateway-backend", ""), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-gateway-backend", ""), json.loads(e.read())


def until(check, timeout: float = 30.0) -> float:
    """Seconds until ``check()`` is true (fails after ``timeout``)."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "change not effective in time"
        time.sleep(0.1)
    return time.monotonic() - t0


@pytest.fixture
def live(tmp_path: Path):
    cfg = config_on_free_ports()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    stack = Stack(path, run_dir=tmp_path / "run", drain_seconds=2.0).start()
    try:
        yield stack, cfg
    finally:
        stack.stop()


def test_config_changes_under_load_fail_no_request(live) -> None:
    stack, base = live
    cfg = copy.deepcopy(base)
    with Load(stack, ["gpt-5.5", "claude-sonnet-4-6"]) as load:
        time.sleep(1)
        # 1. Add a model and call it.
        cfg["models"]["gpt-4o-mini"] = {
            "backends": [
                {"provider": "openai", "model": "gpt-4o-mini"},
                {"provider": "anthropic", "model": "claude-sonnet-4-6"},
            ]
        }
        stack.apply(yaml.safe_dump(cfg))
        status, backend, body = chat(stack, "gpt-4o-mini")
        assert (status, backend) == (200, "openai/gpt-4o-mini")
        assert body["choices"][0]["message"]["content"] == "[openai:gpt-4o-mini] hi"
        load.models.append("gpt-4o-mini")
        time.sleep(1)
        # 2. Reorder failover: claude-sonnet-4-6 now goes to OpenAI first.
        backends = cfg["models"]["claude-sonnet-4-6"]["backends"]
        backends.insert(0, backends.pop(1))
        stack.apply(yaml.safe_dump(cfg))
        assert chat(stack, "claude-sonnet-4-6")[1] == "openai/gpt-5.5"
        time.sleep(1)
        # 3. An invalid config is rejected with its field paths; the old one keeps serving.
        broken = copy.deepcopy(cfg)
        broken["models"]["gpt-5.5"]["backends"][0]["provider"] = "nope"
        with pytest.raises(ConfigError) as e:
            stack.apply(yaml.safe_dump(broken))
        assert any(
            "models.gpt-5.5.backends[0].provider: unknown provider 'nope'" in p for p in e.value.problems
        )
        assert chat(stack, "gpt-5.5")[0] == 200
        # 4. Remove a model: the load stops asking for it first (its requests would intend a 404).
        load.models.remove("gpt-4o-mini")
        time.sleep(0.5)
        del cfg["models"]["gpt-4o-mini"]
        stack.apply(yaml.safe_dump(cfg))
        assert chat(stack, "gpt-4o-mini")[0] == 404
        time.sleep(3)  # past the drain period: the old configs' routes and clusters are gone
        stack.tick()
        after_reorder = [b for m, _, b in load.results if m == "claude-sonnet-4-6"][-20:]
        # 5. Tighten the tenant's budget: 429s begin (the only failures this change intends).
        before_budget = len(load.results)
        cfg["tenants"]["demo"]["limits"] = {"requests_per_minute": 60}
        stack.apply(yaml.safe_dump(cfg))
        until(lambda: any(status == 429 for _, status, _ in load.results[before_budget:]))
    statuses = Counter(status for _, status, _ in load.results[:before_budget])
    assert before_budget > 100
    assert statuses == Counter({200: before_budget}), [r for r in load.results if r[1] != 200][:5]
    assert set(after_reorder) == {"openai/gpt-5.5"}
    after_budget = Counter(status for _, status, _ in load.results[before_budget:])
    assert set(after_budget) <= {200, 429} and after_budget[429] > 0


def test_restart_only_sections_are_refused(live) -> None:
    stack, base = live
    cfg = copy.deepcopy(base)
    cfg["listen"]["port"] += 1
    with pytest.raises(ConfigError) as e:
        stack.apply(yaml.safe_dump(cfg))
    assert any("listen: changing it needs a restart" in p for p in e.value.problems)


def test_up_watches_its_file_and_apply_reaches_it(tmp_path: Path) -> None:
    cfg = config_on_free_ports()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway_tools", "up", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Watching"):
                break
        port = cfg["listen"]["port"]
        stack_like = type("S", (), {"base_url": f"http://127.0.0.1:{port}"})()
        # Editing the watched file switches the gateway.
        cfg["models"]["o-watch"] = {"backends": [{"provider": "gemini", "model": "gemini-3.5-flash"}]}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        until(lambda: chat(stack_like, "o-watch")[0] == 200)
        # `llm-gateway apply` with another file reaches the running gateway.
        other = tmp_path / "other.yaml"
        cfg["models"]["o-apply"] = {"backends": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}]}
        other.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "gateway_tools", "apply", str(other)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert chat(stack_like, "o-apply")[1] == "anthropic/claude-sonnet-4-6"
        # An invalid config: apply reports every error and the gateway keeps serving.
        cfg["models"]["o-apply"]["backends"][0]["provider"] = "typo"
        cfg["admin"]["port"] = cfg["listen"]["port"]
        other.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "gateway_tools", "apply", str(other)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "models.o-apply.backends[0].provider: unknown provider 'typo'" in result.stderr
        assert "admin.port: port" in result.stderr
        assert chat(stack_like, "o-apply")[0] == 200
        # A valid file the running gateway must refuse (the admin port needs a restart).
        cfg["models"]["o-apply"]["backends"][0]["provider"] = "anthropic"
        cfg["admin"]["port"] = cfg["listen"]["port"] + 1 if cfg["listen"]["port"] < 65000 else 1025
        other.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "gateway_tools", "apply", str(other)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "admin: changing it needs a restart" in result.stderr
        # Another listen port: the running gateway cannot be found by it, and could not move anyway.
        (cfg["listen"]["port"],) = free_ports(1)
        other.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "gateway_tools", "apply", str(other)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert f"listens on port {cfg['listen']['port']}, the running gateway on" in result.stderr
        assert "listen: changing it needs a restart of the gateway" in result.stderr
        # `llm-gateway status` sees the running gateway and the last (rejected) change.
        result = subprocess.run(
            [sys.executable, "-m", "gateway_tools", "status", str(path), "--json", "--interval", "0.2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["config"]["last_reload"]["result"] == "rejected"
        assert status["backends"]["anthropic/claude-sonnet-4-6"]["requests"] >= 1
        assert status["backends"]["openai/gpt-5.5"]["routing_health"] == "healthy"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
