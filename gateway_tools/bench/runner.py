"""``llm-gateway bench``: start everything, alternate the scenarios, report.

Order of a run: start the upstreams, the floor Envoy and the gateways (and
the peer); warm every probe up; then, per round, the throughput of every probe
(wrk) and then the open-loop timings of every probe, the order rotated each
round; last, the memory of the ext_proc workers while many streams are open
at once.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

import orjson

from . import load, report
from .report import MS, Figure, added, at_most, median_ratio, percentile
from .scenarios import (
    FLOORS,
    OPTIONAL,
    OWN_GATEWAY,
    PEER,
    PROBES,
    REFERENCES,
    SCENARIOS,
    TRACED,
    BenchStack,
    expand,
    scenario,
    unavailable,
)

PEER_TARGET = ">= 10x its throughput, lower p99"
STREAM_RATE = 20.0  # streams/s for stream timings: ~2 open at a time, 900 events/s
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Options:
    duration: float = 5.0  # seconds per measurement
    connections: int = 32
    rate: float = 200.0
    workers: int = 1
    rounds: int = 3
    output: Path = Path("bench-report.json")
    scenarios: tuple[str, ...] = PROBES  # group names (``GROUPS``) allowed
    hold_streams: int = 500
    hold_seconds: float = 3.0
    warmup: float = 1.0

    @classmethod
    def quick(cls, **overrides: Any) -> Options:
        """Seconds per scenario: proves the bench runs, measures nothing worth quoting."""
        base = {
            "duration": 1.0,
            "rounds": 1,
            "rate": 100.0,
            "hold_streams": 100,
            "hold_seconds": 1.0,
            "warmup": 0.3,
        }
        return cls(**{**base, **overrides})


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def own_cpu_seconds(pids: list[int]) -> float:
    """CPU of the bench itself: this process, finished children (wrk) and the stack's processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + cpu_seconds(pids)


def rss_bytes(pids: list[int]) -> int:
    return sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE for pid in pids)


@dataclass
class Collected:
    """Raw measurements of every probe over all rounds."""

    throughput: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    timings: dict[str, list[load.Timings]] = field(default_factory=dict)
    timing_cpu: dict[str, list[float]] = field(default_factory=dict)  # ext_proc CPU s per request
    # ext_proc messages Envoy sent per request (stream) during the open-loop timings
    timing_msgs: dict[str, list[float]] = field(default_factory=dict)

    def messages(self, probe: str) -> float | None:
        """Messages Envoy sent to ext_proc servers per request, throughput and timings pooled."""
        xs = [r["ext_proc_messages_sent_per_request"] for r in self.throughput.get(probe, [])]
        xs += self.timing_msgs.get(probe, [])
        return median(xs) if xs else None

    def rps(self, probe: str) -> list[float]:
        return [r["rps"] for r in self.throughput.get(probe, [])]

    def pooled(self, probe: str, what: str) -> list[float]:
        return [x for t in self.timings.get(probe, []) for x in getattr(t, what)]


def plan(opts: Options) -> tuple[list[str], dict[str, str]]:
    """The probes to run besides the floors (gateway scenarios, then the peer), and those skipped with why."""
    wanted = expand(opts.scenarios)
    skipped = {n: why for n in wanted if n in OPTIONAL and (why := unavailable(n, opts.workers))}
    probes = {n for n in wanted if n not in skipped}
    probes |= {b for n in probes if (b := scenario(n).beside)}  # read next to it: it runs too
    return sorted(probes, key=PROBES.index), skipped


class Bench:
    def __init__(self, opts: Options, stack: BenchStack, probes: list[str]):
        self.opts = opts
        self.stack = stack
        self.requests = stack.requests()
        self.data = Collected()
        self.gateway_probes = [p for p in probes if p in SCENARIOS]
        self.references = [p for p in probes if p in REFERENCES]
        self.peer = [p for p in probes if p == PEER.name]
        self.floors = sorted({scenario(s).floor for s in probes} | {"floor"}, key=list(FLOORS).index)

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def kind(self, probe: str) -> str:
        return FLOORS[probe] if probe in FLOORS else scenario(probe).kind

    # ---- steps ------------------------------------------------------------------------
    def warm_up(self) -> None:
        for probe in [*self.floors, *self.gateway_probes, *self.references, *self.peer]:
            stream = self.kind(probe) == "stream"
            load.open_loop(
                self.requests[probe], 50.0 if not stream else STREAM_RATE, self.opts.warmup, stream
            )

    def throughput(self, probe: str) -> None:
        proxy = "litellm" if probe == PEER.name else "ext_proc"
        pids = (self.stack.proxy_pids(probe), self.stack.envoy_pids(probe), self.stack.pids("bench-canned"))
        before = [cpu_seconds(p) for p in pids]
        msgs0 = self.stack.ext_proc_messages(probe)
        res = load.run_wrk(
            self.requests[probe], self.opts.connections, self.opts.duration, self.stack.run_dir
        )
        after = [cpu_seconds(p) for p in pids]
        msgs1 = self.stack.ext_proc_messages(probe)
        n = max(res.requests, 1)
        # Envoy's counters (ext_proc stream_msgs_sent / _received): the round trips a request costs.
        per_request = {k: (msgs1[k] - msgs0[k]) / n for k in msgs0}
        row = {
            "rps": res.rps,
            "requests": res.requests,
            "errors": res.errors,
            "seconds": res.seconds,
            f"{proxy}_cpu_s_per_1k": (after[0] - before[0]) / n * 1000,
            "envoy_cpu_s_per_1k": (after[1] - before[1]) / n * 1000,
            "upstream_cpu_s_per_1k": (after[2] - before[2]) / n * 1000,
            "ext_proc_streams_per_request": per_request["streams"],
            "ext_proc_messages_sent_per_request": per_request["sent"],
            "ext_proc_messages_received_per_request": per_request["received"],
        }
        self.data.throughput.setdefault(probe, []).append(row)
        self.log(
            f"{probe:<16} {res.rps:>8,.0f} req/s  errors {res.errors}  {proxy} "
            f"{row[f'{proxy}_cpu_s_per_1k']:.3f} s/1k  envoy {row['envoy_cpu_s_per_1k']:.3f} s/1k"
            + (f"  ext_proc messages {per_request['sent']:.2f} sent" if per_request["streams"] else "")
        )

    def timing(self, probe: str) -> None:
        stream = self.kind(probe) == "stream"
        rate = STREAM_RATE if stream else self.opts.rate
        ext = self.stack.proxy_pids(probe)
        before, msgs0 = cpu_seconds(ext), self.stack.ext_proc_messages(probe)
        t = load.open_loop(self.requests[probe], rate, self.opts.duration, stream)
        cpu, msgs1 = cpu_seconds(ext) - before, self.stack.ext_proc_messages(probe)
        self.data.timings.setdefault(probe, []).append(t)
        self.data.timing_cpu.setdefault(probe, []).append(cpu / max(len(t.latency), 1))
        if msgs1["streams"] > msgs0["streams"]:
            self.data.timing_msgs.setdefault(probe, []).append(
                (msgs1["sent"] - msgs0["sent"]) / max(t.sent, 1)
            )
        p50, p99 = percentile(t.latency, 0.5), percentile(t.latency, 0.99)
        extra = ""
        if stream:
            extra = (
                f"  first byte p50 {(percentile(t.first_byte, 0.5) or 0) * MS:.2f} ms  "
                f"per event p50 {(percentile(t.per_event, 0.5) or 0) * MS:.3f} ms"
            )
        self.log(
            f"{probe:<16} {rate:.0f}/s  p50 {(p50 or 0) * MS:.2f} ms  p99 {(p99 or 0) * MS:.2f} ms  "
            f"errors {t.errors}{extra}"
        )

    def hold(self) -> dict[str, Any]:
        """ext_proc memory with many streams open at once (slow-paced upstream)."""
        events = 10
        pace = max(10, round(self.opts.hold_seconds * 1000 / events))
        ext = self.stack.pids("ext_proc")
        idle = rss_bytes(ext)
        res = load.hold_streams(
            self.stack.slow_stream(events, pace), self.opts.hold_streams, lambda: rss_bytes(ext)
        )
        hwm = sum(_status_kb(pid, "VmHWM") for pid in ext) * 1024
        self.log(
            f"hold             {res.streams} streams, {res.max_open} open at once, {res.completed} completed, "
            f"ext_proc RSS {idle / 2**20:.1f} MB idle -> {res.peak_rss_bytes / 2**20:.1f} MB peak"
        )
        return {
            "streams": res.streams,
            "max_open": res.max_open,
            "completed": res.completed,
            "events_per_stream": events,
            "pace_ms": pace,
            "idle_rss_bytes": idle,
            "peak_rss_bytes": res.peak_rss_bytes,
            "vm_hwm_bytes": hwm,
        }

    def run(self) -> dict[str, Any]:
        probes = [*self.floors, *self.gateway_probes, *self.references, *self.peer]
        ceiling: list[float] = []
        # Others' work on the machine skews every figure: measure it, to report it.
        pids = self.stack.all_pids()
        wall0, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_cpu_seconds(pids)
        self.log(f"warming up {', '.join(probes)}")
        self.warm_up()
        for r in range(self.opts.rounds):
            order = probes[r % len(probes) :] + probes[: r % len(probes)]
            self.log(f"round {r + 1}/{self.opts.rounds}: {', '.join(order)}")
            if load.wrk_path():
                res = load.run_wrk(
                    self.requests["upstream"], self.opts.connections, self.opts.duration, self.stack.run_dir
                )
                ceiling.append(res.rps)
                self.log(f"{'upstream':<16} {res.rps:>8,.0f} req/s (canned upstream alone: its ceiling)")
                for probe in order:
                    if self.kind(probe) == "unary":
                        self.throughput(probe)
            for probe in order:
                self.timing(probe)
            self.stack.check()
        wall = time.monotonic() - wall0
        other = max(0.0, (machine_busy_seconds() - busy0) - (own_cpu_seconds(pids) - own0))
        cores = len(load.MACHINE_CORES)
        self.log(
            f"other processes used {other:.1f} CPU-s during the rounds ({other / (wall * cores):.0%} of the machine)"
        )
        held = self.hold() if "streamed" in self.gateway_probes else None
        traces = {p: self.stack.spans_exported(p) for p in self.gateway_probes if p in TRACED}
        for probe, spans in traces.items():
            self.log(f"{probe:<16} Envoy exported {spans:,} spans")
        return {
            "upstream_ceiling_rps": ceiling,
            "hold": held,
            "spans_exported": traces,
            "other_load": {"cpu_seconds": other, "share_of_machine": other / (wall * cores), "wall_s": wall},
        }


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def figures(b: Bench, extra: dict[str, Any], skipped: dict[str, str]) -> list[Figure]:
    """The table: each figure relative to its floor, with its target where the issue sets one."""
    d, rate = b.data, b.opts.rate
    out: list[Figure] = []
    floor_rps = d.rps("floor")
    wrk_note = "" if load.wrk_path() else "not measured: wrk is not installed"
    ceiling = extra["upstream_ceiling_rps"]
    if ceiling:
        out.append(
            Figure(
                "upstream.ceiling_rps",
                "canned upstream alone, throughput",
                median(ceiling),
                "rps",
                vs_floor=f"floor is {median(floor_rps) / median(ceiling):.0%} of it" if floor_rps else "",
            )
        )
    out.append(
        Figure(
            "floor.throughput_rps",
            f"floor throughput ({b.opts.connections} connections)",
            median(floor_rps) if floor_rps else None,
            "rps",
            note=wrk_note,
        )
    )
    fl = d.pooled("floor", "latency")
    out.append(
        Figure("floor.p50_ms", f"floor latency p50 at {rate:.0f} req/s", _ms(percentile(fl, 0.5)), "ms")
    )
    out.append(
        Figure("floor.p99_ms", f"floor latency p99 at {rate:.0f} req/s", _ms(percentile(fl, 0.99)), "ms")
    )
    for name in b.gateway_probes:
        out += probe_figures(b, name, name, wrk_note, targets=True)
    for name in b.references:  # the yardstick: same rows, no targets
        out += probe_figures(b, name, "reference, do-nothing ext_proc", wrk_note, targets=False)
    out += reference_figures(b)
    out += peer_figures(b, wrk_note)
    held = extra.get("hold")
    if held:
        mb = held["peak_rss_bytes"] / 2**20
        out.append(
            Figure(
                "hold.peak_rss_mb",
                f"ext_proc RSS with {held['max_open']} concurrent streams",
                mb,
                "MB",
                vs_floor=f"{held['idle_rss_bytes'] / 2**20:.0f} MB idle",
                target="<= 200 MB at 500",
                met=mb <= 200 if held["max_open"] >= 500 else None,
            )
        )
    for name, why in skipped.items():
        out.append(
            Figure(f"{name}.skipped", name, None, "", note=why, target=PEER_TARGET if name == "peer" else "")
        )
    return out


def probe_figures(b: Bench, name: str, who: str, wrk_note: str, targets: bool) -> list[Figure]:
    """A probe's rows against its floor, labelled with ``who``; with the issue's
    targets for gateway scenarios, without them for the do-nothing reference."""
    d, rate, sc = b.data, b.opts.rate, scenario(name)

    def aim(target: str, met: bool | None) -> dict[str, Any]:
        return {"target": target, "met": met} if targets else {}

    out: list[Figure] = []
    if sc.kind == "unary":
        rps = d.rps(name)
        ratio = median_ratio(rps, d.rps(sc.floor))
        share = {}
        if name == "translated" or name in OWN_GATEWAY:  # admission: translated with budgets
            share = aim(">= 30% of floor", None if ratio is None else ratio >= 0.30)
        out.append(
            Figure(
                f"{name}.throughput_rps",
                f"{who}: throughput",
                median(rps) if rps else None,
                "rps",
                vs_floor=f"{ratio:.1%}" if ratio is not None else "",
                note=wrk_note,
                **share,
            )
        )
        lat, base_lat = d.pooled(name, "latency"), d.pooled(sc.floor, "latency")
        p50, p99 = added(lat, base_lat, 0.5), added(lat, base_lat, 0.99)
        limit50 = 5.0 if name == "large" else 1.5
        out.append(
            Figure(
                f"{name}.added_p50_ms",
                f"added latency p50 at {rate:.0f} req/s ({who})",
                p50,
                "ms",
                **aim(f"<= {limit50:g} ms", at_most(p50, limit50)),
            )
        )
        if name != "large":
            out.append(
                Figure(
                    f"{name}.added_p99_ms",
                    f"added latency p99 at {rate:.0f} req/s ({who})",
                    p99,
                    "ms",
                    **aim("<= 5 ms", at_most(p99, 5.0)),
                )
            )
        if targets and sc.beside == "translated" and name not in OWN_GATEWAY:
            # Another client API over the same backend: what it costs beyond the translated scenario.
            base = added(d.pooled("translated", "latency"), base_lat, 0.5)
            extra = None if p50 is None or base is None else p50 - base
            out.append(
                Figure(
                    f"{name}.added_p50_vs_translated_ms",
                    f"added latency p50 beyond translated ({who})",
                    extra,
                    "ms",
                    **aim("<= 0.3 ms", at_most(extra, 0.3)),
                )
            )
        cpu = [r["ext_proc_cpu_s_per_1k"] for r in d.throughput.get(name, [])]
        out.append(
            Figure(
                f"{name}.ext_proc_cpu_s_per_1k",
                f"{who}: ext_proc CPU per 1,000 requests",
                median(cpu) if cpu else None,
                "s",
                note=wrk_note,
            )
        )
    else:
        fb = added(d.pooled(name, "first_byte"), d.pooled(sc.floor, "first_byte"), 0.5)
        ev = added(d.pooled(name, "per_event"), d.pooled(sc.floor, "per_event"), 0.5)
        out.append(
            Figure(
                f"{name}.added_first_byte_p50_ms",
                f"added time to first byte p50 ({who})",
                fb,
                "ms",
                **aim("<= 1.2 ms", at_most(fb, 1.2)),
            )
        )
        out.append(
            Figure(
                f"{name}.added_per_event_p50_ms",
                f"added per-event latency p50 ({who})",
                ev,
                "ms",
                **aim("<= 0.3 ms", at_most(ev, 0.3)),
            )
        )
        cpu = d.timing_cpu.get(name, [])
        out.append(
            Figure(
                f"{name}.ext_proc_cpu_s_per_1k",
                f"{who}: ext_proc CPU per 1,000 streams",
                median(cpu) * 1000 if cpu else None,
                "s",
            )
        )
    return out


# Issue 20's targets, each a ratio within one run: the gateway against the do-nothing
# reference (same Envoy, a Python ext_proc that answers "continue"), budgets in Redis
# against budgets in memory.
VS_REFERENCE = {"passthrough": 0.95, "translated": 0.90}
REDIS_WITHIN = 0.10
STREAM_CPU_VS_REFERENCE = 1.2


def reference_figures(b: Bench) -> list[Figure]:
    """The gateway's scenarios next to the do-nothing reference: throughput, messages, CPU."""
    d, out = b.data, []
    for name, share in VS_REFERENCE.items():
        if name not in b.gateway_probes or "noop-unary" not in b.references:
            continue
        ratio = median_ratio(d.rps(name), d.rps("noop-unary"))
        mine, ref = d.messages(name), d.messages("noop-unary")
        out.append(
            Figure(
                f"{name}.throughput_vs_reference",
                f"{name}: throughput against the do-nothing reference",
                ratio,
                "x",
                vs_floor="" if mine is None or ref is None else f"{mine:.2f} messages vs {ref:.2f}",
                target=f">= {share:.0%} of it",
                met=None if ratio is None else ratio >= share,
            )
        )
        if name == "translated" and mine is not None and ref is not None:
            out.append(
                Figure(
                    "translated.messages_per_request",
                    "translated: ext_proc messages per request (Envoy's count)",
                    mine,
                    "",
                    vs_floor=f"reference {ref:.2f}",
                    target="fewer than the reference",
                    met=mine < ref,
                )
            )
    if "admission-redis" in b.gateway_probes and "admission-memory" in b.gateway_probes:
        ratio = median_ratio(d.rps("admission-redis"), d.rps("admission-memory"))
        out.append(
            Figure(
                "admission-redis.throughput_vs_memory",
                "admission-redis: throughput against budgets in memory",
                ratio,
                "x",
                target=f">= {1 - REDIS_WITHIN:.0%} of it",
                met=None if ratio is None else ratio >= 1 - REDIS_WITHIN,
            )
        )
    if "streamed" in b.gateway_probes and "noop-stream" in b.references:
        mine_cpu, ref_cpu = d.timing_cpu.get("streamed", []), d.timing_cpu.get("noop-stream", [])
        ratio = median_ratio(mine_cpu, ref_cpu)
        mine, ref = d.messages("streamed"), d.messages("noop-stream")
        out.append(
            Figure(
                "streamed.cpu_vs_reference",
                "streamed: ext_proc CPU per stream against the reference",
                ratio,
                "x",
                vs_floor="" if mine is None or ref is None else f"{mine:.1f} messages vs {ref:.1f}",
                target=f"<= {STREAM_CPU_VS_REFERENCE:g}x",
                met=None if ratio is None else ratio <= STREAM_CPU_VS_REFERENCE,
            )
        )
    return out


def peer_figures(b: Bench, wrk_note: str) -> list[Figure]:
    """LiteLLM's proxy under the same load as the translated scenario, and the issue's target against it."""
    if not b.peer:
        return []
    d, rate = b.data, b.opts.rate
    rps, floor_rps, gw_rps = d.rps("peer"), d.rps("floor"), d.rps("translated")
    share, ratio = median_ratio(rps, floor_rps), median_ratio(gw_rps, rps)
    lat, floor_lat, gw_lat = (
        d.pooled("peer", "latency"),
        d.pooled("floor", "latency"),
        d.pooled("translated", "latency"),
    )
    p99, gw_p99 = _ms(percentile(lat, 0.99)), _ms(percentile(gw_lat, 0.99))
    cpu = [r["litellm_cpu_s_per_1k"] for r in d.throughput.get("peer", [])]
    out = [
        Figure(
            "peer.throughput_rps",
            "LiteLLM proxy (translated): throughput",
            median(rps) if rps else None,
            "rps",
            vs_floor=f"{share:.1%}" if share is not None else "",
            note=wrk_note,
        )
    ]
    # Past what it sustains, LiteLLM may fail requests: their latencies are not in the percentiles.
    failed = sum(t.errors for t in d.timings.get("peer", []))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        value, extra = _ms(percentile(lat, q)), added(lat, floor_lat, q)
        out.append(
            Figure(
                f"peer.{name}_ms",
                f"LiteLLM proxy latency {name} at {rate:.0f} req/s",
                value,
                "ms",
                vs_floor=(f"{extra:+.2f} ms" if extra is not None else "")
                + (f", {failed} requests failed" if failed else ""),
            )
        )
    out.append(
        Figure(
            "peer.litellm_cpu_s_per_1k",
            "LiteLLM proxy: CPU per 1,000 requests",
            median(cpu) if cpu else None,
            "s",
            note=wrk_note,
        )
    )
    lower_p99 = None if p99 is None or gw_p99 is None else gw_p99 < p99
    out.append(
        Figure(
            "peer.gateway_throughput_ratio",
            "gateway vs LiteLLM proxy (translated): throughput",
            ratio,
            "x",
            vs_floor=f"p99 {gw_p99:.2f} ms vs {p99:.2f} ms" if lower_p99 is not None else "",
            target=PEER_TARGET,
            note=wrk_note,
            met=None if ratio is None or lower_p99 is None else ratio >= 10 and lower_p99,
        )
    )
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * MS


def _timing_summary(t: list[load.Timings]) -> dict[str, Any]:
    def pcts(xs: list[float]) -> dict[str, float | None]:
        return {f"p{q}": _ms(percentile(xs, q / 100)) for q in (50, 90, 99)}

    pooled = {k: [x for r in t for x in getattr(r, k)] for k in ("latency", "first_byte", "per_event")}
    return {
        "sent": sum(r.sent for r in t),
        "errors": sum(r.errors for r in t),
        **{f"{k}_ms": pcts(v) for k, v in pooled.items() if v},
        "rounds": [{"sent": r.sent, "errors": r.errors, "latency_ms": pcts(r.latency)} for r in t],
    }


def run(opts: Options) -> int:
    """Run the bench; print the table; write the JSON report. Non-zero only if the bench itself failed."""
    probes, skipped = plan(opts)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    if not load.wrk_path():
        print("warning: wrk is not installed: throughput figures are skipped", flush=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="llm-gateway-bench-") as tmp:
        stack = BenchStack(
            Path(tmp),
            workers=opts.workers,
            own_gateways=tuple(p for p in probes if p in OWN_GATEWAY),
            with_peer=PEER.name in probes,
            with_noop=any(p in REFERENCES for p in probes),
        )
        with stack:
            bench = Bench(opts, stack, probes)
            extra = bench.run()
    figs = figures(bench, extra, skipped)
    info = report.machine()
    doc = {
        "started": started,
        "machine": info,
        "settings": {
            "duration_s": opts.duration,
            "connections": opts.connections,
            "rate_rps": opts.rate,
            "stream_rate": STREAM_RATE,
            "workers": opts.workers,
            "rounds": opts.rounds,
            "scenarios": probes,
        },
        "figures": report.to_json(figs),
        "throughput": bench.data.throughput,
        "upstream_ceiling_rps": extra["upstream_ceiling_rps"],
        "timings": {p: _timing_summary(t) for p, t in bench.data.timings.items()},
        "hold": extra["hold"],
        "spans_exported": extra["spans_exported"],
        "other_load": extra["other_load"],
        "skipped": skipped,
    }
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print()
    print(f"Machine: {report.describe(info)}")
    print(
        f"Settings: {opts.rounds} rounds x {opts.duration:g} s, {opts.connections} connections, "
        f"{opts.rate:g} req/s open loop, {opts.workers} ext_proc worker(s)"
    )
    print(
        f"Other load: processes outside the bench used {extra['other_load']['share_of_machine']:.0%} "
        "of the machine during the rounds (high values make every figure worse)"
    )
    print()
    print(report.table(figs))
    print(f"\nreport written to {opts.output}")
    return 0
