"""What the bench runs: the processes it starts and the requests each scenario sends.

One gateway serves every gateway scenario (a model per scenario), one bare
Envoy serves the floors, and both reach the same canned Envoy upstream and the
same paced stream server. All of them are up for the whole run, so scenarios
can alternate round by round and drift on a shared machine hits all alike.

Each gateway scenario is paired with a floor that sends the same load shape
through bare Envoy (same body size, same stream), so "added" means what the
gateway costs and nothing else.
"""

from __future__ import annotations

import importlib.util
import random
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from .. import config as gateway_config
from ..supervisor import Stack, envoy_binary
from . import upstream
from .load import Request

LARGE_PROMPT_BYTES = 200 * 1024
ENV_KEYS = {"openai": "BENCH_OPENAI_KEY", "anthropic": "BENCH_ANTHROPIC_KEY", "stream": upstream.KEY_ENV,
            "tenant": "BENCH_TENANT_KEY"}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["unary", "stream"]
    floor: str  # the floor probe it is compared with
    what: str


# Gateway scenarios (the floors are probes of their own, see ``FLOORS``).
SCENARIOS = {
    s.name: s for s in (
        Scenario("passthrough", "unary", "floor", "OpenAI client -> OpenAI backend"),
        Scenario("translated", "unary", "floor", "OpenAI client -> Anthropic backend"),
        Scenario("large", "unary", "floor-large", "translated, 200 KB prompt"),
        Scenario("streamed", "stream", "floor-stream", f"OpenAI client -> Anthropic backend, "
                                                       f"{upstream.STREAM_EVENTS}-event SSE stream"),
    )
}
FLOORS = {"floor": "unary", "floor-large": "unary", "floor-stream": "stream"}
# Scenario slots that need something this install may not have.
OPTIONAL = ("admission", "peer")


def unavailable(name: str) -> str | None:
    """Why an optional scenario cannot run here (None: it can)."""
    if name == "admission":
        models = (gateway_config.Tenant, *(getattr(gateway_config, n) for n in dir(gateway_config)
                                           if n.startswith("_Root")))
        if not any("budget" in f for m in models for f in getattr(m, "model_fields", {})):
            return "not available: the gateway config has no tenant budgets yet"
        return "not available: budgets exist in the config but the bench does not drive them yet"
    if name == "peer":
        if importlib.util.find_spec("litellm") is None:
            return "not available: litellm is not installed (pip install 'litellm[proxy]')"
        return "not available: the LiteLLM peer runner is not implemented yet"
    return None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_block(count: int) -> int:
    """First port of ``count`` consecutive free ones, below the kernel's ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports")


class Ports:
    """Every port of a bench run, from one block of consecutive free ports."""

    def __init__(self, workers: int):
        self.workers = workers
        base = port_block(7 + 2 * workers)
        (self.listen, self.admin, self.canned, self.canned_admin, self.floor, self.floor_admin,
         self.stream) = range(base, base + 7)
        self.ext_proc = base + 7  # worker i listens on ext_proc + i
        self.metrics = self.ext_proc + workers


def gateway_config_dict(ports: Ports, workers: int) -> dict[str, Any]:
    """The gateway's config: one model per scenario, providers on the bench upstreams."""
    canned = f"http://127.0.0.1:{ports.canned}"
    return {
        "listen": {"address": "127.0.0.1", "port": ports.listen},
        "admin": {"address": "127.0.0.1", "port": ports.admin},
        "ext_proc": {"address": "127.0.0.1", "port": ports.ext_proc, "metrics_port": ports.metrics,
                     "workers": workers},
        "providers": {
            "canned-openai": {"dialect": "openai", "base_url": canned + "/v1", "api_key_env": ENV_KEYS["openai"]},
            "canned-anthropic": {"dialect": "anthropic", "base_url": canned, "api_key_env": ENV_KEYS["anthropic"]},
            "paced-anthropic": {"dialect": "anthropic", "base_url": f"http://127.0.0.1:{ports.stream}",
                                "api_key_env": ENV_KEYS["stream"]},
        },
        # Each model has a failover backend, as in production: the per-attempt
        # stage and its matcher are configured, and skipped, as they would be.
        "models": {
            "bench-passthrough": {"backends": [{"provider": "canned-openai"},
                                               {"provider": "canned-anthropic", "model": "claude-bench"}]},
            "bench-translated": {"backends": [{"provider": "canned-anthropic", "model": "claude-bench"},
                                              {"provider": "canned-openai", "model": "bench-passthrough"}]},
            "bench-streamed": {"backends": [{"provider": "paced-anthropic", "model": "claude-bench"},
                                            {"provider": "canned-openai", "model": "bench-passthrough"}]},
        },
        "tenants": {"bench": {"api_keys": [{"env": ENV_KEYS["tenant"]}]}},
    }


def _chat(model: str, prompt: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 256, "temperature": 0.7, "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _large_prompt() -> str:
    words = ("gateway", "envoy", "provider", "translate", "stream", "token", "budget", "latency", "tenant",
             "model", "route", "backend", "failover", "dialect", "request", "response", "chunk", "event")
    rng = random.Random(6)
    out: list[str] = []
    size = 0
    while size < LARGE_PROMPT_BYTES:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return "Summarise this log: " + " ".join(out)


class BenchStack(Stack):
    """The gateway stack plus the bench's upstreams and floor Envoy, started and stopped together."""

    def __init__(self, run_dir: Path, workers: int, envoy_concurrency: int = 2):
        self.ports = Ports(workers)
        self.keys = {k: secrets.token_urlsafe(18) for k in ENV_KEYS}
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "gateway.yaml"
        path.write_text(yaml.safe_dump(gateway_config_dict(self.ports, workers), sort_keys=False))
        super().__init__(path, run_dir=run_dir / "run", envoy_concurrency=envoy_concurrency,
                         env={ENV_KEYS[k]: v for k, v in self.keys.items()})

    def _start(self, timeout: float) -> None:
        assert self.run_dir is not None
        p, k = self.ports, self.keys
        canned = upstream.canned_bootstrap(p.canned, p.canned_admin, k["openai"], k["anthropic"])
        floor = upstream.floor_bootstrap(p.floor, p.floor_admin, p.canned, p.stream)
        self._spawn("bench-stream-upstream", [sys.executable, "-m", "ext_proc.bench.upstream", "--port", str(p.stream)])
        for name, bootstrap, port in (("bench-canned-upstream", canned, p.canned), ("bench-floor", floor, p.floor)):
            path = self.run_dir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
            self._spawn(name, [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency",
                               str(self.envoy_concurrency), "--log-level", "warning"])
            self._wait(name, [("127.0.0.1", port)], timeout)
        self._wait("bench-stream-upstream", [("127.0.0.1", p.stream)], timeout)
        super()._start(timeout)

    def pids(self, prefix: str) -> list[int]:
        return [c.proc.pid for c in self.children if c.name.startswith(prefix) and c.proc]

    # ---- requests ---------------------------------------------------------------------
    def requests(self) -> dict[str, Request]:
        """Every probe's request: the floors and the gateway scenarios."""
        p, k = self.ports, self.keys
        prompt = "Write a haiku about load balancers."
        large = _large_prompt()
        tenant = {"authorization": f"Bearer {k['tenant']}", "content-type": "application/json"}
        to_openai = {"authorization": f"Bearer {k['openai']}", "content-type": "application/json"}
        paced = {"x-api-key": k["stream"], "anthropic-version": "2023-06-01", "content-type": "application/json",
                 upstream.TARGET_HEADER: "stream"}
        chat = "/v1/chat/completions"
        return {
            "floor": Request(p.floor, chat, to_openai, _chat("bench-passthrough", prompt)),
            "floor-large": Request(p.floor, chat, to_openai, _chat("bench-passthrough", large)),
            "floor-stream": Request(p.floor, "/v1/messages", paced, _chat("claude-bench", prompt, stream=True)),
            "upstream": Request(p.canned, chat, to_openai, _chat("bench-passthrough", prompt)),
            "passthrough": Request(p.listen, chat, tenant, _chat("bench-passthrough", prompt)),
            "translated": Request(p.listen, chat, tenant, _chat("bench-translated", prompt)),
            "large": Request(p.listen, chat, tenant, _chat("bench-translated", large)),
            "streamed": Request(p.listen, chat, tenant, _chat("bench-streamed", prompt, stream=True)),
        }

    def slow_stream(self, events: int, pace_ms: int) -> Request:
        """The streamed scenario's request, paced slowly so many streams stay open at once."""
        req = self.requests()["streamed"]
        headers = {**req.headers, upstream.PACE_HEADER: str(pace_ms), upstream.EVENTS_HEADER: str(events)}
        return Request(req.port, req.path, headers, req.body)
