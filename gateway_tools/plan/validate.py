"""Check ``llm-gateway plan``'s prediction against the model-server simulator, through the gateway.

``python -m gateway_tools.plan.validate TRAFFIC --servers N --rate R`` starts N simulated
vLLM servers (``llm-gateway simulate-pool``, the default A100 profile, real time), a gateway
with a ``pool`` backend on them (the scored picker), sends the traffic file's requests
(Poisson arrivals at R/s, its token distributions and shared prefixes, streamed) for the
planner's warm-up and window, measures TTFT p90 at the client, and compares it with what the
planner predicts for the same pool (the simulator's profile as the server profile). Prints
one JSON object; exit code 1 when the relative error is over ``--tolerance`` (0.2).

The planner and the simulator are separate models of vLLM (the planner reserves KV for the
whole output at admission; the simulator allocates as it goes and preempts), and the
measured figure carries the gateway, Envoy, the client and a shared machine: this is the
comparison docs/capacity.md asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ..bench.pool import KEY_ENV, PoolOptions, SimProcess, gateway_config, streamed_ttft
from ..bench.scenarios import port_block
from ..simulator import DEFAULT_PROFILE
from ..supervisor import Stack
from .model import Server, Traffic, load_plan_input
from .planner import Planner
from .sim import _arrivals


def simulator_server(time_scale: float = 1.0, max_num_seqs: int | None = None) -> Server:
    """The simulator's default profile as a planner server profile (step times x ``time_scale``)."""
    p = DEFAULT_PROFILE
    seqs = max_num_seqs or p.max_num_seqs
    # the engine's step: decode_base_s for one sequence, + decode_per_seq_s for each other one
    steps = {
        b: (p.decode_base_s + p.decode_per_seq_s * (b - 1)) * 1000 * time_scale
        for b in sorted({1, max(seqs, 2)})
    }
    return Server(
        name=f"simulator-{p.name}",
        prefill_tokens_per_s=1.0 / (p.prefill_per_token_s * time_scale),
        decode_step_ms=steps,
        kv_blocks=p.num_blocks,
        max_num_seqs=seqs,
        max_num_batched_tokens=p.max_num_batched_tokens,
        source="gateway_tools.simulator DEFAULT_PROFILE",
    )


def _words(rng: random.Random, n: int, tag: str) -> str:
    return " ".join(f"{tag}{rng.randrange(1_000_000)}" for _ in range(n))


async def measure(
    url: str, key: str, model: str, traffic: Traffic, rate: float, warmup: float, window: float, seed: int
) -> dict[str, Any]:
    """Send the planner's own arrivals (same seed: the same requests it simulated)."""
    reqs = _arrivals(traffic, rate, warmup, window, seed)
    rng = random.Random(seed)
    prefixes = {
        g: _words(random.Random(1000 + g), traffic.prefix_tokens, f"g{g}w")
        for g in range(traffic.prefix_groups)
    }
    ttfts: list[tuple[bool, float]] = []

    async def one(client: aiohttp.ClientSession, r: Any, text: str) -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": r.out,
            "stream": True,
        }
        ttft, _ = await streamed_ttft(client, url, key, body)
        ttfts.append((r.measured, ttft))

    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=4000)
    ) as client:
        t0 = time.monotonic()
        tasks = []
        for r in reqs:
            text = ((prefixes[r.group] + " ") if r.group >= 0 else "") + _words(rng, r.own, "q")
            delay = r.t_arrive - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, r, text)))
        await asyncio.gather(*tasks)
    measured = sorted(t for m, t in ttfts if m)
    p90 = measured[min(len(measured) - 1, math.ceil(0.9 * len(measured)) - 1)] if measured else math.inf
    return {
        "requests": len(reqs),
        "measured_requests": len(measured),
        "failed": sum(1 for t in measured if math.isinf(t)),
        "ttft_p50_ms": round(measured[len(measured) // 2] * 1000, 1) if measured else None,
        "ttft_p90_ms": round(p90 * 1000, 1),
    }


def _mean_itl_s(endpoints: list[str]) -> float | None:
    """Mean inter-token latency over the servers, from their ``vllm:inter_token_latency_seconds``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for e in endpoints:
        with urllib.request.urlopen(f"http://{e}/metrics", timeout=5) as r:
            text = r.read().decode()
        for fam in text_string_to_metric_families(text):
            if fam.name == "vllm:inter_token_latency_seconds":
                for smp in fam.samples:
                    if smp.name.endswith("_sum"):
                        total += smp.value
                    elif smp.name.endswith("_count"):
                        count += smp.value
    return total / count if count else None


def validate(
    traffic_path: str,
    servers: int,
    rate: float,
    warmup: float,
    window: float,
    seed: int,
    max_num_seqs: int | None,
) -> dict[str, Any]:
    traffic, slo = load_plan_input(traffic_path)
    server = simulator_server(1.0, max_num_seqs)
    planner = Planner(traffic, slo, server, window=window, warmup=warmup, seed=seed)
    pred = planner.predict(servers, rate)
    opts = PoolOptions(
        servers=servers, time_scale=1.0, kv_blocks=server.kv_blocks, max_num_seqs=server.max_num_seqs
    )
    sim = SimProcess(opts)
    stack: Stack | None = None
    try:
        run_dir = Path(tempfile.mkdtemp(prefix="llm-gateway-plan-validate-"))
        base = port_block(4)
        cfg = gateway_config(opts, {"scored": sim.endpoints}, base)
        (run_dir / "gateway.yaml").write_text(yaml.safe_dump(cfg))
        key = "validate-" + str(random.Random().randrange(10**12))
        stack = Stack(run_dir / "gateway.yaml", run_dir=run_dir / "run", env={KEY_ENV: key}).start(60)
        time.sleep(1.0)
        got = asyncio.run(
            measure(
                f"http://127.0.0.1:{base}/v1/chat/completions",
                key,
                "bench-pool-scored",
                traffic,
                rate,
                warmup,
                window,
                seed,
            )
        )
        stats = sim.stats()
        itl = _mean_itl_s(sim.endpoints)
    finally:
        if stack is not None:
            stack.stop()
        sim.stop()
    predicted = pred["ttft_p90_s"] * 1000
    err = (predicted - got["ttft_p90_ms"]) / got["ttft_p90_ms"] if got["ttft_p90_ms"] else math.inf
    q = sum(s["prefix_cache_queries"] for s in stats)
    return {
        "traffic": traffic_path,
        "servers": servers,
        "rate_rps": rate,
        "server_profile": server.name,
        "predicted_ttft_p90_ms": round(predicted, 1),
        "predicted_ttft_p50_ms": round(pred["ttft_p50_s"] * 1000, 1),
        "predicted_prefix_hit_rate": pred.get("prefix_hit_rate"),
        "measured": got,
        "measured_prefix_hit_rate": round(sum(s["prefix_cache_hits"] for s in stats) / q, 3) if q else None,
        "preemptions": sum(s["preemptions"] for s in stats),
        # how fast the simulated servers really stepped (wall clock, on this machine) against the
        # planner's time per output token: a slower step is load the planner cannot know of
        "predicted_tpot_p50_ms": round(pred["tpot_p50_s"] * 1000, 2),
        "measured_mean_itl_ms": round(itl * 1000, 2) if itl else None,
        "ttft_p90_relative_error": round(err, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway_tools.plan.validate", description=__doc__)
    p.add_argument("traffic")
    p.add_argument("--servers", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument(
        "--warmup", type=float, default=15.0, help="seconds before the measured window (default 15)"
    )
    p.add_argument("--window", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-num-seqs", type=int, help="the servers' max_num_seqs (default the profile's 256)")
    p.add_argument("--tolerance", type=float, default=0.2)
    a = p.parse_args(argv)
    out = validate(a.traffic, a.servers, a.rate, a.warmup, a.window, a.seed, a.max_num_seqs)
    out["within_tolerance"] = abs(out["ttft_p90_relative_error"]) <= a.tolerance
    print(json.dumps(out, indent=2))
    return 0 if out["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
