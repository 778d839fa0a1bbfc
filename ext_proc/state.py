"""Everything a stream needs, built once per config version.

A stream takes the current ``GatewayState`` when it starts and keeps it to
the end, so a config switch (``apply``) is atomic per request.
"""

from __future__ import annotations

import hashlib

from . import admission, credentials, metrics
from .config import ConfigError, GatewayConfig, resolve_secrets, token_sources
from .conversations import ConversationStore, MemoryConversations, RedisConversations
from .pools import PoolSet
from .routing import HealthTable, Router, State
from .translation.redact import Redactor


class GatewayState:
    def __init__(
        self, config: GatewayConfig, env: dict[str, str] | None = None, previous: GatewayState | None = None
    ):
        self.config = config
        provider_keys = resolve_secrets(config, env)
        # Cloud credentials: loaded once per process and refreshed on their own threads.
        tokens = {}
        for name, source in token_sources(config, env).items():
            try:
                tokens[name] = credentials.shared(source)
            except credentials.CredentialError as e:
                raise ConfigError([f"{config.source}: providers.{name}: {e}"]) from None
        self.router = Router(config, provider_keys, tokens)
        # Provider error text reaches clients only through this (it knows the keys we hold).
        self.redact = Redactor(v for v in provider_keys.values() if v)
        self._digests = config.key_digests
        # What this process learned about backends survives a config switch.
        self.health: HealthTable = (
            previous.health if previous is not None else HealthTable(on_change=_export_health)
        )
        # Pools of model servers: scraped state and prefix affinity survive a config switch.
        self.pools: PoolSet = PoolSet(config, previous.pools if previous is not None else None)
        # Budgets and quotas; None when the config sets none (no cost on the data path).
        self.admission = admission.build(config)
        # Conversation state for stateful client APIs; what this process keeps survives a config switch.
        self.conversations: ConversationStore = conversation_store(
            config, previous.conversations if previous is not None else None
        )

    def tenant_for_key(self, key: str) -> str | None:
        return self._digests.get(hashlib.sha256(key.encode()).hexdigest())


def _export_health(backend: str, state: State) -> None:
    metrics.BACKEND_HEALTH.labels(backend).set(int(state))


def conversation_store(cfg: GatewayConfig, previous: ConversationStore | None = None) -> ConversationStore:
    """Redis when ``redis:`` is set (shared by every replica), else this process's memory."""
    c, r = cfg.conversations, cfg.redis
    if r is not None:
        if isinstance(previous, RedisConversations) and previous.settings == (
            r.url,
            r.key_prefix,
            r.timeout_ms / 1000,
            r.pool_size,
        ):
            previous.ttl_s, previous.max_entry_bytes = c.ttl_s, c.max_conversation_bytes
            return previous
        return RedisConversations(
            r.url, r.key_prefix, r.timeout_ms / 1000, r.pool_size, c.ttl_s, c.max_conversation_bytes
        )
    if isinstance(previous, MemoryConversations):
        previous.ttl_s, previous.max_entries, previous.max_bytes = c.ttl_s, c.max_entries, c.max_bytes
        previous.max_entry_bytes = c.max_conversation_bytes
        return previous
    return MemoryConversations(c.ttl_s, c.max_entries, c.max_bytes, c.max_conversation_bytes)
