"""``llm-gateway status``: what the running gateway is doing, at a glance.

Three sources, all read-only: the supervisor (config version, last reload),
Envoy's admin API (per backend host: health, in-flight, errors, sampled twice
for a recent error rate) and the ext_proc workers' Prometheus metrics
(backend health as routing sees it, adaptive limits, budgets).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ext_proc.config import ConfigError, GatewayConfig, parse_config, retirement_warnings

from .supervisor import StackError, control_request

HEALTH_NAMES = {0: "healthy", 1: "cooling down", 2: "probing"}


@dataclass
class BackendView:
    name: str
    envoy_health: set[str] = field(default_factory=set)
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    recent_requests: int = 0
    recent_errors: int = 0
    routing_health: str = "healthy"
    limit: float | None = None


def _get(url: str, timeout: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def envoy_hosts(cfg: GatewayConfig) -> dict[str, dict[str, Any]]:
    """Per backend: Envoy's host counters and health, summed over the clusters it is in."""
    data = json.loads(_get(f"http://{cfg.admin.address}:{cfg.admin.port}/clusters?format=json"))
    by_address: dict[str, list[str]] = defaultdict(list)
    for b in cfg.backends.values():
        # A pool's servers all count for its backend.
        for address in b.provider.endpoints or [f"{b.provider.host}:{b.provider.port}"]:
            by_address[address].append(b.name)
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"health": set(), "rq_active": 0, "rq_total": 0, "rq_error": 0}
    )
    for cluster in data.get("cluster_statuses", []):
        if "/model/" not in cluster["name"] and not cluster["name"].startswith("model/"):
            continue
        model = cluster["name"].split("model/", 1)[1].split("/from-tier-")[0]
        chain = {b.name for b in cfg.chains.get(model, [])}
        for host in cluster.get("host_statuses", []):
            sa = host["address"]["socket_address"]
            port = sa["port_value"]
            known = by_address.get(f"{sa['address']}:{port}") or by_address.get(
                f"{host.get('hostname')}:{port}", []
            )
            names = [n for n in known if n in chain]
            if not names:
                names = [f"{host.get('hostname', sa['address'])}:{sa['port_value']}"]
            stats = {s["name"]: int(s.get("value", 0)) for s in host.get("stats", [])}
            health = host.get("health_status", {})
            flags = {k for k, v in health.items() if v is True}
            if health.get("eds_health_status", "HEALTHY") != "HEALTHY":
                flags.add(health["eds_health_status"].lower())
            for name in names[:1]:
                entry = out[name]
                entry["health"] |= flags
                for key in ("rq_active", "rq_total", "rq_error"):
                    entry[key] += stats.get(key, 0)
    return out


def worker_metrics(cfg: GatewayConfig) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of every worker's metrics, by sample name (unreachable workers are skipped)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for port in cfg.metrics_ports():
        try:
            text = _get(f"http://{cfg.ext_proc.address}:{port}/metrics").decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[s.name].append((s.labels, s.value))
    return samples


def collect(cfg: GatewayConfig, interval: float = 1.0) -> dict[str, Any]:
    first = envoy_hosts(cfg)
    time.sleep(interval)
    second = envoy_hosts(cfg)
    metrics = worker_metrics(cfg)
    views: dict[str, BackendView] = {name: BackendView(name) for name in cfg.backends}
    for name, now in second.items():
        v = views.setdefault(name, BackendView(name))
        before = first.get(name, now)
        v.envoy_health = now["health"]
        v.in_flight = now["rq_active"]
        v.requests, v.errors = now["rq_total"], now["rq_error"]
        v.recent_requests = now["rq_total"] - before["rq_total"]
        v.recent_errors = now["rq_error"] - before["rq_error"]
    worst: dict[str, int] = {}
    for labels, value in metrics.get("llm_gateway_backend_health", []):
        b = labels.get("backend", "")
        worst[b] = max(worst.get(b, 0), int(value))
    for b, state in worst.items():
        if b in views:
            views[b].routing_health = HEALTH_NAMES.get(state, str(state))
    for labels, value in metrics.get("llm_gateway_backend_concurrency_limit", []):
        b = labels.get("backend", "")
        if b in views:
            views[b].limit = value if views[b].limit is None else min(views[b].limit, value)
    tenants: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in metrics.get("llm_gateway_budget_remaining", []):
        tenants[labels.get("tenant", "?")][labels.get("budget", labels.get("kind", "?"))] = value
    pools: dict[str, dict[str, float]] = defaultdict(dict)
    for name, key in (
        ("llm_gateway_pool_cost_usd_per_hour", "usd_per_hour"),
        ("llm_gateway_pool_usd_per_million_output_tokens", "usd_per_million_output_tokens"),
    ):
        for labels, value in metrics.get(name, []):
            pools[labels.get("pool", "?")].setdefault(key, value)  # every worker scrapes alike
    return {"backends": views, "tenants": dict(tenants), "interval": interval, "pools": dict(pools)}


def cost_lines(cfg: GatewayConfig, pools: dict[str, dict[str, float]]) -> list[str]:
    """USD per million output tokens of every backend that has a figure: own GPUs (a pool with
    ``gpu_hour_usd``, at the rate its servers generate now) next to each API backend's price."""
    out = []
    for b in cfg.backends.values():
        pool = pools.get(b.provider_name)
        if pool is not None:
            per_m = pool.get("usd_per_million_output_tokens")
            figure = f"{per_m:.3g} USD on own GPUs at the current load" if per_m is not None else "idle"
            out.append(f"  {b.name}: {figure} ({pool.get('usd_per_hour', 0):g} USD/h)")
        elif b.price is not None:
            out.append(f"  {b.name}: {b.price.output:g} USD (API price; input {b.price.input:g})")
    return ["", "COST per million output tokens", *out] if out else []


def render(cfg: GatewayConfig, info: dict[str, Any], data: dict[str, Any]) -> str:
    lines = [
        f"llm-gateway on {cfg.listen.address}:{cfg.listen.port} — config {info.get('version', '?')} "
        f"({info.get('config', cfg.source)})"
    ]
    last = info.get("last_reload") or {}
    if last:
        ago = time.time() - float(last.get("at", time.time()))
        lines.append(f"last config change: {last.get('result')} ({last.get('version')}, {ago:.0f}s ago)")
        lines += [f"  {e}" for e in last.get("errors", [])]
    lines.append("")
    lines.append(
        f"{'BACKEND':<34} {'HEALTH':<14} {'ENVOY':<16} {'IN-FLIGHT':>9} {'LIMIT':>6} "
        f"{'ERR (last ' + format(data['interval'], 'g') + 's)':>16} {'REQUESTS':>9}"
    )
    for v in data["backends"].values():
        envoy = ",".join(sorted(v.envoy_health)) or "ok"
        recent = f"{v.recent_errors}/{v.recent_requests}" if v.recent_requests else "-"
        limit = f"{v.limit:.0f}" if v.limit is not None else "-"
        lines.append(
            f"{v.name:<34} {v.routing_health:<14} {envoy:<16} {v.in_flight:>9} {limit:>6} "
            f"{recent:>16} {v.requests:>9}"
        )
    warnings = retirement_warnings(cfg)
    if warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in warnings]
    lines.append("")
    lines.append("MODEL -> failover order")
    for model, chain in cfg.chains.items():
        lines.append(
            f"  {model}: "
            + " -> ".join(
                f"{b.name}"
                + (f" (tier {b.tier}, w{b.weight})" if sum(1 for c in chain if c.tier == b.tier) > 1 else "")
                for b in chain
            )
        )
    if any(p for p in data.get("pools", {}).values()):
        lines += cost_lines(cfg, data["pools"])
    if data["tenants"]:
        lines.append("")
        lines.append("TENANT budgets remaining")
        for tenant, budgets in sorted(data["tenants"].items()):
            lines.append(f"  {tenant}: " + ", ".join(f"{k} {v:g}" for k, v in sorted(budgets.items())))
    return "\n".join(lines)


def run_status(cfg: GatewayConfig, interval: float = 1.0, as_json: bool = False) -> int:
    try:
        info = control_request(cfg.listen.port, {"op": "status"}, timeout=10)
        # Describe the config the gateway runs, which `apply` may have changed since the file was read.
        cfg = parse_config(str(info["text"]), str(info.get("config", cfg.source)))
    except (StackError, KeyError, ConfigError):
        info = {}
    try:
        data = collect(cfg, interval)
    except OSError as e:
        print(f"llm-gateway status: the gateway on port {cfg.listen.port} does not answer ({e})")
        return 1
    if as_json:
        out = {
            "config": info,
            "warnings": retirement_warnings(cfg),
            "backends": {
                k: vars(v) | {"envoy_health": sorted(v.envoy_health)} for k, v in data["backends"].items()
            },
            "tenants": data["tenants"],
            "pools": data.get("pools", {}),
        }
        print(json.dumps(out, indent=2))
    else:
        print(render(cfg, info, data))
    return 0
