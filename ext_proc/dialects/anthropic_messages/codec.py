"""Anthropic Messages codec (``POST /v1/messages``; the gateway adds ``anthropic-version``).

Unmapped-field policy (client -> IR): ``mcp_servers``, ``container``, ``context_management`` and unknown top-level
fields are unmapped with their raw values; server tools (``web_search_...``),
``search_result`` blocks, ``file`` sources (Anthropic's Files API), documents with
``citations`` enabled or a ``context``, and server-tool blocks in history are unmapped by
path. ``document`` blocks (base64 or URL PDFs, plain text) are IR documents, their
``title`` the file name. ``output_config.format`` (a JSON schema) is the structured output;
other ``output_config`` keys are unmapped by path. Ignored because they never change the
generated text: ``service_tier``, ``citations`` on text blocks. ``cache_control`` on system,
tool and message blocks is the IR's cache breakpoint (``cache``, its TTL) and is rendered back
where the IR part lands; targets without breakpoints drop it (docs/caching.md).

Reasoning (docs/reasoning.md): ``thinking`` (enabled + budget_tokens, adaptive, disabled)
and ``output_config.effort`` are the IR's reasoning controls; ``thinking`` and
``redacted_thinking`` blocks, in answers and in the history, are IR reasoning parts with
their signatures (https://docs.claude.com/en/docs/build-with-claude/extended-thinking).

Towards Anthropic, a JSON schema goes to ``output_config.format`` with every object schema
closed (``additionalProperties: false``, which Anthropic requires; its own SDK does the same);
JSON mode without a schema has no Anthropic equivalent and is refused. ``strict`` tools keep
``strict`` where the schema's objects are closed.

``max_tokens`` is required by Anthropic but a missing one is tolerated on
parse (the IR leaves it unset and the target applies its default).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ...errors import DEFAULT_STATUS, GatewayError, invalid, kind_for_status, overloaded_as_503, unsupported
from ...translation import reasoning as _reasoning
from ...translation.codec import (
    Codec,
    StreamDecoder,
    StreamEncoder,
    apply_unmapped,
    client_field,
    refuse_json_mode,
)
from ...translation.fields import answer_count as _count
from ...translation.fields import answer_int as _a_int
from ...translation.fields import answer_json as _a_json
from ...translation.fields import answer_obj as _a_obj
from ...translation.fields import answer_objects as _a_objects
from ...translation.fields import answer_opt_str as _a_opt_str
from ...translation.fields import answer_str as _a_str
from ...translation.fields import args_object as _args_object
from ...translation.fields import bad_answer as _bad_answer
from ...translation.fields import error_json as _error_json
from ...translation.fields import invalid_answer as _invalid_answer
from ...translation.fields import nonempty_str as _nonempty_str
from ...translation.fields import objects as _objects
from ...translation.fields import opt_int as _opt_int
from ...translation.fields import opt_num as _opt_num
from ...translation.fields import type_error as _type_error
from ...translation.ir import (
    CACHE_TTLS,
    DEFAULT_CACHE_TTL,
    PDF,
    PLAIN_TEXT,
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    ChatResponse,
    FilePart,
    ImagePart,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    ReasoningPart,
    ResponseFormat,
    StopReason,
    StreamError,
    StreamEvent,
    TextPart,
    Thinking,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
    append_part,
    part_path,
    text_document,
    text_of,
)
from ...translation.markers import inline_system, read_system
from ...translation.names import Rule, ToolRules
from ...translation.schema import all_closed, closed
from ...translation.sse import SSEEvent

DIALECT = "anthropic"
# The family whose reasoning signatures this dialect issues and takes back: Claude's, on
# Anthropic, Bedrock and Vertex alike (a signature is valid on each of them).
FAMILY = "anthropic"

_IGNORED = frozenset({"service_tier"})
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
    }
)

STOP_TO_IR: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    # The context window, not max_tokens, ended the answer: still "cut by a token limit".
    "model_context_window_exceeded": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "other",
}
# IR -> stop_reason. content_filter is closest to "refusal" (a policy stop);
# "other" has no Anthropic value, "end_turn" is the least surprising.
IR_TO_STOP: dict[str, str] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "other": "end_turn",
}

_ERROR_TYPES: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "context_length": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "unknown_endpoint": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
}
_TYPE_KINDS: dict[str, str] = {
    v: k for k, v in _ERROR_TYPES.items() if k not in ("context_length", "unknown_endpoint")
}
_CONTEXT_HINTS = ("prompt is too long", "exceed context limit", "context window", "context length")

_STREAM_CUT = "upstream stream ended unexpectedly"


# ---- small validators -----------------------------------------------------------


# ---- requests -------------------------------------------------------------------


def _parse_image(block: dict[str, Any], path: str, unmapped: list[str]) -> ImagePart | None:
    src = block.get("source")
    if not isinstance(src, dict):
        raise _type_error(f"{path}.source", "an object")
    st = src.get("type")
    if st == "base64":
        return ImagePart(
            media_type=_nonempty_str(src.get("media_type"), f"{path}.source.media_type"),
            data=_nonempty_str(src.get("data"), f"{path}.source.data"),
            path=path,
        )
    if st == "url":
        return ImagePart(url=_nonempty_str(src.get("url"), f"{path}.source.url"), path=path)
    unmapped.append(f"{path}.source")  # "file" (Files API) sources have no IR equivalent
    return None


def _parse_document(
    block: dict[str, Any], path: str, unmapped: list[str], reasons: dict[str, str]
) -> FilePart | None:
    """A ``document`` block: a base64 or URL PDF, or plain text, is an IR document. What only
    Anthropic can do with one (citations, a context, its own Files API) is unmapped."""
    src = block.get("source")
    if not isinstance(src, dict):
        raise _type_error(f"{path}.source", "an object")
    title = block.get("title")
    if title is not None and not isinstance(title, str):
        raise _type_error(f"{path}.title", "a string")
    citations = block.get("citations")
    if citations is not None:
        if not isinstance(citations, dict):
            raise _type_error(f"{path}.citations", "an object")
        if citations.get("enabled") is True:
            unmapped.append(f"{path}.citations")
            reasons[f"{path}.citations"] = "citations come back as citation blocks only Anthropic has"
    if block.get("context") is not None:
        unmapped.append(f"{path}.context")
        reasons[f"{path}.context"] = "a document's context is Anthropic's own; send it as a text block"
    st = src.get("type")
    if st == "base64":
        media_type = _nonempty_str(src.get("media_type"), f"{path}.source.media_type")
        return FilePart(media_type, _nonempty_str(src.get("data"), f"{path}.source.data"), None, title, path)
    if st == "text":
        data = src.get("data")
        if not isinstance(data, str):
            raise _type_error(f"{path}.source.data", "a string")
        return text_document(data, title, path)
    if st == "url":
        return FilePart(PDF, None, _nonempty_str(src.get("url"), f"{path}.source.url"), title, path)
    unmapped.append(f"{path}.source")
    if st == "file":
        reasons[f"{path}.source"] = (
            "a file_id names a file uploaded to Anthropic, which no other provider can read"
        )
    return None


def _parse_output_config(oc: Any, unmapped: list[str], values: dict[str, Any]) -> ResponseFormat | None:
    """``output_config``: its ``format`` (a JSON schema) is the structured output; anything
    else in it is unmapped by its path."""
    if oc is None:
        return None
    if not isinstance(oc, dict):
        raise _type_error("output_config", "an object")
    rf = None
    for key, value in oc.items():
        if key == "format" and value is not None:
            if not isinstance(value, dict):
                raise _type_error("output_config.format", "an object")
            if value.get("type") != "json_schema":
                raise invalid(
                    "'output_config.format.type' must be 'json_schema'", "output_config.format.type"
                )
            schema = value.get("schema")
            if not isinstance(schema, dict):
                raise _type_error("output_config.format.schema", "an object")
            # Anthropic always enforces the schema (constrained decoding): a strict one.
            rf = ResponseFormat("json_schema", schema, None, True)
        elif value is not None and key != "effort":  # a reasoning control: _parse_reasoning_controls
            unmapped.append(f"output_config.{key}")
            values[f"output_config.{key}"] = value
    return rf


def _cache_mark(block: dict[str, Any], path: str) -> str | None:
    """A block's ``cache_control`` as the IR's breakpoint TTL (None: no breakpoint).
    The API takes ``{"type": "ephemeral"}`` with an optional ``ttl`` of 5m or 1h
    (https://docs.claude.com/en/docs/build-with-claude/prompt-caching)."""
    cc = block.get("cache_control")
    if cc is None:
        return None
    if not isinstance(cc, dict):
        raise _type_error(f"{path}.cache_control", "an object")
    if cc.get("type") != "ephemeral":
        raise invalid(f"'{path}.cache_control.type' must be 'ephemeral'", f"{path}.cache_control.type")
    ttl = cc.get("ttl", DEFAULT_CACHE_TTL)
    if ttl not in CACHE_TTLS:
        raise invalid(
            f"'{path}.cache_control.ttl' must be one of {', '.join(CACHE_TTLS)}", f"{path}.cache_control.ttl"
        )
    return str(ttl)


def _cache_control(ttl: str | None) -> dict[str, Any]:
    """The ``cache_control`` key of a block whose IR part ends a cache breakpoint."""
    if ttl is None:
        return {}
    return {
        "cache_control": {"type": "ephemeral"}
        if ttl == DEFAULT_CACHE_TTL
        else {"type": "ephemeral", "ttl": ttl}
    }


def _parse_text_blocks(value: Any, path: str) -> list[TextPart]:
    """``system`` and similar: a string or a list of text blocks."""
    if isinstance(value, str):
        return [TextPart(value)] if value else []
    if not isinstance(value, list):
        raise _type_error(path, "a string or an array of text blocks")
    out: list[TextPart] = []
    for j, b in enumerate(value):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise _type_error(f"{path}[{j}]", "a text block")
        if b["text"]:
            out.append(TextPart(b["text"], _cache_mark(b, f"{path}[{j}]")))
    return out


def _parse_tool_result(
    block: dict[str, Any], path: str, names: dict[str, str], unmapped: list[str]
) -> ToolResultPart:
    tid = _nonempty_str(block.get("tool_use_id"), f"{path}.tool_use_id")
    name = names.get(tid)
    if name is None:
        raise invalid(
            f"'{path}.tool_use_id' does not match any preceding tool_use block", f"{path}.tool_use_id"
        )
    content = block.get("content")
    parts: list[TextPart | ImagePart] = []
    if isinstance(content, str):
        if content:
            parts.append(TextPart(content))
    elif isinstance(content, list):
        for cpath, c in _objects(content, f"{path}.content"):
            ct = c.get("type")
            if ct == "text":
                if not isinstance(c.get("text"), str):
                    raise _type_error(f"{cpath}.text", "a string")
                if c["text"]:
                    parts.append(TextPart(c["text"]))
            elif ct == "image":
                img = _parse_image(c, cpath, unmapped)
                if img is not None:
                    parts.append(img)
            else:
                unmapped.append(cpath)
    elif content is not None:
        raise _type_error(f"{path}.content", "a string or an array of blocks")
    return ToolResultPart(
        tid,
        parts,
        name,
        block.get("is_error") is True,
        path,
        cache=_cache_mark(block, path),
        id_path=f"{path}.tool_use_id",
    )


def _parse_messages(messages: Any, unmapped: list[str], reasons: dict[str, str]) -> list[Message]:
    if not isinstance(messages, list):
        raise _type_error("messages", "an array")
    if not messages:
        raise invalid("'messages' must not be empty", "messages")
    out: list[Message] = []
    names: dict[str, str] = {}

    for path, m in _objects(messages, "messages"):
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"'{path}.role' must be 'user' or 'assistant'", f"{path}.role")
        content = m.get("content")
        if isinstance(content, str):
            if content:
                append_part(out, role, TextPart(content))
        elif isinstance(content, list):
            for bpath, b in _objects(content, f"{path}.content"):
                bt = b.get("type")
                mark = _cache_mark(b, bpath)
                if bt == "text":
                    if not isinstance(b.get("text"), str):
                        raise _type_error(f"{bpath}.text", "a string")
                    if b["text"]:
                        append_part(out, role, TextPart(b["text"], mark))
                elif bt == "image":
                    img = _parse_image(b, bpath, unmapped)
                    if img is not None:
                        img.cache = mark
                        append_part(out, role, img)
                elif bt == "document" and role == "user":
                    doc = _parse_document(b, bpath, unmapped, reasons)
                    if doc is not None:
                        doc.cache = mark
                        append_part(out, role, doc)
                elif bt == "tool_use" and role == "assistant":
                    tid = _nonempty_str(b.get("id"), f"{bpath}.id")
                    name = _nonempty_str(b.get("name"), f"{bpath}.name")
                    inp = b.get("input", {})
                    if not isinstance(inp, dict):
                        raise _type_error(f"{bpath}.input", "an object")
                    names[tid] = name
                    call = ToolCallPart(
                        tid, name, orjson.dumps(inp).decode(), cache=mark, id_path=f"{bpath}.id"
                    )
                    append_part(out, role, call)
                elif bt == "tool_result" and role == "user":
                    append_part(out, "tool", _parse_tool_result(b, bpath, names, unmapped))
                elif bt in ("thinking", "redacted_thinking") and role == "assistant":
                    append_part(out, role, _parse_thinking_block(b, bpath))
                elif isinstance(bt, str):
                    unmapped.append(bpath)
                else:
                    raise _type_error(f"{bpath}.type", "a string")
        else:
            raise _type_error(f"{path}.content", "a string or an array of content blocks")
        # A turn with nothing in it adds nothing to the IR (Anthropic rejects those anyway).
    return out


# ---- reasoning (docs/reasoning.md) ---------------------------------------------------


def _parse_thinking_block(b: dict[str, Any], path: str) -> ReasoningPart:
    """A ``thinking`` / ``redacted_thinking`` block of the history, signature kept as sent."""
    if b.get("type") == "redacted_thinking":
        return ReasoningPart(redacted=_nonempty_str(b.get("data"), f"{path}.data"))
    text = b.get("thinking")
    if not isinstance(text, str):
        raise _type_error(f"{path}.thinking", "a string")
    sig = b.get("signature")
    if sig is not None and not isinstance(sig, str):
        raise _type_error(f"{path}.signature", "a string")
    return ReasoningPart(text, sig or None)


# output_config.effort values (https://docs.claude.com/en/docs/build-with-claude/effort) <-> IR efforts.
_EFFORT_IN = {"low": "low", "medium": "medium", "high": "high", "max": "xhigh"}
_EFFORT_OUT = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
}


def _parse_reasoning_controls(
    body: dict[str, Any], unmapped: list[str], values: dict[str, Any]
) -> tuple[str | None, Thinking | None]:
    """``thinking`` and ``output_config.effort`` -> IR controls (the rest of ``output_config``
    is ``_parse_output_config``'s). Malformed controls are a 400 naming the field."""
    effort = None
    oc = body.get("output_config")
    if oc is not None:
        if not isinstance(oc, dict):
            raise _type_error("output_config", "an object")
        for k, v in oc.items():
            if k == "effort" and v is not None:
                if not isinstance(v, str) or v not in _EFFORT_IN:
                    raise invalid(
                        "'output_config.effort' must be one of low, medium, high, max", "output_config.effort"
                    )
                effort = _EFFORT_IN[v]
    th = body.get("thinking")
    if th is None:
        return effort, None
    if not isinstance(th, dict):
        raise _type_error("thinking", "an object")
    t = th.get("type")
    if t == "enabled":
        budget = th.get("budget_tokens")
        if (
            isinstance(budget, bool)
            or not isinstance(budget, int)
            or not 1 <= budget <= _reasoning.MAX_BUDGET
        ):
            raise _type_error("thinking.budget_tokens", "a positive integer of at most 2147483647")
        return effort, Thinking("enabled", budget, include_thoughts=True)
    if t == "adaptive":
        return effort, Thinking("adaptive", include_thoughts=True)
    if t == "disabled":
        return effort, Thinking("disabled")
    raise invalid("'thinking.type' must be one of enabled, adaptive, disabled", "thinking.type")


def _build_reasoning_controls(req: ChatRequest, body: dict[str, Any], drop: bool = False) -> None:
    """IR controls -> ``thinking`` (+ ``output_config.effort`` for adaptive). A budget must be
    below ``max_tokens`` (extended-thinking docs): a client that set no limit gets room for
    the budget on top of the default; one whose limit is too small gets a smaller budget."""
    effort, t = _reasoning.for_backend(req, ANTHROPIC.reasoning_styles)
    if t is None or t.mode is None:
        return
    if t.mode == "disabled":
        body["thinking"] = {"type": "disabled"}
        return
    _thinking_compatible(req, body, drop)
    if t.mode == "adaptive":
        body["thinking"] = {"type": "adaptive"}
        if effort is not None:
            body.setdefault("output_config", {})["effort"] = _EFFORT_OUT.get(effort, "high")
        return
    budget = max(t.budget_tokens or _reasoning.BUDGETS["medium"], _MIN_BUDGET)
    if req.max_tokens is None:
        body["max_tokens"] += budget
    elif body["max_tokens"] <= budget:
        budget = body["max_tokens"] - 1
        if budget < _MIN_BUDGET:
            raise invalid(
                f"'{client_field(req, 'max_tokens')}' must be more than {_MIN_BUDGET} for the model to think",
                client_field(req, "max_tokens"),
            )
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}


_MIN_BUDGET = 1024  # the smallest budget_tokens the API takes (extended-thinking docs)


def _thinking_compatible(req: ChatRequest, body: dict[str, Any], drop: bool) -> None:
    """Thinking is not compatible with a temperature other than 1, with ``top_k``, with
    ``top_p`` below 0.95, or with forced tool use (extended-thinking docs): refused here in
    the client's words rather than by the provider, or dropped with ``drop_unsupported``. A
    Claude client's own request is the provider's to judge."""
    if req.source_dialect in (DIALECT, "bedrock"):
        return
    clashes = [
        ("temperature", body.get("temperature") not in (None, 1)),
        ("top_k", body.get("top_k") is not None),
        ("top_p", body.get("top_p") is not None and body["top_p"] < 0.95),
        ("tool_choice", (body.get("tool_choice") or {}).get("type") in ("any", "tool")),
    ]
    for name, clash in clashes:
        if not clash:
            continue
        if drop:
            body.pop(name, None)
            continue
        field = client_field(req, name)
        raise invalid(
            f"'{field}' cannot be used with reasoning on a {DIALECT} backend "
            "(thinking takes temperature 1, no top_k, top_p of at least 0.95 and no forced tool use)",
            field,
        )


def _thinking_block(p: ReasoningPart) -> dict[str, Any]:
    if p.redacted is not None:
        return {"type": "redacted_thinking", "data": p.redacted}
    return {"type": "thinking", "thinking": p.text, "signature": p.signature or ""}


def _ours(p: ReasoningPart, req: ChatRequest) -> bool:
    """A signature Claude issued: sealed by the gateway for this family, or sent raw by a
    client of this dialect. Others (another family's, text without one) are not sent back."""
    if p.signature is None and p.redacted is None:
        return False
    return p.origin == FAMILY or (p.origin is None and req.source_dialect in (DIALECT, "bedrock"))


def _parse_tools(tools: Any, unmapped: list[str]) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    out: list[Tool] = []
    for path, t in _objects(tools, "tools"):
        if t.get("type", "custom") != "custom" or "input_schema" not in t:
            unmapped.append(path)  # server tools: web_search, bash, text_editor, ...
            continue
        schema = t["input_schema"]
        if not isinstance(schema, dict):
            raise _type_error(f"{path}.input_schema", "an object")
        desc = t.get("description")
        if desc is not None and not isinstance(desc, str):
            raise _type_error(f"{path}.description", "a string")
        strict = t.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type_error(f"{path}.strict", "a boolean")
        out.append(
            Tool(_nonempty_str(t.get("name"), f"{path}.name"), desc, schema, strict, _cache_mark(t, path))
        )
    return out


def _parse_tool_choice(tc: Any) -> tuple[ToolChoice | None, bool | None]:
    if tc is None:
        return None, None
    if not isinstance(tc, dict):
        raise _type_error("tool_choice", "an object")
    t = tc.get("type")
    if t == "tool":
        choice = ToolChoice("tool", _nonempty_str(tc.get("name"), "tool_choice.name"))
    elif t == "any":
        choice = ToolChoice("required")
    elif t in ("auto", "none"):
        choice = ToolChoice(t)
    else:
        raise invalid("'tool_choice.type' must be one of auto, any, tool, none", "tool_choice.type")
    dp = tc.get("disable_parallel_tool_use")
    if dp is not None and not isinstance(dp, bool):
        raise _type_error("tool_choice.disable_parallel_tool_use", "a boolean")
    return choice, (None if dp is None else not dp)


def _image_block(p: ImagePart) -> dict[str, Any]:
    if p.data is not None:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": p.media_type or "image/jpeg", "data": p.data},
        }
    return {"type": "image", "source": {"type": "url", "url": p.url}}


def _tool(t: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name}
    if t.description is not None:
        out["description"] = t.description
    out["input_schema"] = t.parameters
    if t.strict and all_closed(t.parameters):  # strict tool use requires closed objects
        out["strict"] = True
    out.update(_cache_control(t.cache))
    return out


def _document_block(p: FilePart) -> dict[str, Any] | None:
    """An IR document as a ``document`` block: PDFs inline or by URL, plain text inline."""
    text = text_of(p)
    if text is not None:
        source: dict[str, Any] = {"type": "text", "media_type": PLAIN_TEXT, "data": text}
    elif p.media_type != PDF and p.data is not None:
        return None
    elif p.data is not None:
        source = {"type": "base64", "media_type": PDF, "data": p.data}
    elif p.media_type == PDF:
        source = {"type": "url", "url": p.url}
    else:
        return None
    block: dict[str, Any] = {"type": "document", "source": source}
    if p.filename:
        block["title"] = p.filename
    return block


def _build_messages(req: ChatRequest, drop: bool) -> list[dict[str, Any]]:
    """IR turns -> strictly alternating Anthropic turns. Tool results become
    ``tool_result`` blocks at the front of a user turn; user content right
    after them joins that turn."""
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []  # tool_result blocks of the open user turn
    blocks: list[dict[str, Any]] = []  # other blocks of the open turn
    role = ""

    def flush() -> None:
        if not role:
            return
        content: Any = results + blocks
        if role == "user" and not results and len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
            content = blocks[0]["text"]
        out.append({"role": role, "content": content})

    for i, m in enumerate(inline_system(req.messages)):  # system turns in place
        target = "assistant" if m.role == "assistant" else "user"
        if target != role:
            flush()
            role = target
            results = []
            blocks = []
        for j, p in enumerate(m.parts):
            if isinstance(p, TextPart):
                blocks.append({"type": "text", "text": p.text, **_cache_control(p.cache)})
            elif isinstance(p, ImagePart):
                if target == "assistant":
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                blocks.append({**_image_block(p), **_cache_control(p.cache)})
            elif isinstance(p, FilePart):
                # A document block takes PDFs, inline or by URL, and plain text, in a user turn.
                doc = None if target == "assistant" else _document_block(p)
                if doc is None:
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                blocks.append({**doc, **_cache_control(p.cache)})
            elif isinstance(p, ReasoningPart):
                if target == "assistant" and _ours(p, req):
                    blocks.append(_thinking_block(p))
                continue  # another model's reasoning: not Claude's to read back
            elif isinstance(p, ToolCallPart):
                if target != "assistant":
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": p.id,
                        "name": p.name,
                        "input": _args_object(p.arguments, f"messages[{i}].content[{j}].arguments"),
                        **_cache_control(p.cache),
                    }
                )
            else:
                if target == "assistant":
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                block: dict[str, Any] = {"type": "tool_result", "tool_use_id": p.tool_call_id}
                if p.content:
                    if len(p.content) == 1 and isinstance(p.content[0], TextPart):
                        block["content"] = p.content[0].text
                    else:
                        block["content"] = [
                            {"type": "text", "text": c.text} if isinstance(c, TextPart) else _image_block(c)
                            for c in p.content
                        ]
                if p.is_error:
                    block["is_error"] = True
                block.update(_cache_control(p.cache))
                results.append(block)
    flush()
    return _without_blank_assistant_text(out)


def _without_blank_assistant_text(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the API rejects, left out faithfully: assistant text blocks that are empty or
    whitespace only ("text content blocks must contain non-whitespace text") say nothing, and
    a final assistant turn (a prefill) loses its trailing whitespace ("final assistant content
    cannot end with trailing whitespace"); the model continues from the same visible text.
    An assistant turn left empty goes, and the user turns around it become one."""
    out: list[dict[str, Any]] = []
    for n, turn in enumerate(turns):
        if turn["role"] == "assistant":
            blocks = [b for b in turn["content"] if b["type"] != "text" or b["text"].strip()]
            if n == len(turns) - 1 and blocks and blocks[-1]["type"] == "text":
                blocks[-1] = {**blocks[-1], "text": blocks[-1]["text"].rstrip()}
            if not blocks:
                continue
            turn = {**turn, "content": blocks}
        elif out and out[-1]["role"] == "user":  # the assistant turn between them went
            out[-1] = {"role": "user", "content": _blocks(out[-1]["content"]) + _blocks(turn["content"])}
            continue
        out.append(turn)
    return out


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


# ---- responses / usage --------------------------------------------------------------


def usage_from_anthropic(u: Any, base: Usage | None = None, path: str = "usage") -> Usage:
    """Anthropic usage -> IR (input includes the cache reads and writes).
    Fields absent from ``u`` keep their value from ``base`` (message_delta
    usage may carry only output_tokens). Counts are type-checked: a wrong one
    is the provider's fault."""
    u = _a_obj(u, path)
    b = base or Usage()

    def count(key: str, default: int) -> int:
        v = u.get(key)
        return default if v is None else _count(v, f"{path}.{key}")

    read = count("cache_read_input_tokens", b.cached_input_tokens)
    write = count("cache_creation_input_tokens", b.cache_write_tokens)
    plain = count("input_tokens", max(b.input_tokens - b.cached_input_tokens - b.cache_write_tokens, 0))
    return Usage(plain + read + write, count("output_tokens", b.output_tokens), read, write)


def usage_to_anthropic(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": max(u.input_tokens - u.cached_input_tokens - u.cache_write_tokens, 0),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
    }


def _error_from_obj(err: dict[str, Any], status: int | None) -> GatewayError:
    etype = err.get("type")
    message = err.get("message") if isinstance(err.get("message"), str) else None
    message = message or f"upstream {etype or 'error'}"
    kind = _TYPE_KINDS.get(etype) if isinstance(etype, str) else None
    if kind is None:
        kind = kind_for_status(status) if status else "api_error"
    if kind == "invalid_request" and any(h in message.lower() for h in _CONTEXT_HINTS):
        kind = "context_length"
    if status is None:
        status = DEFAULT_STATUS[kind]
    return GatewayError(kind, message, status=status)  # type: ignore[arg-type]


# ---- streams --------------------------------------------------------------------------


class AnthropicStreamDecoder(StreamDecoder):
    """Messages stream events -> IR. Thinking and server-tool blocks are
    skipped; the remaining blocks are renumbered so IR indexes stay contiguous."""

    __slots__ = ("_blocks", "_done", "_next", "_started", "_usage")

    def __init__(self) -> None:
        self._blocks: dict[int, int] = {}  # Anthropic index -> IR index (skipped blocks absent)
        self._next = 0
        self._usage = Usage()
        self._started = False
        self._done = False

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._done:
            return []
        try:
            obj = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self._done = True
            return [
                StreamError(GatewayError("api_error", "upstream sent a malformed stream event", status=502))
            ]
        try:
            if not isinstance(obj, dict):
                raise _bad_answer("event", "an object")
            return self._event(obj)
        except GatewayError as e:  # a wrongly typed event: the stream fails here, well formed
            self._done = True
            return [StreamError(e)]

    def _event(self, obj: dict[str, Any]) -> list[StreamEvent]:
        t = obj.get("type")
        if t == "content_block_delta":
            block = self._blocks.get(_a_int(obj.get("index"), "index", -1))
            if block is None:
                return []
            d = _a_obj(obj.get("delta"), "delta")
            dt = d.get("type")
            if dt == "text_delta":
                text = _a_str(d.get("text"), "delta.text")
            elif dt == "input_json_delta":
                text = _a_str(d.get("partial_json"), "delta.partial_json")
            elif dt == "thinking_delta":
                text = _a_str(d.get("thinking"), "delta.thinking")
            elif dt == "signature_delta":
                sig = _a_str(d.get("signature"), "delta.signature")
                return [BlockDelta(block, "", sig, FAMILY)] if sig else []
            else:
                return []  # citations deltas
            return [BlockDelta(block, text)] if text else []
        if t == "content_block_start":
            cb = _a_obj(obj.get("content_block"), "content_block")
            ct = cb.get("type")
            if ct in ("thinking", "redacted_thinking"):
                return self._reasoning_start(obj, cb)
            if ct not in ("text", "tool_use"):
                return []  # server-tool blocks
            index = _a_int(obj.get("index"), "index", -1)
            out: list[StreamEvent]
            if ct == "text":
                text = _a_str(cb.get("text"), "content_block.text")
                block = self._blocks[index] = self._next
                self._next += 1
                out = [BlockStart(block, "text")]
                if text:
                    out.append(BlockDelta(block, text))
                return out
            inp = cb.get("input")
            args = _a_json(_a_obj(inp, "content_block.input"), "content_block.input") if inp else ""
            block = self._blocks[index] = self._next
            self._next += 1
            out = [
                BlockStart(
                    block,
                    "tool_call",
                    _a_str(cb.get("id"), "content_block.id"),
                    _a_str(cb.get("name"), "content_block.name"),
                )
            ]
            if args:
                out.append(BlockDelta(block, args))
            return out
        if t == "content_block_stop":
            block = self._blocks.get(_a_int(obj.get("index"), "index", -1))
            return [] if block is None else [BlockStop(block)]
        if t == "message_start":
            msg = _a_obj(obj.get("message"), "message")
            u = msg.get("usage")
            if u is not None:
                self._usage = usage_from_anthropic(u, path="message.usage")
            self._started = True
            return [
                MessageStart(
                    _a_str(msg.get("id"), "message.id") or f"msg_{uuid.uuid4().hex}",
                    _a_str(msg.get("model"), "message.model"),
                    self._usage,
                )
            ]
        if t == "message_delta":
            d = _a_obj(obj.get("delta"), "delta")
            u = obj.get("usage")
            if u is not None:
                self._usage = usage_from_anthropic(u, self._usage)
            sr = _a_str(d.get("stop_reason"), "delta.stop_reason")
            return [
                MessageDelta(
                    STOP_TO_IR.get(sr, "other") if sr else None,
                    _a_opt_str(d.get("stop_sequence"), "delta.stop_sequence"),
                    self._usage,
                )
            ]
        if t == "message_stop":
            self._done = True
            return [MessageStop()]
        if t == "error":
            self._done = True
            err = obj.get("error")
            return [StreamError(_error_from_obj(err if isinstance(err, dict) else {}, None))]
        return []  # ping and future event types

    def _reasoning_start(self, obj: dict[str, Any], cb: dict[str, Any]) -> list[StreamEvent]:
        """A thinking block opens (its text and signature follow as deltas); a redacted one
        carries its data here."""
        index = _a_int(obj.get("index"), "index", -1)
        block = self._blocks[index] = self._next
        self._next += 1
        if cb.get("type") == "redacted_thinking":
            return [
                BlockStart(
                    block, "reasoning", redacted=_a_str(cb.get("data"), "content_block.data"), origin=FAMILY
                )
            ]
        out: list[StreamEvent] = [BlockStart(block, "reasoning", origin=FAMILY)]
        text = _a_str(cb.get("thinking"), "content_block.thinking")
        if text:
            out.append(BlockDelta(block, text))
        sig = _a_opt_str(cb.get("signature"), "content_block.signature")
        if sig:
            out.append(BlockDelta(block, "", sig, FAMILY))
        return out

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        self._done = True
        return [StreamError(GatewayError("api_error", _STREAM_CUT, status=502))]


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'


class AnthropicStreamEncoder(StreamEncoder):
    """IR events -> Anthropic SSE (message_start, ping, content blocks,
    message_delta, message_stop). Closes blocks left open and supplies a
    message_delta if the IR stream skipped one, so the client stream is always
    well formed."""

    __slots__ = ("_blocks", "_done", "_model", "_open", "_reasoning", "_sent_delta", "_started", "_tools")

    def __init__(self, req: ChatRequest) -> None:
        self._model = req.model
        self._blocks: dict[int, int] = {}  # IR index -> Anthropic index
        self._tools: set[int] = set()  # IR indexes of tool_use blocks
        self._reasoning: set[int] = set()  # IR indexes of thinking blocks
        self._open: set[int] = set()  # Anthropic indexes open
        self._started = False
        self._sent_delta = False
        self._done = False

    def _start(self, rid: str, usage: Usage) -> bytes:
        self._started = True
        msg = {
            "type": "message_start",
            "message": {
                "id": rid,
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_to_anthropic(usage),
            },
        }
        return b"event: message_start\ndata: " + orjson.dumps(msg) + b"\n\n" + _PING

    def _close_all(self) -> bytes:
        out = b""
        for idx in sorted(self._open):
            out += (
                b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
                + str(idx).encode()
                + b"}\n\n"
            )
        self._open.clear()
        return out

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, BlockDelta):
            idx = self._blocks.get(event.index)
            if idx is None:
                return b""
            if event.index in self._tools:
                delta = b'{"type":"input_json_delta","partial_json":' + orjson.dumps(event.text) + b"}"
            elif event.index in self._reasoning:
                if event.signature is not None:
                    delta = b'{"type":"signature_delta","signature":' + orjson.dumps(event.signature) + b"}"
                elif event.text:
                    delta = b'{"type":"thinking_delta","thinking":' + orjson.dumps(event.text) + b"}"
                else:
                    return b""
            else:
                delta = b'{"type":"text_delta","text":' + orjson.dumps(event.text) + b"}"
            return (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                + str(idx).encode()
                + b',"delta":'
                + delta
                + b"}\n\n"
            )
        pre = (
            b""
            if self._started or isinstance(event, MessageStart | StreamError)
            else self._start(f"msg_{uuid.uuid4().hex}", Usage())
        )
        if isinstance(event, BlockStart):
            idx = self._blocks[event.index] = len(self._blocks)
            self._open.add(idx)
            if event.kind == "tool_call":
                self._tools.add(event.index)
                cb: dict[str, Any] = {
                    "type": "tool_use",
                    "id": event.tool_call_id,
                    "name": event.tool_name,
                    "input": {},
                }
            elif event.kind == "reasoning":
                self._reasoning.add(event.index)
                cb = (
                    {"type": "redacted_thinking", "data": event.redacted}
                    if event.redacted is not None
                    else {"type": "thinking", "thinking": "", "signature": ""}
                )
            else:
                cb = {"type": "text", "text": ""}
            return (
                pre
                + b"event: content_block_start\ndata: "
                + orjson.dumps({"type": "content_block_start", "index": idx, "content_block": cb})
                + b"\n\n"
            )
        if isinstance(event, BlockStop):
            idx = self._blocks.get(event.index)
            if idx is None or idx not in self._open:
                return pre
            self._open.discard(idx)
            return pre + (
                b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
                + str(idx).encode()
                + b"}\n\n"
            )
        if isinstance(event, MessageStart):
            return self._start(event.id, event.usage) if not self._started else b""
        if isinstance(event, MessageDelta):
            self._sent_delta = True
            stop = IR_TO_STOP.get(event.stop_reason or "end_turn", "end_turn")
            body = {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop,
                    "stop_sequence": event.stop_sequence if stop == "stop_sequence" else None,
                },
                "usage": usage_to_anthropic(event.usage or Usage()),
            }
            return pre + self._close_all() + b"event: message_delta\ndata: " + orjson.dumps(body) + b"\n\n"
        if isinstance(event, MessageStop):
            out = pre if self._sent_delta else pre + self.encode(MessageDelta("end_turn"))
            self._done = True
            return out + self._close_all() + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        if isinstance(event, StreamError):
            self._done = True
            return ANTHROPIC.render_stream_error(event.error)
        return pre


# ---- the codec ----------------------------------------------------------------------------


# Tool names: "^[a-zA-Z0-9_-]{1,128}$" (Anthropic API reference, Messages tools[].name; the API
# answers "tools.N.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'").
# Tool-call ids: tool_use.id / tool_result.tool_use_id "^[a-zA-Z0-9_-]+$" (the API answers
# "messages.N.content.M.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'").
TOOL_RULES = ToolRules(name=Rule(r"[a-zA-Z0-9_-]+", 128), call_id=Rule(r"[a-zA-Z0-9_-]+"))


class AnthropicCodec(Codec):
    cache_breakpoints = 4  # "A maximum of 4 blocks with cache_control may be provided"
    dialect = DIALECT
    tool_rules = TOOL_RULES
    field_names = {
        "user": "metadata.user_id",
        "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
        "stop": "stop_sequences",
        "response_format": "output_config.format",
        "reasoning_effort": "output_config.effort",
    }
    reasoning_styles = ("budget", "adaptive")

    def parse_request(
        self, body: dict[str, Any], path_model: str | None = None, path_stream: bool = False
    ) -> ChatRequest:
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        model = _nonempty_str(body.get("model"), "model")
        unmapped: list[str] = []
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key in _HANDLED or key in _IGNORED or value is None:
                continue
            unmapped.append(key)
            values[key] = value
        effort, thinking = _parse_reasoning_controls(body, unmapped, values)
        system = _parse_text_blocks(body["system"], "system") if body.get("system") is not None else []
        reasons: dict[str, str] = {}
        messages = read_system(_parse_messages(body.get("messages"), unmapped, reasons))
        stops = body.get("stop_sequences")
        if stops is None:
            stops = []
        elif not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _type_error("stop_sequences", "an array of strings")
        metadata = body.get("metadata")
        user = None
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise _type_error("metadata", "an object")
            user = metadata.get("user_id")
            if user is not None and not isinstance(user, str):
                raise _type_error("metadata.user_id", "a string")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _type_error("stream", "a boolean")
        tool_choice, parallel = _parse_tool_choice(body.get("tool_choice"))
        return ChatRequest(
            model=model,
            messages=messages,
            system=system,
            tools=_parse_tools(body.get("tools"), unmapped),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel,
            max_tokens=_opt_int(body, "max_tokens"),
            temperature=_opt_num(body, "temperature"),
            top_p=_opt_num(body, "top_p"),
            top_k=_opt_int(body, "top_k"),
            stop=stops,
            user=user,
            stream=bool(stream),
            response_format=_parse_output_config(body.get("output_config"), unmapped, values),
            unmapped=unmapped,
            unmapped_reasons=reasons,
            source_dialect=DIALECT,
            field_names=self.field_names,
            unmapped_values=values,
            reasoning_effort=effort,
            thinking=thinking,
        )

    def build_request(
        self,
        req: ChatRequest,
        upstream_model: str,
        *,
        default_max_tokens: int,
        drop_unsupported: bool = False,
    ) -> dict[str, Any]:
        drop = drop_unsupported
        if not drop:
            for name, value in (
                ("seed", req.seed),
                ("presence_penalty", req.presence_penalty),
                ("frequency_penalty", req.frequency_penalty),
            ):
                if value is not None:
                    raise unsupported(client_field(req, name), DIALECT)
            if req.n is not None and req.n != 1:
                raise unsupported(client_field(req, "n"), DIALECT)
            refuse_json_mode(req, DIALECT)
        body: dict[str, Any] = {
            "model": upstream_model,
            "max_tokens": req.max_tokens if req.max_tokens is not None else default_max_tokens,
            "messages": _build_messages(req, drop),
        }
        if req.system:
            body["system"] = (
                req.system[0].text
                if len(req.system) == 1 and req.system[0].cache is None
                else [{"type": "text", "text": p.text, **_cache_control(p.cache)} for p in req.system]
            )
        # Temperature is passed as is: Anthropic accepts 0..1 and rejects more
        # rather than the gateway silently rescaling the client's value.
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.top_k is not None:
            body["top_k"] = req.top_k
        if req.stop:
            body["stop_sequences"] = list(req.stop)
        if req.user is not None:
            body["metadata"] = {"user_id": req.user}
        if req.stream:
            body["stream"] = True
        rf = req.response_format
        if rf is not None and rf.type == "json_schema" and rf.schema is not None:
            body.setdefault("output_config", {})["format"] = {
                "type": "json_schema",
                "schema": closed(rf.schema),
            }
        if req.tools:
            body["tools"] = [_tool(t) for t in req.tools]
        tc = req.tool_choice
        no_parallel = req.parallel_tool_calls is False
        if tc is not None or no_parallel:
            mode = tc.mode if tc is not None else "auto"
            choice: dict[str, Any] = {"type": {"required": "any"}.get(mode, mode)}
            if mode == "tool":
                choice["name"] = tc.name  # type: ignore[union-attr]
            if no_parallel and mode != "none":
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
        _build_reasoning_controls(req, body, drop)
        apply_unmapped(req, body, DIALECT, drop)
        return body

    def request_path(self, upstream_model: str, stream: bool) -> str:
        return "/v1/messages"

    def parse_response(self, body: dict[str, Any]) -> ChatResponse:
        """Every field read is type-checked: a wrongly typed answer, an error
        object or a message without content is the provider's fault (502)."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        if body.get("type") == "error" or body.get("error") is not None:
            err = body.get("error")
            message = err.get("message") if isinstance(err, dict) else None
            raise _invalid_answer(f"it was an error: {message if isinstance(message, str) else 'no message'}")
        if not isinstance(body.get("content"), list):
            raise _bad_answer("content", "an array of content blocks")
        content: list[TextPart | ToolCallPart | ReasoningPart] = []
        for bpath, b in _a_objects(body["content"], "content"):
            bt = b.get("type")
            if bt == "text":
                text = _a_str(b.get("text"), f"{bpath}.text")
                if text:
                    content.append(TextPart(text))
            elif bt == "tool_use":
                inp = _a_obj(b.get("input"), f"{bpath}.input")
                content.append(
                    ToolCallPart(
                        _a_str(b.get("id"), f"{bpath}.id"),
                        _a_str(b.get("name"), f"{bpath}.name"),
                        _a_json(inp, f"{bpath}.input"),
                    )
                )
            elif bt == "thinking":
                content.append(
                    ReasoningPart(
                        _a_str(b.get("thinking"), f"{bpath}.thinking"),
                        _a_opt_str(b.get("signature"), f"{bpath}.signature") or None,
                        origin=FAMILY,
                    )
                )
            elif bt == "redacted_thinking":
                content.append(ReasoningPart(redacted=_a_str(b.get("data"), f"{bpath}.data"), origin=FAMILY))
            # server tool blocks: no IR equivalent in a response
        sr = _a_str(body.get("stop_reason"), "stop_reason")
        return ChatResponse(
            id=_a_str(body.get("id"), "id") or f"msg_{uuid.uuid4().hex}",
            model=_a_str(body.get("model"), "model"),
            content=content,
            stop_reason=STOP_TO_IR.get(sr, "other") if sr else "end_turn",
            stop_sequence=_a_opt_str(body.get("stop_sequence"), "stop_sequence"),
            usage=usage_from_anthropic(body.get("usage")),
        )

    def render_response(self, resp: ChatResponse) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for j, p in enumerate(resp.content):
            if isinstance(p, TextPart):
                content.append({"type": "text", "text": p.text})
            elif isinstance(p, ReasoningPart):
                content.append(_thinking_block(p))
            else:
                try:
                    inp = _args_object(p.arguments, f"content[{j}].input")
                except GatewayError as e:  # the backend's fault, not the client's
                    raise GatewayError("api_error", f"upstream returned {e.message}", status=502) from None
                content.append({"type": "tool_use", "id": p.id, "name": p.name, "input": inp})
        stop = IR_TO_STOP.get(resp.stop_reason, "end_turn")
        return {
            "id": resp.id,
            "type": "message",
            "role": "assistant",
            "model": resp.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": resp.stop_sequence if stop == "stop_sequence" else None,
            "usage": usage_to_anthropic(resp.usage),
        }

    def stream_decoder(self, answers: int = 1) -> StreamDecoder:
        return AnthropicStreamDecoder()

    def stream_encoder(self, req: ChatRequest) -> StreamEncoder:
        return AnthropicStreamEncoder(req)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        """Usage of a message, a message_start or a message_delta (whose usage
        is cumulative but may hold only output_tokens: absent fields are 0)."""
        u = body.get("usage")
        if u is None:
            msg = body.get("message")
            u = msg.get("usage") if isinstance(msg, dict) else None
        return usage_from_anthropic(u) if u is not None else None

    def rename_model(self, body: dict[str, Any], model: str) -> bool:
        if "model" in body:
            body["model"] = model
            return True
        msg = body.get("message")
        if isinstance(msg, dict) and "model" in msg:
            msg["model"] = model
            return True
        return False

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        status = overloaded_as_503(status)
        obj = _error_json(body)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            return _error_from_obj(err, status)
        text = body.decode("utf-8", "replace").strip() if body else ""
        return GatewayError(
            kind_for_status(status), text[:1000] or f"upstream returned HTTP {status}", status=status
        )

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": _ERROR_TYPES.get(err.kind, "api_error"), "message": err.message},
        }

    def error_status(self, err: GatewayError) -> int:
        """HTTP status to send with ``render_error``: Anthropic clients know overload as 529."""
        return 529 if err.kind == "overloaded" else err.status

    def render_stream_error(self, err: GatewayError) -> bytes:
        return b"event: error\ndata: " + orjson.dumps(self.render_error(err)) + b"\n\n"


ANTHROPIC = AnthropicCodec()
