"""Envoy's override_host policy and the gateway's retry policy, on a bare Envoy (no ext_proc):
the facts docs/pools.md ("Retries: what Envoy does with the list") rests on.

Three simulated servers: A and B in priority 0, C in priority 1; the list arrives in a request
header here (the gateway sends it as ``envoy.lb`` metadata, read the same way by the policy).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_tools.simulator import BackgroundPool, start_pool_in_thread
from gateway_tools.supervisor import envoy_binary
from tests.stack import free_ports

HEADER = "x-gateway-destination-endpoint"


def _bootstrap(listen: int, admin: int, ports: list[int]) -> dict[str, Any]:
    def host(port: int) -> dict[str, Any]:
        return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}

    typed = "type.googleapis.com/envoy.extensions"
    retry = {
        "retry_on": "5xx,reset,connect-failure,refused-stream",
        "num_retries": 3,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": f"{typed}.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": f"{typed}.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }
    route = {
        "match": {"prefix": "/"},
        "response_headers_to_add": [{"header": {"key": "x-upstream", "value": "%UPSTREAM_HOST%"}}],
        "route": {"cluster": "pool", "timeout": "0s", "retry_policy": retry},
    }
    hcm = {
        "@type": f"{typed}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "h",
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{typed}.filters.http.router.v3.Router"},
            }
        ],
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
    }
    rr = {
        "typed_extension_config": {
            "name": "envoy.load_balancing_policies.round_robin",
            "typed_config": {"@type": f"{typed}.load_balancing_policies.round_robin.v3.RoundRobin"},
        }
    }
    override = {
        "typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": f"{typed}.load_balancing_policies.override_host.v3.OverrideHost",
                "override_host_sources": [{"header": HEADER}],
                "fallback_policy": {"policies": [rr]},
            },
        }
    }
    a, b, c = ports
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "pool",
                    "type": "STATIC",
                    "connect_timeout": "0.5s",
                    "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
                    "load_balancing_policy": {"policies": [override]},
                    "load_assignment": {
                        "cluster_name": "pool",
                        "endpoints": [
                            {"priority": 0, "lb_endpoints": [host(a), host(b)]},
                            {"priority": 1, "lb_endpoints": [host(c)]},
                        ],
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, BackgroundPool]]:
    with start_pool_in_thread(3, model="m", time_scale=0.01) as sim:
        listen, admin = free_ports(2)
        path = Path(tmp_path_factory.mktemp("override")) / "envoy.yaml"
        path.write_text(yaml.safe_dump(_bootstrap(listen, admin, sim.ports)))
        proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path), "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            yield listen, sim
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _where(envoy: tuple[int, BackgroundPool], names: str | None, n: int = 4) -> list[str]:
    """Send ``n`` requests listing ``names`` (e.g. "A,B"); the server letter that answered each."""
    listen, sim = envoy
    addr = {n: f"127.0.0.1:{p}" for n, p in zip("ABC", sim.ports, strict=True)}
    letter = {v: k for k, v in addr.items()}
    headers = {"content-type": "application/json"}
    if names is not None:
        headers[HEADER] = ",".join(addr.get(x, x) for x in names.split(","))
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    ).encode()
    out = []
    for _ in range(n):
        req = urllib.request.Request(
            f"http://127.0.0.1:{listen}/v1/chat/completions", data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                out.append(letter.get(r.headers.get("x-upstream"), "?"))
        except urllib.error.HTTPError as e:
            out.append(f"{e.code}")
    return out


def test_the_list_picks_the_host_even_across_priorities(envoy: tuple[int, BackgroundPool]) -> None:
    assert set(_where(envoy, None)) == {"A", "B"}  # round robin over priority 0
    assert _where(envoy, "A") == ["A"] * 4
    assert _where(envoy, "B") == ["B"] * 4
    assert _where(envoy, "C") == ["C"] * 4  # priority 1, picked all the same
    assert set(_where(envoy, "127.0.0.1:1")) == {"A", "B"}  # no such host: the fallback


def test_retries_walk_the_list_then_fall_back_to_the_next_priority(envoy: tuple[int, BackgroundPool]) -> None:
    _, sim = envoy
    sim.set_fault(0, "down")
    try:
        assert _where(envoy, "A") == ["C"] * 4  # a one-host list: the retry skips B
        assert _where(envoy, "A,B") == ["B"] * 4
        assert _where(envoy, "A,C") == ["C"] * 4
        assert _where(envoy, "A,B,C") == ["B"] * 4
        sim.set_fault(1, "down")
        assert _where(envoy, "A,B") == ["C"] * 4  # the list used up: the next priority
    finally:
        sim.set_fault(0, "none")
        sim.set_fault(1, "none")
