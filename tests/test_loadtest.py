"""`llm-gateway loadtest` against the real local stack: short runs whose books must balance exactly.

The stack is this module's own (the outage scenario leaves a provider ejected
by Envoy's outlier detection for a while, which other tests must not see).
Runs are a few seconds of loopback traffic at a fixed, evenly spaced rate, so
the number of requests sent is known in advance.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway_tools.cli import main
from gateway_tools.loadtest import report, scenarios
from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("loadtest"), config_on_free_ports())
    yield s
    s.stop()


@pytest.fixture
def admin(stack: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(stack) as a:
        yield a


def settings(stack: Stack, **kw: Any) -> scenarios.Settings:
    return scenarios.Settings(
        url=stack.base_url, config=stack.config, api_keys=[DEMO_KEY], sample_interval=0.25, **kw
    )


def assert_books_balance(r: dict[str, Any], admin: MockAdmin, stack: Stack) -> None:
    """Requests sent == answered by a provider + answered by the gateway; each provider's own
    count (read here, independently of the report) less its injected faults == what the client got from it."""
    t = r["totals"]
    assert all(r["checks"].values()), r["checks"]
    assert t["sent"] == t["answered_by_provider"] + t["answered_by_gateway"]
    client_by_provider: dict[str, int] = {}
    for backend, g in r["by"]["backend"].items():
        if backend != "(gateway)":
            name = stack.config.backends[backend].provider_name
            client_by_provider[name] = client_by_provider.get(name, 0) + g["requests"]
    for name in stack.config.mock_providers():
        counted = admin.stats(name)
        assert r["providers"][name]["requests"] == counted["requests"]
        assert counted["requests"] - counted["faulted"] == client_by_provider.get(name, 0), name


def test_steady_report_matches_what_the_mocks_counted(stack: Stack, admin: MockAdmin, tmp_path: Path) -> None:
    r = scenarios.run("steady", settings(stack, duration=2.0, rate=25))
    t = r["totals"]
    assert t["sent"] == 50  # evenly spaced arrivals: 2 s x 25/s
    assert (t["ok"], t["rejected"], t["error"], t["client_error"], t["failovers"]) == (50, 0, 0, 0, 0)
    assert_books_balance(r, admin, stack)
    assert set(r["by"]["dialect"]) == {"openai", "anthropic", "gemini"}
    assert set(r["by"]["stream"]) == {"streamed", "non-streamed"}
    assert r["ttft_ms"]["p50"] is not None and r["latency_ms"]["p99"] is not None
    assert r["tokens"]["output"] > 0
    assert sum(r["provider_series"]["total_rps"]) > 0

    files = report.write(r, tmp_path)
    names = {f.name for f in files}
    assert names == {
        "report.json",
        "report.md",
        "throughput.png",
        "latency.png",
        "ttft.png",
        "provider_rate.png",
    }
    for f in files:
        if f.suffix == ".png":
            assert 0 < f.stat().st_size < 150_000, f
    assert orjson.loads((tmp_path / "report.json").read_bytes())["totals"]["sent"] == 50
    md = (tmp_path / "report.md").read_text()
    assert "# Load test: `steady`" in md and "![Throughput by outcome](throughput.png)" in md


def test_outage_is_hidden_by_failover(stack: Stack, admin: MockAdmin) -> None:
    r = scenarios.run(
        "outage", settings(stack, duration=3.0, rate=20, models={"gpt-5.5": 1.0}, outage_provider="openai")
    )
    t = r["totals"]
    assert t["sent"] == 60
    assert (t["ok"], t["error"], t["client_error"]) == (60, 0, 0)  # the outage is invisible to clients
    assert r["providers"]["openai"]["faulted"] > 0
    assert t["failovers"] >= r["providers"]["openai"]["faulted"]
    assert [e["label"] for e in r["events"]] == ["openai down", "openai back"]
    assert_books_balance(r, admin, stack)
    assert admin.stats("openai")["requests"] == r["providers"]["openai"]["requests"]
    # The fault was lifted at the end: the mock is healthy again.
    assert admin._call("GET", "openai", "/_mock/faults")["mode"] == "ok"


def test_cli_writes_a_report_per_scenario(
    stack: Stack, admin: MockAdmin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "loadtest",
            "steady",
            "--url",
            stack.base_url,
            "--config",
            str(stack.config_file),
            "--duration",
            "1",
            "--rate",
            "10",
            "--models",
            "claude-sonnet-4-6",
            "--dialects",
            "openai",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "steady: sent 10, ok 10" in out and "books balance" in out
    data = orjson.loads((tmp_path / "steady" / "report.json").read_bytes())
    assert data["by"]["backend"]["anthropic/claude-sonnet-4-6"]["requests"] == 10
    assert admin.stats("anthropic")["requests"] == 10


def test_reconfigure_applies_a_config_mid_run_without_errors(tmp_path: Path) -> None:
    """`loadtest reconfigure --start`: the real `up`, `llm-gateway apply` halfway, no failed request."""
    cfg = config_on_free_ports()
    base = tmp_path / "gateway.yaml"
    base.write_text(yaml.safe_dump(cfg, sort_keys=False))
    changed = copy.deepcopy(cfg)
    changed["models"]["claude-sonnet-4-6"]["backends"].reverse()  # reorder failover mid-run
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(changed, sort_keys=False))
    code = main(
        [
            "loadtest",
            "reconfigure",
            "--start",
            "--config",
            str(base),
            "--apply-config",
            str(other),
            "--duration",
            "12",
            "--rate",
            "10",
            "--models",
            "claude-sonnet-4-6",
            "--dialects",
            "openai",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    data = orjson.loads((tmp_path / "out" / "reconfigure" / "report.json").read_bytes())
    # 12 s: the apply at the halfway mark has 6 s to finish while requests still arrive (it took
    # over 2 s on a loaded 2-core machine, and over 4 s with eight test sessions beside it: then
    # no request saw the new config).
    assert data["totals"]["sent"] == data["totals"]["ok"] == 120
    (event,) = data["events"]
    assert event["note"].startswith("exit code 0"), event
    # Before the switch Anthropic answered, after it Gemini (the new first backend).
    assert set(data["by"]["backend"]) == {"anthropic/claude-sonnet-4-6", "gemini/gemini-3.5-flash"}


def test_spike_triples_the_tenant_rate(stack: Stack, admin: MockAdmin) -> None:
    r = scenarios.run("spike", settings(stack, duration=1.5, rate=10))
    # 0.5 s at 10/s, 0.5 s at 30/s, 0.5 s at 10/s; every request from the demo tenant.
    assert r["totals"]["sent"] == 5 + 15 + 5
    assert set(r["by"]["tenant"]) == {"demo"}
    assert r["totals"]["ok"] + r["totals"]["rejected"] == 25
    assert_books_balance(r, admin, stack)


def test_pool_report_shows_spill_over_and_shedding(tmp_path: Path) -> None:
    """The pool scenario against two slow simulated servers with an API tier behind them: past
    saturation interactive requests spill to the mock provider and the batch tenant's are shed;
    the report's pool series (from the gateway's own metrics) and its books show both."""
    from ext_proc.config import key_digest
    from gateway_tools.simulator import start_pool_in_thread

    with start_pool_in_thread(2, model="sim-llama", time_scale=1.0, max_num_seqs=2) as sim:
        cfg = config_on_free_ports()
        cfg["providers"]["gpus"] = {
            "dialect": "openai",
            "endpoints": sim.endpoints,
            "pool": {"queue_limit": 2, "scrape_interval_ms": 50, "stale_after_ms": 1000},
        }
        cfg["models"]["sim-llama"] = {
            "backends": [
                {"provider": "gpus", "model": "sim-llama"},
                {"provider": "openai", "model": "gpt-5.5"},
            ]
        }
        cfg["tenants"]["nightly"] = {
            "priority": "batch",
            "max_priority": "batch",
            "api_keys": [{"sha256": key_digest("nightly-test-key")}],
        }
        s = start_stack(tmp_path, cfg)
        try:
            st = settings(
                s,
                models={"sim-llama": 1.0},
                dialects={"openai": 1.0, "anthropic": 1.0},
                duration=8.0,
                rate=5.0,
                max_tokens=32,
            )
            st.api_keys = [DEMO_KEY, "nightly-test-key"]
            r = scenarios.run("pool", st)
            files = report.write(r, tmp_path / "report")
        finally:
            s.stop()
    assert all(r["checks"].values()), (r["checks"], r["providers"])
    assert r["providers"]["gpus"]["match"] and r["providers"]["gpus"]["requests"] > 0
    pool = r["pool_series"]
    assert pool["totals"]["saturated"]["spill"] > 0 and pool["totals"]["saturated"]["shed"] > 0, pool[
        "totals"
    ]
    assert r["totals"]["failovers"] > 0  # the spilled requests were answered by the API tier
    assert r["totals"]["rejected"] == r["by"]["tenant"]["nightly"]["rejected"] > 0
    assert r["by"]["tenant"]["demo"]["rejected"] == 0 and r["totals"]["error"] == 0
    assert sum(pool["totals"]["picks"].values()) == r["providers"]["gpus"]["requests"]
    assert set(pool["queue"]) == {f"gpus/{e}" for e in sim.endpoints}
    assert max(v for ys in pool["queue"].values() for v in ys if v is not None) >= 1
    names = {f.name for f in files}
    assert {"pool_queue.png", "pool_kv.png", "pool_picks.png", "pool_saturated.png"} <= names
    assert "## Pool" in (tmp_path / "report" / "report.md").read_text()
