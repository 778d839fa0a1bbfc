"""Free TCP ports for processes a tool or test starts on 127.0.0.1.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range,
the same range it draws the local ports of outgoing connections from: between
the probe and the child's own bind, any connection the machine opens (Envoy
to a provider, a client to Envoy) can take it, and the child fails with
EADDRINUSE. Ports below that range are only ever taken by listeners, so a
port probed free there stays free until the child binds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral range starts (Linux's default when unknown)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(n: int, consecutive: bool = False) -> list[int]:
    """``n`` distinct ports below the ephemeral range, free right now.

    ``consecutive`` asks for a block (``port``, ``port + 1``, ...), as several
    ext_proc workers take. The candidates are held bound together while
    probing, so they differ from each other.
    """
    top = max(_ephemeral_start(), _LOWEST + 1_000)
    for _ in range(200):
        if consecutive:
            start = random.randrange(_LOWEST, top - n)
            candidates: range | list[int] = range(start, start + n)
        else:
            candidates = random.sample(range(_LOWEST, top), n)
        held: list[socket.socket] = []
        try:
            for port in candidates:
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return list(candidates)
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {n} free ports below {top}")


def free_port() -> int:
    """One free port below the ephemeral range."""
    return free_ports(1)[0]
