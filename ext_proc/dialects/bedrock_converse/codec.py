"""AWS Bedrock Converse codec (``POST /model/{modelId}/converse`` and ``/converse-stream``).

Wire format: the Converse API reference
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html,
``API_runtime_ConverseStream.html``) and botocore's ``bedrock-runtime`` service
model, which carries the same shapes with their constraints. Content blocks,
tools and tool choices are unions: an object with exactly one member set.

Mapping notes:

- the model is in the path; ``max_tokens``, ``temperature``, ``top_p`` and stop
  sequences are ``inferenceConfig``; ``top_k`` has no Converse field and goes
  to ``additionalModelRequestFields.top_k`` (the name Anthropic models on
  Bedrock take); the end user goes to ``requestMetadata.user`` (left out when outside its
  alphabet: it only tags the invocation);
- JSON-schema output is ``outputConfig.textFormat`` (the schema as a string, objects
  closed as Claude requires);
  a JSON object without a schema has no Converse equivalent;
- Converse has no ``none`` tool choice: without tool history the tools are
  simply not declared; with history it is refused (or dropped);
- images are bytes (base64 in JSON) of png, jpeg, gif or webp; URL images have
  no equivalent (Converse reads S3 locations only);
- reasoning (docs/reasoning.md): the IR's controls become Claude's
  ``additionalModelRequestFields.thinking`` (enabled + ``budget_tokens``,
  https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-extended-thinking.html;
  adaptive with Claude's ``output_config.effort`` beside it,
  https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-adaptive-thinking.html);
  ``reasoningContent`` blocks (``reasoningText`` with its signature, or
  ``redactedContent``) are IR reasoning parts, of Claude's signature family;
- usage: ``inputTokens`` excludes cache reads and writes, which Converse counts
  in ``cacheReadInputTokens`` / ``cacheWriteInputTokens`` (IR input = all three);
- a ``cachePoint`` block (system, tools, message content) is the IR cache breakpoint on
  what it follows, and an IR breakpoint becomes a ``cachePoint`` after its block.

Streams are AWS event-stream frames (``eventstream``), decoded to the events
``messageStart``, ``contentBlockStart`` (tool calls only: a text block starts
with its first delta), ``contentBlockDelta``, ``contentBlockStop``,
``messageStop`` (the stop reason) and ``metadata`` (usage, the last event); an
exception frame ends the stream with an error.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from ...errors import GatewayError, invalid, kind_for_status, unsupported
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
from ...translation.fields import answer_str as _a_str
from ...translation.fields import args_object as _args_object
from ...translation.fields import bad_answer as _bad_answer
from ...translation.fields import error_json as _error_json
from ...translation.fields import nonempty_str as _nonempty_str
from ...translation.fields import objects as _objects
from ...translation.fields import opt_int as _opt_int
from ...translation.fields import opt_num as _opt_num
from ...translation.fields import type_error as _type_error
from ...translation.ir import (
    DEFAULT_CACHE_TTL,
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
    Part,
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
)
from ...translation.markers import inline_system, read_system
from ...translation.media import MediaRules
from ...translation.names import Rule, ToolRules
from ...translation.schema import all_closed, closed
from ...translation.sse import SSEEvent

# Claude's output_config.effort values <-> IR efforts: Bedrock hands Claude its own request
# fields, so the table is the Anthropic codec's.
from ..anthropic_messages.codec import _EFFORT_IN, _EFFORT_OUT
from .eventstream import EXCEPTION_PREFIX, event_frame, exception_frame

DIALECT = "bedrock"

_HANDLED = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "additionalModelRequestFields",
        "requestMetadata",
        "outputConfig",
    }
)
_INFERENCE = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})

STOP_TO_IR: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    # The context window, not maxTokens, ended the answer: still "cut by a token limit".
    "model_context_window_exceeded": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "other",
    "malformed_tool_use": "other",
}
IR_TO_STOP: dict[str, str] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "content_filter": "content_filtered",
    "refusal": "content_filtered",
    "other": "end_turn",
}

# ImageBlock.format (the service model's ImageFormat enum) <-> media type.
_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}

# RequestMetadataValueString: at most 256 of these characters.
_METADATA_VALUE = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}")

# Exceptions (HTTP errors and in-stream exception frames) -> (kind, status the gateway reports).
# ModelNotReady is 429 over HTTP (the SDKs retry it) but, in a stream or as a kind,
# it means the model cannot serve now: overloaded, failed over like a 503.
_EXCEPTIONS: dict[str, tuple[str, int]] = {
    "throttlingException": ("rate_limit", 429),
    "validationException": ("invalid_request", 400),
    "serviceUnavailableException": ("overloaded", 503),
    "modelNotReadyException": ("overloaded", 503),
    "internalServerException": ("api_error", 500),
    "modelStreamErrorException": ("api_error", 502),
    "modelErrorException": ("api_error", 502),
    "modelTimeoutException": ("timeout", 504),
    "accessDeniedException": ("permission", 403),
    "resourceNotFoundException": ("not_found", 404),
    "serviceQuotaExceededException": ("rate_limit", 429),
    "unrecognizedClientException": ("authentication", 403),
}
# error kind -> the exception a Bedrock client would get for it
_KIND_EXCEPTIONS: dict[str, str] = {
    "invalid_request": "validationException",
    "context_length": "validationException",
    "request_too_large": "validationException",
    "authentication": "unrecognizedClientException",
    "permission": "accessDeniedException",
    "not_found": "resourceNotFoundException",
    "rate_limit": "throttlingException",
    "overloaded": "serviceUnavailableException",
    "timeout": "modelTimeoutException",
    "api_error": "internalServerException",
}
_CONTEXT_HINTS = (
    "too long",
    "context length",
    "context window",
    "maximum context",
    "too many input tokens",
    "too many tokens",
)
_STREAM_CUT = "upstream stream ended unexpectedly"


def _exception_key(name: str) -> str:
    """``ThrottlingException``, ``com.amazon...#ThrottlingException:http://...`` -> ``throttlingException``."""
    name = name.split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].lower() + name[1:]


def _error(name: str, message: str | None, status: int = 0) -> GatewayError:
    """An exception (by name, possibly empty) -> ``GatewayError``; ``status``: the HTTP
    status it came with (0 in a stream: the exception's own)."""
    known = _EXCEPTIONS.get(_exception_key(name)) if name else None
    if known is not None:
        kind, own = known
    else:
        kind, own = (kind_for_status(status) if status else "api_error"), 502
    message = message or f"upstream {name or 'error'}"
    if kind == "invalid_request" and any(h in message.lower() for h in _CONTEXT_HINTS):
        kind = "context_length"
    return GatewayError(kind, message, status=status or own)  # type: ignore[arg-type]


# ---- requests -------------------------------------------------------------------------


def _union(block: dict[str, Any], path: str) -> tuple[str, Any]:
    """The one member a union object sets (``{"text": ...}``, ``{"toolUse": {...}}``)."""
    members = [k for k, v in block.items() if v is not None]
    if len(members) != 1:
        raise invalid(f"'{path}' must set exactly one member", path)
    return members[0], block[members[0]]


def _parse_image(img: Any, path: str, unmapped: list[str]) -> ImagePart | None:
    if not isinstance(img, dict):
        raise _type_error(path, "an object")
    fmt = img.get("format")
    if not isinstance(fmt, str) or fmt not in _MEDIA:
        raise invalid(f"'{path}.format' must be one of {', '.join(_MEDIA)}", f"{path}.format")
    src = img.get("source")
    if not isinstance(src, dict):
        raise _type_error(f"{path}.source", "an object")
    member, value = _union(src, f"{path}.source")
    if member != "bytes":
        unmapped.append(f"{path}.source")  # S3 locations have no IR equivalent
        return None
    return ImagePart(media_type=_MEDIA[fmt], data=_nonempty_str(value, f"{path}.source.bytes"))


def _parse_tool_result(res: Any, path: str, names: dict[str, str], unmapped: list[str]) -> ToolResultPart:
    if not isinstance(res, dict):
        raise _type_error(path, "an object")
    tid = _nonempty_str(res.get("toolUseId"), f"{path}.toolUseId")
    name = names.get(tid)
    if name is None:
        raise invalid(f"'{path}.toolUseId' does not match any preceding toolUse block", f"{path}.toolUseId")
    content = res.get("content")
    if not isinstance(content, list):
        raise _type_error(f"{path}.content", "an array")
    parts: list[TextPart | ImagePart] = []
    for cpath, c in _objects(content, f"{path}.content"):
        member, value = _union(c, cpath)
        if member == "text":
            if not isinstance(value, str):
                raise _type_error(f"{cpath}.text", "a string")
            if value:
                parts.append(TextPart(value))
        elif member == "json":  # the model reads it as text either way
            parts.append(TextPart(orjson.dumps(value).decode()))
        elif member == "image":
            img = _parse_image(value, f"{cpath}.image", unmapped)
            if img is not None:
                parts.append(img)
        else:
            unmapped.append(cpath)
    status = res.get("status")
    if status not in (None, "success", "error"):
        raise invalid(f"'{path}.status' must be 'success' or 'error'", f"{path}.status")
    return ToolResultPart(tid, parts, name, status == "error", id_path=f"{path}.toolUseId")


def _parse_document(doc: Any, path: str, unmapped: list[str]) -> FilePart | None:
    """A ``document`` block with bytes -> an IR document (its name the file name); S3
    locations and formats the IR has no media type for are unmapped."""
    if not isinstance(doc, dict):
        raise _type_error(path, "an object")
    src = doc.get("source")
    fmt = doc.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise _type_error(f"{path}.format", "a string")
    media_type = _DOC_MEDIA.get(fmt or "")
    if not isinstance(src, dict) or not isinstance(src.get("bytes"), str) or media_type is None:
        unmapped.append(path)
        return None
    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        raise _type_error(f"{path}.name", "a string")
    return FilePart(media_type, _nonempty_str(src["bytes"], f"{path}.source.bytes"), None, name)


def _parse_messages(messages: Any, unmapped: list[str]) -> list[Message]:
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
        if not isinstance(content, list):
            raise _type_error(f"{path}.content", "an array of content blocks")
        for bpath, b in _objects(content, f"{path}.content"):
            member, value = _union(b, bpath)
            if member == "text":
                if not isinstance(value, str):
                    raise _type_error(f"{bpath}.text", "a string")
                if value:
                    append_part(out, role, TextPart(value))
            elif member == "image":
                img = _parse_image(value, f"{bpath}.image", unmapped)
                if img is not None:
                    append_part(out, role, img)
            elif member == "document" and role == "user":
                doc = _parse_document(value, f"{bpath}.document", unmapped)
                if doc is not None:
                    append_part(out, role, doc)
            elif member == "toolUse" and role == "assistant":
                if not isinstance(value, dict):
                    raise _type_error(f"{bpath}.toolUse", "an object")
                tid = _nonempty_str(value.get("toolUseId"), f"{bpath}.toolUse.toolUseId")
                name = _nonempty_str(value.get("name"), f"{bpath}.toolUse.name")
                inp = value.get("input", {})
                if not isinstance(inp, dict):
                    raise _type_error(f"{bpath}.toolUse.input", "an object")
                names[tid] = name
                call = ToolCallPart(
                    tid, name, orjson.dumps(inp).decode(), id_path=f"{bpath}.toolUse.toolUseId"
                )
                append_part(out, role, call)
            elif member == "toolResult" and role == "user":
                append_part(out, "tool", _parse_tool_result(value, f"{bpath}.toolResult", names, unmapped))
            elif member == "reasoningContent" and role == "assistant":
                append_part(out, role, _parse_reasoning_block(value, f"{bpath}.reasoningContent"))
            elif member == "cachePoint":
                _mark_last(out[-1].parts if out else [], value, bpath)
            else:
                unmapped.append(bpath)
    return out


# ---- reasoning (docs/reasoning.md) ---------------------------------------------------

# Claude on Bedrock issues Anthropic's signatures: the same family as the Anthropic codec's.
FAMILY = "anthropic"


def _parse_reasoning_block(value: Any, path: str) -> ReasoningPart:
    """A history ``reasoningContent`` block: ``reasoningText`` (text + signature) or ``redactedContent``."""
    if not isinstance(value, dict):
        raise _type_error(path, "an object")
    if value.get("redactedContent") is not None:
        return ReasoningPart(redacted=_nonempty_str(value["redactedContent"], f"{path}.redactedContent"))
    rt = value.get("reasoningText")
    if not isinstance(rt, dict) or not isinstance(rt.get("text"), str):
        raise _type_error(f"{path}.reasoningText.text", "a string")
    sig = rt.get("signature")
    if sig is not None and not isinstance(sig, str):
        raise _type_error(f"{path}.reasoningText.signature", "a string")
    return ReasoningPart(rt["text"], sig or None)


def _answer_reasoning(value: Any) -> ReasoningPart | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("redactedContent"), str):
        return ReasoningPart(redacted=value["redactedContent"], origin=FAMILY)
    rt = value.get("reasoningText")
    if not isinstance(rt, dict) or not isinstance(rt.get("text"), str):
        return None
    sig = rt.get("signature")
    return ReasoningPart(rt["text"], sig if isinstance(sig, str) and sig else None, origin=FAMILY)


def _reasoning_block(p: ReasoningPart, req: ChatRequest) -> dict[str, Any] | None:
    """A reasoning part for the history: only Claude's own (signed) reasoning goes back."""
    if p.signature is None and p.redacted is None:
        return None
    if not (p.origin == FAMILY or (p.origin is None and req.source_dialect in (DIALECT, FAMILY))):
        return None
    if p.redacted is not None:
        return {"reasoningContent": {"redactedContent": p.redacted}}
    return {"reasoningContent": {"reasoningText": {"text": p.text, "signature": p.signature}}}


def _parse_thinking(extra: dict[str, Any]) -> Thinking | None:
    th = extra.get("thinking")
    if th is None:
        return None
    path = "additionalModelRequestFields.thinking"
    if not isinstance(th, dict):
        raise _type_error(path, "an object")
    t = th.get("type")
    if t == "enabled":
        budget = th.get("budget_tokens")
        if (
            isinstance(budget, bool)
            or not isinstance(budget, int)
            or not 1 <= budget <= _reasoning.MAX_BUDGET
        ):
            raise _type_error(f"{path}.budget_tokens", "a positive integer of at most 2147483647")
        return Thinking("enabled", budget, include_thoughts=True)
    if t == "adaptive":
        return Thinking("adaptive", include_thoughts=True)
    if t == "disabled":
        return Thinking("disabled")
    raise invalid(f"'{path}.type' must be one of enabled, adaptive, disabled", f"{path}.type")


def _parse_effort(extra: dict[str, Any]) -> str | None:
    """``additionalModelRequestFields.output_config.effort`` -> the IR effort (``max`` is
    ``xhigh``); the rest of ``output_config`` is not read (unmapped)."""
    oc = extra.get("output_config")
    if oc is None:
        return None
    path = "additionalModelRequestFields.output_config"
    if not isinstance(oc, dict):
        raise _type_error(path, "an object")
    effort = oc.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in _EFFORT_IN:
        raise invalid(f"'{path}.effort' must be one of low, medium, high, max", f"{path}.effort")
    return _EFFORT_IN[effort]


def _build_thinking(req: ChatRequest, body: dict[str, Any]) -> None:
    """IR controls -> ``additionalModelRequestFields.thinking`` (adaptive: with Claude's
    ``output_config.effort`` beside it, as Bedrock's adaptive-thinking guide shows,
    https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-adaptive-thinking.html);
    ``maxTokens`` must stay above a budget (as on Anthropic: ``reasoning.fit_budget``)."""
    effort, t = _reasoning.for_backend(req, BEDROCK.reasoning_styles)
    if t is None or t.mode is None:
        return
    if t.mode == "disabled":
        body.setdefault("additionalModelRequestFields", {})["thinking"] = {"type": "disabled"}
        return
    if t.mode == "adaptive":
        extra = body.setdefault("additionalModelRequestFields", {})
        extra["thinking"] = {"type": "adaptive"}
        if effort is not None:
            extra["output_config"] = {"effort": _EFFORT_OUT.get(effort, "high")}
        return
    inference = body["inferenceConfig"]
    budget, inference["maxTokens"] = _reasoning.fit_budget(
        req, t, inference["maxTokens"], client_field(req, "max_tokens")
    )
    if budget is not None:
        body.setdefault("additionalModelRequestFields", {})["thinking"] = {
            "type": "enabled",
            "budget_tokens": budget,
        }


def _mark_last(parts: Sequence[Part | Tool], point: Any, path: str) -> None:
    """A ``cachePoint`` block: the IR breakpoint on what it follows (none before it: nothing to
    cache). CachePointBlock is ``{"type": "default"}`` (Bedrock API reference, CachePointBlock)."""
    if not isinstance(point, dict) or point.get("type") != "default":
        raise invalid(f"'{path}.cachePoint.type' must be 'default'", f"{path}.cachePoint.type")
    if parts and not isinstance(parts[-1], ReasoningPart):  # a thought is not cached apart
        parts[-1].cache = DEFAULT_CACHE_TTL


def _cache_point(blocks: list[dict[str, Any]], ttl: str | None) -> None:
    """After a block whose IR part ends a cache breakpoint, a ``cachePoint`` (Converse has no TTL
    choice: its default, 5 minutes)."""
    if ttl is not None and blocks:
        blocks.append(_CACHE_POINT)


_CACHE_POINT: dict[str, Any] = {"cachePoint": {"type": "default"}}


def _parse_system(system: Any, unmapped: list[str]) -> list[TextPart]:
    if not isinstance(system, list):
        raise _type_error("system", "an array of system content blocks")
    out: list[TextPart] = []
    for path, b in _objects(system, "system"):
        member, value = _union(b, path)
        if member == "text":
            out.append(TextPart(_nonempty_str(value, f"{path}.text")))
        elif member == "cachePoint":
            _mark_last(out, value, path)
        else:
            unmapped.append(path)  # guardContent
    return out


def _parse_tool_config(tc: Any, unmapped: list[str]) -> tuple[list[Tool], ToolChoice | None]:
    if not isinstance(tc, dict):
        raise _type_error("toolConfig", "an object")
    tools_raw = tc.get("tools")
    if not isinstance(tools_raw, list):
        raise _type_error("toolConfig.tools", "an array")
    tools: list[Tool] = []
    for path, t in _objects(tools_raw, "toolConfig.tools"):
        member, spec = _union(t, path)
        if member == "cachePoint":
            _mark_last(tools, spec, path)
            continue
        if member != "toolSpec" or not isinstance(spec, dict):
            unmapped.append(path)  # system tools
            continue
        schema = spec.get("inputSchema")
        if not isinstance(schema, dict) or not isinstance(schema.get("json"), dict):
            raise _type_error(f"{path}.toolSpec.inputSchema.json", "an object")
        desc = spec.get("description")
        if desc is not None and not isinstance(desc, str):
            raise _type_error(f"{path}.toolSpec.description", "a string")
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type_error(f"{path}.toolSpec.strict", "a boolean")
        tools.append(
            Tool(
                _nonempty_str(spec.get("name"), f"{path}.toolSpec.name"), desc or None, schema["json"], strict
            )
        )
    choice = tc.get("toolChoice")
    if choice is None:
        return tools, None
    if not isinstance(choice, dict):
        raise _type_error("toolConfig.toolChoice", "an object")
    member, value = _union(choice, "toolConfig.toolChoice")
    if member == "auto":
        return tools, ToolChoice("auto")
    if member == "any":
        return tools, ToolChoice("required")
    if member == "tool" and isinstance(value, dict):
        return tools, ToolChoice("tool", _nonempty_str(value.get("name"), "toolConfig.toolChoice.tool.name"))
    raise invalid("'toolConfig.toolChoice' must be one of auto, any, tool", "toolConfig.toolChoice")


def _image_block(p: ImagePart, path: str, drop: bool) -> dict[str, Any] | None:
    fmt = _FORMATS.get((p.media_type or "").lower())
    if p.data is None or fmt is None:
        if drop:
            return None
        raise unsupported(path, DIALECT)  # a URL (Converse reads bytes or S3), or another image type
    return {"image": {"format": fmt, "source": {"bytes": p.data}}}


# Converse DocumentBlock formats, by media type.
_DOC_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_DOC_MEDIA = {fmt: media for media, fmt in _DOC_FORMATS.items()}
# A DocumentBlock name: alphanumerics, single spaces, hyphens, parentheses, square brackets.
_DOC_NAME_BAD = re.compile(r"[^A-Za-z0-9 ()\[\]-]+")


def _document_block(p: FilePart, index: int) -> dict[str, Any] | None:
    """An inline document as a Converse ``document`` block; None for what Converse cannot take."""
    fmt = _DOC_FORMATS.get((p.media_type or "").lower())
    if p.data is None or fmt is None:
        return None
    stem = (p.filename or "").rsplit(".", 1)[0]
    name = " ".join(_DOC_NAME_BAD.sub(" ", stem).split())[:200] or f"document-{index}"
    return {"document": {"format": fmt, "name": name, "source": {"bytes": p.data}}}


def _result_block(p: ToolResultPart, path: str, drop: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for k, c in enumerate(p.content):
        if isinstance(c, TextPart):
            if c.text:
                content.append({"text": c.text})
        else:
            img = _image_block(c, f"{path}.content[{k}]", drop)
            if img is not None:
                content.append(img)
    block: dict[str, Any] = {"toolUseId": p.tool_call_id, "content": content}
    if p.is_error:
        block["status"] = "error"
    return {"toolResult": block}


def _build_messages(req: ChatRequest, drop: bool) -> list[dict[str, Any]]:
    """IR turns -> strictly alternating Converse turns. Tool results become
    ``toolResult`` blocks at the front of a user turn; user content right after
    them joins that turn. A turn left empty is skipped, its neighbours merged."""
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    role = ""

    def flush() -> None:
        content = results + blocks
        if not role or not content:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"] += content
        else:
            out.append({"role": role, "content": content})

    for i, m in enumerate(inline_system(req.messages)):  # system turns in place
        target = "assistant" if m.role == "assistant" else "user"
        if target != role:
            flush()
            role, results, blocks = target, [], []
        for j, p in enumerate(m.parts):
            path = part_path(p, f"messages[{i}].content[{j}]")
            if isinstance(p, TextPart):
                # Converse rejects blank text ("The text field in the ContentBlock object at
                # messages.N.content.M is blank"): whitespace says nothing, so it is left out.
                if p.text.strip():
                    blocks.append({"text": p.text})
                    _cache_point(blocks, p.cache)
            elif isinstance(p, ImagePart):
                if target == "assistant":
                    if drop:
                        continue
                    raise unsupported(path, DIALECT)
                img = _image_block(p, path, drop)
                if img is not None:
                    blocks.append(img)
                    _cache_point(blocks, p.cache)
            elif isinstance(p, FilePart):
                doc = None if target == "assistant" else _document_block(p, len(blocks))
                if doc is None:
                    if drop:
                        continue
                    raise unsupported(path, DIALECT)  # a URL (Converse reads bytes or S3), or another type
                blocks.append(doc)
                _cache_point(blocks, p.cache)
            elif isinstance(p, ReasoningPart):
                block = _reasoning_block(p, req) if target == "assistant" else None
                if block is not None:
                    blocks.append(block)
            elif isinstance(p, ToolCallPart):
                if target != "assistant":
                    if drop:
                        continue
                    raise unsupported(path, DIALECT)
                blocks.append(
                    {
                        "toolUse": {
                            "toolUseId": p.id,
                            "name": p.name,
                            "input": _args_object(p.arguments, f"{path}.arguments"),
                        }
                    }
                )
                _cache_point(blocks, p.cache)
            else:
                if target == "assistant":
                    if drop:
                        continue
                    raise unsupported(path, DIALECT)
                results.append(_result_block(p, path, drop))
                _cache_point(results, p.cache)
    flush()
    return out


def _has_tool_history(req: ChatRequest) -> bool:
    return any(isinstance(p, ToolCallPart | ToolResultPart) for m in req.messages for p in m.parts)


def _tool_config(req: ChatRequest, drop: bool) -> dict[str, Any] | None:
    tc = req.tool_choice
    history = _has_tool_history(req)
    if tc is not None and tc.mode == "none":
        if not history:
            return None  # no tool declared: none can be called
        if not drop:
            raise unsupported(client_field(req, "tool_choice"), DIALECT)
        tc = None
    if not req.tools:
        if history:
            raise invalid(
                f"'{client_field(req, 'tools')}' must declare the tools of the conversation's tool "
                f"calls: a {DIALECT} backend refuses tool calls and results without them",
                client_field(req, "tools"),
            )
        return None
    tools = []
    for t in req.tools:
        spec: dict[str, Any] = {"name": t.name}
        if t.description:
            spec["description"] = t.description
        spec["inputSchema"] = {"json": t.parameters}
        # ToolSpecification.strict: "Flag to enable structured output enforcement on a tool usage
        # response" (bedrock-runtime service model); like Anthropic's, for closed objects only.
        if t.strict and all_closed(t.parameters):
            spec["strict"] = True
        tools.append({"toolSpec": spec})
        _cache_point(tools, t.cache)
    out: dict[str, Any] = {"tools": tools}
    if tc is not None and tc.mode != "auto":
        out["toolChoice"] = {"any": {}} if tc.mode == "required" else {"tool": {"name": tc.name}}
    elif tc is not None:
        out["toolChoice"] = {"auto": {}}
    return out


# ---- responses / usage ---------------------------------------------------------------


def usage_from_bedrock(u: Any, path: str = "usage") -> Usage:
    """Converse ``TokenUsage`` -> IR (input includes the cache reads and writes); type-checked:
    a count that is not one is the provider's fault."""
    u = _a_obj(u, path)

    def n(key: str) -> int:
        return _count(u.get(key), f"{path}.{key}")

    read, write = n("cacheReadInputTokens"), n("cacheWriteInputTokens")
    return Usage(n("inputTokens") + read + write, n("outputTokens"), read, write)


def usage_to_bedrock(u: Usage) -> dict[str, Any]:
    plain = max(u.input_tokens - u.cached_input_tokens - u.cache_write_tokens, 0)
    return {
        "inputTokens": plain,
        "outputTokens": u.output_tokens,
        "totalTokens": u.input_tokens + u.output_tokens,
        "cacheReadInputTokens": u.cached_input_tokens,
        "cacheWriteInputTokens": u.cache_write_tokens,
    }


def _new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _stop_sequence(fields: Any) -> str | None:
    """Converse does not say which stop sequence matched; Anthropic models report it in
    ``additionalModelResponseFields`` when asked to."""
    seq = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return seq if isinstance(seq, str) else None


# ---- streams ----------------------------------------------------------------------------


class BedrockStreamDecoder(StreamDecoder):
    """ConverseStream events -> IR. Text blocks open with their first delta;
    reasoning blocks are skipped and the rest renumbered so IR indexes stay
    contiguous. The stop reason (``messageStop``) and the usage (``metadata``,
    after it) make the IR's MessageDelta once both are in."""

    __slots__ = ("_blocks", "_done", "_next", "_open", "_skipped", "_started", "_stop", "_stop_seq", "_usage")

    def __init__(self) -> None:
        self._blocks: dict[int, int] = {}  # Converse index -> IR index
        self._skipped: set[int] = set()  # Converse indexes of reasoning blocks
        self._open: set[int] = set()  # IR indexes open
        self._next = 0
        self._started = False
        self._stop: str | None = None  # messageStop seen: its stop reason
        self._stop_seq: str | None = None
        self._usage: Usage | None = None  # metadata seen: its usage
        self._done = False

    def _start(self, out: list[StreamEvent]) -> None:
        if not self._started:
            self._started = True
            out.append(MessageStart(_new_id(), ""))

    def _open_block(
        self, index: int, out: list[StreamEvent], kind: str, tid: str = "", name: str = ""
    ) -> int:
        block = self._blocks[index] = self._next
        self._next += 1
        self._open.add(block)
        out.append(
            BlockStart(block, "tool_call", tid, name) if kind == "tool_call" else BlockStart(block, "text")
        )
        return block

    def _finish(self, out: list[StreamEvent]) -> None:
        for block in sorted(self._open):
            out.append(BlockStop(block))
        self._open.clear()
        self._done = True
        stop = STOP_TO_IR.get(self._stop or "", "other") if self._stop else "end_turn"
        out.append(MessageDelta(stop, self._stop_seq, self._usage))
        out.append(MessageStop())

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._done:
            return []
        name = event.event or ""
        try:
            obj = orjson.loads(event.data) if event.data else {}
        except orjson.JSONDecodeError:
            self._done = True
            return [
                StreamError(GatewayError("api_error", "upstream sent a malformed stream event", status=502))
            ]
        if not isinstance(obj, dict):
            obj = {}
        out: list[StreamEvent] = []
        if name.startswith(EXCEPTION_PREFIX):
            self._done = True
            msg = obj.get("message") if isinstance(obj.get("message"), str) else None
            return [StreamError(_error(name[len(EXCEPTION_PREFIX) :], msg))]
        try:
            self._event(out, name, obj)
        except GatewayError as e:  # a wrongly typed event: the stream fails here, well formed
            self._done = True
            out.append(StreamError(e))
        return out

    def _event(self, out: list[StreamEvent], name: str, obj: dict[str, Any]) -> None:
        """One event -> IR events in ``out``; every field read is type-checked (bad_answer)."""
        if name == "contentBlockDelta":
            index = _a_int(obj.get("contentBlockIndex"), "contentBlockIndex")
            delta = _a_obj(obj.get("delta"), "delta")
            if index in self._skipped:
                return
            self._start(out)
            block = self._blocks.get(index)
            if delta.get("reasoningContent") is not None:
                rc = _a_obj(delta["reasoningContent"], "delta.reasoningContent")
                if block is None:
                    block = self._blocks[index] = self._next
                    self._next += 1
                    self._open.add(block)
                    redacted = _a_str(rc.get("redactedContent"), "delta.reasoningContent.redactedContent")
                    out.append(BlockStart(block, "reasoning", redacted=redacted or None, origin=FAMILY))
                text = _a_str(rc.get("text"), "delta.reasoningContent.text")
                sig = _a_str(rc.get("signature"), "delta.reasoningContent.signature")
                if text:
                    out.append(BlockDelta(block, text))
                if sig:
                    out.append(BlockDelta(block, "", sig, FAMILY))
                return
            if delta.get("text") is not None:
                text = _a_str(delta["text"], "delta.text")
                if block is None:
                    block = self._open_block(index, out, "text")
                if text:
                    out.append(BlockDelta(block, text))
                return
            tool = _a_obj(delta.get("toolUse"), "delta.toolUse")
            args = _a_str(tool.get("input"), "delta.toolUse.input")
            if block is not None and args:
                out.append(BlockDelta(block, args))
            return
        if name == "contentBlockStart":
            index = _a_int(obj.get("contentBlockIndex"), "contentBlockIndex")
            start = _a_obj(obj.get("start"), "start")
            if start.get("toolUse") is None:
                return  # tool results, images: no IR equivalent in an answer
            tool = _a_obj(start["toolUse"], "start.toolUse")
            self._start(out)
            self._open_block(
                index,
                out,
                "tool_call",
                _a_str(tool.get("toolUseId"), "start.toolUse.toolUseId"),
                _a_str(tool.get("name"), "start.toolUse.name"),
            )
            return
        if name == "contentBlockStop":
            block = self._blocks.get(_a_int(obj.get("contentBlockIndex"), "contentBlockIndex", -1))
            if block is not None and block in self._open:
                self._open.discard(block)
                out.append(BlockStop(block))
            return
        if name == "messageStart":
            self._start(out)
            return
        if name == "messageStop":
            self._start(out)
            self._stop = _a_str(obj.get("stopReason"), "stopReason") or "end_turn"
            self._stop_seq = _stop_sequence(obj.get("additionalModelResponseFields"))
            if self._usage is not None:
                self._finish(out)
            return
        if name == "metadata":
            u = obj.get("usage")
            self._usage = usage_from_bedrock(u) if u is not None else Usage()
            if self._stop is not None:
                self._finish(out)
        # future event types: nothing for the IR

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        if self._stop is not None:  # the answer is whole; only the usage event is missing
            out: list[StreamEvent] = []
            self._finish(out)
            return out
        self._done = True
        return [StreamError(GatewayError("api_error", _STREAM_CUT, status=502))]


def _frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return event_frame(event_type, orjson.dumps(payload))


class BedrockStreamEncoder(StreamEncoder):
    """IR events -> ConverseStream event-stream frames (for completeness: Bedrock serves no
    clients through the gateway, but the round trip keeps the decoder honest)."""

    __slots__ = ("_blocks", "_done", "_reasoning", "_started", "_stopped", "_tools", "_usage")

    def __init__(self, req: ChatRequest) -> None:
        self._blocks: dict[int, int] = {}
        self._tools: set[int] = set()
        self._reasoning: set[int] = set()
        self._started = False
        self._stopped = False
        self._usage = Usage()
        self._done = False

    def _pre(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return _frame("messageStart", {"role": "assistant"})

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            self._done = True
            return BEDROCK.render_stream_error(event.error)
        pre = self._pre()
        if isinstance(event, BlockStart):
            idx = self._blocks[event.index] = len(self._blocks)
            if event.kind == "reasoning":
                self._reasoning.add(event.index)
                if event.redacted is not None:
                    return pre + _frame(
                        "contentBlockDelta",
                        {
                            "contentBlockIndex": idx,
                            "delta": {"reasoningContent": {"redactedContent": event.redacted}},
                        },
                    )
            if event.kind != "tool_call":
                return pre  # a text block starts with its first delta
            self._tools.add(event.index)
            return pre + _frame(
                "contentBlockStart",
                {
                    "contentBlockIndex": idx,
                    "start": {"toolUse": {"toolUseId": event.tool_call_id, "name": event.tool_name}},
                },
            )
        if isinstance(event, BlockDelta):
            at = self._blocks.get(event.index)
            if at is None:
                return pre
            if event.index in self._reasoning:
                rc = {"signature": event.signature} if event.signature is not None else {"text": event.text}
                return pre + _frame(
                    "contentBlockDelta", {"contentBlockIndex": at, "delta": {"reasoningContent": rc}}
                )
            delta = {"toolUse": {"input": event.text}} if event.index in self._tools else {"text": event.text}
            return pre + _frame("contentBlockDelta", {"contentBlockIndex": at, "delta": delta})
        if isinstance(event, BlockStop):
            at = self._blocks.get(event.index)
            return pre if at is None else pre + _frame("contentBlockStop", {"contentBlockIndex": at})
        if isinstance(event, MessageDelta):
            self._stopped = True
            self._usage = event.usage or Usage()
            return pre + _frame(
                "messageStop", {"stopReason": IR_TO_STOP.get(event.stop_reason or "end_turn", "end_turn")}
            )
        if isinstance(event, MessageStop):
            self._done = True
            stop = b"" if self._stopped else _frame("messageStop", {"stopReason": "end_turn"})
            return (
                pre
                + stop
                + _frame("metadata", {"usage": usage_to_bedrock(self._usage), "metrics": {"latencyMs": 0}})
            )
        return pre


# ---- the codec ---------------------------------------------------------------------------


# Tool names: ToolSpecification.name "Length Constraints: Minimum length of 1. Maximum length of
# 64. Pattern: [a-zA-Z0-9_-]+"; tool-call ids: ToolUseBlock.toolUseId, same constraints (Amazon
# Bedrock API Reference, ToolSpecification, ToolUseBlock, ToolResultBlock).
TOOL_RULES = ToolRules(name=Rule(r"[a-zA-Z0-9_-]+", 64), call_id=Rule(r"[a-zA-Z0-9_-]+", 64))
# Media: ImageBlock.format and DocumentBlock.format (the tables above, by media type).
MEDIA = MediaRules(image_types=frozenset(_MEDIA.values()), document_types=frozenset(_DOC_FORMATS))


class BedrockCodec(Codec):
    cache_breakpoints = 4  # a request takes at most 4 cache checkpoints (Bedrock prompt caching)
    dialect = DIALECT
    tool_rules = TOOL_RULES
    media = MEDIA
    reasoning_styles = ("budget", "adaptive")
    field_names = {
        "max_tokens": "inferenceConfig.maxTokens",
        "temperature": "inferenceConfig.temperature",
        "top_p": "inferenceConfig.topP",
        "stop": "inferenceConfig.stopSequences",
        "top_k": "additionalModelRequestFields.top_k",
        "tools": "toolConfig.tools",
        "tool_choice": "toolConfig.toolChoice",
        "response_format": "outputConfig.textFormat",
        "user": "requestMetadata.user",
    }

    def parse_request(
        self, body: dict[str, Any], path_model: str | None = None, path_stream: bool = False
    ) -> ChatRequest:
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        if not path_model:
            raise invalid("the model must be named in the path", "model")
        unmapped: list[str] = []
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key not in _HANDLED and value is not None:
                unmapped.append(key)
                values[key] = value
        system = _parse_system(body["system"], unmapped) if body.get("system") is not None else []
        messages = read_system(_parse_messages(body.get("messages"), unmapped))
        req = ChatRequest(
            model=path_model,
            messages=messages,
            system=system,
            stream=path_stream,
            unmapped=unmapped,
            source_dialect=DIALECT,
            field_names=self.field_names,
            unmapped_values=values,
        )
        ic = body.get("inferenceConfig")
        if ic is not None:
            if not isinstance(ic, dict):
                raise _type_error("inferenceConfig", "an object")
            req.max_tokens = _opt_int(ic, "maxTokens")
            req.temperature = _opt_num(ic, "temperature")
            req.top_p = _opt_num(ic, "topP")
            stops = ic.get("stopSequences")
            if stops is not None:
                if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                    raise _type_error("inferenceConfig.stopSequences", "an array of strings")
                req.stop = list(stops)
            self._unmapped_keys(ic, "inferenceConfig", _INFERENCE, req)
        if body.get("toolConfig") is not None:
            req.tools, req.tool_choice = _parse_tool_config(body["toolConfig"], unmapped)
        extra = body.get("additionalModelRequestFields")
        if extra is not None:
            if not isinstance(extra, dict):
                raise _type_error("additionalModelRequestFields", "an object")
            req.top_k = _opt_int(extra, "top_k")
            req.thinking = _parse_thinking(extra)
            req.reasoning_effort = _parse_effort(extra)
            self._unmapped_keys(
                extra, "additionalModelRequestFields", {"top_k", "thinking", "output_config"}, req
            )
            if isinstance(extra.get("output_config"), dict):
                self._unmapped_keys(
                    extra["output_config"], "additionalModelRequestFields.output_config", {"effort"}, req
                )
        meta = body.get("requestMetadata")
        if meta is not None:
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise _type_error("requestMetadata", "an object of strings")
            req.user = meta.get("user")
            self._unmapped_keys(meta, "requestMetadata", {"user"}, req)
        oc = body.get("outputConfig")
        if oc is not None:
            if not isinstance(oc, dict):
                raise _type_error("outputConfig", "an object")
            tf = oc.get("textFormat")
            if tf is not None:
                req.response_format = _parse_text_format(tf)
            self._unmapped_keys(oc, "outputConfig", {"textFormat"}, req)
        return req

    @staticmethod
    def _unmapped_keys(
        obj: dict[str, Any], path: str, known: set[str] | frozenset[str], req: ChatRequest
    ) -> None:
        for key, value in obj.items():
            if key not in known and value is not None:
                req.unmapped.append(f"{path}.{key}")
                req.unmapped_values[f"{path}.{key}"] = value

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
            if req.parallel_tool_calls is False:
                raise unsupported(client_field(req, "parallel_tool_calls"), DIALECT)
            refuse_json_mode(req, DIALECT)
        body: dict[str, Any] = {"messages": _build_messages(req, drop)}
        if req.system:
            system: list[dict[str, Any]] = []
            for p in req.system:
                if p.text:
                    system.append({"text": p.text})
                    _cache_point(system, p.cache)
            body["system"] = system
        inference: dict[str, Any] = {
            "maxTokens": req.max_tokens if req.max_tokens is not None else default_max_tokens
        }
        if req.temperature is not None:
            inference["temperature"] = req.temperature
        if req.top_p is not None:
            inference["topP"] = req.top_p
        if req.stop:
            inference["stopSequences"] = list(req.stop)
        body["inferenceConfig"] = inference
        tools = _tool_config(req, drop)
        if tools is not None:
            body["toolConfig"] = tools
        if req.top_k is not None:
            body["additionalModelRequestFields"] = {"top_k": req.top_k}
        _build_thinking(req, body)
        # requestMetadata only tags the invocation (logs): a user Converse cannot take is left out.
        if req.user is not None and _METADATA_VALUE.fullmatch(req.user):
            body["requestMetadata"] = {"user": req.user}
        rf = req.response_format
        if rf is not None and rf.type == "json_schema" and rf.schema is not None:
            # Objects closed, as Claude's structured outputs require (Bedrock documents the same rules).
            schema: dict[str, Any] = {"schema": orjson.dumps(closed(rf.schema)).decode()}
            if rf.name:
                schema["name"] = rf.name
            body["outputConfig"] = {
                "textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}
            }
        apply_unmapped(req, body, DIALECT, drop)
        return body

    def request_path(self, upstream_model: str, stream: bool) -> str:
        # The model ID (or ARN) is one path segment: ':' and '/' are percent-encoded, as the SDKs do.
        return f"/model/{quote(upstream_model, safe='')}/{'converse-stream' if stream else 'converse'}"

    def parse_response(self, body: dict[str, Any]) -> ChatResponse:
        """Every field read is type-checked: a wrongly typed answer is the provider's fault (502)."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        message = _a_obj(_a_obj(body.get("output"), "output").get("message"), "output.message")
        content: list[TextPart | ToolCallPart | ReasoningPart] = []
        for bpath, b in _a_objects(message.get("content"), "output.message.content"):
            if b.get("text") is not None:
                text = _a_str(b["text"], f"{bpath}.text")
                if text:
                    content.append(TextPart(text))
            elif b.get("toolUse") is not None:
                t = _a_obj(b["toolUse"], f"{bpath}.toolUse")
                content.append(
                    ToolCallPart(
                        _a_str(t.get("toolUseId"), f"{bpath}.toolUse.toolUseId"),
                        _a_str(t.get("name"), f"{bpath}.toolUse.name"),
                        _a_json(t.get("input") or {}, f"{bpath}.toolUse.input"),
                    )
                )
            elif "reasoningContent" in b:
                part = _answer_reasoning(b["reasoningContent"])
                if part is not None:
                    content.append(part)
            # citations: no IR equivalent in a response
        sr = _a_str(body.get("stopReason"), "stopReason")
        u = body.get("usage")
        return ChatResponse(
            id=_new_id(),
            model="",
            content=content,
            stop_reason=STOP_TO_IR.get(sr, "other") if sr else "end_turn",
            stop_sequence=_stop_sequence(body.get("additionalModelResponseFields")),
            usage=usage_from_bedrock(u) if u is not None else Usage(),
        )

    def render_response(self, resp: ChatResponse) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for j, p in enumerate(resp.content):
            if isinstance(p, TextPart):
                content.append({"text": p.text})
            elif isinstance(p, ReasoningPart):
                content.append(
                    {"reasoningContent": {"redactedContent": p.redacted}}
                    if p.redacted is not None
                    else {
                        "reasoningContent": {
                            "reasoningText": {"text": p.text, "signature": p.signature or ""}
                        }
                    }
                )
            else:
                try:
                    inp = _args_object(p.arguments, f"content[{j}].input")
                except GatewayError as e:  # the backend's fault, not the client's
                    raise GatewayError("api_error", f"upstream returned {e.message}", status=502) from None
                content.append({"toolUse": {"toolUseId": p.id, "name": p.name, "input": inp}})
        out: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": IR_TO_STOP.get(resp.stop_reason, "end_turn"),
            "usage": usage_to_bedrock(resp.usage),
            "metrics": {"latencyMs": 0},
        }
        if resp.stop_sequence is not None and resp.stop_reason == "stop_sequence":
            out["additionalModelResponseFields"] = {"stop_sequence": resp.stop_sequence}
        return out

    def stream_decoder(self, answers: int = 1) -> StreamDecoder:
        return BedrockStreamDecoder()

    def stream_encoder(self, req: ChatRequest) -> StreamEncoder:
        return BedrockStreamEncoder(req)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        """Usage of a Converse response or of a stream's ``metadata`` event."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        u = body.get("usage")
        return usage_from_bedrock(u) if u is not None else None

    def rename_model(self, body: dict[str, Any], model: str) -> bool:
        return False  # Converse bodies never name the model

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        """Bedrock's errors are ``{"message": ...}`` with the exception in the
        ``x-amzn-ErrorType`` header, which the router stage does not see: the
        status says the kind (a ``__type`` in the body, which other AWS JSON
        services and the gateway's own renderings carry, says it more precisely).
        Model timeouts (408) and model errors (424) become 504 and 502, the
        statuses other dialects' clients know for them."""
        status = {408: 504, 424: 502}.get(status, status)
        obj = _error_json(body)
        message = obj.get("message") or obj.get("Message") if isinstance(obj, dict) else None
        etype = obj.get("__type") if isinstance(obj, dict) else None
        if not isinstance(message, str) and not isinstance(etype, str):
            text = body.decode("utf-8", "replace").strip() if body else ""
            return GatewayError(
                kind_for_status(status), text[:1000] or f"upstream returned HTTP {status}", status=status
            )
        return _error(
            etype if isinstance(etype, str) else "", message if isinstance(message, str) else None, status
        )

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        name = _KIND_EXCEPTIONS.get(err.kind, "internalServerException")
        return {"message": err.message, "__type": name[:1].upper() + name[1:]}

    def render_stream_error(self, err: GatewayError) -> bytes:
        return exception_frame(_KIND_EXCEPTIONS.get(err.kind, "internalServerException"), err.message)


def _parse_text_format(tf: Any) -> ResponseFormat:
    if not isinstance(tf, dict) or tf.get("type") != "json_schema":
        raise invalid("'outputConfig.textFormat.type' must be 'json_schema'", "outputConfig.textFormat.type")
    structure = tf.get("structure")
    js = structure.get("jsonSchema") if isinstance(structure, dict) else None
    if not isinstance(js, dict):
        raise _type_error("outputConfig.textFormat.structure.jsonSchema", "an object")
    raw = _nonempty_str(js.get("schema"), "outputConfig.textFormat.structure.jsonSchema.schema")
    try:
        schema = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid(
            "'outputConfig.textFormat.structure.jsonSchema.schema' must be a JSON schema as a string",
            "outputConfig.textFormat.structure.jsonSchema.schema",
        ) from None
    if not isinstance(schema, dict):
        raise _type_error("outputConfig.textFormat.structure.jsonSchema.schema", "a JSON object schema")
    name = js.get("name")
    return ResponseFormat("json_schema", schema, name if isinstance(name, str) else None)


BEDROCK = BedrockCodec()
