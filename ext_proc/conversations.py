"""Conversation state the gateway keeps for stateful client APIs.

Some client APIs continue an earlier answer by its id. The gateway keeps what
that needs itself (backends are always asked to store nothing), so a continued
conversation may be answered by any backend, and by any gateway replica when
the state lives in Redis. The request path reaches it only through a dialect's
hooks (``Dialect.expand``, ``Dialect.keeper``, ``Dialect.serve_state``).

Entries are opaque bytes owned by the dialect that wrote them, keyed by
(tenant, id): a tenant never reads another tenant's entry, and such a lookup
is a plain miss, indistinguishable from an unknown id.

- ``MemoryConversations``: this process only (the default). Bounded by entry
  count and total bytes (least recently used out first); entries expire
  ``ttl_s`` after they were written.
- ``RedisConversations``: shared by every replica, using the ``redis:``
  connection settings; one ``SET .. PX`` per entry, so Redis expires them.

Both tell their users ``max_entry_bytes``: a dialect keeps nothing bigger
(it records that it could not, so a later request gets a clear 400).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import metrics

log = logging.getLogger("llm_gateway.conversations")

DEFAULT_TTL_S = 86_400.0  # a day: long enough for an agent's session, short enough to bound memory
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_ENTRY_BYTES = 8 * 2**20


class StoreUnavailable(Exception):
    """The shared store did not answer (a request that needs it is refused with a 503)."""


class ConversationStore(ABC):
    """(tenant, id) -> bytes, with a time to live."""

    ttl_s: float
    max_entry_bytes: int

    @abstractmethod
    async def get(self, tenant: str, key: str) -> bytes | None:
        """The entry, or None (unknown, expired, or another tenant's). Raises ``StoreUnavailable``."""

    @abstractmethod
    async def put(self, tenant: str, key: str, value: bytes) -> None:
        """Keep ``value`` for ``ttl_s``. Raises ``StoreUnavailable``."""

    @abstractmethod
    async def delete(self, tenant: str, key: str) -> bool:
        """Forget the entry; False when there was none. Raises ``StoreUnavailable``."""

    async def close(self) -> None:
        return None


def _count(op: str, outcome: str) -> None:
    metrics.child(metrics.CONVERSATIONS, op, outcome).inc()


class MemoryConversations(ConversationStore):
    """In this process: bounded by entries and bytes, least recently used out first."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, tenant: str, key: str) -> bytes | None:
        k = (tenant, key)
        found = self._entries.get(k)
        if found is None or found[0] <= self.clock():
            if found is not None:
                self._drop(k)
            _count("get", "miss")
            return None
        self._entries.move_to_end(k)
        _count("get", "hit")
        return found[1]

    async def put(self, tenant: str, key: str, value: bytes) -> None:
        k = (tenant, key)
        if k in self._entries:
            self._drop(k)
        self._entries[k] = (self.clock() + self.ttl_s, value)
        self.bytes += len(value)
        while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
            self._drop(next(iter(self._entries)))
            _count("put", "evicted")
        _count("put", "ok")

    async def delete(self, tenant: str, key: str) -> bool:
        k = (tenant, key)
        found = self._entries.get(k)
        if found is None:
            return False
        self._drop(k)
        return found[0] > self.clock()

    def _drop(self, k: tuple[str, str]) -> None:
        _, value = self._entries.pop(k)
        self.bytes -= len(value)


class RedisConversations(ConversationStore):
    """In Redis, shared by every replica; Redis expires the entries."""

    def __init__(
        self,
        url: str,
        key_prefix: str,
        timeout_s: float,
        pool_size: int,
        ttl_s: float = DEFAULT_TTL_S,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ):
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self.prefix = f"{key_prefix}:conv:"
        self.settings: tuple[Any, ...] = (url, key_prefix, timeout_s, pool_size)  # reused while these hold
        # A bounded pool: a burst waits for a connection instead of opening hundreds.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.client: Any = aioredis.Redis(connection_pool=pool)

    def _key(self, tenant: str, key: str) -> str:
        return f"{self.prefix}{tenant}:{key}"

    async def get(self, tenant: str, key: str) -> bytes | None:
        try:
            value = await self.client.get(self._key(tenant, key))
        except Exception as e:  # connection refused, timeout, a Redis error: the store is unavailable
            self._failed("get", e)
        _count("get", "miss" if value is None else "hit")
        return value

    async def put(self, tenant: str, key: str, value: bytes) -> None:
        try:
            await self.client.set(self._key(tenant, key), value, px=max(1, int(self.ttl_s * 1000)))
        except Exception as e:
            self._failed("put", e)
        _count("put", "ok")

    async def delete(self, tenant: str, key: str) -> bool:
        try:
            n = await self.client.delete(self._key(tenant, key))
        except Exception as e:
            self._failed("delete", e)
        return bool(n)

    def _failed(self, op: str, err: BaseException) -> Any:
        _count(op, "unavailable")
        log.warning("conversation store (redis) %s failed: %s", op, err)
        raise StoreUnavailable(f"the conversation store did not answer ({type(err).__name__})") from err

    async def close(self) -> None:
        await self.client.aclose()
