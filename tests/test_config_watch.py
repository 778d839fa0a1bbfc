"""`serve --watch-config`: a worker follows its config (and provider key files) through the
kubelet's atomic symlink swap of a mounted ConfigMap or Secret."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ext_proc import config_watch, server
from ext_proc.config import load_config, parse_config
from ext_proc.state import GatewayState
from tests.stack import config_on_free_ports

MOCK_KEYS = {"MOCK_OPENAI_API_KEY": "k1", "MOCK_ANTHROPIC_API_KEY": "k2", "MOCK_GEMINI_API_KEY": "k3"}


class KubeletVolume:
    """A ConfigMap/Secret volume written the way the kubelet's AtomicWriter does it:

        gateway.yaml -> ..data/gateway.yaml
        ..data -> ..2024_01_02_03_04_05.000000001
        ..2024_01_02_03_04_05.000000001/gateway.yaml

    An update writes a new timestamped directory, points a new ``..data_tmp``
    symlink at it, renames that over ``..data`` (the one atomic step) and
    removes the old directory. The visible paths are never written to.
    """

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def write(self, files: dict[str, str]) -> None:
        self.n += 1
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        stamped = self.root / f"..2024_01_02_03_04_05.{self.n:09d}"
        stamped.mkdir()
        for name, text in files.items():
            (stamped / name).write_text(text)
        os.symlink(stamped.name, self.root / "..data_tmp")
        os.replace(self.root / "..data_tmp", self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if old is not None:
            shutil.rmtree(self.root / old)


def gateway_yaml(cfg: dict, tenant: str) -> str:
    cfg = {**cfg, "tenants": {**cfg["tenants"], tenant: {"api_keys": [{"sha256": "0" * 64}]}}}
    return yaml.safe_dump(cfg, sort_keys=False)


def served_version(metrics_port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r'^llm_gateway_config_info\{version="([0-9a-f]+)"\} 1\.0$', text, re.M)
    return m.group(1) if m else None


def wait_for_version(
    proc: subprocess.Popen, metrics_port: int, version: str, log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while served_version(metrics_port) != version:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, (
            f"worker serves {served_version(metrics_port)}, not {version}\n" + log.read_text()
        )
        time.sleep(0.1)


def test_worker_follows_a_kubelet_configmap_swap(tmp_path: Path) -> None:
    cfg = config_on_free_ports()
    volume = KubeletVolume(tmp_path / "config")
    first, second = gateway_yaml(cfg, "team-a"), gateway_yaml(cfg, "team-b")
    v1, v2 = parse_config(first).version, parse_config(second).version
    volume.write({"gateway.yaml": first})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ext_proc",
                "serve",
                "--config",
                str(volume.root / "gateway.yaml"),
                "--watch-config",
                "0.2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **MOCK_KEYS},
        )
    try:
        mport = cfg["ext_proc"]["metrics_port"]
        wait_for_version(proc, mport, v1, log)
        volume.write({"gateway.yaml": second})
        wait_for_version(proc, mport, v2, log)
        # An invalid config is refused: the worker keeps serving the last good one.
        volume.write({"gateway.yaml": second.replace("models:", "modelz:")})
        deadline = time.monotonic() + 10
        while "config reload rejected" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert served_version(mport) == v2
        volume.write({"gateway.yaml": first})
        wait_for_version(proc, mport, v1, log)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_without_the_flag_nothing_is_watched(tmp_path: Path) -> None:
    cfg = config_on_free_ports()
    volume = KubeletVolume(tmp_path / "config")
    first, second = gateway_yaml(cfg, "team-a"), gateway_yaml(cfg, "team-b")
    volume.write({"gateway.yaml": first})
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != config_watch.ENV}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ext_proc", "serve", "--config", str(volume.root / "gateway.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, **MOCK_KEYS},
        )
    try:
        mport = cfg["ext_proc"]["metrics_port"]
        wait_for_version(proc, mport, parse_config(first).version, log)
        volume.write({"gateway.yaml": second})
        time.sleep(2)
        assert served_version(mport) == parse_config(first).version
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_rotated_key_file_is_used_without_a_config_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider key mounted from a Secret: a new key reaches new requests, same config text."""
    keys = KubeletVolume(tmp_path / "keys")
    keys.write({"openai": "old-key\n"})
    cfg = config_on_free_ports()
    cfg["providers"]["openai"] = {**cfg["providers"]["openai"], "api_key_file": str(keys.root / "openai")}
    del cfg["providers"]["openai"]["api_key_env"]
    volume = KubeletVolume(tmp_path / "config")
    volume.write({"gateway.yaml": yaml.safe_dump(cfg)})

    async def scenario() -> None:
        processor = server.ExternalProcessor(
            GatewayState(load_config(volume.root / "gateway.yaml"), env=MOCK_KEYS)
        )
        reloads: list[bool] = []

        async def reload(keys_changed: bool) -> None:
            reloads.append(keys_changed)
            await server.reload(processor, force=keys_changed)

        def auth() -> str:
            return processor.state.router.targets["openai/gpt-5.5"].headers["authorization"]

        task = config_watch.start(lambda: processor.state.config, reload, 0.05)
        try:
            assert auth() == "Bearer old-key"
            await asyncio.sleep(0.2)
            assert reloads == []  # nothing changed, nothing reloaded
            version = processor.state.config.version
            keys.write({"openai": "new-key\n"})
            for _ in range(100):
                if auth() == "Bearer new-key":
                    break
                await asyncio.sleep(0.05)
            assert auth() == "Bearer new-key" and reloads == [True]
            assert processor.state.config.version == version
        finally:
            assert task is not None
            task.cancel()

    for k, v in MOCK_KEYS.items():  # `reload` resolves secrets from the process environment
        monkeypatch.setenv(k, v)
    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("value", "interval"), [("", 0.0), ("0", 0.0), ("false", 0.0), ("1", 1.0), ("true", 1.0), ("2.5", 2.5)]
)
def test_interval_from_env(value: str, interval: float) -> None:
    assert config_watch.interval_from_env({config_watch.ENV: value}) == interval


def test_interval_from_env_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match=config_watch.ENV):
        config_watch.interval_from_env({config_watch.ENV: "sometimes"})
