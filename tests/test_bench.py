"""`llm-gateway bench --quick` runs end to end and writes its report.

A smoke test, not a benchmark: no timing is asserted, only that every figure
was measured and is a sane number. The admission scenarios need redis-server
(CI installs it, as for the admission tests); the peer needs litellm, which
the test extra does not install (see README "Benchmark"): without it the
report must say why the peer was skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_tools.bench import load
from gateway_tools.bench.scenarios import expand


def bench_quick(*args: str) -> str:
    """``llm-gateway bench --quick ARGS`` in a child process; its stdout (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway_tools", "bench", "--quick", *args],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(180)
def test_bench_quick_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    stdout = bench_quick("--output", str(out))
    assert "| figure | value |" in stdout
    report = json.loads(out.read_text())
    assert {"machine", "settings", "figures", "timings", "hold", "skipped", "other_load"} <= report.keys()
    assert report["machine"]["cores"] >= 1
    figures = {f["key"]: f for f in report["figures"]}
    admission = expand(("admission",))
    peer = importlib.util.find_spec("litellm") is not None
    measured = [
        "floor.p50_ms",
        "translated.added_p50_ms",
        "completions.added_p50_ms",
        "responses.added_p50_ms",
        "responses.added_p50_vs_translated_ms",
        "streamed.added_first_byte_p50_ms",
        "streamed.added_per_event_p50_ms",
        "hold.peak_rss_mb",
        "noop-unary.added_p50_ms",
        "noop-stream.added_first_byte_p50_ms",
        "noop-stream.added_per_event_p50_ms",
        "translated-traced.added_p50_ms",
        "translated-traced.added_p99_ms",
        *(f"{a}.added_{q}_ms" for a in admission for q in ("p50", "p99")),
    ]
    if peer:
        measured += ["peer.p50_ms", "peer.p99_ms"]
    if load.wrk_path():
        measured += [
            "floor.throughput_rps",
            "translated.throughput_rps",
            "passthrough.throughput_rps",
            "large.throughput_rps",
            "translated.ext_proc_cpu_s_per_1k",
            "noop-unary.throughput_rps",
            "noop-unary.ext_proc_cpu_s_per_1k",
            "translated-traced.throughput_rps",
            *(f"{a}.{f}" for a in admission for f in ("throughput_rps", "ext_proc_cpu_s_per_1k")),
        ]
        if peer:
            measured += ["peer.throughput_rps", "peer.litellm_cpu_s_per_1k", "peer.gateway_throughput_ratio"]
    # Issue 20's ratios within the run; Envoy's own message counts behind them.
    measured += ["streamed.cpu_vs_reference"]
    if load.wrk_path():
        measured += [
            "translated.throughput_vs_reference",
            "passthrough.throughput_vs_reference",
            "translated.messages_per_request",
            "admission-redis.throughput_vs_memory",
        ]
        rows = report["throughput"]
        # Headers, body, one response chunk: the router stage's three; the reference has
        # no Lua hold, so its answer ends on a separate empty chunk (four).
        assert [round(r["ext_proc_messages_sent_per_request"]) for r in rows["translated"]] == [3]
        assert [round(r["ext_proc_messages_sent_per_request"]) for r in rows["noop-unary"]] == [4]
        assert all(r["ext_proc_streams_per_request"] == 0 for r in rows["floor"])
    for key in measured:
        assert figures[key]["value"] is not None, key
    positive = ("floor.p50_ms", "hold.peak_rss_mb", "peer.p50_ms", "peer.p99_ms")
    for key in (k for k in measured if "throughput" in k or "cpu" in k or k in positive):
        assert figures[key]["value"] > 0, key
    for probe, summary in report["timings"].items():
        assert summary["errors"] == 0, probe
        assert summary["latency_ms"]["p50"] > 0, probe
    for probe, rounds in report["throughput"].items():
        assert all(r["errors"] == 0 and r["requests"] > 0 for r in rounds), probe
    assert report["hold"]["completed"] == report["hold"]["streams"]
    assert set(report["timings"]) >= {
        "floor",
        "translated",
        "responses",
        "noop-unary",
        "noop-stream",
        "translated-traced",
        *admission,
    }
    assert report["spans_exported"]["translated-traced"] > 0  # its Envoy did trace, and export
    if peer:
        assert "peer" in report["timings"] and "peer" not in report["skipped"]
    else:
        assert "litellm is not installed" in report["skipped"]["peer"]
    assert set(report["skipped"]) <= {"peer"}


@pytest.mark.timeout(180)
def test_bench_pool_quick_compares_the_pickers(tmp_path: Path) -> None:
    """`bench --pool --quick`: every picker ran on its own pool behind the gateway, each step has
    requests, throughput and hit rates from the servers' counters, and the targets are judged."""
    out = tmp_path / "pool"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway_tools", "bench", "--pool", "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert list(report["results"]) == ["scored", "round_robin", "random"]
    for rows in report["results"].values():
        assert [r["rate_rps"] for r in rows] == report["options"]["rates"]
        for r in rows:
            assert r["requests"] > 0 and r["failed"] == 0 and r["output_tokens_per_s"] > 0
            assert r["ttft_p90_s"] is not None and 0 < r["ttft_p50_s"] <= r["ttft_p90_s"]
            assert r["prefix_cache_hit_rate"] is not None
    # the scored picker keeps a tenant on the server that holds its prefix
    last = {n: rows[-1]["prefix_cache_hit_rate"] for n, rows in report["results"].items()}
    assert last["scored"] > last["round_robin"], last
    assert "ttft_at_rr_max_load" in report["targets"] and "throughput_within_slo" in report["targets"]
    assert (out / "report.md").read_text().count("| scored |") == len(report["options"]["rates"])


def test_pool_targets_are_judged_from_the_rows() -> None:
    from gateway_tools.bench.pool import targets

    def row(rate: float, tps: float, p90: float | None) -> dict:
        return {"rate_rps": rate, "output_tokens_per_s": tps, "ttft_p90_s": p90}

    results = {
        "scored": [row(2, 60, 0.1), row(4, 120, 0.08), row(8, 200, 0.2)],
        "round_robin": [row(2, 60, 0.5), row(4, 110, 0.9), row(8, 100, None)],  # None: timed out
    }
    t = targets(results, 1.0)
    assert t["ttft_at_rr_max_load"]["rate_rps"] == 4
    assert t["ttft_at_rr_max_load"]["ratio"] == pytest.approx(11.25) and t["ttft_at_rr_max_load"]["met"]
    tput = t["throughput_within_slo"]
    assert tput["tokens_per_s"] == {"scored": 200, "round_robin": 110}
    assert tput["ratio"] == pytest.approx(200 / 110, abs=0.01) and not tput["met"]
    assert tput["scored_never_left_slo"]  # so its own limit was not reached: the ratio is a floor
    results["scored"][-1] = row(8, 300, 1.5)  # past the SLO: its best within it is 120
    assert targets(results, 1.0)["throughput_within_slo"]["tokens_per_s"]["scored"] == 120


@pytest.mark.timeout(180)
def test_bench_scaling_runs_each_worker_count_and_skips_what_the_cores_cannot_hold(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    too_many = len(os.sched_getaffinity(0)) + 1
    stdout = bench_quick("--workers", f"1,{too_many}", "-o", str(out))
    assert "| workers | translated throughput |" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, too_many]
    one, skipped = rows
    if load.wrk_path():
        assert one["translated_rps"] > 0 and one["ext_proc_cpu_ms_per_request"] > 0
        assert one["rps_per_ext_proc_core"] == pytest.approx(1000 / one["ext_proc_cpu_ms_per_request"])
    assert f"{too_many} workers need {too_many} cores" in skipped["skipped"]
    assert (tmp_path / "scaling-workers-1.json").exists()  # each count's full report


def test_wrk_gets_a_core_apart_from_the_stack_only_with_four_or_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """The split is the machine's, read once: narrowing the bench's own affinity to the stack's
    cores (as the scaling run does) must not move wrk onto one of them."""
    monkeypatch.setattr(load, "MACHINE_CORES", frozenset({0, 1, 2, 3}))
    assert load.load_generator_cores() == {3}
    assert load.stack_cores() == {0, 1, 2}
    monkeypatch.setattr(load, "MACHINE_CORES", frozenset({0, 1}))
    assert load.load_generator_cores() is None
    assert load.stack_cores() == {0, 1}
