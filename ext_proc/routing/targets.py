"""How to address a backend: its request line and credentials, built once per config.

Both stages apply a ``BackendTarget``: the router stage for the primary
backend, the upstream stage for a failover attempt. Credentials come from the
backend's dialect (``Dialect.credential_headers``), or from an operator-given
``auth_header`` for hosts that take the key elsewhere; a provider with a short-lived
bearer token (a cloud identity, ``oauth``) has it read from its refreshing cache on
every attempt (never fetched here: ``credentials``); a dialect that signs requests
adds per-attempt headers over the final body (``Dialect.sign``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import MANAGED_HEADERS, GatewayConfig, ResolvedBackend
from ..credentials import RefreshingToken
from ..dialects import CREDENTIAL_HEADERS, Dialect, get_dialect

# Client request headers every provider receives; any other reaches a provider
# only if its ``forward_headers`` lists it (README "Headers to providers").
# Envoy's own are left to Envoy: host and framing, x-request-id (the request's
# id in the access log, for matching a provider's logs), and x-forwarded-proto,
# which the route lookup needs (removed as the request leaves instead).
FORWARDED = frozenset({"content-type", "accept", "x-request-id", "x-forwarded-proto", *MANAGED_HEADERS}) - {
    "accept-encoding"
}


@dataclass(slots=True)
class BackendTarget:
    """Everything needed to send one attempt to one backend."""

    backend: ResolvedBackend
    dialect: Dialect
    headers: dict[str, str] = field(default_factory=dict)  # credentials + provider headers
    token: RefreshingToken | None = None  # the provider's bearer token, when it has one
    forwarded: frozenset[str] = FORWARDED  # client headers this backend's provider may receive

    def path(self, stream: bool) -> str:
        p = self.backend.provider
        if p.chat_path:
            return p.base_path + p.chat_path.replace("{model}", self.backend.upstream_model)
        return p.base_path + self.dialect.provider_path(p, self.backend.upstream_model, stream)

    def operation_path(self, operation: str) -> str:
        """The path of another operation than chat ("embed", "count_tokens") on this backend."""
        p = self.backend.provider
        if operation == "embed":
            return p.base_path + self.dialect.embeddings_path(p, self.backend.upstream_model)
        return p.base_path + self.dialect.counting_path(p, self.backend.upstream_model)

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` without the fields this host rejects (``drop_fields``); the same object
        when it has none of them."""
        drop = self.backend.provider.drop_fields
        if drop and any(k in body for k in drop):
            return {k: v for k, v in body.items() if k not in drop}
        return body

    def request_headers(self, stream: bool, body: bytes | None, path: str | None = None) -> dict[str, str]:
        """Path (the chat endpoint's unless given), credentials and (for signing dialects)
        the signature of ``body``."""
        out = {":path": path or self.path(stream), **self.headers}
        if self.token is not None:
            token = self.token.current()  # a read: refreshing happens on the token's own thread
            if token:
                out.update(self.dialect.token_headers(token))
        if body is not None:
            out["content-length"] = str(len(body))
            out.update(self.dialect.sign(self.backend.provider, out, body))
        return out


class Router:
    """Backend targets, built once per config version (never per request)."""

    def __init__(
        self,
        cfg: GatewayConfig,
        provider_keys: dict[str, str],
        tokens: dict[str, RefreshingToken] | None = None,
    ):
        self.cfg = cfg
        self.targets: dict[str, BackendTarget] = {}
        tokens = tokens or {}
        # Headers any provider may have been given: reset on every attempt.
        removable = set(CREDENTIAL_HEADERS)
        for p in cfg.providers.values():
            removable.update(h.lower() for h in p.headers)
            if p.auth_header:
                removable.add(p.auth_header.lower())
        self.provider_headers = tuple(sorted(removable))
        for name, b in cfg.backends.items():
            dialect = get_dialect(b.dialect)
            self.targets[name] = BackendTarget(
                b,
                dialect,
                _credential_headers(b, dialect, provider_keys.get(b.provider_name)),
                tokens.get(b.provider_name),
                FORWARDED | set(b.provider.forward_headers),
            )

    def chain(self, model: str) -> list[ResolvedBackend] | None:
        return self.cfg.chains.get(model)

    def credential_rejected(self, backend: str) -> None:
        """A provider refused an attempt's credential (401): its token, if it has one, is
        fetched again now rather than at its planned refresh."""
        target = self.targets.get(backend)
        if target is not None and target.token is not None:
            target.token.rejected()


def _credential_headers(b: ResolvedBackend, dialect: Dialect, key: str | None) -> dict[str, str]:
    p = b.provider
    headers = {k.lower(): v for k, v in p.headers.items()}
    if key is None:
        pass  # a token (set per attempt) or no credential at all
    elif p.auth_header:
        # A compatible host that takes the key elsewhere (a header of its own).
        name = p.auth_header.lower()
        headers[name] = f"Bearer {key}" if name == "authorization" else key
    else:
        headers.update(dialect.credential_headers(key))
    for name, value in dialect.version_headers.items():
        headers.setdefault(name, value)  # the operator's provider headers may pin another version
    return headers
