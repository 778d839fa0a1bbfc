"""`llm-gateway up` as a user runs it: starts, answers, stops cleanly, reports a dead child."""

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
    cfg = config_on_free_ports()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "gateway_tools", "up", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            return proc, cfg
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
        f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


def test_up_serves_and_stops_without_orphans(tmp_path: Path) -> None:
    proc, cfg = start_up(tmp_path)
    kids = children_of(proc.pid)
    assert len(kids) == 3  # mock providers, one ext_proc worker, Envoy
    body = chat(cfg["listen"]["port"], "claude-sonnet-4-5")
    assert body["choices"][0]["message"]["content"] == "[anthropic:claude-sonnet-4-5] hi"
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
