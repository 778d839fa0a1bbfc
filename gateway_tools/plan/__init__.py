"""``llm-gateway plan``: how many model servers meet a latency SLO over the day, at what GPU cost,
and how much traffic should spill to which API provider when the pool is capped.

Input: a traffic file (``traffic:`` requests/s for each hour, token distributions,
prefix sharing, streamed share; ``slo:`` TTFT p90 and time per output token p90)
and a server profile (prefill speed, decode step time by batch size, KV blocks,
max_num_seqs, price per hour; ``profiles/`` ships one calibrated from a
published vLLM benchmark). API prices come from the gateway config's backends.
Writes ``OUT/report.json``, ``report.md`` and PNG plots. With ``--servers N
--rate R`` it prints the predicted figures for one pool size instead, the
number to compare with a measured run. See docs/capacity.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``plan`` subcommand on the ``llm-gateway`` parser."""
    p = sub.add_parser(
        "plan",
        help="capacity plan: servers per hour for an SLO, GPU cost, spill-over to API providers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("traffic", help="traffic file (YAML with traffic: and slo:)")
    p.add_argument(
        "--server",
        default="llama-3.1-8b-h100",
        help="server profile: a YAML file or a shipped profile's name (default llama-3.1-8b-h100)",
    )
    p.add_argument(
        "--config",
        "-c",
        help="gateway config whose backends' prices are compared (default: the embedded config)",
    )
    p.add_argument("--model", help="only this model's backends (default: every priced backend)")
    p.add_argument("--max-servers", type=int, help="cap on the pool: what is over it spills to an API")
    p.add_argument("--out", "-o", default="plan-report", help="report directory (default plan-report)")
    p.add_argument("--window", type=float, default=120.0, help="simulated seconds per point (default 120)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--policy",
        default="affinity",
        choices=["affinity", "least_loaded", "round_robin", "random"],
        help="how the simulated picker spreads requests (default affinity: the gateway's prefix affinity)",
    )
    p.add_argument("--servers", type=int, help="predict for this many servers only (needs --rate)")
    p.add_argument("--rate", type=float, help="with --servers: requests/s to predict for")
    p.add_argument(
        "--measured",
        metavar="REPORT_JSON",
        help="with --servers/--rate: compare the predicted TTFT p90 with a measured one "
        "(a `loadtest` report.json, its ttft_ms.p90, or any JSON with ttft_p90_ms); exit 1 outside --tolerance",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.2, help="with --measured: relative error allowed (default 0.2)"
    )
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from ext_proc.config import ConfigError, load_config

    from . import report
    from .model import PlanInputError, load_plan_input, load_server
    from .planner import ApiPrice, Planner, plan

    try:
        traffic, slo = load_plan_input(args.traffic)
        server = load_server(args.server)
        if (args.servers is None) != (args.rate is None):
            raise PlanInputError("--servers and --rate go together")
        measured = _measured_ttft_p90_ms(args.measured) if args.measured else None
        if measured is not None and args.servers is None:
            raise PlanInputError("--measured needs --servers and --rate (the pool it was measured on)")
        if args.max_servers is not None and args.max_servers < 1:
            raise PlanInputError("--max-servers: at least 1")
        cfg = load_config(args.config)
        if args.model and args.model not in cfg.models:
            raise PlanInputError(f"--model: {args.model!r} is not a model of {cfg.source}")
    except (PlanInputError, ConfigError) as e:
        print(f"llm-gateway plan: {e}", file=sys.stderr)
        return 2
    planner = Planner(traffic, slo, server, window=args.window, seed=args.seed, policy=args.policy)
    if args.servers is not None:
        pred = planner.predict(args.servers, args.rate)
        pred["meets_slo"] = planner.meets(pred)
        code = 0
        if measured is not None:
            predicted = pred["ttft_p90_s"] * 1000
            error = (predicted - measured) / measured if measured > 0 else math.inf
            pred["measured_ttft_p90_ms"] = measured
            pred["ttft_p90_relative_error"] = error
            pred["within_tolerance"] = abs(error) <= args.tolerance
            code = 0 if pred["within_tolerance"] else 1
        print(json.dumps({k: _json(v) for k, v in pred.items()}, indent=2))
        return code
    names = cfg.chains[args.model] if args.model else cfg.backends.values()
    prices = [
        ApiPrice(b.name, b.price.input, b.price.output, b.price.cached_input)
        for b in names
        if b.price is not None
    ]
    result = plan(planner, prices, max_servers=args.max_servers)
    files = report.write(result, Path(args.out))
    peak, cost = result["peak"], result["cost"]
    print(
        f"peak hour {peak['hour']}: {peak['rate_rps']:g} req/s needs {peak['servers_needed']} servers; "
        f"GPU {cost['gpu_usd_per_day_autoscaled']} USD/day; own {cost['own_usd_per_million_tokens']} USD/M tokens"
        + (
            f"; spill at peak {peak['spill_rps']:.2f} req/s to {peak['spill_to']}"
            if peak["spill_rps"]
            else ""
        )
        + f"\n  report: {files[-1]}"
    )
    return 0


def _measured_ttft_p90_ms(path: str) -> float:
    """TTFT p90 in ms from a ``loadtest`` report.json (``ttft_ms.p90``) or a JSON with ``ttft_p90_ms``."""
    from .model import PlanInputError

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PlanInputError(f"--measured {path}: cannot read JSON: {e}") from None
    v = (d.get("ttft_ms") or {}).get("p90") if isinstance(d, dict) else None
    if v is None and isinstance(d, dict):
        v = d.get("ttft_p90_ms")
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise PlanInputError(f"--measured {path}: no TTFT p90 (ttft_ms.p90 or ttft_p90_ms) in it")
    return float(v)


def _json(v: object) -> object:
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else None
    return v
