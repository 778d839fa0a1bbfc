"""Budget state in Redis, shared by every ext_proc process and host.

Check-and-reserve is one Lua script (atomic: no two replicas can take the
same last unit), settlement another. Time comes from Redis (``TIME``), so
replicas on hosts with skewed clocks agree. The algorithm is
``store.MemoryStore``'s, line for line.

Group commit: one acquire call is in flight per process at a time; acquires
that arrive meanwhile queue and go together in the next call (at most
``ACQUIRE_BATCH``), which runs them one after the other inside the one
script, so each sees what the ones before it took: exactly as if they had
been sent one by one. An acquire that finds no call in flight goes at once.

Redis unreachable: ``fail_open`` decides against this process's own
``MemoryStore`` (metric + one log line per outage), ``fail_closed`` raises
``StoreUnavailable`` (a 503). Redis is tried again every
``retry_interval_s``; requests in between do not wait for it.

Redis slow or paused (not down): a call that times out is not cancelled in
Redis. Its script waits in the socket and runs whenever Redis resumes, long
after this process decided without it; a lease it took would hold a
concurrency slot for ``lease_ttl_s`` with nothing in flight, a bucket debit
would charge for a request never admitted by Redis. So:

- every acquire carries its own deadline in Redis's own clock (``dl``, see
  ``_RedisClock``), counted from its own start, a little before this
  process stops waiting for it; a script that runs after it takes nothing
  for that acquire and answers "void" for it (treated as a timeout);
- an acquire whose call failed for any reason (every acquire of the batch),
  or whose request went away while it waited (cancelled; its batch may
  still run), leaves its lease "abandoned": once its deadline has
  surely passed, a cleanup removes it from every slot set it may have joined
  (in case the script ran in time but its answer was lost or unread),
  retried every ``retry_interval_s`` until Redis answers. Settlements whose
  call failed leave their releases there too. A release is idempotent, so
  sending it twice, or after a late settlement that did run, is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .. import metrics
from ..config import RedisSettings
from .store import SLOTS, Adapt, Check, MemoryStore, Op, Outcome, Refund, Release, StoreUnavailable

log = logging.getLogger("llm_gateway.admission")

_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function bucket_level(k, cap, rate)
  local v = redis.call('HMGET', k, 'l', 't')
  local l = tonumber(v[1])
  if not l then return cap end
  return math.min(cap, l + math.max(0, now - tonumber(v[2])) * rate)
end
local function bucket_set(k, cap, rate, l)
  redis.call('HSET', k, 'l', l, 't', now)
  redis.call('PEXPIRE', k, math.ceil(((cap - l) / rate + 1) * 1000))
end
"""

# ARGV[1]: {"ttl": s, "cw": s, "r": [request...]}, run in order (each sees what the ones
#   before it took); request: {"t": [check...], "b": [[check...]...], "id": lease, "dl": Redis time}
# check: [kind, key index, cap, rate, amount, keep, adaptive key index (0: none), initial]
# Answer: [[result...], Redis time as a string (cjson would round it to 0.1 ms)]; result:
#   [chosen backend (-1: rejected, -2: void, past its deadline), wait, failed tenant check, levels]
ACQUIRE = (
    _COMMON
    + """
local p = cjson.decode(ARGV[1])
local function level(c)
  if c[1] == 'b' then return bucket_level(KEYS[c[2]], c[3], c[4]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[c[2]], '-inf', now)
  return redis.call('ZCARD', KEYS[c[2]])
end
local function wait(c, lv)
  if c[1] == 'b' then
    local need = c[5] + c[6]
    if lv >= need then return 0 end
    return (need - lv) / c[4]
  end
  local limit = c[3]
  if c[7] > 0 then
    limit = math.min(limit, math.floor(tonumber(redis.call('GET', KEYS[c[7]])) or c[8]))
  end
  if lv + 1 <= limit * (1 - c[6]) then return 0 end
  return p.cw
end
local function take(c, lv, id)
  if c[1] == 'b' then
    bucket_set(KEYS[c[2]], c[3], c[4], lv - c[5])
    return lv - c[5]
  end
  redis.call('ZADD', KEYS[c[2]], now + p.ttl, id)
  redis.call('PEXPIRE', KEYS[c[2]], math.ceil((p.ttl + 1) * 1000))
  return lv + 1
end
local function acquire(q)
  if now > q.dl then return {-2, 0, -1, {}} end
  local levels, worst, failed = {}, 0, -1
  for i, c in ipairs(q.t) do
    levels[i] = level(c)
    local w = wait(c, levels[i])
    if w > worst then worst, failed = w, i - 1 end
  end
  if failed >= 0 then return {-1, worst, failed, levels} end
  local best = -1
  for j, checks in ipairs(q.b) do
    local bl, bw = {}, 0
    for i, c in ipairs(checks) do
      bl[i] = level(c)
      local w = wait(c, bl[i])
      if w > bw then bw = w end
    end
    if bw == 0 then
      for i, c in ipairs(q.t) do levels[i] = take(c, levels[i], q.id) end
      for i, c in ipairs(checks) do take(c, bl[i], q.id) end
      return {j - 1, 0, -1, levels}
    end
    if best < 0 or bw < best then best = bw end
  end
  return {-1, math.max(best, 0), -1, levels}
end
local out = {}
for i, q in ipairs(p.r) do out[i] = acquire(q) end
return cjson.encode({out, string.format('%.6f', now)})
"""
)

# ARGV[1]: [op...]; ["r", key, cap, rate, delta] | ["x", key, lease] | ["a", key, lo, hi, init, dec, inc, up]
SETTLE = (
    _COMMON
    + """
local out = {}
for _, op in ipairs(cjson.decode(ARGV[1])) do
  local k = KEYS[op[2]]
  if op[1] == 'r' then
    bucket_set(k, op[3], op[4], math.min(op[3], bucket_level(k, op[3], op[4]) + op[5]))
  elseif op[1] == 'x' then
    redis.call('ZREM', k, op[3])
  else
    local limit = tonumber(redis.call('GET', k)) or op[5]
    if op[8] == 1 then limit = math.min(op[4], limit + op[7] / limit)
    else limit = math.max(op[3], limit * op[6]) end
    redis.call('SET', k, tostring(limit))
    out[#out + 1] = limit
  end
end
return cjson.encode(out)
"""
)

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
VOID = -2
# A script must start within this share of ``timeout_ms`` after its call began: the rest
# is left for its answer to come back before the caller stops waiting.
DEADLINE_SHARE = 0.9
# At most this many acquires per script call: a batch's script blocks Redis while it runs.
ACQUIRE_BATCH = 64


class LateScript(Exception):
    """Redis ran an acquire after its deadline: it took nothing."""


class _RedisClock:
    """Redis's clock seen from here, as an offset to ``time.monotonic()``.

    Redis does not record when a command arrived, so a script cannot tell
    how long it waited; it can compare ``TIME`` with a deadline in Redis's
    clock. This process learns that clock from Redis alone (no assumption
    about the hosts' clocks): every answer carries the Redis time its script
    ran, a moment before the answer arrived, so ``redis_time - arrival`` is a
    lower bound of the offset, short by the answer's one-way latency. A lower
    bound puts deadlines early, never late. The estimate is the highest bound
    seen in the last one or two windows, so it follows drift; without a recent
    answer the store asks Redis for ``TIME`` first. It assumes Redis's clock
    is not stepped backwards (NTP slews): a step back of D seconds makes
    deadlines late by D for up to two windows.
    """

    WINDOW = 30.0

    def __init__(self) -> None:
        self.current = self.previous = -math.inf
        self.since = -math.inf  # start of the current window (monotonic)

    def _rotate(self, now: float) -> None:
        if now - self.since >= self.WINDOW:
            self.previous = self.current if now - self.since < 2 * self.WINDOW else -math.inf
            self.current = -math.inf
            self.since = now

    def observe(self, redis_now: float, arrived: float) -> None:
        self._rotate(arrived)
        self.current = max(self.current, redis_now - arrived)

    def offset(self, now: float) -> float | None:
        self._rotate(now)
        best = max(self.current, self.previous)
        return None if best == -math.inf else best


class _Keys:
    """Key list for KEYS[] (scripts must declare the keys they touch)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.keys: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        i = self.index.get(key)
        if i is None:
            self.keys.append(f"{self.prefix}:{key}")
            i = self.index[key] = len(self.keys)  # Lua indices start at 1
        return i

    def check(self, c: Check) -> list[Any]:
        return [
            c.kind,
            self(c.key),
            c.cap,
            c.rate,
            c.amount,
            c.keep,
            self(c.adaptive) if c.adaptive else 0,
            c.initial,
        ]


@dataclass(slots=True)
class _Entry:
    """One acquire waiting for its batch's answer."""

    tenant: list[Check]
    backends: list[list[Check]]
    lease: str
    start: float  # monotonic: its deadline and its cleanup count from here
    future: asyncio.Future[Outcome]


def _slot_keys(tenant: list[Check], backends: list[list[Check]]) -> list[str]:
    return [c.key for c in tenant if c.kind == SLOTS] + [
        c.key for cs in backends for c in cs if c.kind == SLOTS
    ]


class RedisStore:
    def __init__(self, settings: RedisSettings, fallback: MemoryStore):
        self.timeout = timeout = settings.timeout_ms / 1000
        # A bounded pool: a burst waits for a connection instead of opening
        # hundreds at once (slow handshakes under load look like an outage).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.pool_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self._acquire = self.client.register_script(ACQUIRE)
        self._settle = self.client.register_script(SETTLE)
        self.settings = settings
        self.prefix = settings.key_prefix
        self.fallback = fallback
        self.down_until = 0.0
        self.down = False
        self.clock = _RedisClock()
        self.queue: list[_Entry] = []  # acquires waiting for the call in flight to return
        self.sender: asyncio.Task[None] | None = None
        # (slot key, lease) -> (do not release before, give up after), both monotonic
        self.abandoned: dict[tuple[str, str], tuple[float, float]] = {}
        self.cleaner: asyncio.Task[None] | None = None
        metrics.STORE_UP.set(1)

    def _failed(self, err: BaseException) -> None:
        self.down_until = time.monotonic() + self.settings.retry_interval_s
        metrics.STORE_FAILURES.labels(self.settings.on_failure).inc()
        if not self.down:
            self.down = True
            metrics.STORE_UP.set(0)
            how = (
                "admitting against this process's own budgets (fail_open)"
                if self.settings.on_failure == "fail_open"
                else "refusing requests with 503 (fail_closed)"
            )
            log.error("redis unreachable (%s): %s", err.__class__.__name__, how)

    def _recovered(self) -> None:
        if self.down:
            self.down = False
            metrics.STORE_UP.set(1)
            log.warning("redis reachable again: budgets are shared again")

    def _degraded(self) -> MemoryStore:
        if self.settings.on_failure == "fail_closed":
            raise StoreUnavailable("the budget store (redis) is unreachable")
        return self.fallback

    async def _calibrate(self) -> float:
        """Learn Redis's clock with ``TIME`` (no recent answer to learn it from)."""
        sec, usec = await self.client.time()
        now = time.monotonic()
        self.clock.observe(sec + usec / 1e6, now)
        return self.clock.offset(now) or 0.0

    async def acquire(self, tenant: list[Check], backends: list[list[Check]], lease: str) -> Outcome:
        start = time.monotonic()
        if self.down and start < self.down_until:
            return self._degraded().acquire_now(tenant, backends, lease)
        entry = _Entry(tenant, backends, lease, start, asyncio.get_running_loop().create_future())
        self.queue.append(entry)
        if self.sender is None:
            self.sender = asyncio.get_running_loop().create_task(self._send_queue())
        try:
            return await entry.future
        except asyncio.CancelledError:  # the request went away: nobody will settle this lease
            self._abandon(_slot_keys(tenant, backends), lease, start + self.timeout)
            raise

    async def _send_queue(self) -> None:
        """Group commit: send what queued while the previous call was in flight, in one call.

        redis-py's Python work per call was about half of what budgets in Redis cost over
        budgets in memory (``llm-gateway bench``: +0.14-0.16 ms of ext_proc CPU per request).
        One call per batch pays it once: measured on the store alone, 70-76 us of CPU per
        acquire with 8-32 concurrent callers, one call each, against 8-19 us batched (the
        bench's admission-redis run averaged 3.5 acquires per call). Nothing waits on a
        timer: an acquire that finds no call in flight goes at once.
        """
        batch: list[_Entry] = []
        try:
            while self.queue:
                batch = [e for e in self.queue[:ACQUIRE_BATCH] if not e.future.done()]
                del self.queue[:ACQUIRE_BATCH]
                if batch:
                    await self._send(batch)
        finally:
            self.sender = None
            for e in batch + self.queue:  # undecided only if close() cancelled this task
                if not e.future.done():
                    e.future.set_exception(StoreUnavailable("the budget store was closed"))
            self.queue.clear()

    async def _send(self, batch: list[_Entry]) -> None:
        now = time.monotonic()
        if self.down and now < self.down_until:  # the call before this one failed
            for e in batch:
                self._decide_locally(e)
            return
        keys = _Keys(self.prefix)
        requests: list[dict[str, Any]] = [
            {
                "t": [keys.check(c) for c in e.tenant],
                "b": [[keys.check(c) for c in cs] for cs in e.backends],
                "id": e.lease,
            }
            for e in batch
        ]
        try:
            offset = self.clock.offset(now)
            if offset is None:
                offset = await self._calibrate()
            for e, request in zip(batch, requests, strict=True):
                # Redis time after which the script must take nothing for this request:
                # before its caller stops waiting.
                request["dl"] = e.start + offset + self.timeout * DEADLINE_SHARE
            payload = {"ttl": self.fallback.ttl, "cw": self.fallback.concurrency_wait, "r": requests}
            raw = await self._acquire(keys=keys.keys, args=[orjson.dumps(payload)])
        except _DOWN as err:
            # The script may still run (in time, its answer lost; or late, void): release
            # whatever leases it may hold once every deadline has surely passed.
            for e in batch:
                self._abandon(_slot_keys(e.tenant, e.backends), e.lease, e.start + self.timeout)
            self._failed(err)
            for e in batch:
                self._decide_locally(e)
            return
        except Exception as err:  # not an outage: every caller sees it, as without batching
            for e in batch:
                if not e.future.done():
                    e.future.set_exception(err)
            return
        results, stamp = orjson.loads(raw)
        self.clock.observe(float(stamp), time.monotonic())
        late = False
        for e, (chosen, wait, failed, levels) in zip(batch, results, strict=True):
            if chosen == VOID:
                late = True
                self._failed(
                    LateScript(f"redis ran an admission more than {self.timeout * DEADLINE_SHARE:g} s late")
                )
                self._decide_locally(e)
            elif not e.future.done():
                e.future.set_result(
                    Outcome(int(chosen), float(wait), int(failed), levels if isinstance(levels, list) else [])
                )
        if not late:
            self._recovered()

    def _decide_locally(self, e: _Entry) -> None:
        """Redis did not decide for this request: ``on_failure`` does (unless its caller left)."""
        if e.future.done():
            return
        try:
            e.future.set_result(self._degraded().acquire_now(e.tenant, e.backends, e.lease))
        except StoreUnavailable as err:
            e.future.set_exception(err)

    async def settle(self, ops: list[Op]) -> list[float]:
        keys = _Keys(self.prefix)
        encoded: list[list[Any]] = []
        for op in ops:
            if isinstance(op, Refund):
                encoded.append(["r", keys(op.key), op.cap, op.rate, op.delta])
            elif isinstance(op, Adapt):
                encoded.append(
                    ["a", keys(op.key), op.lo, op.hi, op.initial, op.decrease, op.increase, 1 if op.up else 0]
                )
            else:
                encoded.append(["x", keys(op.key), op.lease])
        try:
            out = orjson.loads(await self._settle(keys=keys.keys, args=[orjson.dumps(encoded)]))
        except _DOWN as err:
            # A refund there is forgone (the safe side); the releases are retried until
            # Redis answers, so no lease outlives its request. fail_open: the local
            # budgets and limits take the update.
            now = time.monotonic()
            for op in ops:
                if isinstance(op, Release):
                    self._abandon([op.key], op.lease, now)
            self._failed(err)
            return self.fallback.settle_now(ops) if self.settings.on_failure == "fail_open" else []
        self._recovered()
        return out if isinstance(out, list) else []

    # ---- leases of failed calls ------------------------------------------------
    def _abandon(self, slot_keys: list[str], lease: str, not_before: float) -> None:
        """Release ``lease`` from these slot sets in Redis, from ``not_before`` on.

        An acquire's cleanup must not run before the script's deadline: run earlier,
        on another connection, it could overtake the script, which would then take
        the slot. ``not_before`` (when the caller stopped waiting, at least
        ``timeout_ms`` after it began) is after the deadline in Redis's clock.
        """
        if not slot_keys:
            return
        expiry = not_before + self.fallback.ttl  # by then Redis has dropped the lease itself
        for key in slot_keys:
            self.abandoned[(key, lease)] = (not_before, expiry)
        if self.cleaner is None:
            self.cleaner = asyncio.get_running_loop().create_task(self._clean())

    async def _clean(self) -> None:
        try:
            while self.abandoned:
                now = time.monotonic()
                for entry, (_, expiry) in list(self.abandoned.items()):
                    if expiry <= now:
                        del self.abandoned[entry]
                due = [entry for entry, (not_before, _) in self.abandoned.items() if not_before <= now]
                if not due:
                    if self.abandoned:
                        await asyncio.sleep(min(nb for nb, _ in self.abandoned.values()) - now)
                    continue
                keys = _Keys(self.prefix)
                ops = [["x", keys(key), lease] for key, lease in due]
                try:
                    await self._settle(keys=keys.keys, args=[orjson.dumps(ops)])
                except _DOWN as err:
                    self._failed(err)
                    await asyncio.sleep(self.settings.retry_interval_s)
                    continue
                for entry in due:
                    self.abandoned.pop(entry, None)
                self._recovered()
        except Exception:  # never let bookkeeping crash the loop; the leases expire on their own
            log.exception("releasing %d abandoned leases in redis failed", len(self.abandoned))
            self.abandoned.clear()
        finally:
            self.cleaner = None

    async def close(self) -> None:
        for task in (self.cleaner, self.sender):
            if task is not None:
                task.cancel()
        await self.client.aclose()
