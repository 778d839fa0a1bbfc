"""``llm-gateway bench --workers 1,2,4,8``: how the gateway scales with ext_proc workers.

One ext_proc process uses one core at most (one asyncio loop, the GIL), so the
sizing question is how many requests per second a worker sustains, and
whether adding workers adds that much each. For every worker count the bench
runs the translated scenario (with its floor) on a fresh stack and reports
its throughput and the ext_proc CPU per request; requests per second per
ext_proc core (1 / CPU per request) is the sizing rule.

The load generator must not share the workers' cores, or more workers only
take CPU from wrk: with 4 cores or more wrk is pinned to the last core and
every process of the stack to the others. A count that does not fit beside
it is skipped and the report says why. On a 2-core machine nothing can be
pinned apart: the figures are printed, marked as sharing cores.
"""

from __future__ import annotations

import os
from dataclasses import replace
from statistics import median
from typing import Any

import orjson

from .load import MACHINE_CORES, load_generator_cores, stack_cores
from .runner import Options, run

SCENARIOS = ("translated",)


def main(base: Options, counts: list[int]) -> int:
    """Run the translated scenario once per worker count; print and write the scaling table."""
    apart = load_generator_cores()
    rows: list[dict[str, Any]] = []
    try:
        if apart is not None:
            os.sched_setaffinity(0, stack_cores())  # the stack's processes inherit it
        for n in counts:
            row: dict[str, Any] = {"workers": n}
            if n > len(stack_cores()):
                row["skipped"] = f"{n} workers need {n} cores beside the load generator's"
                rows.append(row)
                continue
            out = base.output.with_name(f"{base.output.stem}-workers-{n}{base.output.suffix}")
            code = run(replace(base, workers=n, scenarios=SCENARIOS, output=out))
            if code != 0:
                return code
            rows.append({**row, **_summary(orjson.loads(out.read_bytes()))})
    finally:
        os.sched_setaffinity(0, MACHINE_CORES)
    note = (
        f"wrk pinned to core {sorted(apart)[0]}, the stack to the others"
        if apart is not None
        else f"{len(MACHINE_CORES)} cores: wrk, both Envoys and the workers share them"
    )
    doc = {"load_generator": note, "rows": rows}
    base.output.parent.mkdir(parents=True, exist_ok=True)
    base.output.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(table(rows, note))
    return 0


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    rounds = report["throughput"]
    rps = [r["rps"] for r in rounds.get("translated", [])]
    floor = [r["rps"] for r in rounds.get("floor", [])]
    cpu = [r["ext_proc_cpu_s_per_1k"] for r in rounds.get("translated", [])]
    if not rps:
        return {"skipped": "not measured: wrk is not installed"}
    per_request = median(cpu) / 1000
    return {
        "translated_rps": median(rps),
        "share_of_floor": median(r / f for r, f in zip(rps, floor, strict=False)),
        "ext_proc_cpu_ms_per_request": per_request * 1000,
        "rps_per_ext_proc_core": 1 / per_request if per_request else None,
        "other_load": report["other_load"]["share_of_machine"],
    }


def table(rows: list[dict[str, Any]], note: str) -> str:
    lines = [
        f"Scaling with ext_proc workers ({note})",
        "| workers | translated throughput | share of floor | ext_proc CPU per request "
        "| req/s per ext_proc core | other load |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['workers']} | skipped: {r['skipped']} |  |  |  |  |")
            continue
        lines.append(
            f"| {r['workers']} | {r['translated_rps']:,.0f} req/s | {r['share_of_floor']:.1%} "
            f"| {r['ext_proc_cpu_ms_per_request']:.3f} ms | {r['rps_per_ext_proc_core']:,.0f} "
            f"| {r['other_load']:.0%} |"
        )
    return "\n".join(lines)


def parse_counts(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4] (positive, in the order given)."""
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or any(n < 1 for n in counts):
        raise ValueError(f"--workers takes positive counts, e.g. 1 or 1,2,4,8 (got {text!r})")
    return counts
