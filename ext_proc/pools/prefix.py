"""Prefix affinity: which server recently served a prompt's leading blocks.

A model server's prefix cache keys KV blocks by the hash of their tokens chained with the
previous block's (vLLM: blocks of 16 tokens). The gateway has no tokenizer, so it
approximates: whitespace words of the prompt, in blocks of 16, hashed the same chained way.
The prompt is every string of the body sent to the pool, in document order, except the model
name: dialect-agnostic, and identical for identical conversation prefixes.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from typing import Any

BLOCK_WORDS = 16
MAX_BLOCKS = 128  # hash at most this many leading blocks (2,048 words)


def prompt_words(body: Any, limit: int = BLOCK_WORDS * MAX_BLOCKS) -> list[str]:
    """The leading ``limit`` whitespace words of every string in ``body`` (model excluded)."""
    out: list[str] = []
    stack: list[Any] = [body]
    while stack and len(out) < limit:
        node = stack.pop()
        if isinstance(node, str):
            out += node.split()[: limit - len(out)]
        elif isinstance(node, dict):
            stack += reversed([v for k, v in node.items() if not (node is body and k == "model")])
        elif isinstance(node, list):
            stack += reversed(node)
    return out


def block_hashes(words: list[str]) -> list[bytes]:
    """Chained hashes of the full blocks of ``words``."""
    out: list[bytes] = []
    parent = b""
    for i in range(0, len(words) - len(words) % BLOCK_WORDS, BLOCK_WORDS):
        parent = hashlib.blake2b(
            parent + "\x1f".join(words[i : i + BLOCK_WORDS]).encode(), digest_size=12
        ).digest()
        out.append(parent)
    return out


class AffinityTable:
    """Block hash -> the server that last served it, bounded (least recently used out), and
    per server how many of the remembered blocks it holds (its cache footprint as this gateway
    sent it: a model server's KV gauge counts only blocks in use, not the cached ones)."""

    def __init__(self, capacity: int = 100_000, ttl_s: float = 600.0) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._seen: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._held: Counter[str] = Counter()

    def held(self, server: str) -> int:
        """Remembered blocks last sent to ``server`` (expired ones included until evicted)."""
        return self._held[server]

    def matches(self, hashes: list[bytes]) -> dict[str, int]:
        """Server -> how many leading blocks of ``hashes`` it served last (chained: a match
        of block i implies blocks 0..i)."""
        now = time.monotonic()
        out: dict[str, int] = {}
        for i, h in enumerate(hashes):
            hit = self._seen.get(h)
            if hit is None or now - hit[1] > self.ttl_s:
                continue
            out[hit[0]] = max(out.get(hit[0], 0), i + 1)
        return out

    def record(self, hashes: list[bytes], server: str) -> None:
        now = time.monotonic()
        for h in hashes:
            before = self._seen.get(h)
            if before is not None:
                self._held[before[0]] -= 1
            self._seen[h] = (server, now)
            self._seen.move_to_end(h)
            self._held[server] += 1
        while len(self._seen) > self.capacity:
            _, (gone, _) = self._seen.popitem(last=False)
            self._held[gone] -= 1

    def forget(self, server: str) -> None:
        """A server that went away lost its cache."""
        for h in [h for h, (s, _) in self._seen.items() if s == server]:
            del self._seen[h]
        self._held.pop(server, None)
