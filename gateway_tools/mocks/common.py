"""What the mock providers share: the spec of a mock, the base server (``_Provider``) with
fault injection and request stats under ``/_mock/``, the deterministic replies (``_plan``)
and small helpers. The package docstring (``gateway_tools.mocks``) states the reply rules."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web

Dialect = Literal[
    "openai",
    "anthropic",
    "gemini",
    "openai_responses",
    "vertex_gemini",
    "vertex_anthropic",
    "azure_openai",
    "bedrock",
]

# 200s that are not answers, as broken providers and proxies send them: no body (an
# empty event stream for streams), a proxy's HTML page, the provider's error object,
# the reply cut in half but well framed (half the events, then a clean end), the
# reply with its first array made a number (_WRONG_TYPE_KEYS).
NON_ANSWERS = ("empty_200", "html_200", "error_object_200", "truncated_200", "wrong_types_200")
FAULT_MODES = (
    "ok",
    "down",
    "error",
    "rate_limit",
    "stall",
    "slow",
    "stream_cut",
    "stream_error",
    "stream_malformed",
    "headers_stall",
    "stream_stall",
    "trickle",
    "echo_key",
    *NON_ANSWERS,
)
_WRONG_TYPE_KEYS = {
    "openai": ("choices",),
    "azure_openai": ("choices",),
    "anthropic": ("content", "message"),
    "vertex_anthropic": ("content", "message"),
    "gemini": ("candidates",),
    "vertex_gemini": ("candidates",),
    "bedrock": ("output",),
}
_ALTER = web.RequestKey("mock_alter", str)  # a truncated_200 / wrong_types_200 reply is being written
# A 200 that goes wrong after its headers (the reply is the normal one):
# headers_stall sends the headers only; stream_stall the first half of the
# body (streams: of the events); trickle all of it, one byte every delay_ms.
# Each then waits like ``stall`` (trickle: until done) and drops the connection.
_BODY_FAULTS = ("headers_stall", "stream_stall", "trickle")

# stream_error: a 200 stream whose first event is the provider's in-band error
# (Anthropic sends overloaded_error this way), then the end of the stream.
# stream_malformed: a 200 stream whose first event is not well formed (SSE data that
# is not JSON; for binary framings, a frame whose checksum does not match).
_INBAND_ERRORS = {
    "anthropic": b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
    "openai": b'data: {"error": {"message": "The server is overloaded", "type": "server_error", "param": null, '
    b'"code": null}}\n\n',
    "gemini": b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\n\n',
}
# The fault mode applied to a request, for handlers that play a provider's quirks.
MOCK_MODE = web.RequestKey("mock_mode", str)
_STALL_LIMIT_S = 600.0  # a stalled request ends by then even if the client never gives up
_MAX_BODY = 32 * 1024 * 1024  # Anthropic's request limit; large enough for inline images
_JSON_CT = "application/json"
_SSE_CT = "text/event-stream"


@dataclass
class MockSpec:
    """One mock provider to start: its wire format, where it listens and the key it accepts.

    Providers that sign requests (AWS SigV4) verify signatures instead: ``api_key`` is
    then the secret access key of ``key_id`` (and ``session_token`` the token temporary
    credentials carry), and ``region`` the region signatures must be scoped to."""

    name: str
    dialect: Dialect
    port: int
    api_key: str  # "" when the provider has none (cloud identities)
    host: str = "127.0.0.1"
    # Cloud mocks: the service-account key whose tokens Vertex accepts, the OAuth client
    # Azure's token endpoint accepts, and the lifetime of the tokens they issue.
    credentials_file: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_ttl_s: float = 3600.0
    key_id: str | None = None
    session_token: str | None = None
    region: str | None = None
    # Bedrock: the role its STS (``mocks.sts``, ``POST /``) lets a web identity assume; the
    # credentials it issues live ``token_ttl_s`` seconds and are accepted until then.
    role_arn: str | None = None
    # Azure OpenAI: the deployments created on the resource (any other name is a 404
    # ``DeploymentNotFound``, as Azure answers it).
    deployments: tuple[str, ...] = ()


# --------------------------------------------------------------------------- helpers


class _Reject(Exception):
    """The error response the real provider would send for this request."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


_INVALID = object()  # marks a body that is not valid JSON


def _try_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _INVALID


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON_CT, headers=headers)


def _words(text: str) -> int:
    return len(text.split())


def _hex(n: int = 24) -> str:
    return secrets.token_hex(n // 2)


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _b62(n: int) -> str:
    return "".join(secrets.choice(_B62) for _ in range(n))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _b64_ok(data: str) -> bool:
    """Whether ``data`` is base64 (standard or URL-safe alphabet, padding optional)."""
    std = data.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _drop_connection(request: web.BaseRequest) -> None:
    """Close the TCP connection under a request; aiohttp then skips writing any response."""
    transport = request.transport
    if transport is not None:
        transport.close()


# --------------------------------------------------------------------------- deterministic replies


@dataclass
class _Convo:
    """What a mock needs from a request to plan its reply, in dialect-neutral terms."""

    model: str
    input_tokens: int
    user_text: str  # text parts of the last user turn, joined with a space
    tool_results: list[str] | None  # set when the conversation ends with tool results
    tool_names: list[str]  # declared function tools, in order
    choice: str = "auto"  # "auto" | "none" | "any" (a call is forced)
    forced_name: str | None = None  # the tool a forced call must use
    max_tokens: int | None = None
    stops: list[str] = field(default_factory=list)
    # Structured output asked for: a JSON schema ({} for "any JSON object").
    json_schema: dict[str, Any] | None = None
    # The declared tools' parameter schemas by name, so calls carry arguments that conform.
    tool_schemas: dict[str, Any] = field(default_factory=dict)
    parallel: bool = True  # whether several calls may come in one turn (``use all tools``)
    thinking: bool = False  # the request turned the model's thinking on
    show_thoughts: bool = False  # the client asked to see the model's thinking


# Prompt markers that select what the mocks produce (see the package docstring).
ALL_TOOLS_MARKER = "use all tools"  # one call per declared tool (parallel tool calls)
REFUSAL_MARKER = "refuse"  # the provider's refusal instead of an answer


@dataclass
class _Reply:
    """The planned reply: words of text, or tool calls (``tool_name``/``tool_args`` is the first)."""

    words: list[str]
    finish: str  # "stop" | "length" | "stop_sequence" | "tool" | "refusal"
    stop_sequence: str | None = None
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def output_tokens(self) -> int:
        return len(self.calls) if self.finish == "tool" else len(self.words)

    def pieces(self) -> list[str]:
        """One streamed delta per word; joined they equal ``text``."""
        return [w if i == 0 else " " + w for i, w in enumerate(self.words)]


def _plan(provider: str, c: _Convo) -> _Reply:
    """Decide the reply from the request alone, so tests can predict it exactly."""
    prefix = f"[{provider}:{c.model}]"
    said = c.user_text.lstrip()
    if c.tool_results is not None:
        full = f"{prefix} tool result: {' '.join(c.tool_results)}"
    else:
        if said.startswith(REFUSAL_MARKER):
            return _Reply(f"I can't help with that: {said}".split(), "refusal")
        if c.tool_names and c.choice != "none":
            every = said.startswith(ALL_TOOLS_MARKER) and c.parallel and c.forced_name is None
            if every or c.choice == "any" or said.startswith("use tool"):
                names = c.tool_names if every else [c.forced_name or c.tool_names[0]]
                calls = [(n, _tool_args(c.tool_schemas.get(n), c.user_text)) for n in names]
                return _Reply([], "tool", tool_name=calls[0][0], tool_args=calls[0][1], calls=calls)
        full = f"{prefix} {c.user_text}"
    if c.json_schema is not None:
        full = orjson.dumps(_instance(c.json_schema, full, c.json_schema)).decode()
    words = full.split()
    finish, seq = "stop", None
    stops = [s for s in c.stops if s]
    if stops:
        text = " ".join(words)
        hits = [(text.find(s), s) for s in stops if s in text]
        if hits:
            idx, seq = min(hits)
            words = text[:idx].split()
            finish = "stop_sequence"
    if c.max_tokens is not None and len(words) > c.max_tokens:
        words = words[: c.max_tokens]
        finish, seq = "length", None
    return _Reply(words, finish, stop_sequence=seq)


def _tool_args(schema: Any, text: str) -> dict[str, Any]:
    """Minimal arguments a tool's JSON schema accepts, so clients that validate calls against it
    (the OpenAI Agents SDK, pydantic-based frameworks) take them: the required properties (all
    declared ones when none are required) with type-correct values, strings being the last user
    text. A schema that declares no properties and allows others gets ``{"echo": <text>}``."""
    if not isinstance(schema, dict) or (
        not schema.get("properties") and schema.get("additionalProperties") is not False
    ):
        return {"echo": text}
    args = _instance(schema, text, schema, minimal=True)
    return args if isinstance(args, dict) else {"echo": text}


_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}


def _instance(schema: Any, text: str, root: dict[str, Any], depth: int = 0, minimal: bool = False) -> Any:
    """A deterministic JSON value matching ``schema``: strings are the reply text, numbers
    its word count, the first of any enum or union ("any JSON object" is ``{"text": ...}``)."""
    if not isinstance(schema, dict) or depth > 16:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return _instance(target, text, root, depth + 1, minimal)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for union in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(union), list) and schema[union]:
            return _instance(schema[union][0], text, root, depth + 1, minimal)
    t = schema.get("type")
    t = (t[0] if t else None) if isinstance(t, list) else t
    t = t.lower() if isinstance(t, str) else t
    props = schema.get("properties")
    if t == "object" or isinstance(props, dict):
        if not props:
            return {} if minimal else {"text": text}
        required = [k for k in schema.get("required") or [] if k in props]
        keys = required if minimal and required else list(props)
        return {k: _instance(props[k], text, root, depth + 1, minimal) for k in keys}
    if t == "array":
        lo = schema.get("minItems") if _is_int(schema.get("minItems")) else 0
        hi = schema.get("maxItems") if _is_int(schema.get("maxItems")) else None
        count = max(lo, 1) if hi is None else min(max(lo, 1), hi)
        return [_instance(schema.get("items"), text, root, depth + 1, minimal) for _ in range(count)]
    if t in ("integer", "number"):
        v: float = len(text.split())
        for bound, pick in (
            ("minimum", max),
            ("exclusiveMinimum", max),
            ("maximum", min),
            ("exclusiveMaximum", min),
        ):
            b = schema.get(bound)
            if _is_num(b):
                step = 0 if bound in ("minimum", "maximum") else (1 if pick is max else -1)
                v = pick(v, b + step)
        return int(v) if t == "integer" else float(v)
    if t == "boolean":
        return True
    if t == "null":
        return None
    fmt = schema.get("format")
    out = _FORMATS.get(fmt, text) if isinstance(fmt, str) else text
    if _is_int(schema.get("maxLength")):
        out = out[: schema["maxLength"]]
    if _is_int(schema.get("minLength")) and len(out) < schema["minLength"]:
        out = out + "x" * (schema["minLength"] - len(out))
    return out


class _PrefixCache:
    """Automatic prompt caching as OpenAI and Gemini do it: a prompt of at least ``minimum``
    tokens is cached in ``step``-token increments of its prefix, and a later prompt sharing one of
    those prefixes within ``ttl_s`` reads it (OpenAI, "Prompt caching": 1024 tokens minimum, hits
    in 128-token increments; Gemini, "Context caching", implicit caching). Words stand for tokens."""

    def __init__(self, minimum: int = 1024, step: int = 128, ttl_s: float = 300.0) -> None:
        self.minimum, self.step, self.ttl_s = minimum, step, ttl_s
        self.entries: dict[str, float] = {}

    def hit(self, model: str, words: list[str]) -> int:
        """Tokens of ``words`` read from the cache; stores this prompt's prefixes for later."""
        now = time.monotonic()
        self.entries = {k: exp for k, exp in self.entries.items() if exp > now}
        read = 0
        digest = hashlib.sha256(model.encode())
        done = 0
        for n in range(self.minimum, len(words) + 1, self.step):
            digest.update((" ".join(words[done:n]) + " ").encode())
            done = n
            key = digest.copy().hexdigest()
            if key in self.entries:
                read = n
            self.entries[key] = now + self.ttl_s
        return read


# --------------------------------------------------------------------------- faults and stats


@dataclass
class _Fault:
    """The active fault of one mock server."""

    mode: str = "ok"
    status: int = 500
    retry_after: float = 1.0
    delay_ms: int = 1000
    rate: float = 1.0
    message: str | None = None
    acc: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "rate": self.rate,
            **({"message": self.message} if self.message else {}),
        }

    def hits(self) -> bool:
        """Whether this request is affected: an accumulator, so rate 0.5 hits exactly every other one."""
        if self.mode == "ok" or self.rate <= 0:
            return False
        self.acc += self.rate
        if self.acc >= 1.0 - 1e-9:
            self.acc -= 1.0
            return True
        return False


def _parse_fault(body: Any, modes: tuple[str, ...] = FAULT_MODES) -> _Fault:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    mode = body.get("mode")
    if mode not in modes:
        raise ValueError(f"mode must be one of {', '.join(modes)}")
    unknown = set(body) - {"mode", "status", "retry_after", "delay_ms", "rate", "message"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    f = _Fault(mode=mode, status={"rate_limit": 429, "echo_key": 401}.get(mode, 500))
    if body.get("status") is not None:
        if not _is_int(body["status"]) or not 400 <= body["status"] <= 599:
            raise ValueError("status must be an integer 400-599")
        if mode != "rate_limit":
            f.status = body["status"]
    if body.get("retry_after") is not None:
        if not _is_num(body["retry_after"]) or body["retry_after"] < 0:
            raise ValueError("retry_after must be a non-negative number")
        f.retry_after = body["retry_after"]
    if body.get("delay_ms") is not None:
        if not _is_num(body["delay_ms"]) or body["delay_ms"] < 0:
            raise ValueError("delay_ms must be a non-negative number")
        f.delay_ms = int(body["delay_ms"])
    if body.get("rate") is not None:
        if not _is_num(body["rate"]) or not 0 <= body["rate"] <= 1:
            raise ValueError("rate must be a number 0-1")
        f.rate = float(body["rate"])
    if body.get("message") is not None:
        if not isinstance(body["message"], str) or not body["message"]:
            raise ValueError("message must be a non-empty string")
        f.message = body["message"]
    return f


@dataclass
class _Stats:
    """Counts of one mock server's model-endpoint requests."""

    requests: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    faulted: int = 0
    streamed: int = 0
    last_request: dict[str, Any] | None = None
    # the status and headers of the last answer (what a gateway must not pass on is checked on them)
    last_response: dict[str, Any] | None = None
    tool_call_ids: list[str] = field(default_factory=list)

    def as_json(self, stalling: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_model": self.by_model,
            "by_status": self.by_status,
            "faulted": self.faulted,
            "streamed": self.streamed,
            "stalling": stalling,
            "last_request": self.last_request,
            "last_response": self.last_response,
            "tool_call_ids": self.tool_call_ids,
        }


_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-goog-api-key", "api-key", "x-amz-security-token"}
)


def _received_key(request: web.BaseRequest) -> str:
    """The credential a request carried, as sent (``echo_key`` quotes it back)."""
    for name in sorted(_SECRET_HEADERS):
        value = request.headers.get(name)
        if value:
            scheme, sep, rest = value.partition(" ")
            return rest.strip() if sep and scheme.lower() == "bearer" else value
    return request.query.get("key", "")


def _wrong_types(dialect: str, data: bytes) -> bytes:
    """A JSON reply (or one SSE event's data line) with the first of the dialect's key arrays made a number."""
    prefix, sep, payload = (
        data.partition(b"data: ") if data.startswith((b"data: ", b"event: ")) else (b"", b"", data)
    )
    end = payload.find(b"\n")
    try:
        obj = orjson.loads(payload if end < 0 else payload[:end])
    except orjson.JSONDecodeError:  # not one JSON value (a JSON-array stream's piece): left alone
        return data
    if not isinstance(obj, dict):
        return data
    key = next((k for k in _WRONG_TYPE_KEYS.get(dialect, ()) if k in obj), None)
    if key is not None:
        obj[key] = 1.5
    return prefix + sep + orjson.dumps(obj) + (b"" if end < 0 else payload[end:])


def _redact_header(name: str, value: str) -> str:
    if name.lower() not in _SECRET_HEADERS:
        return value
    scheme, sep, _ = value.partition(" ")
    return f"{scheme} ***" if sep and scheme.lower() == "bearer" else "***"


# --------------------------------------------------------------------------- server base

_Handler = Callable[[web.Request, Any, bool], Awaitable[web.StreamResponse]]


class _Provider:
    """One mock server: routing, fault injection and stats common to all dialects."""

    dialect: ClassVar[str] = ""
    #: fault modes of this provider only (a compatible host's quirks), read by its handlers
    #: from ``request[MOCK_MODE]``
    quirks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: MockSpec) -> None:
        self.spec = spec
        self.fault = _Fault()
        self.stats = _Stats()
        self.stalling = 0
        self.closing = asyncio.Event()
        self.body_faults: dict[int, str] = {}  # id(request) -> its body fault, for send_stream

    # dialect hooks ---------------------------------------------------------
    def routes(self) -> list[tuple[str, str, _Handler]]:
        raise NotImplementedError

    def model_of(self, request: web.Request, body: Any) -> str | None:
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            return body["model"]
        return None

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def issue_id(self, tool_call_id: str) -> str:
        """Record a tool-call id this server hands out (see ``tool_call_ids`` in the stats)."""
        self.stats.tool_call_ids.append(tool_call_id)
        return tool_call_id

    def auth_state(self, request: web.Request) -> str:
        raise NotImplementedError

    def fault_error(self, status: int) -> _Reject:
        raise NotImplementedError

    def rate_limit_error(self, retry_after: float) -> _Reject:
        raise NotImplementedError

    def too_large(self) -> _Reject:
        raise NotImplementedError

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise NotImplementedError

    def extra_headers(self) -> dict[str, str]:
        return {}

    #: the content type of this provider's streams
    stream_content_type: ClassVar[str] = _SSE_CT

    def inband_error(self, request: web.Request, status: int) -> bytes:
        """The first event of a ``stream_error`` stream: the provider's in-band error."""
        return _INBAND_ERRORS[self.dialect]

    def malformed_event(self) -> bytes:
        """The first event of a ``stream_malformed`` stream."""
        return b"data: {not json\n\n"

    def with_message(self, err: _Reject, message: str) -> None:
        """Put a fault's ``message`` into an error body of this provider's shape."""
        err.body["error"]["message"] = message

    def admin_routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """Routes outside fault injection and stats (a cloud mock's token endpoint)."""
        return []

    # app -------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/_mock/faults", self._faults_endpoint)
        app.router.add_route("*", "/_mock/stats", self._stats_endpoint)
        for method, path, admin in self.admin_routes():
            app.router.add_route(method, path, admin)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, self._wrap(handler))
        app.router.add_route("*", "/{tail:.*}", self._wrap(self.not_found))
        return app

    def _wrap(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, handler)

        return serve

    async def _serve(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Count the request, apply the active fault, else let the dialect answer it."""
        too_large = False
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw, too_large = b"", True
        body = _try_json(raw)
        st = self.stats
        st.requests += 1
        model = self.model_of(request, body)
        if model:
            st.by_model[model] = st.by_model.get(model, 0) + 1
        if self.is_stream(request, body):
            st.streamed += 1
        st.last_request = {
            "method": request.method,
            "path": request.path,
            "query": {str(k): ("***" if k == "key" else v) for k, v in request.query.items()},
            "headers": {str(k): _redact_header(k, v) for k, v in request.headers.items()},
            "auth": self.auth_state(request),
            "body": (raw.decode("utf-8", "replace") if body is _INVALID else body),
        }
        f = self.fault
        mode = f.mode if f.hits() else "ok"
        request[MOCK_MODE] = mode
        if mode != "ok":
            st.faulted += 1
        if mode == "down":
            _drop_connection(request)
            return web.Response()  # never written: the transport is gone
        if mode == "stall":
            await self._stall(request)
            _drop_connection(request)
            return web.Response()
        resp: web.StreamResponse
        if mode in _BODY_FAULTS:
            self.body_faults[id(request)] = mode
        try:
            if mode in ("error", "echo_key"):
                err = self.fault_error(f.status)
                if mode == "echo_key":  # like a provider that quotes the key it rejects
                    self.with_message(err, f"Incorrect API key provided: {_received_key(request)}")
                elif f.message:
                    self.with_message(err, f.message)
                raise err
            if mode == "rate_limit":
                raise self.rate_limit_error(f.retry_after)
            if too_large:
                raise self.too_large()
            if mode == "slow":
                await asyncio.sleep(f.delay_ms / 1000)
            if mode == "stream_error" and self.is_stream(request, body):
                resp = await self.send_stream(
                    request,
                    [self.inband_error(request, f.status)],
                    False,
                    content_type=self.stream_content_type,
                )
            elif mode == "stream_malformed" and self.is_stream(request, body):
                resp = await self.send_stream(
                    request, [self.malformed_event()], False, content_type=self.stream_content_type
                )
            elif mode == "empty_200":
                resp = (
                    await self.send_stream(request, [], False, content_type=self.stream_content_type)
                    if self.is_stream(request, body)
                    else web.Response(content_type=_JSON_CT)
                )
            elif mode == "html_200":
                resp = web.Response(
                    text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
                )
            elif mode == "error_object_200":
                resp = _json_response(200, self.fault_error(500).body)
            else:
                if mode in ("truncated_200", "wrong_types_200"):
                    request[_ALTER] = mode  # read by send_stream for streamed replies
                resp = await handler(request, body, mode == "stream_cut")
                if (
                    mode in ("truncated_200", "wrong_types_200")
                    and isinstance(resp, web.Response)
                    and resp.status == 200
                    and isinstance(resp.body, bytes)
                ):
                    resp.body = (
                        resp.body[: len(resp.body) // 2]
                        if mode == "truncated_200"
                        else _wrong_types(self.dialect, resp.body)
                    )
        except _Reject as r:
            resp = _json_response(r.status, r.body, {**self.extra_headers(), **r.headers})
        finally:
            self.body_faults.pop(id(request), None)
        if (
            mode == "stream_cut"
            and not resp.prepared
            and resp.status == 200
            and isinstance(resp, web.Response)
        ):
            resp = await self._cut_body(request, resp)
        elif (
            mode in _BODY_FAULTS
            and not resp.prepared
            and resp.status == 200
            and isinstance(resp, web.Response)
        ):
            body = resp.body if isinstance(resp.body, bytes) else b""
            out = web.StreamResponse(status=200, headers=resp.headers)
            out.content_length = len(body)
            resp = await self._misbehave(request, out, [body[: len(body) // 2], body[len(body) // 2 :]], mode)
        key = str(resp.status)
        st.by_status[key] = st.by_status.get(key, 0) + 1
        st.last_response = {"status": resp.status, "headers": {k.lower(): v for k, v in resp.headers.items()}}
        return resp

    async def _stall(self, request: web.Request) -> None:
        """Send nothing until the client leaves, the server stops, or the stall limit passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STALL_LIMIT_S
        self.stalling += 1
        try:
            while not self.closing.is_set() and loop.time() < deadline:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), 0.2)
        finally:
            self.stalling -= 1

    async def _cut_body(self, request: web.Request, full: web.Response) -> web.StreamResponse:
        """Send the headers and half of a JSON body, then drop the connection."""
        body = full.body if isinstance(full.body, bytes) else b""
        out = web.StreamResponse(status=full.status, headers=full.headers)
        out.content_length = len(body)
        with contextlib.suppress(ConnectionError):
            await out.prepare(request)
            await out.write(body[: len(body) // 2])
        _drop_connection(request)
        return out

    async def _misbehave(
        self, request: web.Request, resp: web.StreamResponse, parts: list[bytes], mode: str
    ) -> web.StreamResponse:
        """Send ``resp``'s headers, then ``parts`` of its body as the body fault ``mode`` says."""
        delay = self.fault.delay_ms / 1000
        with contextlib.suppress(ConnectionError):
            await resp.prepare(request)
            if mode == "trickle":
                for byte in b"".join(parts):
                    if self.closing.is_set():
                        break
                    await resp.write(bytes([byte]))
                    await asyncio.sleep(delay)
                else:
                    await resp.write_eof()
                    return resp
            else:
                for part in parts[: len(parts) // 2] if mode == "stream_stall" else ():
                    await resp.write(part)
                await self._stall(request)
        _drop_connection(request)
        return resp

    async def send_stream(
        self,
        request: web.Request,
        events: list[bytes],
        cut: bool,
        content_type: str = _SSE_CT,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """Write a 200 stream event by event; on ``cut`` send about half, then drop the connection."""
        resp = web.StreamResponse(status=200, headers={**self.extra_headers(), **(headers or {})})
        resp.content_type = content_type
        if content_type == _SSE_CT:
            resp.headers["Cache-Control"] = "no-cache"
        if id(request) in self.body_faults:
            return await self._misbehave(request, resp, events, self.body_faults[id(request)])
        upto = len(events) // 2 if cut else len(events)
        alter = request.get(_ALTER)
        if alter == "truncated_200":  # half the events, then a clean end: no terminal event
            upto = len(events) // 2
        elif alter == "wrong_types_200" and events:
            events = [_wrong_types(self.dialect, events[0]), *events[1:]]
        try:
            await resp.prepare(request)
            for ev in events[:upto]:
                await resp.write(ev)
            if cut:
                _drop_connection(request)
                return resp
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    # /_mock ----------------------------------------------------------------
    async def _faults_endpoint(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return _json_response(200, self.fault.as_json())
        if request.method == "DELETE":
            self.fault = _Fault()
            return _json_response(200, self.fault.as_json())
        if request.method == "POST":
            try:
                self.fault = _parse_fault(_try_json(await request.read()), FAULT_MODES + self.quirks)
            except ValueError as e:
                return _json_response(400, {"error": str(e)})
            return _json_response(200, self.fault.as_json())
        return _json_response(405, {"error": "use GET, POST or DELETE"})

    async def _stats_endpoint(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.stats = _Stats()
        elif request.method != "GET":
            return _json_response(405, {"error": "use GET or DELETE"})
        return _json_response(200, self.stats.as_json(self.stalling))
