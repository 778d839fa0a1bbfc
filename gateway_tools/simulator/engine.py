"""The scheduling model of one simulated vLLM server: continuous batching, a paged KV
cache with block-hash prefix caching and LRU eviction, chunked prefill, preemption.

Time is simulated: each engine step computes how long it would take on the GPU of its
:class:`Profile` and sleeps that long multiplied by ``time_scale`` (0.1 = ten times faster
than the GPU). Everything the engine reports (TTFT, ITL histograms) is measured in wall-clock
seconds, as a client or the gateway sees it.

What vLLM does that this follows (vLLM docs, "Automatic Prefix Caching" design and the V1
scheduler): KV memory is split into fixed blocks (16 tokens by default); a full block is
identified by the hash of its tokens chained with its parent block's hash, so two prompts
sharing a prefix share blocks; freed blocks stay cached and are evicted least recently used
first; the scheduler runs at most ``max_num_seqs`` sequences and ``max_num_batched_tokens``
tokens per step, admits waiting requests first-come first-served while blocks are free, and
preempts the newest running request (recompute) when a decode step runs out of blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

BLOCK_SIZE = 16  # vLLM's default --block-size


@dataclass(frozen=True)
class Profile:
    """How fast one GPU serves one model, and how much KV cache it has.

    The default is Llama-3.1-8B-Instruct (BF16) on one NVIDIA A100 40GB under vLLM 0.23,
    calibrated to John Musgrave, "vLLM throughput-latency sweep on NVIDIA A100"
    (https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on): decode of one request at
    about 75 tokens/s (13.3 ms per step), and 6.6x the throughput at 8 concurrent requests
    "with almost no latency cost" (8 x 75 / 6.6 = 16.2 ms per step at batch 8, so each
    running sequence adds about 0.4 ms to a step). Prefill is compute-bound: 2 x 8e9 FLOPs
    per token at about 50% of the A100's 312 TFLOPS BF16 is about 10,000 tokens/s
    (0.1 ms per uncached prompt token). KV cache: 40 GB x 0.9 (vLLM's default
    gpu_memory_utilization) - 16 GB of weights - activations leaves about 18 GB; a Llama-3-8B
    token takes 2 x 32 layers x 8 KV heads x 128 dims x 2 bytes = 128 KiB, so about 140k
    tokens = 8,700 blocks of 16.
    """

    name: str = "llama-3.1-8b-a100-40gb"
    decode_base_s: float = 0.0133  # one decode step with one sequence
    decode_per_seq_s: float = 0.0004  # added per running sequence
    prefill_per_token_s: float = 0.0001  # per uncached prompt token
    num_blocks: int = 8700
    max_num_seqs: int = 256  # vLLM's default on GPUs
    max_num_batched_tokens: int = 8192  # per step (chunked prefill budget)


DEFAULT_PROFILE = Profile()


def block_hashes(tokens: list[str]) -> list[str]:
    """Chained hashes of the full ``BLOCK_SIZE``-token blocks of ``tokens`` (vLLM's prefix-cache keys)."""
    out: list[str] = []
    parent = ""
    for i in range(0, len(tokens) - len(tokens) % BLOCK_SIZE, BLOCK_SIZE):
        h = hashlib.blake2b(
            (parent + "\x00" + "\x1f".join(tokens[i : i + BLOCK_SIZE])).encode(), digest_size=12
        )
        parent = h.hexdigest()
        out.append(parent)
    return out


class KVCache:
    """Paged KV memory: ``num_blocks`` blocks, full blocks addressable by hash while cached.

    A block is in use (refcount > 0), cached-free (refcount 0, hash known, evictable in LRU
    order) or free. ``used`` is what vLLM reports as ``kv_cache_usage_perc``.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.used = 0
        self.free = num_blocks  # blocks holding nothing reusable
        self._ref: dict[str, int] = {}  # hash -> refcount of a cached full block
        self._lru: OrderedDict[str, None] = OrderedDict()  # refcount-0 cached blocks, oldest first

    def available(self) -> int:
        return self.free + len(self._lru)

    def cached_prefix(self, hashes: list[str]) -> int:
        """How many leading blocks of ``hashes`` are cached."""
        n = 0
        for h in hashes:
            if h not in self._ref:
                break
            n += 1
        return n

    def _take(self) -> bool:
        if self.free:
            self.free -= 1
        elif self._lru:
            victim, _ = self._lru.popitem(last=False)  # evict the least recently used
            del self._ref[victim]
        else:
            return False
        self.used += 1
        return True

    def allocate(self, hashes: list[str], extra: int) -> tuple[int, list[str]] | None:
        """Pin the cached leading blocks of ``hashes``, allocate the rest plus ``extra``
        anonymous blocks. Returns (cached blocks, hashes held) or None when memory is short."""
        hit = self.cached_prefix(hashes)
        need = len(hashes) - hit + extra
        reusable = sum(1 for h in hashes[:hit] if self._ref[h] == 0)
        if need > self.available() - reusable:
            return None
        for h in hashes[:hit]:
            if self._ref[h] == 0:
                self._lru.pop(h)
                self.used += 1
            self._ref[h] += 1
        held = list(hashes[:hit])
        for h in hashes[hit:]:
            if h in self._ref:
                # Cached behind a missing block (its parent was evicted first), or filled by
                # another request meanwhile: reuse it, taking it off the LRU list if free.
                if self._ref[h] == 0:
                    self._lru.pop(h)
                    self.used += 1
                self._ref[h] += 1
            else:
                self._take()
                self._ref[h] = 1
            held.append(h)
        for _ in range(extra):
            self._take()
        return hit, held

    def grow(self) -> bool:
        """One more anonymous block for a decoding sequence."""
        return self._take()

    def release(self, held: list[str], anonymous: int) -> None:
        """Free a sequence's blocks: hashed ones stay cached (most recently used last)."""
        for h in held:
            self._ref[h] -= 1
            if self._ref[h] == 0:
                self._lru[h] = None
                self.used -= 1
        self.used -= anonymous
        self.free += anonymous

    def shrink(self, num_blocks: int) -> None:
        """Resize (the KV-thrashing fault): drops every cached-free block."""
        for h in self._lru:
            del self._ref[h]
        self._lru.clear()
        self.num_blocks = num_blocks
        self.free = max(0, num_blocks - self.used)


@dataclass
class Sequence:
    """One request inside the engine."""

    prompt: list[str]
    max_tokens: int
    arrival: float = field(default_factory=time.monotonic)
    hashes: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    anonymous: int = 0  # blocks without a hash (partial prompt block, decoded tokens)
    cached_tokens: int = 0
    prefill_left: int = 0
    generated: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    out: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)  # token index, None = end
    finish_reason: str = "length"
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.hashes = block_hashes(self.prompt)


class Engine:
    """A vLLM-like engine loop. ``submit`` a :class:`Sequence`, read its ``out`` queue."""

    def __init__(self, profile: Profile = DEFAULT_PROFILE, time_scale: float = 1.0) -> None:
        self.profile = profile
        self.time_scale = time_scale
        self.slow_factor = 1.0  # the "slow" fault multiplies step time
        self.stalled = asyncio.Event()  # set = the "stalled" fault: no steps run
        self.kv = KVCache(profile.num_blocks)
        self.max_num_seqs = profile.max_num_seqs
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # counters (vLLM's own names live in server.py)
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found cached
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.finished = 0
        self.steps = 0
        self.on_token: list[object] = []  # hooks set by the server: (seq, now) -> None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for seq in [*self.waiting, *self.running]:
            seq.out.put_nowait(None)

    def submit(self, seq: Sequence) -> None:
        self.waiting.append(seq)
        self._wake.set()

    def cancel(self, seq: Sequence) -> None:
        """The client went away: free its slot and blocks at the next step."""
        seq.cancelled = True
        self._wake.set()

    def kv_usage(self) -> float:
        return self.kv.used / self.kv.num_blocks if self.kv.num_blocks else 1.0

    # ------------------------------------------------------------------ scheduling

    def _finish(self, seq: Sequence) -> None:
        self.kv.release(seq.held, seq.anonymous)
        seq.held, seq.anonymous = [], 0
        seq.out.put_nowait(None)

    def _admit(self) -> None:
        """FCFS: admit waiting sequences while a sequence slot and their blocks are free."""
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.cancelled:
                self.waiting.popleft()
                seq.out.put_nowait(None)
                continue
            partial = 1 if len(seq.prompt) % BLOCK_SIZE else 0
            got = self.kv.allocate(seq.hashes, partial)
            if got is None:
                return  # head-of-line waits for memory, as vLLM's FCFS policy does
            hit, held = got
            self.waiting.popleft()
            seq.held, seq.anonymous = held, partial
            seq.cached_tokens = hit * BLOCK_SIZE
            self.prefix_queries += len(seq.prompt)
            self.prefix_hits += seq.cached_tokens
            # vLLM always recomputes at least the last prompt token to get logits.
            seq.prefill_left = max(1, len(seq.prompt) - seq.cached_tokens)
            self.running.append(seq)

    def _preempt(self) -> None:
        """Out of blocks mid-decode: the newest running sequence goes back to the queue front."""
        victim = self.running.pop()
        self.kv.release(victim.held, victim.anonymous)
        victim.held, victim.anonymous = [], 0
        victim.prompt = victim.prompt + [f"t{i}" for i in range(victim.generated)]
        victim.hashes = block_hashes(victim.prompt)
        victim.max_tokens -= victim.generated
        victim.generated = 0
        self.waiting.appendleft(victim)
        self.preemptions += 1

    def _step_duration(self, prefill_tokens: int, decoding: int) -> float:
        p = self.profile
        decode = p.decode_base_s + p.decode_per_seq_s * max(0, decoding - 1) if decoding else 0.0
        return (decode + prefill_tokens * p.prefill_per_token_s) * self.slow_factor

    async def _loop(self) -> None:
        while True:
            if self.stalled.is_set():
                await asyncio.sleep(0.05 * max(self.time_scale, 0.01))
                continue
            for seq in [s for s in self.running if s.cancelled]:
                self.running.remove(seq)
                self._finish(seq)
            self._admit()
            if not self.running:
                self._wake.clear()
                if not self.waiting:
                    await self._wake.wait()
                else:
                    await asyncio.sleep(0.01 * max(self.time_scale, 0.01))  # waiting for memory
                continue
            budget = self.profile.max_num_batched_tokens
            prefill = 0
            decoding = [s for s in self.running if s.prefill_left == 0]
            budget -= len(decoding)
            completing: list[Sequence] = []
            for s in self.running:
                if s.prefill_left and budget > 0:
                    chunk = min(s.prefill_left, budget)
                    s.prefill_left -= chunk
                    prefill += chunk
                    budget -= chunk
                    if s.prefill_left == 0:
                        completing.append(s)
            await asyncio.sleep(self._step_duration(prefill, len(decoding)) * self.time_scale)
            self.steps += 1
            now = time.monotonic()
            self.prompt_tokens += prefill
            for s in [*decoding, *completing]:
                if s not in self.running:
                    continue
                # the next token's position starts a new block: one more block, or preempt
                if (len(s.prompt) + s.generated) % BLOCK_SIZE == 0:
                    while not self.kv.grow():
                        if len(self.running) == 1:
                            break  # alone and still short: over-commit rather than deadlock
                        self._preempt()
                        if s not in self.running:
                            break
                    else:
                        s.anonymous += 1
                    if s not in self.running:
                        continue
                s.generated += 1
                self.generation_tokens += 1
                for hook in self.on_token:  # before the timestamps move: hooks measure the gap
                    hook(s, now)  # type: ignore[operator]
                if s.first_token_at is None:
                    s.first_token_at = now
                s.last_token_at = now
                s.out.put_nowait(s.generated - 1)
                if s.generated >= s.max_tokens:
                    self.running.remove(s)
                    self.finished += 1
                    self._finish(s)


_ids = itertools.count()


def next_id() -> int:
    return next(_ids)
