"""The mock Anthropic provider: Messages (``POST /v1/messages``) and ``GET /v1/models``,
validated and answered the way Anthropic does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from .common import (
    _INVALID,
    _b62,
    _b64_ok,
    _Convo,
    _Handler,
    _hex,
    _is_int,
    _is_num,
    _json_response,
    _plan,
    _Provider,
    _Reject,
    _words,
)
from .embeddings import anthropic_count

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
# Image sources take only these media types ("image/jpg" is refused: "...base64.media_type: Input
# should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"); base64 documents only
# "application/pdf" (Anthropic API reference, Messages: Base64ImageSource.media_type,
# Base64PDFSource.media_type; anthropic SDK 2.14.0 types/base64_image_source_param.py).
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
# Tool names and tool_use ids: the patterns the API's own validation errors quote
# ("tools.0.custom.name: String should match pattern ..."; Messages API reference, "tools" and
# "tool_use.id", https://docs.anthropic.com/en/api/messages).
_ANT_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_ANT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
# Extended thinking (https://docs.claude.com/en/docs/build-with-claude/extended-thinking):
# budget_tokens is at least 1024 and below max_tokens; thinking is incompatible with a forced
# tool choice and with temperature other than 1 (and top_k, top_p below 0.95); with tools, the
# assistant turn answering the latest tool results must start with its thinking block.
_ANT_MIN_BUDGET = 1024
_ANT_THINKING_DOC = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
# Prompt caching (https://docs.claude.com/en/docs/build-with-claude/prompt-caching): at most 4
# cache breakpoints per request; a prefix shorter than the model's minimum is not cached (1024
# tokens for Sonnet and Opus, the figure the mock uses for every model); entries live 5 minutes.
_ANT_MAX_BREAKPOINTS = 4
_ANT_MIN_CACHEABLE = 1024
_ANT_CACHE_TTL_S = 300.0
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


def _object_schemas(schema: Any, depth: int = 0) -> list[dict[str, Any]]:
    """Every object schema inside ``schema`` (properties, items, unions, $defs)."""
    if isinstance(schema, list):
        return [o for s in schema for o in _object_schemas(s, depth + 1)] if depth < 32 else []
    if not isinstance(schema, dict) or depth >= 32:
        return []
    out = [schema] if schema.get("type") == "object" or isinstance(schema.get("properties"), dict) else []
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out.extend(o for v in value.values() for o in _object_schemas(v, depth + 1))
        elif key in ("items", "anyOf", "allOf", "oneOf", "prefixItems"):
            out.extend(_object_schemas(value, depth + 1))
    return out


_SIGNING_KEY = (
    b"mock-anthropic-thinking"  # one key for every mock: signatures work across clouds, as real ones do
)


def _sign(thinking: str) -> str:
    """The signature the mock issues with a thinking block (verified when it comes back)."""
    return base64.b64encode(hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()).decode()


def _ant_tags(tags: Iterable[str]) -> str:
    return ", ".join(f"'{t}'" for t in tags)


def _ant_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


# The operator's account as the mock API names it in its response headers.
ANTHROPIC_ACCOUNT_HEADERS = {
    "anthropic-organization-id": "4c9d7a51-0f7e-4d0b-9a53-3f1e0c5b2a10",
    **{
        f"anthropic-ratelimit-{kind}-{what}": value
        for kind, limit in (
            ("requests", 4000),
            ("tokens", 2000000),
            ("input-tokens", 2000000),
            ("output-tokens", 400000),
        )
        for what, value in (
            ("limit", str(limit)),
            ("remaining", str(limit - 1)),
            ("reset", "2026-01-01T00:00:01Z"),
        )
    },
}


class _Anthropic(_Provider):
    """Anthropic Messages API: ``POST /v1/messages`` (and ``GET /v1/models``)."""

    dialect = "anthropic"

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.cache: dict[str, float] = {}  # prompt-prefix digest -> expiry (monotonic seconds)

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [
            ("POST", "/v1/messages", self.messages),
            ("GET", "/v1/models", self.models),
            ("POST", "/v1/messages/count_tokens", self.count_tokens),
        ]

    async def count_tokens(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        return await anthropic_count(self, request, body, cut)

    def extra_headers(self) -> dict[str, str]:
        """Anthropic's headers on every response (docs.claude.com/en/api/overview, "Response
        headers": request-id and anthropic-organization-id, "the organization ID associated with the
        API key"; .../en/api/rate-limits, "Response headers": the key's anthropic-ratelimit-*). Those
        of the account are the operator's: the gateway never passes them to its clients."""
        return {"request-id": "req_" + _b62(24), **ANTHROPIC_ACCOUNT_HEADERS}

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
        ids = sorted(set(self.stats.by_model) | {"claude-sonnet-4-6", "claude-haiku-4-5"})
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
        self.check_text_whitespace(msgs)

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
        thinking_on = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
        if thinking_on:
            self.check_thinking(body, thinking, max_tokens, choice, msgs)
        self.check_breakpoints(body)

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
            json_schema=self.check_output_config(body.get("output_config")),
            tool_schemas=self.tool_schemas(body.get("tools")),
            parallel=not (
                isinstance(body.get("tool_choice"), dict)
                and body["tool_choice"].get("disable_parallel_tool_use")
            ),
        )
        return convo, bool(stream)

    def check_output_config(self, oc: Any) -> dict[str, Any] | None:
        """[structured outputs] ``output_config.format`` is ``{"type": "json_schema", "schema": {...}}``,
        and every object schema in it sets ``additionalProperties: false`` (Anthropic docs, "Structured
        outputs", JSON Schema limitations). Returns the schema the reply must follow."""
        if oc is None:
            return None
        if not isinstance(oc, dict):
            raise self.invalid(
                "output_config: Input should be a valid dictionary or object to extract fields from"
            )
        fmt = oc.get("format")
        if fmt is None:
            return None
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise self.invalid(
                "output_config.format: Input tag found using 'type' does not match any of the expected tags: 'json_schema'"
            )
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise self.invalid("output_config.format.schema: Field required")
        for obj in _object_schemas(schema):
            if obj.get("additionalProperties") is not False:
                raise self.invalid(
                    "output_config.format.schema: For 'object' type, 'additionalProperties' must be explicitly set to false"
                )
        return schema

    @staticmethod
    def tool_schemas(tools: Any) -> dict[str, Any]:
        return {
            t["name"]: t.get("input_schema")
            for t in tools or []
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        }

    def check_text_whitespace(self, msgs: list[Any]) -> None:
        """Whitespace-only text and a prefill ending in whitespace, both rejected by the API: the
        wording is the API's ("messages: text content blocks must contain non-whitespace text",
        "messages: final assistant content cannot end with trailing whitespace"), as reported in
        anthropics/claude-code#23440 and tailcallhq/forgecode#1872; a whitespace block next to
        other text in the same message passes (LibreChat-AI/agents#124 tried both)."""
        for i, m in enumerate(msgs):
            content = m["content"]
            final_assistant = m["role"] == "assistant" and i == len(msgs) - 1
            texts = (
                [content] if isinstance(content, str) else [b["text"] for b in content if b["type"] == "text"]
            )
            if final_assistant:
                if texts and texts[-1] and texts[-1] != texts[-1].rstrip():
                    raise self.invalid(
                        "messages: final assistant content cannot end with trailing whitespace"
                    )
                continue
            if (
                texts
                and all(t and not t.strip() for t in texts)
                and (isinstance(content, str) or all(b["type"] == "text" for b in content))
            ):
                raise self.invalid("messages: text content blocks must contain non-whitespace text")

    def check_thinking(
        self, body: dict[str, Any], thinking: dict[str, Any], max_tokens: int, choice: str, msgs: list[Any]
    ) -> None:
        """The extended-thinking rules (_ANT_THINKING_DOC), in the API's wording."""
        if thinking["type"] == "enabled":
            budget = thinking.get("budget_tokens")
            if budget is None:
                raise self.invalid("thinking.enabled.budget_tokens: Field required")
            if not _is_int(budget):
                raise self.invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
            if budget < _ANT_MIN_BUDGET:
                raise self.invalid(
                    f"thinking.enabled.budget_tokens: Input should be greater than or equal to {_ANT_MIN_BUDGET}"
                )
            if budget >= max_tokens:
                raise self.invalid(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation "
                    f"at {_ANT_THINKING_DOC}#max-tokens-and-context-window-size"
                )
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            raise self.invalid(
                "`temperature` may only be set to 1 when thinking is enabled or in interleaved thinking mode. "
                f"Please consult our documentation at {_ANT_THINKING_DOC}#feature-compatibility"
            )
        if body.get("top_k") is not None:
            raise self.invalid(
                "`top_k` must be unset when thinking is enabled. Please consult our documentation at "
                f"{_ANT_THINKING_DOC}#feature-compatibility"
            )
        top_p = body.get("top_p")
        if top_p is not None and top_p < 0.95:
            raise self.invalid(
                "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. Please consult "
                f"our documentation at {_ANT_THINKING_DOC}#feature-compatibility"
            )
        if choice == "any":
            raise self.invalid("Thinking may not be enabled when tool_choice forces tool use.")
        # The assistant turn in progress (after the last user message that is not only tool
        # results) must open with its thinking block when it used tools (kilocode#5219 quotes it).
        start = 0
        for i, m in enumerate(msgs):
            content = m["content"]
            only_results = (
                isinstance(content, list) and content and all(b["type"] == "tool_result" for b in content)
            )
            if m["role"] == "user" and not only_results:
                start = i + 1
        turn = [(i, m) for i, m in enumerate(msgs) if i >= start and m["role"] == "assistant"]
        uses_tools = any(
            isinstance(m["content"], list) and any(b["type"] == "tool_use" for b in m["content"])
            for _, m in turn
        )
        if turn and uses_tools and msgs[-1]["role"] == "user":
            i, first = turn[0]
            blocks = first["content"] if isinstance(first["content"], list) else [{"type": "text"}]
            head = blocks[0]["type"] if blocks else "text"
            if head not in ("thinking", "redacted_thinking"):
                raise self.invalid(
                    f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{head}`. "
                    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
                    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
                    "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please "
                    f"consult our documentation at {_ANT_THINKING_DOC}"
                )

    def check_breakpoints(self, body: dict[str, Any]) -> None:
        """At most _ANT_MAX_BREAKPOINTS blocks with cache_control (tools, system, messages), in the
        API's wording (tghamm/Anthropic.SDK#50 quotes it)."""
        found = len(self.breakpoints(body))
        if found > _ANT_MAX_BREAKPOINTS:
            raise self.invalid(
                f"A maximum of {_ANT_MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
            )

    @staticmethod
    def breakpoints(body: dict[str, Any]) -> list[int]:
        """Where each cache_control sits, as the count of prompt words (as ``input_tokens`` counts
        them) up to and including its block, in render order: tools, system, messages."""
        marks = [0 for t in body.get("tools") or [] if isinstance(t, dict) and t.get("cache_control")]
        blocks: list[Any] = []
        for part in [
            body.get("system"),
            *[m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)],
        ]:
            if isinstance(part, str):
                blocks.append({"type": "text", "text": part})
            elif isinstance(part, list):
                blocks += part
        words = 0
        for b in blocks:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text" and isinstance(b.get("text"), str):
                words += _words(b["text"])
            nested = b.get("content") if b.get("type") == "tool_result" else None
            subs = [x for x in nested if isinstance(x, dict)] if isinstance(nested, list) else []
            marks += [words for x in [b, *subs] if x.get("cache_control")]
        return marks

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
    def cache_usage(self, body: dict[str, Any], model: str, total: int) -> tuple[int, int]:
        """(read, write) tokens of this request's cache breakpoints: a prefix seen within the TTL
        is read, a new one written; prefixes under _ANT_MIN_CACHEABLE words are not cached."""
        now = time.monotonic()
        self.cache = {k: exp for k, exp in self.cache.items() if exp > now}
        read = write = 0
        marks = sorted({w for w in self.breakpoints(body) if w >= _ANT_MIN_CACHEABLE})
        prefix_key = self.prefix_keys(body, model)
        for w in marks:
            key = prefix_key(w)
            if key in self.cache:
                read = max(read, w)
            self.cache[key] = now + _ANT_CACHE_TTL_S
        if marks and marks[-1] > read:
            write = marks[-1] - read
        read, write = min(read, total), min(write, max(0, total - read))
        return read, write

    @staticmethod
    def prefix_keys(body: dict[str, Any], model: str) -> Any:
        """A function from a word count to a digest of the prompt's first that many words."""
        texts: list[str] = []
        for part in [body.get("system"), *[m.get("content") for m in body.get("messages") or []]]:
            texts.append(_ant_text(part))
        words = " ".join(texts).split()
        tools = orjson.dumps(body.get("tools") or [], option=orjson.OPT_SORT_KEYS)
        return lambda n: hashlib.sha256(model.encode() + tools + " ".join(words[:n]).encode()).hexdigest()

    def check_signatures(self, msgs: list[Any]) -> None:
        """A replayed thinking block must carry the signature issued with it (the API answers a
        changed one with "Invalid `signature` in `thinking` block", _ANT_THINKING_DOC)."""
        for i, m in enumerate(msgs):
            if m["role"] != "assistant" or not isinstance(m["content"], list):
                continue
            for j, b in enumerate(m["content"]):
                if b["type"] == "thinking" and b["signature"] != _sign(b["thinking"]):
                    raise self.invalid(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")

    # handler ---------------------------------------------------------------
    async def messages(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_headers(request)
        if body is _INVALID:
            raise self.invalid("There was an error parsing the body of your request: invalid JSON")
        if not isinstance(body, dict):
            raise self.invalid("Input should be a valid dictionary or object to extract fields from")
        convo, stream = self.validate(body)
        self.check_signatures(body["messages"])
        reply = _plan(self.spec.name, convo)
        thinking_cfg = body.get("thinking")
        thought = ""
        if isinstance(thinking_cfg, dict) and thinking_cfg.get("type") in ("enabled", "adaptive"):
            thought = f"Thinking about: {convo.user_text}".strip()
        mid = "msg_01" + _b62(22)
        stop_reason = {
            "tool": "tool_use",
            "length": "max_tokens",
            "stop_sequence": "stop_sequence",
            "refusal": "refusal",
        }.get(reply.finish, "end_turn")
        read, write = self.cache_usage(body, convo.model, convo.input_tokens)
        out_tokens = reply.output_tokens + _words(thought)
        usage = {
            "input_tokens": convo.input_tokens - read - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "output_tokens": out_tokens,
            "service_tier": "standard",
        }
        if write:
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0}
        calls = (
            [(self.issue_id("toolu_" + _hex()), n, a) for n, a in reply.calls]
            if reply.finish == "tool"
            else []
        )
        content: list[dict[str, Any]] = []
        if thought:
            content.append({"type": "thinking", "thinking": thought, "signature": _sign(thought)})
        if calls:
            content += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
        elif reply.words:
            content.append({"type": "text", "text": reply.text})
        if not stream:
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
        for index, block in enumerate(content):  # no block at all when nothing is generated
            kind = block["type"]
            opening = {
                "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                "tool_use": {**block, "input": {}},
                "text": {"type": "text", "text": ""},
            }[kind]
            emit(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
            if index == 0:
                emit("ping", {"type": "ping"})
            deltas: list[dict[str, Any]]
            if kind == "thinking":
                words = thought.split()
                deltas = [
                    {"type": "thinking_delta", "thinking": w if k == 0 else " " + w}
                    for k, w in enumerate(words)
                ]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "tool_use":
                js = orjson.dumps(block["input"]).decode()
                step = max(1, -(-len(js) // 4))
                frags = [""] + [js[k : k + step] for k in range(0, len(js), step)]
                deltas = [{"type": "input_json_delta", "partial_json": f} for f in frags]
            else:
                deltas = [{"type": "text_delta", "text": piece} for piece in reply.pieces()]
            for delta in deltas:
                emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            emit("content_block_stop", {"type": "content_block_stop", "index": index})
        if not content:
            emit("ping", {"type": "ping"})
        emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": reply.stop_sequence},
                "usage": {"output_tokens": out_tokens},
            },
        )
        emit("message_stop", {"type": "message_stop"})
        return await self.send_stream(request, events, cut)
