"""Everything a stream needs, built once per config version.

A stream takes the current ``GatewayState`` when it starts and keeps it to
the end, so a config switch (``apply``) is atomic per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping

from . import admission, credentials, metrics
from .config import ConfigError, GatewayConfig, resolve_secrets, token_sources
from .conversations import ConversationStore, MemoryConversations, RedisConversations
from .pools import PoolSet
from .routing import HealthTable, Router, State
from .translation.reasoning import tenant_key
from .translation.redact import Redactor

log = logging.getLogger("llm_gateway.state")


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
        # Seals reasoning signatures handed to clients (translation.reasoning, docs/reasoning.md).
        self.seal_secret = seal_secret(config, env, provider_keys)
        self._seal_keys: dict[str, bytes] = {}  # by tenant: at most one per configured tenant
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

    def seal_key(self, tenant: str) -> bytes:
        """The key that seals this tenant's reasoning signatures (no other tenant's opens them).
        Derived once per tenant: an HMAC per translated request showed in the bench's profile."""
        key = self._seal_keys.get(tenant)
        if key is None:
            key = self._seal_keys[tenant] = tenant_key(self.seal_secret, tenant)
        return key


def seal_secret(
    config: GatewayConfig, env: Mapping[str, str] | None, provider_keys: Mapping[str, str]
) -> bytes:
    """``reasoning.signing_key_env`` when set; else derived from the secrets this deployment
    holds (provider keys and tenant key digests), so replicas agree without more config; a
    gateway holding no secret at all gets a random one (its tokens die with the process)."""
    env = os.environ if env is None else env
    name = config.root.reasoning.signing_key_env
    if name:
        value = env.get(name)
        if not value:
            raise ConfigError(
                [f"{config.source}: reasoning.signing_key_env: environment variable {name} is not set"]
            )
        return value.encode()
    held = sorted(v for v in provider_keys.values() if v) + sorted(config.key_digests)
    if not held:
        log.warning(
            "no secret to seal reasoning signatures with: a random one (set reasoning.signing_key_env)"
        )
        return secrets.token_bytes(32)
    return hmac.new(b"llm-gateway reasoning secret", "\0".join(held).encode(), hashlib.sha256).digest()


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
