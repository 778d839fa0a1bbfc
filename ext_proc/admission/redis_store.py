"""Budget state in Redis, shared by every ext_proc process and host.

Check-and-reserve is one Lua script (one round trip, atomic: no two
replicas can take the same last unit), settlement another. Time comes from
Redis (``TIME``), so replicas on hosts with skewed clocks agree. The
algorithm is ``store.MemoryStore``'s, line for line.

Redis unreachable: ``fail_open`` decides against this process's own
``MemoryStore`` (metric + one log line per outage), ``fail_closed`` raises
``StoreUnavailable`` (a 503). Redis is tried again every
``retry_interval_s``; requests in between do not wait for it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .. import metrics
from ..config import RedisSettings
from .store import Adapt, Check, MemoryStore, Op, Outcome, Refund, StoreUnavailable

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

# ARGV[1]: {"t": [check...], "b": [[check...]...], "id": lease, "ttl": s, "cw": s}
# check: [kind, key index, cap, rate, amount, keep, adaptive key index (0: none), initial]
ACQUIRE = _COMMON + """
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
local function take(c, lv)
  if c[1] == 'b' then
    bucket_set(KEYS[c[2]], c[3], c[4], lv - c[5])
    return lv - c[5]
  end
  redis.call('ZADD', KEYS[c[2]], now + p.ttl, p.id)
  redis.call('PEXPIRE', KEYS[c[2]], math.ceil((p.ttl + 1) * 1000))
  return lv + 1
end
local levels, worst, failed = {}, 0, -1
for i, c in ipairs(p.t) do
  levels[i] = level(c)
  local w = wait(c, levels[i])
  if w > worst then worst, failed = w, i - 1 end
end
if failed >= 0 then return cjson.encode({-1, worst, failed, levels}) end
local best = -1
for j, checks in ipairs(p.b) do
  local bl, bw = {}, 0
  for i, c in ipairs(checks) do
    bl[i] = level(c)
    local w = wait(c, bl[i])
    if w > bw then bw = w end
  end
  if bw == 0 then
    for i, c in ipairs(p.t) do levels[i] = take(c, levels[i]) end
    for i, c in ipairs(checks) do take(c, bl[i]) end
    return cjson.encode({j - 1, 0, -1, levels})
  end
  if best < 0 or bw < best then best = bw end
end
return cjson.encode({-1, math.max(best, 0), -1, levels})
"""

# ARGV[1]: [op...]; ["r", key, cap, rate, delta] | ["x", key, lease] | ["a", key, lo, hi, init, dec, inc, up]
SETTLE = _COMMON + """
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

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


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
        return [c.kind, self(c.key), c.cap, c.rate, c.amount, c.keep, self(c.adaptive) if c.adaptive else 0,
                c.initial]


class RedisStore:
    def __init__(self, settings: RedisSettings, fallback: MemoryStore):
        timeout = settings.timeout_ms / 1000
        # A bounded pool: a burst waits for a connection instead of opening
        # hundreds at once (slow handshakes under load look like an outage).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url, max_connections=settings.pool_size, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.client = aioredis.Redis(connection_pool=pool)
        self._acquire = self.client.register_script(ACQUIRE)
        self._settle = self.client.register_script(SETTLE)
        self.settings = settings
        self.prefix = settings.key_prefix
        self.fallback = fallback
        self.down_until = 0.0
        self.down = False
        metrics.STORE_UP.set(1)

    def _failed(self, err: BaseException) -> None:
        self.down_until = time.monotonic() + self.settings.retry_interval_s
        metrics.STORE_FAILURES.labels(self.settings.on_failure).inc()
        if not self.down:
            self.down = True
            metrics.STORE_UP.set(0)
            how = ("admitting against this process's own budgets (fail_open)"
                   if self.settings.on_failure == "fail_open" else "refusing requests with 503 (fail_closed)")
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

    async def acquire(self, tenant: list[Check], backends: list[list[Check]], lease: str) -> Outcome:
        if self.down and time.monotonic() < self.down_until:
            return self._degraded().acquire_now(tenant, backends, lease)
        keys = _Keys(self.prefix)
        payload = orjson.dumps({
            "t": [keys.check(c) for c in tenant], "b": [[keys.check(c) for c in cs] for cs in backends],
            "id": lease, "ttl": self.fallback.ttl, "cw": self.fallback.concurrency_wait})
        try:
            raw = await self._acquire(keys=keys.keys, args=[payload])
        except _DOWN as err:
            self._failed(err)
            return self._degraded().acquire_now(tenant, backends, lease)
        self._recovered()
        chosen, wait, failed, levels = orjson.loads(raw)
        return Outcome(int(chosen), float(wait), int(failed), levels if isinstance(levels, list) else [])

    async def settle(self, ops: list[Op]) -> list[float]:
        keys = _Keys(self.prefix)
        encoded: list[list[Any]] = []
        for op in ops:
            if isinstance(op, Refund):
                encoded.append(["r", keys(op.key), op.cap, op.rate, op.delta])
            elif isinstance(op, Adapt):
                encoded.append(["a", keys(op.key), op.lo, op.hi, op.initial, op.decrease, op.increase,
                                1 if op.up else 0])
            else:
                encoded.append(["x", keys(op.key), op.lease])
        try:
            out = orjson.loads(await self._settle(keys=keys.keys, args=[orjson.dumps(encoded)]))
        except _DOWN as err:
            # Leases in Redis expire on their own; a refund there is forgone (the
            # safe side). fail_open: the local budgets and limits take the update.
            self._failed(err)
            return self.fallback.settle_now(ops) if self.settings.on_failure == "fail_open" else []
        self._recovered()
        return out if isinstance(out, list) else []

    async def close(self) -> None:
        await self.client.aclose()


