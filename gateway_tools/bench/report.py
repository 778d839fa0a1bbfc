"""Figures, targets, the printed table and the JSON report.

Every figure is relative to the floor measured in the same run (throughput as
a ratio per round, then the median of the rounds; latency as the difference
of percentiles pooled over rounds), because absolute numbers on a shared
machine say more about the machine than about the gateway.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from ..supervisor import envoy_binary
from .load import MACHINE_CORES

MS = 1000.0


@dataclass
class Figure:
    """One row of the table."""

    key: str
    label: str
    value: float | None
    unit: str
    vs_floor: str = ""
    target: str = ""
    met: bool | None = None  # None: no target, or not measured
    note: str = ""

    def cells(self) -> list[str]:
        if self.value is None:
            value = self.note or "not measured"
        elif self.unit == "rps":
            value = f"{self.value:,.0f} req/s"
        elif self.unit == "ms":
            value = f"{self.value:+.2f} ms" if ".added_" in f".{self.key}" else f"{self.value:.2f} ms"
        elif self.unit == "MB":
            value = f"{self.value:.1f} MB"
        elif self.unit == "x":
            value = f"{self.value:.2f}x"
        else:
            value = f"{self.value:.3g} {self.unit}".strip()
        met = {True: "yes", False: "NO", None: ""}[self.met]
        return [self.label, value, self.vs_floor, self.target, met]


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no samples."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def added(gw: list[float], floor: list[float], q: float) -> float | None:
    a, b = percentile(gw, q), percentile(floor, q)
    return None if a is None or b is None else (a - b) * MS


def median_ratio(num: list[float], den: list[float]) -> float | None:
    """Median over rounds of the per-round ratio (pairs measured back to back)."""
    pairs = [n / d for n, d in zip(num, den, strict=False) if d]
    return median(pairs) if pairs else None


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
        envoy = re.search(r"/(\d+\.\d+\.\d+)/", out) or re.search(r"version: (\S+)", out)
        envoy_version = envoy.group(1) if envoy else out.strip()
    except Exception as e:  # the bench still reports, naming what it could not find
        envoy_version = f"unknown ({e})"
    mem = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = int(m.group(1)) * 1024 if m else 0
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(MACHINE_CORES),
        "memory_gb": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "envoy": envoy_version,
    }


def describe(m: dict[str, Any]) -> str:
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, Envoy {m['envoy']}"
    )


def table(figures: list[Figure]) -> str:
    """A Markdown table (readable on a terminal, pasteable into the README)."""
    head = ["figure", "value", "vs floor", "target", "met"]
    rows = [head, ["---"] * len(head)] + [f.cells() for f in figures]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def to_json(figures: list[Figure]) -> list[dict[str, Any]]:
    return [asdict(f) for f in figures]
