"""The planner's inputs: a traffic profile, SLOs and a server profile, read from YAML.

Why YAML and small dataclasses: the inputs are what a capacity review argues
about, so they are files people edit and diff; every field is checked here
with an error naming it, before any simulation runs.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROFILES_DIR = Path(__file__).parent / "profiles"


class PlanInputError(ValueError):
    """A profile file is missing a field or has a wrong value; the message names the field."""


def _num(d: dict[str, Any], key: str, where: str, *, default: float | None = None, lo: float = 0.0) -> float:
    v = d.get(key, default)
    if v is None:
        raise PlanInputError(f"{where}.{key}: required")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < lo:
        raise PlanInputError(f"{where}.{key}: expected a number >= {lo:g}, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class TokenDist:
    """A token-count distribution: fixed, uniform [min, max], or lognormal with a mean and sigma."""

    kind: str = "fixed"
    mean: float = 256.0
    sigma: float = 0.5
    min: int = 1
    max: int = 32768

    @classmethod
    def parse(cls, v: Any, where: str) -> TokenDist:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return cls(kind="fixed", mean=_num({"v": v}, "v", where, lo=1), min=int(v), max=int(v))
        if not isinstance(v, dict):
            raise PlanInputError(f"{where}: expected a number or a mapping with 'dist'")
        kind = v.get("dist", "lognormal")
        if kind not in ("fixed", "uniform", "lognormal"):
            raise PlanInputError(f"{where}.dist: one of fixed, uniform, lognormal, got {kind!r}")
        lo = int(_num(v, "min", where, default=1, lo=1))
        hi = int(_num(v, "max", where, default=32768, lo=lo))
        mean = _num(v, "mean", where, default=(lo + hi) / 2 if kind == "uniform" else None, lo=1)
        return cls(kind=kind, mean=mean, sigma=_num(v, "sigma", where, default=0.5), min=lo, max=hi)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return max(1, round(self.mean))
        if self.kind == "uniform":
            return rng.randint(self.min, self.max)
        # lognormal with the given arithmetic mean
        mu = math.log(self.mean) - self.sigma**2 / 2
        return int(min(self.max, max(self.min, round(rng.lognormvariate(mu, self.sigma)))))

    def expected(self, n: int = 4000) -> float:
        """Mean after clipping (sampled with a fixed seed: clipping moves a lognormal's mean)."""
        rng = random.Random(7)
        return sum(self.sample(rng) for _ in range(n)) / n


@dataclass(frozen=True)
class Traffic:
    """Requests/s per hour of the day, token shapes, prefix sharing and the streamed share."""

    hourly_rps: list[float]
    input_tokens: TokenDist
    output_tokens: TokenDist
    prefix_share: float = 0.0  # share of requests that start with one of the shared prefixes
    prefix_tokens: int = 0  # length of each shared prefix (added to the request's own input)
    prefix_groups: int = 1  # how many distinct shared prefixes (tenants, system prompts)
    streamed_share: float = 1.0
    name: str = "traffic"

    @classmethod
    def parse(cls, d: Any, name: str = "traffic") -> Traffic:
        if not isinstance(d, dict):
            raise PlanInputError("traffic: expected a mapping")
        rps = d.get("hourly_rps")
        if not isinstance(rps, list) or len(rps) != 24:
            raise PlanInputError("traffic.hourly_rps: expected a list of 24 numbers (requests/s, hour 0-23)")
        hourly = [_num({"v": v}, "v", f"traffic.hourly_rps[{i}]") for i, v in enumerate(rps)]
        pre = d.get("prefix") or {}
        if not isinstance(pre, dict):
            raise PlanInputError("traffic.prefix: expected a mapping (share, tokens, groups)")
        share = _num(pre, "share", "traffic.prefix", default=0.0)
        streamed = _num(d, "streamed_share", "traffic", default=1.0)
        for key, v in (("prefix.share", share), ("streamed_share", streamed)):
            if v > 1:
                raise PlanInputError(f"traffic.{key}: a share between 0 and 1, got {v:g}")
        return cls(
            hourly_rps=hourly,
            input_tokens=TokenDist.parse(d.get("input_tokens", 512), "traffic.input_tokens"),
            output_tokens=TokenDist.parse(d.get("output_tokens", 256), "traffic.output_tokens"),
            prefix_share=share,
            prefix_tokens=int(_num(pre, "tokens", "traffic.prefix", default=0)),
            prefix_groups=max(1, int(_num(pre, "groups", "traffic.prefix", default=1, lo=1))),
            streamed_share=streamed,
            name=str(d.get("name", name)),
        )


@dataclass(frozen=True)
class Slo:
    """Targets at the 90th percentile, seconds."""

    ttft_p90_s: float
    tpot_p90_s: float

    @classmethod
    def parse(cls, d: Any) -> Slo:
        if not isinstance(d, dict):
            raise PlanInputError("slo: expected a mapping with ttft_p90_ms and tpot_p90_ms")
        return cls(
            ttft_p90_s=_num(d, "ttft_p90_ms", "slo", lo=1e-3) / 1000,
            tpot_p90_s=_num(d, "tpot_p90_ms", "slo", lo=1e-3) / 1000,
        )


@dataclass(frozen=True)
class Server:
    """One model server (one vLLM replica): its speed, cache, limits and price."""

    name: str
    prefill_tokens_per_s: float
    decode_step_ms: dict[int, float]  # batch size -> step time (ms); interpolated, extrapolated linearly
    kv_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_hour_usd: float = 0.0  # per server (all its GPUs)
    source: str = ""

    @classmethod
    def parse(cls, d: Any, name: str = "server") -> Server:
        if not isinstance(d, dict):
            raise PlanInputError("server: expected a mapping")
        steps = d.get("decode_step_ms")
        if not isinstance(steps, dict) or not steps:
            raise PlanInputError("server.decode_step_ms: expected a mapping batch size -> milliseconds")
        table: dict[int, float] = {}
        for k, v in steps.items():
            try:
                b = int(k)
            except (TypeError, ValueError):
                raise PlanInputError(f"server.decode_step_ms: batch size {k!r} is not an integer") from None
            if b < 1:
                raise PlanInputError(f"server.decode_step_ms: batch size {b} < 1")
            table[b] = _num({"v": v}, "v", f"server.decode_step_ms[{b}]", lo=1e-3)
        return cls(
            name=str(d.get("name", name)),
            prefill_tokens_per_s=_num(d, "prefill_tokens_per_s", "server", lo=1),
            decode_step_ms=dict(sorted(table.items())),
            kv_blocks=int(_num(d, "kv_blocks", "server", lo=1)),
            block_size=int(_num(d, "block_size", "server", default=16, lo=1)),
            max_num_seqs=int(_num(d, "max_num_seqs", "server", default=256, lo=1)),
            max_num_batched_tokens=int(_num(d, "max_num_batched_tokens", "server", default=8192, lo=1)),
            gpu_hour_usd=_num(d, "gpu_hour_usd", "server", default=0.0),
            source=str(d.get("source", "")),
        )

    def step_s(self, batch: int) -> float:
        """Decode step time for ``batch`` sequences, seconds (piecewise linear in the table)."""
        xs, ys = list(self.decode_step_ms), list(self.decode_step_ms.values())
        if len(xs) == 1 or batch <= xs[0]:
            return ys[0] / 1000
        i = bisect.bisect_left(xs, batch)
        if i >= len(xs):
            i = len(xs) - 1
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return (y0 + (y1 - y0) * (batch - x0) / (x1 - x0)) / 1000


def load_yaml(path: str | Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise PlanInputError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PlanInputError(f"{path}: not YAML: {e}") from None


def load_server(path_or_name: str | Path) -> Server:
    """A server profile file, or the name of a shipped one (``profiles/<name>.yaml``)."""
    p = Path(path_or_name)
    if not p.exists() and (PROFILES_DIR / f"{path_or_name}.yaml").exists():
        p = PROFILES_DIR / f"{path_or_name}.yaml"
    d = load_yaml(p)
    return Server.parse(d.get("server", d) if isinstance(d, dict) else d, name=p.stem)


def load_plan_input(path: str | Path) -> tuple[Traffic, Slo]:
    """A traffic file: ``traffic:`` and ``slo:`` sections."""
    d = load_yaml(path)
    if not isinstance(d, dict):
        raise PlanInputError(f"{path}: expected a mapping with traffic: and slo:")
    return Traffic.parse(d.get("traffic"), name=Path(path).stem), Slo.parse(d.get("slo"))
