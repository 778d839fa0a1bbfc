"""The rendered Envoy config: valid for the real Envoy binary, and shaped as docs/architecture.md says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from ext_proc import envoy_config
from ext_proc.config import load_config
from ext_proc.supervisor import envoy_binary


def render(tmp_path: Path) -> tuple[Path, dict]:
    out = envoy_config.write(load_config(), tmp_path / "envoy.yaml")
    return out, yaml.safe_load(out.read_text())


def test_rendered_config_passes_envoy_validate(tmp_path: Path) -> None:
    out, _ = render(tmp_path)
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{out}' OK" in result.stdout + result.stderr


def test_model_cluster_lists_backends_as_priorities(tmp_path: Path) -> None:
    _, cfg = render(tmp_path)
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    c = clusters["model/claude-sonnet-4-5"]
    localities = c["load_assignment"]["endpoints"]
    backends = [(loc["priority"], ep["metadata"]["filter_metadata"]["gw"]["backend"])
                for loc in localities for ep in loc["lb_endpoints"]]
    assert backends == [(0, "anthropic/claude-sonnet-4-5"), (1, "openai/gpt-4o"), (2, "gemini/gemini-2.5-flash")]
    assert c["common_lb_config"]["healthy_panic_threshold"]["value"] == 0
    filters = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "http_filters"]
    assert [f["name"] for f in filters] == ["gw.attempt_observer", "gw.answer_guard", "gw.upstream_stage",
                                            "envoy.filters.http.header_mutation", "envoy.filters.http.upstream_codec"]


def test_each_entry_tier_has_a_cluster_starting_there(tmp_path: Path) -> None:
    _, cfg = render(tmp_path)
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    c = clusters["model/gpt-4o/from-tier-1"]
    backends = [(loc["priority"], ep["metadata"]["filter_metadata"]["gw"]["backend"])
                for loc in c["load_assignment"]["endpoints"] for ep in loc["lb_endpoints"]]
    assert backends == [(0, "anthropic/claude-sonnet-4-5"), (1, "gemini/gemini-2.5-flash")]
    assert "model/gpt-4o/from-tier-2" in clusters and "model/gpt-4o/from-tier-3" not in clusters


def test_routes_retry_across_priorities(tmp_path: Path) -> None:
    _, cfg = render(tmp_path)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for name in ("gpt-4o via openai/gpt-4o", "gpt-4o via openai/gpt-4o (stream)"):
        policy = routes[name]["route"]["retry_policy"]
        assert policy["num_retries"] == 2
        assert policy["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
        assert "retriable-status-codes" in policy["retry_on"] and policy["retriable_status_codes"] == [429]
        assert routes[name]["route"]["cluster"] == "model/gpt-4o"
    assert "per_try_timeout" in routes["gpt-4o via openai/gpt-4o"]["route"]["retry_policy"]
    assert "per_try_idle_timeout" in routes["gpt-4o via openai/gpt-4o (stream)"]["route"]["retry_policy"]
    assert routes["gpt-4o via openai/gpt-4o"]["route"]["timeout"] == "0s"
    # a route for the second backend as primary starts at its tier, with one retry left
    second = routes["gpt-4o via anthropic/claude-sonnet-4-5"]["route"]
    assert second["cluster"] == "model/gpt-4o/from-tier-1" and second["retry_policy"]["num_retries"] == 1
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]


def test_render_command_writes_under_envoy(tmp_path: Path) -> None:
    import sys

    result = subprocess.run([sys.executable, "-m", "ext_proc", "render-envoy"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "envoy" / "envoy.yaml").exists()


def test_repo_copy_is_rendered_from_the_default_config() -> None:
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "envoy" / "envoy.yaml").read_text() == envoy_config.render_yaml(load_config()), (
        "envoy/envoy.yaml is stale: run `llm-gateway render-envoy`")
