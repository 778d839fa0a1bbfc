"""Fake OpenAI, Anthropic and Gemini servers that speak each provider's real wire format.

The gateway's end-to-end tests, its ``up`` command and its load tests point the
gateway at these instead of the real APIs. Each mock checks requests the way its
real provider does (paths, auth headers, required and unknown fields, tool-call
pairing) and answers with that provider's error shapes, so a translation mistake
in the gateway surfaces as the same 4xx the real provider would send. Replies are
deterministic (see ``_plan``) so tests can assert them exactly, and every server
has fault injection and request stats under ``/_mock/``.

This module shares no code with ``ext_proc.codecs`` on purpose: only an
independent implementation can catch the codecs' mistakes.

Replies (the same rules in every dialect):

* text: ``[<spec name>:<model>] <text of the last user turn>``, whitespace
  normalised; streamed as one delta per word that join back to that text;
* a call of the first declared tool (or the one ``tool_choice`` names) with
  arguments ``{"echo": <last user text>}`` when that text starts with
  ``use tool``; a forced tool choice (OpenAI ``required``/named, Anthropic
  ``any``/``tool``, Gemini ``ANY``) calls even without it, and ``none`` never does;
* ``[<name>:<model>] tool result: <result text>`` when the conversation ends
  with tool results;
* usage: input = words of all system and message text parts (not tool calls or
  results), output = words of the reply, or 1 for a tool call; a stop sequence
  cuts the reply where it first occurs; max tokens cut it to that many words.

Per server, ``/_mock/faults`` (GET, POST ``{"mode", "status", "retry_after",
"delay_ms", "rate", "message"}``, DELETE) sets the fault applied to model
endpoints (``message`` replaces the text of an ``error`` fault, e.g. ``"prompt
is too long"`` with status 400 to play a context-length error; ``echo_key`` is
an error, 401 unless ``status`` says otherwise, quoting the key it received;
the ``*_200`` modes answer 200 with something that is not an answer), and
``/_mock/stats`` (GET, DELETE) counts their requests and lists the tool-call
ids the server issued (``tool_call_ids``), so tests can check that a client
got the backend's id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import secrets
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web

__all__ = [
    "FAULT_MODES",
    "BackgroundMocks",
    "MockProviders",
    "MockSpec",
    "run_forever",
    "start",
    "start_in_thread",
]

Dialect = Literal["openai", "anthropic", "gemini"]

# 200s that are not answers, as broken providers and proxies send them: no body (an
# empty event stream for streams), a proxy's HTML page, the provider's error object,
# the reply cut in half but well framed (half the events, then a clean end), the
# reply with its first array made a number (_WRONG_TYPE_KEYS).
NON_ANSWERS = ("empty_200", "html_200", "error_object_200", "truncated_200", "wrong_types_200")
FAULT_MODES = ("ok", "down", "error", "rate_limit", "stall", "slow", "stream_cut", "stream_error", "echo_key",
               *NON_ANSWERS)
_WRONG_TYPE_KEYS = {"openai": ("choices",), "anthropic": ("content", "message"), "gemini": ("candidates",)}
_ALTER = web.RequestKey("mock_alter", str)  # a truncated_200 / wrong_types_200 reply is being written

# stream_error: a 200 stream whose first event is the provider's in-band error
# (Anthropic sends overloaded_error this way), then the end of the stream.
_INBAND_ERRORS = {
    "anthropic": b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
    "openai": b'data: {"error": {"message": "The server is overloaded", "type": "server_error", "param": null, '
              b'"code": null}}\n\n',
    "gemini": b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\n\n',
}
_STALL_LIMIT_S = 600.0  # a stalled request ends by then even if the client never gives up
_MAX_BODY = 32 * 1024 * 1024  # Anthropic's request limit; large enough for inline images
_JSON_CT = "application/json"
_SSE_CT = "text/event-stream"


@dataclass
class MockSpec:
    """One mock provider to start: its wire format, where it listens and the key it accepts."""

    name: str
    dialect: Dialect
    port: int
    api_key: str
    host: str = "127.0.0.1"


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


@dataclass
class _Reply:
    """The planned reply: words of text, or one tool call."""

    words: list[str]
    finish: str  # "stop" | "length" | "stop_sequence" | "tool"
    stop_sequence: str | None = None
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def output_tokens(self) -> int:
        return 1 if self.finish == "tool" else len(self.words)

    def pieces(self) -> list[str]:
        """One streamed delta per word; joined they equal ``text``."""
        return [w if i == 0 else " " + w for i, w in enumerate(self.words)]


def _plan(provider: str, c: _Convo) -> _Reply:
    """Decide the reply from the request alone, so tests can predict it exactly."""
    prefix = f"[{provider}:{c.model}]"
    if c.tool_results is not None:
        full = f"{prefix} tool result: {' '.join(c.tool_results)}"
    else:
        if c.tool_names and c.choice != "none":
            wants = c.choice == "any" or c.user_text.lstrip().startswith("use tool")
            if wants:
                name = c.forced_name or c.tool_names[0]
                return _Reply([], "tool", tool_name=name, tool_args={"echo": c.user_text})
        full = f"{prefix} {c.user_text}"
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


def _parse_fault(body: Any) -> _Fault:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    mode = body.get("mode")
    if mode not in FAULT_MODES:
        raise ValueError(f"mode must be one of {', '.join(FAULT_MODES)}")
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
            "tool_call_ids": self.tool_call_ids,
        }


_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})


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
    prefix, sep, payload = data.partition(b"data: ") if data.startswith((b"data: ", b"event: ")) else (b"", b"", data)
    end = payload.find(b"\n")
    try:
        obj = orjson.loads(payload if end < 0 else payload[:end])
    except orjson.JSONDecodeError:  # not one JSON value (a JSON-array stream's piece): left alone
        return data
    key = next((k for k in _WRONG_TYPE_KEYS[dialect] if k in obj), None)
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

    def __init__(self, spec: MockSpec) -> None:
        self.spec = spec
        self.fault = _Fault()
        self.stats = _Stats()
        self.stalling = 0
        self.closing = asyncio.Event()

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

    # app -------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/_mock/faults", self._faults_endpoint)
        app.router.add_route("*", "/_mock/stats", self._stats_endpoint)
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
        try:
            if mode in ("error", "echo_key"):
                err = self.fault_error(f.status)
                if mode == "echo_key":  # like a provider that quotes the key it rejects
                    err.body["error"]["message"] = f"Incorrect API key provided: {_received_key(request)}"
                elif f.message:
                    err.body["error"]["message"] = f.message
                raise err
            if mode == "rate_limit":
                raise self.rate_limit_error(f.retry_after)
            if too_large:
                raise self.too_large()
            if mode == "slow":
                await asyncio.sleep(f.delay_ms / 1000)
            stream = self.is_stream(request, body)
            if mode == "stream_error" and stream:
                resp = await self.send_stream(request, [_INBAND_ERRORS[self.dialect]], False)
            elif mode == "empty_200":
                resp = await self.send_stream(request, [], False) if stream else web.Response(content_type=_JSON_CT)
            elif mode == "html_200":
                resp = web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
            elif mode == "error_object_200":
                resp = _json_response(200, self.fault_error(500).body)
            else:
                if mode in ("truncated_200", "wrong_types_200"):
                    request[_ALTER] = mode  # read by send_stream for streamed replies
                resp = await handler(request, body, mode == "stream_cut")
                if mode in ("truncated_200", "wrong_types_200") and isinstance(resp, web.Response) \
                        and resp.status == 200 and isinstance(resp.body, bytes):
                    resp.body = (resp.body[: len(resp.body) // 2] if mode == "truncated_200"
                                 else _wrong_types(self.dialect, resp.body))
        except _Reject as r:
            resp = _json_response(r.status, r.body, {**self.extra_headers(), **r.headers})
        if (
            mode == "stream_cut"
            and not resp.prepared
            and resp.status == 200
            and isinstance(resp, web.Response)
        ):
            resp = await self._cut_body(request, resp)
        key = str(resp.status)
        st.by_status[key] = st.by_status.get(key, 0) + 1
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
                self.fault = _parse_fault(_try_json(await request.read()))
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


# --------------------------------------------------------------------------- OpenAI

_OA_PARAMS = frozenset(
    {
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
_OA_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_OA_PART_TYPES = {
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "system": ("text",),
    "developer": ("text",),
    "tool": ("text",),
    "function": ("text",),
}
_OA_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OA_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if "
    "you're accessing the API from your browser and are prompted for a username and password. You can "
    "obtain an API key from https://platform.openai.com/account/api-keys."
)
_OA_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you "
    "have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)


def _oa_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a decimal"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _oa_list(values: Iterable[str]) -> str:
    q = [f"'{v}'" for v in values]
    if len(q) <= 1:
        return "".join(q)
    if len(q) == 2:
        return f"{q[0]} and {q[1]}"
    return ", ".join(q[:-1]) + f", and {q[-1]}"


def _mask_key(key: str) -> str:
    """Show only enough of a wrong key to recognise it, as OpenAI does."""
    if len(key) < 12:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _oa_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


class _OpenAI(_Provider):
    """OpenAI Chat Completions: ``POST /v1/chat/completions`` and ``GET /v1/models``."""

    dialect = "openai"

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [("POST", "/v1/chat/completions", self.chat), ("GET", "/v1/models", self.models)]

    def extra_headers(self) -> dict[str, str]:
        return {"x-request-id": "req_" + _hex(32), "openai-version": "2020-10-01"}

    # errors ----------------------------------------------------------------
    def error(
        self,
        status: int,
        message: str,
        etype: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Reject:
        return _Reject(
            status, {"error": {"message": message, "type": etype, "param": param, "code": code}}, headers
        )

    def fault_error(self, status: int) -> _Reject:
        messages = {
            500: "The server had an error while processing your request. Sorry about that!",
            502: "Bad gateway.",
            503: "The server is overloaded or not ready yet.",
            504: "Gateway timeout.",
        }
        if status >= 500:
            return self.error(
                status,
                messages.get(status, "The server had an error processing your request."),
                "server_error",
            )
        kinds = {
            401: "invalid_request_error",
            403: "invalid_request_error",
            404: "invalid_request_error",
            429: "requests",
        }
        return self.error(
            status, f"Mock provider error (HTTP {status}).", kinds.get(status, "invalid_request_error")
        )

    def rate_limit_error(self, retry_after: float) -> _Reject:
        ra = f"{retry_after:g}"
        return self.error(
            429,
            f"Rate limit reached for requests in organization org-mock on requests per min (RPM): "
            f"Limit 60, Used 60, Requested 1. Please try again in {ra}s.",
            "requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": ra,
                "retry-after-ms": str(int(retry_after * 1000)),
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{ra}s",
            },
        )

    def too_large(self) -> _Reject:
        return self.error(413, "Request too large.", code="request_too_large")

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise self.error(404, f"Invalid URL ({request.method} {request.path})")

    # auth ------------------------------------------------------------------
    def auth_state(self, request: web.Request) -> str:
        h = request.headers.get("Authorization")
        if not h:
            return "missing"
        scheme, _, key = h.partition(" ")
        return "valid" if scheme.lower() == "bearer" and key.strip() == self.spec.api_key else "invalid"

    def check_auth(self, request: web.Request) -> None:
        state = self.auth_state(request)
        if state == "missing":
            raise self.error(401, _OA_NO_KEY)
        if state == "invalid":
            key = request.headers.get("Authorization", "").partition(" ")[2].strip()
            raise self.error(
                401,
                f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # validation helpers ------------------------------------------------------
    def bad_type(self, param: str, expected: str, value: Any) -> _Reject:
        return self.error(
            400,
            f"Invalid type for '{param}': expected {expected}, but got {_oa_kind(value)} instead.",
            param=param,
            code="invalid_type",
        )

    def missing(self, param: str) -> _Reject:
        return self.error(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )

    def bad_value(self, param: str, value: Any, allowed: Iterable[str]) -> _Reject:
        return self.error(
            400,
            f"Invalid value: '{value}'. Supported values are: {_oa_list(allowed)}.",
            param=param,
            code="invalid_value",
        )

    def number(self, body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool) -> Any:
        v = body.get(name)
        if v is None:
            return None
        if integer and not _is_int(v):
            raise self.bad_type(name, "an integer", v)
        if not integer and not _is_num(v):
            raise self.bad_type(name, "a decimal", v)
        word = "integer" if integer else "decimal"
        if v < lo:
            raise self.error(
                400,
                f"Invalid '{name}': {word} below minimum value. Expected a value >= {lo:g}, but got {v} instead.",
                param=name,
                code=f"{word}_below_min_value",
            )
        if hi is not None and v > hi:
            raise self.error(
                400,
                f"Invalid '{name}': {word} above maximum value. Expected a value <= {hi:g}, but got {v} instead.",
                param=name,
                code=f"{word}_above_max_value",
            )
        return v

    def check_content(self, content: Any, p: str, role: str) -> None:
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise self.bad_type(p, "one of a string or array of objects", content)
        allowed = _OA_PART_TYPES[role]
        for j, part in enumerate(content):
            pp = f"{p}[{j}]"
            if not isinstance(part, dict):
                raise self.bad_type(pp, "an object", part)
            t = part.get("type")
            if t is None:
                raise self.missing(f"{pp}.type")
            if t not in allowed:
                raise self.bad_value(f"{pp}.type", t, allowed)
            if t in ("text", "refusal"):
                if t not in part:
                    raise self.missing(f"{pp}.{t}")
                if not isinstance(part[t], str):
                    raise self.bad_type(f"{pp}.{t}", "a string", part[t])
            elif t == "image_url":
                img = part.get("image_url")
                if img is None:
                    raise self.missing(f"{pp}.image_url")
                if not isinstance(img, dict):
                    raise self.bad_type(f"{pp}.image_url", "an object", img)
                if "url" not in img:
                    raise self.missing(f"{pp}.image_url.url")
                if not isinstance(img["url"], str):
                    raise self.bad_type(f"{pp}.image_url.url", "a string", img["url"])
                if img.get("detail") is not None and img["detail"] not in ("auto", "low", "high"):
                    raise self.bad_value(f"{pp}.image_url.detail", img["detail"], ("auto", "low", "high"))
            elif t not in part:
                raise self.missing(f"{pp}.{t}")

    def check_tool_calls(self, calls: Any, p: str) -> list[str]:
        if not isinstance(calls, list):
            raise self.bad_type(f"{p}.tool_calls", "an array", calls)
        ids: list[str] = []
        for k, call in enumerate(calls):
            cp = f"{p}.tool_calls[{k}]"
            if not isinstance(call, dict):
                raise self.bad_type(cp, "an object", call)
            for req in ("id", "type", "function"):
                if req not in call:
                    raise self.missing(f"{cp}.{req}")
            if not isinstance(call["id"], str):
                raise self.bad_type(f"{cp}.id", "a string", call["id"])
            if call["type"] != "function":
                raise self.bad_value(f"{cp}.type", call["type"], ("function",))
            fn = call["function"]
            if not isinstance(fn, dict):
                raise self.bad_type(f"{cp}.function", "an object", fn)
            for req in ("name", "arguments"):
                if req not in fn:
                    raise self.missing(f"{cp}.function.{req}")
                if not isinstance(fn[req], str):
                    raise self.bad_type(f"{cp}.function.{req}", "a string", fn[req])
            ids.append(call["id"])
        return ids

    def validate(self, body: dict[str, Any]) -> tuple[_Convo, bool, bool, bool, int]:
        """Check a request as the real endpoint does.

        Returns the conversation, stream, include_usage, include_obfuscation and n.
        """
        for k in body:
            if k not in _OA_PARAMS:
                raise self.error(400, f"Unrecognized request argument supplied: {k}")
        model = body.get("model")
        if model is None:
            raise self.error(400, "you must provide a model parameter", param="model")
        if not isinstance(model, str):
            raise self.bad_type("model", "a string", model)
        if "messages" not in body:
            raise self.missing("messages")
        msgs = body["messages"]
        if not isinstance(msgs, list):
            raise self.bad_type("messages", "an array", msgs)
        if not msgs:
            raise self.error(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                param="messages",
                code="empty_array",
            )

        input_tokens = 0
        pending: list[str] | None = None  # tool_call ids still awaiting a tool message
        pending_at = -1
        for i, m in enumerate(msgs):
            p = f"messages[{i}]"
            if not isinstance(m, dict):
                raise self.bad_type(p, "an object", m)
            if "role" not in m:
                raise self.missing(f"{p}.role")
            role = m["role"]
            if role not in _OA_ROLES:
                raise self.bad_value(f"{p}.role", role, _OA_ROLES)
            if role == "tool":
                if "tool_call_id" not in m:
                    raise self.missing(f"{p}.tool_call_id")
                if not isinstance(m["tool_call_id"], str):
                    raise self.bad_type(f"{p}.tool_call_id", "a string", m["tool_call_id"])
                if pending is None or m["tool_call_id"] not in pending:
                    raise self.error(
                        400,
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                        "with 'tool_calls'.",
                        param=f"messages.[{i}].role",
                    )
                pending.remove(m["tool_call_id"])
            else:
                if pending:
                    raise self.error(
                        400,
                        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                        f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                        f"{', '.join(pending)}",
                        param=f"messages.[{pending_at}].role",
                    )
                pending = None
            content = m.get("content")
            if role == "assistant":
                calls = m.get("tool_calls")
                if calls is not None:
                    ids = self.check_tool_calls(calls, p)
                    if ids:
                        pending, pending_at = ids, i
                elif content is None and m.get("function_call") is None and m.get("refusal") is None:
                    raise self.missing(f"{p}.content")
            elif "content" not in m or content is None:
                raise self.missing(f"{p}.content")
            if content is not None:
                self.check_content(content, f"{p}.content", role)
            if role in ("system", "developer", "user", "assistant"):
                input_tokens += _words(_oa_text(content))
        if pending:
            raise self.error(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
                param=f"messages.[{pending_at}].role",
            )

        user_text = ""
        for m in reversed(msgs):
            if m["role"] == "user":
                user_text = _oa_text(m.get("content"))
                break
        tool_results: list[str] | None = None
        if msgs[-1]["role"] == "tool":
            tail: list[str] = []
            for m in reversed(msgs):
                if m["role"] != "tool":
                    break
                tail.append(_oa_text(m.get("content")))
            tool_results = list(reversed(tail))

        tool_names = self.check_tools(body)
        choice, forced = self.check_tool_choice(body, tool_names)
        if body.get("parallel_tool_calls") is not None and not body.get("tools"):
            raise self.error(
                400,
                "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified.",
                param="parallel_tool_calls",
            )

        max_tokens = self.number(body, "max_tokens", 1, None, True)
        mct = self.number(body, "max_completion_tokens", 1, None, True)
        if mct is not None:
            max_tokens = mct if max_tokens is None else min(max_tokens, mct)
        n = self.number(body, "n", 1, 128, True) or 1
        self.number(body, "temperature", 0, 2, False)
        self.number(body, "top_p", 0, 1, False)
        self.number(body, "presence_penalty", -2, 2, False)
        self.number(body, "frequency_penalty", -2, 2, False)
        self.number(body, "seed", -(2**63), None, True)

        stops: list[str] = []
        stop = body.get("stop")
        if isinstance(stop, str):
            stops = [stop]
        elif isinstance(stop, list):
            if len(stop) > 4:
                raise self.error(
                    400,
                    f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array "
                    f"with length {len(stop)} instead.",
                    param="stop",
                    code="array_above_max_length",
                )
            for k, s in enumerate(stop):
                if not isinstance(s, str):
                    raise self.bad_type(f"stop[{k}]", "a string", s)
            stops = list(stop)
        elif stop is not None:
            raise self.bad_type("stop", "one of a string or array of strings", stop)

        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise self.bad_type("stream", "a boolean", stream)
        include_usage, obfuscate = False, True
        so = body.get("stream_options")
        if so is not None:
            if not stream:
                raise self.error(
                    400,
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                )
            if not isinstance(so, dict):
                raise self.bad_type("stream_options", "an object", so)
            for k in so:
                if k not in ("include_usage", "include_obfuscation"):
                    raise self.error(400, f"Unrecognized request argument supplied: stream_options.{k}")
            iu = so.get("include_usage")
            if iu is not None and not isinstance(iu, bool):
                raise self.bad_type("stream_options.include_usage", "a boolean", iu)
            include_usage = bool(iu)
            io = so.get("include_obfuscation")
            if io is not None and not isinstance(io, bool):
                raise self.bad_type("stream_options.include_obfuscation", "a boolean", io)
            obfuscate = io is not False
        rf = body.get("response_format")
        if rf is not None:
            if not isinstance(rf, dict):
                raise self.bad_type("response_format", "an object", rf)
            if rf.get("type") not in ("text", "json_object", "json_schema"):
                raise self.bad_value(
                    "response_format.type", rf.get("type"), ("text", "json_object", "json_schema")
                )

        convo = _Convo(
            model=model,
            input_tokens=input_tokens,
            user_text=user_text,
            tool_results=tool_results,
            tool_names=tool_names,
            choice=choice,
            forced_name=forced,
            max_tokens=max_tokens,
            stops=stops,
        )
        return convo, bool(stream), include_usage, obfuscate, n

    def check_tools(self, body: dict[str, Any]) -> list[str]:
        tools = body.get("tools")
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise self.bad_type("tools", "an array", tools)
        if not tools:
            raise self.error(
                400,
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                param="tools",
                code="empty_array",
            )
        names: list[str] = []
        for i, t in enumerate(tools):
            p = f"tools[{i}]"
            if not isinstance(t, dict):
                raise self.bad_type(p, "an object", t)
            if "type" not in t:
                raise self.missing(f"{p}.type")
            if t["type"] == "custom":
                continue
            if t["type"] != "function":
                raise self.bad_value(f"{p}.type", t["type"], ("function", "custom"))
            fn = t.get("function")
            if fn is None:
                raise self.missing(f"{p}.function")
            if not isinstance(fn, dict):
                raise self.bad_type(f"{p}.function", "an object", fn)
            for k in fn:
                if k not in ("name", "description", "parameters", "strict"):
                    raise self.error(400, f"Unrecognized request argument supplied: {p}.function.{k}")
            name = fn.get("name")
            if name is None:
                raise self.missing(f"{p}.function.name")
            if not isinstance(name, str):
                raise self.bad_type(f"{p}.function.name", "a string", name)
            if not _OA_TOOL_NAME.match(name):
                raise self.error(
                    400,
                    f"Invalid '{p}.function.name': string does not match pattern. Expected a string that matches "
                    "the pattern '^[a-zA-Z0-9_-]+$'.",
                    param=f"{p}.function.name",
                    code="invalid_value",
                )
            if fn.get("description") is not None and not isinstance(fn["description"], str):
                raise self.bad_type(f"{p}.function.description", "a string", fn["description"])
            params = fn.get("parameters")
            if params is not None:
                if not isinstance(params, dict):
                    raise self.bad_type(f"{p}.function.parameters", "an object", params)
                if "type" in params and params["type"] != "object":
                    raise self.error(
                        400,
                        f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', "
                        f"got 'type: \"{params['type']}\"'.",
                        param=f"{p}.function.parameters",
                        code="invalid_function_parameters",
                    )
            names.append(name)
        return names

    def check_tool_choice(self, body: dict[str, Any], names: list[str]) -> tuple[str, str | None]:
        tc = body.get("tool_choice")
        if tc is None:
            return "auto", None
        if not body.get("tools"):
            raise self.error(
                400,
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                param="tool_choice",
            )
        if isinstance(tc, str):
            if tc not in ("none", "auto", "required"):
                raise self.bad_value("tool_choice", tc, ("none", "auto", "required"))
            return {"none": "none", "auto": "auto", "required": "any"}[tc], None
        if not isinstance(tc, dict):
            raise self.bad_type("tool_choice", "one of a string or object", tc)
        if tc.get("type") == "function":
            fn = tc.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise self.missing("tool_choice.function.name")
            if fn["name"] not in names:
                raise self.error(
                    400,
                    f"Invalid value for 'tool_choice': function '{fn['name']}' not found in 'tools'.",
                    param="tool_choice",
                )
            return "any", fn["name"]
        if tc.get("type") == "allowed_tools":
            at = tc.get("allowed_tools")
            if not isinstance(at, dict):
                raise self.missing("tool_choice.allowed_tools")
            allowed = [
                t["function"]["name"]
                for t in at.get("tools") or []
                if isinstance(t, dict)
                and isinstance(t.get("function"), dict)
                and t["function"].get("name") in names
            ]
            if at.get("mode") == "required":
                return "any", (allowed[0] if allowed else None)
            return "auto", (allowed[0] if allowed else None)
        raise self.bad_value("tool_choice.type", tc.get("type"), ("function", "allowed_tools"))

    # handlers --------------------------------------------------------------
    async def models(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        seen = set(self.stats.by_model)
        ids = sorted(seen | {"gpt-4o", "gpt-4o-mini", "gpt-4.1"})
        data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in ids]
        return _json_response(200, {"object": "list", "data": data}, self.extra_headers())

    def usage(self, prompt: int, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def chat(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        if body is _INVALID:
            raise self.error(400, _OA_BAD_JSON)
        if not isinstance(body, dict):
            raise self.bad_type("body", "an object", body)
        convo, stream, include_usage, obfuscate, n = self.validate(body)
        reply = _plan(self.spec.name, convo)
        cid = "chatcmpl-" + _b62(29)
        created = int(time.time())
        base = {"id": cid, "created": created, "model": convo.model, "system_fingerprint": "fp_mock"}
        args = orjson.dumps(reply.tool_args).decode() if reply.tool_args is not None else ""
        finish = {"tool": "tool_calls", "length": "length"}.get(reply.finish, "stop")
        completion = reply.output_tokens * n
        if not stream:
            choices = []
            for i in range(n):
                msg: dict[str, Any] = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "annotations": [],
                }
                if reply.finish == "tool":
                    msg["tool_calls"] = [
                        {
                            "id": self.issue_id("call_" + _hex()),
                            "type": "function",
                            "function": {"name": reply.tool_name, "arguments": args},
                        }
                    ]
                else:
                    msg["content"] = reply.text
                choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": finish})
            out = {
                **base,
                "object": "chat.completion",
                "choices": choices,
                "usage": self.usage(convo.input_tokens, completion),
                "service_tier": "default",
            }
            return _json_response(200, out, self.extra_headers())

        chunk_base = {**base, "object": "chat.completion.chunk", "service_tier": "default"}
        events: list[bytes] = []

        def emit(choices: list[dict[str, Any]], usage: Any = None) -> None:
            c = {**chunk_base, "choices": choices}
            if include_usage:
                c["usage"] = usage
            if obfuscate:  # random padding the real API adds so chunk sizes do not leak token lengths
                c["obfuscation"] = _b62(secrets.randbelow(12) + 1)
            events.append(b"data: " + orjson.dumps(c) + b"\n\n")

        for i in range(n):
            if reply.finish == "tool":
                call_id = self.issue_id("call_" + _hex())
                first = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": reply.tool_name, "arguments": ""},
                        }
                    ],
                    "refusal": None,
                }
                emit([{"index": i, "delta": first, "logprobs": None, "finish_reason": None}])
                step = max(1, -(-len(args) // 4))
                for k in range(0, len(args), step):
                    frag = {"tool_calls": [{"index": 0, "function": {"arguments": args[k : k + step]}}]}
                    emit([{"index": i, "delta": frag, "logprobs": None, "finish_reason": None}])
            else:
                emit(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": "", "refusal": None},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
                for piece in reply.pieces():
                    emit([{"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
            emit([{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}])
        if include_usage:
            emit([], self.usage(convo.input_tokens, completion))
        events.append(b"data: [DONE]\n\n")
        return await self.send_stream(request, events, cut)


# --------------------------------------------------------------------------- Anthropic

_ANT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
        "cache_control",
        "diagnostics",
        "inference_geo",
        "speed",
        "user_profile_id",
        "workspace_id",
    }
)
_ANT_BLOCKS: dict[str, frozenset[str]] = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control", "transformations"}),
    "document": frozenset({"type", "source", "cache_control", "citations", "context", "title"}),
    "search_result": frozenset({"type", "source", "title", "content", "cache_control", "citations"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control", "caller", "toolset_name"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control", "toolset_name"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
}
# Server-tool blocks the mock accepts as they come (it never produces them itself).
_ANT_SERVER_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
    }
)
_ANT_RESULT_BLOCKS = ("text", "image", "document", "search_result")
_ANT_MEDIA = ("image/jpeg", "image/png", "image/gif", "image/webp")
_ANT_TOOL_FIELDS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
        "strict",
        "input_examples",
        "defer_loading",
        "allowed_callers",
        "eager_input_streaming",
    }
)
_ANT_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_ANT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_ANT_SERVER_TOOL = re.compile(r"^[a-z_]+_\d{8}$")
_ANT_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ANT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _ant_tags(tags: Iterable[str]) -> str:
    return ", ".join(f"'{t}'" for t in tags)


def _ant_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class _Anthropic(_Provider):
    """Anthropic Messages API: ``POST /v1/messages`` (and ``GET /v1/models``)."""

    dialect = "anthropic"

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [("POST", "/v1/messages", self.messages), ("GET", "/v1/models", self.models)]

    def extra_headers(self) -> dict[str, str]:
        return {"request-id": "req_" + _b62(24)}

    def error(self, status: int, etype: str, message: str, headers: dict[str, str] | None = None) -> _Reject:
        body = {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": "req_" + _b62(24),
        }
        return _Reject(status, body, headers)

    def invalid(self, message: str) -> _Reject:
        return self.error(400, "invalid_request_error", message)

    def fault_error(self, status: int) -> _Reject:
        etype = _ANT_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        message = {"overloaded_error": "Overloaded", "api_error": "Internal server error"}.get(
            etype, f"Mock provider error (HTTP {status})."
        )
        return self.error(status, etype, message)

    def rate_limit_error(self, retry_after: float) -> _Reject:
        ra = f"{retry_after:g}"
        return self.error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 60 requests per minute. "
            "For details, refer to the rate limits documentation.",
            headers={
                "retry-after": ra,
                "anthropic-ratelimit-requests-limit": "60",
                "anthropic-ratelimit-requests-remaining": "0",
            },
        )

    def too_large(self) -> _Reject:
        return self.error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise self.error(404, "not_found_error", "Not Found")

    def auth_state(self, request: web.Request) -> str:
        # x-api-key is the classic header; current SDKs send the key as ``Authorization: Bearer``.
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not bearer.strip():
                return "missing"
            key = bearer.strip()
        return "valid" if key == self.spec.api_key else "invalid"

    def check_headers(self, request: web.Request) -> None:
        state = self.auth_state(request)
        if state == "missing":
            raise self.error(401, "authentication_error", "x-api-key header is required")
        if state == "invalid":
            raise self.error(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            raise self.invalid("anthropic-version: header is required")
        if not _ANT_VERSION.match(version):
            raise self.invalid(f"anthropic-version: invalid version '{version}'")

    async def models(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_headers(request)
        ids = sorted(set(self.stats.by_model) | {"claude-sonnet-4-5", "claude-haiku-4-5"})
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in ids
        ]
        out = {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
        return _json_response(200, out, self.extra_headers())

    # validation ------------------------------------------------------------
    def check_block(self, b: Any, bp: str, allowed: Iterable[str]) -> dict[str, Any]:
        allowed = tuple(allowed)
        if not isinstance(b, dict):
            raise self.invalid(f"{bp}: Input should be a valid dictionary or object to extract fields from")
        t = b.get("type")
        if t is None:
            raise self.invalid(f"{bp}: Unable to extract tag using discriminator 'type'")
        if t not in allowed:
            raise self.invalid(
                f"{bp}: Input tag '{t}' found using 'type' does not match any of the expected tags: {_ant_tags(allowed)}"
            )
        if t in _ANT_SERVER_BLOCKS:
            return b
        for k in b:
            if k not in _ANT_BLOCKS[t]:
                raise self.invalid(f"{bp}.{t}.{k}: Extra inputs are not permitted")
        if t == "text":
            if "text" not in b:
                raise self.invalid(f"{bp}.text.text: Field required")
            if not isinstance(b["text"], str):
                raise self.invalid(f"{bp}.text.text: Input should be a valid string")
            if not b["text"]:
                raise self.invalid("messages: text content blocks must be non-empty")
        elif t in ("image", "document"):
            self.check_source(b.get("source"), f"{bp}.{t}.source", t)
        elif t == "tool_use":
            for req in ("id", "name", "input"):
                if req not in b:
                    raise self.invalid(f"{bp}.tool_use.{req}: Field required")
            if not isinstance(b["id"], str) or not _ANT_ID.match(b["id"]):
                raise self.invalid(f"{bp}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if not isinstance(b["name"], str):
                raise self.invalid(f"{bp}.tool_use.name: Input should be a valid string")
            if not isinstance(b["input"], dict):
                raise self.invalid(f"{bp}.tool_use.input: Input should be a valid dictionary")
        elif t == "tool_result":
            if "tool_use_id" not in b:
                raise self.invalid(f"{bp}.tool_result.tool_use_id: Field required")
            if not isinstance(b["tool_use_id"], str) or not _ANT_ID.match(b["tool_use_id"]):
                raise self.invalid(
                    f"{bp}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                )
            content = b.get("content")
            if isinstance(content, list):
                for k, sub in enumerate(content):
                    self.check_block(sub, f"{bp}.tool_result.content.{k}", _ANT_RESULT_BLOCKS)
            elif content is not None and not isinstance(content, str):
                raise self.invalid(f"{bp}.tool_result.content: Input should be a valid list")
            if b.get("is_error") is not None and not isinstance(b["is_error"], bool):
                raise self.invalid(f"{bp}.tool_result.is_error: Input should be a valid boolean")
        elif t == "thinking":
            for req in ("thinking", "signature"):
                if not isinstance(b.get(req), str):
                    raise self.invalid(f"{bp}.thinking.{req}: Field required")
        return b

    def check_source(self, src: Any, sp: str, kind: str) -> None:
        if src is None:
            raise self.invalid(f"{sp}: Field required")
        if not isinstance(src, dict):
            raise self.invalid(f"{sp}: Input should be a valid dictionary or object to extract fields from")
        st = src.get("type")
        kinds = ("base64", "url", "file") if kind == "image" else ("base64", "text", "content", "url", "file")
        if st not in kinds:
            raise self.invalid(
                f"{sp}: Input tag '{st}' found using 'type' does not match any of the expected tags: {_ant_tags(kinds)}"
            )
        if st == "base64":
            media = src.get("media_type")
            allowed_media = _ANT_MEDIA if kind == "image" else ("application/pdf",)
            if media not in allowed_media:
                quoted = [f"'{m}'" for m in allowed_media]
                allowed_text = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
                raise self.invalid(f"{sp}.base64.media_type: Input should be {allowed_text}")
            data = src.get("data")
            if not isinstance(data, str):
                raise self.invalid(f"{sp}.base64.data: Field required")
            if not _b64_ok(data):
                raise self.invalid(f"{sp}.base64.data: Invalid base64 data")
        elif st == "url" and not isinstance(src.get("url"), str):
            raise self.invalid(f"{sp}.url.url: Field required")

    def validate(self, body: dict[str, Any]) -> tuple[_Convo, bool]:
        for k in body:
            if k not in _ANT_FIELDS:
                raise self.invalid(f"{k}: Extra inputs are not permitted")
        for req in ("model", "messages", "max_tokens"):
            if req not in body:
                raise self.invalid(f"{req}: Field required")
        model = body["model"]
        if not isinstance(model, str) or not model:
            raise self.invalid("model: Input should be a valid string")
        max_tokens = body["max_tokens"]
        if not _is_int(max_tokens):
            raise self.invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 0:
            raise self.invalid("max_tokens: Input should be greater than or equal to 0")
        msgs = body["messages"]
        if not isinstance(msgs, list):
            raise self.invalid("messages: Input should be a valid list")

        input_tokens = 0
        system = body.get("system")
        if isinstance(system, str):
            input_tokens += _words(system)
        elif isinstance(system, list):
            for j, b in enumerate(system):
                self.check_block(b, f"system.{j}", ("text",))
                input_tokens += _words(b["text"])
        elif system is not None:
            raise self.invalid("system: Input should be a valid string")

        prev_tool_ids: list[str] = []
        for i, m in enumerate(msgs):
            p = f"messages.{i}"
            if not isinstance(m, dict):
                raise self.invalid(
                    f"{p}: Input should be a valid dictionary or object to extract fields from"
                )
            for k in m:
                if k not in ("role", "content"):
                    raise self.invalid(f"{p}.{k}: Extra inputs are not permitted")
            if "role" not in m:
                raise self.invalid(f"{p}.role: Field required")
            role = m["role"]
            if role == "system":
                raise self.invalid(
                    'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                    'not "system" as an input message role.'
                )
            if role not in ("user", "assistant"):
                raise self.invalid(f"{p}.role: Input should be 'user' or 'assistant'")
            if i == 0 and role != "user":
                raise self.invalid('messages: first message must use the "user" role')
            if "content" not in m:
                raise self.invalid(f"{p}.content: Field required")
            content = m["content"]
            if not isinstance(content, (str, list)):
                raise self.invalid(f"{p}.content: Input should be a valid list")
            is_final_assistant = role == "assistant" and i == len(msgs) - 1
            if not content and not is_final_assistant:
                raise self.invalid(
                    f"{p}: all messages must have non-empty content except for the optional final assistant message"
                )
            blocks: list[dict[str, Any]] = []
            if isinstance(content, list):
                user_only = ("image", "document", "search_result", "tool_result")
                allowed = (
                    ("text", *user_only)
                    if role == "user"
                    else ("text", "tool_use", "thinking", "redacted_thinking")
                ) + tuple(sorted(_ANT_SERVER_BLOCKS))
                for j, b in enumerate(content):
                    if isinstance(b, dict) and b.get("type") in _ANT_BLOCKS and b.get("type") not in allowed:
                        where = "user" if b.get("type") in user_only else "assistant"
                        raise self.invalid(
                            f"{p}.content.{j}: `{b.get('type')}` blocks can only be in `{where}` messages"
                        )
                    blocks.append(self.check_block(b, f"{p}.content.{j}", allowed))
            input_tokens += _words(_ant_text(content))

            results = [(j, b) for j, b in enumerate(blocks) if b["type"] == "tool_result"]
            if prev_tool_ids:
                if role != "user":
                    raise self.invalid(
                        f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                        f"after: {', '.join(prev_tool_ids)}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message."
                    )
                for j, b in results:
                    if b["tool_use_id"] not in prev_tool_ids:
                        raise self.invalid(
                            f"{p}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{b['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                            "block in the previous message."
                        )
                answered = {b["tool_use_id"] for _, b in results}
                missing = [t for t in prev_tool_ids if t not in answered]
                if missing:
                    raise self.invalid(
                        f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                        f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message."
                    )
                if any(j >= len(results) for j, _ in results):
                    raise self.invalid(
                        f"{p}: Did not find {len(prev_tool_ids)} `tool_result` block(s) at the beginning of this "
                        "message. Messages following `tool_use` blocks must begin with a matching number of "
                        "`tool_result` blocks."
                    )
            elif results:
                j, b = results[0]
                raise self.invalid(
                    f"{p}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {b['tool_use_id']}. "
                    "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                )
            prev_tool_ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
        if not msgs:
            raise self.invalid("messages: Field required to have at least one message")
        if prev_tool_ids:
            raise self.invalid(
                f"messages.{len(msgs) - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(prev_tool_ids)}. Each `tool_use` block must have a corresponding `tool_result` "
                "block in the next message."
            )

        tool_names = self.check_tools(body.get("tools"))
        choice, forced = self.check_tool_choice(body.get("tool_choice"), tool_names)

        for name, hi in (("temperature", 1.0), ("top_p", 1.0)):
            v = body.get(name)
            if v is None:
                continue
            if not _is_num(v):
                raise self.invalid(f"{name}: Input should be a valid number")
            if v < 0:
                raise self.invalid(f"{name}: Input should be greater than or equal to 0")
            if v > hi:
                raise self.invalid(f"{name}: Input should be less than or equal to {hi:g}")
        top_k = body.get("top_k")
        if top_k is not None and (not _is_int(top_k) or top_k < 0):
            raise self.invalid("top_k: Input should be greater than or equal to 0")
        stops = body.get("stop_sequences")
        if stops is not None:
            if not isinstance(stops, list):
                raise self.invalid("stop_sequences: Input should be a valid list")
            for k, s in enumerate(stops):
                if not isinstance(s, str):
                    raise self.invalid(f"stop_sequences.{k}: Input should be a valid string")
        meta = body.get("metadata")
        if meta is not None:
            if not isinstance(meta, dict):
                raise self.invalid(
                    "metadata: Input should be a valid dictionary or object to extract fields from"
                )
            for k in meta:
                if k != "user_id":
                    raise self.invalid(f"metadata.{k}: Extra inputs are not permitted")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise self.invalid("stream: Input should be a valid boolean")
        thinking = body.get("thinking")
        if thinking is not None and (
            not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive")
        ):
            raise self.invalid(
                "thinking: Input tag found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
            )

        last = msgs[-1]
        tool_results: list[str] | None = None
        if last["role"] == "user" and isinstance(last["content"], list):
            res = [b for b in last["content"] if b["type"] == "tool_result"]
            if res:
                tool_results = [_ant_text(b.get("content")) for b in res]
        user_text = ""
        for m in reversed(msgs):
            if m["role"] == "user":
                user_text = _ant_text(m["content"])
                break
        convo = _Convo(
            model=model,
            input_tokens=input_tokens,
            user_text=user_text,
            tool_results=tool_results,
            tool_names=tool_names,
            choice=choice,
            forced_name=forced,
            max_tokens=max_tokens,
            stops=list(stops or []),
        )
        return convo, bool(stream)

    def check_tools(self, tools: Any) -> list[str]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise self.invalid("tools: Input should be a valid list")
        names: list[str] = []
        for i, t in enumerate(tools):
            p = f"tools.{i}"
            if not isinstance(t, dict):
                raise self.invalid(
                    f"{p}: Input should be a valid dictionary or object to extract fields from"
                )
            ttype = t.get("type")
            if ttype not in (None, "custom"):
                if isinstance(ttype, str) and _ANT_SERVER_TOOL.match(ttype):
                    continue  # a server tool (web search, bash, ...): the mock never calls these
                raise self.invalid(
                    f"{p}: Input tag '{ttype}' found using 'type' does not match any of the expected tags"
                )
            for k in t:
                if k not in _ANT_TOOL_FIELDS:
                    raise self.invalid(f"{p}.custom.{k}: Extra inputs are not permitted")
            for req in ("name", "input_schema"):
                if req not in t:
                    raise self.invalid(f"{p}.custom.{req}: Field required")
            name = t["name"]
            if not isinstance(name, str) or not _ANT_TOOL_NAME.match(name):
                raise self.invalid(f"{p}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            if t.get("description") is not None and not isinstance(t["description"], str):
                raise self.invalid(f"{p}.custom.description: Input should be a valid string")
            schema = t["input_schema"]
            if not isinstance(schema, dict):
                raise self.invalid(f"{p}.custom.input_schema: Input should be a valid dictionary")
            if schema.get("type") != "object":
                raise self.invalid(f"{p}.custom.input_schema.type: Input should be 'object'")
            if name in names:
                raise self.invalid("tools: Tool names must be unique.")
            names.append(name)
        return names

    def check_tool_choice(self, tc: Any, names: list[str]) -> tuple[str, str | None]:
        if tc is None:
            return "auto", None
        tags = ("auto", "any", "tool", "none")
        if not isinstance(tc, dict):
            raise self.invalid(
                "tool_choice: Input should be a valid dictionary or object to extract fields from"
            )
        t = tc.get("type")
        if t not in tags:
            raise self.invalid(
                f"tool_choice: Input tag '{t}' found using 'type' does not match any of the expected tags: {_ant_tags(tags)}"
            )
        for k in tc:
            if k not in ("type", "name", "disable_parallel_tool_use") or (k == "name" and t != "tool"):
                raise self.invalid(f"tool_choice.{t}.{k}: Extra inputs are not permitted")
        if t == "tool":
            name = tc.get("name")
            if not isinstance(name, str):
                raise self.invalid("tool_choice.tool.name: Field required")
            if name not in names:
                raise self.invalid(f"Tool '{name}' not found in provided tools")
            return "any", name
        return {"auto": "auto", "any": "any", "none": "none"}[t], None

    # handler ---------------------------------------------------------------
    async def messages(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_headers(request)
        if body is _INVALID:
            raise self.invalid("There was an error parsing the body of your request: invalid JSON")
        if not isinstance(body, dict):
            raise self.invalid("Input should be a valid dictionary or object to extract fields from")
        convo, stream = self.validate(body)
        reply = _plan(self.spec.name, convo)
        mid = "msg_01" + _b62(22)
        stop_reason = {"tool": "tool_use", "length": "max_tokens", "stop_sequence": "stop_sequence"}.get(
            reply.finish, "end_turn"
        )
        usage = {
            "input_tokens": convo.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": reply.output_tokens,
            "service_tier": "standard",
        }
        tool_id = self.issue_id("toolu_" + _hex()) if reply.finish == "tool" else ""
        if not stream:
            if reply.finish == "tool":
                content: list[dict[str, Any]] = [
                    {"type": "tool_use", "id": tool_id, "name": reply.tool_name, "input": reply.tool_args}
                ]
            else:
                content = [{"type": "text", "text": reply.text}] if reply.words else []
            out = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": convo.model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": reply.stop_sequence,
                "usage": usage,
            }
            return _json_response(200, out, self.extra_headers())

        events: list[bytes] = []

        def emit(name: str, data: dict[str, Any]) -> None:
            events.append(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

        start_msg = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": convo.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        emit("message_start", {"type": "message_start", "message": start_msg})
        if reply.finish == "tool":
            block: dict[str, Any] | None = {
                "type": "tool_use",
                "id": tool_id,
                "name": reply.tool_name,
                "input": {},
            }
        else:  # no block at all when nothing is generated (max_tokens 0, or a stop sequence at once)
            block = {"type": "text", "text": ""} if reply.words else None
        if block is not None:
            emit("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        emit("ping", {"type": "ping"})
        if block is None:
            pass
        elif reply.finish == "tool":
            js = orjson.dumps(reply.tool_args).decode()
            step = max(1, -(-len(js) // 4))
            frags = [""] + [js[k : k + step] for k in range(0, len(js), step)]
            for frag in frags:
                delta = {"type": "input_json_delta", "partial_json": frag}
                emit("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        else:
            for piece in reply.pieces():
                delta = {"type": "text_delta", "text": piece}
                emit("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        if block is not None:
            emit("content_block_stop", {"type": "content_block_stop", "index": 0})
        emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": reply.stop_sequence},
                "usage": {"output_tokens": reply.output_tokens},
            },
        )
        emit("message_stop", {"type": "message_stop"})
        return await self.send_stream(request, events, cut)


# --------------------------------------------------------------------------- Gemini


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Msg:
    """A proto message type of the Gemini API, for its JSON parser's checks (names, types)."""

    def __init__(self, type_name: str, fields: dict[str, Any] | None = None) -> None:
        self.type_name = "type.googleapis.com/google.ai.generativelanguage.v1beta." + type_name
        self.fields: dict[str, Any] = {}
        self.alias: dict[str, str] = {}
        if fields:
            self.set_fields(fields)

    def set_fields(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.alias = {}
        for camel in fields:
            self.alias[camel] = camel
            self.alias[_snake(camel)] = camel


@dataclass(frozen=True)
class _List:
    of: Any


@dataclass(frozen=True)
class _Map:
    of: Any


@dataclass(frozen=True)
class _Enum:
    type_name: str
    values: frozenset[str]


_TYPE = _Enum(
    "Type",
    frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}),
)
_SCHEMA = _Msg("Schema")
_SCHEMA.set_fields(
    {
        "type": _TYPE,
        "format": "str",
        "title": "str",
        "description": "str",
        "nullable": "bool",
        "enum": _List("str"),
        "maxItems": "int",
        "minItems": "int",
        "properties": _Map(_SCHEMA),
        "required": _List("str"),
        "minProperties": "int",
        "maxProperties": "int",
        "minLength": "int",
        "maxLength": "int",
        "pattern": "str",
        "example": "value",
        "anyOf": _List(_SCHEMA),
        "propertyOrdering": _List("str"),
        "default": "value",
        "items": _SCHEMA,
        "minimum": "float",
        "maximum": "float",
    }
)
_BLOB = _Msg("Blob", {"mimeType": "str", "data": "bytes"})
_FILE_DATA = _Msg("FileData", {"mimeType": "str", "fileUri": "str"})
_FUNCTION_CALL = _Msg("FunctionCall", {"id": "str", "name": "str", "args": "struct"})
_FUNCTION_RESPONSE = _Msg(
    "FunctionResponse",
    {
        "id": "str",
        "name": "str",
        "response": "struct",
        "parts": "value",
        "willContinue": "bool",
        "scheduling": "str",
    },
)
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_PART = _Msg(
    "Part",
    {
        "text": "str",
        "inlineData": _BLOB,
        "fileData": _FILE_DATA,
        "functionCall": _FUNCTION_CALL,
        "functionResponse": _FUNCTION_RESPONSE,
        "executableCode": "value",
        "codeExecutionResult": "value",
        "thought": "bool",
        "thoughtSignature": "bytes",
        "videoMetadata": "value",
        "partMetadata": "value",
        "mediaResolution": "value",
    },
)
_CONTENT = _Msg("Content", {"role": "str", "parts": _List(_PART)})
_FUNCTION_DECL = _Msg(
    "FunctionDeclaration",
    {
        "name": "str",
        "description": "str",
        "behavior": "str",
        "parameters": _SCHEMA,
        "parametersJsonSchema": "value",
        "response": _SCHEMA,
        "responseJsonSchema": "value",
    },
)
_TOOL = _Msg(
    "Tool",
    {
        "functionDeclarations": _List(_FUNCTION_DECL),
        "googleSearchRetrieval": "value",
        "codeExecution": "value",
        "googleSearch": "value",
        "urlContext": "value",
        "computerUse": "value",
        "fileSearch": "value",
        "googleMaps": "value",
    },
)
_FC_MODE = _Enum(
    "FunctionCallingConfig.Mode", frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
)
_TOOL_CONFIG = _Msg(
    "ToolConfig",
    {
        "functionCallingConfig": _Msg(
            "FunctionCallingConfig", {"mode": _FC_MODE, "allowedFunctionNames": _List("str")}
        ),
        "retrievalConfig": "value",
    },
)
_SAFETY = _Msg("SafetySetting", {"category": "str", "threshold": "str", "method": "str"})
_THINKING = _Msg(
    "ThinkingConfig", {"includeThoughts": "bool", "thinkingBudget": "int", "thinkingLevel": "str"}
)
_GEN_CONFIG = _Msg(
    "GenerationConfig",
    {
        "stopSequences": _List("str"),
        "responseMimeType": "str",
        "responseSchema": _SCHEMA,
        "responseJsonSchema": "value",
        "responseModalities": _List("str"),
        "candidateCount": "int",
        "maxOutputTokens": "int",
        "temperature": "float",
        "topP": "float",
        "topK": "int",
        "seed": "int",
        "presencePenalty": "float",
        "frequencyPenalty": "float",
        "responseLogprobs": "bool",
        "logprobs": "int",
        "enableEnhancedCivicAnswers": "bool",
        "speechConfig": "value",
        "thinkingConfig": _THINKING,
        "imageConfig": "value",
        "mediaResolution": "str",
    },
)
_GENERATE_REQUEST = _Msg(
    "GenerateContentRequest",
    {
        "model": "str",
        "contents": _List(_CONTENT),
        "tools": _List(_TOOL),
        "toolConfig": _TOOL_CONFIG,
        "safetySettings": _List(_SAFETY),
        "systemInstruction": _CONTENT,
        "generationConfig": _GEN_CONFIG,
        "cachedContent": "str",
    },
)
_SCALAR_TYPES = {
    "str": "TYPE_STRING",
    "int": "TYPE_INT32",
    "float": "TYPE_FLOAT",
    "bool": "TYPE_BOOL",
    "bytes": "TYPE_BYTES",
    "struct": "type.googleapis.com/google.protobuf.Struct",
}
_G_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_G_FN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


class _GeminiInvalid(Exception):
    """A JSON-parser rejection: message plus the field it names."""

    def __init__(self, message: str, field_path: str) -> None:
        super().__init__(message)
        self.message = message
        self.field_path = field_path


def _g_show(v: Any) -> str:
    return orjson.dumps(v).decode()


def _g_parse(value: Any, spec: Any, path: str, key: str, parent: str) -> Any:
    """Check one JSON value against its proto type; return it with camelCase field names."""
    if value is None:
        return None
    if isinstance(spec, _List):
        if not isinstance(value, list):  # Google's JSON parser takes a lone value for a repeated field
            value = [value]
        return [_g_parse(v, spec.of, f"{path}[{i}]", key, parent) for i, v in enumerate(value)]
    if isinstance(value, list) and spec != "value":
        at = f" at '{parent}'" if parent else ""
        raise _GeminiInvalid(
            f'Invalid JSON payload received. Unknown name "{key}"{at}: Proto field is not repeating, cannot start list.',
            parent,
        )
    if isinstance(spec, _Msg):
        return _g_parse_msg(value, spec, path)
    if isinstance(spec, _Map):
        if not isinstance(value, dict):
            raise _GeminiInvalid(f"Invalid value at '{path}' (map), {_g_show(value)}", path)
        return {
            k: _g_parse(v, spec.of, f"{path}[{i}].value", "value", f"{path}[{i}]")
            for i, (k, v) in enumerate(value.items())
        }
    if isinstance(spec, _Enum):
        ok = (isinstance(value, str) and value.upper() in spec.values) or _is_int(value)
        if not ok:
            tname = "type.googleapis.com/google.ai.generativelanguage.v1beta." + spec.type_name
            raise _GeminiInvalid(f"Invalid value at '{path}' ({tname}), {_g_show(value)}", path)
        return value.upper() if isinstance(value, str) else value
    if spec == "value":
        return value
    ok = True
    if spec == "str":
        ok = isinstance(value, str)
    elif spec == "int":
        if isinstance(value, str):
            ok = bool(re.fullmatch(r"-?\d+", value.strip()))
            value = int(value) if ok else value
        else:
            ok = _is_int(value) or (isinstance(value, float) and value.is_integer())
            value = int(value) if ok else value
    elif spec == "float":
        ok = _is_num(value) or (isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"))
    elif spec == "bool":
        ok = isinstance(value, bool)
    elif spec == "struct":
        ok = isinstance(value, dict)
    elif spec == "bytes":
        if isinstance(value, str) and not _b64_ok(value):
            raise _GeminiInvalid(
                f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {_g_show(value)}", path
            )
        ok = isinstance(value, str)
    if not ok:
        raise _GeminiInvalid(f"Invalid value at '{path}' ({_SCALAR_TYPES[spec]}), {_g_show(value)}", path)
    return value


def _g_parse_msg(obj: Any, msg: _Msg, path: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _GeminiInvalid(f"Invalid value at '{path}' ({msg.type_name}), {_g_show(obj)}", path)
    out: dict[str, Any] = {}
    for k, v in obj.items():
        camel = msg.alias.get(k)
        if camel is None:
            at = f" at '{path}'" if path else ""
            raise _GeminiInvalid(
                f'Invalid JSON payload received. Unknown name "{k}"{at}: Cannot find field.', path
            )
        sub = f"{path}.{_snake(camel)}" if path else _snake(camel)
        parsed = _g_parse(v, msg.fields[camel], sub, k, path)
        if parsed is not None:
            out[camel] = parsed
    return out


def _g_result_text(response: dict[str, Any]) -> str:
    for k in ("result", "output", "content"):
        if isinstance(response.get(k), str):
            return response[k]
    return orjson.dumps(response).decode()


class _Gemini(_Provider):
    """Gemini API v1beta: ``models/{model}:generateContent`` and ``:streamGenerateContent``."""

    dialect = "gemini"

    def routes(self) -> list[tuple[str, str, _Handler]]:
        # v1beta is the documented surface; current SDKs default to v1, which takes the same bodies.
        routes: list[tuple[str, str, _Handler]] = []
        for version in ("v1beta", "v1"):
            routes += [
                ("POST", f"/{version}/models/{{model_action}}", self.generate),
                ("GET", f"/{version}/models", self.list_models),
                ("GET", f"/{version}/models/{{model_action}}", self.get_model),
            ]
        return routes

    @staticmethod
    def split(request: web.Request) -> tuple[str, str]:
        model, _, action = request.match_info.get("model_action", "").rpartition(":")
        return model, action

    def model_of(self, request: web.Request, body: Any) -> str | None:
        if request.method != "POST":
            return None
        return self.split(request)[0] or None

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return request.method == "POST" and self.split(request)[1] == "streamGenerateContent"

    def error(
        self,
        code: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Reject:
        err: dict[str, Any] = {"code": code, "message": message, "status": _G_STATUS.get(code, "UNKNOWN")}
        if details:
            err["details"] = details
        return _Reject(code, {"error": err}, headers)

    def invalid(self, message: str) -> _Reject:
        return self.error(400, message)

    def fault_error(self, status: int) -> _Reject:
        messages = {
            500: "An internal error has occurred. Please retry or report in the troubleshooting guide.",
            503: "The model is overloaded. Please try again later.",
            504: "Deadline expired before operation could complete.",
        }
        return self.error(status, messages.get(status, f"Mock provider error (HTTP {status})."))

    def rate_limit_error(self, retry_after: float) -> _Reject:
        ra = f"{retry_after:g}"
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{ra}s"},
        ]
        return self.error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            details,
            headers={"retry-after": ra},
        )

    def too_large(self) -> _Reject:
        return self.error(400, "Request payload size exceeds the limit: 20971520 bytes.")

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise self.error(404, f"Method not found: {request.method} {request.path}")

    def auth_state(self, request: web.Request) -> str:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return "missing"
        return "valid" if key == self.spec.api_key else "invalid"

    def check_auth(self, request: web.Request) -> None:
        state = self.auth_state(request)
        if state == "missing":
            raise self.error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if state == "invalid":
            raise self.error(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )

    async def list_models(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        names = sorted(set(self.stats.by_model) | {"gemini-2.5-flash", "gemini-2.5-pro"})
        return _json_response(200, {"models": [self.model_info(n) for n in names]})

    async def get_model(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        return _json_response(200, self.model_info(request.match_info["model_action"]))

    @staticmethod
    def model_info(name: str) -> dict[str, Any]:
        return {
            "name": f"models/{name}",
            "version": "001",
            "displayName": name,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }

    # validation ------------------------------------------------------------
    def validate(self, model: str, body: Any) -> tuple[_Convo, int]:
        if body is _INVALID:
            raise self.invalid("Invalid JSON payload received. Unexpected token.")
        if body is None:
            body = {}
        try:
            req = _g_parse_msg(body, _GENERATE_REQUEST, "")
        except _GeminiInvalid as e:
            detail = {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": e.field_path, "description": e.message}]
                if e.field_path
                else [{"description": e.message}],
            }
            raise self.error(400, e.message, [detail]) from None
        contents = req.get("contents") or []
        if not contents:
            raise self.invalid("* GenerateContentRequest.contents: contents is not specified\n")
        input_tokens = 0
        prev: dict[str, Any] | None = None
        for i, c in enumerate(contents):
            role = c.get("role") or "user"
            if role not in ("user", "model", "function"):
                raise self.invalid("Please use a valid role: user, model.")
            parts = c.get("parts") or []
            if not parts:
                raise self.invalid(
                    f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
                )
            calls = responses = 0
            for j, part in enumerate(parts):
                set_fields = [k for k in _PART_DATA if k in part]
                if not set_fields:
                    raise self.invalid(
                        f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' must "
                        "have one initialized field\n"
                    )
                if len(set_fields) > 1:
                    raise self.invalid(
                        f"Invalid value at 'contents[{i}].parts[{j}]' (oneof), oneof field 'data' is already set. "
                        f"Cannot set '{set_fields[1]}'"
                    )
                for kind, snake in (
                    ("functionCall", "function_call"),
                    ("functionResponse", "function_response"),
                ):
                    if kind in part and not part[kind].get("name"):
                        raise self.invalid(
                            f"* GenerateContentRequest.contents[{i}].parts[{j}].{snake}.name: Name cannot be empty.\n"
                        )
                calls += "functionCall" in part
                responses += "functionResponse" in part
                if "text" in part and not part.get("thought"):
                    input_tokens += _words(part["text"])
            c["_role"] = "model" if role == "model" else "user"
            c["_calls"], c["_responses"] = calls, responses
            if calls and (prev is None or prev["_role"] != "user"):
                raise self.invalid(
                    "Please ensure that function call turn comes immediately after a user turn or after a function "
                    "response turn."
                )
            if responses:
                if prev is None or prev["_role"] != "model" or not prev["_calls"]:
                    raise self.invalid(
                        "Please ensure that function response turn comes immediately after a function call turn."
                    )
                if prev["_calls"] != responses:
                    raise self.invalid(
                        "Please ensure that the number of function response parts is equal to the number of function "
                        "call parts of the function call turn."
                    )
            prev = c
        system = req.get("systemInstruction")
        if system:
            for part in system.get("parts") or []:
                input_tokens += _words(part.get("text") or "")

        tool_names: list[str] = []
        for ti, tool in enumerate(req.get("tools") or []):
            for fi, fd in enumerate(tool.get("functionDeclarations") or []):
                where = f"* GenerateContentRequest.tools[{ti}].function_declarations[{fi}]"
                name = fd.get("name")
                if not name:
                    raise self.invalid(f"{where}.name: Name cannot be empty.\n")
                if not _G_FN_NAME.match(name):
                    raise self.invalid(
                        f"{where}.name: Invalid function name. Must start with a letter or an underscore. Must be "
                        "alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a "
                        "maximum length of 64.\n"
                    )
                if "parameters" in fd and "parametersJsonSchema" in fd:
                    raise self.invalid(
                        f"{where}.parameters_json_schema: parameters and parameters_json_schema are mutually exclusive.\n"
                    )
                tool_names.append(name)

        fcc = (req.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = fcc.get("mode", "AUTO")
        allowed = fcc.get("allowedFunctionNames") or []
        if allowed and mode != "ANY":
            raise self.invalid(
                "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                "allowed_function_names may only be set when the mode is ANY.\n"
            )
        for name in allowed:
            if name not in tool_names:
                raise self.invalid(
                    f"* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                    f"function {name} is not declared.\n"
                )
        choice = {"ANY": "any", "NONE": "none"}.get(mode, "auto")

        gc = req.get("generationConfig") or {}
        for name, lo, hi in (("temperature", 0.0, 2.0), ("topP", 0.0, 1.0)):
            v = gc.get(name)
            if _is_num(v) and not lo <= v <= hi:
                raise self.invalid(
                    f"* GenerateContentRequest.generation_config.{_snake(name)}: must be in the range [{lo}, {hi}]\n"
                )
        n = gc.get("candidateCount") or 1
        if not 1 <= n <= 8:
            raise self.invalid(
                "* GenerateContentRequest.generation_config.candidate_count: must be in the range [1, 8]\n"
            )
        stops = gc.get("stopSequences") or []
        if len(stops) > 5:
            raise self.invalid(
                "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences\n"
            )
        mot = gc.get("maxOutputTokens")
        max_tokens = mot if isinstance(mot, int) and mot > 0 else None

        last = contents[-1]
        tool_results: list[str] | None = None
        if last["_responses"]:
            tool_results = [
                _g_result_text(p["functionResponse"].get("response") or {})
                for p in last["parts"]
                if "functionResponse" in p
            ]
        user_text = ""
        for c in reversed(contents):
            if c["_role"] == "user":
                user_text = " ".join(p["text"] for p in c["parts"] if "text" in p and not p.get("thought"))
                break
        convo = _Convo(
            model=model,
            input_tokens=input_tokens,
            user_text=user_text,
            tool_results=tool_results,
            tool_names=tool_names,
            choice=choice,
            forced_name=allowed[0] if allowed else None,
            max_tokens=max_tokens,
            stops=list(stops),
        )
        return convo, n

    # handler ---------------------------------------------------------------
    async def generate(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        model, action = self.split(request)
        if action not in ("generateContent", "streamGenerateContent") or not model:
            raise self.error(404, f"Method not found: {request.match_info.get('model_action', '')}")
        convo, n = self.validate(model, body)
        reply = _plan(self.spec.name, convo)
        response_id = _b62(22)
        finish = "MAX_TOKENS" if reply.finish == "length" else "STOP"

        def usage(out_tokens: int) -> dict[str, Any]:
            return {
                "promptTokenCount": convo.input_tokens,
                "candidatesTokenCount": out_tokens * n,
                "totalTokenCount": convo.input_tokens + out_tokens * n,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": convo.input_tokens}],
            }

        def response(
            parts_of: Callable[[], list[dict[str, Any]]], done: bool, out_tokens: int
        ) -> dict[str, Any]:
            candidates = []
            for i in range(n):
                cand: dict[str, Any] = {"content": {"parts": parts_of(), "role": "model"}}
                if done:
                    cand["finishReason"] = finish
                cand["index"] = i
                candidates.append(cand)
            return {
                "candidates": candidates,
                "usageMetadata": usage(out_tokens),
                "modelVersion": model,
                "responseId": response_id,
            }

        def call_parts() -> list[dict[str, Any]]:
            fc = {"id": self.issue_id(_b62(8).lower()), "name": reply.tool_name, "args": reply.tool_args}
            return [{"functionCall": fc}]

        if action == "generateContent":
            if reply.finish == "tool":
                out = response(call_parts, True, 1)
            else:
                out = response(lambda: [{"text": reply.text}], True, reply.output_tokens)
            return _json_response(200, out)

        chunks: list[dict[str, Any]] = []
        if reply.finish == "tool":
            chunks.append(response(call_parts, True, 1))
        else:
            pieces = reply.pieces() or [""]
            for k, piece in enumerate(pieces):
                chunks.append(
                    response(
                        lambda p=piece: [{"text": p}], k == len(pieces) - 1, min(k + 1, len(reply.words))
                    )
                )
        if request.query.get("alt") == "sse":
            events = [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks]
            return await self.send_stream(request, events, cut)
        events = [(b"[" if k == 0 else b",\r\n") + orjson.dumps(c) for k, c in enumerate(chunks)]
        events.append(b"]")
        return await self.send_stream(request, events, cut, content_type=_JSON_CT)


# --------------------------------------------------------------------------- lifecycle

_PROVIDERS: dict[str, type[_Provider]] = {"openai": _OpenAI, "anthropic": _Anthropic, "gemini": _Gemini}


class MockProviders:
    """Running mock servers. ``ports`` maps each spec name to the port it is bound to."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.servers: dict[str, _Provider] = {}
        self._runners: list[web.AppRunner] = []

    async def stop(self) -> None:
        """Stop all servers; stalled requests end at once rather than holding shutdown."""
        for server in self.servers.values():
            server.closing.set()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()


async def start(specs: list[MockSpec]) -> MockProviders:
    """Start one server per spec and return once all are listening (port 0 picks a free port)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"mock provider names must be unique: {names}")
    mocks = MockProviders()
    try:
        for spec in specs:
            if spec.dialect not in _PROVIDERS:
                raise ValueError(f"unknown dialect {spec.dialect!r} for mock {spec.name!r}")
            server = _PROVIDERS[spec.dialect](spec)
            runner = web.AppRunner(
                server.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
            )
            await runner.setup()
            mocks._runners.append(runner)
            site = web.TCPSite(runner, spec.host, spec.port)
            await site.start()
            mocks.servers[spec.name] = server
            mocks.ports[spec.name] = int(runner.addresses[0][1])
    except BaseException:
        await mocks.stop()
        raise
    return mocks


def run_forever(specs: list[MockSpec]) -> None:
    """Serve the mocks until SIGINT or SIGTERM, then stop cleanly and return (exit code 0)."""

    async def main() -> None:
        mocks = await start(specs)
        for spec in specs:
            print(
                f"mock {spec.name} ({spec.dialect}) listening on http://{spec.host}:{mocks.ports[spec.name]}",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await mocks.stop()

    asyncio.run(main())


class BackgroundMocks:
    """Mocks served by a private event loop in a daemon thread, for synchronous callers such as SDK tests."""

    def __init__(self, specs: list[MockSpec]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mock-providers", daemon=True)
        self._thread.start()
        try:
            self.mocks = asyncio.run_coroutine_threadsafe(start(specs), self._loop).result(timeout=30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            raise
        self.ports = self.mocks.ports

    def stop(self) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.mocks.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> BackgroundMocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(specs: list[MockSpec]) -> BackgroundMocks:
    """Start the mocks on a background thread; call ``.stop()`` (or use ``with``) when done."""
    return BackgroundMocks(specs)
