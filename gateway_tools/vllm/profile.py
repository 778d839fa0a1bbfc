"""Measure a running vLLM server and write a server profile for ``llm-gateway plan``.

Why: a plan is only as good as its server profile, and the figures it needs
(prefill speed, decode step time by batch size, KV blocks) are quick to
measure on the server itself: prefill from the fastest one-token answers to
two prompt lengths with nothing cached (random token ids), each decode step
time from ``b`` concurrent answers of two lengths to short prompts, and the KV
cache from ``vllm:cache_config_info``. Run it on an otherwise idle server and
machine: other load only adds time. Only the standard library: it runs anywhere.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
import urllib.request
from typing import Any


def _post(url: str, body: dict[str, Any], timeout: float = 300) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    return urllib.request.urlopen(req, timeout=timeout)


def _model(base: str) -> str:
    with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as r:
        return str(json.load(r)["data"][0]["id"])


def _latency(base: str, model: str, prompt: list[int], max_tokens: int) -> float:
    """Seconds for a whole (non-streamed) completion of exactly ``max_tokens`` tokens."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    t0 = time.monotonic()
    with _post(f"{base}/v1/completions", body) as r:
        usage = json.load(r)["usage"]
    if usage["completion_tokens"] != max_tokens:
        raise RuntimeError(f"asked for {max_tokens} tokens, got {usage['completion_tokens']}")
    return time.monotonic() - t0


def _rand_prompt(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(4, vocab) for _ in range(n)]


def measure(
    base: str,
    batches: tuple[int, ...] = (1, 2, 4),
    prompt_lengths: tuple[int, int] = (128, 2048),
    decode_tokens: tuple[int, int] = (8, 72),
    vocab: int = 500,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """The server profile fields measured on ``base`` (e.g. http://127.0.0.1:8000). Differences of
    two lengths cancel the fixed costs (HTTP, tokenisation, scheduling): prefill rate from one-token
    answers to two prompt lengths, each step time from ``b`` concurrent answers of two lengths."""
    rng = random.Random(seed)
    model = _model(base)

    def fastest(n_prompt: int, n_out: int, concurrent: int = 1) -> float:
        best = float("inf")
        for _ in range(repeats):  # other load on the machine only adds: the fastest is the server's own
            got: list[float] = []
            lock = threading.Lock()

            def one(out: list[float] = got, lk: threading.Lock = lock) -> None:
                v = _latency(base, model, _rand_prompt(rng, n_prompt, vocab), n_out)
                with lk:
                    out.append(v)

            threads = [threading.Thread(target=one) for _ in range(concurrent)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            best = min(best, statistics.median(got))
        return best

    lo, hi = prompt_lengths
    ttft = {n: fastest(n, 1) for n in prompt_lengths}
    prefill = (hi - lo) / max(1e-6, ttft[hi] - ttft[lo])
    short, long = decode_tokens
    steps = {
        b: round(max(1e-3, (fastest(16, long, b) - fastest(16, short, b)) / (long - short)) * 1000, 3)
        for b in batches
    }
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    info = next(line for line in text.splitlines() if line.startswith("vllm:cache_config_info{"))
    labels = dict(
        kv.split("=", 1) for kv in info[info.index("{") + 1 : info.rindex("}")].replace('"', "").split(",")
    )
    return {
        "name": f"measured-{model.rstrip('/').rsplit('/', 1)[-1]}",
        "source": f"measured with gateway_tools.vllm profile on {base} "
        f"(TTFT at {lo} and {hi} prompt tokens: {ttft[lo] * 1000:.1f} / {ttft[hi] * 1000:.1f} ms)",
        "prefill_tokens_per_s": round(prefill, 1),
        "decode_step_ms": steps,
        "kv_blocks": int(labels["num_gpu_blocks"]),
        "block_size": int(labels["block_size"]),
    }
