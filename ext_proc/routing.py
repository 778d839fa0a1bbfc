"""Routing: which backend a request goes to first, and how to address a backend.

Envoy owns the failover itself (retries across the priorities of the model's
cluster); this module decides the primary the router stage translates for and
produces the per-backend request line and credentials both stages apply.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .codecs import get_codec
from .config import GatewayConfig, ResolvedBackend
from .protocol import PROVIDER_AUTH_HEADERS

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(slots=True)
class BackendTarget:
    """Everything needed to send one attempt to one backend."""

    backend: ResolvedBackend
    headers: dict[str, str] = field(default_factory=dict)  # credentials + provider headers

    def path(self, stream: bool) -> str:
        p = self.backend.provider
        if p.chat_path:
            return p.base_path + p.chat_path.replace("{model}", self.backend.upstream_model)
        return p.base_path + get_codec(p.dialect).request_path(self.backend.upstream_model, stream)


class Router:
    """Routing tables built once per config version (never per request)."""

    def __init__(self, cfg: GatewayConfig, provider_keys: dict[str, str]):
        self.cfg = cfg
        self.targets: dict[str, BackendTarget] = {}
        # Headers any provider may have been given: reset on every attempt.
        removable = set(PROVIDER_AUTH_HEADERS)
        for p in cfg.providers.values():
            removable.update(h.lower() for h in p.headers)
            if p.auth_header:
                removable.add(p.auth_header.lower())
        self.provider_headers = tuple(sorted(removable))
        for name, b in cfg.backends.items():
            self.targets[name] = BackendTarget(b, _credential_headers(b, provider_keys[b.provider_name]))

    def chain(self, model: str) -> list[ResolvedBackend] | None:
        return self.cfg.chains.get(model)

    def primary(self, model: str, skip: Callable[[ResolvedBackend], bool] | None = None
                ) -> ResolvedBackend | None:
        """The backend the router stage translates for: the first in failover
        order that ``skip`` does not rule out (no headroom, cooling down), by
        weight within its tier. The rendered route for that backend starts
        Envoy's attempts at its tier, so skipped backends cost no attempt.
        None when every backend is skipped."""
        chain = self.cfg.chains[model]
        for tier in self.cfg.tiers[model]:
            candidates = [b for b in chain if b.tier == tier and not (skip and skip(b))]
            if len(candidates) == 1:
                return candidates[0]
            if candidates:
                return random.choices(candidates, weights=[b.weight for b in candidates])[0]
        return None


def _credential_headers(b: ResolvedBackend, key: str) -> dict[str, str]:
    p = b.provider
    headers = {k.lower(): v for k, v in p.headers.items()}
    if p.auth_header:
        name = p.auth_header.lower()
        headers[name] = f"Bearer {key}" if name == "authorization" else key
    elif p.dialect == "openai":
        headers["authorization"] = f"Bearer {key}"
    elif p.dialect == "anthropic":
        headers["x-api-key"] = key
    else:
        headers["x-goog-api-key"] = key
    if p.dialect == "anthropic":
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
    return headers
