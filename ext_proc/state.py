"""Everything a stream needs, built once per config version.

A stream takes the current ``GatewayState`` when it starts and keeps it to
the end, so a config switch (``apply``) is atomic per request.
"""

from __future__ import annotations

import hashlib

from . import admission, credentials, metrics
from .config import ConfigError, GatewayConfig, resolve_secrets, token_sources
from .routing import HealthTable, Router, State
from .translation.redact import Redactor


class GatewayState:
    def __init__(self, config: GatewayConfig, env: dict[str, str] | None = None,
                 previous: GatewayState | None = None):
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
        self.health: HealthTable = previous.health if previous is not None else HealthTable(on_change=_export_health)
        # Budgets and quotas; None when the config sets none (no cost on the data path).
        self.admission = admission.build(config)

    def tenant_for_key(self, key: str) -> str | None:
        return self._digests.get(hashlib.sha256(key.encode()).hexdigest())


def _export_health(backend: str, state: State) -> None:
    metrics.BACKEND_HEALTH.labels(backend).set(int(state))
