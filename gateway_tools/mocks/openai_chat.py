"""The mock OpenAI provider: Chat Completions (``POST /v1/chat/completions``) and
``GET /v1/models``, validated and answered the way OpenAI does."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from aiohttp import web

from .common import (
    _INVALID,
    MOCK_MODE,
    _b62,
    _Convo,
    _Handler,
    _hex,
    _is_int,
    _is_num,
    _json_response,
    _plan,
    _PrefixCache,
    _Provider,
    _Reject,
    _words,
)
from .embeddings import openai_embeddings

# --------------------------------------------------------------------------- OpenAI

# The operator's account as the mock platform names it in its response headers.
OPENAI_ACCOUNT_HEADERS = {
    "openai-organization": "org-mock-operator",
    "openai-project": "proj_mockoperator0123456789",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-tokens": "29999000",
    "x-ratelimit-reset-tokens": "2ms",
}

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
# Content part types per role (openai SDK types/chat/chat_completion_*_message_param.py; a tool
# message's content is a string or text parts only, ChatCompletionToolMessageParam: an image in
# it is refused as "Invalid value: 'image_url'. Supported values are: 'text'.").
_OA_PART_TYPES = {
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "system": ("text",),
    "developer": ("text",),
    "tool": ("text",),
    "function": ("text",),
}
# Function names: a-z, A-Z, 0-9, underscores and dashes, at most 64 characters (API reference,
# "tools.function.name", https://platform.openai.com/docs/api-reference/chat/create).
_OA_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_OA_TOOL_NAME_MAX = 64
# Reasoning models take max_completion_tokens, not max_tokens: the o-series and the gpt-5 family
# (API reference, "max_tokens": "not compatible with o-series models"; the API's refusal, quoted for
# gpt-5 in griptape-ai/ComfyUI-Griptape#312 and continuedev/continue#7052, for gpt-5.1 in
# fish2018/YPrompt#26: "Unsupported parameter: 'max_tokens' is not supported with this model. Use
# 'max_completion_tokens' instead."). The chat-tuned variants (gpt-5-chat-latest, gpt-5.1-chat-latest)
# are not reasoning models and are left out.
_OA_REASONING = re.compile(r"^(o\d|gpt-5)(?!.*-chat)")
# Only the default temperature (1) on reasoning models (OpenAI reasoning guide, "limitations"; the
# refusal "Unsupported value: 'temperature' does not support 0.5 with this model. Only the default (1)
# value is supported." is quoted for gpt-5 in diffbot/code-gpt-docs#445 and tmc/langchaingo#1355).
# gpt-5.1 and later take it while the reasoning effort is none (their default): OpenAI's GPT-5.1
# guide, quoted in vercel/ai#10932 ("temperature and top-p are controllable parameters on gpt-5.1
# when reasoning effort is set to none"); the o-series and gpt-5 (5.0) never do.
_OA_SAMPLING_WITH_NONE = re.compile(r"^gpt-5\.\d")
# Output-token ceilings per model family (OpenAI "Models" pages, each model's "Max output tokens"),
# longest prefix first; models not listed have no ceiling in the mock.
_OA_MAX_OUTPUT = (
    ("gpt-4o-mini", 16384),
    ("gpt-4o", 16384),
    ("gpt-4.1", 32768),
    ("gpt-4-turbo", 4096),
    ("gpt-3.5-turbo", 4096),
    ("gpt-5", 128000),
    ("o1-mini", 65536),
    ("o1", 100000),
    ("o3", 100000),
    ("o4-mini", 100000),
)


def _oa_max_output(model: str) -> int | None:
    return next((limit for prefix, limit in _OA_MAX_OUTPUT if model.startswith(prefix)), None)


def _oa_strict_problem(schema: Any, root: Any, depth: int = 0) -> str | None:
    """Why a strict schema is not one Structured Outputs accepts: every object must set
    additionalProperties false and list every property as required (OpenAI, "Structured
    Outputs", "Supported schemas"). The wording is the API's ("In context=(), 'additionalProperties'
    is required to be supplied and to be false", quoted in xemantic/xemantic-ai-tool-schema#37)."""
    if not isinstance(schema, dict) or depth > 32:
        return None
    t = schema.get("type")
    is_object = t == "object" or (isinstance(t, list) and "object" in t) or "properties" in schema
    if is_object:
        if schema.get("additionalProperties") is not False:
            return "In context=(), 'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        missing = [k for k in props if k not in required]
        if missing:
            return (
                "In context=(), 'required' is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'."
            )
        for sub in props.values():
            if (problem := _oa_strict_problem(sub, root, depth + 1)) is not None:
                return problem
    for key in ("items",):
        if (problem := _oa_strict_problem(schema.get(key), root, depth + 1)) is not None:
            return problem
    for key in ("anyOf", "allOf"):
        for sub in schema.get(key) or []:
            if (problem := _oa_strict_problem(sub, root, depth + 1)) is not None:
                return problem
    for key in ("$defs", "definitions"):
        for sub in (schema.get(key) or {}).values():
            if (problem := _oa_strict_problem(sub, root, depth + 1)) is not None:
                return problem
    return None


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


def _openrouter_error(status: int, message: str | None) -> dict[str, Any]:
    """OpenRouter's error body: the HTTP status again as a numeric ``code`` (docs "Errors")."""
    return {
        "error": {
            "code": status,
            "message": message or "Provider returned error",
            "metadata": {"provider_name": "Mock", "raw": None},
        }
    }


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

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.prompt_cache = _PrefixCache()

    # OpenAI-compatible hosts' known deviations, as fault modes (POST /_mock/faults {"mode": ...}):
    # reasoning: reasoning_content in messages and stream deltas (vLLM, SGLang, DeepSeek, xAI; vLLM
    #   docs "Reasoning Outputs", DeepSeek API "Reasoning Model");
    # no_stream_usage: streams never carry usage, whatever stream_options asks (hosts ignoring it);
    # strict_stream_options: stream_options refused with Mistral's 422 (extra inputs not permitted,
    #   openai/openai-agents-python issue 442) and usage always on the last chunk;
    # error_object: errors as a top-level {"object": "error", ...} (vLLM, Mistral "Errors");
    # error_detail: errors as FastAPI's {"detail": ...} (servers built on FastAPI);
    # cache_hit_usage: cache hits as prompt_cache_hit_tokens, no prompt_tokens_details (DeepSeek
    #   API "Context Caching"; the mock counts half the prompt as a hit).
    # reasoning_field: Groq's ``reasoning`` (not reasoning_content) in messages and stream deltas,
    #   as its reasoning_format "parsed" returns it (Groq "Reasoning" docs; the groq-python SDK's
    #   ChatCompletionMessage.reasoning, groq/groq-python PR 185); OpenRouter names it the same.
    # validation_error: Mistral's 422 whose ``message`` is the validation object
    #   {"detail": [{"type", "loc", "msg", "input"}]} (mistralai/platform-docs-public issue 212);
    # validation_detail: the same list bare, {"detail": [...]}, as Mistral now answers
    #   (Gitlawb/openclaude issue 739, two entries for two fields).
    # error_code: OpenRouter's errors, {"error": {"code": <the HTTP status as a number>, "message",
    #   "metadata"}} with that status (OpenRouter docs "Errors": "The HTTP Response will have the
    #   same status code as error.code").
    # stream_error_first: OpenRouter once it has started a stream: a 200, its keep-alive comment,
    #   then the same numeric-code error as an SSE data event before any token ("any error occurred
    #   while the LLM is producing the output will be emitted ... as an SSE data event").
    # stream_error_mid: OpenRouter's error after tokens went out (docs "Streaming", "Handling Errors
    #   During Streaming"): a chunk with the standard fields, a top-level "error" with a string code,
    #   and finish_reason "error"; the stream then ends without [DONE].
    # usage_with_choices: Together's streams: each choice repeats its content as ``text`` and the
    #   delta carries ``token_id``; the last chunk carries the usage together with its choices and
    #   finish_reason "eos" (no separate usage chunk, stream_options or not). Recorded from
    #   api.together.xyz in meta-llama/llama-stack's integration recordings
    #   (tests/integration/recordings/responses/6730dcde0b73.json); "eos" is Together's finish
    #   reason for an end-of-sequence token (its chat completions answer it, e.g. for Llama 3.1).
    # The error modes answer with the fault's status and message.
    quirks = (
        "reasoning",
        "no_stream_usage",
        "strict_stream_options",
        "error_object",
        "error_detail",
        "cache_hit_usage",
        "reasoning_field",
        "validation_error",
        "validation_detail",
        "error_code",
        "stream_error_first",
        "stream_error_mid",
        "usage_with_choices",
    )

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [
            ("POST", "/v1/chat/completions", self.chat),
            ("GET", "/v1/models", self.models),
            ("POST", "/v1/embeddings", self.embeddings),
        ]

    async def embeddings(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        return await openai_embeddings(self, request, body, cut)

    def extra_headers(self) -> dict[str, str]:
        """The platform's headers on every response (developers.openai.com/api/reference/overview,
        "Debugging requests"; .../docs/guides/rate-limits, "Rate limits in headers"): the request id,
        the API version, the organisation and project of the key, and the key's rate limits. Those
        of the account are the operator's: the gateway never passes them to its clients."""
        return {
            "x-request-id": "req_" + _hex(32),
            "openai-version": "2020-10-01",
            "openai-processing-ms": "42",
            **OPENAI_ACCOUNT_HEADERS,
        }

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

    def typed_parts(
        self, content: Any, path: str, allowed: Iterable[str]
    ) -> Iterator[tuple[str, dict[str, Any], str]]:
        """A message's content parts as (path, part, type), each an object of an allowed type,
        checked one by one as it is read (a string content has none): the API's own errors."""
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise self.bad_type(path, "one of a string or array of objects", content)
        allowed = tuple(allowed)
        for j, part in enumerate(content):
            pp = f"{path}[{j}]"
            if not isinstance(part, dict):
                raise self.bad_type(pp, "an object", part)
            t = part.get("type")
            if t is None:
                raise self.missing(f"{pp}.type")
            if t not in allowed:
                raise self.bad_value(f"{pp}.type", t, allowed)
            yield pp, part, t

    def check_content(self, content: Any, p: str, role: str) -> None:
        for pp, part, t in self.typed_parts(content, p, _OA_PART_TYPES[role]):
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
        self.check_model_limits(body, model)
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
        json_schema = None
        if rf is not None:
            if not isinstance(rf, dict):
                raise self.bad_type("response_format", "an object", rf)
            if rf.get("type") not in ("text", "json_object", "json_schema"):
                raise self.bad_value(
                    "response_format.type", rf.get("type"), ("text", "json_object", "json_schema")
                )
            if rf["type"] == "json_object":
                json_schema: dict[str, Any] | None = {}
            elif rf["type"] == "json_schema":
                js = rf.get("json_schema")
                if not isinstance(js, dict):
                    raise self.missing("response_format.json_schema")
                json_schema = js.get("schema") if isinstance(js.get("schema"), dict) else {}
                # API reference, "response_format.json_schema.name": required.
                if "name" not in js:
                    raise self.missing("response_format.json_schema.name")
                if js.get("strict") is True:
                    problem = _oa_strict_problem(json_schema, json_schema)
                    if problem is not None:
                        raise self.error(
                            400,
                            f"Invalid schema for response_format '{js['name']}': {problem}",
                            param="response_format",
                            code="invalid_json_schema",
                        )
            if rf["type"] == "json_object" and not any(
                "json" in _oa_text(m.get("content")).lower() for m in msgs
            ):
                # API reference, "response_format": "you must also instruct the model to produce JSON
                # yourself via a system or user message"; the API refuses a request whose messages
                # never say "json" (wording quoted in ultimatejimmy/xray.koplugin#33).
                raise self.error(
                    400,
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                    "'json_object'.",
                    param="messages",
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
            json_schema=json_schema,
            tool_schemas={
                t["function"]["name"]: t["function"].get("parameters")
                for t in body.get("tools") or []
                if t.get("type") == "function"
            },
            parallel=body.get("parallel_tool_calls") is not False,
        )
        return convo, bool(stream), include_usage, obfuscate, n

    def check_model_limits(self, body: dict[str, Any], model: str) -> None:
        """Parameters the chosen model rejects: max_tokens on a reasoning model, a token count above
        its output ceiling, top_logprobs without logprobs or above 20 (API reference, "top_logprobs":
        "An integer between 0 and 20 ... logprobs must be set to true if this parameter is used")."""
        reasoning = bool(_OA_REASONING.match(model))
        effort = body.get("reasoning_effort")
        fixed_sampling = reasoning and not (_OA_SAMPLING_WITH_NONE.match(model) and effort in (None, "none"))
        if reasoning and body.get("max_tokens") is not None:
            raise self.error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
                "instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        temperature = body.get("temperature")
        if fixed_sampling and temperature is not None and temperature != 1:
            raise self.error(
                400,
                f"Unsupported value: 'temperature' does not support {temperature} with this model. Only the default "
                "(1) value is supported.",
                param="temperature",
                code="unsupported_value",
            )
        # top_p likewise (the reasoning guide's limitations, as vercel/ai's reasoning-model rule and
        # QuantaAlpha/RepoMaster#8 for gpt-5 report); the API names it an unsupported parameter.
        top_p = body.get("top_p")
        if fixed_sampling and top_p is not None and top_p != 1:
            raise self.error(
                400,
                "Unsupported parameter: 'top_p' is not supported with this model.",
                param="top_p",
                code="unsupported_parameter",
            )
        limit = _oa_max_output(model)
        for name in ("max_tokens", "max_completion_tokens"):
            v = body.get(name)
            if limit is not None and _is_int(v) and v > limit:
                raise self.error(
                    400,
                    f"{name} is too large: {v}. This model supports at most {limit} completion tokens, whereas "
                    f"you provided {v}.",
                    param=name,
                    code="invalid_value",
                )
        top = self.number(body, "top_logprobs", 0, 20, True)
        logprobs = body.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            raise self.bad_type("logprobs", "a boolean", logprobs)
        if top is not None and logprobs is not True:
            raise self.error(
                400,
                "Invalid value for 'logprobs': must be true when 'top_logprobs' is specified.",
                param="logprobs",
                code="invalid_value",
            )

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
            if len(name) > _OA_TOOL_NAME_MAX:
                raise self.error(
                    400,
                    f"Invalid '{p}.function.name': string too long. Expected a string with maximum length "
                    f"{_OA_TOOL_NAME_MAX}, but got a string with length {len(name)} instead.",
                    param=f"{p}.function.name",
                    code="string_above_max_length",
                )
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
            if fn.get("strict") is True:
                problem = _oa_strict_problem(params if params is not None else {"type": "object"}, params)
                if problem is not None:
                    raise self.error(
                        400,
                        f"Invalid schema for function '{name}': {problem}",
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
        ids = sorted(seen | {"gpt-5.5", "gpt-4o-mini", "gpt-4.1"})
        data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in ids]
        return _json_response(200, {"object": "list", "data": data}, self.extra_headers())

    def usage(
        self, prompt: int, completion: int, quirk: str = "ok", cached: int = 0, reasoning: int = 0
    ) -> dict[str, Any]:
        if quirk == "cache_hit_usage":
            hit = prompt // 2
            return {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_cache_hit_tokens": hit,
                "prompt_cache_miss_tokens": prompt - hit,
            }
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def chat(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        quirk = request.get(MOCK_MODE, "ok")
        if quirk in ("error_object", "error_detail"):
            f = self.fault
            message = f.message or f"Mock provider error (HTTP {f.status})."
            if quirk == "error_detail":
                raise _Reject(f.status, {"detail": message})
            raise _Reject(
                f.status,
                {
                    "object": "error",
                    "message": message,
                    "type": "BadRequestError" if f.status < 500 else "InternalServerError",
                    "param": None,
                    "code": f.status,
                },
            )
        if quirk in ("validation_error", "validation_detail"):
            detail = [
                {
                    "type": "float_type",
                    "loc": ["body", "top_p"],
                    "msg": "Input should be a valid number",
                    "input": None,
                },
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "store"],
                    "msg": "Extra inputs are not permitted",
                    "input": False,
                },
            ]
            if quirk == "validation_detail":
                raise _Reject(422, {"detail": detail})
            raise _Reject(
                422,
                {
                    "object": "error",
                    "message": {"detail": detail},
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                },
            )
        if quirk == "error_code":
            f = self.fault
            # "On 429 and 503 responses, OpenRouter may include a standard HTTP Retry-After" (docs "Errors")
            wait = {"retry-after": f"{f.retry_after:g}"} if f.status in (429, 503) else {}
            raise _Reject(f.status, _openrouter_error(f.status, f.message), wait)
        self.check_auth(request)
        if body is _INVALID:
            raise self.error(400, _OA_BAD_JSON)
        if not isinstance(body, dict):
            raise self.bad_type("body", "an object", body)
        if quirk == "strict_stream_options" and "stream_options" in body:
            so = body["stream_options"]
            keys = list(so) if isinstance(so, dict) else []
            raise _Reject(
                422,
                {
                    "object": "error",
                    "message": {
                        "detail": [
                            {
                                "type": "extra_forbidden",
                                "loc": ["body", "stream_options", *keys[:1]],
                                "msg": "Extra inputs are not permitted",
                                "input": so.get(keys[0]) if keys else so,
                            }
                        ]
                    },
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                },
            )
        convo, stream, include_usage, obfuscate, n = self.validate(body)
        if quirk == "stream_error_first" and stream:
            # OpenRouter's keep-alive comment, then the error before any token
            err = orjson.dumps(_openrouter_error(self.fault.status, self.fault.message))
            return await self.send_stream(
                request, [b": OPENROUTER PROCESSING\n\n", b"data: " + err + b"\n\n"], cut
            )
        # usage on the last chunk, with its choices, asked or not
        usage_last = quirk in ("strict_stream_options", "usage_with_choices")
        if quirk == "no_stream_usage":
            include_usage = False
        thought = f"Thinking about: {convo.user_text}".split()
        reasoning = thought if quirk in ("reasoning", "reasoning_field") else []
        rkey = "reasoning" if quirk == "reasoning_field" else "reasoning_content"
        # Reasoning models think unseen: their usage counts the thinking as reasoning tokens.
        effort = body.get("reasoning_effort")
        hidden = len(thought) if not reasoning and effort is not None and effort != "none" else 0
        reply = _plan(self.spec.name, convo)
        cid = "chatcmpl-" + _b62(29)
        created = int(time.time())
        base = {"id": cid, "created": created, "model": convo.model, "system_fingerprint": "fp_mock"}
        finish = {"tool": "tool_calls", "length": "length"}.get(reply.finish, "stop")
        if quirk == "usage_with_choices" and finish == "stop":
            finish = "eos"
        completion = (reply.output_tokens + len(reasoning) + hidden) * n
        prompt_words = " ".join(_oa_text(m.get("content")) for m in body["messages"]).split()
        cached = self.prompt_cache.hit(convo.model, prompt_words) if quirk != "cache_hit_usage" else 0
        usage = self.usage(convo.input_tokens, completion, quirk, cached, (len(reasoning) + hidden) * n)
        calls_of = [
            [(self.issue_id("call_" + _hex()), name, orjson.dumps(a).decode()) for name, a in reply.calls]
            for _ in range(n)
        ]
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
                        {"id": cid_, "type": "function", "function": {"name": name, "arguments": args}}
                        for cid_, name, args in calls_of[i]
                    ]
                elif reply.finish == "refusal":  # OpenAI, "Refusals": the refusal field, no content
                    msg["refusal"] = reply.text
                else:
                    msg["content"] = reply.text
                if reasoning:
                    msg[rkey] = " ".join(reasoning)
                choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": finish})
            out = {
                **base,
                "object": "chat.completion",
                "choices": choices,
                "usage": usage,
                "service_tier": "default",
            }
            return _json_response(200, out, self.extra_headers())

        chunk_base = {**base, "object": "chat.completion.chunk", "service_tier": "default"}
        events: list[bytes] = []

        def emit(choices: list[dict[str, Any]], usage: Any = None) -> None:
            c = {**chunk_base, "choices": choices}
            if include_usage or usage is not None:
                c["usage"] = usage
            if obfuscate:  # random padding the real API adds so chunk sizes do not leak token lengths
                c["obfuscation"] = _b62(secrets.randbelow(12) + 1)
            events.append(b"data: " + orjson.dumps(c) + b"\n\n")

        together = quirk == "usage_with_choices"

        def delta_of(i: int, delta: dict[str, Any]) -> None:
            choice: dict[str, Any] = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
            if together and isinstance(delta.get("content"), str):  # the content again, as text
                delta["token_id"] = secrets.randbelow(128000)
                choice.update(text=delta["content"], seed=None)
            emit([choice])

        for i in range(n):
            for k, word in enumerate(reasoning):  # the thinking comes first
                delta_of(i, {"role": "assistant", rkey: word} if k == 0 else {rkey: " " + word})
            if reply.finish == "tool":
                for index, (call_id, name, args) in enumerate(calls_of[i]):
                    call = {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                    if index == 0:
                        delta_of(
                            i, {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
                        )
                    else:
                        delta_of(i, {"tool_calls": [call]})
                    step = max(1, -(-len(args) // 4))
                    for k in range(0, len(args), step):
                        frag = {"index": index, "function": {"arguments": args[k : k + step]}}
                        delta_of(i, {"tool_calls": [frag]})
            else:
                key = "refusal" if reply.finish == "refusal" else "content"
                first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
                if key == "refusal":
                    first = {"role": "assistant", "content": None, "refusal": ""}
                delta_of(i, first)
                for piece in reply.pieces():
                    delta_of(i, {key: piece})
                if quirk == "stream_error_mid":
                    err = {
                        "code": "server_error",
                        "message": self.fault.message or "Provider disconnected unexpectedly",
                    }
                    halt = {"index": i, "delta": {"content": ""}, "finish_reason": "error"}
                    c = {**chunk_base, "provider": "mock", "error": err, "choices": [halt]}
                    events.append(b"data: " + orjson.dumps(c) + b"\n\n")
                    return await self.send_stream(request, events, cut)
            last = usage_last and i == n - 1
            emit(
                [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}],
                usage if last else None,
            )
        if include_usage and not usage_last:
            emit([], usage)
        events.append(b"data: [DONE]\n\n")
        return await self.send_stream(request, events, cut)
