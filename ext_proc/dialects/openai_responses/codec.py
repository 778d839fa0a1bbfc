"""OpenAI Responses codec (``POST {base}/responses``, base ends in ``/v1``).

Requests (client -> IR): ``input`` as a string or a list of items. Message
items (roles user, assistant, system, developer; ``system``/``developer`` and
``instructions`` become the IR system prompt), ``function_call`` and
``function_call_output`` items (a call's name is looked up in the input: an
output whose ``call_id`` no call issued is a 400, as the API answers), content
parts ``input_text``, ``input_image`` (URL or base64 data URL), ``output_text``
and ``refusal``. ``reasoning`` items (input and output) are IR reasoning parts: the
summary text, and ``encrypted_content`` as the signature (docs/reasoning.md).
``input_file`` parts (base64 data
URL or URL) are IR files: Gemini takes any, Anthropic PDFs, Chat Completions
inline ones; the others refuse them. What the IR cannot carry is unmapped
(refused by other backends, or dropped with ``drop_unsupported``): files and
images by ``file_id`` (uploads only the API can resolve), files in tool outputs,
built-in tools (``web_search``, ``file_search``, ``code_interpreter``,
``computer_use_preview``, ...) and their items, ``allowed_tools`` and hosted
tool choices, ``reasoning`` members other than ``effort`` and ``summary``, ``text.verbosity``, ``include`` beyond ``reasoning.encrypted_content``,
``truncation: auto``, ``top_logprobs``, ``max_tool_calls``, ``prompt`` and
unknown fields. Bookkeeping that never changes the generated text is ignored:
``store``, ``metadata``, ``service_tier``, ``prompt_cache_retention``, ``stream_options``.
``prompt_cache_key`` (a prompt-cache routing hint) is carried to OpenAI backends, Chat and
Responses, and dropped towards others. ``safety_identifier`` is the end user, as
``user`` is (``user`` wins when both are sent).
``previous_response_id`` has been resolved before parsing (``state.expand``).

Responses (IR -> client): a response object (``resp_...``) whose output holds a
``message`` item per run of text and a ``function_call`` item per tool call,
``status`` completed, or incomplete with ``incomplete_details`` (token limit,
content filter), and the request's settings echoed (``ChatRequest.echo``).
Streams are the typed event sequence the SDK accumulates (``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``/``.done``,
``response.content_part.done``, ``response.function_call_arguments.delta``/
``.done``, ``response.output_item.done``, ``response.completed``), each with
its ``sequence_number``; a failure is an ``error`` event then ``response.failed``.

As a backend (IR -> Responses): ``store: false`` always (the gateway keeps the
conversation itself), ``strict`` on function tools and JSON schemas only where the client
asked for it and the schema meets strict mode's rules (always said: tools default to
strict), JSON mode as Chat Completions sends it (``json_object`` only when the messages
say "json"), plain-text documents as ``input_text``, system prompt as ``instructions``. The Responses
API has no ``stop``, ``top_k``, ``seed``, penalties or ``n``: those are refused.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ...errors import DEFAULT_STATUS, GatewayError, invalid, unsupported
from ...translation import reasoning as _reasoning
from ...translation.codec import Codec, StreamDecoder, StreamEncoder, apply_unmapped, client_field
from ...translation.fields import answer_count as _count
from ...translation.fields import answer_int as _a_int
from ...translation.fields import answer_obj as _a_obj
from ...translation.fields import answer_objects as _a_objects
from ...translation.fields import answer_opt_str as _a_opt_str
from ...translation.fields import answer_str as _a_str
from ...translation.fields import bad_answer as _bad_answer
from ...translation.fields import invalid_answer as _invalid_answer
from ...translation.fields import nonempty_str as _nonempty_str
from ...translation.fields import objects as _objects
from ...translation.fields import opt_int as _opt_int
from ...translation.fields import opt_num as _opt_num
from ...translation.fields import type_error as _type_error
from ...translation.ir import (
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
    text_of,
)
from ...translation.markers import mark_error, read_error
from ...translation.names import Rule, ToolRules
from ...translation.sse import SSEEvent
from ..openai_chat.codec import _CODE_KINDS, ANY_JSON_OBJECT, OPENAI, response_format, strict_schema_ok
from ..openai_chat.codec import MEDIA as CHAT_MEDIA

DIALECT = "openai_responses"
# The family whose encrypted reasoning this dialect issues and takes back.
FAMILY = "openai"

_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "stream",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "previous_response_id",
        "include",
        "reasoning",
    }
)
_IGNORED = frozenset(
    {
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_retention",
        "stream_options",
    }
)
# Values of unmappable fields that mean "feature off": not worth refusing a request for.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "truncation": ("disabled",),
    "top_logprobs": (0,),
    "background": (False,),
}
# What the response object repeats of the request (the client sees its own settings).
ECHO_KEYS = (
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt_cache_key",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
    "user",
)
# Item types the API knows beyond messages and function calls: built-in tools' calls and outputs.
_BUILTIN_ITEMS = frozenset(
    {
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "compaction",
        "tool_search_call",
        "tool_search_output",
        "program",
        "program_output",
        "additional_tools",
    }
)
_USER_PARTS = ("input_text", "input_image", "input_file")

_STREAM_CUT = "upstream stream ended unexpectedly"
PREVIOUS_NOT_FOUND = "Previous response with id"  # how the API words an unknown previous_response_id


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---- requests ----------------------------------------------------------------------


def _parse_image(part: dict[str, Any], path: str, unmapped: list[str]) -> ImagePart | None:
    url = part.get("image_url")
    if url is None:
        if part.get("file_id") is not None:
            unmapped.append(path)  # an uploaded file: only the Responses API can resolve it
            return None
        raise invalid(f"'{path}' needs 'image_url' or 'file_id'", f"{path}.image_url")
    url = _nonempty_str(url, f"{path}.image_url")
    if url.startswith("data:"):
        comma = url.find(",")
        header = url[5:comma].split(";") if comma > 0 else []
        if "base64" not in header[1:]:
            raise invalid(
                f"'{path}.image_url' must be an http(s) URL or a base64 data URL", f"{path}.image_url"
            )
        return ImagePart(media_type=header[0] or None, data=url[comma + 1 :], path=path)
    return ImagePart(url=url, path=path)


def _parse_file(part: dict[str, Any], path: str, unmapped: list[str]) -> FilePart | None:
    """``input_file`` by base64 data URL or by URL; an uploaded ``file_id`` only the API can resolve."""
    filename = part.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise _type_error(f"{path}.filename", "a string")
    data, url = part.get("file_data"), part.get("file_url")
    if data is not None:
        data = _nonempty_str(data, f"{path}.file_data")
        comma = data.find(",")
        header = data[5:comma].split(";") if data.startswith("data:") and comma > 0 else []
        if "base64" not in header[1:]:
            raise invalid(f"'{path}.file_data' must be a base64 data URL", f"{path}.file_data")
        return FilePart(media_type=header[0] or None, data=data[comma + 1 :], filename=filename, path=path)
    if url is not None:
        url = _nonempty_str(url, f"{path}.file_url")
        name = (filename or url.split("?", 1)[0]).lower()
        return FilePart(
            media_type="application/pdf" if name.endswith(".pdf") else None,
            url=url,
            filename=filename,
            path=path,
        )
    if part.get("file_id") is not None:
        unmapped.append(path)
        return None
    raise invalid(f"'{path}' needs 'file_data', 'file_url' or 'file_id'", f"{path}.file_data")


def _content(
    content: Any, path: str, role: str, unmapped: list[str], files: bool = True
) -> list[TextPart | ImagePart | FilePart]:
    """Content at ``path`` (a string or a list of parts) -> IR parts, empty texts dropped."""
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise _type_error(path, "a string or an array of content parts")
    out: list[TextPart | ImagePart | FilePart] = []
    allowed = ("input_text", "output_text", "refusal") if role == "assistant" else _USER_PARTS
    for ppath, p in _objects(content, path):
        t = p.get("type")
        if t not in allowed:
            if not isinstance(t, str):
                raise _type_error(f"{ppath}.type", "a string")
            if role == "assistant" and t in _USER_PARTS:
                unmapped.append(ppath)  # images or files said by the assistant
                continue
            raise invalid(f"'{ppath}.type' must be one of {', '.join(allowed)}", f"{ppath}.type")
        if t in ("input_text", "output_text", "refusal"):
            key = "refusal" if t == "refusal" else "text"
            text = p.get(key)
            if not isinstance(text, str):
                raise _type_error(f"{ppath}.{key}", "a string")
            if text:
                out.append(TextPart(text))
        elif t == "input_image" and role == "user":
            img = _parse_image(p, ppath, unmapped)
            if img is not None:
                out.append(img)
        elif t == "input_file" and role == "user" and files:
            doc = _parse_file(p, ppath, unmapped)
            if doc is not None:
                out.append(doc)
        else:
            unmapped.append(ppath)  # files in tool outputs, images or files in a system prompt
    return out


def _parse_input(value: Any, system: list[TextPart], unmapped: list[str]) -> list[Message]:
    if value is None:
        raise invalid("missing required field 'input'", "input")
    if isinstance(value, str):
        if not value:
            raise invalid("'input' must not be empty", "input")
        return [Message("user", [TextPart(value)])]
    if not isinstance(value, list):
        raise _type_error("input", "a string or an array of input items")
    if not value:
        raise invalid("'input' must not be empty", "input")
    out: list[Message] = []
    names: dict[str, str] = {}  # call_id -> the called function's name
    for path, item in _objects(value, "input"):
        t = item.get("type")
        if t is None and "role" in item:
            t = "message"
        if not isinstance(t, str):
            raise _type_error(f"{path}.type", "a string")
        if t == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise invalid(
                    f"'{path}.role' must be one of user, assistant, system, developer", f"{path}.role"
                )
            if "content" not in item:
                raise invalid(f"missing required field '{path}.content'", f"{path}.content")
            parts = _content(item["content"], f"{path}.content", role, unmapped)
            if role in ("system", "developer"):
                texts = [p for p in parts if isinstance(p, TextPart)]
                if out:  # mid-conversation: its place is part of its meaning (translation/markers.py)
                    out.append(Message("system", [*texts]))
                else:
                    system.extend(texts)
            else:
                for p in parts:
                    append_part(out, role, p)
        elif t == "function_call":
            call_id = _nonempty_str(item.get("call_id"), f"{path}.call_id")
            name = _nonempty_str(item.get("name"), f"{path}.name")
            args = item.get("arguments")
            if not isinstance(args, str):
                raise _type_error(f"{path}.arguments", "a JSON string")
            names[call_id] = name
            append_part(
                out, "assistant", ToolCallPart(call_id, name, args or "{}", id_path=f"{path}.call_id")
            )
        elif t == "function_call_output":
            call_id = _nonempty_str(item.get("call_id"), f"{path}.call_id")
            called = names.get(call_id)
            if called is None:
                raise invalid(
                    f"No tool call found for function call output with call_id {call_id}.", f"{path}.call_id"
                )
            if "output" not in item:
                raise invalid(f"missing required field '{path}.output'", f"{path}.output")
            output = _content(item["output"], f"{path}.output", "user", unmapped, files=False)
            result_parts, failed = read_error(output)  # type: ignore[arg-type]  # files=False: no FilePart
            result = ToolResultPart(call_id, result_parts, called, failed, path, id_path=f"{path}.call_id")
            append_part(out, "tool", result)
        elif t == "reasoning":
            append_part(out, "assistant", _parse_reasoning_item(item, path))
        elif t == "item_reference":
            raise invalid(
                f"'{path}': item references are not supported by this gateway; send the item itself, "
                "or continue a stored response with 'previous_response_id'",
                path,
            )
        elif t in _BUILTIN_ITEMS:
            unmapped.append(path)  # a built-in tool's call or output
        else:
            raise invalid(f"'{path}.type': unknown input item type '{t}'", f"{path}.type")
    if not any(not isinstance(p, ReasoningPart) for m in out for p in m.parts) and not unmapped:
        raise invalid("'input' has no user, assistant or tool content", "input")
    return out


def _parse_tools(tools: Any, unmapped: list[str]) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    out: list[Tool] = []
    for path, t in _objects(tools, "tools"):
        tt = t.get("type")
        if tt != "function":
            if not isinstance(tt, str):
                raise _type_error(f"{path}.type", "a string")
            unmapped.append(
                path
            )  # built-in tools: web_search, file_search, code_interpreter, computer_use...
            continue
        name = _nonempty_str(t.get("name"), f"{path}.name")
        params = t.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, dict):
            raise _type_error(f"{path}.parameters", "an object")
        desc = t.get("description")
        if desc is not None and not isinstance(desc, str):
            raise _type_error(f"{path}.description", "a string")
        strict = t.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type_error(f"{path}.strict", "a boolean")
        out.append(Tool(name, desc, params, strict))
    return out


def _parse_tool_choice(tc: Any, unmapped: list[str], values: dict[str, Any]) -> ToolChoice | None:
    if tc is None:
        return None
    if isinstance(tc, str):
        if tc in ("auto", "none", "required"):
            return ToolChoice(tc)  # type: ignore[arg-type]
        raise invalid("'tool_choice' must be 'auto', 'none', 'required' or an object", "tool_choice")
    if not isinstance(tc, dict):
        raise _type_error("tool_choice", "a string or an object")
    t = tc.get("type")
    if t == "function":
        return ToolChoice("tool", _nonempty_str(tc.get("name"), "tool_choice.name"))
    if not isinstance(t, str):
        raise _type_error("tool_choice.type", "a string")
    unmapped.append("tool_choice")  # allowed_tools, a built-in tool, mcp, custom
    values["tool_choice"] = tc
    return None


def _parse_text(text: Any, unmapped: list[str], values: dict[str, Any]) -> ResponseFormat | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _type_error("text", "an object")
    for k, v in text.items():
        if k != "format" and v is not None:
            unmapped.append(f"text.{k}")  # verbosity
            values[f"text.{k}"] = v
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _type_error("text.format", "an object")
    t = fmt.get("type")
    if t == "text":
        return None
    if t == "json_object":
        return ResponseFormat("json_object")
    if t == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _type_error("text.format.schema", "an object")
        strict = fmt.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type_error("text.format.strict", "a boolean")
        return ResponseFormat(
            "json_schema", schema, _nonempty_str(fmt.get("name"), "text.format.name"), strict
        )
    raise invalid("'text.format.type' must be 'text', 'json_object' or 'json_schema'", "text.format.type")


def _neutral(key: str, value: Any) -> bool:
    """Is this value of an unmappable field the same as leaving the field out?"""
    if key == "include":
        # Encrypted reasoning is only ever produced by Responses backends (passed through whole).
        return isinstance(value, list) and all(v == "reasoning.encrypted_content" for v in value)
    return value in _NEUTRAL.get(key, ())


def _parse_reasoning(value: Any, unmapped: list[str], values: dict[str, Any]) -> str | None:
    """``reasoning.effort`` -> the IR (Chat Completions' ``reasoning_effort``); ``summary`` is read
    by ``_parse_summary``; anything else only a Responses backend can give."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error("reasoning", "an object")
    effort = value.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise _type_error("reasoning.effort", "a string")
    for k, v in value.items():
        if k not in ("effort", "summary", "generate_summary") and v is not None:
            unmapped.append(f"reasoning.{k}")
            values[f"reasoning.{k}"] = v
    return effort


# ---- reasoning items (docs/reasoning.md) ------------------------------------------------

_SUMMARIES = ("auto", "concise", "detailed", "none")


def _parse_summary(value: Any) -> Thinking | None:
    """``reasoning.summary`` (or the older ``generate_summary``): the client wants the reasoning
    summarised into the answer (https://platform.openai.com/docs/guides/reasoning)."""
    if not isinstance(value, dict):
        return None
    summary = value.get("summary", value.get("generate_summary"))
    if summary is None:
        return None
    if summary not in _SUMMARIES:
        raise invalid(f"'reasoning.summary' must be one of {', '.join(_SUMMARIES)}", "reasoning.summary")
    return Thinking(include_thoughts=summary != "none", summary=summary)


def _parse_reasoning_item(item: dict[str, Any], path: str) -> ReasoningPart:
    """An input ``reasoning`` item: its summary text, and its ``encrypted_content`` (with the
    item id, which the API wants back with it) as the signature."""
    texts: list[str] = []
    summary = item.get("summary") or []
    if not isinstance(summary, list):
        raise _type_error(f"{path}.summary", "an array")
    for spath, sp in _objects(summary, f"{path}.summary"):
        if not isinstance(sp.get("text"), str):
            raise _type_error(f"{spath}.text", "a string")
        texts.append(sp["text"])
    enc = item.get("encrypted_content")
    if enc is not None and not isinstance(enc, str):
        raise _type_error(f"{path}.encrypted_content", "a string")
    if enc and not _reasoning.is_token(enc) and isinstance(item.get("id"), str):
        enc = f"{item['id']} {enc}"
    return ReasoningPart("\n\n".join(texts), enc or None)


def _reasoning_item(p: ReasoningPart, rid: str | None = None) -> dict[str, Any]:
    """A reasoning part as an output item (its summary, and its sealed signature)."""
    item: dict[str, Any] = {
        "id": rid or new_id("rs"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": p.text}] if p.text else [],
    }
    sig = p.signature or p.redacted
    if sig is not None:
        item["encrypted_content"] = sig
    return item


def _replay_item(p: ReasoningPart, req: ChatRequest) -> dict[str, Any] | None:
    """A reasoning part for a Responses backend: only its own encrypted reasoning goes back."""
    if p.signature is None or not (
        p.origin == FAMILY or (p.origin is None and req.source_dialect == DIALECT)
    ):
        return None
    rid, _, enc = p.signature.partition(" ")
    if not enc:
        return None  # no item id kept with it: the API cannot take it back
    return {
        "type": "reasoning",
        "id": rid,
        "summary": [{"type": "summary_text", "text": p.text}] if p.text else [],
        "encrypted_content": enc,
    }


def _build_reasoning(req: ChatRequest, body: dict[str, Any]) -> None:
    """IR controls -> ``reasoning`` (effort, summary), asking for the encrypted reasoning so a
    later turn can send it back (the gateway asks the backend to store nothing)."""
    effort, t = _reasoning.for_backend(req, RESPONSES.reasoning_styles)
    if t is not None and t.mode == "disabled":
        effort = "none"
    r: dict[str, Any] = {}
    if effort is not None:
        r["effort"] = effort
    if t is not None and t.mode != "disabled":
        if t.summary is not None and t.summary != "none":
            r["summary"] = t.summary
        elif t.summary is None and t.include_thoughts:
            r["summary"] = "auto"
    if r:
        body["reasoning"] = r
    # Any reasoning asked for (an effort, or adaptive / a summary without one: the model's
    # default effort) is asked back encrypted: with store false it is the only way a later
    # turn of a tool loop can give the model its reasoning back.
    thinks = effort not in (None, "none") or (t is not None and t.mode not in (None, "disabled"))
    if thinks:
        body["include"] = ["reasoning.encrypted_content"]


def _image_url(p: ImagePart) -> str:
    if p.data is not None:
        return f"data:{p.media_type or 'image/jpeg'};base64,{p.data}"
    return p.url or ""


def _user_part(p: Any, path: str, drop: bool) -> dict[str, Any] | None:
    if isinstance(p, TextPart):
        return {"type": "input_text", "text": p.text}
    if isinstance(p, ImagePart):
        return {"type": "input_image", "image_url": _image_url(p), "detail": "auto"}
    if isinstance(p, FilePart) and (text := text_of(p)) is not None:
        return {"type": "input_text", "text": text}
    if isinstance(p, FilePart):
        out: dict[str, Any] = (
            {"file_data": f"data:{p.media_type or 'application/octet-stream'};base64,{p.data}"}
            if p.data is not None
            else {"file_url": p.url}
        )
        return {"type": "input_file", **({"filename": p.filename} if p.filename else {}), **out}
    if drop:
        return None
    raise unsupported(part_path(p, path), DIALECT)


def _build_input(req: ChatRequest, drop: bool) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        if m.role == "user":
            content = [
                c
                for j, p in enumerate(m.parts)
                if (c := _user_part(p, f"messages[{i}].content[{j}]", drop)) is not None
            ]
            if content:
                items.append({"type": "message", "role": "user", "content": content})
            continue
        if m.role == "system":  # in place, as the client put it
            text = "".join(p.text for p in m.parts if isinstance(p, TextPart))
            items.append({"type": "message", "role": "system", "content": text})
            continue
        if m.role == "tool":
            for j, p in enumerate(m.parts):
                if not isinstance(p, ToolResultPart):
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                # is_error has no Responses field: said in the text (translation/markers.py)
                marked = mark_error(p.content, p.is_error)
                if all(isinstance(c, TextPart) for c in marked):
                    output: Any = "".join(c.text for c in marked)  # type: ignore[union-attr]
                else:
                    output = [
                        c
                        for k, x in enumerate(marked)
                        if (c := _user_part(x, f"messages[{i}].content[{j}].content[{k}]", drop)) is not None
                    ]
                items.append({"type": "function_call_output", "call_id": p.tool_call_id, "output": output})
            continue
        texts: list[str] = []
        for j, p in enumerate(m.parts):
            if isinstance(p, TextPart):
                texts.append(p.text)
                continue
            if texts:
                items.append({"type": "message", "role": "assistant", "content": "".join(texts)})
                texts = []
            if isinstance(p, ToolCallPart):
                items.append(
                    {"type": "function_call", "call_id": p.id, "name": p.name, "arguments": p.arguments}
                )
            elif isinstance(p, ReasoningPart):
                replay = _replay_item(p, req)
                if replay is not None:
                    items.append(replay)
            elif not drop:  # assistant images, stray tool results
                raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
        if texts:
            items.append({"type": "message", "role": "assistant", "content": "".join(texts)})
    return items


# ---- responses -----------------------------------------------------------------------


def usage_from_responses(u: Any, path: str = "usage") -> Usage:
    """An answer's usage object -> IR (type-checked: a wrong count is the provider's fault)."""
    u = _a_obj(u, path)
    details = _a_obj(u.get("input_tokens_details"), f"{path}.input_tokens_details")
    out = _a_obj(u.get("output_tokens_details"), f"{path}.output_tokens_details")
    return Usage(
        _count(u.get("input_tokens"), f"{path}.input_tokens"),
        _count(u.get("output_tokens"), f"{path}.output_tokens"),
        _count(details.get("cached_tokens"), f"{path}.input_tokens_details.cached_tokens"),
        _count(details.get("cache_write_tokens"), f"{path}.input_tokens_details.cache_write_tokens"),
        _count(out.get("reasoning_tokens"), f"{path}.output_tokens_details.reasoning_tokens"),
    )


def usage_to_responses(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


# IR stop reason -> (status, incomplete reason)
_STATUS: dict[str, tuple[str, str | None]] = {
    "max_tokens": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def _stop_of(resp: dict[str, Any], calls: bool, refusal: bool, path: str = "") -> StopReason:
    """A response object's status (and what it holds) -> the IR stop reason; ``path``
    prefixes the names of its fields in a bad answer's message (``response.`` in a stream)."""
    status = _a_opt_str(resp.get("status"), f"{path}status")
    if status == "incomplete":
        details = _a_obj(resp.get("incomplete_details"), f"{path}incomplete_details")
        reason = _a_opt_str(details.get("reason"), f"{path}incomplete_details.reason")
        return (
            "content_filter"
            if reason == "content_filter"
            else "max_tokens"
            if reason == "max_output_tokens"
            else "other"
        )
    if status not in (None, "completed"):
        return "other"
    return "tool_use" if calls else "refusal" if refusal else "end_turn"


def response_object(
    rid: str,
    model: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    echo: dict[str, Any],
    stop: StopReason | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response object as the API returns it, with the request's settings echoed."""
    incomplete = _STATUS.get(stop or "")
    if status == "completed" and incomplete is not None:
        status = incomplete[0]
    out: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete[1]} if status == "incomplete" and incomplete else None,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "max_tool_calls": echo.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls") is not False,
        "previous_response_id": echo.get("previous_response_id"),
        "prompt_cache_key": echo.get("prompt_cache_key"),
        "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": echo.get("safety_identifier"),
        "service_tier": echo.get("service_tier") or "default",
        "store": echo.get("store") is not False,
        "temperature": echo.get("temperature") if echo.get("temperature") is not None else 1.0,
        "text": echo.get("text") or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice") or "auto",
        "tools": echo.get("tools") or [],
        "top_logprobs": echo.get("top_logprobs") or 0,
        "top_p": echo.get("top_p") if echo.get("top_p") is not None else 1.0,
        "truncation": echo.get("truncation") or "disabled",
        "usage": usage_to_responses(usage) if usage is not None else None,
        "user": echo.get("user"),
        "metadata": echo.get("metadata") or {},
    }
    if status == "completed":
        out["completed_at"] = int(time.time())
    return out


def _message_item(texts: list[str], status: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": t} for t in texts],
    }


def _call_item(p: ToolCallPart, status: str = "completed") -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": status,
        "arguments": p.arguments,
        "call_id": p.id,
        "name": p.name,
    }


def _obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (stream events from a backend are not trusted)."""
    return value if isinstance(value, dict) else {}


def _error_code(err: GatewayError) -> str:
    """A ``response.error.code`` the API uses for this kind of failure."""
    return {
        "rate_limit": "rate_limit_exceeded",
        "invalid_request": "invalid_prompt",
        "context_length": "invalid_prompt",
    }.get(err.kind, "server_error")


def _event_code(err: GatewayError) -> str:
    """An ``error`` event's code: OpenAI's error code for this kind, where it has one."""
    return OPENAI.render_error(err)["error"]["code"] or _error_code(err)


def _error_from_stream(obj: dict[str, Any]) -> GatewayError:
    """An ``error`` event or a failed response's ``error`` -> GatewayError (no HTTP status in a stream)."""
    err = _obj(obj.get("error")) or obj
    code, message = err.get("code"), err.get("message")
    etype = err.get("type")
    # OpenAI's error codes first (what ``_event_code`` writes: an error event has no type)
    kind = _CODE_KINDS.get(code) if isinstance(code, str) else None
    kind = kind or (
        "rate_limit"
        if code == "rate_limit_exceeded" or etype in ("requests", "tokens")
        else "context_length"
        if code == "context_length_exceeded"
        else "invalid_request"
        if etype == "invalid_request_error" or code == "invalid_prompt"
        else "overloaded"
        if code in ("service_unavailable", "server_is_overloaded")
        else "api_error"
    )
    return GatewayError(
        kind,  # type: ignore[arg-type]
        message if isinstance(message, str) and message else "upstream stream error",
        status=DEFAULT_STATUS[kind],
    )


# ---- streams -----------------------------------------------------------------------------


def _answer_reasoning(item: dict[str, Any], path: str) -> ReasoningPart | None:
    """A backend's reasoning item (at ``path``): summary text, and its id with the encrypted content."""
    texts = [
        _a_str(sp.get("text"), f"{spath}.text")
        for spath, sp in _a_objects(item.get("summary"), f"{path}.summary")
    ]
    enc = _a_str(item.get("encrypted_content"), f"{path}.encrypted_content")
    rid = _a_str(item.get("id"), f"{path}.id")
    sig = f"{rid} {enc}" if enc and rid else None
    if not texts and sig is None:
        return None
    return ReasoningPart("\n\n".join(texts), sig, origin=FAMILY)


_PREAMBLE = frozenset({"response.created", "response.queued", "response.in_progress"})


class ResponsesStreamDecoder(StreamDecoder):
    """Responses stream events -> IR. Text content parts and function calls become IR blocks;
    reasoning and built-in tool items are skipped. Complete at ``response.completed`` or
    ``response.incomplete``; ``response.failed`` and ``error`` are stream errors."""

    __slots__ = (
        "_blocks",
        "_calls",
        "_done",
        "_next",
        "_open",
        "_preamble",
        "_refusal",
        "_started",
        "_streamed",
    )

    def __init__(self) -> None:
        self._blocks: dict[
            tuple[Any, ...], int
        ] = {}  # ("text", output, content) / ("fc", output) -> IR index
        self._next = 0
        self._open: set[int] = set()
        self._streamed: set[int] = set()  # tool blocks whose arguments arrived as deltas
        self._calls = False
        self._refusal = False
        self._started = False
        self._done = False
        self._preamble = False  # the last event fed was of the preamble

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        self._preamble = False
        if self._done:
            return []
        try:
            obj = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self._done = True
            return [
                StreamError(GatewayError("api_error", "upstream sent a malformed stream event", status=502))
            ]
        if not isinstance(obj, dict):
            return []
        out: list[StreamEvent] = []
        try:
            self._event(out, obj, event.event)
        except GatewayError as e:  # a wrongly typed event: the stream fails here, well formed
            self._done = True
            out.append(StreamError(e))
        return out

    def opening(self) -> bool:
        return self._preamble

    def _event(self, out: list[StreamEvent], obj: dict[str, Any], name: str | None) -> None:
        """One event -> IR events in ``out``; every field read is type-checked (bad_answer)."""
        t = _a_str(obj.get("type"), "type") or name
        # created, then queued / in_progress: the response's preamble, before any output
        self._preamble = t in _PREAMBLE
        if t == "response.output_text.delta" or t == "response.refusal.delta":
            block = self._blocks.get(("text", _index(obj, "output_index"), _index(obj, "content_index")))
            delta = _a_str(obj.get("delta"), "delta")
            if block is not None and delta:
                out.append(BlockDelta(block, delta))
            return
        if t == "response.reasoning_summary_text.delta" or t == "response.function_call_arguments.delta":
            kind = "rs" if t == "response.reasoning_summary_text.delta" else "fc"
            block = self._blocks.get((kind, _index(obj, "output_index")))
            delta = _a_str(obj.get("delta"), "delta")
            if block is not None and delta:
                self._streamed.add(block)
                out.append(BlockDelta(block, delta))
            return
        if t == "response.created":
            self._start(out, _a_obj(obj.get("response"), "response"))
            return
        if t == "response.failed":
            resp = _obj(obj.get("response"))
            err = _obj(resp.get("error")) or {"message": "response failed"}
            self._done = True
            out.append(StreamError(_error_from_stream(err)))
            return
        if t == "error":
            self._done = True
            out.append(StreamError(_error_from_stream(obj)))
            return
        self._start(out, None)
        if t == "response.content_part.added":
            part = _a_obj(obj.get("part"), "part")
            ptype = _a_str(part.get("type"), "part.type")
            if ptype in ("output_text", "refusal"):
                key = ("text", _index(obj, "output_index"), _index(obj, "content_index"))
                block = self._open_block(out, key, "text")
                self._refusal |= ptype == "refusal"
                text = _a_str(part.get(ptype if ptype == "refusal" else "text"), f"part.{ptype}")
                if text:
                    out.append(BlockDelta(block, text))
        elif t == "response.content_part.done":
            self._stop_block(
                out, self._blocks.get(("text", _index(obj, "output_index"), _index(obj, "content_index")))
            )
        elif t == "response.output_item.added":
            item = _a_obj(obj.get("item"), "item")
            itype = _a_str(item.get("type"), "item.type")
            if itype == "reasoning":
                self._open_block(out, ("rs", _index(obj, "output_index")), "reasoning")
                out[-1].origin = FAMILY  # type: ignore[union-attr]
            elif itype == "function_call":
                self._calls = True
                block = self._open_block(
                    out,
                    ("fc", _index(obj, "output_index")),
                    "tool_call",
                    _a_str(item.get("call_id"), "item.call_id") or new_id("call"),
                    _a_str(item.get("name"), "item.name"),
                )
                args = _a_str(item.get("arguments"), "item.arguments")
                if args:
                    self._streamed.add(block)
                    out.append(BlockDelta(block, args))
        elif t == "response.output_item.done":
            item = _a_obj(obj.get("item"), "item")
            itype = _a_str(item.get("type"), "item.type")
            if itype == "reasoning":
                block = self._blocks.get(("rs", _index(obj, "output_index")))
                said = _answer_reasoning(item, "item")
                if block is not None and block in self._open and said is not None:
                    if said.text and block not in self._streamed:  # a summary sent whole, not as deltas
                        out.append(BlockDelta(block, said.text))
                    if said.signature:
                        out.append(BlockDelta(block, "", said.signature, FAMILY))
                self._stop_block(out, block)
            elif itype == "function_call":
                block = self._blocks.get(("fc", _index(obj, "output_index")))
                args = _a_str(item.get("arguments"), "item.arguments")
                if block is not None:
                    if block not in self._streamed and block in self._open and args:
                        out.append(BlockDelta(block, args))
                    self._stop_block(out, block)
        elif t in ("response.completed", "response.incomplete"):
            resp = _a_obj(obj.get("response"), "response")
            stop = _stop_of(resp, self._calls, self._refusal, "response.")
            u = resp.get("usage")
            usage = usage_from_responses(u, "response.usage") if u is not None else None
            for block in sorted(self._open):
                out.append(BlockStop(block))
            self._open.clear()
            self._done = True
            out.append(MessageDelta(stop, None, usage))
            out.append(MessageStop())
        # in_progress, reasoning summaries, built-in tool progress: nothing for the IR

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        self._done = True
        return [StreamError(GatewayError("api_error", _STREAM_CUT, status=502))]

    def _start(self, out: list[StreamEvent], resp: dict[str, Any] | None) -> None:
        if self._started:
            return
        resp = resp or {}
        u = resp.get("usage")
        start = MessageStart(
            _a_str(resp.get("id"), "response.id") or new_id("resp"),
            _a_str(resp.get("model"), "response.model"),
            usage_from_responses(u, "response.usage") if u is not None else Usage(),
        )
        self._started = True
        out.append(start)

    def _open_block(
        self,
        out: list[StreamEvent],
        key: tuple[Any, ...],
        kind: Any,
        call_id: str | None = None,
        name: str | None = None,
    ) -> int:
        block = self._blocks[key] = self._next
        self._next += 1
        self._open.add(block)
        out.append(BlockStart(block, kind, call_id, name))
        return block

    def _stop_block(self, out: list[StreamEvent], block: int | None) -> None:
        if block is not None and block in self._open:
            self._open.discard(block)
            out.append(BlockStop(block))


def _index(obj: dict[str, Any], key: str) -> int:
    """An event's ``output_index`` / ``content_index`` (absent: -1, the same for every event)."""
    return _a_int(obj.get(key), key, -1)


def _sse(event_type: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponsesStreamEncoder(StreamEncoder):
    """IR events -> the Responses event sequence. IR text blocks are content parts of a message
    item (one item per run of text), IR tool calls are function_call items; every event carries
    the next ``sequence_number``, and the terminal event holds the whole response."""

    __slots__ = (
        "_created",
        "_done",
        "_echo",
        "_id",
        "_items",
        "_model",
        "_msg",
        "_open",
        "_output",
        "_reasoning",
        "_seq",
        "_stop",
        "_usage",
    )

    def __init__(self, req: ChatRequest) -> None:
        self._model = req.model
        self._echo = req.echo
        self._id = ""
        self._created = int(time.time())
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # every output item so far, in order
        self._msg: int | None = None  # output index of the open message item
        # IR block -> (output index, content index or -1 for a call, pieces of its text or arguments)
        self._items: dict[int, tuple[int, int, list[str]]] = {}
        self._open: set[int] = set()
        self._reasoning: set[int] = set()  # IR blocks that are reasoning items
        self._stop: StopReason | None = None
        self._usage: Usage | None = None
        self._done = False

    def _open_reasoning(self, event: BlockStart) -> bytes:
        """A reasoning item with one summary part (``reasoning_summary_text`` deltas follow)."""
        out = self._close_message()
        item = _reasoning_item(ReasoningPart(redacted=event.redacted))
        self._reasoning.add(event.index)
        self._open.add(event.index)
        self._items[event.index] = (len(self._output), 0, [])
        self._output.append(item)
        index = len(self._output) - 1
        return (
            out
            + self._event(
                "response.output_item.added", {"output_index": index, "item": {**item, "summary": []}}
            )
            + self._event(
                "response.reasoning_summary_part.added",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        )

    def _close_reasoning(self, block: int) -> bytes:
        out_index, _, pieces = self._items[block]
        self._open.discard(block)
        item = self._output[out_index]
        text = "".join(pieces)
        item["summary"] = [{"type": "summary_text", "text": text}] if text else []
        part = {"type": "summary_text", "text": text}
        ids = {"item_id": item["id"], "output_index": out_index, "summary_index": 0}
        return (
            self._event("response.reasoning_summary_text.done", {**ids, "text": text})
            + self._event("response.reasoning_summary_part.done", {**ids, "part": part})
            + self._event("response.output_item.done", {"output_index": out_index, "item": item})
        )

    def _event(self, event_type: str, payload: dict[str, Any]) -> bytes:
        payload = {"type": event_type, **payload, "sequence_number": self._seq}
        self._seq += 1
        return _sse(event_type, payload)

    def _response(self, status: str) -> dict[str, Any]:
        return response_object(
            self._id,
            self._model,
            self._created,
            status,
            self._output if status != "in_progress" else [],
            self._usage if status != "in_progress" else None,
            self._echo,
            self._stop,
        )

    def _begin(self) -> bytes:
        if self._id:
            return b""
        self._id = new_id("resp")
        return self._event("response.created", {"response": self._response("in_progress")}) + self._event(
            "response.in_progress", {"response": self._response("in_progress")}
        )

    def _close_text(self, block: int) -> bytes:
        out_index, content_index, pieces = self._items[block]
        self._open.discard(block)
        text = "".join(pieces)
        item = self._output[out_index]
        part = item["content"][content_index]
        part["text"] = text
        return self._event(
            "response.output_text.done",
            {
                "item_id": item["id"],
                "output_index": out_index,
                "content_index": content_index,
                "text": text,
                "logprobs": [],
            },
        ) + self._event(
            "response.content_part.done",
            {"item_id": item["id"], "output_index": out_index, "content_index": content_index, "part": part},
        )

    def _close_message(self) -> bytes:
        if self._msg is None:
            return b""
        out = b""
        for block in sorted(b for b in self._open if self._items[b][0] == self._msg):
            out += self._close_text(block)
        item = self._output[self._msg]
        item["status"] = "incomplete" if self._stop in _STATUS else "completed"
        out += self._event("response.output_item.done", {"output_index": self._msg, "item": item})
        self._msg = None
        return out

    def _close_call(self, block: int) -> bytes:
        out_index, _, pieces = self._items[block]
        self._open.discard(block)
        item = self._output[out_index]
        item["arguments"] = "".join(pieces)
        item["status"] = "completed"
        return self._event(
            "response.function_call_arguments.done",
            {"item_id": item["id"], "output_index": out_index, "arguments": item["arguments"]},
        ) + self._event("response.output_item.done", {"output_index": out_index, "item": item})

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, BlockDelta):
            found = self._items.get(event.index)
            if found is None or event.index not in self._open:
                return b""
            out_index, content_index, pieces = found
            item_id = self._output[out_index]["id"]
            if event.index in self._reasoning:
                if event.signature is not None:
                    self._output[out_index]["encrypted_content"] = event.signature
                    return b""
                if not event.text:
                    return b""
                pieces.append(event.text)
                return self._event(
                    "response.reasoning_summary_text.delta",
                    {"item_id": item_id, "output_index": out_index, "summary_index": 0, "delta": event.text},
                )
            pieces.append(event.text)
            if content_index < 0:
                return self._event(
                    "response.function_call_arguments.delta",
                    {"item_id": item_id, "output_index": out_index, "delta": event.text},
                )
            return self._event(
                "response.output_text.delta",
                {
                    "item_id": item_id,
                    "output_index": out_index,
                    "content_index": content_index,
                    "delta": event.text,
                    "logprobs": [],
                },
            )
        if isinstance(event, MessageStart):
            return self._begin()
        pre = self._begin()
        if isinstance(event, BlockStart):
            if event.kind == "reasoning":
                return pre + self._open_reasoning(event)
            if event.kind == "tool_call":
                pre += self._close_message()
                item = _call_item(
                    ToolCallPart(event.tool_call_id or new_id("call"), event.tool_name or "", ""),
                    "in_progress",
                )
                self._open.add(event.index)
                self._items[event.index] = (len(self._output), -1, [])
                self._output.append(item)
                return pre + self._event(
                    "response.output_item.added", {"output_index": len(self._output) - 1, "item": item}
                )
            if self._msg is None:
                self._msg = len(self._output)
                self._output.append({**_message_item([], "in_progress")})
                pre += self._event(
                    "response.output_item.added",
                    {"output_index": self._msg, "item": {**self._output[self._msg], "content": []}},
                )
            item = self._output[self._msg]
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            self._open.add(event.index)
            self._items[event.index] = (self._msg, len(item["content"]), [])
            item["content"].append(part)
            return pre + self._event(
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": self._msg,
                    "content_index": len(item["content"]) - 1,
                    "part": dict(part),
                },
            )
        if isinstance(event, BlockStop):
            found = self._items.get(event.index)
            if found is None or event.index not in self._open:
                return pre
            if event.index in self._reasoning:
                return pre + self._close_reasoning(event.index)
            return pre + (self._close_call(event.index) if found[1] < 0 else self._close_text(event.index))
        if isinstance(event, MessageDelta):
            if event.stop_reason is not None:
                self._stop = event.stop_reason
            if event.usage is not None:
                self._usage = event.usage
            return pre
        if isinstance(event, MessageStop):
            self._done = True
            for block in sorted(self._open):
                if block in self._reasoning:
                    pre += self._close_reasoning(block)
                elif self._items[block][1] < 0:
                    pre += self._close_call(block)
            pre += self._close_message()
            resp = self._response("completed")
            kind = "response.incomplete" if resp["status"] == "incomplete" else "response.completed"
            return pre + self._event(kind, {"response": resp})
        if isinstance(event, StreamError):
            self._done = True
            err: GatewayError = event.error
            resp = self._response("failed")
            resp["error"] = {"code": _error_code(err), "message": err.message}
            return (
                pre
                + self._event("error", {"code": _event_code(err), "message": err.message, "param": err.param})
                + self._event("response.failed", {"response": resp})
            )
        return pre


# ---- the codec -------------------------------------------------------------------------------


# Tool names: as Chat Completions, "^[a-zA-Z0-9_-]{1,64}$" (OpenAI API reference, responses
# tools[].name). Tool-call ids (``call_id``): no documented rule.
TOOL_RULES = ToolRules(name=Rule(r"[a-zA-Z0-9_-]+", 64))
# Media: as Chat Completions (the same image input requirements).
MEDIA = CHAT_MEDIA


class ResponsesCodec(Codec):
    dialect = DIALECT
    tool_rules = TOOL_RULES
    media = MEDIA
    reasoning_styles = ("effort",)
    field_names = {
        "max_tokens": "max_output_tokens",
        "response_format": "text.format",
        "system": "instructions",
        "reasoning_effort": "reasoning.effort",
    }

    def parse_request(
        self, body: dict[str, Any], path_model: str | None = None, path_stream: bool = False
    ) -> ChatRequest:
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        model = _nonempty_str(body.get("model"), "model")
        unmapped: list[str] = []
        values: dict[str, Any] = {}
        for key, value in body.items():
            if value is None or key in _IGNORED or (key in _HANDLED and key != "include"):
                continue
            if _neutral(key, value):
                continue
            unmapped.append(key)
            values[key] = value
        system: list[TextPart] = []
        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise _type_error("instructions", "a string")
            if instructions:
                system.append(TextPart(instructions))
        messages = _parse_input(body.get("input"), system, unmapped)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _type_error("stream", "a boolean")
        ptc = body.get("parallel_tool_calls")
        if ptc is not None and not isinstance(ptc, bool):
            raise _type_error("parallel_tool_calls", "a boolean")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise _type_error("user", "a string")
        sid = body.get("safety_identifier")
        if sid is not None and not isinstance(sid, str):
            raise _type_error("safety_identifier", "a string")
        user = user or sid
        pck = body.get("prompt_cache_key")
        if pck is not None and not isinstance(pck, str):
            raise _type_error("prompt_cache_key", "a string")
        return ChatRequest(
            model=model,
            messages=messages,
            system=system,
            tools=_parse_tools(body.get("tools"), unmapped),
            tool_choice=_parse_tool_choice(body.get("tool_choice"), unmapped, values),
            parallel_tool_calls=ptc,
            max_tokens=_opt_int(body, "max_output_tokens"),
            temperature=_opt_num(body, "temperature"),
            top_p=_opt_num(body, "top_p"),
            response_format=_parse_text(body.get("text"), unmapped, values),
            reasoning_effort=_parse_reasoning(body.get("reasoning"), unmapped, values),
            thinking=_parse_summary(body.get("reasoning")),
            user=user,
            prompt_cache_key=pck,
            stream=bool(stream),
            # The usage is in the terminal event of every Responses stream.
            stream_include_usage=True,
            unmapped=unmapped,
            source_dialect=DIALECT,
            unmapped_values=values,
            field_names=self.field_names,
            echo={k: body[k] for k in ECHO_KEYS if k in body},
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
                ("stop", req.stop or None),
                ("top_k", req.top_k),
                ("seed", req.seed),
                ("presence_penalty", req.presence_penalty),
                ("frequency_penalty", req.frequency_penalty),
            ):
                if value is not None:
                    raise unsupported(client_field(req, name), DIALECT)
            if req.n is not None and req.n != 1:
                raise unsupported(client_field(req, "n"), DIALECT)
        # The gateway keeps conversations itself: a backend is never asked to store one.
        body: dict[str, Any] = {"model": upstream_model, "input": _build_input(req, drop), "store": False}
        if req.system:
            body["instructions"] = "\n\n".join(p.text for p in req.system)
        if req.max_tokens is not None:
            body["max_output_tokens"] = req.max_tokens
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        rf = req.response_format
        if rf is not None and rf.type != "text":
            # Chat Completions' response_format, flattened: the same rules (JSON mode needs
            # "json" in the messages; strict only where the schema meets strict mode's rules).
            chat = response_format(rf, req)
            fmt: dict[str, Any] = {"type": chat["type"]}
            js = chat.get("json_schema")
            if js is not None:
                fmt.update(
                    name=js["name"],
                    schema=js.get("schema") or ANY_JSON_OBJECT,
                    strict=js.get("strict") is True,
                )
            body["text"] = {"format": fmt}
        _build_reasoning(req, body)
        if req.user is not None:
            body["user"] = req.user
        if req.prompt_cache_key is not None:
            body["prompt_cache_key"] = req.prompt_cache_key
        if req.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    **({"description": t.description} if t.description is not None else {}),
                    "parameters": t.parameters,
                    # Said either way: the Responses API makes function tools strict by default.
                    "strict": bool(t.strict) and strict_schema_ok(t.parameters),
                }
                for t in req.tools
            ]
        tc = req.tool_choice
        if tc is not None:
            body["tool_choice"] = {"type": "function", "name": tc.name} if tc.mode == "tool" else tc.mode
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
        if req.stream:
            body["stream"] = True
        apply_unmapped(req, body, DIALECT, drop)
        return body

    def request_path(self, upstream_model: str, stream: bool) -> str:
        return "/responses"

    def parse_response(self, body: dict[str, Any]) -> ChatResponse:
        """Every field read is type-checked: a wrongly typed answer, an error object or a
        failed response is the provider's fault (502, a failed attempt)."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        if body.get("error") is not None or body.get("status") == "failed":
            err = body.get("error")
            message = err.get("message") if isinstance(err, dict) else err
            raise _invalid_answer(f"it was an error: {message if isinstance(message, str) else 'no message'}")
        content: list[TextPart | ToolCallPart | ReasoningPart] = []
        refusal = False
        for ipath, item in _a_objects(body.get("output"), "output"):
            t = _a_str(item.get("type"), f"{ipath}.type")
            if t == "message":
                for ppath, part in _a_objects(item.get("content"), f"{ipath}.content"):
                    ptype = _a_str(part.get("type"), f"{ppath}.type")
                    if ptype == "output_text":
                        text = _a_str(part.get("text"), f"{ppath}.text")
                        if text:
                            content.append(TextPart(text))
                    elif ptype == "refusal":
                        refusal = True
                        content.append(TextPart(_a_str(part.get("refusal"), f"{ppath}.refusal")))
            elif t == "function_call":
                content.append(
                    ToolCallPart(
                        _a_str(item.get("call_id"), f"{ipath}.call_id") or new_id("call"),
                        _a_str(item.get("name"), f"{ipath}.name"),
                        _a_str(item.get("arguments"), f"{ipath}.arguments") or "{}",
                    )
                )
            elif t == "reasoning":
                reasoning = _answer_reasoning(item, ipath)
                if reasoning is not None:
                    content.append(reasoning)
            # built-in tool items: no IR equivalent in a response
        u = body.get("usage")
        return ChatResponse(
            id=_a_str(body.get("id"), "id") or new_id("resp"),
            model=_a_str(body.get("model"), "model"),
            content=content,
            stop_reason=_stop_of(body, any(isinstance(p, ToolCallPart) for p in content), refusal),
            usage=usage_from_responses(u) if u is not None else Usage(),
        )

    def render_response(self, resp: ChatResponse) -> dict[str, Any]:
        return self.render_reply(resp, None)

    def render_reply(self, resp: ChatResponse, req: ChatRequest | None) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        status = "incomplete" if resp.stop_reason in _STATUS else "completed"
        texts: list[str] = []
        for p in resp.content:
            if isinstance(p, TextPart):
                texts.append(p.text)
                continue
            if texts:
                output.append(_message_item(texts, status))
                texts = []
            output.append(_reasoning_item(p) if isinstance(p, ReasoningPart) else _call_item(p))
        if texts:
            output.append(_message_item(texts, status))
        return response_object(
            new_id("resp"),
            resp.model,
            int(time.time()),
            "completed",
            output,
            resp.usage,
            req.echo if req is not None else {},
            resp.stop_reason,
        )

    def stream_decoder(self, answers: int = 1) -> StreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(self, req: ChatRequest) -> StreamEncoder:
        return ResponsesStreamEncoder(req)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        """Usage of a response object, or of an event that carries one (the terminal events)."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        resp = body.get("response")
        if resp is not None:
            u, path = _a_obj(resp, "response").get("usage"), "response.usage"
        else:
            u, path = body.get("usage"), "usage"
        return usage_from_responses(u, path) if u is not None else None

    def rename_model(self, body: dict[str, Any], model: str) -> bool:
        resp = body.get("response")
        target = resp if isinstance(resp, dict) else body
        if "model" in target:
            target["model"] = model
            return True
        return False

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        err = OPENAI.parse_error(status, body)  # the same error format as Chat Completions
        if err.kind == "invalid_request" and "context window" in err.message.lower():
            err.kind = "context_length"  # how the Responses API words it
        return err

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        out = OPENAI.render_error(err)
        if err.kind == "not_found" and err.param != "model":
            out["error"]["code"] = None  # an unknown response id or path, not a model
        if err.param == "previous_response_id" and err.message.startswith(PREVIOUS_NOT_FOUND):
            out["error"]["code"] = "previous_response_not_found"
        return out

    def render_stream_error(self, err: GatewayError) -> bytes:
        # An event of its own: the stream it ends is a backend's, whose sequence numbers the gateway does not follow.
        return _sse(
            "error",
            {
                "type": "error",
                "code": _event_code(err),
                "message": err.message,
                "param": err.param,
                "sequence_number": 0,
            },
        )


RESPONSES = ResponsesCodec()
