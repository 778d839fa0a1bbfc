"""The rendered Envoy config: valid for the real Envoy binary, and shaped as docs/architecture.md says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from ext_proc import envoy_config
from ext_proc.config import load_config
from gateway_tools.supervisor import envoy_binary


def render(tmp_path: Path) -> tuple[Path, dict]:
    out = envoy_config.write(load_config(), tmp_path / "envoy.yaml")
    return out, yaml.safe_load(out.read_text())


def test_rendered_config_passes_envoy_validate(tmp_path: Path) -> None:
    out, _ = render(tmp_path)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{out}' OK" in result.stdout + result.stderr


def test_model_cluster_lists_backends_as_priorities(tmp_path: Path) -> None:
    _, cfg = render(tmp_path)
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    c = clusters["model/claude-sonnet-4-6"]
    localities = c["load_assignment"]["endpoints"]
    backends = [
        (loc["priority"], ep["metadata"]["filter_metadata"]["gw"]["backend"])
        for loc in localities
        for ep in loc["lb_endpoints"]
    ]
    assert backends == [
        (0, "anthropic/claude-sonnet-4-6"),
        (1, "openai/gpt-5.5"),
        (2, "gemini/gemini-3.5-flash"),
    ]
    assert c["common_lb_config"]["healthy_panic_threshold"]["value"] == 0
    filters = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "http_filters"
    ]
    guard = next(f for f in filters if f["name"] == "gw.answer_guard")["typed_config"]["extension_config"]
    # The guard holds a stream's headers until its first event: longer than the attempt's idle backstop.
    assert guard["typed_config"]["message_timeout"] == "40s"
    assert [f["name"] for f in filters] == [
        "gw.attempt_observer",
        "gw.answer_guard",
        "gw.credential_refusal",
        "gw.upstream_stage",
        "envoy.filters.http.header_mutation",
        "gw.hold_whole_answers",
        "envoy.filters.http.upstream_codec",
    ]


def test_each_entry_tier_has_a_cluster_starting_there(tmp_path: Path) -> None:
    _, cfg = render(tmp_path)
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    c = clusters["model/gpt-5.5/from-tier-1"]
    backends = [
        (loc["priority"], ep["metadata"]["filter_metadata"]["gw"]["backend"])
        for loc in c["load_assignment"]["endpoints"]
        for ep in loc["lb_endpoints"]
    ]
    assert backends == [(0, "anthropic/claude-sonnet-4-6"), (1, "gemini/gemini-3.5-flash")]
    assert "model/gpt-5.5/from-tier-2" in clusters and "model/gpt-5.5/from-tier-3" not in clusters


def test_routes_retry_across_priorities(tmp_path: Path) -> None:
    _, cfg = render(tmp_path)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for name in ("gpt-5.5 via openai/gpt-5.5", "gpt-5.5 via openai/gpt-5.5 (stream)"):
        policy = routes[name]["route"]["retry_policy"]
        assert policy["num_retries"] == 2
        assert policy["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
        assert "retriable-status-codes" in policy["retry_on"] and policy["retriable_status_codes"] == [
            401,
            403,
            404,
            429,
        ]
        assert routes[name]["route"]["cluster"] == "model/gpt-5.5"
    plain, stream = (
        routes["gpt-5.5 via openai/gpt-5.5"]["route"],
        routes["gpt-5.5 via openai/gpt-5.5 (stream)"]["route"],
    )
    assert plain["retry_policy"]["per_try_timeout"] == "120s"
    # Streams: Envoy's idle timer backs up the router stage's, and alone (with a per-try timeout
    # next to it, it never fires once the response started).
    assert "per_try_timeout" not in stream["retry_policy"]
    assert stream["retry_policy"]["per_try_idle_timeout"] == "35s"
    assert plain["timeout"] == "0s"
    # Whole-request bounds (the upload, then three attempts; the stream cap), each 5 s behind the gateway's own.
    assert plain["max_stream_duration"] == {"max_stream_duration": "425s"} and plain["idle_timeout"] == "0s"
    assert (
        stream["max_stream_duration"] == {"max_stream_duration": "1805s"} and stream["idle_timeout"] == "0s"
    )
    # a route for the second backend as primary starts at its tier, with one retry left
    second = routes["gpt-5.5 via anthropic/claude-sonnet-4-6"]["route"]
    assert second["cluster"] == "model/gpt-5.5/from-tier-1" and second["retry_policy"]["num_retries"] == 1
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "gw.stream_content_type",
        "gw.router_stage",
        "envoy.filters.http.router",
    ]
    # A backend stream in a binary framing reaches the client as the SSE its encoder wrote:
    # the content type is rewritten for that framing's responses only.
    rewrite = hcm["http_filters"][1]["typed_config"]
    [mutation] = rewrite["extension_config"]["typed_config"]["mutations"]["response_mutations"]
    assert mutation["append"]["header"] == {"key": "content-type", "value": "text/event-stream"}
    [matcher] = rewrite["xds_matcher"]["matcher_list"]["matchers"]
    framed = matcher["predicate"]["not_matcher"]["single_predicate"]
    assert framed["value_match"] == {"prefix": "application/vnd.amazon.eventstream"}
    assert matcher["on_match"]["action"]["name"] == "skip"


def test_render_command_writes_under_envoy(tmp_path: Path) -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ext_proc", "render-envoy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "envoy" / "envoy.yaml").exists()


def test_repo_copy_is_rendered_from_the_default_config() -> None:
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "envoy" / "envoy.yaml").read_text() == envoy_config.render_yaml(load_config()), (
        "envoy/envoy.yaml is stale: run `llm-gateway render-envoy`"
    )


def test_tls_providers_pass_envoy_validate(tmp_path: Path) -> None:
    """Providers over https: a cluster all on TLS negotiates HTTP/2 or 1.1 by ALPN; one
    mixing TLS and plaintext backends speaks HTTP/1.1 (Envoy refuses ALPN next to a
    plaintext transport socket)."""
    from ext_proc.config import parse_config

    text = load_config().text.replace("http://127.0.0.1:8182", "https://api.anthropic.com")
    all_tls = text.replace("http://127.0.0.1:8181/v1", "https://api.openai.com/v1").replace(
        "http://127.0.0.1:8183", "https://generativelanguage.googleapis.com"
    )
    for name, variant in (("mixed", text), ("all-tls", all_tls)):
        out = envoy_config.write(parse_config(variant, f"{name}.yaml"), tmp_path / f"{name}.yaml")
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, name + ": " + (result.stdout + result.stderr)[-2000:]
        clusters = {c["name"]: c for c in yaml.safe_load(out.read_text())["static_resources"]["clusters"]}
        protocol = clusters["model/gpt-5.5"]["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        if name == "all-tls":
            assert "auto_config" in protocol and "transport_socket" in clusters["model/gpt-5.5"]
        else:
            assert "explicit_http_config" in protocol
            assert [m["name"] for m in clusters["model/gpt-5.5"]["transport_socket_matches"]] == [
                "tls",
                "plaintext",
            ]


def test_static_bootstrap_ignores_what_only_the_workers_read() -> None:
    """Kubernetes and compose run a static bootstrap next to workers that reload their config:
    a change of tenants, budgets or prices leaves it unchanged (no Envoy rollout), and its
    routes pin no config version (failover attempts use the config the worker serves)."""
    from ext_proc.config import parse_config

    base = load_config()
    changed = parse_config(
        base.text + "\n  team-b:\n    api_keys:\n      - sha256: " + "ab" * 32 + "\n"
        "    limits: {requests_per_minute: 5}\n",
        "gateway.yaml",
    )
    assert changed.version != base.version and "team-b" in changed.tenants
    assert envoy_config.render_yaml(changed) == envoy_config.render_yaml(base)
    hcm = envoy_config.render(base)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        assert "version" not in route.get("metadata", {}).get("filter_metadata", {}).get("gw", {}), route[
            "name"
        ]
    # `up` serves configs side by side: there every route names its version.
    live = envoy_config._route_config([base], versioned=True)["virtual_hosts"][0]["routes"]
    assert all(
        r["metadata"]["filter_metadata"]["gw"]["version"] == base.version for r in live if "metadata" in r
    )


def test_pool_cluster_picks_by_override_host_and_passes_envoy_validate(tmp_path: Path) -> None:
    """A pool's servers are endpoints of the model cluster, all naming the pool backend; the
    cluster's override_host policy reads the router stage's pick (docs/pools.md)."""
    raw = yaml.safe_load(load_config().text)
    raw["providers"]["gpus"] = {"dialect": "openai", "endpoints": ["127.0.0.1:9100", "127.0.0.1:9101"]}
    raw["models"]["sim-llama"] = {
        "backends": [{"provider": "gpus"}, {"provider": "openai", "model": "gpt-5.5"}]
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(str(path))
    assert cfg.retries("sim-llama") == 2  # the other server, then the API tier
    out = envoy_config.write(cfg, tmp_path / "envoy.yaml")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    clusters = {c["name"]: c for c in yaml.safe_load(out.read_text())["static_resources"]["clusters"]}
    c = clusters["model/sim-llama"]
    eps = [
        (
            loc["priority"],
            ep["endpoint"]["address"]["socket_address"]["port_value"],
            ep["metadata"]["filter_metadata"]["gw"]["backend"],
        )
        for loc in c["load_assignment"]["endpoints"]
        for ep in loc["lb_endpoints"]
    ]
    assert eps[:2] == [(0, 9100, "gpus/sim-llama"), (0, 9101, "gpus/sim-llama")] and eps[2][0] == 1
    policy = c["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    assert policy["typed_config"]["override_host_sources"] == [
        {"metadata": {"key": "envoy.lb", "path": [{"key": "x-gateway-destination-endpoint"}]}}
    ]
    assert "lb_policy" not in c
    assert "lb_policy" in clusters["model/gpt-5.5"]  # clusters without a pool are unchanged
