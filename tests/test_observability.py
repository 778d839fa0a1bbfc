"""Metrics and access log: after a known set of requests, the numbers match exactly."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = config_on_free_ports()
    # USD per million tokens: cost = (3 * input + 15 * output) / 1e6 for claude's primary.
    cfg["models"]["claude-sonnet-4-6"]["backends"][0]["price"] = {"input": 3.0, "output": 15.0}
    s = start_stack(tmp_path_factory.mktemp("obs"), cfg)
    yield s
    s.stop()


def send(stack: Stack, path: str, body: dict, headers: dict[str, str]) -> int:
    req = urllib.request.Request(
        stack.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def metrics(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    cfg = stack.config
    with urllib.request.urlopen(f"http://{cfg.ext_proc.address}:{cfg.ext_proc.metrics_port}/metrics") as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_and_token_totals_match_exactly(stack: Stack) -> None:
    openai = {"authorization": f"Bearer {DEMO_KEY}"}
    # 3 non-streamed + 2 streamed OpenAI requests to claude (Anthropic backend):
    # input "one two three" = 3 words, reply "[anthropic:claude-sonnet-4-6] one two three" = 4 words.
    for stream in (False, False, False, True, True):
        body = {
            "model": "claude-sonnet-4-6",
            "stream": stream,
            "messages": [{"role": "user", "content": "one two three"}],
        }
        assert send(stack, "/v1/chat/completions", body, openai) == 200
    # 2 Gemini requests to gpt-5.5 (OpenAI backend): input 2 words, reply 3 words.
    for _ in range(2):
        assert (
            send(
                stack,
                "/v1beta/models/gpt-5.5:generateContent",
                {"contents": [{"parts": [{"text": "hi you"}]}]},
                {"x-goog-api-key": DEMO_KEY},
            )
            == 200
        )
    # 1 unknown model, 1 bad key.
    assert send(stack, "/v1/chat/completions", {"model": "nope", "messages": []}, openai) == 404
    assert (
        send(
            stack, "/v1/chat/completions", {"model": "gpt-5.5", "messages": []}, {"authorization": "Bearer x"}
        )
        == 401
    )

    m = metrics(stack)

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    claude = {"model": "claude-sonnet-4-6", "backend": "anthropic/claude-sonnet-4-6"}
    gpt = {"model": "gpt-5.5", "backend": "openai/gpt-5.5"}
    assert value("llm_gateway_requests_total", dialect="openai", status="200", **claude) == 5
    assert value("llm_gateway_requests_total", dialect="gemini", status="200", **gpt) == 2
    assert value("llm_gateway_tokens_total", kind="input", **claude) == 15
    assert value("llm_gateway_tokens_total", kind="output", **claude) == 20
    assert value("llm_gateway_tokens_total", kind="input", **gpt) == 4
    assert value("llm_gateway_tokens_total", kind="output", **gpt) == 6
    assert value("llm_gateway_cost_usd_total", tenant="demo", **claude) == pytest.approx(
        5 * (3 * 3 + 4 * 15) / 1e6
    )
    assert value("llm_gateway_rejections_total", dialect="openai", reason="not_found") == 1
    assert value("llm_gateway_rejections_total", dialect="openai", reason="authentication") == 1
    assert value("llm_gateway_time_to_first_token_seconds_count", **claude) == 2
    assert value("llm_gateway_request_duration_seconds_count", **claude) == 5
    assert value("llm_gateway_config_info", version=stack.config.version) == 1
    for (name, labels), _ in m.items():
        assert DEMO_KEY not in name and all(DEMO_KEY not in v for _, v in labels)


def test_access_log_has_one_line_per_request_and_no_keys(stack: Stack) -> None:
    log: Path = stack.access_log
    time.sleep(1.5)  # let lines of earlier requests be flushed (every second) before counting
    before = len(log.read_text().splitlines()) if log.exists() else 0
    assert (
        send(
            stack,
            "/v1/messages",
            {
                "model": "gemini-3.5-flash",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "log me please"}],
            },
            {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"},
        )
        == 200
    )
    assert (
        send(stack, f"/v1beta/models/gpt-5.5:generateContent?key={DEMO_KEY}-wrong", {"contents": []}, {})
        == 401
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < before + 2:
        time.sleep(0.1)
    text = log.read_text()
    lines = [json.loads(x) for x in text.splitlines()[before:]]
    assert len(lines) == 2
    ok, rejected = lines
    assert ok["status"] == 200 and ok["tenant"] == "demo" and ok["dialect"] == "anthropic"
    assert ok["model"] == "gemini-3.5-flash" and ok["backend"] == "gemini/gemini-3.5-flash"
    assert ok["input_tokens"] == 3 and ok["output_tokens"] == 4 and ok["attempts"] == 1
    assert rejected["status"] == 401 and rejected["details"] == "authentication"
    assert DEMO_KEY not in text


def test_envoy_cluster_stats_keep_model_names_with_dots(stack: Stack) -> None:
    """Envoy's Prometheus tags end a cluster name at its first dot; the stat name has none."""
    body = {"model": "gemini-3.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    assert send(stack, "/v1/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"}) == 200
    admin = stack.config.admin
    with urllib.request.urlopen(f"http://{admin.address}:{admin.port}/stats/prometheus") as r:
        families = list(text_string_to_metric_families(r.read().decode()))
    names = {f.name for f in families}
    assert not [n for n in names if "flash" in n], "a model name leaked into a metric name"
    completed = {
        s.labels.get("envoy_cluster_name"): s.value
        for f in families
        if f.name == "envoy_cluster_upstream_rq_completed"
        for s in f.samples
    }
    assert any(
        name and name.endswith("model/gemini-3_5-flash") and value >= 1 for name, value in completed.items()
    ), completed
