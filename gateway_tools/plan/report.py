"""Write a plan as report.json (every figure), report.md (the summary) and PNG plots, as loadtest does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..loadtest.report import _fmt, _table

PLOTS = {
    "servers": "Servers needed by hour",
    "ttft": "Predicted TTFT p90 by hour",
    "cost": "Cost per million tokens: own GPUs vs API backends",
    "spill": "Traffic served vs spilled by hour",
}


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """Plots, report.json and report.md (last) into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        images = plot(report, out)
    except ImportError:  # matplotlib is the `loadtest` extra; every figure is in the JSON anyway
        images = []
        report["plots"] = "not drawn: install matplotlib (pip install 'llm-gateway[loadtest]')"
    data = out / "report.json"
    data.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    md = out / "report.md"
    md.write_text(markdown(report, [p.name for p in images]))
    return [*images, data, md]


def markdown(r: dict[str, Any], images: list[str]) -> str:
    s, slo, c, peak = r["server"], r["slo"], r["cost"], r["peak"]
    mix = r["token_mix_per_request"]
    lines = [
        f"# Capacity plan: {r['traffic']} on {s['name']}",
        "",
        f"SLO: TTFT p90 <= {slo['ttft_p90_ms']:g} ms, time per output token p90 <= {slo['tpot_p90_ms']:g} ms. "
        f"Server profile: {s['name']} ({_fmt(s['gpu_hour_usd'])} USD/h)"
        + (f", calibrated from {s['source']}" if s["source"] else "")
        + ".",
        "",
        f"Per request: {mix['own_input']:g} own input tokens, {mix['prefix_input']:g} shared-prefix tokens "
        f"(expected), {mix['output']:g} output tokens. {r['streamed_share']:.0%} of requests are streamed: "
        "the TTFT SLO is what their users wait for; the others wait for the whole answer (e2e p90 below).",
        "",
        "## Summary",
        "",
    ]
    if peak["servers_needed"] is None:
        lines.append(
            f"- Peak hour {peak['hour']} ({_fmt(peak['rate_rps'])} req/s): no server count meets the SLO"
            " (a single request on an idle server is already too slow, or the search bound was hit)."
        )
    else:
        lines.append(
            f"- Peak hour {peak['hour']} ({_fmt(peak['rate_rps'])} req/s) needs **{peak['servers_needed']}** servers."
        )
    if r["max_servers"] is not None and peak["spill_rps"] <= 0:
        lines.append(f"- Capped at {r['max_servers']} servers: nothing spills.")
    elif r["max_servers"] is not None:
        to = f" to **{peak['spill_to']}**" if peak["spill_to"] else " (no priced API backend in the config)"
        lines.append(
            f"- Capped at {r['max_servers']} servers: at the peak "
            f"{_fmt(round(peak['spill_rps'], 2))} req/s spill{to}."
        )
    lines += [
        f"- GPU cost per day: {_fmt(c['gpu_usd_per_day_autoscaled'])} USD scaled by hour, "
        f"{_fmt(c['gpu_usd_per_day_fixed_at_peak'])} USD with the peak fleet all day.",
        f"- Own GPUs: {_fmt(c['own_usd_per_million_tokens'])} USD per million tokens scaled by hour "
        f"({_fmt(c['own_usd_per_million_tokens_fixed'])} fixed at peak); predicted prefix-cache hit rate "
        f"{_fmt(c['prefix_hit_rate'])}.",
    ]
    if c["spill_usd_per_day"] and r["max_servers"] is not None:
        lines.append(f"- Spilled traffic on {c['spill_to']}: {_fmt(c['spill_usd_per_day'])} USD per day.")
    if r["unmeetable_hours"]:
        lines.append(f"- Hours no server count serves within the SLO: {r['unmeetable_hours']}.")
    if c["api"]:
        lines += ["", "## Own GPUs vs API backends (this traffic's token mix)", ""]
        rows = [
            ["own GPUs (scaled by hour)", c["own_usd_per_million_tokens"], c["gpu_usd_per_day_autoscaled"]]
        ]
        rows += [[a["backend"], a["usd_per_million_tokens"], a["usd_per_day_all_traffic"]] for a in c["api"]]
        lines += _table(["backend", "USD per million tokens", "USD per day for all traffic"], rows)
    lines += ["", "## By hour", ""]
    lines += _table(
        [
            "hour",
            "req/s",
            "servers needed",
            "servers",
            "spill req/s",
            "TTFT p50 / p90 ms",
            "TPOT p90 ms",
            "e2e p90 s (buffered)",
            "prefix hit",
            "GPU USD",
        ],
        [
            [
                h["hour"],
                h["rate_rps"],
                "none meets" if h["servers_needed"] is None else h["servers_needed"],
                h["servers"],
                round(h["spill_rps"], 2),
                f"{_fmt(h.get('ttft_p50_ms'))} / {_fmt(h.get('ttft_p90_ms'))}",
                h.get("tpot_p90_ms"),
                h.get("e2e_p90_s"),
                h.get("prefix_hit_rate"),
                h["gpu_usd"],
            ]
            for h in r["hours"]
        ],
    )
    sim = r["simulation"]
    lines += [
        "",
        "## How this was computed",
        "",
        f"Each hour's rate runs through a discrete-event simulation of vLLM-like servers "
        f"(`gateway_tools/plan/sim.py`: continuous batching up to max_num_seqs, chunked prefill, KV blocks, "
        f"per-server prefix cache with LRU eviction, picker `{sim['policy']}`), {sim['window_s']:g} s of "
        f"Poisson arrivals after {sim['warmup_s']:g} s of warm-up, seed {sim['seed']}; the smallest server "
        f"count whose TTFT p90 and TPOT p90 meet the SLO is searched ({sim['runs']} simulation runs). "
        "Not modelled: gateway and network time, preemption (KV is reserved for the whole output at admission).",
        "",
        "To compare a prediction with a measured pool: `llm-gateway plan TRAFFIC --servers N --rate R` prints "
        "the predicted TTFT p90 for N servers at R req/s; run the same traffic through the gateway against N "
        'servers and compare the measured TTFT p90 (docs/capacity.md, "Validating a plan").',
    ]
    if images:
        lines += ["", "## Plots", ""] + [f"![{PLOTS.get(Path(i).stem, i)}]({i})" for i in images]
    lines += ["", "Every figure is in `report.json`."]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], out: Path) -> list[Path]:
    """Four small PNGs (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = r["hours"]
    hs = [h["hour"] for h in hours]
    files: list[Path] = []

    def save(fig: Any, ax: Any, name: str, ylabel: str, xlabel: str = "hour of day") -> None:
        ax.set_title(f"{r['traffic']}: {PLOTS[name]}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path)

    fig, ax = plt.subplots(figsize=(7.5, 2.8), dpi=80)
    ax.step(hs, [h["servers_needed"] or 0 for h in hours], where="mid", label="needed for the SLO")
    if r["max_servers"] is not None:
        ax.axhline(r["max_servers"], color="tab:red", linestyle="--", linewidth=1, label="cap")
    ax2 = ax.twinx()
    ax2.plot(hs, [h["rate_rps"] for h in hours], color="grey", linewidth=1, linestyle=":")
    ax2.set_ylabel("req/s (dotted)", fontsize=8)
    ax2.tick_params(labelsize=7)
    ax.set_ylim(bottom=0)
    save(fig, ax, "servers", "servers")

    fig, ax = plt.subplots(figsize=(7.5, 2.8), dpi=80)
    ax.plot(hs, [h.get("ttft_p90_ms") for h in hours], marker=".", label="predicted TTFT p90")
    ax.axhline(r["slo"]["ttft_p90_ms"], color="tab:red", linestyle="--", linewidth=1, label="SLO")
    ax.set_ylim(bottom=0)
    save(fig, ax, "ttft", "ms")

    fig, ax = plt.subplots(figsize=(7.5, 2.8), dpi=80)
    c = r["cost"]
    names = ["own GPUs"] + [a["backend"] for a in c["api"]]
    vals = [c["own_usd_per_million_tokens"] or 0] + [a["usd_per_million_tokens"] for a in c["api"]]
    ax.barh(names, vals, color=["tab:green"] + ["tab:blue"] * len(c["api"]))
    save(fig, ax, "cost", "", xlabel="USD per million tokens")

    fig, ax = plt.subplots(figsize=(7.5, 2.8), dpi=80)
    ax.bar(hs, [h["carried_rps"] for h in hours], label="own servers", color="tab:green")
    ax.bar(
        hs,
        [h["spill_rps"] for h in hours],
        bottom=[h["carried_rps"] for h in hours],
        label=f"spill ({c['spill_to'] or 'no API backend'})",
        color="tab:orange",
    )
    save(fig, ax, "spill", "req/s")
    return files
