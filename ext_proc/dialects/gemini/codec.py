"""Gemini codec (``v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``).

The model and stream flag live in the URL. Google's REST front end accepts both
camelCase and snake_case field names (its own curl samples use
``system_instruction``, ``inline_data``...), so the parser reads both; the
builder writes camelCase.

Tool-call ids: Gemini's ``functionCall.id``/``functionResponse.id`` are
optional. Calls without one get ``call_<n>`` (n = position among the
request's function calls, so re-parsing gives the same ids); a response
without an id answers the earliest unanswered call of the same name. Calls in
backend responses without an id get a random ``call_<hex>`` (ids must not
repeat across the turns of one conversation).

Unmapped-field policy: ``safetySettings``, ``cachedContent`` (refused towards other backends
even with ``drop_unsupported``: the cached prompt is provider state), unknown
top-level and ``generationConfig`` fields (``responseModalities`` other than ``["TEXT"]``,
``responseLogprobs``...), non-function tools (``googleSearch``, ``codeExecution``...), media
other than images, PDFs and plain text, ``fileData`` URIs only Google can read (Files API,
``gs://``, YouTube) and code-execution parts are unmapped. Ignored: ``labels``,
``serviceTier``, ``store``, a ``thoughtSignature`` on a text part, and a function
declaration's ``response`` schema and ``behavior``.

A tool result's images are a multimodal function response: ``functionResponse.parts`` of
``inlineData`` (read both ways); an image by URL, or of a type a function response does not take
inside it, goes beside the response after a text naming the call.

Towards Gemini, the end user (OpenAI ``user``, Anthropic ``metadata.user_id``) is dropped:
Gemini has no such field and it only tags the request.

Reasoning (docs/reasoning.md, https://ai.google.dev/gemini-api/docs/thinking and
https://ai.google.dev/gemini-api/docs/thought-signatures): ``thinkingConfig``
(``thinkingBudget``, ``thinkingLevel``, ``includeThoughts``) is the IR's reasoning
controls; thought parts (``thought: true``) are IR reasoning parts, and a
``thoughtSignature`` on a function call is the call's own signature. The signature is
base64 on the wire (bytes in the SDKs): a sealed gateway token is sent base64-encoded.
"""

from __future__ import annotations

import base64
import copy
import uuid
from typing import Any

import orjson

from ...errors import DEFAULT_STATUS, GatewayError, invalid, kind_for_status, overloaded_as_503, unsupported
from ...translation import reasoning as _reasoning
from ...translation.codec import Codec, StreamDecoder, StreamEncoder, apply_unmapped, client_field
from ...translation.fields import answer_count as _count
from ...translation.fields import answer_int as _a_int
from ...translation.fields import answer_json as _a_json
from ...translation.fields import answer_obj as _a_obj
from ...translation.fields import answer_objects as _a_objects
from ...translation.fields import answer_str as _a_str
from ...translation.fields import args_object as _args_object
from ...translation.fields import bad_answer as _bad_answer
from ...translation.fields import error_json as _error_json
from ...translation.fields import invalid_answer as _invalid_answer
from ...translation.fields import nonempty_str as _nonempty_str
from ...translation.fields import objects as _objects
from ...translation.fields import type_error as _type_error
from ...translation.ir import (
    PDF,
    PLAIN_TEXT,
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
    ReasoningPart,
    ResponseFormat,
    Role,
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
from ...translation.markers import inline_system, read_system, tool_images_intro
from ...translation.media import MediaRules
from ...translation.names import Rule, ToolRules
from ...translation.sse import SSEEvent

DIALECT = "gemini"
# The family whose thought signatures this dialect issues and takes back (Gemini on AI
# Studio and Vertex alike).
FAMILY = "gemini"

_TOP_HANDLED = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"})
_TOP_IGNORED = frozenset({"labels", "serviceTier", "store", "model"})
# generationConfig values that ask for what happens anyway: not refused anywhere.
_GEN_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "responseModalities": (["TEXT"], ["text"]),
    "responseLogprobs": (False,),
}
# fileData URIs only Google can resolve, and why (a refusal says it).
_GOOGLE_ONLY_URIS: tuple[tuple[str, str], ...] = (
    ("https://generativelanguage.googleapis.com/", "a Gemini Files API URI, which only Gemini can read"),
    ("gs://", "a Cloud Storage URI, which only Vertex AI can read"),
    ("https://www.youtube.com/", "a YouTube URL, which only Gemini can watch"),
    ("https://youtu.be/", "a YouTube URL, which only Gemini can watch"),
)
_DOCUMENT_TYPES = frozenset({PDF, PLAIN_TEXT})
_STANDARD_B64 = str.maketrans("-_", "+/")
_GEN_HANDLED = frozenset(
    {
        "thinkingConfig",
        "temperature",
        "topP",
        "topK",
        "maxOutputTokens",
        "stopSequences",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "candidateCount",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
    }
)

FINISH_TO_IR: dict[str, StopReason] = {
    "STOP": "end_turn",  # or tool_use when the candidate holds function calls
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}
# IR -> finishReason. Gemini ends tool-calling turns with STOP; a refusal is
# reported as SAFETY, the closest policy stop.
IR_TO_FINISH: dict[str, str] = {
    "end_turn": "STOP",
    "stop_sequence": "STOP",
    "tool_use": "STOP",
    "max_tokens": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "refusal": "SAFETY",
    "other": "OTHER",
}

_CANONICAL: dict[str, str] = {
    "invalid_request": "INVALID_ARGUMENT",
    "context_length": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "unknown_endpoint": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "api_error": "INTERNAL",
    "overloaded": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
}
_STATUS_KINDS: dict[str, str] = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "INTERNAL": "api_error",
    "UNKNOWN": "api_error",
    "CANCELLED": "api_error",
    "ABORTED": "api_error",
    "UNAVAILABLE": "overloaded",
    "DEADLINE_EXCEEDED": "timeout",
}
_CONTEXT_HINTS = ("exceeds the maximum number of tokens", "input token count", "context window")

_MIME_BY_EXT = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "bmp": "image/bmp",
}

_STREAM_CUT = "upstream stream ended unexpectedly"


# ---- helpers ------------------------------------------------------------------------


def _camel(name: str) -> str:
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _g(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def _num(v: Any, path: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _type_error(path, "a number")
    return v


def _int(v: Any, path: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        # proto3 JSON allows int64 as strings
        if isinstance(v, str) and v.lstrip("-").isdigit():
            return int(v)
        # ... and integers written as floats without a fraction (protobuf's json_format parses
        # ``40.0`` into an int32): the google-genai SDK types ``top_k`` as a float and sends ``40.0``.
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise _type_error(path, "an integer")
    return v


def _opt_id(v: Any, path: str) -> str | None:
    """An optional call id (a string: it is matched and echoed, never hashed as is)."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise _type_error(path, "a string")
    return v


def _lower_types(schema: Any) -> Any:
    """Gemini's OpenAPI-subset ``Schema`` -> JSON Schema: ``type: OBJECT`` becomes
    ``object``, ``nullable: true`` a ``[type, "null"]`` union, and the
    Gemini-only ``propertyOrdering`` is dropped (other providers reject it)."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for k, v in schema.items():
            if k == "type" and isinstance(v, str):
                out[k] = v.lower()
            elif k in ("properties", "$defs", "definitions") and isinstance(v, dict):
                out[k] = {pk: _lower_types(pv) for pk, pv in v.items()}
            elif k in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "not"):
                out[k] = _lower_types(v)
            elif k not in ("nullable", "propertyOrdering", "property_ordering"):
                out[k] = v
        if schema.get("nullable") is True and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    return schema


def guess_mime(url: str) -> str:
    """Gemini's fileData needs a mimeType: guess it from the URL's extension."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    dot = path.rfind(".")
    if dot > path.rfind("/"):
        return _MIME_BY_EXT.get(path[dot + 1 :].lower(), "image/jpeg")
    return "image/jpeg"


def _result_text(response: Any) -> tuple[str, bool]:
    """functionResponse.response -> (text, is_error): unwraps ``result``/``output``/``error``."""
    if isinstance(response, dict) and len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("result", "output", "error"):
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            return text, key == "error"
    if response is None:
        return "", False
    return orjson.dumps(response).decode(), False


# ---- requests -----------------------------------------------------------------------


def google_only(uri: str) -> str | None:
    """Why a fileData URI can be read by Google alone (None: a URL anyone can fetch)."""
    low = uri.lower()
    for prefix, why in _GOOGLE_ONLY_URIS:
        if low.startswith(prefix):
            return why
    return None if low.startswith(("https://", "http://")) else "not an http(s) URL other providers can fetch"


def _parse_media(
    blob: Any, path: str, is_file: bool, unmapped: list[str], reasons: dict[str, str]
) -> ImagePart | FilePart | None:
    """inlineData / fileData: images, PDFs and plain text are IR parts; other media, and files
    only Google can read, are unmapped (with the reason)."""
    if not isinstance(blob, dict):
        raise _type_error(path, "an object")
    mime = _g(blob, "mimeType", "mime_type")
    if mime is not None and not isinstance(mime, str):
        raise _type_error(f"{path}.mimeType", "a string")
    kind = (mime or "").split(";")[0].strip().lower()
    if mime is not None and not kind.startswith("image/") and kind not in _DOCUMENT_TYPES:
        unmapped.append(path)  # audio, video...: the IR carries images and documents
        return None
    if is_file:
        uri = _nonempty_str(_g(blob, "fileUri", "file_uri"), f"{path}.fileUri")
        why = google_only(uri)
        if why is not None:
            unmapped.append(path)
            reasons[path] = f"'{path}.fileUri' is {why}"
            return None
        if kind in _DOCUMENT_TYPES:
            return FilePart(media_type=kind, url=uri, path=path)
        return ImagePart(media_type=mime, url=uri, path=path)
    if mime is None:
        raise _type_error(f"{path}.mimeType", "a string")
    # Gemini takes URL-safe base64 too (its Python SDK sends it); other providers take the
    # standard alphabet only.
    data = _nonempty_str(blob.get("data"), f"{path}.data").translate(_STANDARD_B64)
    if kind in _DOCUMENT_TYPES:
        return FilePart(media_type=kind, data=data, path=path)
    return ImagePart(media_type=mime, data=data, path=path)


def _response_media(parts: Any, path: str, unmapped: list[str], reasons: dict[str, str]) -> list[ImagePart]:
    """A multimodal function response's ``parts`` (FunctionResponsePart: inlineData or fileData)
    -> the tool result's images; other media (documents, audio...) are unmapped: an IR tool
    result carries text and images."""
    if parts is None:
        return []
    if not isinstance(parts, list):
        raise _type_error(path, "an array")
    out: list[ImagePart] = []
    for k, fp in enumerate(parts):
        ppath = f"{path}[{k}]"
        if not isinstance(fp, dict):
            raise _type_error(ppath, "an object")
        for camel, snake, is_file in (("inlineData", "inline_data", False), ("fileData", "file_data", True)):
            blob = _g(fp, camel, snake)
            if blob is None:
                continue
            media = _parse_media(blob, f"{ppath}.{camel}", is_file, unmapped, reasons)
            if isinstance(media, ImagePart):
                out.append(media)
            elif media is not None:
                unmapped.append(f"{ppath}.{camel}")
            break
        else:
            unmapped.append(ppath)
    return out


def _parse_contents(contents: Any, unmapped: list[str], reasons: dict[str, str]) -> list[Message]:
    if not isinstance(contents, list):
        raise _type_error("contents", "an array")
    if not contents:
        raise invalid("'contents' must not be empty", "contents")
    out: list[Message] = []
    call_names: dict[str, str] = {}
    pending: dict[str, list[str]] = {}  # name -> unanswered call ids, oldest first
    n_calls = 0

    for path, c in _objects(contents, "contents"):
        role = c.get("role") or "user"
        if role == "function":  # legacy role for function responses
            role = "user"
        if role not in ("user", "model"):
            raise invalid(f"'{path}.role' must be 'user' or 'model'", f"{path}.role")
        ir_role: Role = "assistant" if role == "model" else "user"
        parts = c.get("parts")
        if not isinstance(parts, list):
            raise _type_error(f"{path}.parts", "an array")
        for ppath, p in _objects(parts, f"{path}.parts"):
            if "text" in p:
                text = p["text"]
                if not isinstance(text, str):
                    raise _type_error(f"{ppath}.text", "a string")
                if p.get("thought") and role == "model":
                    _append_thought(out, text, _sig_in(p, ppath))
                elif text and not p.get("thought"):
                    append_part(out, ir_role, TextPart(text))
                continue
            fc = _g(p, "functionCall", "function_call")
            if fc is not None:
                fpath = f"{ppath}.functionCall"
                if role != "model":
                    raise invalid(f"'{fpath}' is only allowed in a 'model' turn", fpath)
                if not isinstance(fc, dict):
                    raise _type_error(fpath, "an object")
                name = _nonempty_str(fc.get("name"), f"{fpath}.name")
                args = fc.get("args")
                if args is not None and not isinstance(args, dict):
                    raise _type_error(f"{fpath}.args", "an object")
                cid = _opt_id(fc.get("id"), f"{fpath}.id") or f"call_{n_calls}"
                n_calls += 1
                call_names[cid] = name
                pending.setdefault(name, []).append(cid)
                append_part(
                    out,
                    ir_role,
                    ToolCallPart(
                        cid, name, orjson.dumps(args or {}).decode(), _sig_in(p, ppath), id_path=f"{fpath}.id"
                    ),
                )
                continue
            fr = _g(p, "functionResponse", "function_response")
            if fr is not None:
                fpath = f"{ppath}.functionResponse"
                if role == "model":
                    raise invalid(f"'{fpath}' is only allowed in a 'user' turn", fpath)
                if not isinstance(fr, dict):
                    raise _type_error(fpath, "an object")
                name = _nonempty_str(fr.get("name"), f"{fpath}.name")
                rid = _opt_id(fr.get("id"), f"{fpath}.id")
                if not (rid and call_names.get(rid) == name):
                    waiting = pending.get(name)
                    if not waiting:
                        raise invalid(
                            f"'{fpath}' does not match any preceding functionCall named '{name}'",
                            f"{fpath}.name",
                        )
                    rid = waiting[0]
                waiting = pending.get(name)
                if waiting and rid in waiting:
                    waiting.remove(rid)
                response = fr.get("response")
                if response is not None and not isinstance(response, dict):
                    raise _type_error(f"{fpath}.response", "an object")
                text, is_error = _result_text(response)
                content: list[TextPart | ImagePart] = [TextPart(text)] if text else []
                content += _response_media(fr.get("parts"), f"{fpath}.parts", unmapped, reasons)
                result = ToolResultPart(rid, content, name, is_error, fpath, id_path=f"{fpath}.id")
                append_part(out, "tool", result)
                continue
            blob = _g(p, "inlineData", "inline_data")
            if blob is not None:
                img = _parse_media(blob, f"{ppath}.inlineData", False, unmapped, reasons)
                if img is not None:
                    append_part(out, ir_role, img)
                continue
            blob = _g(p, "fileData", "file_data")
            if blob is not None:
                img = _parse_media(blob, f"{ppath}.fileData", True, unmapped, reasons)
                if img is not None:
                    append_part(out, ir_role, img)
                continue
            if set(p) <= {"thought", "thoughtSignature", "thought_signature"}:
                sig = _sig_in(p, ppath)
                if sig is not None and role == "model":
                    _append_thought(out, "", sig)
                continue
            unmapped.append(ppath)  # executableCode, codeExecutionResult, videoMetadata...
    return out


# ---- reasoning (docs/reasoning.md) ---------------------------------------------------


def _sig_in(p: dict[str, Any], path: str) -> str | None:
    """A part's ``thoughtSignature`` as the IR keeps it: a gateway token (which comes
    base64-encoded) as the token, a provider's own signature as sent."""
    sig = _g(p, "thoughtSignature", "thought_signature")
    if sig is None or sig == "":
        return None
    if not isinstance(sig, str):
        raise _type_error(f"{path}.thoughtSignature", "a base64 string")
    try:
        raw = base64.b64decode(sig.replace("-", "+").replace("_", "/") + "=" * (-len(sig) % 4))
    except ValueError:
        return sig
    token = raw.decode("ascii", "replace")
    return token if _reasoning.is_token(token) else sig


def _append_thought(out: list[Message], text: str, sig: str | None) -> None:
    """A thought part of a model turn. A streamed thought arrives as several parts, its
    signature on the last: consecutive parts join into one reasoning part, as one thought."""
    last = out[-1].parts[-1] if out and out[-1].role == "assistant" and out[-1].parts else None
    if isinstance(last, ReasoningPart) and last.signature is None and last.redacted is None:
        last.text += text
        last.signature = sig
    else:
        append_part(out, "assistant", ReasoningPart(text, sig))


def _sig_out(sig: str, origin: str | None = None) -> str:
    """A signature as a Gemini client gets it (the field is bytes, base64 on the wire): Gemini's
    own as it came, anything else (a gateway token) base64-encoded."""
    return sig if origin == FAMILY else base64.b64encode(sig.encode()).decode()


def _ours(sig: str | None, origin: str | None, req: ChatRequest) -> bool:
    """A signature Gemini issued: sealed for this family, or raw from a client of this dialect."""
    return sig is not None and (origin == FAMILY or (origin is None and req.source_dialect == DIALECT))


def _parse_thinking_config(value: Any, req: ChatRequest) -> None:
    """``generationConfig.thinkingConfig`` -> IR controls. A budget together with a level is a
    400, as the API answers it (thinking docs: "use one or the other")."""
    path = "generationConfig.thinkingConfig"
    if not isinstance(value, dict):
        raise _type_error(path, "an object")
    budget = _int(_g(value, "thinkingBudget", "thinking_budget"), f"{path}.thinkingBudget")
    level = _g(value, "thinkingLevel", "thinking_level")
    include = _g(value, "includeThoughts", "include_thoughts")
    if include is not None and not isinstance(include, bool):
        raise _type_error(f"{path}.includeThoughts", "a boolean")
    if level is not None:
        if not isinstance(level, str) or level.lower() not in _LEVELS:
            raise invalid(
                f"'{path}.thinkingLevel' must be one of {', '.join(_LEVELS)}", f"{path}.thinkingLevel"
            )
        if budget is not None:
            raise invalid(
                f"'{path}': thinkingBudget and thinkingLevel cannot be used together", f"{path}.thinkingLevel"
            )
        req.reasoning_effort = level.lower()
        req.thinking = Thinking(include_thoughts=include)
        return
    if budget is not None and not -1 <= budget <= _reasoning.MAX_BUDGET:
        raise invalid(
            f"'{path}.thinkingBudget' must be -1 (dynamic), 0 (off) or a token count",
            f"{path}.thinkingBudget",
        )
    mode = (
        None if budget is None else "disabled" if budget == 0 else "adaptive" if budget == -1 else "enabled"
    )
    req.thinking = Thinking(mode, budget if budget is not None and budget > 0 else None, include)  # type: ignore[arg-type]


_LEVELS = ("minimal", "low", "medium", "high")


def _build_thinking_config(req: ChatRequest, gc: dict[str, Any]) -> None:
    """IR controls -> ``thinkingConfig``: a level (the default style, Gemini 3) or a budget
    (style ``budget``, Gemini 2.5: 0 is off, -1 dynamic), never both."""
    effort, t = _reasoning.for_backend(req, GEMINI.reasoning_styles)
    if t is None:
        return
    tc: dict[str, Any] = {}
    if t.level is not None:
        tc["thinkingLevel"] = t.level
    elif t.mode == "disabled":
        tc["thinkingBudget"] = 0
    elif t.mode == "adaptive":
        tc["thinkingBudget"] = -1
    elif t.budget_tokens is not None:
        tc["thinkingBudget"] = t.budget_tokens
    elif effort is not None:
        tc["thinkingLevel"] = _reasoning.LEVELS.get(effort, "medium")
    if t.include_thoughts is not None and t.mode != "disabled":
        tc["includeThoughts"] = t.include_thoughts
    if tc:
        gc["thinkingConfig"] = tc


def _parse_tools(tools: Any, unmapped: list[str]) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    out: list[Tool] = []
    for path, t in _objects(tools, "tools"):
        for key, value in t.items():
            if _camel(key) != "functionDeclarations":
                unmapped.append(f"{path}.{_camel(key)}")  # googleSearch, codeExecution, urlContext...
                continue
            if not isinstance(value, list):
                raise _type_error(f"{path}.functionDeclarations", "an array")
            for fpath, fd in _objects(value, f"{path}.functionDeclarations"):
                schema = _g(fd, "parametersJsonSchema", "parameters_json_schema")
                if schema is None:
                    schema = fd.get("parameters")
                    schema = _lower_types(schema) if schema is not None else None
                if schema is None:
                    schema = {"type": "object", "properties": {}}
                elif not isinstance(schema, dict):
                    raise _type_error(f"{fpath}.parametersJsonSchema", "an object")
                desc = fd.get("description")
                if desc is not None and not isinstance(desc, str):
                    raise _type_error(f"{fpath}.description", "a string")
                out.append(Tool(_nonempty_str(fd.get("name"), f"{fpath}.name"), desc, schema))
    return out


def _parse_tool_config(tc: Any, unmapped: list[str], values: dict[str, Any]) -> ToolChoice | None:
    if tc is None:
        return None
    if not isinstance(tc, dict):
        raise _type_error("toolConfig", "an object")
    choice: ToolChoice | None = None
    for key, value in tc.items():
        ck = _camel(key)
        if ck != "functionCallingConfig":
            unmapped.append(f"toolConfig.{ck}")
            values[f"toolConfig.{ck}"] = value
            continue
        if not isinstance(value, dict):
            raise _type_error("toolConfig.functionCallingConfig", "an object")
        mode = value.get("mode") or "AUTO"
        names = _g(value, "allowedFunctionNames", "allowed_function_names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _type_error("toolConfig.functionCallingConfig.allowedFunctionNames", "an array of strings")
        mode = mode.upper() if isinstance(mode, str) else mode
        if mode in ("AUTO", "MODE_UNSPECIFIED"):
            choice = ToolChoice("auto")
        elif mode == "NONE":
            choice = ToolChoice("none")
        elif mode == "ANY":
            choice = ToolChoice("tool", names[0]) if len(names) == 1 else ToolChoice("required")
        elif mode == "VALIDATED":
            unmapped.append("toolConfig.functionCallingConfig.mode")
            values["toolConfig.functionCallingConfig.mode"] = mode
            choice = ToolChoice("auto")
        else:
            raise invalid(
                "'toolConfig.functionCallingConfig.mode' must be AUTO, ANY or NONE",
                "toolConfig.functionCallingConfig.mode",
            )
        if len(names) > 1 or (names and mode != "ANY"):
            # A subset of allowed tools has no IR equivalent.
            unmapped.append("toolConfig.functionCallingConfig.allowedFunctionNames")
            values["toolConfig.functionCallingConfig.allowedFunctionNames"] = names
    return choice


def _parse_generation_config(gc: Any, req: ChatRequest, unmapped: list[str], values: dict[str, Any]) -> None:
    if gc is None:
        return
    if not isinstance(gc, dict):
        raise _type_error("generationConfig", "an object")
    cfg: dict[str, Any] = {}
    for key, value in gc.items():
        ck = _camel(key)
        if value is None:
            continue
        if ck in _GEN_HANDLED:
            cfg[ck] = value
        elif value in _GEN_NEUTRAL.get(ck, ()):
            continue
        else:
            unmapped.append(f"generationConfig.{ck}")
            values[f"generationConfig.{ck}"] = value
    p = "generationConfig."
    req.temperature = _num(cfg.get("temperature"), p + "temperature")
    req.top_p = _num(cfg.get("topP"), p + "topP")
    req.top_k = _int(cfg.get("topK"), p + "topK")
    req.max_tokens = _int(cfg.get("maxOutputTokens"), p + "maxOutputTokens")
    req.seed = _int(cfg.get("seed"), p + "seed")
    req.presence_penalty = _num(cfg.get("presencePenalty"), p + "presencePenalty")
    req.frequency_penalty = _num(cfg.get("frequencyPenalty"), p + "frequencyPenalty")
    req.n = _int(cfg.get("candidateCount"), p + "candidateCount")
    if cfg.get("thinkingConfig") is not None:
        _parse_thinking_config(cfg["thinkingConfig"], req)
    stops = cfg.get("stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _type_error(p + "stopSequences", "an array of strings")
        req.stop = stops
    mime = cfg.get("responseMimeType")
    js = cfg.get("responseJsonSchema")
    if js is None and cfg.get("responseSchema") is not None:
        js = _lower_types(cfg["responseSchema"])
    if js is not None and not isinstance(js, dict):
        raise _type_error(p + "responseJsonSchema", "an object")
    if mime is None or mime == "text/plain":
        if js is not None:
            raise invalid(
                "a response schema requires responseMimeType 'application/json'", p + "responseMimeType"
            )
    elif mime == "application/json":
        req.response_format = (
            # Gemini enforces a response schema (constrained decoding): a strict one.
            ResponseFormat("json_schema", js, None, True) if js is not None else ResponseFormat("json_object")
        )
    else:
        unmapped.append(p + "responseMimeType")  # text/x.enum...
        values[p + "responseMimeType"] = mime
        for k in ("responseSchema", "responseJsonSchema"):
            if k in cfg:
                unmapped.append(p + k)
                values[p + k] = cfg[k]


# The image types a function response takes inside it (the Gemini 3 guide's "Multimodal
# function responses": image/png, image/jpeg, image/webp; documents are not IR tool-result
# content). Others (HEIC, HEIF: fine as ordinary parts) go beside the response.
FUNCTION_RESPONSE_IMAGES = frozenset({"image/png", "image/jpeg", "image/webp"})


def _media_part(p: ImagePart | FilePart) -> dict[str, Any]:
    if p.data is not None:
        return {"inlineData": {"mimeType": p.media_type or "image/jpeg", "data": p.data}}
    url = p.url or ""
    return {"fileData": {"mimeType": p.media_type or guess_mime(url), "fileUri": url}}


def _build_contents(req: ChatRequest, drop: bool) -> list[dict[str, Any]]:
    """IR turns -> alternating user/model contents; function responses go
    first in a user turn, like tool results in Anthropic."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    role = ""
    for i, m in enumerate(inline_system(req.messages)):  # system turns in place
        target = "model" if m.role == "assistant" else "user"
        if target != role:
            if role:
                out.append({"role": role, "parts": results + parts})
            role = target
            results = []
            parts = []
        for j, p in enumerate(m.parts):
            if isinstance(p, TextPart):
                parts.append({"text": p.text})
            elif isinstance(p, ImagePart | FilePart):  # inlineData / fileData take any media type
                parts.append(_media_part(p))
            elif isinstance(p, ReasoningPart):
                if target == "model" and _ours(p.signature, p.origin, req):
                    parts.append({"text": p.text, "thought": True, "thoughtSignature": p.signature})
                continue  # another model's reasoning: not Gemini's to read back
            elif isinstance(p, ToolCallPart):
                if target != "model":
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                names[p.id] = p.name
                call: dict[str, Any] = {
                    "functionCall": {
                        "id": p.id,
                        "name": p.name,
                        "args": _args_object(p.arguments, f"messages[{i}].content[{j}].arguments"),
                    }
                }
                if p.signature is not None:
                    call["thoughtSignature"] = p.signature
                parts.append(call)
            else:
                if target == "model":
                    if drop:
                        continue
                    raise unsupported(part_path(p, f"messages[{i}].content[{j}]"), DIALECT)
                name = p.name or names.get(p.tool_call_id)
                if name is None:
                    raise invalid(
                        f"tool result '{p.tool_call_id}' does not match any preceding tool call",
                        f"messages[{i}].content[{j}].tool_call_id",
                    )
                texts: list[str] = []
                media: list[dict[str, Any]] = []
                beside: list[dict[str, Any]] = []
                for c in p.content:
                    if isinstance(c, TextPart):
                        texts.append(c.text)
                    elif c.data is not None and (c.media_type or "image/jpeg") in FUNCTION_RESPONSE_IMAGES:
                        # Multimodal function responses (Gemini 3 models): media travel inside the
                        # functionResponse, in ``parts`` of inlineData (FunctionResponsePart: "Ordered
                        # Parts that constitute a function response", google-genai SDK types.py; the
                        # Gemini 3 developer guide, "Multimodal function responses",
                        # https://ai.google.dev/gemini-api/docs/gemini-3).
                        media.append(
                            {"inlineData": {"mimeType": c.media_type or "image/jpeg", "data": c.data}}
                        )
                    else:  # a URL (FunctionResponseFileData "is not supported in Gemini API") or an
                        beside.append(_media_part(c))  # image type it does not take there: beside it
                if beside:  # in the same turn, after a text naming the call (translation/markers.py)
                    parts += [{"text": tool_images_intro(p.tool_call_id)}, *beside]
                text = "\n".join(texts)
                fr: dict[str, Any] = {
                    "id": p.tool_call_id,
                    "name": name,
                    "response": {"error": text} if p.is_error else {"result": text},
                }
                if media:
                    fr["parts"] = media
                results.append({"functionResponse": fr})
    if role:
        out.append({"role": role, "parts": results + parts})
    return out


def media_beside_responses(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` for a model without multimodal function responses (catalog
    ``tool_result_media: false``, Gemini 2.x): each ``functionResponse``'s media ``parts`` move
    out of it, after the turn's function responses, each group after a text naming its call
    (``translation/markers.py``). The same object when nothing moves, a new one otherwise."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not any(
        isinstance(fr, dict) and fr.get("parts")
        for c in contents
        if isinstance(c, dict) and isinstance(c.get("parts"), list)
        for p in c["parts"]
        if isinstance(p, dict)
        for fr in (_g(p, "functionResponse", "function_response"),)
    ):
        return body
    body = copy.deepcopy(body)
    for c in body["contents"]:
        parts = c.get("parts") if isinstance(c, dict) else None
        if not isinstance(parts, list):
            continue
        moved: list[Any] = []
        last = -1
        for j, p in enumerate(parts):
            fr = _g(p, "functionResponse", "function_response") if isinstance(p, dict) else None
            if not isinstance(fr, dict):
                continue
            last = j
            media = fr.pop("parts", None)
            if isinstance(media, list) and media:
                call = fr.get("id") or fr.get("name") or ""
                moved += [{"text": tool_images_intro(str(call))}, *media]
        if moved:
            c["parts"] = [*parts[: last + 1], *moved, *parts[last + 1 :]]
    return body


# ---- responses / usage --------------------------------------------------------------------


def usage_from_gemini(u: Any, path: str = "usageMetadata") -> Usage:
    """Thinking tokens are output (billed as such); tool-use prompt tokens are input.
    Counts are type-checked: a wrong one is the provider's fault."""
    u = _a_obj(u, path)

    def count(key: str) -> int:
        return _count(u.get(key), f"{path}.{key}")

    return Usage(
        count("promptTokenCount") + count("toolUsePromptTokenCount"),
        count("candidatesTokenCount") + count("thoughtsTokenCount"),
        count("cachedContentTokenCount"),
        reasoning_tokens=count("thoughtsTokenCount"),
    )


def usage_to_gemini(u: Usage) -> dict[str, Any]:
    out = {
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": max(u.output_tokens - u.reasoning_tokens, 0),
        "totalTokenCount": u.input_tokens + u.output_tokens,
    }
    if u.reasoning_tokens:
        out["thoughtsTokenCount"] = u.reasoning_tokens
    if u.cached_input_tokens:
        out["cachedContentTokenCount"] = u.cached_input_tokens
    return out


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _candidate(obj: dict[str, Any]) -> tuple[str | None, list[TextPart | ToolCallPart | ReasoningPart], bool]:
    """(finish reason, content, whether it calls a function) of an answer's first
    candidate, type-checked. A blocked prompt finishes with SAFETY; an answer
    with neither a candidate nor a block reason finishes with None."""
    cands = list(_a_objects(obj.get("candidates"), "candidates"))
    if not cands:
        pf = _a_obj(obj.get("promptFeedback"), "promptFeedback")
        # The prompt itself was blocked: nothing will follow.
        return ("SAFETY" if _a_str(pf.get("blockReason"), "promptFeedback.blockReason") else None), [], False
    return _one_candidate(*cands[0])


def _more_candidates(obj: dict[str, Any]) -> list[Choice]:
    """Candidates after the first (``candidateCount`` > 1), in their ``index`` order."""
    out: list[tuple[int, Choice]] = []
    for n, (path, cand) in enumerate(_a_objects(obj.get("candidates"), "candidates")):
        if n == 0:
            continue
        finish, content, has_call = _one_candidate(path, cand)
        stop = FINISH_TO_IR.get(finish or "", "other")
        out.append(
            (_a_int(cand.get("index"), f"{path}.index") or n, Choice(content, _tool_stop(stop, has_call)))
        )
    return [c for _, c in sorted(out, key=lambda x: x[0])]


def _tool_stop(stop: StopReason, has_call: bool) -> StopReason:
    return "tool_use" if stop == "end_turn" and has_call else stop


def _one_candidate(
    path: str, cand: dict[str, Any]
) -> tuple[str | None, list[TextPart | ToolCallPart | ReasoningPart], bool]:
    content: list[TextPart | ToolCallPart | ReasoningPart] = []
    has_call = False
    parts = _a_obj(cand.get("content"), f"{path}.content").get("parts")
    for ppath, p in _a_objects(parts, f"{path}.content.parts"):
        sig = _a_str(p.get("thoughtSignature"), f"{ppath}.thoughtSignature") or None
        if "text" in p:
            text = _a_str(p["text"], f"{ppath}.text")
            if p.get("thought"):
                content.append(ReasoningPart(text, sig, origin=FAMILY))
            elif text:
                content.append(TextPart(text))
            continue
        fc = p.get("functionCall")
        if fc is not None:
            fc = _a_obj(fc, f"{ppath}.functionCall")
            has_call = True
            content.append(
                ToolCallPart(
                    _a_str(fc.get("id"), f"{ppath}.functionCall.id") or _new_call_id(),
                    _a_str(fc.get("name"), f"{ppath}.functionCall.name"),
                    _a_json(
                        _a_obj(fc.get("args"), f"{ppath}.functionCall.args"), f"{ppath}.functionCall.args"
                    ),
                    sig,
                )
            )
    return _a_str(cand.get("finishReason"), f"{path}.finishReason") or None, content, has_call


def _answer_parts(content: list[TextPart | ToolCallPart | ReasoningPart]) -> list[dict[str, Any]]:
    """IR answer content -> a candidate's parts (thoughts and signatures included)."""
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        if isinstance(p, TextPart):
            parts.append({"text": p.text})
        elif isinstance(p, ReasoningPart):
            thought: dict[str, Any] = {"text": p.text, "thought": True}
            sig = p.signature or p.redacted
            if sig is not None:
                thought["thoughtSignature"] = _sig_out(sig, p.origin)
            parts.append(thought)
        else:
            try:
                args = _args_object(p.arguments, f"content[{j}].args")
            except GatewayError as e:  # the backend's fault, not the client's
                raise GatewayError("api_error", f"upstream returned {e.message}", status=502) from None
            call_part: dict[str, Any] = {"functionCall": {"id": p.id, "name": p.name, "args": args}}
            if p.signature is not None:
                call_part["thoughtSignature"] = _sig_out(p.signature, FAMILY)
            parts.append(call_part)
    return parts


def _error_from_obj(err: dict[str, Any], status: int | None) -> GatewayError:
    message = err.get("message") if isinstance(err.get("message"), str) else None
    canonical = err.get("status")
    kind = _STATUS_KINDS.get(canonical) if isinstance(canonical, str) else None
    if status is None:
        code = err.get("code")
        status = code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else None
    if kind is None:
        kind = kind_for_status(status) if status else "api_error"
    message = message or f"upstream {canonical or 'error'}"
    low = message.lower()
    if kind == "invalid_request":
        if any(h in low for h in _CONTEXT_HINTS):
            kind = "context_length"
        elif "api key not valid" in low:
            kind = "authentication"  # Gemini reports a bad key as 400 INVALID_ARGUMENT
    status = overloaded_as_503(status or 0)
    return GatewayError(kind, message, status=status or DEFAULT_STATUS[kind])  # type: ignore[arg-type]


# ---- streams ----------------------------------------------------------------------------------


class _Candidate:
    """One candidate of a stream (``candidates[].index``): its open block, calls, stop."""

    __slots__ = ("open", "open_thought", "stop", "tool_seen")

    def __init__(self) -> None:
        self.open: int | None = None  # its open text or thought block
        self.open_thought = False
        self.tool_seen = False
        self.stop: StopReason | None = None


class GeminiStreamDecoder(StreamDecoder):
    """GenerateContentResponse chunks -> IR. Function calls arrive whole and
    become BlockStart + one BlockDelta + BlockStop. usageMetadata is
    cumulative: the last one seen is reported."""

    __slots__ = ("_answers", "_done", "_expected", "_next", "_started", "_usage")

    def __init__(self, answers: int = 1) -> None:
        self._started = False
        self._done = False
        self._next = 0  # next IR block index (unique across candidates)
        self._expected = answers  # candidates asked for: the stream ends once each has finished
        self._answers: dict[int, _Candidate] = {}  # candidates[].index -> its state
        self._usage: Usage | None = None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._done:
            return []
        try:
            obj = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self._done = True
            return [
                StreamError(GatewayError("api_error", "upstream sent a malformed stream chunk", status=502))
            ]
        if isinstance(obj, list) and obj:  # a JSON-array stream element
            obj = obj[0]
        out: list[StreamEvent] = []
        try:
            if not isinstance(obj, dict):
                raise _bad_answer("chunk", "an object")
            err = obj.get("error")
            if err is not None:
                self._done = True
                return [StreamError(_error_from_obj(err if isinstance(err, dict) else {}, None))]
            self._chunk(out, obj)
        except GatewayError as e:  # a wrongly typed chunk: the stream fails here, well formed
            self._done = True
            out.append(StreamError(e))
        return out

    def _chunk(self, out: list[StreamEvent], obj: dict[str, Any]) -> None:
        um = obj.get("usageMetadata")
        if um is not None:
            self._usage = usage_from_gemini(um)
        if not self._started:
            self._started = True
            out.append(
                MessageStart(
                    _a_str(obj.get("responseId"), "responseId") or f"gen-{uuid.uuid4().hex}",
                    _a_str(obj.get("modelVersion"), "modelVersion"),
                    Usage(self._usage.input_tokens, 0, self._usage.cached_input_tokens)
                    if self._usage
                    else Usage(),
                )
            )
        cands = list(_a_objects(obj.get("candidates"), "candidates"))
        if not cands:
            blocked = _candidate(obj)[0]
            if blocked:  # the prompt itself was blocked: nothing will follow
                self._answers.setdefault(0, _Candidate()).stop = FINISH_TO_IR.get(blocked, "other")
                self._finish(out)
            return
        for n, (path, cand) in enumerate(cands):
            index = _a_int(cand.get("index"), f"{path}.index")
            choice = n if index is None else index
            a = self._answers.get(choice)
            if a is None:
                if choice < 0:
                    raise _bad_answer(f"{path}.index", "a non-negative integer")
                a = self._answers[choice] = _Candidate()
            finish, content, has_call = _one_candidate(path, cand)
            self._content(out, a, choice, content)
            a.tool_seen = a.tool_seen or has_call
            if finish:
                self._close(out, a)
                a.stop = _tool_stop(FINISH_TO_IR.get(finish, "other"), a.tool_seen)
        if len(self._answers) >= self._expected and all(a.stop for a in self._answers.values()):
            self._finish(out)

    def _content(
        self,
        out: list[StreamEvent],
        a: _Candidate,
        choice: int,
        content: list[TextPart | ToolCallPart | ReasoningPart],
    ) -> None:
        for part in content:
            if isinstance(part, TextPart | ReasoningPart):
                thought = isinstance(part, ReasoningPart)
                if a.open is not None and a.open_thought != thought:
                    self._close(out, a)
                if a.open is None:
                    a.open = self._next
                    self._next += 1
                    a.open_thought = thought
                    out.append(
                        BlockStart(
                            a.open,
                            "reasoning" if thought else "text",
                            origin=FAMILY if thought else None,
                            choice=choice,
                        )
                    )
                if part.text:
                    out.append(BlockDelta(a.open, part.text))
                if isinstance(part, ReasoningPart) and part.signature is not None:
                    out.append(BlockDelta(a.open, "", part.signature, FAMILY))
                continue
            self._close(out, a)
            block = self._next
            self._next += 1
            out.append(
                BlockStart(
                    block,
                    "tool_call",
                    part.id,
                    part.name,
                    signature=part.signature,
                    origin=FAMILY,
                    choice=choice,
                )
            )
            out.append(BlockDelta(block, part.arguments))
            out.append(BlockStop(block))

    def _finish(self, out: list[StreamEvent]) -> None:
        for a in self._answers.values():
            self._close(out, a)
        self._done = True
        stops = [self._answers[k].stop or "other" for k in sorted(self._answers)]
        out.append(MessageDelta(stops[0], None, self._usage, tuple(stops[1:])))
        out.append(MessageStop())

    @staticmethod
    def _close(out: list[StreamEvent], a: _Candidate) -> None:
        if a.open is not None:
            out.append(BlockStop(a.open))
            a.open = None

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        if self._answers and all(a.stop for a in self._answers.values()):
            out: list[StreamEvent] = []  # fewer candidates than asked for, each one finished
            self._finish(out)
            return out
        self._done = True
        return [StreamError(GatewayError("api_error", _STREAM_CUT, status=502))]


class GeminiStreamEncoder(StreamEncoder):
    """IR events -> ``data:`` GenerateContentResponse chunks. Text streams as
    it comes; a tool call is buffered until its BlockStop and sent whole."""

    __slots__ = ("_choice", "_done", "_model", "_sigs", "_tail", "_thoughts", "_tools")

    def __init__(self, req: ChatRequest) -> None:
        self._model = req.model
        self._tail = b""  # ',"modelVersion":..,"responseId":..}\n\n'
        self._tools: dict[int, list[str]] = {}  # open tool blocks: [id, name, arg fragments...]
        self._sigs: dict[int, str] = {}  # tool blocks' own thought signatures
        self._thoughts: set[int] = set()  # reasoning blocks
        self._choice: dict[int, bytes] = {}  # block -> its candidate index, when not 0
        self._done = False

    def _set_id(self, rid: str) -> None:
        self._tail = (
            b',"modelVersion":' + orjson.dumps(self._model) + b',"responseId":' + orjson.dumps(rid) + b"}\n\n"
        )

    def _chunk(self, part: bytes, index: int) -> bytes:
        if not self._tail:
            self._set_id(f"gen-{uuid.uuid4().hex}")
        return (
            b'data: {"candidates":[{"content":{"parts":['
            + part
            + b'],"role":"model"},"index":'
            + (self._choice.get(index, b"0") if self._choice else b"0")
            + b"}]"
            + self._tail
        )

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, BlockDelta):
            buf = self._tools.get(event.index)
            if buf is not None:
                buf.append(event.text)
                return b""
            if event.index in self._thoughts:
                part: dict[str, Any] = {"text": event.text, "thought": True}
                if event.signature is not None:
                    part["thoughtSignature"] = _sig_out(event.signature, event.origin)
                elif not event.text:
                    return b""
                return self._chunk(orjson.dumps(part), event.index)
            return self._chunk(b'{"text":' + orjson.dumps(event.text) + b"}", event.index)
        if isinstance(event, BlockStart):
            if event.choice:
                self._choice[event.index] = str(event.choice).encode()
            if event.kind == "tool_call":
                self._tools[event.index] = [event.tool_call_id or _new_call_id(), event.tool_name or ""]
                if event.signature is not None:
                    self._sigs[event.index] = event.signature
            elif event.kind == "reasoning":
                self._thoughts.add(event.index)
                if event.redacted is not None:  # no Gemini equivalent: an empty thought carrying it
                    return self._chunk(
                        orjson.dumps(
                            {"text": "", "thought": True, "thoughtSignature": _sig_out(event.redacted)}
                        ),
                        event.index,
                    )
            return b""
        if isinstance(event, BlockStop):
            buf = self._tools.pop(event.index, None)
            if buf is None:
                return b""
            try:
                args = _args_object("".join(buf[2:]), "functionCall.args")
            except GatewayError as e:
                return self.encode(
                    StreamError(GatewayError("api_error", f"upstream returned {e.message}", status=502))
                )
            call: dict[str, Any] = {"functionCall": {"id": buf[0], "name": buf[1], "args": args}}
            sig = self._sigs.pop(event.index, None)
            if sig is not None:
                call["thoughtSignature"] = _sig_out(sig, FAMILY)
            return self._chunk(orjson.dumps(call), event.index)
        if isinstance(event, MessageStart):
            self._set_id(event.id)
            return b""
        if isinstance(event, MessageDelta):
            if not self._tail:
                self._set_id(f"gen-{uuid.uuid4().hex}")
            self._done = True  # the finishReason chunk is Gemini's last (every candidate's)
            stops = (event.stop_reason or "end_turn", *event.more_stops)
            return (
                b'data: {"candidates":['
                + b",".join(
                    b'{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"'
                    + IR_TO_FINISH.get(stop, "OTHER").encode()
                    + b'","index":'
                    + str(k).encode()
                    + b"}"
                    for k, stop in enumerate(stops)
                )
                + b'],"usageMetadata":'
                + orjson.dumps(usage_to_gemini(event.usage or Usage()))
                + self._tail
            )
        if isinstance(event, MessageStop):
            self._done = True
            return b""
        if isinstance(event, StreamError):
            self._done = True
            return GEMINI.render_stream_error(event.error)
        return b""


# ---- the codec --------------------------------------------------------------------------------


# Tool names: FunctionDeclaration.name "Must start with a letter or an underscore. Must be a-z,
# A-Z, 0-9, or contain underscores, dots, colons and dashes, with a maximum length of 64" (Gemini
# API / Vertex AI reference, FunctionDeclaration). Function-call ids: no documented rule.
TOOL_RULES = ToolRules(name=Rule(r"[a-zA-Z_][a-zA-Z0-9_.:-]*", 64))
# Images: "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif" (Gemini API and
# Vertex AI "Image understanding", supported MIME types; no GIF). Documents: no list found.
MEDIA = MediaRules(
    image_types=frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
)


class GeminiCodec(Codec):
    dialect = DIALECT
    tool_rules = TOOL_RULES
    media = MEDIA
    several_answers = True
    field_names = {
        "n": "generationConfig.candidateCount",
        "stop": "generationConfig.stopSequences",
        "max_tokens": "generationConfig.maxOutputTokens",
        "temperature": "generationConfig.temperature",
        "top_p": "generationConfig.topP",
        "top_k": "generationConfig.topK",
        "seed": "generationConfig.seed",
        "presence_penalty": "generationConfig.presencePenalty",
        "frequency_penalty": "generationConfig.frequencyPenalty",
        "response_format": "generationConfig.responseMimeType",
        "reasoning_effort": "generationConfig.thinkingConfig.thinkingLevel",
        "thinking": "generationConfig.thinkingConfig.thinkingBudget",
        "tool_choice": "toolConfig.functionCallingConfig",
    }
    reasoning_styles = ("level", "budget", "adaptive")

    def parse_request(
        self, body: dict[str, Any], path_model: str | None = None, path_stream: bool = False
    ) -> ChatRequest:
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        if not path_model:
            raise invalid(
                "the model must be given in the path: /v1beta/models/{model}:generateContent", "model"
            )
        model = path_model[7:] if path_model.startswith("models/") else path_model
        unmapped: list[str] = []
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        required: list[str] = []
        for key, value in body.items():
            ck = _camel(key)
            if ck in _TOP_HANDLED or ck in _TOP_IGNORED or value is None:
                continue
            unmapped.append(ck)  # safetySettings, cachedContent, ...
            values[ck] = value
        if "cachedContent" in values:
            # Part of the prompt lives in the provider's cache: no other backend can see it, and
            # leaving it out (drop_unsupported) would change the answer.
            reasons["cachedContent"] = (
                "it names content cached at the Gemini provider (provider state); "
                "send the cached content in the request instead"
            )
            required.append("cachedContent")
        system: list[TextPart] = []
        si = _g(body, "systemInstruction", "system_instruction")
        if si is not None:
            if isinstance(si, str):
                si = {"parts": [{"text": si}]}
            if not isinstance(si, dict) or not isinstance(si.get("parts"), list):
                raise _type_error("systemInstruction.parts", "an array")
            for j, p in enumerate(si["parts"]):
                if not isinstance(p, dict) or not isinstance(p.get("text"), str):
                    raise _type_error(f"systemInstruction.parts[{j}]", "a text part")
                if p["text"]:
                    system.append(TextPart(p["text"]))
        req = ChatRequest(
            model=model,
            messages=read_system(_parse_contents(body.get("contents"), unmapped, reasons)),
            system=system,
            tools=_parse_tools(body.get("tools"), unmapped),
            tool_choice=_parse_tool_config(_g(body, "toolConfig", "tool_config"), unmapped, values),
            stream=path_stream,
            unmapped=unmapped,
            unmapped_reasons=reasons,
            unmapped_required=required,
            source_dialect=DIALECT,
            field_names=self.field_names,
            unmapped_values=values,
        )
        _parse_generation_config(_g(body, "generationConfig", "generation_config"), req, unmapped, values)
        return req

    def build_request(
        self,
        req: ChatRequest,
        upstream_model: str,
        *,
        default_max_tokens: int,
        drop_unsupported: bool = False,
    ) -> dict[str, Any]:
        drop = drop_unsupported
        if not drop and req.parallel_tool_calls is False:
            raise unsupported(client_field(req, "parallel_tool_calls"), DIALECT)
        body: dict[str, Any] = {"contents": _build_contents(req, drop)}
        if req.system:
            body["systemInstruction"] = {"parts": [{"text": p.text} for p in req.system]}
        gc: dict[str, Any] = {}
        if req.temperature is not None:
            gc["temperature"] = req.temperature
        if req.top_p is not None:
            gc["topP"] = req.top_p
        if req.top_k is not None:
            gc["topK"] = req.top_k
        if req.max_tokens is not None:
            gc["maxOutputTokens"] = req.max_tokens
        if req.stop:
            gc["stopSequences"] = list(req.stop)
        if req.seed is not None:
            gc["seed"] = req.seed
        if req.presence_penalty is not None:
            gc["presencePenalty"] = req.presence_penalty
        if req.frequency_penalty is not None:
            gc["frequencyPenalty"] = req.frequency_penalty
        if req.n is not None and req.n > 1:
            gc["candidateCount"] = req.n
        rf = req.response_format
        if rf is not None and rf.type != "text":
            gc["responseMimeType"] = "application/json"
            if rf.type == "json_schema" and rf.schema is not None:
                gc["responseJsonSchema"] = rf.schema
        _build_thinking_config(req, gc)
        if gc:
            body["generationConfig"] = gc
        if req.tools:
            body["tools"] = [
                {
                    "functionDeclarations": [
                        {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}
                        if t.description is not None
                        else {"name": t.name, "parametersJsonSchema": t.parameters}
                        for t in req.tools
                    ]
                }
            ]
        tc = req.tool_choice
        if tc is not None:
            fcc: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE"}.get(tc.mode, "ANY")}
            if tc.mode == "tool":
                fcc["allowedFunctionNames"] = [tc.name]
            body["toolConfig"] = {"functionCallingConfig": fcc}
        apply_unmapped(req, body, DIALECT, drop)
        return body

    def request_path(self, upstream_model: str, stream: bool) -> str:
        model = upstream_model[7:] if upstream_model.startswith("models/") else upstream_model
        if stream:
            return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
        return f"/v1beta/models/{model}:generateContent"

    def parse_response(self, body: dict[str, Any]) -> ChatResponse:
        """Every field read is type-checked: a wrongly typed answer, an error
        object or an answer with neither a candidate nor a block reason is the
        provider's fault (502)."""
        if not isinstance(body, dict):
            raise _bad_answer("body", "a JSON object")
        err = body.get("error")
        if err is not None:
            message = err.get("message") if isinstance(err, dict) else err
            raise _invalid_answer(f"it was an error: {message if isinstance(message, str) else 'no message'}")
        finish, content, has_call = _candidate(body)
        if finish is None and not content:
            raise _bad_answer("candidates", "an array with at least one candidate")
        stop = _tool_stop(FINISH_TO_IR.get(finish or "", "other"), has_call)
        return ChatResponse(
            id=_a_str(body.get("responseId"), "responseId") or f"gen-{uuid.uuid4().hex}",
            model=_a_str(body.get("modelVersion"), "modelVersion"),
            content=content,
            stop_reason=stop,
            usage=usage_from_gemini(body.get("usageMetadata")),
            more=_more_candidates(body),
        )

    def render_response(self, resp: ChatResponse) -> dict[str, Any]:
        answers = [Choice(resp.content, resp.stop_reason), *resp.more]
        return {
            "candidates": [
                {
                    "content": {"parts": _answer_parts(c.content), "role": "model"},
                    "finishReason": IR_TO_FINISH.get(c.stop_reason, "OTHER"),
                    "index": n,
                }
                for n, c in enumerate(answers)
            ],
            "usageMetadata": usage_to_gemini(resp.usage),
            "modelVersion": resp.model,
            "responseId": resp.id,
        }

    def stream_decoder(self, answers: int = 1) -> StreamDecoder:
        return GeminiStreamDecoder(answers)

    def stream_encoder(self, req: ChatRequest) -> StreamEncoder:
        return GeminiStreamEncoder(req)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        um = body.get("usageMetadata")
        return usage_from_gemini(um) if um is not None else None

    def rename_model(self, body: dict[str, Any], model: str) -> bool:
        if "modelVersion" in body:
            body["modelVersion"] = model
            return True
        return False

    def parse_error(self, status: int, body: bytes) -> GatewayError:
        status = overloaded_as_503(status)
        obj = _error_json(body)
        if isinstance(obj, list) and obj:  # non-SSE streaming errors come as a JSON array
            obj = obj[0]
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            return _error_from_obj(err, status)
        text = body.decode("utf-8", "replace").strip() if body else ""
        return GatewayError(
            kind_for_status(status), text[:1000] or f"upstream returned HTTP {status}", status=status
        )

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        return {
            "error": {
                "code": err.status,
                "message": err.message,
                "status": _CANONICAL.get(err.kind, "INTERNAL"),
            }
        }

    def error_status(self, err: GatewayError) -> int:
        """HTTP status to send with ``render_error`` (Gemini keeps the error's own)."""
        return err.status

    def render_stream_error(self, err: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(self.render_error(err)) + b"\n\n"


GEMINI = GeminiCodec()
