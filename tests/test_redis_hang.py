"""Redis that hangs (SIGSTOP) while admissions wait for it, then resumes (SIGCONT).

Issue 13: a call that timed out still ran in Redis once it resumed, and the
lease (concurrency slot) it took outlived its request by ``lease_ttl_s``; a
bucket it debited charged for a request Redis never admitted. Here a real
redis-server started by the test is paused by its own PID; no project
component is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from ext_proc.admission import Rejection, build
from ext_proc.admission.controller import SETTLE_BATCH_S
from ext_proc.admission.redis_store import RedisStore
from ext_proc.admission.store import BUCKET, SLOTS, Check, MemoryStore, Refund, Release
from ext_proc.config import DEFAULT_CONFIG, RedisSettings, parse_config
from ext_proc.translation.ir import Usage
from tests.redis_server import RedisServer

TIMEOUT_MS = 500  # redis.timeout_ms (the default): generous for a loaded test machine
BOUND_S = 20.0  # every wait below ends by then, or the test fails


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)  # a failed test must not leave it stopped
        server.stop()


def pause(server: RedisServer) -> None:
    """SIGSTOP the test's own redis-server and wait until the kernel says it is stopped."""
    assert server.proc is not None
    pid = server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + BOUND_S
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
        assert time.monotonic() < deadline, "redis-server did not stop"
        time.sleep(0.005)


def resume(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


async def until(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.02)


def test_late_scripts_after_a_pause_take_nothing(redis_server: RedisServer) -> None:
    """Store level, exact arithmetic: a bucket that (almost) never refills and two slot sets."""
    store = RedisStore(
        RedisSettings(url=redis_server.url, key_prefix="hang", timeout_ms=TIMEOUT_MS, retry_interval_s=0.1),
        MemoryStore(900, 1.0),
    )
    rate = 1e-6  # refill: 0.00002 tokens in 20 s
    tokens = Check(BUCKET, "t:a:tpm", 1000, rate, 100)
    conc = Check(SLOTS, "t:a:conc", 3)
    backend = [Check(SLOTS, "b:x:conc", 10)]
    r = redis_server.client()

    def level() -> float:
        return float(r.hget("hang:t:a:tpm", "l"))

    sizes = count_batches(store)

    async def scenario() -> None:
        # Three at once (one call, group commit): Redis loads the script.
        warm = await asyncio.gather(*(store.acquire([tokens, conc], [backend], f"w{i}") for i in range(3)))
        assert [(o.chosen, o.local) for o in warm] == [(0, False)] * 3
        await store.settle(
            [op for i in range(3) for op in (Release("t:a:conc", f"w{i}"), Release("b:x:conc", f"w{i}"))]
            + [Refund("t:a:tpm", 1000, rate, 300)]
        )
        assert level() == pytest.approx(1000, abs=0.01) and r.zcard("hang:t:a:conc") == 0
        before = redis_server.script_calls()

        pause(redis_server)
        # Three admissions in flight while Redis is stopped: each times out and, fail_open,
        # is admitted against this process's own budgets.
        burst = await asyncio.gather(*(store.acquire([tokens, conc], [backend], f"p{i}") for i in range(3)))
        assert [(o.chosen, o.local) for o in burst] == [(0, True)] * 3
        assert store.down and sizes[-1] == 3  # the three went in one call
        resume(redis_server)

        # Redis runs the queued script now, well past the three deadlines.
        await until("the queued script ran", lambda: redis_server.script_calls() >= before + 1)
        await until(
            "the abandoned leases were released", lambda: not store.abandoned and store.cleaner is None
        )
        assert level() == pytest.approx(1000, abs=0.01), "a late script debited the bucket"
        assert r.zcard("hang:t:a:conc") == 0 and r.zcard("hang:b:x:conc") == 0, "a late script took a slot"
        for i in range(3):  # the requests end (they were admitted locally)
            store.fallback.settle_now([Release("t:a:conc", f"p{i}"), Release("b:x:conc", f"p{i}")])

        # Redis answered the cleanup, so it is shared again: the whole budget is there at once.
        assert not store.down
        whole = Check(BUCKET, "t:a:tpm", 1000, rate, 1000)
        again = await asyncio.gather(
            store.acquire([whole, conc], [backend], "n0"),
            *(store.acquire([conc], [backend], f"n{i}") for i in (1, 2)),
        )
        assert [(o.chosen, o.local) for o in again] == [(0, False)] * 3
        over = await store.acquire([conc], [backend], "n3")
        assert over.chosen == -1 and over.failed == 0 and not over.local  # exactness: 3 slots, no more
        await store.close()

    asyncio.run(scenario())


def test_no_lease_outlives_its_request_after_a_hang(redis_server: RedisServer) -> None:
    """Through the admission controller: requests admitted before the pause end during it,
    a burst is admitted locally during it; afterwards the tenant's slots in Redis are empty
    and it gets its whole concurrency budget from Redis at once."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["tenants"]["demo"]["limits"] = {"concurrent_requests": 2, "tokens_per_minute": 1_000_000}
    data["redis"] = {
        "url": redis_server.url,
        "key_prefix": "hang2",
        "on_failure": "fail_open",
        "timeout_ms": TIMEOUT_MS,
        "retry_interval_s": 0.1,
    }
    cfg = parse_config(yaml.safe_dump(data), "x.yaml")
    adm = build(cfg)
    assert adm is not None and isinstance(adm.store, RedisStore)
    store = adm.store
    chain = cfg.chains["claude-sonnet-4-6"]
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    r = redis_server.client()
    conc_key = "hang2:t:demo:conc"

    async def admit():
        return await adm.admit("demo", "interactive", "claude-sonnet-4-6", body, chain)

    def end(ticket) -> None:
        adm.settle(ticket, 200, ticket.backend.name, Usage(3, 4))

    async def scenario() -> None:
        # Warm up: load both scripts and open four pooled connections (two are rejected).
        for t in await asyncio.gather(*(admit() for _ in range(4)), return_exceptions=True):
            if not isinstance(t, Rejection):
                end(t)
        await until("warm-up settled", lambda: r.zcard(conc_key) == 0)
        held = await asyncio.gather(admit(), admit())
        assert not any(t.local for t in held) and r.zcard(conc_key) == 2
        before = redis_server.script_calls()

        pause(redis_server)
        for t in held:  # these end while Redis is stopped: their release times out
            end(t)
        await asyncio.sleep(SETTLE_BATCH_S * 2)
        burst = await asyncio.gather(admit(), admit())  # in flight while Redis is stopped
        assert all(t.local for t in burst)
        await asyncio.sleep(TIMEOUT_MS / 1000)
        resume(redis_server)

        for t in burst:
            end(t)
        await until("the queued scripts ran", lambda: redis_server.script_calls() >= before + 2)
        await until(
            "the abandoned leases were released", lambda: not store.abandoned and store.cleaner is None
        )
        assert r.zcard(conc_key) == 0, r.zrange(conc_key, 0, -1, withscores=True)

        # A new request is admitted by Redis straight away, and the whole budget is back.
        again = await asyncio.gather(admit(), admit())
        assert not any(t.local for t in again)
        with pytest.raises(Rejection):
            await admit()
        for t in again:
            end(t)
        await until("the last requests settled", lambda: r.zcard(conc_key) == 0)
        await store.close()

    asyncio.run(scenario())


def test_deadline_in_redis_clock_recovers_from_a_wrong_estimate(redis_server: RedisServer) -> None:
    """A deadline estimate far behind Redis's clock (as if the hosts' clocks were skewed):
    Redis voids the script, the answer corrects the estimate, the next call is shared."""
    store = RedisStore(
        RedisSettings(url=redis_server.url, key_prefix="skew", timeout_ms=TIMEOUT_MS, retry_interval_s=0.05),
        MemoryStore(900, 1.0),
    )
    conc = Check(SLOTS, "t:a:conc", 1)
    r = redis_server.client()

    async def scenario() -> None:
        store.clock.observe(-3600.0, time.monotonic())  # Redis's clock estimated an hour behind
        void = await store.acquire([conc], [[]], "v")
        assert void.chosen == 0 and void.local  # fail_open: decided here
        assert r.zcard("skew:t:a:conc") == 0  # Redis took nothing
        store.fallback.settle_now([Release("t:a:conc", "v")])
        await asyncio.sleep(0.1)  # retry_interval_s
        ok = await store.acquire([conc], [[]], "ok")
        assert ok.chosen == 0 and not ok.local and r.zcard("skew:t:a:conc") == 1
        await store.close()

    asyncio.run(scenario())


def test_an_admission_cancelled_while_redis_holds_its_answer_leaves_no_lease(
    redis_server: RedisServer,
) -> None:
    """The request goes away (its task is cancelled) while Redis, paused, holds the answer;
    resumed within the deadline, Redis runs the script, which takes a slot nobody settles."""
    store = RedisStore(
        RedisSettings(url=redis_server.url, key_prefix="gone", timeout_ms=3000), MemoryStore(900, 1.0)
    )
    conc = Check(SLOTS, "t:a:conc", 1)
    r = redis_server.client()

    async def scenario() -> None:
        warm = await store.acquire([conc], [[]], "w")
        await store.settle([Release("t:a:conc", "w")])
        assert not warm.local and r.zcard("gone:t:a:conc") == 0
        before = redis_server.script_calls()
        pause(redis_server)
        task = asyncio.create_task(store.acquire([conc], [[]], "gone"))
        await asyncio.sleep(0.05)  # the script is in Redis's socket
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        resume(redis_server)
        await until("the script ran", lambda: redis_server.script_calls() >= before + 1)
        # Usually it ran in time (2.7 s after the call began) and took the slot; either way:
        await until("the abandoned lease was released", lambda: not store.abandoned and store.cleaner is None)
        assert r.zcard("gone:t:a:conc") == 0
        again = await store.acquire([conc], [[]], "next")
        assert again.chosen == 0 and not again.local
        await store.close()

    asyncio.run(scenario())


def test_requests_admitted_during_an_outage_release_their_leases_locally() -> None:
    """fail_open admits against this process's own budgets while Redis is unreachable;
    those requests must give their slots back there. They were settled on another
    local store than the one that admitted them: each outage left its leases held
    until lease_ttl_s, and after a few a tenant was refused while Redis was down."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["tenants"]["demo"]["limits"] = {"concurrent_requests": 2}
    data["redis"] = {
        "url": "redis://127.0.0.1:1/0",
        "key_prefix": "gone",
        "on_failure": "fail_open",
        "timeout_ms": TIMEOUT_MS,
        "retry_interval_s": 60,
    }  # nothing listens on port 1
    cfg = parse_config(yaml.safe_dump(data), "x.yaml")
    adm = build(cfg)
    assert adm is not None and isinstance(adm.store, RedisStore)
    chain = cfg.chains["claude-sonnet-4-6"]
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}

    async def scenario() -> None:
        for _ in range(3):  # three rounds of two: the budget is two at a time
            tickets = [
                await adm.admit("demo", "interactive", "claude-sonnet-4-6", body, chain) for _ in range(2)
            ]
            assert all(t.local for t in tickets)
            for t in tickets:
                adm.settle(t, 200, t.backend.name, Usage(3, 4))
        with pytest.raises(Rejection):  # still exactly two
            held = [
                await adm.admit("demo", "interactive", "claude-sonnet-4-6", body, chain) for _ in range(3)
            ]
            assert not held
        await adm.store.close()

    asyncio.run(scenario())


def count_batches(store: RedisStore) -> list[int]:
    """Record how many acquires each ACQUIRE script call carried (wraps the registered script)."""
    sizes: list[int] = []
    script = store._acquire

    async def counted(keys: list[str], args: list[bytes]) -> Any:
        sizes.append(len(orjson.loads(args[0])["r"]))
        return await script(keys=keys, args=args)

    store._acquire = counted  # type: ignore[assignment]
    return sizes


def test_a_batch_voids_only_its_late_acquires(redis_server: RedisServer) -> None:
    """Acquires queued behind a call Redis holds (paused) past their own deadlines go in one
    batch with acquires that arrived just before Redis resumed: the late ones take nothing
    and are decided here; the live ones are decided by Redis."""
    store = RedisStore(
        # Retried at once: the batch goes to Redis whether the call before it came back void
        # or timed out (either marks Redis down until the retry interval has passed).
        RedisSettings(url=redis_server.url, key_prefix="mixed", timeout_ms=2000, retry_interval_s=1e-6),
        MemoryStore(900, 1.0),
    )
    conc = Check(SLOTS, "t:a:conc", 10)
    r = redis_server.client()
    sizes = count_batches(store)

    async def scenario() -> None:
        warm = await store.acquire([conc], [[]], "w")
        await store.settle([Release("t:a:conc", "w")])
        assert not warm.local and r.zcard("mixed:t:a:conc") == 0
        pause(redis_server)
        first = asyncio.create_task(store.acquire([conc], [[]], "first"))  # in flight, held by Redis
        await until("the first call is in flight", lambda: len(sizes) == 2)
        late = [asyncio.create_task(store.acquire([conc], [[]], f"late{i}")) for i in range(2)]
        # Past the late ones' deadlines (0.9 x timeout_ms after they began, in Redis's clock,
        # which the store estimates early, never late).
        await asyncio.sleep(2.0 * 0.9 + 0.1)
        live = [asyncio.create_task(store.acquire([conc], [[]], f"live{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        resume(redis_server)
        await first
        late_out = await asyncio.gather(*late)
        live_out = await asyncio.gather(*live)
        assert sizes[2:] == [4], sizes  # late and live acquires went in one call
        assert [(o.chosen, o.local) for o in late_out] == [(0, True)] * 2  # void: fail_open decided
        assert [(o.chosen, o.local) for o in live_out] == [(0, False)] * 2  # Redis decided
        held = {m.decode() for m in r.zrange("mixed:t:a:conc", 0, -1)}
        assert {"live0", "live1"} <= held and not held & {"late0", "late1"}
        await store.close()

    asyncio.run(scenario())


def test_a_failed_batch_degrades_all_its_acquires_and_leaves_no_lease(redis_server: RedisServer) -> None:
    """A burst goes to a paused Redis in one call that times out: every acquire of the batch
    is decided here (fail_open) and, once Redis resumes, none of them holds a slot there."""
    store = RedisStore(
        RedisSettings(url=redis_server.url, key_prefix="failed", timeout_ms=TIMEOUT_MS, retry_interval_s=0.1),
        MemoryStore(900, 1.0),
    )
    conc = Check(SLOTS, "t:a:conc", 10)
    backend = [Check(SLOTS, "b:x:conc", 10)]
    r = redis_server.client()
    sizes = count_batches(store)

    async def scenario() -> None:
        # Two connections open (one for the cleanup while the batch is held), the script loaded.
        warm = await store.acquire([conc], [backend], "w")
        await asyncio.gather(
            store.settle([Release("t:a:conc", "w")]), store.settle([Release("b:x:conc", "w")])
        )
        assert not warm.local and r.zcard("failed:t:a:conc") == 0
        before = redis_server.script_calls()
        pause(redis_server)
        burst = await asyncio.gather(*(store.acquire([conc], [backend], f"p{i}") for i in range(5)))
        assert sizes[1:] == [5], sizes  # one call carried the whole burst
        assert [(o.chosen, o.local) for o in burst] == [(0, True)] * 5
        assert store.down and {lease for _, lease in store.abandoned} == {f"p{i}" for i in range(5)}
        resume(redis_server)
        await until("the batch ran", lambda: redis_server.script_calls() >= before + 1)
        await until(
            "the abandoned leases were released", lambda: not store.abandoned and store.cleaner is None
        )
        assert r.zcard("failed:t:a:conc") == 0 and r.zcard("failed:b:x:conc") == 0
        for i in range(5):  # the requests end (they were admitted locally)
            store.fallback.settle_now([Release("t:a:conc", f"p{i}"), Release("b:x:conc", f"p{i}")])
        again = await store.acquire([conc], [backend], "next")
        assert again.chosen == 0 and not again.local
        await store.close()

    asyncio.run(scenario())
