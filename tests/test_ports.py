"""Ports handed to child processes stay clear of the kernel's ephemeral range."""

from __future__ import annotations

import socket

from gateway_tools import ports


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    got = ports.free_ports(12)
    assert len(set(got)) == 12
    assert all(ports._LOWEST <= p < ports._ephemeral_start() for p in got)
    held = []
    try:
        for p in got:  # each really is free: all of them bind at once
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", p))
    finally:
        for s in held:
            s.close()


def test_a_consecutive_block_skips_a_taken_port() -> None:
    block = ports.free_ports(6, consecutive=True)
    assert block == list(range(block[0], block[0] + 6))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", block[2]))
        for _ in range(20):  # a block never contains a port bound by someone else
            assert block[2] not in ports.free_ports(6, consecutive=True)
