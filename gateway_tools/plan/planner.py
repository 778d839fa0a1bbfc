"""How many servers meet the SLO at each hour, what they cost, and what spills to API providers.

Why per hour and by search: load over a day is what sizes a pool, and the
simulation (``sim.simulate``) is monotone enough in the server count (common
random numbers: the same requests at every size) that a galloping search
followed by bisection finds the smallest passing count in a handful of runs.
Results are memoised by (rate, servers), so hours with the same load cost
nothing extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .model import Server, Slo, Traffic
from .sim import simulate


@dataclass(frozen=True)
class ApiPrice:
    """An API backend's price from the gateway config, USD per million tokens."""

    backend: str
    input: float
    output: float
    cached_input: float | None = None


@dataclass
class Planner:
    traffic: Traffic
    slo: Slo
    server: Server
    window: float = 120.0
    warmup: float = 30.0
    seed: int = 1
    policy: str = "affinity"
    max_servers_search: int = 4096
    runs: int = 0
    _memo: dict[tuple[float, int], dict[str, Any]] = field(default_factory=dict)
    _unmeetable: bool | None = None

    def predict(self, n_servers: int, rate: float) -> dict[str, Any]:
        """The simulation's figures for ``n_servers`` at ``rate`` requests/s (TTFT p90 and the rest):
        what a measured run against a real or simulated pool of that size is compared with."""
        key = (round(rate, 6), n_servers)
        if key not in self._memo:
            self.runs += 1
            self._memo[key] = simulate(
                self.traffic,
                self.server,
                n_servers,
                rate,
                window=self.window,
                warmup=self.warmup,
                seed=self.seed,
                policy=self.policy,
            )
        return self._memo[key]

    def meets(self, r: dict[str, Any]) -> bool:
        return (
            r["completed"] == r["requests"]
            and r["ttft_p90_s"] <= self.slo.ttft_p90_s
            and (math.isnan(r["tpot_p90_s"]) or r["tpot_p90_s"] <= self.slo.tpot_p90_s)
        )

    def servers_needed(self, rate: float) -> int | None:
        """The smallest server count meeting the SLO at ``rate`` (0 for no traffic; None if even
        ``max_servers_search`` do not: the per-request latency alone breaks the SLO)."""
        if rate <= 0:
            return 0
        if self._latency_bound():
            return None
        lo, hi = 0, 1  # lo fails (or is 0), hi is the candidate
        while not self.meets(self.predict(hi, rate)):
            lo, hi = hi, hi * 2
            if hi > self.max_servers_search:
                return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.meets(self.predict(mid, rate)):
                hi = mid
            else:
                lo = mid
        return hi

    def _latency_bound(self) -> bool:
        """Does the SLO fail with an idle server (a request's own prefill or decode is too slow)?"""
        if self._unmeetable is None:
            r = simulate(self.traffic, self.server, 1, 0.05, window=400, warmup=0, seed=self.seed)
            self._unmeetable = not self.meets(r)
        return self._unmeetable

    def max_rate(self, n_servers: int, up_to: float, iters: int = 7) -> float:
        """The highest rate (<= ``up_to``) that ``n_servers`` serve within the SLO (bisection)."""
        if n_servers <= 0:
            return 0.0
        if self.meets(self.predict(n_servers, up_to)):
            return up_to
        lo, hi = 0.0, up_to
        for _ in range(iters):
            mid = (lo + hi) / 2
            if self.meets(self.predict(n_servers, mid)):
                lo = mid
            else:
                hi = mid
        return lo


def token_mix(traffic: Traffic) -> dict[str, float]:
    """Expected tokens per request: own input, shared-prefix input, output."""
    return {
        "own_input": traffic.input_tokens.expected(),
        "prefix_input": traffic.prefix_share * traffic.prefix_tokens,
        "output": traffic.output_tokens.expected(),
    }


def api_cost_per_request(price: ApiPrice, mix: dict[str, float]) -> float:
    """USD per request on an API backend. Shared-prefix tokens are billed at its cached-input price
    (providers cache a repeated prefix for minutes; steady traffic keeps it warm), the rest in full."""
    cached_price = price.input if price.cached_input is None else price.cached_input
    return (
        mix["own_input"] * price.input + mix["prefix_input"] * cached_price + mix["output"] * price.output
    ) / 1e6


def plan(
    planner: Planner,
    prices: list[ApiPrice],
    max_servers: int | None = None,
) -> dict[str, Any]:
    """Every figure of the plan as one JSON-ready dict (report.py renders it)."""
    traffic, server = planner.traffic, planner.server
    mix = token_mix(traffic)
    tokens_per_req = sum(mix.values())
    hours: list[dict[str, Any]] = []
    for h, rate in enumerate(traffic.hourly_rps):
        need = planner.servers_needed(rate)
        row: dict[str, Any] = {"hour": h, "rate_rps": rate, "servers_needed": need}
        run = need if need is not None else None
        if max_servers is not None and (need is None or need > max_servers):
            run = max_servers
        row["servers"] = run
        if run:
            carried = planner.max_rate(run, rate) if run != need else rate
            row["carried_rps"] = carried
            row["spill_rps"] = rate - carried
            pred = planner.predict(run, carried) if carried > 0 else None
        else:
            row["carried_rps"] = 0.0
            row["spill_rps"] = rate
            pred = None
        if pred is not None:
            row.update(
                {
                    "ttft_p50_ms": _ms(pred["ttft_p50_s"]),
                    "ttft_p90_ms": _ms(pred["ttft_p90_s"]),
                    "tpot_p90_ms": _ms(pred["tpot_p90_s"]),
                    "e2e_p90_s": None
                    if not math.isfinite(pred["e2e_p90_s"])
                    else round(pred["e2e_p90_s"], 2),
                    "prefix_hit_rate": round(pred["prefix_hit_rate"], 3),
                    "mean_batch": round(pred["mean_batch"], 1),
                }
            )
        row["gpu_usd"] = (run or 0) * server.gpu_hour_usd
        row["tokens_on_servers"] = row["carried_rps"] * 3600 * tokens_per_req
        hours.append(row)

    peak = max(hours, key=lambda r: r["rate_rps"])
    gpu_day = sum(r["gpu_usd"] for r in hours)
    own_tokens = sum(r["tokens_on_servers"] for r in hours)
    total_reqs = sum(r["rate_rps"] * 3600 for r in hours)
    spilled_reqs = sum(r["spill_rps"] * 3600 for r in hours)
    fixed_servers = max((r["servers"] or 0) for r in hours)
    hit = _weighted_hit(hours)
    api = []
    for p in prices:
        per_req = api_cost_per_request(p, mix)
        api.append(
            {
                "backend": p.backend,
                "usd_per_million_tokens": round(per_req / tokens_per_req * 1e6, 3),
                "usd_per_day_all_traffic": round(per_req * total_reqs, 2),
                "usd_per_day_spill": round(per_req * spilled_reqs, 2),
            }
        )
    api.sort(key=lambda a: a["usd_per_million_tokens"])
    spill_to = api[0]["backend"] if api else None
    return {
        "traffic": traffic.name,
        "server": {
            "name": server.name,
            "source": server.source,
            "gpu_hour_usd": server.gpu_hour_usd,
            "prefill_tokens_per_s": server.prefill_tokens_per_s,
            "decode_step_ms": server.decode_step_ms,
            "kv_blocks": server.kv_blocks,
            "max_num_seqs": server.max_num_seqs,
        },
        "slo": {"ttft_p90_ms": planner.slo.ttft_p90_s * 1000, "tpot_p90_ms": planner.slo.tpot_p90_s * 1000},
        "simulation": {
            "window_s": planner.window,
            "warmup_s": planner.warmup,
            "seed": planner.seed,
            "policy": planner.policy,
            "runs": planner.runs,
        },
        "max_servers": max_servers,
        "token_mix_per_request": {k: round(v, 1) for k, v in mix.items()},
        "streamed_share": traffic.streamed_share,
        "hours": hours,
        "peak": {
            "hour": peak["hour"],
            "rate_rps": peak["rate_rps"],
            "servers_needed": peak["servers_needed"],
            "servers": peak["servers"],
            "spill_rps": peak["spill_rps"],
            "spill_to": spill_to if peak["spill_rps"] > 0 else None,
        },
        "cost": {
            "gpu_usd_per_day_autoscaled": round(gpu_day, 2),
            "gpu_usd_per_day_fixed_at_peak": round(fixed_servers * 24 * server.gpu_hour_usd, 2),
            "own_usd_per_million_tokens": round(gpu_day / own_tokens * 1e6, 3) if own_tokens else None,
            "own_usd_per_million_tokens_fixed": (
                round(fixed_servers * 24 * server.gpu_hour_usd / own_tokens * 1e6, 3) if own_tokens else None
            ),
            "api": api,
            "spill_to": spill_to,
            "spill_usd_per_day": api[0]["usd_per_day_spill"] if api else None,
            "prefix_hit_rate": round(hit, 3),
        },
        "unmeetable_hours": [r["hour"] for r in hours if r["servers_needed"] is None and r["rate_rps"] > 0],
    }


def _weighted_hit(hours: list[dict[str, Any]]) -> float:
    w = sum(r["carried_rps"] for r in hours if "prefix_hit_rate" in r)
    if not w:
        return 0.0
    return sum(r["prefix_hit_rate"] * r["carried_rps"] for r in hours if "prefix_hit_rate" in r) / w


def _ms(v: float) -> float | None:
    return None if not math.isfinite(v) else round(v * 1000, 1)
