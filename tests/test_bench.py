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
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_tools.bench import load
from gateway_tools.bench.scenarios import expand


@pytest.mark.timeout(180)
def test_bench_quick_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway_tools", "bench", "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| figure | value |" in proc.stdout
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
