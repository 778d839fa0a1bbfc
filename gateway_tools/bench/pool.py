"""``llm-gateway bench --pool``: the gateway's endpoint picking against round robin and random
on simulated model servers, modelled on llm-d's prefix-aware routing benchmark, scaled down.

llm-d's run (8 pods x 2 H100, Qwen3-32B, 150 tenants with 6k-token shared prefixes, 3 -> 60
QPS) is scaled to what two CPU cores can drive: a few simulated vLLM servers per picker, a
couple of dozen tenants whose prompts start with a long prefix of their own, and rising
open-loop Poisson load. The KV cache of one server holds the prefixes of only part of the
tenants, so where a tenant's requests land decides whether their prefill is cached.

Each picker gets a pool of its own (same size and profile, fresh caches) behind the same
gateway, one model per picker (``pool.picker``: ``scored``, ``round_robin``, ``random``),
and they run one after another in the same run. Per rate step: output tokens/s and prefix
cache hit rate from the servers' own counters (``/sim/stats``), TTFT p50/p90 from the client
(the first streamed token, a request that failed or timed out counting as infinitely late).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ..supervisor import Stack
from .scenarios import port_block

PICKERS = ("scored", "round_robin", "random")
KEY_ENV = "BENCH_POOL_KEY"
SERVED_MODEL = "sim-llama"


@dataclass
class PoolOptions:
    """The workload and the pool; the defaults are what the README's table ran."""

    servers: int = 4
    tenants: int = 24
    prefix_words: int = 1500  # each tenant's shared prefix (tokens: the simulator counts words)
    question_words: int = 40  # each request's own part
    output_tokens: int = 32
    rates: tuple[float, ...] = (2, 4, 6, 8, 10, 12, 14, 16, 20, 24)
    step_s: float = 15.0
    time_scale: float = 2.0  # step times x2: a GPU half as fast as the A100 profile
    kv_blocks: int = 1000  # 16,000 tokens: about 10 of the 24 prefixes fit on one server
    max_num_seqs: int = 8
    slo_ttft_p90_s: float = 1.0
    timeout_s: float = 30.0
    pickers: tuple[str, ...] = PICKERS
    seed: int = 1
    output: Path = Path("bench-pool-report")

    @classmethod
    def quick(cls, **kw: Any) -> PoolOptions:
        """A run of seconds: checks the bench works, measures nothing worth reporting."""
        base: dict[str, Any] = {
            "servers": 2,
            "tenants": 6,
            "prefix_words": 200,
            "rates": (2.0, 4.0),
            "step_s": 3.0,
            "time_scale": 0.5,
            "kv_blocks": 60,
        }
        return cls(**{**base, **kw})


# ----------------------------------------------------------------------------- processes


class SimProcess:
    """``llm-gateway simulate-pool`` as a child process (its own CPU, not the client's GIL)."""

    def __init__(self, o: PoolOptions) -> None:
        argv = [
            sys.executable,
            "-m",
            "gateway_tools",
            "simulate-pool",
            "--servers",
            str(o.servers),
            "--port",
            "0",
            "--model",
            SERVED_MODEL,
            "--time-scale",
            str(o.time_scale),
            "--kv-blocks",
            str(o.kv_blocks),
            "--max-num-seqs",
            str(o.max_num_seqs),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.endpoints: list[str] = []
        assert self.proc.stdout is not None
        while len(self.endpoints) < o.servers:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"simulate-pool exited with {self.proc.wait()}")
            if "listening on http://" in line:
                self.endpoints.append(line.rsplit("http://", 1)[1].strip())

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for e in self.endpoints:
            with urllib.request.urlopen(f"http://{e}/sim/stats", timeout=5) as r:
                out.append(json.loads(r.read()))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def gateway_config(o: PoolOptions, pools: dict[str, list[str]], base_port: int) -> dict[str, Any]:
    """One model per picker (``bench-pool-<picker>``), each on its own pool of servers."""
    providers = {
        f"pool-{picker}": {
            "dialect": "openai",
            "endpoints": endpoints,
            # Saturation far off: the bench measures picking, not backpressure (no tier behind).
            # Stale after 1 s: a busy shared machine delays scrapes, and stale means saturated.
            "pool": {"picker": picker, "saturation": 10.0, "stale_after_ms": 1000, "stall_after_ms": 30_000},
        }
        for picker, endpoints in pools.items()
    }
    models = {
        f"bench-pool-{picker}": {"backends": [{"provider": f"pool-{picker}", "model": SERVED_MODEL}]}
        for picker in pools
    }
    return {
        "listen": {"address": "127.0.0.1", "port": base_port},
        "admin": {"address": "127.0.0.1", "port": base_port + 1},
        "ext_proc": {"address": "127.0.0.1", "port": base_port + 2, "metrics_port": base_port + 3},
        "providers": providers,
        "models": models,
        "tenants": {"bench": {"api_keys": [{"env": KEY_ENV}]}},
    }


# ----------------------------------------------------------------------------- load


def prompts(o: PoolOptions) -> tuple[list[str], random.Random]:
    """Each tenant's shared prefix (its system prompt), distinct from the first word on."""
    rng = random.Random(o.seed)
    return [
        " ".join(f"t{t}w{rng.randrange(100_000)}" for _ in range(o.prefix_words)) for t in range(o.tenants)
    ], rng


@dataclass
class Sent:
    step: int
    ttft: float  # inf: failed or no token before the timeout
    status: int


async def _one(
    client: aiohttp.ClientSession, url: str, key: str, model: str, system: str, question: str, o: PoolOptions
) -> tuple[float, int]:
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": o.output_tokens,
        "stream": True,
    }
    return await streamed_ttft(client, url, key, body)


async def streamed_ttft(
    client: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]
) -> tuple[float, int]:
    """A streamed chat request to simulated servers: the time to its first token (``inf``
    unless answered 200) and its status (0: no answer)."""
    start = time.monotonic()
    ttft = math.inf
    try:
        async with client.post(url, json=body, headers={"authorization": f"Bearer {key}"}) as r:
            seen = b""
            async for chunk in r.content.iter_any():
                if ttft == math.inf:
                    seen = seen[-16:] + chunk
                    if b"tok0" in seen:  # the first token, not the role-only first chunk
                        ttft = time.monotonic() - start
            return (ttft if r.status == 200 else math.inf), r.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return math.inf, 0


async def drive(
    url: str, key: str, model: str, o: PoolOptions, sim: SimProcess, seed: int
) -> list[dict[str, Any]]:
    """Rising open-loop Poisson load on one model; a row per rate step."""
    systems, _ = prompts(o)
    rng = random.Random(seed)  # the same arrivals and tenants for every picker
    sent: list[Sent] = []
    tasks: set[asyncio.Task[None]] = set()
    marks: list[tuple[float, list[dict[str, Any]]]] = []
    timeout = aiohttp.ClientTimeout(total=o.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=2000)) as client:

        async def send(step: int) -> None:
            tenant = rng.randrange(o.tenants)
            q = " ".join(f"q{rng.randrange(1_000_000)}" for _ in range(o.question_words))
            ttft, status = await _one(client, url, key, model, systems[tenant], q, o)
            sent.append(Sent(step, ttft, status))

        t0 = time.monotonic()
        marks.append((0.0, await asyncio.to_thread(sim.stats)))
        at = 0.0
        for i, rate in enumerate(o.rates):
            end = (i + 1) * o.step_s
            while True:
                at += rng.expovariate(rate)
                if at >= end:
                    at = end
                    break
                delay = at - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(send(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            delay = end - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            marks.append((time.monotonic() - t0, await asyncio.to_thread(sim.stats)))
        if tasks:
            await asyncio.gather(*tasks)
    rows = []
    for i, rate in enumerate(o.rates):
        (t_a, a), (t_b, b) = marks[i], marks[i + 1]
        gen = sum(y["generation_tokens"] - x["generation_tokens"] for x, y in zip(a, b, strict=True))
        q = sum(y["prefix_cache_queries"] - x["prefix_cache_queries"] for x, y in zip(a, b, strict=True))
        h = sum(y["prefix_cache_hits"] - x["prefix_cache_hits"] for x, y in zip(a, b, strict=True))
        ttfts = sorted(s.ttft for s in sent if s.step == i)
        rows.append(
            {
                "rate_rps": rate,
                "requests": len(ttfts),
                "failed": sum(1 for s in sent if s.step == i and s.status != 200),
                "output_tokens_per_s": round(gen / max(t_b - t_a, 1e-9), 1),
                "prefix_cache_hit_rate": round(h / q, 3) if q else None,
                "ttft_p50_s": _pct(ttfts, 0.5),
                "ttft_p90_s": _pct(ttfts, 0.9),
            }
        )
    return rows


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    v = xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)]
    return None if math.isinf(v) else round(v, 3)  # None: beyond the timeout


# ----------------------------------------------------------------------------- verdict


def _within(row: dict[str, Any], slo: float) -> bool:
    return row["ttft_p90_s"] is not None and row["ttft_p90_s"] <= slo


def targets(results: dict[str, list[dict[str, Any]]], slo: float) -> dict[str, Any]:
    """The issue's two targets, judged from the rows (None: cannot be judged from this run)."""
    out: dict[str, Any] = {"slo_ttft_p90_s": slo}
    if "scored" not in results or "round_robin" not in results:
        return out
    g, rr = results["scored"], results["round_robin"]
    ok = [i for i, r in enumerate(rr) if _within(r, slo)]
    if ok:
        i = max(ok)
        ratio = (rr[i]["ttft_p90_s"] / g[i]["ttft_p90_s"]) if g[i]["ttft_p90_s"] else None
        out["ttft_at_rr_max_load"] = {
            "rate_rps": rr[i]["rate_rps"],
            "round_robin_ttft_p90_s": rr[i]["ttft_p90_s"],
            "scored_ttft_p90_s": g[i]["ttft_p90_s"],
            "ratio": round(ratio, 2) if ratio else None,
            "target": 5.0,
            "met": bool(ratio and ratio >= 5.0),
        }
    best = {
        name: max((r["output_tokens_per_s"] for r in rows if _within(r, slo)), default=0.0)
        for name, rows in results.items()
    }
    if best["round_robin"]:
        ratio = best["scored"] / best["round_robin"]
        out["throughput_within_slo"] = {
            "tokens_per_s": best,
            "ratio": round(ratio, 2),
            "target": 2.0,
            "met": ratio >= 2.0,
            "scored_never_left_slo": all(_within(r, slo) for r in g),
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    o = report["options"]
    lines = [
        f"Workload: {o['servers']} simulated servers per picker, {o['tenants']} tenants with "
        f"{o['prefix_words']}-token shared prefixes, {o['question_words']}-token questions, "
        f"{o['output_tokens']} output tokens, streamed; Poisson arrivals rising "
        f"{o['rates'][0]:g} -> {o['rates'][-1]:g} req/s, {o['step_s']:g} s a step; KV cache "
        f"{o['kv_blocks']} blocks of 16 per server, max_num_seqs {o['max_num_seqs']}, time scale "
        f"{o['time_scale']:g}. Machine: {report['machine']}.",
        "",
        "| req/s | picker | output tok/s | TTFT p50 s | TTFT p90 s | prefix hit rate | failed |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    names = list(report["results"])
    for i, rate in enumerate(o["rates"]):
        for n in names:
            r = report["results"][n][i]
            fmt = lambda v: "timeout" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(
                f"| {rate:g} | {n} | {r['output_tokens_per_s']:.0f} | {fmt(r['ttft_p50_s'])} | "
                f"{fmt(r['ttft_p90_s'])} | {r['prefix_cache_hit_rate'] or 0:.2f} | {r['failed']} |"
            )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    import os
    import platform

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), {platform.system()}, Python {platform.python_version()}"


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    rates = report["options"]["rates"]
    for name, rows in report["results"].items():
        p90 = [
            r["ttft_p90_s"] if r["ttft_p90_s"] is not None else report["options"]["timeout_s"] for r in rows
        ]
        axes[0].plot(rates, p90, marker="o", label=name)
        axes[1].plot(rates, [r["output_tokens_per_s"] for r in rows], marker="o", label=name)
        axes[2].plot(rates, [r["prefix_cache_hit_rate"] or 0 for r in rows], marker="o", label=name)
    axes[0].axhline(report["options"]["slo_ttft_p90_s"], color="grey", linestyle="--", linewidth=1)
    axes[0].set_yscale("log")
    for ax, title in zip(
        axes, ("TTFT p90 (s, log)", "output tokens/s", "prefix-cache hit rate"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("offered req/s")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path = out / "pool.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [path]


# ----------------------------------------------------------------------------- run


def run_pool(o: PoolOptions) -> dict[str, Any]:
    """Start the pools and the gateway, drive every picker in turn, return the report."""
    sims = {p: SimProcess(o) for p in o.pickers}
    stack: Stack | None = None
    try:
        run_dir = Path(tempfile.mkdtemp(prefix="llm-gateway-bench-pool-"))
        base = port_block(4)
        cfg = gateway_config(o, {p: s.endpoints for p, s in sims.items()}, base)
        (run_dir / "gateway.yaml").write_text(yaml.safe_dump(cfg))
        key = "bench-" + str(random.Random().randrange(10**12))
        stack = Stack(run_dir / "gateway.yaml", run_dir=run_dir / "run", env={KEY_ENV: key}).start(60)
        time.sleep(1.0)  # a few scrape rounds
        url = f"http://127.0.0.1:{base}/v1/chat/completions"
        results = {}
        for picker in o.pickers:
            print(f"pool bench: picker {picker} ...", file=sys.stderr, flush=True)
            results[picker] = asyncio.run(drive(url, key, f"bench-pool-{picker}", o, sims[picker], o.seed))
            stack.check()
    finally:
        if stack is not None:
            stack.stop()
        for s in sims.values():
            s.stop()
    opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()}
    report = {"options": opts, "machine": _machine(), "results": results}
    report["targets"] = targets(results, o.slo_ttft_p90_s)
    return report


def write(report: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = "# Pool benchmark: the gateway's picking vs round robin and random\n\n" + markdown(report)
    md += "\nTargets: `" + json.dumps(report["targets"]) + "`\n"
    (out / "report.md").write_text(md)
    return [out / "report.json", out / "report.md", *plot(report, out)]


def main(o: PoolOptions) -> int:
    report = run_pool(o)
    files = write(report, o.output)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
    print(f"report: {files[1]}")
    return 0


__all__ = ["PICKERS", "PoolOptions", "main", "run_pool", "targets"]
