"""How to address a backend: its request line and credentials, built once per config.

Both stages apply a ``BackendTarget``: the router stage for the primary
backend, the upstream stage for a failover attempt. Credentials come from the
backend's dialect (``Dialect.credential_headers``), or from an operator-given
``auth_header`` for hosts that take the key elsewhere; a dialect that signs requests
adds per-attempt headers over the final body (``Dialect.sign``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MANAGED_HEADERS, GatewayConfig, ResolvedBackend
from ..dialects import CREDENTIAL_HEADERS, Dialect, get_dialect

# Client request headers every provider receives; any other reaches a provider
# only if its ``forward_headers`` lists it (README "Headers to providers").
# Envoy's own are left to Envoy: host and framing, x-request-id (the request's
# id in the access log, for matching a provider's logs), and x-forwarded-proto,
# which the route lookup needs (removed as the request leaves instead).
FORWARDED = frozenset({"content-type", "accept", "x-request-id", "x-forwarded-proto", *MANAGED_HEADERS}) - {
    "accept-encoding"}


@dataclass(slots=True)
class BackendTarget:
    """Everything needed to send one attempt to one backend."""

    backend: ResolvedBackend
    dialect: Dialect
    headers: dict[str, str] = field(default_factory=dict)  # credentials + provider headers
    forwarded: frozenset[str] = FORWARDED  # client headers this backend's provider may receive

    def path(self, stream: bool) -> str:
        p = self.backend.provider
        if p.chat_path:
            return p.base_path + p.chat_path.replace("{model}", self.backend.upstream_model)
        return p.base_path + self.dialect.request_path(self.backend.upstream_model, stream)

    def request_headers(self, stream: bool, body: bytes | None) -> dict[str, str]:
        """Path, credentials and (for signing dialects) the signature of ``body``."""
        out = {":path": self.path(stream), **self.headers}
        if body is not None:
            out["content-length"] = str(len(body))
            out.update(self.dialect.sign(self.backend.provider, out, body))
        return out


class Router:
    """Backend targets, built once per config version (never per request)."""

    def __init__(self, cfg: GatewayConfig, provider_keys: dict[str, str]):
        self.cfg = cfg
        self.targets: dict[str, BackendTarget] = {}
        # Headers any provider may have been given: reset on every attempt.
        removable = {*CREDENTIAL_HEADERS, "api-key"}  # api-key: Azure-style hosts, also from clients
        for p in cfg.providers.values():
            removable.update(h.lower() for h in p.headers)
            if p.auth_header:
                removable.add(p.auth_header.lower())
        self.provider_headers = tuple(sorted(removable))
        for name, b in cfg.backends.items():
            dialect = get_dialect(b.dialect)
            self.targets[name] = BackendTarget(b, dialect, _credential_headers(b, dialect,
                                                                               provider_keys[b.provider_name]),
                                               FORWARDED | set(b.provider.forward_headers))

    def chain(self, model: str) -> list[ResolvedBackend] | None:
        return self.cfg.chains.get(model)


def _credential_headers(b: ResolvedBackend, dialect: Dialect, key: str) -> dict[str, str]:
    p = b.provider
    headers = {k.lower(): v for k, v in p.headers.items()}
    if p.auth_header:
        # A compatible host that takes the key elsewhere (e.g. an "api-key" header).
        name = p.auth_header.lower()
        headers[name] = f"Bearer {key}" if name == "authorization" else key
    else:
        headers.update(dialect.credential_headers(key))
    for name, value in dialect.version_headers.items():
        headers.setdefault(name, value)  # the operator's provider headers may pin another version
    return headers
