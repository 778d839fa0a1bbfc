"""`llm-gateway up` as a user runs it: starts, answers, stops cleanly, starts a dead worker
again, and stops for a dead Envoy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports


def start_up(tmp_path: Path) -> tuple[subprocess.Popen[str], dict]:
    proc, cfg, _ = start_up_with_output(tmp_path)
    return proc, cfg


def start_up_with_output(tmp_path: Path) -> tuple[subprocess.Popen[str], dict, list[str]]:
    cfg = config_on_free_ports()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway_tools", "up", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            return proc, cfg, lines
    proc.kill()
    raise AssertionError("up did not come up:\n" + "".join(lines))


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def chat(port: int, model: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        method="POST",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


def test_up_serves_and_stops_without_orphans(tmp_path: Path) -> None:
    proc, cfg = start_up(tmp_path)
    kids = children_of(proc.pid)
    assert len(kids) == 3  # mock providers, one ext_proc worker, Envoy
    body = chat(cfg["listen"]["port"], "claude-sonnet-4-6")
    assert body["choices"][0]["message"]["content"] == "[anthropic:claude-sonnet-4-6] hi"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_up_reports_a_dead_child_and_stops_the_rest(tmp_path: Path) -> None:
    proc, _ = start_up(tmp_path)
    kids = children_of(proc.pid)
    envoy = next(pid for pid in kids if "envoy" in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(envoy, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "envoy stopped (signal SIGKILL)" in out
    time.sleep(0.5)
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_up_starts_a_killed_worker_again_and_counts_it(tmp_path: Path) -> None:
    proc, cfg, lines = start_up_with_output(tmp_path)
    try:
        (url,) = [line.split()[-1] for line in lines if line.strip().startswith("supervisor metrics")]
        worker = next(
            pid
            for pid in children_of(proc.pid)
            if "serve" in Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        )
        os.kill(worker, signal.SIGKILL)
        assert proc.stdout is not None
        said = [proc.stdout.readline() for _ in range(2)]
        assert said[0].startswith("ext_proc-0 stopped (signal SIGKILL); starting it again in"), said
        assert said[1].startswith("ext_proc-0 started again"), said
        deadline = time.monotonic() + 60
        while True:  # answered again once the new worker listens and Envoy's health check took it back
            try:
                assert chat(cfg["listen"]["port"], "gpt-5.5")["choices"]
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, "no answer after the worker was started again"
                time.sleep(0.2)
        with urllib.request.urlopen(url, timeout=5) as r:
            assert 'llm_gateway_worker_restarts_total{child="ext_proc-0"} 1.0' in r.read().decode()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
