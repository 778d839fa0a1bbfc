"""The Grafana dashboard and the alerting rules, proven by a real Prometheus.

A real ``prometheus`` (Debian's package; .ci/run installs it) runs the shipped
deploy/prometheus/prometheus.yml with its targets moved to a running gateway (the
ext_proc workers' metrics ports, Envoy's /stats/prometheus, the supervisor's restart
counter) and its rule files loaded. A short bounded load through the gateway makes
the series exist (answers in every dialect, streamed and not, a failover, provider
errors, budget rejections), then every dashboard query must return data and every
alert rule must evaluate.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG, key_digest
from tests.conftest import DEMO_KEY, MockAdmin
from tests.stack import Stack, config_on_free_ports, free_ports, start_stack

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llm-gateway.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_YML = PROMETHEUS_DIR / "alerts.yml"

# Grafana's built-in variables, as Grafana would expand them for a 15 minute view
# with the provisioned datasource's 5 s interval.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "15m",
    "__range_s": "900",
    "__range_ms": "900000",
}
# Alerts the load below must make pending (their `for:` keeps them from firing).
TRIGGERED = {"LLMGatewayProviderErrorRate", "LLMGatewayFailoverRate", "LLMGatewayAdmissionRejections"}
# Alerts that must stay quiet on a healthy stack without Redis.
QUIET = {
    "LLMGatewayBudgetStoreDown",
    "LLMGatewayTargetDown",
    "LLMGatewayNoExtProcWorker",
    "LLMGatewayWorkerRestarts",
    "LLMGatewayClientServerErrors",
    "LLMGatewayCredentialRefused",
}
# Metrics an alert reads that only exist once something has failed.
ONLY_ON_FAILURE = {"llm_gateway_budget_store_failures_total", "llm_gateway_credential_refusals_total"}


def test_promtool_accepts_the_config_and_the_rules() -> None:
    exe = shutil.which("promtool")
    assert exe, "promtool is required (apt-get install prometheus; .ci/run does it)"
    # `check config` also checks the rule files prometheus.yml names.
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS_YML)]):
        result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


# ---- the gateway and its load ------------------------------------------------------------


def gateway_config() -> dict[str, Any]:
    """The default models with prices (for cost) and a tenant allowed 2 requests a minute."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for model in cfg["models"].values():
        for backend in model["backends"]:
            backend["price"] = {"input": 1.0, "output": 2.0}
    cfg["tenants"]["tight"] = {
        "api_keys": [{"sha256": key_digest("tight-key")}],
        "limits": {"requests_per_minute": 2},
    }
    return config_on_free_ports(cfg)


def call(
    stack: Stack, dialect: str, model: str, stream: bool = False, key: str = DEMO_KEY
) -> tuple[int, str]:
    """One request in a client dialect: (status, x-gateway-backend)."""
    text = "how are you today"
    if dialect == "openai":
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {key}"}
        body: dict[str, Any] = {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif dialect == "anthropic":
        path, headers = "/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}
        body = {
            "model": model,
            "max_tokens": 50,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
        }
    else:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path, headers = f"/v1beta/models/{model}:{verb}", {"x-goog-api-key": key}
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    req = urllib.request.Request(
        stack.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            r.read()
            return r.status, r.headers.get("x-gateway-backend", "")
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, e.headers.get("x-gateway-backend", "")


def drive(stack: Stack, mocks: MockAdmin) -> Counter[str]:
    """One round of 14 requests; what happened, counted by kind."""
    seen: Counter[str] = Counter()
    # Answers: every model, each in another client dialect, streamed and not.
    for model, dialect in (
        ("gpt-5.5", "openai"),
        ("claude-sonnet-4-6", "anthropic"),
        ("gemini-3.5-flash", "gemini"),
    ):
        for stream in (False, True):
            seen[f"answered {call(stack, dialect, model, stream)[0]}"] += 1
    # Admission: the tight tenant's third request in a minute is over its budget.
    for _ in range(3):
        seen[f"tight {call(stack, 'openai', 'gpt-5.5', key='tight-key')[0]}"] += 1
    # Refused by the gateway itself.
    seen[f"bad key {call(stack, 'openai', 'gpt-5.5', key='wrong-key')[0]}"] += 1
    seen[f"unknown model {call(stack, 'anthropic', 'no-such-model')[0]}"] += 1
    # Failover: OpenAI answers 503, gpt-5.5 is answered by its next backend.
    mocks.fault("openai", mode="error", status=503)
    for _ in range(2):
        status, backend = call(stack, "gemini", "gpt-5.5")
        seen[f"failover {status} {backend}"] += 1
    # A provider error the client sees (400 is not retried).
    mocks.fault("gemini", mode="error", status=400)
    seen[f"provider error {call(stack, 'openai', 'gemini-3.5-flash')[0]}"] += 1
    mocks.reset()
    return seen


# ---- Prometheus ----------------------------------------------------------------------------


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path):
        self.url, self.proc, self.log = url, proc, log

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # a bad query: the body says why
            return json.loads(e.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def values(self, expr: str) -> list[float]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return [float(s["value"][1]) for s in answer["data"]["result"]]

    def wait_for(self, expr: str, timeout: float = 30.0) -> None:
        """Until ``expr`` returns a series."""
        deadline = time.monotonic() + timeout
        while not self.values(expr):
            assert time.monotonic() < deadline, f"no data for {expr}\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def wait_for_scrape_after(self, t: float, targets: int, timeout: float = 30.0) -> None:
        """Until every target has been scraped, successfully, after time ``t``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.values(f"count(up == 1 and timestamp(up) > {t})") == [targets]:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"Prometheus did not scrape all {targets} targets after {t}: "
            f"{self.query('up')}\n{self.log.read_text()[-3000:]}"
        )


def prometheus_config(stack: Stack) -> tuple[dict[str, Any], int]:
    """The shipped prometheus.yml with its targets moved to ``stack``, scraping every second;
    and how many targets that is."""
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg = stack.config
    targets = {
        "ext_proc": [f"{cfg.ext_proc.address}:{port}" for port in cfg.metrics_ports()],
        "envoy": [f"{cfg.admin.address}:{cfg.admin.port}"],
        "supervisor": [f"{cfg.admin.address}:{stack.metrics_port}"],
    }
    assert {job["job_name"] for job in prom["scrape_configs"]} == set(targets)
    for job in prom["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    prom["global"] = {
        **prom["global"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    assert prom["rule_files"]
    prom["rule_files"] = [
        str(PROMETHEUS_DIR / name) for name in prom["rule_files"]
    ]  # relative to prometheus.yml
    return prom, sum(len(t) for t in targets.values())


def _die_with_parent() -> None:
    """Prometheus gets SIGTERM if pytest dies without stopping it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    exe = shutil.which("prometheus")
    assert exe, "prometheus is required (apt-get install prometheus; .ci/run does it)"
    tmp = tmp_path_factory.mktemp("dashboards")
    stack = start_stack(tmp, gateway_config())
    proc = None
    try:
        prom, targets = prometheus_config(stack)
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
        (port,) = free_ports(1)
        log = tmp / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        p = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{p.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus is not ready: {log.read_text()[-3000:]}"
            time.sleep(0.2)

        # Two rounds of load, each followed by a scrape: every counter then has two
        # different samples within a minute, so rates (and quantiles) are not empty or NaN.
        mocks = MockAdmin(stack)
        mocks.reset()
        sent = 0
        for round_ in (1, 2):
            seen = drive(stack, mocks)
            sent += seen.total()
            assert seen["answered 200"] == 6, seen
            assert seen["tight 429"] >= 1 and seen["bad key 401"] == 1 and seen["unknown model 404"] == 1, (
                seen
            )
            assert (
                seen["failover 200 anthropic/claude-sonnet-4-6"] == 2 and seen["provider error 400"] == 1
            ), seen
            if round_ == 1:
                assert seen["tight 200"] == 2, seen
            p.wait_for_scrape_after(time.time(), targets)
            # Envoy publishes histograms when it flushes its stats (every 5 s), not live.
            p.wait_for(
                f'sum(envoy_http_downstream_rq_time_count{{envoy_http_conn_manager_prefix="gateway"}}) >= {sent}'
            )
        yield p
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stack.stop()


# ---- the dashboard ---------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, expr with Grafana's variables expanded) of every panel target."""
    dash = json.loads(DASHBOARD.read_text())
    variables = dict(GRAFANA_BUILTINS)
    for var in dash.get("templating", {}).get("list", []):
        current = var.get("current", {}).get("value")
        # "All" (or nothing chosen) as Grafana sends it to a regex matcher: everything.
        variables[var["name"]] = ".*" if current in (None, "", "$__all", ["$__all"]) else str(current)

    def expand(m: re.Match[str]) -> str:
        # Like Grafana, leave what is not a variable alone (label_replace's "$1").
        return variables.get(next(g for g in m.groups() if g), m.group(0))

    out = []
    for panel in dash["panels"]:
        for sub in [panel, *panel.get("panels", [])]:  # rows may hold panels
            for target in sub.get("targets", []):
                expr = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", expand, target["expr"])
                out.append((f"{sub['title']} [{target['refId']}]", expr))
    return out


def test_every_dashboard_query_returns_data(prometheus: Prometheus) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    broken = []
    for where, expr in queries:
        answer = prometheus.query(expr)
        if answer["status"] != "success":
            broken.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    {expr}")
            continue
        result = answer["data"]["result"]
        values = [float(s["value"][1]) for s in result]
        if not any(math.isfinite(v) for v in values):
            broken.append(f"{where}: {'no series' if not result else 'only NaN'}\n    {expr}")
    assert not broken, "dashboard queries without data:\n" + "\n".join(broken)


# ---- the alerting rules -----------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (not label names, strings or functions)."""
    expr = re.sub(
        r'\{[^}]*\}|"[^"]*"|\b(?:by|on|ignoring|without|group_left|group_right)\s*\([^)]*\)', "", expr
    )
    return set(re.findall(r"\b(llm_gateway_\w+|envoy_\w+|process_\w+|up)\b", expr))


def test_every_alert_rule_evaluates(prometheus: Prometheus) -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= TRIGGERED | QUIET
    for rule in rules:
        assert rule.get("for") is not None and rule["labels"]["severity"] in ("warning", "critical"), rule[
            "alert"
        ]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        answer = prometheus.query(rule["expr"])
        assert answer["status"] == "success", (rule["alert"], answer)
        # A misspelt metric would make a rule that never fires: each one it reads exists.
        for name in metric_names(rule["expr"]) - ONLY_ON_FAILURE:
            assert prometheus.values(f"count({name})"), f"{rule['alert']}: no series {name}"
        if rule["alert"] in TRIGGERED:
            assert prometheus.values(rule["expr"]), f"{rule['alert']} does not trigger under the load"


def test_prometheus_runs_the_rules_and_the_load_triggers_the_ratio_alerts(prometheus: Prometheus) -> None:
    """The rule files as Prometheus loads them: every rule evaluated without error."""
    deadline = time.monotonic() + 15
    while True:
        groups = prometheus.api("rules")["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        alerts = {a["labels"]["alertname"]: a["state"] for a in prometheus.api("alerts")["data"]["alerts"]}
        evaluated = all(
            not r.get("lastEvaluation", "0001").startswith("0001") for r in loaded
        )  # zero time: not yet
        if (evaluated and set(alerts) >= TRIGGERED) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert {r["name"] for r in loaded} == {r["alert"] for r in alert_rules()}
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
    assert set(alerts) >= TRIGGERED, alerts
    assert not QUIET & set(alerts), alerts


def test_readme_lists_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [r["alert"] for r in alert_rules() if f"| `{r['alert']}` |" not in readme]
    assert not missing, f"README's alert table lacks {missing}"
