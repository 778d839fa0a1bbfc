"""Gateway configuration: typed, validated, every error reported at once.

The YAML file (``config/gateway.yaml``) names providers, models (the client
facing name and its ordered backends), tenants and ports. Loading validates the
structure with pydantic, then cross-references (unknown providers, duplicate
keys, port clashes); each problem is reported as ``FILE: field.path: what is
wrong`` and all of them together, so an operator fixes a file in one pass.

Secrets never live in the file: provider keys come from an environment
variable or a file, tenant keys are sha256 digests (or come from the
environment), and providers of dialects that sign requests load their
credentials themselves (``Dialect.load_credentials``: a standard credential
chain, never the file). Resolving them is a separate step (``resolve_secrets``)
so that ``render-envoy`` works without them; ``check`` loads the signing
credentials but not the keys.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from . import catalog, credentials
from .catalog import CapabilityOverrides
from .catalog.caps import ModelCaps
from .dialects import CLIENT_KEY_HEADERS, CREDENTIAL_HEADERS, DEFAULT, DIALECTS, Dialect, get_dialect
from .names import backend_name

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=128)]
# A value that goes into a request path or query as is (a cloud project, a region, an API version).
PathSegment = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=128)]
Port = Annotated[int, Field(ge=0, le=65535)]

DEFAULT_CONFIG = Path(__file__).with_name("defaults") / "gateway.yaml"


class ConfigError(Exception):
    """All problems found in one config file, each with its field path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    address: str = "127.0.0.1"
    port: Port


class Listen(Endpoint):
    """The client listener, and how long it waits for a client (README "Time bounds")."""

    port: Port = 8080
    # From the first byte of a request to its last header.
    request_headers_timeout_ms: Annotated[int, Field(ge=1)] = 10_000
    # From the first byte of a request to its last body byte (a 32 MiB body needs 0.6 MB/s).
    request_timeout_ms: Annotated[int, Field(ge=1)] = 60_000
    # A connection with no request in flight is closed after this long.
    idle_timeout_ms: Annotated[int, Field(ge=1)] = 300_000


class ExtProcSettings(_Strict):
    address: str = "127.0.0.1"
    port: Port = 50051
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    metrics_port: Port = 9464
    # Envoy's default is 200 ms; a busy Python process must not fail requests.
    message_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 5_000
    # Host name Envoy connects to instead of `address` (which is where the
    # workers bind): a DNS name resolving to every replica, e.g. a compose
    # service. Envoy then resolves it (STRICT_DNS) rather than using a fixed IP.
    upstream_host: (
        Annotated[
            str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", max_length=253)
        ]
        | None
    ) = None


# Headers Envoy or the gateway manage on every request to a provider: never a client's to forward.
MANAGED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "te",
        "connection",
        "keep-alive",
        "upgrade",
        "proxy-connection",
        "expect",
        "accept-encoding",
    }
)
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")

# Headers that carry a credential: set from api_key_env / api_key_file only, never inline.
_SECRET_HEADERS = frozenset({*CREDENTIAL_HEADERS, "authorization"}) - {
    h for d in DIALECTS.values() for h in d.version_headers
}


class OAuth(_Strict):
    """A bearer token instead of an API key: from a file another process keeps fresh, or
    from the OAuth2 client-credentials grant (e.g. a Microsoft Entra ID app). Refreshed off
    the request path (``credentials``)."""

    token_file: str | None = None
    token_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s?#]+$")] | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> OAuth:
        grant = (self.token_url, self.client_id, self.client_secret_env, self.client_secret_file, self.scope)
        if self.token_file:
            if any(grant):
                raise ValueError("set token_file, or token_url with client_id and a client secret, not both")
        elif not (self.token_url and self.client_id):
            raise ValueError("needs token_file, or token_url and client_id (client-credentials grant)")
        elif bool(self.client_secret_env) == bool(self.client_secret_file):
            raise ValueError(
                "needs exactly one of client_secret_env or client_secret_file (secrets are never inline)"
            )
        return self


class PoolWeights(_Strict):
    """How much each scorer counts when picking a pool's server (docs/pools.md)."""

    queue: Annotated[float, Field(ge=0)] = 1.0  # fewer waiting + in-flight requests
    kv_cache: Annotated[float, Field(ge=0)] = 1.0  # more free KV cache
    prefix: Annotated[float, Field(ge=0)] = 2.0  # served this prompt's leading blocks recently


class PoolSettings(_Strict):
    """Endpoint picking for a provider with ``endpoints`` (a pool of model servers)."""

    scrape_interval_ms: Annotated[int, Field(ge=20, le=10_000)] = 150
    # Endpoints named by DNS: resolved this often; each address is a server (as Envoy's hosts are).
    dns_refresh_ms: Annotated[int, Field(ge=100)] = 5_000
    # Metrics older than this count as saturated (the Inference Extension's default).
    stale_after_ms: Annotated[int, Field(ge=50, le=60_000)] = 200
    # A server with requests that produced no token for this long is stalled: out until it does.
    stall_after_ms: Annotated[int, Field(ge=100)] = 2_000
    # A server is saturated at queue_limit waiting requests or kv_cache_limit KV use.
    queue_limit: Annotated[int, Field(ge=1)] = 8
    kv_cache_limit: Annotated[float, Field(gt=0, le=1)] = 0.9
    # A server that preempted requests (vLLM's num_preemptions_total rose: its KV cache ran out
    # mid-decode, it is thrashing) counts as at its KV limit for this long (0: never).
    preemption_hold_ms: Annotated[int, Field(ge=0)] = 10_000
    # The pool is saturated when its servers' mean max(queue/queue_limit, kv/kv_cache_limit)
    # reaches this: interactive requests go to the next tier, batch ones get a 429.
    saturation: Annotated[float, Field(gt=0, le=10)] = 1.0
    # Prefix affinity: prompt blocks remembered (least recently used out first).
    affinity_entries: Annotated[int, Field(ge=16)] = 100_000
    weights: PoolWeights = PoolWeights()
    # How the first server is chosen: "scored" (the weighted scorers above), or the baselines
    # "round_robin" and "random" that ignore load and prefixes (for benchmarks and A/B tests).
    # Backpressure (saturation, spill-over, shedding) applies to all three.
    picker: Literal["scored", "round_robin", "random"] = "scored"
    # What one server (all its GPUs) costs per hour: the gateway reports the pool's cost and, from
    # the servers' own generated-token counters, its cost per million output tokens (metrics).
    gpu_hour_usd: Annotated[float, Field(ge=0)] | None = None
    # The pool's TTFT p90 (a model's ``slo``) is read from the servers' own TTFT histograms over
    # this much recent time; with no first token in it, the pool counts as within any SLO.
    ttft_window_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 10_000


class Provider(_Strict):
    dialect: str
    base_url: str
    # A pool of self-hosted model servers (host:port each) speaking this dialect:
    # the gateway picks one per request (docs/pools.md). base_url then gives scheme
    # and path only (default http://<first endpoint>/v1).
    endpoints: (
        Annotated[
            list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.\-]+:\d{1,5}$")]], Field(min_length=1)
        ]
        | None
    ) = None
    pool: PoolSettings | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    # Compatible hosts differ in how they take the key (a header of their own)
    # and where the endpoint lives.
    auth_header: str | None = None
    chat_path: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Started by `llm-gateway up` (mock providers for local use and tests).
    mock: bool = False
    # Client request headers this provider may receive besides content-type and
    # accept (e.g. a beta-features header); every other client header is removed.
    forward_headers: list[str] = Field(default_factory=list)
    # Hold a stream's response until its first event, so an empty stream or one
    # that opens with an error (or a wrongly typed event) fails over. Costs a short
    # gRPC stream per streamed attempt; off: such streams reach the client as error events.
    guard_first_event: bool = True
    # Also judge non-streamed answers that look fine from their headers (JSON of a
    # declared length): error objects, wrong types and JSON cut short then fail over
    # too. Costs a gRPC stream and two messages per non-streamed request (README "Failover").
    check_every_answer: bool = False
    connect_timeout_ms: Annotated[int, Field(ge=1)] = 5_000
    # A bearer token instead of an API key (any dialect; see OAuth).
    oauth: OAuth | None = None
    # Top-level request fields this host rejects, removed from every body sent to it
    # (e.g. a host that refuses the option asking for usage in streams).
    drop_fields: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    # Cloud settings, taken by the dialects that list them (Dialect.provider_fields).
    gcp_project: PathSegment | None = None
    gcp_location: PathSegment | None = None
    gcp_credentials_file: str | None = None  # unset: application default credentials
    api_version: PathSegment | None = None
    # Providers that sign with AWS credentials (their dialect's ``provider_fields``):
    # the region signed for, and the shared-config profile whose credentials sign
    # (default: the standard chain: environment, web identity, shared files, instance role).
    aws_region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")] | None = None
    aws_profile: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pool_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("endpoints") and "base_url" not in data:
            eps = data["endpoints"]
            if isinstance(eps, list) and eps and isinstance(eps[0], str):
                return {**data, "base_url": f"http://{eps[0]}/v1"}
        return data

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, v: str) -> str:
        if v not in DIALECTS:
            names = [f"'{n}'" for n in DIALECTS]
            expected = " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return v.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.lower() in _SECRET_HEADERS:
                raise ValueError(f"'{key}' carries a credential: use api_key_env or api_key_file")
        return v

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            low = name.lower()
            if not _HEADER_NAME.match(low):
                raise ValueError(f"'{name}' is not a header name")
            if low in _SECRET_HEADERS or low in CLIENT_KEY_HEADERS:
                raise ValueError(f"'{name}' carries a credential: a client's never reaches a provider")
            if low in MANAGED_HEADERS or low in CREDENTIAL_HEADERS or low.startswith("x-gw-"):
                raise ValueError(f"'{name}' is set by the gateway or Envoy, not forwarded")
            out.append(low)
        return out

    @cached_property
    def url(self):
        return urlsplit(self.base_url)

    @property
    def host(self) -> str:
        return self.url.hostname or ""

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.tls else 80)

    @property
    def tls(self) -> bool:
        return self.url.scheme == "https"

    @property
    def base_path(self) -> str:
        return self.url.path.rstrip("/")


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class ReasoningSettings(_Strict):
    """What a backend model accepts for reasoning (docs/reasoning.md "Per-backend config"):
    the style its dialect is sent (default: the dialect's own), the efforts it takes (others are
    a 400 in the client's dialect), and overrides of the effort -> budget / level table."""

    style: Literal["budget", "adaptive", "level", "effort"] | None = None
    efforts: list[Effort] | None = None
    budgets: dict[Effort, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    levels: dict[Effort, Annotated[str, StringConstraints(min_length=1, max_length=32)]] = Field(
        default_factory=dict
    )
    min_budget: Annotated[int, Field(ge=0)] | None = None
    max_budget: Annotated[int, Field(ge=1)] | None = None


class Backend(_Strict):
    provider: Name
    # Upstream model name; defaults to the client-facing model name.
    model: str | None = None
    # Unique name in metrics, logs and the x-gateway-backend header.
    name: Name | None = None
    # Failover tier (0 first). Defaults to the backend's position in the list.
    tier: Annotated[int, Field(ge=0, le=100)] | None = None
    weight: Annotated[int, Field(ge=1, le=1000)] = 1
    # The provider's real limits for this deployment (admission, see README "Budgets").
    limits: BackendLimits | None = None
    # USD per million tokens, for tenants' daily spend budgets (default: the catalog's price).
    price: Price | None = None
    # The model's limits, laid over its entry in the capability catalog (docs/catalog.md).
    capabilities: CapabilityOverrides | None = None
    # What this backend model accepts for reasoning (default: what its dialect takes).
    reasoning: ReasoningSettings | None = None


class Slo(_Strict):
    """What a backend must deliver to be preferred for its price (``prefer: cheapest``)."""

    # Time to first token, 90th percentile: as a pool's servers measure it (over the pool's
    # ttft_window_ms), for an API backend as the gateway measures its streamed answers (docs/pools.md).
    ttft_p90_ms: Annotated[int, Field(ge=1)]
    # The window of an API backend's measured first-token times.
    window_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 10_000


class Model(_Strict):
    backends: Annotated[list[Backend], Field(min_length=1)]
    # Among backends sharing a tier: "weight" (a weighted draw, as Envoy splits) or "cheapest":
    # the lowest price per million output tokens first (an API backend's price, a pool's measured
    # cost), as long as it meets ``slo``; the others follow (docs/pools.md "Cost-aware routing").
    prefer: Literal["weight", "cheapest"] = "weight"
    slo: Slo | None = None
    # What the model does: "chat" (chat completions, messages, generateContent, responses) or
    # "embedding" (embeddings endpoints only); every backend's dialect must serve it (README "Embeddings").
    kind: Literal["chat", "embedding"] = "chat"
    # Some dialects require max tokens; used when the client gives none.
    default_max_tokens: Annotated[int, Field(ge=1)] = 4096
    # Drop fields the backend's dialect cannot express instead of refusing them.
    drop_unsupported: bool = False
    # Place prompt-cache breakpoints (tools, system prompt, last stable turns) on requests from
    # dialects that cannot mark them, towards backends with explicit caching (docs/caching.md).
    auto_cache: bool = False
    # Number of retries across backends; default: one per extra backend.
    retries: Annotated[int, Field(ge=0, le=10)] | None = None
    # Per attempt, non-streamed: the whole response (0: unbounded).
    per_try_timeout_ms: Annotated[int, Field(ge=0)] = 120_000
    # Streamed: time to the first event, and between two events (0: unbounded).
    per_try_idle_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    # Streamed: the whole stream, from the request's arrival (0: unbounded).
    max_stream_duration_ms: Annotated[int, Field(ge=0)] = 1_800_000
    # Hedging: if an attempt has not answered within this many ms, race the
    # next tier; the first response wins and the other attempt is cancelled.
    hedge_after_ms: Annotated[int, Field(ge=1)] | None = None
    # Output tokens reserved at admission when the client sets no max tokens
    # (default: default_max_tokens).
    reserve_output_tokens: Annotated[int, Field(ge=1)] | None = None


class ApiKey(_Strict):
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    env: str | None = None


Priority = Literal["interactive", "batch"]
PositiveInt = Annotated[int, Field(ge=1)]


class TenantLimits(_Strict):
    """A tenant's budgets; an unset one is unlimited."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None  # input + output
    concurrent_requests: PositiveInt | None = None
    spend_per_day_usd: Annotated[float, Field(gt=0)] | None = None
    # How much of the per-minute budgets a burst may use at once, in seconds of
    # budget (default: the whole minute). 2 lets a tenant at its steady rate
    # through but holds a sudden burst to that rate.
    burst_seconds: Annotated[float, Field(gt=0, le=60)] | None = None


class Tenant(_Strict):
    api_keys: Annotated[list[ApiKey], Field(min_length=1)]
    limits: TenantLimits | None = None
    # Priority of requests without an x-priority header, and the highest one the tenant may ask for.
    priority: Priority = "interactive"
    max_priority: Priority = "interactive"


class Price(_Strict):
    """USD per million tokens."""

    input: Annotated[float, Field(ge=0)] = 0.0
    cached_input: Annotated[float, Field(ge=0)] | None = None  # cache reads; default: the input price
    cache_write: Annotated[float, Field(ge=0)] | None = None  # cache writes; default: the input price
    output: Annotated[float, Field(ge=0)] = 0.0


class Adaptive(_Strict):
    """AIMD concurrency limit: shrinks on 429/503/slow answers, grows on success."""

    min: PositiveInt = 1
    max: PositiveInt = 64
    initial: PositiveInt | None = None  # default: max
    decrease: Annotated[float, Field(gt=0, lt=1)] = 0.5  # limit *= decrease on an overload signal
    increase: Annotated[float, Field(gt=0)] = 1.0  # limit += increase / limit per success
    # A success slower than this many times the backend's baseline latency counts as overload.
    latency_tolerance: Annotated[float, Field(gt=1)] | None = None


class BackendLimits(_Strict):
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    concurrent_requests: PositiveInt | None = None
    adaptive: Adaptive | None = None


class Admission(_Strict):
    # Share of each backend limit kept for interactive traffic: batch is shed first.
    interactive_reserve: Annotated[float, Field(ge=0, lt=1)] = 0.2
    # A concurrency slot whose holder vanished (crashed replica) frees itself after this long.
    lease_ttl_s: Annotated[float, Field(gt=0)] = 900.0
    # Retry-After when a concurrency limit is full (when a slot frees up cannot be known).
    concurrency_retry_after_s: Annotated[float, Field(gt=0)] = 1.0


class RedisSettings(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: Name = "llmgw"
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 500
    pool_size: Annotated[int, Field(ge=1, le=1024)] = 16  # connections per ext_proc process
    # Redis unreachable: admit against this process's own budgets, or refuse with 503.
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    # While Redis is down, try it again this often (requests in between do not wait for it).
    retry_interval_s: Annotated[float, Field(gt=0)] = 1.0

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v


class Tracing(_Strict):
    """OpenTelemetry traces, exported by Envoy's own tracer (README "Traces").
    Absent: nothing is rendered and the ext_proc adds nothing, so tracing off costs nothing."""

    # An OTLP/gRPC collector, e.g. an OpenTelemetry Collector's port 4317.
    otlp_endpoint: Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$", max_length=259),
    ]
    # Share of requests traced; a client's traceparent decides for its own trace.
    sampling_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    service_name: Name = "llm-gateway"

    @property
    def host(self) -> str:
        return self.otlp_endpoint.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.otlp_endpoint.rpartition(":")[2])

    @field_validator("otlp_endpoint")
    @classmethod
    def _port(cls, v: str) -> str:
        if not 0 < int(v.rpartition(":")[2]) <= 65535:
            raise ValueError("the port must be 1 to 65535")
        return v


class Conversations(_Strict):
    """Conversation state the gateway keeps for stateful client APIs (README "Stored
    responses"): in Redis when ``redis:`` is set, else in each ext_proc process."""

    ttl_s: Annotated[float, Field(gt=0)] = 86_400.0  # a stored answer can be continued for a day
    # In-process store only: at most this many entries and bytes (least recently used out first).
    max_entries: Annotated[int, Field(ge=1)] = 10_000
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 2**20
    # One stored conversation (every item of it); a longer one cannot be continued (400).
    max_conversation_bytes: Annotated[int, Field(ge=1024)] = 8 * 2**20


class CatalogSettings(_Strict):
    """The model capability catalog (docs/catalog.md): when ``check`` and ``status`` warn."""

    # Warn about a backend whose model retires within this many days (or has retired).
    retirement_warning_days: Annotated[int, Field(ge=0, le=3650)] = catalog.DEFAULT_WARNING_DAYS


class ReasoningSeal(_Strict):
    """The per-deployment secret that seals reasoning signatures for clients (docs/reasoning.md):
    the environment variable holding it. Unset: derived from the provider and tenant keys the
    gateway holds (every replica with the same secrets derives the same one)."""

    signing_key_env: str | None = None


class _Root(_Strict):
    listen: Listen = Listen()
    admin: Endpoint = Endpoint(port=9901)
    ext_proc: ExtProcSettings = ExtProcSettings()
    providers: Annotated[dict[Name, Provider], Field(min_length=1)]
    models: Annotated[dict[Name, Model], Field(min_length=1)]
    tenants: dict[Name, Tenant] = Field(default_factory=dict)
    admission: Admission = Admission()
    redis: RedisSettings | None = None
    tracing: Tracing | None = None
    conversations: Conversations = Conversations()
    catalog: CatalogSettings = CatalogSettings()
    reasoning: ReasoningSeal = ReasoningSeal()


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    """A backend with everything the data path needs, resolved once at load:
    its name, upstream model, failover place, limits and price (a backend that
    serves several models declares limits and price once, or identically)."""

    name: str
    provider_name: str
    provider: Provider
    upstream_model: str
    tier: int
    weight: int
    price: Price | None = None
    limits: BackendLimits | None = None
    # What its model accepts (catalog + config ``capabilities:``); None: unknown, nothing limited.
    caps: ModelCaps | None = None
    reasoning: ReasoningSettings | None = None

    @property
    def dialect(self) -> str:
        return self.provider.dialect

    @property
    def budgeted(self) -> bool:
        """Does admission check this backend's quotas?"""
        lim = self.limits
        return lim is not None and bool(
            lim.requests_per_minute or lim.tokens_per_minute or lim.concurrent_requests or lim.adaptive
        )


class GatewayConfig:
    """Validated configuration plus the lookups the data path uses."""

    def __init__(self, root: _Root, source: str, text: str = ""):
        self.root = root
        self.source = source
        self.text = text
        # Identifies this config in Envoy resources during a live switch.
        self.version = hashlib.sha256(text.encode()).hexdigest()[:12]
        self.listen = root.listen
        self.admin = root.admin
        self.ext_proc = root.ext_proc
        self.providers = root.providers
        self.models = root.models
        self.tenants = root.tenants
        self.admission = root.admission
        self.redis = root.redis
        self.tracing = root.tracing
        self.conversations = root.conversations
        self.catalog = root.catalog
        # A backend's limits and price are one fact each, declared once (or
        # identically, checked by admission.checks) in any model it serves.
        facts: dict[str, dict[str, Any]] = {}
        for model_name, model in root.models.items():
            for b in model.backends:
                found = facts.setdefault(backend_name(model_name, b.provider, b.model, b.name), {})
                if b.price is not None:
                    found["price"] = b.price
                if b.limits is not None:
                    found["limits"] = b.limits
                if b.capabilities is not None:
                    found.setdefault("capabilities", b.capabilities)
                if b.reasoning is not None:
                    found["reasoning"] = b.reasoning
        # model name -> backends in failover order (tier, then list order)
        self.chains: dict[str, list[ResolvedBackend]] = {}
        self.backends: dict[str, ResolvedBackend] = {}
        for model_name, model in root.models.items():
            chain = []
            for i, b in enumerate(model.backends):
                name = backend_name(model_name, b.provider, b.model, b.name)
                known = dict(facts[name])
                provider = root.providers[b.provider]
                upstream = b.model or model_name
                caps = catalog.resolve(provider.dialect, upstream, known.pop("capabilities", None))
                if "price" not in known and caps is not None:
                    known["price"] = catalog_price(caps)
                rb = ResolvedBackend(
                    name=name,
                    provider_name=b.provider,
                    provider=provider,
                    upstream_model=upstream,
                    tier=b.tier if b.tier is not None else i,
                    weight=b.weight,
                    caps=caps,
                    **known,
                )
                chain.append(rb)
                self.backends[rb.name] = rb
            chain.sort(key=lambda r: r.tier)
            self.chains[model_name] = chain
        # model name -> its distinct tiers in failover order
        self.tiers: dict[str, list[int]] = {m: sorted({b.tier for b in c}) for m, c in self.chains.items()}
        # sha256 hex digest of a tenant API key -> tenant name
        self.key_digests: dict[str, str] = {}

    def cluster_name(self, model: str, entry: int = 0, lead: str | None = None) -> str:
        """Cluster of ``model`` whose attempts start at its ``entry``-th tier (on backend ``lead``
        of that tier, the tier's others next: ``leads``)."""
        if lead is not None:
            return f"model/{model}/from-tier-{self.tiers[model][entry]}/first/{lead}"
        return f"model/{model}" if entry == 0 else f"model/{model}/from-tier-{self.tiers[model][entry]}"

    def leads(self, model: str) -> list[ResolvedBackend]:
        """Backends whose requests start on a cluster of their own (their tier's other backends
        next), where the router stage, not Envoy's weighted split, chooses which goes first:
        those sharing a tier in a ``prefer: cheapest`` model (docs/pools.md "Cost-aware
        routing"), and those sharing a tier with a pool, whose picking and spill-over Envoy's
        split would otherwise overrule (a request the gateway sent to the API backend of a
        saturated pool's tier landed on the pool's servers)."""
        chain = self.chains[model]
        shared = [b for b in chain if sum(1 for c in chain if c.tier == b.tier) > 1]
        if self.models[model].prefer == "cheapest":
            return shared
        pooled = {b.tier for b in shared if b.provider.endpoints}
        return [b for b in shared if b.tier in pooled]

    def retries(self, model: str, entry: int = 0) -> int:
        """Retries for attempts starting at tier index ``entry``: one per further backend by default."""
        first_tier = self.tiers[model][entry]
        # A pool's servers are tried in turn before the next tier (docs/pools.md).
        remaining = (
            sum(len(b.provider.endpoints or ()) or 1 for b in self.chains[model] if b.tier >= first_tier) - 1
        )
        m = self.models[model]
        return min(m.retries, remaining) if m.retries is not None else remaining

    def extproc_ports(self) -> list[int]:
        return [self.ext_proc.port + i for i in range(self.ext_proc.workers)]

    def metrics_ports(self) -> list[int]:
        return [self.ext_proc.metrics_port + i for i in range(self.ext_proc.workers)]

    def mock_providers(self) -> dict[str, Provider]:
        return {n: p for n, p in self.providers.items() if p.mock}


def retirement_warnings(cfg: GatewayConfig, today: date | None = None) -> list[str]:
    """Backends whose model retires within ``catalog.retirement_warning_days`` or has retired
    (``llm-gateway check`` and ``status`` print them; the config stays valid)."""
    today = today or datetime.now(timezone.utc).date()
    window = cfg.catalog.retirement_warning_days
    out = []
    for b in cfg.backends.values():
        why = catalog.retirement_warning(b.caps, today, window)
        if why:
            out.append(f"backend '{b.name}': {why}")
    return out


def catalog_price(caps: ModelCaps) -> Price | None:
    """The catalog's price as a config price, when it knows both input and output (config prices win)."""
    p = caps.price
    if p is None or p.input is None or p.output is None:
        return None
    return Price(input=p.input, cached_input=p.cached_input, cache_write=p.cache_write, output=p.output)


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


# Provider fields that belong to some dialects only (cloud settings).


def _cost_check(model_name: str, model: dict[str, Any], providers: dict[str, Any]) -> list[str]:
    """``prefer: cheapest`` needs every pool's cost; an ``slo`` means nothing without it."""
    where = f"models.{model_name}"
    if model.get("prefer") != "cheapest":
        if model.get("slo") is not None:
            return [f"{where}.slo: applies only with prefer: cheapest"]
        return []
    backends = model.get("backends")
    problems = []
    for b in backends if isinstance(backends, list) else []:
        prov = _d(b).get("provider")
        p = _d(providers.get(prov)) if isinstance(prov, str) else {}
        if p.get("endpoints") and _d(p.get("pool")).get("gpu_hour_usd") is None:
            problems.append(
                f"{where}.prefer: cheapest needs the cost of pool '{prov}' "
                f"(providers.{prov}.pool.gpu_hour_usd)"
            )
    return problems


def _cross_check(data: dict[str, Any]) -> list[str]:
    """Checks across sections. Works on the raw data, tolerating malformed
    parts (pydantic reports those), so every problem is found in one pass."""
    problems: list[str] = []
    providers = _d(data.get("providers"))
    for model_name, model in _d(data.get("models")).items():
        seen: set[str] = set()
        backends = _d(model).get("backends")
        for i, b in enumerate(backends if isinstance(backends, list) else []):
            b = _d(b)
            where = f"models.{model_name}.backends[{i}]"
            prov = b.get("provider")
            if isinstance(prov, str) and providers and prov not in providers:
                known = ", ".join(sorted(map(str, providers)))
                problems.append(f"{where}.provider: unknown provider '{prov}' (known: {known})")
            name = backend_name(model_name, prov, b.get("model"), b.get("name"))
            like = _d(b.get("capabilities")).get("like")
            pdialect = _d(providers.get(prov)).get("dialect") if isinstance(prov, str) else None
            if (
                isinstance(like, str)
                and pdialect in DIALECTS
                and _d(b.get("capabilities")).get("catalog", True)
            ):
                family = DIALECTS[pdialect].catalog_family
                if catalog.shipped().find_any(family, like) is None:
                    problems.append(
                        f"{where}.capabilities.like: '{like}' is not in the model catalog for "
                        f"dialect '{pdialect}' (docs/catalog.md lists the known models)"
                    )
            if name in seen:
                problems.append(f"{where}: backend '{name}' appears twice in this model (give one a 'name')")
            seen.add(name)
            pdialect = (
                DIALECTS.get(_d(providers.get(prov)).get("dialect", "")) if isinstance(prov, str) else None
            )
            if _d(model).get("kind") == "embedding" and pdialect is not None and pdialect.embeddings is None:
                serving = ", ".join(sorted(n for n, d in DIALECTS.items() if d.embeddings is not None))
                problems.append(
                    f"{where}.provider: '{prov}' (dialect {pdialect.name}) has no embeddings endpoint the "
                    f"gateway can use; an embedding model's backends must all serve embeddings ({serving})"
                )
        problems += _cost_check(model_name, _d(model), providers)
    for pname, p in providers.items():
        p = _d(p)
        dialect = DIALECTS.get(p.get("dialect"))  # type: ignore[arg-type]
        has_key = bool(p.get("api_key_env") or p.get("api_key_file"))
        if dialect is not None and not dialect.needs_api_key:
            if has_key:
                problems.append(
                    f"providers.{pname}: providers of dialect '{dialect.name}' authenticate with "
                    "credentials of their own: remove api_key_env / api_key_file"
                )
        elif not has_key and not p.get("oauth") and not p.get("endpoints"):  # model servers may take none
            problems.append(f"providers.{pname}: needs api_key_env or api_key_file (keys are never inline)")
        if p.get("api_key_env") and p.get("api_key_file"):
            problems.append(f"providers.{pname}: set api_key_env or api_key_file, not both")
        if has_key and p.get("oauth"):
            problems.append(
                f"providers.{pname}: set an API key (api_key_env, api_key_file) or oauth, not both"
            )
        problems += _provider_field_problems(pname, p, dialect)
        if p.get("chat_path") and dialect is not None and not dialect.custom_path:
            custom = ", ".join(sorted(n for n, d in DIALECTS.items() if d.custom_path))
            problems.append(
                f"providers.{pname}.chat_path: only providers of dialect {custom} take a custom path"
            )
        if dialect is not None:
            problems += [f"providers.{pname}.{problem}" for problem in dialect.provider_problems(p)]
        if p.get("endpoints") is not None and dialect is not None and dialect is not DEFAULT:
            problems.append(f"providers.{pname}.endpoints: pools serve dialect '{DEFAULT.name}' only")
        if p.get("pool") is not None and not p.get("endpoints"):
            problems.append(f"providers.{pname}.pool: only a provider with endpoints is a pool")
    for tname, t in _d(data.get("tenants")).items():
        keys = _d(t).get("api_keys")
        for i, k in enumerate(keys if isinstance(keys, list) else []):
            k = _d(k)
            if bool(k.get("sha256")) == bool(k.get("env")):
                problems.append(f"tenants.{tname}.api_keys[{i}]: set exactly one of sha256 or env")
    from .admission.checks import config_problems  # admission's own rules; lazy: admission imports config

    problems += config_problems(data)
    ext = _d(data.get("ext_proc"))
    ports: dict[str, Any] = {
        "listen.port": _d(data.get("listen")).get("port", 8080),
        "admin.port": _d(data.get("admin")).get("port", 9901),
    }
    workers = ext.get("workers", 1)
    for i in range(workers if isinstance(workers, int) and 0 < workers <= 64 else 1):
        for key, default in (("port", 50051), ("metrics_port", 9464)):
            base = ext.get(key, default)
            if isinstance(base, int):
                ports[f"ext_proc.{key}" + (f" (worker {i})" if i else "")] = base + i
    owner: dict[Any, str] = {}
    for where, port in ports.items():
        if isinstance(port, int) and port and port in owner:
            problems.append(f"{where}: port {port} is already used by {owner[port]}")
        owner.setdefault(port, where)
    return problems


# provider field -> the dialects whose providers take it
_FIELD_OWNERS: dict[str, list[str]] = {
    f: [d.name for d in DIALECTS.values() if f in d.provider_fields]
    for f in dict.fromkeys(f for d in DIALECTS.values() for f in d.provider_fields)
}


def _provider_field_problems(pname: str, p: dict[str, Any], dialect: Dialect | None) -> list[str]:
    """Fields only some dialects' providers take (``Dialect.provider_fields``): set only
    there, and present where the dialect requires them."""
    problems = []
    for field, owners in _FIELD_OWNERS.items():
        if p.get(field) is not None and dialect is not None and field not in dialect.provider_fields:
            problems.append(
                f"providers.{pname}.{field}: only providers of dialect {', '.join(sorted(owners))} take it"
            )
    if dialect is not None:
        for field, required in dialect.provider_fields.items():
            if required and p.get(field) is None:
                problems.append(
                    f"providers.{pname}.{field}: required for providers of dialect '{dialect.name}'"
                )
    return problems


# libyaml's loader when PyYAML was built with it: a 4 MB config (20,000 tenants) took
# 17 s with the pure-Python loader and 5 s with this one on the same machine.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate YAML text; raises ``ConfigError`` listing every problem."""
    return build_config(load_yaml(text, source), text, source)


def load_yaml(text: str, source: str = "<config>") -> dict[str, Any]:
    """The YAML document as plain data (the slow half of ``parse_config`` on a
    big config: a worker runs it in a child process, ``config_reload``)."""
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or Python
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}invalid YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: (top level): expected a mapping of settings"])
    return data


def build_config(data: dict[str, Any], text: str, source: str = "<config>") -> GatewayConfig:
    """Validate parsed data (``load_yaml``); ``text`` is what it was parsed from."""
    problems: list[str] = []
    root = None
    tenants = data.get("tenants")
    sliced = isinstance(tenants, dict) and len(tenants) > TENANT_SLICE
    try:
        root = _Root.model_validate({**data, "tenants": {}} if sliced else data)
    except ValidationError as e:
        problems += _problems(e)
    if sliced:
        assert isinstance(tenants, dict)
        valid, tenant_problems = _validate_tenants(tenants)
        problems += tenant_problems
        if root is not None and not tenant_problems:
            root = root.model_copy(update={"tenants": valid})
    problems += _cross_check(data)
    if problems or root is None:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return GatewayConfig(root, source, text)


# Tenants are validated this many at a time: one validation call holds the
# interpreter lock throughout, and a worker validates a new config in a thread
# while its event loop serves requests (``config_reload``).
TENANT_SLICE = 1000
_TENANTS: TypeAdapter[dict[str, Tenant]] = TypeAdapter(dict[Name, Tenant])


def _validate_tenants(tenants: dict[Any, Any]) -> tuple[dict[str, Tenant], list[str]]:
    valid: dict[str, Tenant] = {}
    problems: list[str] = []
    items = list(tenants.items())
    for i in range(0, len(items), TENANT_SLICE):
        try:
            valid.update(_TENANTS.validate_python(dict(items[i : i + TENANT_SLICE])))
        except ValidationError as e:
            problems += _problems(e, ("tenants",))
    return valid, problems


def _problems(e: ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{_path((*prefix, *err['loc']))}: {'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}"
        for err in e.errors()
    ]


def load_config(path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    """Load and validate a config file (the embedded default when ``path`` is None)."""
    p = Path(path) if path else DEFAULT_CONFIG
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from None
    return parse_config(text, str(p))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def provider_key(name: str, p: Provider, env: Mapping[str, str] | None = None) -> str | None:
    """The provider's key, from its environment variable or file (None: it has none, e.g. a
    cloud identity or an ``oauth`` token)."""
    env = os.environ if env is None else env
    if not (p.api_key_env or p.api_key_file):
        return None
    if p.api_key_env:
        value = env.get(p.api_key_env)
        if not value:
            raise ConfigError(
                [f"providers.{name}.api_key_env: environment variable {p.api_key_env} is not set"]
            )
        return value.strip()
    assert p.api_key_file
    try:
        return Path(p.api_key_file).read_text().strip()
    except OSError as e:
        raise ConfigError(
            [f"providers.{name}.api_key_file: cannot read {p.api_key_file}: {e.strerror}"]
        ) from None


def token_sources(
    cfg: GatewayConfig, env: Mapping[str, str] | None = None
) -> dict[str, credentials.TokenSource]:
    """Provider name -> where its bearer tokens come from, for providers that use tokens.
    Raises ``ConfigError`` naming every provider whose credential cannot be read."""
    sources, problems = _token_sources(cfg, os.environ if env is None else env, load=False)
    if problems:
        raise ConfigError([f"{cfg.source}: {p}" for p in problems])
    return sources


def _token_sources(
    cfg: GatewayConfig, env: Mapping[str, str], load: bool
) -> tuple[dict[str, credentials.TokenSource], list[str]]:
    sources: dict[str, credentials.TokenSource] = {}
    problems: list[str] = []
    for name, p in cfg.providers.items():
        try:
            source = get_dialect(p.dialect).token_source(name, p, env)
            if source is not None:
                if load:
                    credentials.check(source)
                sources[name] = source
        except credentials.CredentialError as e:
            problems.append(f"providers.{name}: {e}")
    return sources, problems


def credential_problems(cfg: GatewayConfig) -> list[str]:
    """Load the credentials of providers that sign requests (``Dialect.load_credentials``);
    what is wrong, naming each provider. Their dialect keeps them fresh from then on."""
    problems = []
    for name, p in cfg.providers.items():
        dialect = get_dialect(p.dialect)
        if not dialect.needs_api_key:
            problem = dialect.load_credentials(p)
            if problem:
                problems.append(f"providers.{name}: {problem}")
    return problems


def resolve_secrets(cfg: GatewayConfig, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Provider name -> key (for providers with one; cloud credentials, signing or
    token-based, are loaded and checked here too); also fills ``cfg.key_digests`` from
    tenant keys.

    Raises ``ConfigError`` naming every missing secret at once.
    """
    env = os.environ if env is None else env
    keys: dict[str, str] = {}
    problems: list[str] = credential_problems(cfg)
    for name, p in cfg.providers.items():
        if not get_dialect(p.dialect).needs_api_key:
            continue  # signs or takes tokens with credentials of its own (loaded above)
        try:
            key = provider_key(name, p, env)
            if key is not None:
                keys[name] = key
        except ConfigError as e:
            problems += e.problems
    problems += _token_sources(cfg, env, load=True)[1]  # cloud credentials: loadable now, not at a request
    digests: dict[str, str] = {}
    for tname, t in cfg.tenants.items():
        for i, k in enumerate(t.api_keys):
            if k.sha256:
                digests[k.sha256] = tname
            elif k.env:
                value = env.get(k.env)
                if not value:
                    problems.append(
                        f"tenants.{tname}.api_keys[{i}].env: environment variable {k.env} is not set"
                    )
                else:
                    digests[key_digest(value.strip())] = tname
    if problems:
        raise ConfigError([f"{cfg.source}: {p}" for p in problems])
    cfg.key_digests = digests
    return keys
