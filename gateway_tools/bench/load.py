"""Load generators: wrk for throughput, a lean asyncio client for timings.

Throughput is closed-loop (wrk, fixed connections). Latencies are open-loop:
requests start on a fixed schedule whether or not earlier ones finished, and
each is timed from its scheduled start, so a stall shows up in the figures
instead of silently slowing the load down. The client speaks just enough
HTTP/1.1 (keep-alive, content-length, chunked) to stay cheap: it shares the
machine with what it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .upstream import new_event_loop

_STAMP = re.compile(rb'"(?:text|content)":"(\d+\.\d+) "')


@dataclass(frozen=True)
class Request:
    """One HTTP request, sent as-is to ``port``."""

    port: int
    path: str
    headers: dict[str, str]
    body: bytes

    def wire(self) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(self.body)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body

    def send(self, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """One request, for checks before measuring: status, headers (lower-case names), body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", self.path, self.body, self.headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


# ---- throughput (wrk) -------------------------------------------------------------------

WRK_SCRIPT = """\
local f = assert(io.open({body_path}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
"""


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: int  # non-2xx responses plus socket errors
    seconds: float


def wrk_path() -> str | None:
    return shutil.which("wrk")


# The cores this run may use, read once: ``scaling`` narrows the bench process's own
# affinity to the stack's cores while it runs, and the split must not move with it.
MACHINE_CORES = frozenset(os.sched_getaffinity(0))


def load_generator_cores() -> set[int] | None:
    """The core wrk is pinned to, apart from the stack (None: under 4 cores, none is set apart)."""
    return {max(MACHINE_CORES)} if len(MACHINE_CORES) >= 4 else None


def stack_cores() -> set[int]:
    """The cores left to the stack: all of them, but wrk's where it has one of its own."""
    return set(MACHINE_CORES) - (load_generator_cores() or set())


def run_wrk(req: Request, connections: int, duration: float, workdir: Path, threads: int = 2) -> WrkResult:
    """Closed-loop max throughput; raises if wrk fails outright."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    body_path = workdir / f"body-{abs(hash(req.body))}.bin"
    if not body_path.exists():
        body_path.write_bytes(req.body)
    script = workdir / f"wrk-{abs(hash((req.path, tuple(req.headers.items()))))}.lua"
    headers = "\n".join(f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in req.headers.items())
    script.write_text(WRK_SCRIPT.format(body_path=_lua(str(body_path)), headers=headers))
    argv = [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{req.port}{req.path}",
    ]
    # With 4 cores or more, wrk runs apart from the stack (``scaling``).
    pin = load_generator_cores()
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    text = out.stdout
    rps = float(_grab(r"Requests/sec:\s+([\d.]+)", text))
    requests = int(_grab(r"(\d+) requests in", text))
    seconds = float(_grab(r"requests in ([\d.]+)s", text))
    errors = int(_grab(r"Non-2xx or 3xx responses: (\d+)", text, "0"))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket:
        errors += sum(int(g) for g in socket.groups())
    return WrkResult(rps, requests, errors, seconds)


def _lua(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _grab(pattern: str, text: str, default: str | None = None) -> str:
    m = re.search(pattern, text)
    if m:
        return m.group(1)
    if default is not None:
        return default
    raise RuntimeError(f"unexpected wrk output:\n{text}")


# ---- minimal HTTP/1.1 client ------------------------------------------------------------


@dataclass
class Response:
    status: int
    first_byte: float  # monotonic time of the first body byte
    stamps: list[float] = field(default_factory=list)  # per stamped event: arrival - sent


class Conn:
    """One keep-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=1 << 22))

    def close(self) -> None:
        self.writer.close()

    async def send(self, wire: bytes, stream: bool) -> tuple[Response, bool]:
        """Send a request, read the whole response; returns it and whether the connection stays usable."""
        self.writer.write(wire)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip().lower()
        resp = Response(status, 0.0)
        if headers.get(b"transfer-encoding") == b"chunked":
            await self._chunked(resp, stream)
        else:
            length = int(headers.get(b"content-length", b"0"))
            if length:
                await self.reader.readexactly(length)
            resp.first_byte = time.monotonic()
        return resp, headers.get(b"connection") != b"close"

    async def _chunked(self, resp: Response, stream: bool) -> None:
        reader = self.reader
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            now = time.monotonic()
            if not resp.first_byte:
                resp.first_byte = now
            if size == 0:
                return
            if stream:
                resp.stamps += [now - float(m) for m in _STAMP.findall(data)]


class Pool:
    """Idle keep-alive connections to one port; opens more when all are busy (open loop)."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[Conn] = []

    async def request(self, wire: bytes, stream: bool = False) -> Response:
        conn = self.idle.pop() if self.idle else await Conn.open(self.port)
        try:
            resp, reusable = await conn.send(wire, stream)
        except BaseException:
            conn.close()
            raise
        if reusable:
            self.idle.append(conn)
        else:
            conn.close()
        return resp

    def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()


@dataclass
class Timings:
    """Open-loop results: latencies in seconds, from each request's scheduled start."""

    latency: list[float] = field(default_factory=list)  # to the last byte
    first_byte: list[float] = field(default_factory=list)
    per_event: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    seconds: float = 0.0


async def _open_loop(req: Request, rate: float, duration: float, stream: bool) -> Timings:
    pool = Pool(req.port)
    wire = req.wire()
    out = Timings()
    n = max(1, int(rate * duration))
    tasks = []

    async def one(scheduled: float) -> None:
        try:
            resp = await pool.request(wire, stream)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            out.errors += 1
            return
        if resp.status != 200:
            out.errors += 1
            return
        out.latency.append(time.monotonic() - scheduled)
        out.first_byte.append(resp.first_byte - scheduled)
        out.per_event += resp.stamps

    for _ in range(min(8, n)):  # warm connections: connect time is not what is measured
        pool.idle.append(await Conn.open(req.port))
    start = time.monotonic() + 0.05
    for i in range(n):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(at)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 60)
    out.sent = n
    out.seconds = time.monotonic() - start
    pool.close()
    return out


def open_loop(req: Request, rate: float, duration: float, stream: bool = False) -> Timings:
    """Requests at a fixed rate for ``duration`` seconds; every response read to the end."""
    return _run(_open_loop(req, rate, duration, stream))


def _run(coro) -> Timings:  # type: ignore[no-untyped-def]
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# ---- many concurrent streams (memory) ---------------------------------------------------


@dataclass
class HoldResult:
    streams: int
    completed: int
    max_open: int  # streams past their first byte and not yet finished, at the peak
    peak_rss_bytes: int


async def _hold(req: Request, streams: int, sample: Callable[[], int]) -> HoldResult:
    open_now = 0
    peak = {"open": 0, "rss": 0}
    done = asyncio.Event()
    completed = 0
    wire = req.wire()

    async def one(i: int) -> None:
        nonlocal open_now, completed
        await asyncio.sleep(i * 0.002)  # stagger connects: 500 at once would overflow accept queues
        conn = await Conn.open(req.port)
        counted = False
        try:
            conn.writer.write(wire)
            await conn.reader.readuntil(b"\r\n\r\n")
            open_now += 1
            counted = True
            peak["open"] = max(peak["open"], open_now)
            while await conn.reader.readuntil(b"\r\n") != b"0\r\n":
                pass
            completed += 1
        finally:
            open_now -= counted
            conn.close()

    async def sampler() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], sample())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    watcher = asyncio.ensure_future(sampler())
    results = await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True)
    done.set()
    await watcher
    del results
    return HoldResult(streams, completed, peak["open"], peak["rss"])


def hold_streams(req: Request, streams: int, sample: Callable[[], int]) -> HoldResult:
    """Open ``streams`` streams at once, read them to the end, sampling ``sample()`` meanwhile."""
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(_hold(req, streams, sample), timeout=120))
    finally:
        loop.close()
