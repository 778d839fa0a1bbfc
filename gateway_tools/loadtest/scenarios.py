"""The scenarios: what traffic to send and what to do to the system while it runs.

- ``steady``: constant rate (or fixed concurrency), the whole mix.
- ``spike``: one tenant at its budget, then a burst to 3x the budget, then back.
  With a budget configured, admission holds the provider-side rate flat and
  rejects the excess with 429; with none, the providers see the whole burst.
- ``outage``: a mock provider drops every connection for the second quarter
  of the run; failover should make it invisible to clients.
- ``reconfigure``: ``llm-gateway apply`` with another config halfway through;
  reported as not available when this version has no ``apply`` command.
- ``pool``: load on a model served by a pool of model servers rises to 3x for the middle
  half: the pool saturates, interactive requests spill over to the next tier and batch
  ones are shed with 429. The report adds the gateway's pool metrics over time (per-server
  queue and KV use, picks by reason, spill-over and shedding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ext_proc.config import GatewayConfig, key_digest

from . import report
from .runner import Action, Engine, Segment
from .traffic import Mix, Tenant

SCENARIOS = ("steady", "spike", "outage", "reconfigure", "pool")
POOL_FACTOR = 3
SPIKE_FACTOR = 3


class ScenarioUnavailable(Exception):
    """The scenario cannot run against this gateway version; the message says why."""


@dataclass
class Settings:
    """Everything one run needs; the CLI and the tests both build one."""

    url: str
    config: GatewayConfig
    duration: float = 30.0
    rate: float = 10.0
    concurrency: int = 0
    models: dict[str, float] = field(default_factory=dict)
    dialects: dict[str, float] = field(
        default_factory=lambda: {"openai": 1.0, "anthropic": 1.0, "gemini": 1.0}
    )
    stream_fraction: float = 0.5
    prompt_words: dict[int, float] = field(default_factory=lambda: {8: 6.0, 64: 3.0, 256: 1.0})
    # what each request asks for; a mock answers at once, a (simulated) model server generates them all
    max_tokens: int = 1024
    api_keys: list[str] = field(default_factory=list)
    spike_tenant: str | None = None
    budget_rps: float | None = None
    outage_provider: str | None = None
    apply_config: str | None = None
    seed: int = 1
    poisson: bool = False
    max_in_flight: int = 256
    timeout: float = 60.0
    sample_interval: float = 0.5
    progress: bool = False

    def tenants(self) -> list[Tenant]:
        """Tenants named as the gateway knows them (by key digest), else by position."""
        names = {
            k.sha256: t for t, tenant in self.config.tenants.items() for k in tenant.api_keys if k.sha256
        }
        # keys read from the environment (as `up` reads them) name their tenant too
        names |= {
            key_digest(os.environ[k.env]): t
            for t, tenant in self.config.tenants.items()
            for k in tenant.api_keys
            if k.env and os.environ.get(k.env)
        }
        return [Tenant(names.get(key_digest(k), f"tenant-{i + 1}"), k) for i, k in enumerate(self.api_keys)]

    def mix(self) -> Mix:
        return Mix(
            models=self.models or dict.fromkeys(self.config.models, 1.0),
            dialects=self.dialects,
            stream_fraction=self.stream_fraction,
            prompt_words=self.prompt_words,
            tenants=[(t, 1.0) for t in self.tenants()],
            seed=self.seed,
            max_tokens=self.max_tokens,
        )

    def mock_urls(self) -> dict[str, str]:
        """Provider name -> base URL of its mock's ``/_mock`` API (the server's root)."""
        out = {}
        for name, p in self.config.mock_providers().items():
            host = "127.0.0.1" if p.host in ("0.0.0.0", "::") else p.host
            out[name] = f"{p.url.scheme}://{host}:{p.port}"
        return out

    def pool_servers(self) -> dict[str, list[str]]:
        """Pool provider name -> its servers' base URLs (the endpoints as configured)."""
        return {
            name: [f"http://{e}" for e in p.endpoints]
            for name, p in self.config.providers.items()
            if p.endpoints
        }

    def gateway_metrics(self) -> list[str]:
        """The ext_proc workers' ``/metrics`` URLs (worker i serves on metrics_port + i)."""
        e = self.config.ext_proc
        host = "127.0.0.1" if e.address in ("0.0.0.0", "::") else e.address
        return [f"http://{host}:{e.metrics_port + i}/metrics" for i in range(e.workers)]

    def provider_of(self, backend: str) -> str:
        b = self.config.backends.get(backend)
        return b.provider_name if b else backend.partition("/")[0]

    def primary_of(self, model: str) -> str:
        chain = self.config.chains.get(model)
        return chain[0].name if chain else ""


def _mock_call(method: str, url: str, body: dict[str, Any] | None = None) -> str:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return f"HTTP {r.status}"


@dataclass
class Plan:
    segments: list[Segment]
    actions: list[Action]
    description: str
    cleanup: list[tuple[str, str]] = field(default_factory=list)  # (method, url) to run whatever happens


def plan(scenario: str, s: Settings) -> Plan:
    """Traffic and actions of ``scenario``; raises ``ScenarioUnavailable`` or ``ValueError``."""
    d = s.duration
    whole = [Segment(0.0, d, s.rate)]
    if scenario == "steady":
        return Plan(
            whole,
            [],
            "Constant load with the whole mix of dialects, models, streaming, prompt sizes and tenants.",
        )
    if scenario == "spike":
        if s.concurrency:
            raise ValueError("spike is open-loop: give --rate, not --concurrency")
        tenants = s.tenants() or [Tenant("anonymous", "")]
        tenant = (
            next((t for t in tenants if t.name == s.spike_tenant), None) if s.spike_tenant else tenants[0]
        )
        if tenant is None:
            raise ValueError(f"--spike-tenant {s.spike_tenant}: no --key belongs to that tenant")
        budget = s.budget_rps or s.rate
        burst = SPIKE_FACTOR * budget
        segs = [
            Segment(0.0, d / 3, budget, tenant),
            Segment(d / 3, 2 * d / 3, burst, tenant),
            Segment(2 * d / 3, d, budget, tenant),
        ]

        async def mark() -> str:
            return ""

        acts = [Action(d / 3, f"burst: {burst:g} rps", mark), Action(2 * d / 3, "burst ends", mark)]
        return Plan(
            segs,
            acts,
            f"Tenant `{tenant.name}` sends {budget:g} requests/s (its budget), bursts to "
            f"{burst:g} requests/s ({SPIKE_FACTOR}x) for the middle third, then drops back.",
        )
    if scenario == "outage":
        mocks = s.mock_urls()
        provider = s.outage_provider or s.provider_of(
            s.primary_of(max(s.mix().models.items(), key=lambda kv: kv[1])[0])
        )
        if provider not in mocks:
            raise ValueError(
                f"outage: provider '{provider}' is not a mock provider of {s.config.source} "
                f"(mocks: {', '.join(mocks) or 'none'})"
            )
        faults = mocks[provider] + "/_mock/faults"

        async def down() -> str:
            return await asyncio.to_thread(_mock_call, "POST", faults, {"mode": "down"})

        async def up() -> str:
            return await asyncio.to_thread(_mock_call, "DELETE", faults)

        # Down for the second quarter: the rest of the run shows recovery, which waits for Envoy's
        # outlier ejection of the provider to expire (10 s, longer after repeated ejections).
        acts = [Action(d / 4, f"{provider} down", down), Action(d / 2, f"{provider} back", up)]
        return Plan(
            whole,
            acts,
            f"Provider `{provider}` drops every connection (mock fault `down`) for the "
            "second quarter of the run; its requests should fail over to the next backend "
            "without a client seeing an error. Traffic returns to it once Envoy's outlier "
            "ejection expires (10 s after the first ejection, longer after repeated ones).",
            cleanup=[("DELETE", faults)],
        )
    if scenario == "pool":
        if s.concurrency:
            raise ValueError("pool is open-loop: give --rate, not --concurrency")
        pools = set(s.pool_servers())
        served = [m for m in s.mix().models if s.provider_of(s.primary_of(m)) in pools]
        if not served:
            raise ValueError(
                f"pool: no model of the mix is served first by a pool in {s.config.source} "
                "(give --models MODEL with a pool as its first backend)"
            )
        high = s.rate * POOL_FACTOR

        async def note() -> str:
            return ""

        return Plan(
            [Segment(0.0, d / 4, s.rate), Segment(d / 4, 3 * d / 4, high), Segment(3 * d / 4, d, s.rate)],
            [Action(d / 4, f"load x{POOL_FACTOR}: {high:g} rps", note), Action(3 * d / 4, "load back", note)],
            f"Load on the pool-served model(s) {', '.join(served)} at {s.rate:g} requests/s, "
            f"{high:g} ({POOL_FACTOR}x) for the middle half, then back. Past the pool's saturation "
            "the gateway sends interactive requests to the next tier (spill-over) and refuses batch "
            "ones with 429 and Retry-After (shedding), so the servers' queues stay bounded.",
        )
    if scenario == "reconfigure":
        if not s.apply_config:
            raise ValueError("reconfigure needs --apply-config FILE: the configuration to apply mid-run")
        target = s.apply_config

        async def apply() -> str:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway_tools",
                "apply",
                target,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
            last = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return f"exit code {proc.returncode}: {last[0][:200]}"

        return Plan(
            whole,
            [Action(d / 2, f"apply {Path(target).name}", apply)],
            f"`llm-gateway apply {Path(target).name}` halfway through, under load.",
        )
    raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")


def _settings_json(s: Settings, p: Plan) -> dict[str, Any]:
    return {
        "url": s.url,
        "config": Path(s.config.source).name,
        "duration_s": s.duration,
        "rate": None if s.concurrency else s.rate,
        "concurrency": s.concurrency or None,
        "arrivals": "poisson" if s.poisson else "uniform",
        "seed": s.seed,
        "models": s.mix().models,
        "dialects": s.dialects,
        "stream_fraction": s.stream_fraction,
        "prompt_words": s.prompt_words,
        "max_tokens": s.max_tokens,
        "tenants": [t.name for t in s.tenants()] or ["anonymous"],
        "max_in_flight": s.max_in_flight,
        "sample_interval_s": s.sample_interval,
        "description": p.description,
    }


def run(scenario: str, s: Settings) -> dict[str, Any]:
    """Run one scenario and return its report (not yet written to disk)."""
    p = plan(scenario, s)
    engine = Engine(
        url=s.url.rstrip("/"),
        mix=s.mix(),
        duration=s.duration,
        mocks=s.mock_urls(),
        sims=s.pool_servers(),
        gateway_metrics=s.gateway_metrics() if s.pool_servers() else [],
        sample_interval=s.sample_interval,
        max_in_flight=s.max_in_flight,
        timeout=s.timeout,
        progress=s.progress,
        label=scenario,
    )
    try:
        asyncio.run(
            engine.run(
                p.segments,
                concurrency=s.concurrency if scenario != "spike" else 0,
                actions=p.actions,
                poisson=s.poisson,
                seed=s.seed,
            )
        )
    finally:
        for method, url in p.cleanup:  # a fault must never outlive the run
            with contextlib.suppress(OSError):
                _mock_call(method, url)
    settings = _settings_json(s, p)
    out = report.build(
        scenario,
        engine.results,
        engine.samples,
        engine.events,
        settings,
        s.duration,
        engine.dropped,
        s.provider_of,
        s.primary_of,
    )
    if scenario == "spike":
        settings["note"] = (
            f"The gateway rejected {out['totals']['rejected']} requests with 429: admission held the provider-side "
            "rate near the budget."
            if out["totals"]["rejected"]
            else "No request was rejected: no budget limits this tenant in the gateway's configuration, so the "
            "providers saw the whole burst. With a budget configured, admission holds the provider-side rate "
            "flat at the budget and rejects the excess with 429 (orange in the throughput plot)."
        )
    return out
