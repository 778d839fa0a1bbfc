"""OpenAI Chat Completions codec (``POST {base}/chat/completions``, base ends in ``/v1``).

Unmapped-field policy (client -> IR): top-level fields the IR cannot carry
(``logprobs``, ``top_logprobs``, ``logit_bias``, ``audio``, ``modalities``,
``web_search_options``, ``functions``,
``function_call``, ``top_k`` and anything unknown) are listed in
``ChatRequest.unmapped`` with their raw values, unless they hold their
neutral value (``null``, ``logprobs: false``, ``modalities: ["text"]``,
``logit_bias: {}``). Fields that only concern OpenAI's own bookkeeping or speed and
never change the generated text (``store``, ``metadata``, ``service_tier``,
``prediction``) are ignored. ``prompt_cache_key`` (a prompt-cache routing hint) is carried
to OpenAI backends, Chat and Responses, and dropped towards others. ``safety_identifier`` is the end
user, as ``user`` is (``user`` wins when both are sent). Per message, the
participant ``name`` and an image's ``detail`` hint are ignored; ``file`` parts with
``file_data`` are documents (a ``file_id`` only OpenAI can resolve is unmapped); audio
parts and assistant ``audio`` are unmapped.

Towards OpenAI, JSON mode (``json_object``) is sent as such only when the messages say
"json" (OpenAI refuses it otherwise); else as a non-strict ``json_schema`` that takes any
object, which asks for the same thing. ``strict`` (tools, schemas) is sent where the
schema meets strict mode's rules (every object closed, every property required), since
OpenAI refuses a strict schema that does not; elsewhere the schema is sent unstrict.

A tool message takes text only: a tool result's images follow the turn's tool messages as one
user message naming each call (``translation/markers.py``, ``TOOL_IMAGES``), and such a user
message in a request is read back into its results.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ...errors import DEFAULT_STATUS, GatewayError, invalid, kind_for_status, overloaded_as_503, unsupported
from ...translation import reasoning as _reasoning
from ...translation.codec import Codec, StreamDecoder, StreamEncoder, apply_unmapped, client_field
from ...translation.fields import answer_count as _count
from ...translation.fields import answer_int as _a_int
from ...translation.fields import answer_list as _a_list
from ...translation.fields import answer_obj as _a_obj
from ...translation.fields import answer_objects as _a_objects
from ...translation.fields import answer_str as _a_str
from ...translation.fields import bad_answer as _bad_answer
from ...translation.fields import data_url as _data_url
from ...translation.fields import error_json as _error_json
from ...translation.fields import invalid_answer as _invalid_answer
from ...translation.fields import nonempty_str as _nonempty_str
from ...translation.fields import objects as _objects
from ...translation.fields import opt_int as _opt_int
from ...translation.fields import opt_num as _opt_num
from ...translation.fields import type_error as _type_error
from ...translation.ir import (
    PDF,
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    ChatResponse,
    Choice,
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
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
    append_part,
    part_path,
    text_of,
)
from ...translation.markers import mark_error, read_error, tool_images_intro, tool_images_of
from ...translation.media import MediaRules
from ...translation.names import Rule, ToolRules
from ...translation.schema import all_closed, all_required
from ...translation.sse import SSEEvent

DIALECT = "openai"

# Reasoning (docs/reasoning.md): Chat Completions has no standard field for the model's
# reasoning text. OpenAI-compatible servers (DeepSeek, vLLM, SGLang, Qwen) put it in
# ``message.reasoning_content`` / ``delta.reasoning_content``; OpenRouter in ``reasoning``.
# The gateway reads both from backends and writes ``reasoning_content`` for clients. Its
# signatures cannot ride there (SDKs drop unknown fields when a message is echoed): they
# travel sealed in the tool-call ids.
_REASONING_KEYS = ("reasoning_content", "reasoning")

_IGNORED = frozenset({"store", "metadata", "service_tier", "prediction"})
# Values of unmappable fields that mean "feature off": not worth refusing a request for.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "modalities": (["text"],),
    "logit_bias": ({},),
    "top_logprobs": (0,),
}
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "response_format",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
    }
)

FINISH_TO_IR: dict[str, StopReason] = {
    "stop": "end_turn",  # a matched stop sequence also reports "stop": indistinguishable
    "eos": "end_turn",  # Together: the model's end-of-sequence token, a natural end
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
# IR -> finish_reason. "refusal" becomes content_filter: OpenAI reports its own
# refusals as "stop" plus a refusal text, but a refusal from another provider
# is a policy stop, which content_filter tells the client; "other" has no
# OpenAI value and "stop" is the least surprising.
IR_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "other": "stop",
}

# kind -> (type, code) as OpenAI reports them.
_ERROR_SHAPES: dict[str, tuple[str, str | None]] = {
    "invalid_request": ("invalid_request_error", None),
    "context_length": ("invalid_request_error", "context_length_exceeded"),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("invalid_request_error", "permission_denied"),
    "not_found": ("invalid_request_error", "model_not_found"),
    "unknown_endpoint": ("invalid_request_error", "unknown_url"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded": ("server_error", "service_unavailable"),
    "timeout": ("server_error", "timeout"),
}
_CONTEXT_HINTS = ("maximum context length", "context length", "context_length_exceeded", "too many tokens")

_STREAM_CUT = "upstream stream ended unexpectedly"


# ---- small validators: every failure is a 400 naming the field ------------


def _opt_bool(body: dict[str, Any], key: str) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise _type_error(key, "a boolean")
    return v


def _opt_str(body: dict[str, Any], key: str, path: str) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _type_error(path, "a string")
    return v


# ---- requests --------------------------------------------------------------


def _parse_image(part: dict[str, Any], path: str) -> ImagePart:
    iu = part.get("image_url")
    url = _nonempty_str(iu.get("url") if isinstance(iu, dict) else iu, f"{path}.image_url.url")
    if url.startswith("data:"):
        comma = url.find(",")
        header = url[5:comma].split(";") if comma > 0 else []
        if "base64" not in header[1:]:
            raise invalid(
                f"'{path}.image_url.url' must be an http(s) URL or a base64 data URL", f"{path}.image_url.url"
            )
        return ImagePart(media_type=header[0] or None, data=url[comma + 1 :], path=path)
    return ImagePart(url=url, path=path)


def _parse_file(
    part: dict[str, Any], path: str, unmapped: list[str], reasons: dict[str, str]
) -> FilePart | None:
    """A ``file`` part: inline ``file_data`` (a base64 data URL) is a document; a ``file_id``
    is OpenAI's own upload, which no other provider can read."""
    f = part.get("file")
    if not isinstance(f, dict):
        raise _type_error(f"{path}.file", "an object")
    filename = _opt_str(f, "filename", f"{path}.file.filename")
    if f.get("file_data") is not None:
        media_type, data = _data_url(f["file_data"], f"{path}.file.file_data")
        if media_type is None and (filename or "").lower().endswith(".pdf"):
            media_type = PDF
        return FilePart(media_type=media_type, data=data, filename=filename, path=path)
    if f.get("file_id") is not None:
        _nonempty_str(f["file_id"], f"{path}.file.file_id")
        unmapped.append(path)
        reasons[path] = "a file_id names a file uploaded to OpenAI, which no other provider can read"
        return None
    raise invalid(f"'{path}.file' needs 'file_data' or 'file_id'", f"{path}.file")


def _content_parts(
    content: Any,
    path: str,
    unmapped: list[str],
    images: bool,
    reasons: dict[str, str] | None = None,
) -> list[TextPart | ImagePart | FilePart]:
    """``content`` as a string or a list of parts -> IR parts (empty strings dropped).
    ``reasons`` given: documents (``file`` parts) are taken too."""
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise _type_error(f"{path}.content", "a string or an array of content parts")
    out: list[TextPart | ImagePart | FilePart] = []
    for ppath, p in _objects(content, f"{path}.content"):
        t = p.get("type")
        if t == "text":
            text = p.get("text")
            if not isinstance(text, str):
                raise _type_error(f"{ppath}.text", "a string")
            if text:
                out.append(TextPart(text))
        elif t == "refusal" and isinstance(p.get("refusal"), str):
            out.append(TextPart(p["refusal"]))
        elif t == "image_url":
            if not images:
                raise invalid(f"'{ppath}': images are not allowed in this message", ppath)
            out.append(_parse_image(p, ppath))
        elif t == "file" and reasons is not None:
            doc = _parse_file(p, ppath, unmapped, reasons)
            if doc is not None:
                out.append(doc)
        elif isinstance(t, str):
            unmapped.append(ppath)  # input_audio, file, ...: no IR equivalent
        else:
            raise _type_error(f"{ppath}.type", "a string")
    return out


def _parse_tool_choice(tc: Any) -> ToolChoice | None:
    if tc is None:
        return None
    if isinstance(tc, str):
        if tc in ("auto", "none", "required"):
            return ToolChoice(tc)  # type: ignore[arg-type]
        raise invalid("'tool_choice' must be 'auto', 'none', 'required' or a function choice", "tool_choice")
    if isinstance(tc, dict) and tc.get("type") == "function":
        fn = tc.get("function")
        name = _nonempty_str(fn.get("name") if isinstance(fn, dict) else None, "tool_choice.function.name")
        return ToolChoice("tool", name)
    raise invalid("'tool_choice' must be 'auto', 'none', 'required' or a function choice", "tool_choice")


def _parse_tools(tools: Any, unmapped: list[str]) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    out: list[Tool] = []
    for path, t in _objects(tools, "tools"):
        if t.get("type", "function") != "function":
            unmapped.append(path)  # custom / built-in tools
            continue
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise _type_error(f"{path}.function", "an object")
        name = _nonempty_str(fn.get("name"), f"{path}.function.name")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, dict):
            raise _type_error(f"{path}.function.parameters", "an object")
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type_error(f"{path}.function.strict", "a boolean")
        out.append(Tool(name, _opt_str(fn, "description", f"{path}.function.description"), params, strict))
    return out


def _parse_response_format(rf: Any) -> ResponseFormat | None:
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise _type_error("response_format", "an object")
    t = rf.get("type")
    if t == "text":
        return None
    if t == "json_object":
        return ResponseFormat("json_object")
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise _type_error("response_format.json_schema", "an object")
        schema = js.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise _type_error("response_format.json_schema.schema", "an object")
        strict = js.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type_error("response_format.json_schema.strict", "a boolean")
        return ResponseFormat(
            "json_schema", schema, _opt_str(js, "name", "response_format.json_schema.name"), strict
        )
    raise invalid(
        "'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format.type"
    )


def _parse_messages(
    messages: Any, system: list[TextPart], unmapped: list[str], reasons: dict[str, str]
) -> list[Message]:
    if not isinstance(messages, list):
        raise _type_error("messages", "an array")
    if not messages:
        raise invalid("'messages' must not be empty", "messages")
    out: list[Message] = []
    call_names: dict[str, str] = {}
    for path, m in _objects(messages, "messages"):
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            texts = _content_parts(content, path, unmapped, images=False)
            if out:  # mid-conversation: its place is part of its meaning (translation/markers.py)
                out.append(Message("system", texts))  # type: ignore[arg-type]  # images=False: text only
            else:
                system.extend(texts)  # type: ignore[arg-type]
        elif role == "user":
            user_parts = _content_parts(content, path, unmapped, True, reasons)
            if not (out and out[-1].role == "tool" and _fold_tool_images(user_parts, out[-1])):
                out.append(Message("user", user_parts))  # type: ignore[arg-type]
        elif role == "assistant":
            parts: list[Part] = _history_reasoning(m, path)
            parts += _content_parts(content, path, unmapped, images=False)
            refusal = m.get("refusal")
            if isinstance(refusal, str) and refusal and not parts:
                parts.append(TextPart(refusal))
            tcs = m.get("tool_calls")
            if tcs is not None:
                if not isinstance(tcs, list):
                    raise _type_error(f"{path}.tool_calls", "an array")
                for j, tc in enumerate(tcs):
                    parts.append(_parse_tool_call(tc, f"{path}.tool_calls[{j}]", call_names))
            for key in ("function_call", "audio"):
                if m.get(key) is not None:
                    unmapped.append(f"{path}.{key}")
            out.append(Message("assistant", parts))
        elif role == "tool":
            tcid = _nonempty_str(m.get("tool_call_id"), f"{path}.tool_call_id")
            name = call_names.get(tcid)
            if name is None:
                raise invalid(
                    f"'{path}.tool_call_id' does not match any preceding assistant tool call",
                    f"{path}.tool_call_id",
                )
            result_content, failed = read_error(_content_parts(content, path, unmapped, images=False))  # type: ignore[arg-type]  # images=False: no files
            result = ToolResultPart(tcid, result_content, name, failed, path, id_path=f"{path}.tool_call_id")
            append_part(out, "tool", result)
        elif role == "function":
            raise invalid(
                f"'{path}.role': the deprecated 'function' role is not supported; use 'tool'", f"{path}.role"
            )
        else:
            raise invalid(
                f"'{path}.role' must be one of system, developer, user, assistant, tool", f"{path}.role"
            )
    return out


def _fold_tool_images(parts: list[TextPart | ImagePart | FilePart], tools: Message) -> bool:
    """A user message right after tool messages that only carries their images, as this codec
    writes them (``tool_images_intro`` texts, each followed by images): the images go back
    into their tool results. False (nothing changed) for any other user message."""
    results = {p.tool_call_id: p for p in tools.parts if isinstance(p, ToolResultPart)}
    found: list[tuple[ToolResultPart, list[ImagePart]]] = []
    for p in parts:
        if isinstance(p, TextPart):
            call_id = tool_images_of(p.text)
            if call_id is None or call_id not in results:
                return False
            found.append((results[call_id], []))
        elif isinstance(p, ImagePart) and found:
            found[-1][1].append(p)
        else:
            return False
    if not found or any(not images for _, images in found):
        return False
    for result, images in found:
        result.content.extend(images)
    return True


def _history_reasoning(m: dict[str, Any], path: str) -> list[Part]:
    """An echoed assistant message's ``reasoning_content``: its reasoning text (no signature)."""
    rc = m.get("reasoning_content")
    if rc is None or rc == "":
        return []
    if not isinstance(rc, str):
        raise _type_error(f"{path}.reasoning_content", "a string")
    return [ReasoningPart(rc)]


def _answer_reasoning(msg: dict[str, Any], path: str) -> list[ReasoningPart]:
    """A backend's reasoning text (``reasoning_content``, or OpenRouter's ``reasoning``)."""
    for key in _REASONING_KEYS:
        text = _a_str(msg.get(key), f"{path}.{key}")
        if text:
            return [ReasoningPart(text)]
    return []


def _build_effort(req: ChatRequest, body: dict[str, Any]) -> None:
    """IR controls -> ``reasoning_effort`` (a budget becomes the effort that covers it)."""
    effort, t = _reasoning.for_backend(req, OPENAI.reasoning_styles)
    if t is not None and t.mode == "disabled":
        effort = "none"
    if effort is not None:
        body["reasoning_effort"] = effort


def _parse_tool_call(tc: Any, path: str, call_names: dict[str, str]) -> ToolCallPart:
    if not isinstance(tc, dict):
        raise _type_error(path, "an object")
    tcid = _nonempty_str(tc.get("id"), f"{path}.id")
    fn = tc.get("function")
    if not isinstance(fn, dict):
        raise _type_error(f"{path}.function", "an object")
    name = _nonempty_str(fn.get("name"), f"{path}.function.name")
    args = fn.get("arguments")
    if args is None or args == "":
        args = "{}"
    elif isinstance(args, dict):
        args = orjson.dumps(args).decode()  # lenient: some clients send an object
    elif not isinstance(args, str):
        raise _type_error(f"{path}.function.arguments", "a JSON string")
    call_names[tcid] = name
    return ToolCallPart(tcid, name, args, id_path=f"{path}.id")


def _image_url(p: ImagePart) -> str:
    if p.data is not None:
        return f"data:{p.media_type or 'image/jpeg'};base64,{p.data}"
    return p.url or ""


def _text_content(texts: list[str]) -> str | list[dict[str, Any]]:
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": t} for t in texts]


def _build_messages(req: ChatRequest, drop: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": _text_content([p.text for p in req.system])})
    # Images a turn's tools returned: a tool message takes text parts only (ChatCompletionTool
    # MessageParam.content, openai SDK), so they follow the turn's tool messages as one user
    # message naming each call (all tool messages must come right after their assistant turn).
    images: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        if m.role != "tool" and images:
            out.append({"role": "user", "content": images})
            images = []
        if m.role == "tool":
            for j, p in enumerate(m.parts):
                if not isinstance(p, ToolResultPart):
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                texts: list[str] = []
                mine: list[dict[str, Any]] = []
                # is_error has no OpenAI field: said in the text (translation/markers.py)
                for c in mark_error(p.content, p.is_error):
                    if isinstance(c, TextPart):
                        texts.append(c.text)
                    else:
                        mine.append({"type": "image_url", "image_url": {"url": _image_url(c)}})
                if mine:
                    images.append({"type": "text", "text": tool_images_intro(p.tool_call_id)})
                    images += mine
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": p.tool_call_id,
                        "content": _text_content(texts) if texts else "",
                    }
                )
            continue
        if m.role == "system":  # in place, as the client put it
            out.append(
                {
                    "role": "system",
                    "content": _text_content([p.text for p in m.parts if isinstance(p, TextPart)]),
                }
            )
            continue
        if m.role == "user":
            parts: list[dict[str, Any]] = []
            only_text = True
            for j, p in enumerate(m.parts):
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                elif isinstance(p, ImagePart):
                    only_text = False
                    parts.append({"type": "image_url", "image_url": {"url": _image_url(p)}})
                elif isinstance(p, FilePart) and (doc_text := text_of(p)) is not None:
                    # No text documents in Chat Completions: the document's text is a text part.
                    parts.append({"type": "text", "text": doc_text})
                elif isinstance(p, FilePart) and p.data is not None:  # a "file" part takes inline data only
                    only_text = False
                    parts.append(
                        {
                            "type": "file",
                            "file": {
                                "filename": p.filename or "file",
                                "file_data": f"data:{p.media_type or 'application/pdf'};base64,{p.data}",
                            },
                        }
                    )
                elif not drop:
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
            if only_text and len(parts) == 1:
                out.append({"role": "user", "content": parts[0]["text"]})
            else:
                out.append({"role": "user", "content": parts if parts else ""})
            continue
        texts = []
        calls: list[dict[str, Any]] = []
        for j, p in enumerate(m.parts):
            if isinstance(p, TextPart):
                texts.append(p.text)
            elif isinstance(p, ToolCallPart):
                calls.append(
                    {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
                )
            elif isinstance(p, ReasoningPart):
                continue  # Chat Completions takes no reasoning back (compatible hosts reject it)
            elif not drop:  # assistant images / stray tool results
                raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
        msg: dict[str, Any] = {"role": "assistant", "content": _text_content(texts) if texts else None}
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    if images:
        out.append({"role": "user", "content": images})
    return out


def _function(t: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name}
    if t.description is not None:
        fn["description"] = t.description
    fn["parameters"] = t.parameters
    if t.strict is not None:
        fn["strict"] = t.strict and strict_schema_ok(t.parameters)
    return fn


def strict_schema_ok(schema: Any) -> bool:
    """Does ``schema`` meet OpenAI strict mode's rules: every object closed
    (``additionalProperties: false``) and every property required? (OpenAI's
    "Structured Outputs", supported schemas.) A strict schema that does not is refused by
    OpenAI, so the gateway sends such schemas unstrict instead."""
    return all_closed(schema) and all_required(schema)


ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def says_json(req: ChatRequest) -> bool:
    """Do the system prompt or messages contain the word "json" (any case)? OpenAI refuses
    JSON mode otherwise ("'messages' must contain the word 'json' in some form")."""
    texts = [p.text for p in req.system]
    for m in req.messages:
        for p in m.parts:
            if isinstance(p, TextPart):
                texts.append(p.text)
            elif isinstance(p, ToolResultPart):
                texts.extend(c.text for c in p.content if isinstance(c, TextPart))
    return any("json" in t.lower() for t in texts)


def response_format(rf: ResponseFormat, req: ChatRequest) -> dict[str, Any]:
    """IR structured output -> Chat Completions ``response_format``. JSON mode without the word
    "json" in the messages becomes a non-strict schema taking any object: the same request,
    in a form OpenAI accepts."""
    if rf.type == "json_object" and says_json(req):
        return {"type": "json_object"}
    if rf.type == "json_object":
        return {"type": "json_schema", "json_schema": {"name": "json_object", "schema": ANY_JSON_OBJECT}}
    js: dict[str, Any] = {"name": rf.name or "response"}
    if rf.schema is not None:
        js["schema"] = rf.schema
    if rf.strict is not None:
        js["strict"] = rf.strict and strict_schema_ok(rf.schema)
    return {"type": "json_schema", "json_schema": js}


# ---- responses -------------------------------------------------------------


def usage_from_openai(u: Any, path: str = "usage") -> Usage:
    """An answer's usage object -> IR (type-checked: a wrong count is the provider's fault)."""
    u = _a_obj(u, path)
    details = _a_obj(u.get("prompt_tokens_details"), f"{path}.prompt_tokens_details")
    cached = _count(details.get("cached_tokens"), f"{path}.prompt_tokens_details.cached_tokens")
    if not cached and u.get("prompt_cache_hit_tokens") is not None:
        cached = _count(u.get("prompt_cache_hit_tokens"), f"{path}.prompt_cache_hit_tokens")  # DeepSeek's
    out = _a_obj(u.get("completion_tokens_details"), f"{path}.completion_tokens_details")
    return Usage(
        _count(u.get("prompt_tokens"), f"{path}.prompt_tokens"),
        _count(u.get("completion_tokens"), f"{path}.completion_tokens"),
        cached,
        reasoning_tokens=_count(
            out.get("reasoning_tokens"), f"{path}.completion_tokens_details.reasoning_tokens"
        ),
        cache_write_tokens=_count(
            details.get("cache_write_tokens"), f"{path}.prompt_tokens_details.cache_write_tokens"
        ),
    )


def usage_to_openai(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        # Cache writes (a backend with explicit breakpoints) as the Responses API names them.
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens}
        | ({"cache_write_tokens": u.cache_write_tokens} if u.cache_write_tokens else {}),
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _error_kind(code: Any, message: str, fallback: str) -> str:
    low = message.lower()
    if code == "context_length_exceeded" or any(h in low for h in _CONTEXT_HINTS):
        return "context_length"
    return fallback


def _error_fields(obj: Any) -> tuple[str | None, Any, Any, Any]:
    """(message, type, code, param) from any OpenAI-style error body, as compatible hosts
    shape them: ``{"error": {...}}`` (OpenAI, Azure, Groq, OpenRouter with a numeric code),
    ``{"object": "error", "message": ...}`` at the top (vLLM, Mistral, whose message may be
    a validation object), ``{"detail": ...}`` (FastAPI-based servers)."""
    if not isinstance(obj, dict):
        return None, None, None, None
    err = obj.get("error")
    if isinstance(err, dict):
        return _message_text(err.get("message")), err.get("type"), err.get("code"), err.get("param")
    if isinstance(err, str):
        return err, None, None, None
    if obj.get("message") is not None:
        return _message_text(obj["message"]), obj.get("type"), obj.get("code"), obj.get("param")
    if obj.get("detail") is not None:
        return _message_text(obj["detail"]), None, None, None
    return None, None, None, None


def _message_text(m: Any) -> str | None:
    """An error message as text; validation errors ({"detail": [{"loc", "msg"}]}) as "loc: msg"."""
    if isinstance(m, str) or m is None:
        return m
    if isinstance(m, dict) and "detail" in m:
        return _message_text(m["detail"])
    if isinstance(m, list):
        parts = []
        for item in m:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = item.get("loc")
                where = ".".join(str(x) for x in loc if x != "body") if isinstance(loc, list) else ""
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
            else:
                parts.append(str(item))
        return "; ".join(parts) or None
    return orjson.dumps(m).decode()


def _is_error_body(obj: dict[str, Any]) -> bool:
    """An error object where an answer should be (some hosts answer 200 with one)."""
    return obj.get("error") is not None or obj.get("object") == "error"


def _answered_error(obj: dict[str, Any]) -> GatewayError:
    message, _, _, _ = _error_fields(obj)
    return _invalid_answer(f"it was an error: {message or 'no message'}")


_CODE_KINDS: dict[str, str] = {code: kind for kind, (_, code) in _ERROR_SHAPES.items() if code}


def _stream_error_status(code: Any) -> int | None:
    """OpenRouter's numeric error code is the HTTP status the error would have had (OpenRouter
    docs, "Errors"), also in a stream that had already answered 200."""
    return overloaded_as_503(code) if type(code) is int and 400 <= code <= 599 else None


def _stream_error_kind(etype: Any, code: Any) -> str:
    """An in-stream error has no HTTP status: its type and code tell the kind."""
    status = _stream_error_status(code)
    if status is not None:
        return kind_for_status(status)
    kind = _CODE_KINDS.get(code) if isinstance(code, str) else None
    if kind is not None:
        return kind
    if etype in ("requests", "tokens", "rate_limit_error"):
        return "rate_limit"
    if etype == "invalid_request_error":
        return "invalid_request"
    return "api_error"


def _message(content: list[TextPart | ToolCallPart | ReasoningPart]) -> dict[str, Any]:
    """IR answer content -> a choice's assistant message (reasoning as ``reasoning_content``)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for p in content:
        if isinstance(p, TextPart):
            texts.append(p.text)
        elif isinstance(p, ReasoningPart):
            continue  # below, as one reasoning_content string
        else:
            calls.append(
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
            )
    # Several text blocks (e.g. split by citations) are one string in OpenAI.
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        msg["tool_calls"] = calls
    thought = _reasoning.reasoning_text(list(content))
    if thought:
        msg["reasoning_content"] = thought
    return msg


def _choice(choice: Any, path: str) -> tuple[list[TextPart | ToolCallPart | ReasoningPart], StopReason]:
    """One choice of an answer -> (content, stop reason), type-checked; the reasoning first."""
    if not isinstance(choice, dict):
        raise _bad_answer(path, "an object")
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise _bad_answer(f"{path}.message", "an object")
    content: list[TextPart | ToolCallPart | ReasoningPart] = []
    content += _answer_reasoning(msg, f"{path}.message")
    text = msg.get("content")
    if isinstance(text, list):
        for ppath, p in _a_objects(text, f"{path}.message.content"):
            t = _a_str(p.get("text"), f"{ppath}.text")
            if t:
                content.append(TextPart(t))
    elif text := _a_str(text, f"{path}.message.content"):
        content.append(TextPart(text))
    refusal = _a_str(msg.get("refusal"), f"{path}.message.refusal")
    for j, (tpath, tc) in enumerate(_a_objects(msg.get("tool_calls"), f"{path}.message.tool_calls")):
        fn = _a_obj(tc.get("function"), f"{tpath}.function")
        content.append(
            ToolCallPart(
                _a_str(tc.get("id"), f"{tpath}.id") or f"call_{j}",
                _a_str(fn.get("name"), f"{tpath}.function.name"),
                _a_str(fn.get("arguments"), f"{tpath}.function.arguments") or "{}",
            )
        )
    fc = msg.get("function_call")
    if fc is not None:
        fc = _a_obj(fc, f"{path}.message.function_call")
        content.append(
            ToolCallPart(
                "call_0",
                _a_str(fc.get("name"), f"{path}.message.function_call.name"),
                _a_str(fc.get("arguments"), f"{path}.message.function_call.arguments") or "{}",
            )
        )
    stop = FINISH_TO_IR.get(_a_str(choice.get("finish_reason"), f"{path}.finish_reason"), "other")
    if refusal:
        content.append(TextPart(refusal))
        if stop == "end_turn":
            stop = "refusal"
    return content, stop


# ---- streams -----------------------------------------------------------------


def _cut() -> list[StreamEvent]:
    return [StreamError(GatewayError("api_error", _STREAM_CUT, status=502))]


class _Answer:
    """One answer of a stream (``choices[].index``): its open block, tool calls, stop."""

    __slots__ = ("open", "open_text", "refusal", "stop", "tools")

    def __init__(self) -> None:
        self.open: int | None = None  # its open IR block
        self.open_text: bool | None = False  # the open block is text (None: reasoning)
        self.tools: dict[int, int] = {}  # OpenAI tool_call index -> IR block index
        self.stop: StopReason | None = None
        self.refusal = False


class OpenAIStreamDecoder(StreamDecoder):
    """Chat-completion chunks -> IR events. The stream is complete at ``[DONE]``, or as soon
    as every answer's finish_reason and the usage have been seen. Several answers (``n``)
    interleave; each block names its answer (``BlockStart.choice``)."""

    __slots__ = ("_answers", "_done", "_expected", "_next", "_started", "_usage")

    def __init__(self, answers: int = 1) -> None:
        self._started = False
        self._done = False
        self._next = 0  # next IR block index (unique across answers)
        self._expected = answers  # asked for: finished early only once each has its finish_reason
        self._answers: dict[int, _Answer] = {}  # choices[].index -> its state
        self._usage: Usage | None = None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._done:
            return []
        data = event.data
        if data[:1] != "{" and data.strip() == "[DONE]":
            out: list[StreamEvent] = []
            self._start(out, None)
            self._finish(out)
            return out
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._done = True
            return [
                StreamError(GatewayError("api_error", "upstream sent a malformed stream chunk", status=502))
            ]
        if not isinstance(obj, dict):
            self._done = True
            return [StreamError(_bad_answer("chunk", "an object"))]
        err = obj.get("error")
        if err is not None:
            self._done = True
            message, etype, code, _ = _error_fields(obj)
            kind = _error_kind(code, message or "", _stream_error_kind(etype, code))
            return [
                StreamError(
                    GatewayError(
                        kind,  # type: ignore[arg-type]
                        message or "upstream stream error",
                        status=_stream_error_status(code) or DEFAULT_STATUS[kind],
                    )
                )
            ]
        out = []
        try:
            self._chunk(out, obj)
        except GatewayError as e:  # a wrongly typed chunk: the stream fails here, well formed
            self._done = True
            out.append(StreamError(e))
        return out

    def _chunk(self, out: list[StreamEvent], obj: dict[str, Any]) -> None:
        self._start(out, obj)
        u = obj.get("usage")
        if u is not None:
            self._usage = usage_from_openai(u)
        for path, choice in _a_objects(obj.get("choices"), "choices"):
            index = _a_int(choice.get("index"), f"{path}.index") or 0
            a = self._answers.get(index)
            if a is None:
                if index < 0:
                    raise _bad_answer(f"{path}.index", "a non-negative integer")
                a = self._answers[index] = _Answer()
            delta = _a_obj(choice.get("delta"), f"{path}.delta")
            if delta:
                self._delta(out, a, index, delta, f"{path}.delta")
            # A text completion's chunk (pass-through). Together also repeats a chat delta's
            # content as ``text``: a choice with a delta says it there, once.
            text = _a_str(choice.get("text"), f"{path}.text")
            if text and "delta" not in choice:
                self._text(out, a, index, text)
            fr = _a_str(choice.get("finish_reason"), f"{path}.finish_reason")
            if fr:
                self._close(out, a)
                stop = FINISH_TO_IR.get(fr, "other")
                if stop == "end_turn" and a.refusal:
                    stop = "refusal"
                a.stop = stop
        if (
            self._usage is not None
            and len(self._answers) >= self._expected
            and all(a.stop for a in self._answers.values())
        ):
            self._finish(out)

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        self._done = True
        return _cut()

    def _start(self, out: list[StreamEvent], obj: dict[str, Any] | None) -> None:
        if not self._started:
            self._started = True
            rid = _a_str(obj.get("id"), "id") if obj else ""
            model = _a_str(obj.get("model"), "model") if obj else ""
            out.append(MessageStart(rid or f"chatcmpl-{uuid.uuid4().hex}", model))

    @staticmethod
    def _close(out: list[StreamEvent], a: _Answer) -> None:
        if a.open is not None:
            out.append(BlockStop(a.open))
            a.open = None

    def _finish(self, out: list[StreamEvent]) -> None:
        for a in self._answers.values():
            self._close(out, a)
        self._done = True
        stops = [self._answers[k].stop or "end_turn" for k in sorted(self._answers)] or ["end_turn"]
        out.append(MessageDelta(stops[0], None, self._usage, tuple(stops[1:])))
        out.append(MessageStop())

    def _open(self, out: list[StreamEvent], a: _Answer, choice: int, kind: bool | None) -> int:
        """Close ``a``'s open block and open a new one: text (True), reasoning (None) or a
        tool call (False: the caller sends its BlockStart)."""
        self._close(out, a)
        block = a.open = self._next
        self._next += 1
        a.open_text = kind
        if kind is not False:
            out.append(BlockStart(block, "text" if kind else "reasoning", choice=choice))
        return block

    def _text(self, out: list[StreamEvent], a: _Answer, choice: int, text: str) -> None:
        block = a.open if a.open is not None and a.open_text is True else self._open(out, a, choice, True)
        out.append(BlockDelta(block, text))

    def _reasoning(self, out: list[StreamEvent], a: _Answer, choice: int, text: str) -> None:
        """Reasoning text of a compatible server opens (or continues) a reasoning block."""
        block = a.open if a.open is not None and a.open_text is None else self._open(out, a, choice, None)
        out.append(BlockDelta(block, text))

    def _delta(
        self, out: list[StreamEvent], a: _Answer, choice: int, delta: dict[str, Any], path: str
    ) -> None:
        for key in _REASONING_KEYS:
            thought = _a_str(delta.get(key), f"{path}.{key}")
            if thought:
                self._reasoning(out, a, choice, thought)
                break
        content = _a_str(delta.get("content"), f"{path}.content")
        if content:
            self._text(out, a, choice, content)
        refusal = _a_str(delta.get("refusal"), f"{path}.refusal")
        if refusal:
            a.refusal = True
            self._text(out, a, choice, refusal)
        for tpath, tc in _a_objects(delta.get("tool_calls"), f"{path}.tool_calls"):
            idx = _a_int(tc.get("index"), f"{tpath}.index")
            fn = _a_obj(tc.get("function"), f"{tpath}.function")
            args = _a_str(fn.get("arguments"), f"{tpath}.function.arguments")
            block = a.tools.get(idx)
            if block is None:
                block = a.tools[idx] = self._open(out, a, choice, False)
                tcid = _a_str(tc.get("id"), f"{tpath}.id")
                out.append(
                    BlockStart(
                        block,
                        "tool_call",
                        tcid or f"call_{uuid.uuid4().hex[:24]}",
                        _a_str(fn.get("name"), f"{tpath}.function.name"),
                        choice=choice,
                    )
                )
            if args:
                # A fragment for an earlier, already closed call (interleaved
                # parallel calls) keeps its own block index.
                out.append(BlockDelta(block, args))


class OpenAIStreamEncoder(StreamEncoder):
    """IR events -> ``chat.completion.chunk`` SSE bytes. Chunk envelopes are
    pre-serialised once per stream; only the delta is serialised per event."""

    __slots__ = (
        "_calls",
        "_choice",
        "_done",
        "_finished",
        "_head",
        "_head0",
        "_include_usage",
        "_model",
        "_reasoning",
        "_tools",
        "_usage",
    )

    def __init__(self, req: ChatRequest) -> None:
        self._model = req.model
        self._include_usage = req.stream_include_usage
        self._head = b""  # 'data: {"id":..,"object":..,"created":..,"model":..,'
        self._head0 = b""  # ... + '"choices":[{"index":0,"delta":' (the one answer's chunks)
        self._tools: dict[int, int] = {}  # IR block index -> OpenAI tool_call index
        self._reasoning: set[int] = set()  # IR block indexes of reasoning blocks
        self._choice: dict[int, bytes] = {}  # IR block index -> its choice index, when not 0
        self._calls: dict[int, int] = {}  # choice -> tool calls it opened so far
        self._usage: Usage | None = None
        self._finished = False
        self._done = False

    def _begin(self, rid: str) -> None:
        self._head = (
            b'data: {"id":'
            + orjson.dumps(rid)
            + b',"object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + orjson.dumps(self._model)
            + b","
        )
        self._head0 = self._head + b'"choices":[{"index":0,"delta":'

    def _chunk(self, delta: bytes, finish: bytes = b"null", choice: bytes | None = None) -> bytes:
        """One chunk of answer ``choice`` (None: the first)."""
        if not self._head:
            self._begin(f"chatcmpl-{uuid.uuid4().hex}")
        return (
            (self._head0 if choice is None else self._head + b'"choices":[{"index":' + choice + b',"delta":')
            + delta
            + b',"logprobs":null,"finish_reason":'
            + finish
            + b"}]}\n\n"
        )

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, BlockDelta):
            tc = self._tools.get(event.index)
            choice = self._choice.get(event.index) if self._choice else None
            if event.index in self._reasoning:  # signatures travel in tool-call ids, not here
                return (
                    self._chunk(b'{"reasoning_content":' + orjson.dumps(event.text) + b"}", choice=choice)
                    if event.text
                    else b""
                )
            if tc is None:
                return self._chunk(b'{"content":' + orjson.dumps(event.text) + b"}", choice=choice)
            return self._chunk(
                b'{"tool_calls":[{"index":'
                + str(tc).encode()
                + b',"function":{"arguments":'
                + orjson.dumps(event.text)
                + b"}}]}",
                choice=choice,
            )
        if isinstance(event, BlockStart):
            opening = b""
            if event.choice:
                choice = self._choice[event.index] = str(event.choice).encode()
                if event.choice not in self._calls:  # a further answer's first chunk, as OpenAI's
                    self._calls[event.choice] = 0
                    opening = self._chunk(b'{"role":"assistant","content":""}', choice=choice)
            if event.kind == "reasoning":
                self._reasoning.add(event.index)
            if event.kind != "tool_call":
                return opening
            tc = self._tools[event.index] = self._calls.get(event.choice, 0)  # numbered per choice
            self._calls[event.choice] = tc + 1
            return opening + self._chunk(
                orjson.dumps(
                    {
                        "tool_calls": [
                            {
                                "index": tc,
                                "id": event.tool_call_id,
                                "type": "function",
                                "function": {"name": event.tool_name, "arguments": ""},
                            }
                        ]
                    }
                ),
                choice=self._choice.get(event.index),
            )
        if isinstance(event, BlockStop):
            return b""
        if isinstance(event, MessageStart):
            self._begin(event.id)
            return self._chunk(b'{"role":"assistant","content":""}')
        if isinstance(event, MessageDelta):
            if event.usage is not None:
                self._usage = event.usage
            if self._finished:
                return b""
            self._finished = True
            stops = (event.stop_reason or "end_turn", *event.more_stops)
            return b"".join(
                self._chunk(
                    b"{}",
                    b'"' + IR_TO_FINISH.get(stop, "stop").encode() + b'"',
                    str(k).encode() if k else None,
                )
                for k, stop in enumerate(stops)
            )
        if isinstance(event, MessageStop):
            self._done = True
            out = b"" if self._finished else self._chunk(b"{}", b'"stop"')
            if self._include_usage:
                out += (
                    self._head
                    + b'"choices":[],"usage":'
                    + orjson.dumps(usage_to_openai(self._usage or Usage()))
                    + b"}\n\n"
                )
            return out + b"data: [DONE]\n\n"
        if isinstance(event, StreamError):
            self._done = True
            return OPENAI.render_stream_error(event.error)
        return b""


# ---- the codec -----------------------------------------------------------------


# Tool names: "a-z, A-Z, 0-9, or contain underscores and dashes, with a maximum length of 64"
# (OpenAI API reference, chat.completions tools[].function.name; the API answers others with
# "does not match '^[a-zA-Z0-9_-]{1,64}$'"). Tool-call ids: at most 40 characters (the API's
# "Invalid 'messages[n].tool_calls[0].id': string too long. Expected a string with maximum
# length 40"; no documented character rule).
TOOL_RULES = ToolRules(name=Rule(r"[a-zA-Z0-9_-]+", 64), call_id=Rule(None, 40))
# Images: PNG, JPEG, WEBP and non-animated GIF (OpenAI "Images and vision" guide, image input
# requirements). Documents (``file``): no list of types found beyond PDF, so none is checked.
MEDIA = MediaRules(image_types=frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"}))


class OpenAICodec(Codec):
    dialect = DIALECT
    tool_rules = TOOL_RULES
    media = MEDIA
    several_answers = True

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
            neutral = _NEUTRAL.get(key)
            if neutral is not None and value in neutral:
                continue
            unmapped.append(key)
            values[key] = value
        system: list[TextPart] = []
        reasons: dict[str, str] = {}
        messages = _parse_messages(body.get("messages"), system, unmapped, reasons)
        stop = body.get("stop")
        if stop is None:
            stops: list[str] = []
        elif isinstance(stop, str):
            stops = [stop] if stop else []
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            stops = stop
        else:
            raise _type_error("stop", "a string or an array of strings")
        max_tokens = _opt_int(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _opt_int(body, "max_tokens")
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            raise _type_error("stream_options", "an object")
        stream = bool(_opt_bool(body, "stream"))
        include_usage = bool(so and so.get("include_usage") is True)
        return ChatRequest(
            model=model,
            messages=messages,
            system=system,
            tools=_parse_tools(body.get("tools"), unmapped),
            tool_choice=_parse_tool_choice(body.get("tool_choice")),
            parallel_tool_calls=_opt_bool(body, "parallel_tool_calls"),
            max_tokens=max_tokens,
            temperature=_opt_num(body, "temperature"),
            top_p=_opt_num(body, "top_p"),
            stop=stops,
            seed=_opt_int(body, "seed"),
            presence_penalty=_opt_num(body, "presence_penalty"),
            frequency_penalty=_opt_num(body, "frequency_penalty"),
            n=_opt_int(body, "n"),
            response_format=_parse_response_format(body.get("response_format")),
            reasoning_effort=_opt_str(body, "reasoning_effort", "reasoning_effort"),
            user=_opt_str(body, "user", "user") or _opt_str(body, "safety_identifier", "safety_identifier"),
            prompt_cache_key=_opt_str(body, "prompt_cache_key", "prompt_cache_key"),
            stream=stream,
            stream_include_usage=include_usage,
            unmapped=unmapped,
            unmapped_reasons=reasons,
            source_dialect=DIALECT,
            field_names=self.field_names,
            unmapped_values=values,
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
        if req.top_k is not None and not drop:
            raise unsupported(client_field(req, "top_k"), DIALECT)
        body: dict[str, Any] = {"model": upstream_model, "messages": _build_messages(req, drop)}
        # max_tokens rather than max_completion_tokens: every OpenAI-compatible host accepts it
        # (the dialect's fit_body renames it for models the catalog says need the other).
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        if req.presence_penalty is not None:
            body["presence_penalty"] = req.presence_penalty
        if req.frequency_penalty is not None:
            body["frequency_penalty"] = req.frequency_penalty
        if req.n is not None:
            body["n"] = req.n
        rf = req.response_format
        if rf is not None and rf.type != "text":
            body["response_format"] = response_format(rf, req)
        _build_effort(req, body)
        if req.user is not None:
            body["user"] = req.user
        if req.prompt_cache_key is not None:
            body["prompt_cache_key"] = req.prompt_cache_key
        if req.tools:
            body["tools"] = [{"type": "function", "function": _function(t)} for t in req.tools]
        tc = req.tool_choice
        if tc is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": tc.name}} if tc.mode == "tool" else tc.mode
            )
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
        if req.stream:
            body["stream"] = True
            # Always ask for usage: the gateway meters every stream. The client
            # only sees the usage chunk if it asked for it (see the encoder).
            body["stream_options"] = {"include_usage": True}
        apply_unmapped(req, body, DIALECT, drop)
        return body

    def request_path(self, upstream_model: str, stream: bool) -> str:
        return "/chat/completions"

    def parse_response(self, body: dict[str, Any]) -> ChatResponse:
        """Every field read is type-checked: a wrongly typed answer, an error
        object or an answer without a choice is the provider's fault (502)."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        if _is_error_body(body):
            raise _answered_error(body)
        choices = _a_list(body.get("choices"), "choices")
        if not choices:
            raise _bad_answer("choices", "an array with at least one choice")
        parsed = [_choice(c, f"choices[{i}]") for i, c in enumerate(choices)]
        content, stop = parsed[0]
        return ChatResponse(
            id=_a_str(body.get("id"), "id") or f"chatcmpl-{uuid.uuid4().hex}",
            model=_a_str(body.get("model"), "model"),
            content=content,
            stop_reason=stop,
            usage=usage_from_openai(body.get("usage")),
            more=[Choice(c, st) for c, st in parsed[1:]],
        )

    def render_response(self, resp: ChatResponse) -> dict[str, Any]:
        answers = [Choice(resp.content, resp.stop_reason), *resp.more]
        return {
            "id": resp.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": resp.model,
            "choices": [
                {
                    "index": n,
                    "message": _message(c.content),
                    "logprobs": None,
                    "finish_reason": IR_TO_FINISH.get(c.stop_reason, "stop"),
                }
                for n, c in enumerate(answers)
            ],
            "usage": usage_to_openai(resp.usage),
        }

    def stream_decoder(self, answers: int = 1) -> StreamDecoder:
        return OpenAIStreamDecoder(answers)

    def stream_encoder(self, req: ChatRequest) -> StreamEncoder:
        return OpenAIStreamEncoder(req)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        u = body.get("usage")
        return usage_from_openai(u) if u is not None else None

    def rename_model(self, body: dict[str, Any], model: str) -> bool:
        if "model" in body:
            body["model"] = model
            return True
        return False

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        status = overloaded_as_503(status)
        obj = _error_json(body)
        message, _, code, param = _error_fields(obj)
        if message is None:
            text = body.decode("utf-8", "replace").strip() if body else ""
            message = text[:1000] if text else f"upstream returned HTTP {status}"
        kind = _error_kind(code, message, kind_for_status(status))
        return GatewayError(
            kind,  # type: ignore[arg-type]
            message,
            status=status,
            param=param if isinstance(param, str) else None,
        )

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        etype, code = _ERROR_SHAPES.get(err.kind, ("server_error", None))
        return {"error": {"message": err.message, "type": etype, "param": err.param, "code": code}}

    def error_status(self, err: GatewayError) -> int:
        """HTTP status to send with ``render_error`` (OpenAI keeps the error's own)."""
        return err.status

    def render_stream_error(self, err: GatewayError) -> bytes:
        # OpenAI has no official in-stream error event; clients (the SDK
        # included) recognise a data chunk carrying "error". No [DONE] follows:
        # the stream did not complete.
        return b"data: " + orjson.dumps(self.render_error(err)) + b"\n\n"


OPENAI = OpenAICodec()
