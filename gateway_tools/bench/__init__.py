"""``llm-gateway bench``: a benchmark operators run on their own hardware.

Everything runs on one machine, so every figure is reported relative to a
floor (bare Envoy to the same upstream) measured in the same run, and the
scenarios alternate round by round so drift hits them all alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .runner import Options, run

__all__ = ["Options", "add_parser", "run"]


def _names() -> list[str]:
    from .scenarios import GROUPS, PROBES

    return [*PROBES, *GROUPS]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``bench`` subcommand on the ``llm-gateway`` parser."""
    from .scenarios import GROUPS

    names = _names()
    groups = "; ".join(f"{g} = {' + '.join(m)}" for g, m in GROUPS.items())
    p = sub.add_parser(
        "bench",
        help="benchmark the gateway against bare Envoy on this machine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, help="seconds per measurement (default 5; --quick: 1)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections for throughput (default 32)")
    p.add_argument("--rate", type=float, help="open-loop requests/s for latency (default 200; --quick: 100)")
    p.add_argument(
        "--workers",
        default="1",
        help="ext_proc processes (default 1); a list such as 1,2,4,8 runs the scaling table instead: "
        "the translated scenario once per count, wrk pinned apart where the machine has 4+ cores",
    )
    p.add_argument("--rounds", type=int, help="alternations of all scenarios (default 3; --quick: 1)")
    p.add_argument(
        "--output", "-o", default="bench-report.json", help="JSON report (default bench-report.json)"
    )
    p.add_argument("--quick", action="store_true", help="a few seconds per scenario: checks the bench runs")
    p.add_argument(
        "--pool",
        action="store_true",
        help="instead: the pool scenario, the gateway's endpoint picking against round robin and "
        "random on simulated model servers (report directory: --output, default bench-pool-report)",
    )
    p.add_argument("--pool-rates", help="--pool: comma-separated req/s steps (default 2,4,...,16,20,24)")
    p.add_argument(
        "--scenarios",
        default=",".join(n for n in names if n not in GROUPS),
        help=f"comma-separated subset of {', '.join(names)} ({groups}; the floors always run, "
        "and translated whenever admission or peer does: they are read next to it)",
    )
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.pool:
        from .pool import PoolOptions, main

        kw: dict = {}
        if args.output != "bench-report.json":
            kw["output"] = Path(args.output)
        if args.duration is not None:
            kw["step_s"] = args.duration
        if args.pool_rates:
            kw["rates"] = tuple(float(r) for r in args.pool_rates.split(","))
        return main(PoolOptions.quick(**kw) if args.quick else PoolOptions(**kw))
    from .scaling import parse_counts

    try:
        counts = parse_counts(args.workers)
    except ValueError as e:
        print(e)
        return 2
    chosen = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    known = _names()
    unknown = [s for s in chosen if s not in known]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(known)})")
        return 2
    given = {
        k: v
        for k, v in (("duration", args.duration), ("rate", args.rate), ("rounds", args.rounds))
        if v is not None
    }
    common = {
        "connections": args.connections,
        "workers": counts[0],
        "output": Path(args.output),
        "scenarios": chosen,
        **given,
    }
    opts = Options.quick(**common) if args.quick else Options(**common)
    if len(counts) > 1:
        from .scaling import main as scale

        return scale(opts, counts)
    return run(opts)
