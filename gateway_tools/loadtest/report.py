"""Turn one run into a report: JSON with every figure, a Markdown summary and PNG plots over time.

The report keeps two independent books and checks them against each other:
what the client saw (status, the ``x-gateway-backend`` header of each answer)
and what the mock providers counted. Every request the client sent was either
answered by exactly one provider or answered by the gateway itself (a
rejection, or an error when no backend was left), and each provider's count
less the attempts it failed on purpose (faults) equals the answers the client
got from it. If the two books disagree, the gateway lost or duplicated work.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from .runner import Result, Sample

PLOTS = {
    "throughput": "Throughput by outcome",
    "latency": "Latency p50 / p99",
    "ttft": "Time to first token (streamed requests)",
    "provider_rate": "Client-side vs provider-side request rate",
    "pool_queue": "Pool: waiting requests per server (scraped by the gateway)",
    "pool_kv": "Pool: KV-cache use per server (scraped by the gateway)",
    "pool_picks": "Pool: servers picked, by reason",
    "pool_saturated": "Pool saturated: spilled to the next tier / shed with 429",
}
_OUTCOMES = ("ok", "rejected", "client_error", "error")
_COLORS = {"ok": "tab:green", "rejected": "tab:orange", "client_error": "tab:purple", "error": "tab:red"}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def _dist(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": _ms(percentile(values, 50)),
        "p90": _ms(percentile(values, 90)),
        "p99": _ms(percentile(values, 99)),
        "max": _ms(max(values) if values else None),
        "mean": _ms(sum(values) / len(values) if values else None),
    }


def _group(results: list[Result], key: Callable[[Result], Any]) -> dict[str, Any]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        groups[str(key(r))].append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        outcomes = Counter(r.outcome for r in rs)
        out[name] = {
            "requests": len(rs),
            **{o: outcomes.get(o, 0) for o in _OUTCOMES},
            "latency_ms": _dist([r.latency for r in rs if r.outcome == "ok"]),
            "ttft_ms": _dist([r.ttft for r in rs if r.outcome == "ok" and r.ttft is not None]),
        }
    return out


def _buckets(duration: float) -> float:
    """Bucket width: about 40 points over the run, never under 0.5 s."""
    return max(0.5, round(duration / 40 * 2) / 2)


def build(
    scenario: str,
    results: list[Result],
    samples: list[Sample],
    events: list[dict[str, Any]],
    settings: dict[str, Any],
    duration: float,
    dropped: int,
    provider_of: Callable[[str], str],
    primary_of: Callable[[str], str],
) -> dict[str, Any]:
    """Every figure of the run as one JSON-ready dict."""
    ok = [r for r in results if r.outcome == "ok"]
    outcomes = Counter(r.outcome for r in results)
    failovers = sum(1 for r in ok if r.backend and r.backend != primary_of(r.model))
    tokens = sum(r.tokens for r in ok)
    span = max([duration] + [r.t + r.latency for r in results])

    # The two books: client-side answers by provider vs the mocks' own counts.
    client_answered = Counter(provider_of(r.backend) for r in results if r.backend)
    first, last = (samples[0].stats, samples[-1].stats) if samples else ({}, {})
    providers: dict[str, Any] = {}
    for name in sorted(set(last) | set(client_answered)):
        requests = last.get(name, {}).get("requests", 0) - first.get(name, {}).get("requests", 0)
        faulted = last.get(name, {}).get("faulted", 0) - first.get(name, {}).get("faulted", 0)
        providers[name] = {
            "requests": requests,
            "faulted": faulted,
            "answered": requests - faulted,
            "client_saw_answers": client_answered.get(name, 0),
            "match": requests - faulted == client_answered.get(name, 0),
        }
    answered = sum(1 for r in results if r.backend)
    by_gateway = len(results) - answered
    checks = {
        "sent == answered by a provider + answered by the gateway": len(results) == answered + by_gateway,
        "answered by a provider == provider-side count less injected faults": bool(providers)
        and sum(p["answered"] for p in providers.values()) == answered,
        "every provider's count matches what the client saw": bool(providers)
        and all(p["match"] for p in providers.values()),
    }
    return {
        "scenario": scenario,
        "settings": settings,
        "duration_s": round(span, 3),
        "events": events,
        "totals": {
            "sent": len(results),
            "dropped_by_generator": dropped,
            **{o: outcomes.get(o, 0) for o in _OUTCOMES},
            "answered_by_provider": answered,
            "answered_by_gateway": by_gateway,
            "failovers": failovers,
            "throughput_rps": round(len(ok) / span, 2) if span else 0.0,
            "success_rate": round(len(ok) / len(results), 4) if results else None,
            "status": {str(k): v for k, v in sorted(Counter(r.status for r in results).items())},
            "transport_errors": dict(Counter(r.error for r in results if r.error)),
        },
        "latency_ms": _dist([r.latency for r in ok]),
        "ttft_ms": _dist([r.ttft for r in ok if r.ttft is not None]),
        "tokens": {"output": tokens, "per_second": round(tokens / span, 1) if span else 0.0},
        "by": {
            "dialect": _group(results, lambda r: r.dialect),
            "model": _group(results, lambda r: r.model),
            "stream": _group(results, lambda r: "streamed" if r.stream else "non-streamed"),
            "prompt_words": _group(results, lambda r: r.prompt_words),
            "tenant": _group(results, lambda r: r.tenant),
            "backend": _group(results, lambda r: r.backend or "(gateway)"),
        },
        "providers": providers,
        "checks": checks,
        "timeseries": _timeseries(results, duration, span),
        "provider_series": _provider_series(samples, _buckets(duration)),
        **(
            {"pool_series": _pool_series(samples, _buckets(duration))} if any(x.pool for x in samples) else {}
        ),
    }


def _pool_series(samples: list[Sample], width: float) -> dict[str, Any]:
    """The gateway's pool metrics over time: gauges as sampled, counters as rates between polls
    at least ``width`` apart (the plots' bucket)."""
    got = [x for x in samples if x.pool]
    servers = sorted({k for x in got for k in x.pool.get("queue", {})})
    reasons = sorted({k for x in got for k in x.pool.get("picks", {})})
    outcomes = sorted({k for x in got for k in x.pool.get("saturated", {})} | {"spill", "shed"})
    spaced = got[:1]
    for x in got[1:]:
        if x.t - spaced[-1].t >= 0.95 * width or x is got[-1]:
            spaced.append(x)
    t: list[float] = []
    picks: dict[str, list[float]] = {r: [] for r in reasons}
    sat: dict[str, list[float]] = {o: [] for o in outcomes}
    for a, b in itertools.pairwise(spaced):
        dt = b.t - a.t
        if dt <= 0:
            continue
        t.append(round(b.t, 3))
        for key, into in (("picks", picks), ("saturated", sat)):
            for k, ys in into.items():
                ys.append(round((b.pool.get(key, {}).get(k, 0) - a.pool.get(key, {}).get(k, 0)) / dt, 2))
    first, last = (got[0].pool, got[-1].pool) if got else ({}, {})

    def total(key: str, k: str) -> int:
        return round(last.get(key, {}).get(k, 0) - first.get(key, {}).get(k, 0))

    return {
        "gauge_t": [round(x.t, 3) for x in got],
        "queue": {sv: [x.pool.get("queue", {}).get(sv) for x in got] for sv in servers},
        "kv_cache_usage": {sv: [x.pool.get("kv", {}).get(sv) for x in got] for sv in servers},
        "t": t,
        "picks_per_s": picks,
        "saturated_per_s": sat,
        "totals": {
            "picks": {r: total("picks", r) for r in reasons},
            "saturated": {o: total("saturated", o) for o in outcomes},
        },
    }


def _timeseries(results: list[Result], duration: float, span: float) -> dict[str, Any]:
    width = _buckets(duration)
    n = max(1, math.ceil(span / width))

    def idx(t: float) -> int:
        return min(n - 1, int(t / width))

    sent = [0] * n
    done: dict[str, list[int]] = {o: [0] * n for o in _OUTCOMES}
    lat: list[list[float]] = [[] for _ in range(n)]
    ttft: list[list[float]] = [[] for _ in range(n)]
    toks = [0] * n
    for r in results:
        sent[idx(r.t)] += 1
        end = idx(r.t + r.latency)
        done[r.outcome][end] += 1
        if r.outcome == "ok":
            lat[end].append(r.latency)
            toks[end] += r.tokens
            if r.ttft is not None:
                ttft[end].append(r.ttft)
    per_s = 1.0 / width
    return {
        "bucket_s": width,
        "t": [round(i * width, 3) for i in range(n)],
        "sent_rps": [round(v * per_s, 2) for v in sent],
        "completed_rps": {o: [round(v * per_s, 2) for v in done[o]] for o in _OUTCOMES},
        "latency_p50_ms": [_ms(percentile(v, 50)) for v in lat],
        "latency_p99_ms": [_ms(percentile(v, 99)) for v in lat],
        "ttft_p50_ms": [_ms(percentile(v, 50)) for v in ttft],
        "ttft_p99_ms": [_ms(percentile(v, 99)) for v in ttft],
        "tokens_per_s": [round(v * per_s, 1) for v in toks],
    }


def _provider_series(samples: list[Sample], width: float) -> dict[str, Any]:
    """Provider-side request rate between polls of the mocks at least ``width`` apart (the plots' bucket)."""
    names = sorted({n for s in samples for n in s.stats})
    t: list[float] = []
    rate: dict[str, list[float]] = {n: [] for n in names}
    spaced = samples[:1]
    for s in samples[1:]:
        if s.t - spaced[-1].t >= 0.95 * width or s is samples[-1]:
            spaced.append(s)
    for a, b in itertools.pairwise(spaced):
        dt = b.t - a.t
        if dt <= 0:
            continue
        t.append(round(b.t, 3))
        for n in names:
            delta = b.stats.get(n, {}).get("requests", 0) - a.stats.get(n, {}).get("requests", 0)
            rate[n].append(round(delta / dt, 2))
    total = [round(sum(rate[n][i] for n in names), 2) for i in range(len(t))]
    return {"t": t, "rate_rps": rate, "total_rps": total}


# ---------------------------------------------------------------------------- writing


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """Write the plots, report.json and report.md (last) into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        images = plot(report, out)
    except ImportError:  # matplotlib is the `loadtest` extra: the figures are all in the JSON anyway
        images = []
        report["settings"]["plots"] = "not drawn: install matplotlib (pip install 'llm-gateway[loadtest]')"
    data = out / "report.json"
    data.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    md = out / "report.md"
    md.write_text(markdown(report, [p.name for p in images]))
    return [*images, data, md]


def _fmt(v: Any, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:g}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def markdown(report: dict[str, Any], images: list[str]) -> str:
    """A summary a person reads in a minute: headline, breakdowns, the provider cross-check, the plots."""
    tot, s = report["totals"], report["settings"]
    lat, ttft = report["latency_ms"], report["ttft_ms"]
    load = (
        f"{s['concurrency']} concurrent clients"
        if s.get("concurrency")
        else f"{s.get('rate')} requests/s open loop"
    )
    lines = [
        f"# Load test: `{report['scenario']}`",
        "",
        f"{report['duration_s']:g} s against `{s['url']}`, {load}. {s.get('description', '')}",
        "",
    ]
    for key in ("note", "plots"):
        if s.get(key):
            lines += [f"> {s[key]}", ""]
    lines += _table(
        [
            "sent",
            "ok",
            "rejected (429)",
            "client errors",
            "errors",
            "failovers",
            "throughput",
            "latency p50 / p99",
            "TTFT p50 / p99",
            "output tokens/s",
        ],
        [
            [
                tot["sent"],
                tot["ok"],
                tot["rejected"],
                tot["client_error"],
                tot["error"],
                tot["failovers"],
                f"{tot['throughput_rps']:g} rps",
                f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])} ms",
                f"{_fmt(ttft['p50'])} / {_fmt(ttft['p99'])} ms",
                report["tokens"]["per_second"],
            ]
        ],
    )
    if tot["dropped_by_generator"]:
        lines += [
            "",
            f"The generator skipped {tot['dropped_by_generator']} arrivals: "
            f"{s.get('max_in_flight')} requests were already pending.",
        ]
    if report["events"]:
        lines += ["", "## Events", ""]
        lines += [
            f"- {e['t']:g} s: {e['label']}" + (f" ({e['note']})" if e.get("note") else "")
            for e in report["events"]
        ]
    lines += [
        "",
        "## Provider-side books",
        "",
        "What the providers counted (mocks: `/_mock/stats`; simulated model servers: `/sim/stats`; polled "
        "during the run) against what the client saw.",
        "",
    ]
    lines += _table(
        [
            "provider",
            "requests received",
            "failed on purpose (fault)",
            "answered",
            "answers the client got",
            "match",
        ],
        [
            [
                n,
                p["requests"],
                p["faulted"],
                p["answered"],
                p["client_saw_answers"],
                "yes" if p["match"] else "**NO**",
            ]
            for n, p in report["providers"].items()
        ],
    )
    lines += [""] + [f"- {'✅' if ok else '❌'} {name}" for name, ok in report["checks"].items()]
    for dim in ("dialect", "model", "stream", "tenant", "backend"):
        groups = report["by"][dim]
        lines += ["", f"## By {dim}", ""]
        lines += _table(
            [dim, "requests", "ok", "rejected", "errors", "latency p50 / p99 ms", "TTFT p50 ms"],
            [
                [
                    name,
                    g["requests"],
                    g["ok"],
                    g["rejected"],
                    g["error"] + g["client_error"],
                    f"{_fmt(g['latency_ms']['p50'])} / {_fmt(g['latency_ms']['p99'])}",
                    g["ttft_ms"]["p50"],
                ]
                for name, g in groups.items()
            ],
        )
    pool = report.get("pool_series")
    if pool:
        tot = pool["totals"]
        lines += [
            "",
            "## Pool",
            "",
            "From the gateway's own pool metrics (ext_proc `/metrics`), over the run.",
            "",
        ]
        lines += _table(
            [
                "picks by reason",
                "spilled to the next tier",
                "shed (429)",
                "max queue on a server",
                "max KV use",
            ],
            [
                [
                    ", ".join(f"{k} {v}" for k, v in tot["picks"].items()) or "none",
                    tot["saturated"].get("spill", 0),
                    tot["saturated"].get("shed", 0),
                    max((v for ys in pool["queue"].values() for v in ys if v is not None), default=None),
                    max(
                        (v for ys in pool["kv_cache_usage"].values() for v in ys if v is not None),
                        default=None,
                    ),
                ]
            ],
        )
    if images:
        lines += ["", "## Over time", ""]
        lines += [f"![{PLOTS.get(Path(i).stem, i)}]({i})" for i in images]
    lines += ["", "Every figure is in `report.json`."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """The four plots over time, small PNGs (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, ps = report["timeseries"], report["provider_series"]
    t = [x + ts["bucket_s"] for x in ts["t"]]  # a bucket's point is plotted at its end
    files = []

    def figure(name: str, ylabel: str, draw: Callable[[Any], None]) -> None:
        fig, ax = plt.subplots(figsize=(7.5, 2.8), dpi=80)
        draw(ax)
        for e in report["events"]:
            ax.axvline(e["t"], color="grey", linestyle="--", linewidth=0.8)
            ax.text(
                e["t"],
                1.0,
                " " + e["label"],
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="top",
                color="dimgrey",
            )
        ax.set_title(f"{report['scenario']}: {PLOTS[name]}", fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlim(0, max(t + ps["t"] + [1.0]))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path)

    def throughput(ax: Any) -> None:
        for o in _OUTCOMES:
            ys = ts["completed_rps"][o]
            if any(ys):
                ax.plot(t, ys, label=o, color=_COLORS[o])
        ax.set_ylim(bottom=0)

    def series(p50: str, p99: str) -> Callable[[Any], None]:
        def draw(ax: Any) -> None:
            for key, label in ((p50, "p50"), (p99, "p99")):
                pts = [(x, y) for x, y in zip(t, ts[key], strict=True) if y is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker=".", label=label)
            ax.set_ylim(bottom=0)

        return draw

    def provider_rate(ax: Any) -> None:
        ax.plot(t, ts["sent_rps"], label="client sent", color="black", linewidth=2)
        for name, ys in ps["rate_rps"].items():
            ax.plot(ps["t"], ys, label=f"provider {name}", linewidth=1)
        if ps["t"]:
            ax.plot(
                ps["t"], ps["total_rps"], label="all providers", color="tab:blue", linestyle=":", linewidth=2
            )
        ax.set_ylim(bottom=0)

    figure("throughput", "responses/s", throughput)
    figure("latency", "ms", series("latency_p50_ms", "latency_p99_ms"))
    figure("ttft", "ms", series("ttft_p50_ms", "ttft_p99_ms"))
    figure("provider_rate", "requests/s", provider_rate)
    pool = report.get("pool_series")
    if pool:

        def gauges(key: str) -> Callable[[Any], None]:
            def draw(ax: Any) -> None:
                for server, ys in pool[key].items():
                    pts = [(x, y) for x, y in zip(pool["gauge_t"], ys, strict=True) if y is not None]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), label=server.partition("/")[2], linewidth=1)
                ax.set_ylim(bottom=0)

            return draw

        def rates(key: str) -> Callable[[Any], None]:
            def draw(ax: Any) -> None:
                for name, ys in pool[key].items():
                    ax.plot(pool["t"], ys, label=name, linewidth=1.2)
                ax.set_ylim(bottom=0)

            return draw

        figure("pool_queue", "waiting requests", gauges("queue"))
        figure("pool_kv", "KV use (0-1)", gauges("kv_cache_usage"))
        figure("pool_picks", "picks/s", rates("picks_per_s"))
        figure("pool_saturated", "requests/s", rates("saturated_per_s"))
    return files
