"""A discrete-event simulation of a pool of vLLM-like servers behind a picker, fast enough to plan with.

Why a simulation and not a closed formula: TTFT under continuous batching
depends on queueing for sequence slots and KV blocks, chunked prefill sharing
each step with decodes, and prefix-cache hits, which M/G/c approximations
do not capture. Each server here runs vLLM's V1 loop in outline: every
engine step admits waiting requests FCFS while a sequence slot and the KV
blocks for the whole request (prompt + output, less the blocks of a cached
prefix) are free, spends a token budget (``max_num_batched_tokens``) on one
token per decoding sequence plus chunks of pending prefills, and takes
``decode_step(batch) + prefill_tokens / prefill_rate`` seconds. A request's
first token comes at the end of the step that finishes its prefill; then one
token per step. Shared prefixes are cached per server in whole blocks, with
LRU eviction of prefixes no running request uses. The picker prefers the
server that served a prefix before while it is not much busier than the
least-loaded one (the gateway's prefix affinity), else the least loaded.

Simplifications (said in the report): blocks are reserved for the whole
output at admission (vLLM allocates as it goes and preempts when out of
blocks, so this admits slightly fewer requests at high KV pressure); no
preemption; network and gateway time are not modelled.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ..loadtest.report import percentile
from .model import Server, Traffic

POLICIES = ("affinity", "least_loaded", "round_robin", "random")


@dataclass(slots=True)
class _Req:
    t_arrive: float
    own: int  # the request's own prompt tokens
    out: int
    group: int  # shared prefix id, -1 for none
    prefix: int  # shared prefix tokens
    measured: bool
    cached: int = 0
    todo: int = 0  # prefill tokens still to compute
    own_blocks: int = 0
    t_first: float = math.inf
    t_done: float = math.inf
    finish_step: int = 0
    holds_ref: bool = False  # counts as a user of its prefix's cache entry
    creates: bool = False  # computes its prefix's cache entry

    @property
    def prompt(self) -> int:
        return self.prefix + self.own


@dataclass
class _Srv:
    spec: Server
    waiting: deque[_Req] = field(default_factory=deque)
    prefilling: list[_Req] = field(default_factory=list)
    decoding: list[tuple[int, int, _Req]] = field(default_factory=list)  # heap (finish_step, id, req)
    step_no: int = 0
    busy: bool = False
    free_blocks: int = 0
    cache: OrderedDict[int, int] = field(default_factory=OrderedDict)  # group -> blocks (LRU order)
    refs: dict[int, int] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)  # cache entries whose prefill is still running
    steps: int = 0
    batch_sum: int = 0
    prefill_tokens: int = 0
    cached_tokens: int = 0

    def load(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.decoding)

    def admit(self, r: _Req) -> bool:
        bs = self.spec.block_size
        pblocks = r.prefix // bs if r.group >= 0 else 0  # whole blocks of a shared prefix are cacheable
        total = math.ceil((r.prompt + r.out) / bs)
        entry = pblocks > 0 and r.group in self.cache
        # A hit reuses computed blocks only: while the request that creates an entry is still in its
        # prefill, another one with the same prefix computes (and frees) its own copy, as in vLLM.
        hit = entry and r.group not in self.pending
        creates = pblocks > 0 and not entry
        need = total - pblocks if hit else total
        if need > self.free_blocks:
            for g in list(self.cache):  # LRU first
                if need <= self.free_blocks:
                    break
                if self.refs.get(g, 0) == 0 and g != r.group:
                    self.free_blocks += self.cache.pop(g)
            if need > self.free_blocks:
                return False
        self.free_blocks -= need
        r.own_blocks = total
        if hit:
            self.cache.move_to_end(r.group)
            r.cached = pblocks * bs
        elif creates:
            self.cache[r.group] = pblocks  # stays cached after the request, until evicted
            self.pending.add(r.group)
        if hit or creates:
            self.refs[r.group] = self.refs.get(r.group, 0) + 1
            r.own_blocks = total - pblocks
            r.holds_ref = True
            r.creates = creates
        r.todo = r.prompt - r.cached
        self.cached_tokens += r.cached
        return True

    def release(self, r: _Req) -> None:
        self.free_blocks += r.own_blocks
        if r.holds_ref:
            self.refs[r.group] -= 1


def _step(s: _Srv, t: float) -> float:
    """Start one engine step at ``t``: schedule, and return its duration (0: nothing to do)."""
    spec = s.spec
    while s.waiting and len(s.prefilling) + len(s.decoding) < spec.max_num_seqs:
        if not s.admit(s.waiting[0]):
            break
        s.prefilling.append(s.waiting.popleft())
    n_dec = len(s.decoding)
    budget = spec.max_num_batched_tokens - n_dec
    chunk = 0
    for r in s.prefilling:
        if budget <= 0:
            break
        take = min(r.todo, budget)
        r.todo -= take
        budget -= take
        chunk += take
    if n_dec == 0 and chunk == 0:
        return 0.0
    s.steps += 1
    s.batch_sum += n_dec
    s.prefill_tokens += chunk
    return spec.step_s(max(1, n_dec)) + chunk / spec.prefill_tokens_per_s


def _finish_step(s: _Srv, t_end: float, seq: list[int]) -> None:
    """End of the running step at ``t_end``: first tokens for finished prefills, one token for decodes."""
    s.step_no += 1
    done_prefill = [r for r in s.prefilling if r.todo == 0]
    if done_prefill:
        s.prefilling = [r for r in s.prefilling if r.todo > 0]
        for r in done_prefill:
            r.t_first = t_end
            if r.creates:
                s.pending.discard(r.group)
            if r.out <= 1:
                r.t_done = t_end
                s.release(r)
            else:
                r.finish_step = s.step_no + r.out - 1
                seq[0] += 1
                heapq.heappush(s.decoding, (r.finish_step, seq[0], r))
    while s.decoding and s.decoding[0][0] <= s.step_no:
        r = heapq.heappop(s.decoding)[2]
        r.t_done = t_end
        s.release(r)


def _arrivals(traffic: Traffic, rate: float, warmup: float, window: float, seed: int) -> list[_Req]:
    """Poisson arrivals. Common random numbers: the same seed gives the same requests at every rate
    (times scale as 1/rate), so a higher rate is the same traffic compressed, never a luckier draw."""
    if rate <= 0:
        return []
    rng = random.Random(seed)
    out: list[_Req] = []
    t = 0.0
    end = warmup + window
    while True:
        t += rng.expovariate(1.0) / rate
        if t > end:
            break
        own = traffic.input_tokens.sample(rng)
        n_out = traffic.output_tokens.sample(rng)
        shared = rng.random() < traffic.prefix_share and traffic.prefix_tokens > 0
        g = rng.randrange(traffic.prefix_groups) if shared else -1
        out.append(
            _Req(
                t_arrive=t,
                own=own,
                out=n_out,
                group=g,
                prefix=traffic.prefix_tokens if shared else 0,
                measured=t >= warmup,
            )
        )
    return out


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, as the load test reports it (NaN for none)."""
    v = percentile(values, q)
    return math.nan if v is None else v


def simulate(
    traffic: Traffic,
    server: Server,
    n_servers: int,
    rate: float,
    *,
    window: float = 120.0,
    warmup: float = 30.0,
    seed: int = 1,
    policy: str = "affinity",
    drain: float | None = None,
) -> dict[str, Any]:
    """Run ``rate`` requests/s of ``traffic`` against ``n_servers`` servers; measure requests that
    arrive after ``warmup`` for ``window`` seconds. Requests not done ``drain`` seconds after the
    window count as infinitely late (an overloaded pool fails its SLO, it does not look fast)."""
    if policy not in POLICIES:
        raise ValueError(f"policy: one of {', '.join(POLICIES)}")
    if n_servers < 1:
        raise ValueError("n_servers >= 1")
    reqs = _arrivals(traffic, rate, warmup, window, seed)
    srvs = [_Srv(spec=server, free_blocks=server.kv_blocks) for _ in range(n_servers)]
    rng = random.Random(seed + 1)
    owner: dict[int, int] = {}  # prefix group -> the server that last served it
    slack = max(2, server.max_num_seqs // 16)
    events: list[tuple[float, int, int]] = []  # (step end time, tiebreak, server index)
    seq = [0]
    rr = 0
    end = warmup + window + (drain if drain is not None else max(60.0, window))

    def start(i: int, t: float) -> None:
        dur = _step(srvs[i], t)
        if dur > 0:
            seq[0] += 1
            heapq.heappush(events, (t + dur, seq[0], i))
            srvs[i].busy = True
        else:
            srvs[i].busy = False

    def run_until(t: float) -> None:
        while events and events[0][0] <= t:
            te, _, i = heapq.heappop(events)
            _finish_step(srvs[i], te, seq)
            start(i, te)

    for r in reqs:
        run_until(r.t_arrive)
        if policy == "round_robin":
            i = rr % n_servers
            rr += 1
        elif policy == "random":
            i = rng.randrange(n_servers)
        else:
            loads = [s.load() for s in srvs]
            low = min(loads)
            i = rng.choice([k for k, v in enumerate(loads) if v == low])
            if policy == "affinity" and r.group >= 0:
                o = owner.get(r.group)
                if o is not None and loads[o] <= low + slack:
                    i = o
                owner[r.group] = i
        s = srvs[i]
        s.waiting.append(r)
        if not s.busy:
            start(i, r.t_arrive)
    run_until(end)

    m = [r for r in reqs if r.measured]
    ttft = [r.t_first - r.t_arrive for r in m]
    tpot = [(r.t_done - r.t_first) / (r.out - 1) for r in m if r.out > 1 and math.isfinite(r.t_done)]
    e2e = [r.t_done - r.t_arrive for r in m]
    done = sum(1 for r in m if math.isfinite(r.t_done))
    prompt = sum(s.prefill_tokens + s.cached_tokens for s in srvs)
    steps = sum(s.steps for s in srvs)
    return {
        "servers": n_servers,
        "rate_rps": rate,
        "policy": policy,
        "requests": len(m),
        "completed": done,
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p90_s": _pct(ttft, 90),
        "ttft_p99_s": _pct(ttft, 99),
        "tpot_p50_s": _pct(tpot, 50),
        "tpot_p90_s": _pct(tpot, 90) if done == len(m) else math.inf,
        "e2e_p90_s": _pct(e2e, 90),
        "output_tokens_per_s": sum(r.out for r in m if math.isfinite(r.t_done)) / window,
        "prefix_hit_rate": (sum(s.cached_tokens for s in srvs) / prompt) if prompt else 0.0,
        "mean_batch": (sum(s.batch_sum for s in srvs) / steps) if steps else 0.0,
    }
