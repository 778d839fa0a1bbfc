"""The mock OpenAI platform: Chat Completions (``openai_chat``) and the Responses API
(``POST /v1/responses``), served by one server as OpenAI serves both, for providers of
dialect ``openai`` or ``openai_responses``.

Validation follows the API reference for "Create a model response"
(platform.openai.com/docs/api-reference/responses/create, cited below as [create]),
the function-calling guide (.../docs/guides/function-calling, [functions]), the
structured-outputs guide (.../docs/guides/structured-outputs, [structured]), the
conversation-state guide (.../docs/guides/conversation-state, [state]) and the
reasoning guide (.../docs/guides/reasoning, [reasoning]); error wording is the
API's own. Replies follow the package's rules (``[<name>:<model>] <last user text>``,
a call of the first tool for ``use tool ...``); with ``reasoning.effort`` set the
output starts with a reasoning item (2 reasoning tokens, a summary when asked,
``encrypted_content`` when ``include`` asks for it). Responses stored with
``store`` (the API's default) can be continued with ``previous_response_id``;
the gateway always sends ``store: false`` and keeps conversations itself.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from .common import _INVALID, _b62, _Convo, _Handler, _hex, _json_response, _plan, _Reject, _Reply, _words
from .openai_chat import _OpenAI

# [create]: the request body's parameters.
_PARAMS = frozenset(
    {
        "background",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
# POST /v1/responses/input_tokens takes the input side of a request only
# (https://platform.openai.com/docs/api-reference/responses/input-tokens).
_INPUT_TOKEN_PARAMS = frozenset(
    {
        "conversation",
        "input",
        "instructions",
        "model",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "text",
        "tool_choice",
        "tools",
        "truncation",
    }
)
# [create] input item types (Input item list).
_ITEM_TYPES = (
    "message",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "web_search_call",
    "function_call",
    "function_call_output",
    "reasoning",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call_output",
    "custom_tool_call",
    "item_reference",
)
# [create] tools: function and the built-in tools.
_TOOL_TYPES = (
    "function",
    "file_search",
    "computer_use_preview",
    "web_search",
    "web_search_preview",
    "mcp",
    "code_interpreter",
    "image_generation",
    "local_shell",
    "custom",
)
_INCLUDES = (
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "message.input_image.image_url",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "web_search_call.action.sources",
    "web_search_call.results",
)
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# [functions] / [structured]: function and schema names match this pattern, at most 64 characters
# (the API's own error: "Invalid 'tools[16].name': string does not match pattern. Expected a string
# that matches the pattern '^[a-zA-Z0-9_-]+$'.", github.com/justrach/codegraff/issues/930).
_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_NAME_MAX = 64
# [create] metadata: "Set of 16 key-value pairs ... Keys are strings with a maximum length of 64
# characters. Values are strings with a maximum length of 512 characters."
_METADATA_PAIRS, _METADATA_KEY_MAX, _METADATA_VALUE_MAX = 16, 64, 512
_NO_TOOL_OUTPUT = "No tool call found for function call output with call_id {}."
_NOT_PERSISTED = (
    "Item with id '{}' not found. Items are not persisted when `store` is set to false. Try again with "
    "`store` set to true, or remove this item from your input."
)


def _text_of(content: Any) -> str:
    """The words a message carries (input_text / output_text parts, or a string)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict)
            and p.get("type") in ("input_text", "output_text")
            and isinstance(p.get("text"), str)
        )
    return ""


def _event(kind: str, seq: int, payload: dict[str, Any]) -> bytes:
    return (
        b"event: "
        + kind.encode()
        + b"\ndata: "
        + orjson.dumps({"type": kind, **payload, "sequence_number": seq})
        + b"\n\n"
    )


def _item_text(item: Any) -> str:
    """The words an input item adds to the prompt (for the prompt cache's prefixes)."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return ""
    content = item.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    parts = [content, item.get("output"), item.get("arguments")]
    return " ".join(p for p in parts if isinstance(p, str))


class _OpenAIPlatform(_OpenAI):
    """Chat Completions and Responses on one server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored: dict[str, list[Any]] = {}  # response id -> its conversation items (store: true)

    def routes(self) -> list[tuple[str, str, _Handler]]:
        return [
            *super().routes(),
            ("POST", "/v1/responses", self.responses),
            ("POST", "/v1/responses/input_tokens", self.input_tokens),
        ]

    async def input_tokens(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        """``POST /v1/responses/input_tokens``
        (https://platform.openai.com/docs/api-reference/responses/input-tokens): the input side of a
        Responses request only (no max_output_tokens, stream, store, sampling...)."""
        self.check_auth(request)
        if body is _INVALID:
            raise self.error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            raise self.bad_type("body", "an object", body)
        for k in body:
            if k not in _INPUT_TOKEN_PARAMS:
                raise self.unknown(k)
        convo, _ = self.validate_responses(body)
        return _json_response(200, {"object": "response.input_tokens", "input_tokens": convo.input_tokens})

    def inband_error(self, request: web.Request, status: int) -> bytes:
        if request.path == "/v1/responses":
            # [streaming events] a stream opens with response.created, then response.in_progress,
            # before any output; an error then comes as the "error" event.
            start = {"id": "resp_" + _hex(48), "object": "response", "status": "in_progress", "output": []}
            return (
                _event("response.created", 0, {"response": start})
                + _event("response.in_progress", 1, {"response": start})
                + _event(
                    "error", 2, {"code": "server_error", "message": "The server is overloaded", "param": None}
                )
            )
        return super().inband_error(request, status)

    # validation ------------------------------------------------------------------------
    def unknown(self, param: str) -> _Reject:
        """[create] lists the body's parameters and each item's fields; the API refuses any other, nested
        ones too: "Unknown parameter: 'input[3].status'." with code unknown_parameter
        (github.com/1jehuang/jcode/issues/1028, github.com/pydantic/pydantic-ai/issues/3653)."""
        return self.error(400, f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")

    def check_keys(self, obj: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for k in obj:
            if k not in allowed:
                raise self.unknown(f"{path}.{k}")

    def check_id(self, item: dict[str, Any], path: str, prefix: str) -> None:
        """[create]: item ids the API issued carry its prefix (``msg``, ``fc``); the API's own error:
        "Invalid 'input[177].id': 'item_3bc5...'. Expected an ID that begins with 'msg'." with code
        invalid_value (github.com/Wei-Shaw/sub2api/issues/3981)."""
        iid = item.get("id")
        if iid is not None and (not isinstance(iid, str) or not iid.startswith(prefix)):
            raise self.error(
                400,
                f"Invalid '{path}.id': '{iid}'. Expected an ID that begins with '{prefix}'.",
                param=f"{path}.id",
                code="invalid_value",
            )

    def check_parts(self, content: Any, path: str, role: str) -> None:
        """[create] message content: input_text / input_image / input_file parts for user, system and
        developer messages; output_text / refusal for the assistant's."""
        allowed = (
            ("output_text", "refusal") if role == "assistant" else ("input_text", "input_image", "input_file")
        )
        for pp, part, t in self.typed_parts(content, path, allowed):
            if t in ("input_text", "output_text"):
                self.check_keys(part, ("type", "text", "annotations", "logprobs"), pp)
                if not isinstance(part.get("text"), str):
                    raise (
                        self.missing(f"{pp}.text")
                        if "text" not in part
                        else self.bad_type(f"{pp}.text", "a string", part["text"])
                    )
            elif t == "refusal":
                if not isinstance(part.get("refusal"), str):
                    raise self.missing(f"{pp}.refusal")
            elif t == "input_image":
                # [create] Input image: image_url (a fully qualified URL or a base64 data URL) or
                # file_id; detail one of low / high / auto (original on newer models).
                self.check_keys(part, ("type", "image_url", "file_id", "detail"), pp)
                url = part.get("image_url")
                if url is None and part.get("file_id") is None:
                    raise self.error(
                        400,
                        f"Invalid '{pp}': one of 'image_url' or 'file_id' must be provided.",
                        param=pp,
                        code="missing_required_parameter",
                    )
                if url is not None and (
                    not isinstance(url, str) or not url.startswith(("http://", "https://", "data:"))
                ):
                    raise self.error(
                        400,
                        f"Invalid '{pp}.image_url'. Expected a valid URL, but got a value with "
                        "an invalid format.",
                        param=f"{pp}.image_url",
                        code="invalid_value",
                    )
                if part.get("detail") is not None and part["detail"] not in (
                    "low",
                    "high",
                    "auto",
                    "original",
                ):
                    raise self.bad_value(f"{pp}.detail", part["detail"], ("low", "high", "auto", "original"))
            else:  # input_file: [create] Input file: file_data, file_id or file_url, and filename
                self.check_keys(part, ("type", "file_data", "file_id", "file_url", "filename", "detail"), pp)
                if not any(part.get(k) is not None for k in ("file_data", "file_id", "file_url")):
                    raise self.error(
                        400,
                        f"Invalid '{pp}': one of 'file_data', 'file_id' or 'file_url' must be provided.",
                        param=pp,
                        code="missing_required_parameter",
                    )

    def check_items(self, items: list[Any]) -> tuple[int, list[str], str, list[str] | None]:
        """[create] Input items. Returns (input words, call ids, last user text, trailing tool outputs)."""
        words = 0
        calls: list[str] = []
        user_text = ""
        tail: list[str] = []
        for i, item in enumerate(items):
            p = f"input[{i}]"
            if not isinstance(item, dict):
                raise self.bad_type(p, "an object", item)
            t = item.get("type", "message" if "role" in item else None)
            if t is None:
                raise self.missing(f"{p}.type")
            if t not in _ITEM_TYPES:
                raise self.bad_value(f"{p}.type", t, _ITEM_TYPES)
            if t != "function_call_output":
                tail = []
            if t == "message":
                role = item.get("role")
                # [create] Input message: role one of user, assistant, system, developer.
                if role is None:
                    raise self.missing(f"{p}.role")
                if role not in ("user", "assistant", "system", "developer"):
                    raise self.bad_value(f"{p}.role", role, ("user", "assistant", "system", "developer"))
                if "content" not in item:
                    raise self.missing(f"{p}.content")
                # An input message has no id (only the assistant's output messages do), [create].
                self.check_keys(
                    item,
                    ("type", "role", "content", "status", "phase") + (("id",) if role == "assistant" else ()),
                    p,
                )
                self.check_id(item, p, "msg")
                self.check_parts(item["content"], f"{p}.content", role)
                text = _text_of(item["content"])
                words += _words(text)
                if role == "user":
                    user_text = " ".join(text.split())
            elif t == "function_call":
                self.check_keys(
                    item, ("type", "id", "call_id", "name", "arguments", "status", "namespace"), p
                )
                for req in ("call_id", "name", "arguments"):
                    if req not in item:
                        raise self.missing(f"{p}.{req}")
                    if not isinstance(item[req], str):
                        raise self.bad_type(f"{p}.{req}", "a string", item[req])
                self.check_id(item, p, "fc")
                calls.append(item["call_id"])
            elif t == "function_call_output":
                self.check_keys(item, ("type", "id", "call_id", "output", "status"), p)
                for req in ("call_id", "output"):
                    if req not in item:
                        raise self.missing(f"{p}.{req}")
                # [functions]: an output answers a call of this conversation, by its call_id.
                if item["call_id"] not in calls:
                    raise self.error(400, _NO_TOOL_OUTPUT.format(item["call_id"]), param="input")
                out = item["output"]
                if not isinstance(out, str):
                    self.check_parts(out, f"{p}.output", "user")
                tail.append(_text_of(out))
            elif t == "reasoning":
                self.check_keys(item, ("type", "id", "summary", "content", "encrypted_content", "status"), p)
                if "id" not in item:
                    raise self.missing(f"{p}.id")
                if not isinstance(item.get("summary"), list):
                    raise self.missing(f"{p}.summary")
                # [reasoning]: without store, reasoning comes back only as encrypted_content.
                if not item.get("encrypted_content") and not any(
                    isinstance(x, dict) and x.get("id") == item["id"]
                    for its in self.stored.values()
                    for x in its
                ):
                    raise self.error(404, _NOT_PERSISTED.format(item["id"]), param="input")
            elif t == "item_reference":
                found = [
                    x
                    for its in self.stored.values()
                    for x in its
                    if isinstance(x, dict) and x.get("id") == item.get("id")
                ]
                if not found:
                    raise self.error(404, _NOT_PERSISTED.format(item.get("id")), param="input")
        return words, calls, user_text, tail or None

    def check_schema(self, schema: Any, where: str, param: str, context: tuple[str, ...] = ()) -> None:
        """[structured] strict mode ("Supported schemas": all fields must be required,
        additionalProperties: false on every object); [functions] function tools are strict by default on
        the Responses API. The wording is the API's, as for Chat Completions
        ("Invalid schema for function 'f': In context=(), 'additionalProperties' is required to be
        supplied and to be false.", code invalid_function_parameters)."""
        if not isinstance(schema, dict):
            return
        ctx = "(" + ", ".join(f"'{c}'" for c in context) + (",)" if len(context) == 1 else ")")
        props = schema.get("properties")
        if schema.get("type") == "object" or isinstance(props, dict):
            if schema.get("additionalProperties") is not False:
                raise self.error(
                    400,
                    f"Invalid schema for {where}: In context={ctx}, 'additionalProperties' is "
                    "required to be supplied and to be false.",
                    param=param,
                    code="invalid_function_parameters" if where.startswith("function") else None,
                )
            missing = [k for k in (props or {}) if k not in (schema.get("required") or [])]
            if missing:
                raise self.error(
                    400,
                    f"Invalid schema for {where}: In context={ctx}, 'required' is required to be "
                    "supplied and to be an array including every key in properties. Missing "
                    f"'{missing[0]}'.",
                    param=param,
                    code="invalid_function_parameters" if where.startswith("function") else None,
                )
            for k, sub in (props or {}).items():
                self.check_schema(sub, where, param, (*context, "properties", k))
        if isinstance(schema.get("items"), dict):
            self.check_schema(schema["items"], where, param, (*context, "items"))
        for key in ("$defs", "definitions"):
            for k, sub in (schema.get(key) or {}).items():
                self.check_schema(sub, where, param, (*context, key, k))
        for key in ("anyOf", "oneOf", "allOf"):
            for k, sub in enumerate(schema.get(key) or []):
                self.check_schema(sub, where, param, (*context, key, str(k)))

    def check_name(self, name: Any, param: str) -> None:
        """A function or schema name: a string of the pattern, at most 64 characters (see ``_NAME``)."""
        if not isinstance(name, str):
            raise self.bad_type(param, "a string", name)
        if len(name) > _NAME_MAX:
            raise self.too_long(param, name, _NAME_MAX)
        if not _NAME.match(name):
            raise self.error(
                400,
                f"Invalid '{param}': string does not match pattern. Expected a string that "
                "matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=param,
                code="invalid_value",
            )

    def too_long(self, param: str, value: str, limit: int) -> _Reject:
        """The API's error for a string over its maximum length (as for Chat Completions' tool names)."""
        return self.error(
            400,
            f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )

    def check_metadata(self, md: Any) -> None:
        """[create] metadata (``_METADATA_PAIRS``); the API's own error for too many pairs: "Invalid
        'metadata': too many properties. Expected an object with at most 16 properties, but got an
        object with 24 properties instead." with code object_above_max_properties
        (github.com/thiswillbeyourgithub/openwebui_custom_pipes_filters/issues/3). A long key or value
        gets the API's generic string_above_max_length (its wording for metadata not seen quoted)."""
        if md is None:
            return
        if not isinstance(md, dict):
            raise self.bad_type("metadata", "an object", md)
        if len(md) > _METADATA_PAIRS:
            raise self.error(
                400,
                f"Invalid 'metadata': too many properties. Expected an object with at most "
                f"{_METADATA_PAIRS} properties, but got an object with {len(md)} properties instead.",
                param="metadata",
                code="object_above_max_properties",
            )
        for k, v in md.items():
            if len(k) > _METADATA_KEY_MAX:
                raise self.too_long(f"metadata.{k}", k, _METADATA_KEY_MAX)
            if not isinstance(v, str):
                raise self.bad_type(f"metadata.{k}", "a string", v)
            if len(v) > _METADATA_VALUE_MAX:
                raise self.too_long(f"metadata.{k}", v, _METADATA_VALUE_MAX)

    def check_response_tools(self, body: dict[str, Any]) -> list[str]:
        """[create] tools; [functions] function tools are strict unless 'strict': false."""
        tools = body.get("tools")
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise self.bad_type("tools", "an array", tools)
        names: list[str] = []
        for i, t in enumerate(tools):
            p = f"tools[{i}]"
            if not isinstance(t, dict):
                raise self.bad_type(p, "an object", t)
            if "type" not in t:
                raise self.missing(f"{p}.type")
            if t["type"] not in _TOOL_TYPES:
                raise self.bad_value(f"{p}.type", t["type"], _TOOL_TYPES)
            if t["type"] != "function":
                continue
            # A Chat Completions tool ({"type": "function", "function": {...}}) is refused for its
            # missing name before its unknown key: "Missing required parameter: 'tools[0].name'."
            # (github.com/diegosouzapw/OmniRoute/issues/1914, microsoft/vscode-copilot-release#11157).
            name = t.get("name")
            if name is None:
                raise self.missing(f"{p}.name")
            self.check_keys(t, ("type", "name", "description", "parameters", "strict"), p)
            self.check_name(name, f"{p}.name")
            params = t.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise self.bad_type(f"{p}.parameters", "an object", params)
            strict = t.get("strict", True)
            if not isinstance(strict, bool):
                raise self.bad_type(f"{p}.strict", "a boolean", strict)
            if strict:
                self.check_schema(
                    params or {"type": "object", "properties": {}}, f"function '{name}'", f"{p}.parameters"
                )
            names.append(name)
        return names

    def check_response_tool_choice(self, body: dict[str, Any], names: list[str]) -> tuple[str, str | None]:
        """[create] tool_choice: none / auto / required, or {"type": "function", "name"}, or a hosted tool."""
        tc = body.get("tool_choice")
        if tc is None:
            return "auto", None
        if isinstance(tc, str):
            if tc not in ("none", "auto", "required"):
                raise self.bad_value("tool_choice", tc, ("none", "auto", "required"))
            return {"none": "none", "auto": "auto", "required": "any"}[tc], None
        if not isinstance(tc, dict):
            raise self.bad_type("tool_choice", "one of a string or object", tc)
        if tc.get("type") == "function":
            name = tc.get("name")
            if not isinstance(name, str):
                raise self.missing("tool_choice.name")
            if name not in names:
                # [create] tool_choice {"type": "function", "name"}: "the name of the function to call",
                # one of the request's function tools.
                raise self.error(
                    400, "Tool choice 'function' not found in 'tools' parameter.", param="tool_choice"
                )
            return "any", name
        return "auto", None

    def check_text(self, body: dict[str, Any], items: list[Any], instructions: str) -> dict[str, Any] | None:
        """[create] text.format; [structured] json_schema needs a name, strict schemas follow strict mode,
        json_object needs the word JSON in the input."""
        text = body.get("text")
        if text is None:
            return None
        if not isinstance(text, dict):
            raise self.bad_type("text", "an object", text)
        self.check_keys(text, ("format", "verbosity"), "text")
        if text.get("verbosity") is not None and text["verbosity"] not in ("low", "medium", "high"):
            raise self.bad_value("text.verbosity", text["verbosity"], ("low", "medium", "high"))
        fmt = text.get("format")
        if fmt is None:
            return None
        if not isinstance(fmt, dict):
            raise self.bad_type("text.format", "an object", fmt)
        t = fmt.get("type")
        if t not in ("text", "json_object", "json_schema"):
            raise self.bad_value("text.format.type", t, ("text", "json_schema", "json_object"))
        if t == "text":
            return None
        if t == "json_object":
            seen = (
                instructions
                + " "
                + " ".join(_text_of(i.get("content")) for i in items if isinstance(i, dict))
            )
            if "json" not in seen.lower():
                raise self.error(
                    400,
                    "Response input messages must contain the word 'json' in some form to use "
                    "'text.format' of type 'json_object'.",
                    param="input",
                )
            return {}
        self.check_keys(fmt, ("type", "name", "schema", "strict", "description"), "text.format")
        for req in ("name", "schema"):
            if req not in fmt:
                raise self.missing(f"text.format.{req}")
        # [structured] text.format.name: "a-z, A-Z, 0-9, or contain underscores and dashes, with a
        # maximum length of 64".
        self.check_name(fmt["name"], "text.format.name")
        if not isinstance(fmt["schema"], dict):
            raise self.bad_type("text.format.schema", "an object", fmt["schema"])
        if fmt.get("strict"):
            self.check_schema(fmt["schema"], f"response_format '{fmt['name']}'", "text.format.schema")
        return fmt["schema"]

    def check_reasoning(self, body: dict[str, Any]) -> tuple[str | None, str | None]:
        """[create] reasoning: effort and summary."""
        r = body.get("reasoning")
        if r is None:
            return None, None
        if not isinstance(r, dict):
            raise self.bad_type("reasoning", "an object", r)
        self.check_keys(r, ("effort", "summary", "generate_summary"), "reasoning")
        effort, summary = r.get("effort"), r.get("summary") or r.get("generate_summary")
        if effort is not None and effort not in _EFFORTS:
            raise self.bad_value("reasoning.effort", effort, _EFFORTS)
        if summary is not None and summary not in ("auto", "concise", "detailed"):
            raise self.bad_value("reasoning.summary", summary, ("auto", "concise", "detailed"))
        return (effort if effort != "none" else None), summary

    def validate_responses(self, body: dict[str, Any]) -> tuple[_Convo, list[Any]]:
        """Check a request as POST /v1/responses does; the conversation and its full input items."""
        for k in body:
            if k not in _PARAMS:
                raise self.unknown(k)
        model = body.get("model")
        if model is None:
            raise self.missing("model")
        if not isinstance(model, str):
            raise self.bad_type("model", "a string", model)
        for key in ("stream", "store", "parallel_tool_calls", "background"):
            if body.get(key) is not None and not isinstance(body[key], bool):
                raise self.bad_type(key, "a boolean", body[key])
        # [create] conversation: "cannot be used in conjunction with previous_response_id"; [state].
        if body.get("conversation") is not None and body.get("previous_response_id") is not None:
            raise self.error(
                400,
                "Mutually exclusive parameters: 'conversation' and 'previous_response_id'. Ensure "
                "you are only providing one of: 'previous_response_id' or 'conversation'.",
                param="conversation",
                code="mutually_exclusive_parameters",
            )
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise self.bad_type("instructions", "a string", instructions)
        raw = body.get("input")
        if raw is None:
            raise self.missing("input")
        if isinstance(raw, str):
            items: list[Any] = [{"type": "message", "role": "user", "content": raw}]
        elif isinstance(raw, list):
            items = list(raw)
        else:
            raise self.bad_type("input", "one of a string or array of objects", raw)
        prev = body.get("previous_response_id")
        history: list[Any] = []
        if prev is not None:
            # [state]: a stored response's items come before this input.
            if not isinstance(prev, str) or prev not in self.stored:
                raise self.error(
                    400,
                    f"Previous response with id '{prev}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = self.stored[prev]
        words, _, user_text, tool_results = self.check_items(history + items)
        for key in ("include",):
            inc = body.get(key)
            if inc is not None:
                if not isinstance(inc, list):
                    raise self.bad_type(key, "an array", inc)
                for j, v in enumerate(inc):
                    if v not in _INCLUDES:
                        raise self.bad_value(f"include[{j}]", v, _INCLUDES)
        names = self.check_response_tools(body)
        choice, forced = self.check_response_tool_choice(body, names)
        json_schema = self.check_text(body, history + items, instructions or "")
        self.check_reasoning(body)
        # [create] max_output_tokens has a floor of 16.
        max_tokens = self.number(body, "max_output_tokens", 16, None, True)
        self.number(body, "temperature", 0, 2, False)
        self.number(body, "top_p", 0, 1, False)
        self.number(body, "top_logprobs", 0, 20, True)
        if body.get("truncation") is not None and body["truncation"] not in ("auto", "disabled"):
            raise self.bad_value("truncation", body["truncation"], ("auto", "disabled"))
        self.check_metadata(body.get("metadata"))
        convo = _Convo(
            model=model,
            input_tokens=words + _words(instructions or ""),
            user_text=user_text,
            tool_results=tool_results,
            tool_names=names,
            choice=choice,
            forced_name=forced,
            max_tokens=max_tokens,
            json_schema=json_schema,
            tool_schemas={
                t["name"]: t.get("parameters")
                for t in body.get("tools") or []
                if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
            },
            parallel=body.get("parallel_tool_calls") is not False,
        )
        return convo, history + items

    # reply ------------------------------------------------------------------------------
    def output_items(self, reply: _Reply, body: dict[str, Any], incomplete: bool) -> list[dict[str, Any]]:
        effort, summary = self.check_reasoning(body)
        out: list[dict[str, Any]] = []
        if effort is not None:
            item: dict[str, Any] = {"id": "rs_" + _hex(48), "type": "reasoning", "summary": []}
            if summary is not None:
                item["summary"] = [
                    {"type": "summary_text", "text": f"**Reasoning** about {reply.text or 'a call'}"}
                ]
            if "reasoning.encrypted_content" in (body.get("include") or []):
                item["encrypted_content"] = "gAAAAA" + _b62(40)
            out.append(item)
        if reply.finish == "tool":
            # One function_call item per call: parallel calls are several items of one response.
            for name, args in reply.calls or [(reply.tool_name, reply.tool_args)]:
                out.append(
                    {
                        "id": "fc_" + _hex(48),
                        "type": "function_call",
                        "status": "completed",
                        "arguments": orjson.dumps(args).decode(),
                        "call_id": self.issue_id("call_" + _b62(24)),
                        "name": name,
                    }
                )
        else:
            out.append(
                {
                    "id": "msg_" + _hex(48),
                    "type": "message",
                    "status": "incomplete" if incomplete else "completed",
                    "content": [
                        {"type": "output_text", "annotations": [], "logprobs": [], "text": reply.text}
                    ],
                    "role": "assistant",
                }
            )
        return out

    def response_object(
        self,
        rid: str,
        body: dict[str, Any],
        convo: _Convo,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> dict[str, Any]:
        effort, summary = self.check_reasoning(body)
        tools = [
            ({"description": None, "strict": True, **t} if t.get("type") == "function" else t)
            for t in body.get("tools") or []
        ]
        return {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": convo.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": effort, "summary": summary},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    async def responses(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        if body is _INVALID:
            raise self.error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            raise self.bad_type("body", "an object", body)
        convo, items = self.validate_responses(body)
        reply = _plan(self.spec.name, convo)
        incomplete = reply.finish == "length"
        output = self.output_items(reply, body, incomplete)
        reasoning = 2 if output[0]["type"] == "reasoning" else 0
        # Automatic prompt caching, as for Chat Completions (the same cache: one platform).
        prompt_words = " ".join([str(body.get("instructions") or ""), *map(_item_text, items)]).split()
        cached = min(self.prompt_cache.hit(convo.model, prompt_words), convo.input_tokens)
        usage = {
            "input_tokens": convo.input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": reply.output_tokens + reasoning,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": convo.input_tokens + reply.output_tokens + reasoning,
        }
        rid = "resp_" + _hex(48)
        status = "incomplete" if incomplete else "completed"
        final = self.response_object(rid, body, convo, status, output, usage)
        if body.get("store", True) is not False:
            self.stored[rid] = items + output
        if body.get("stream") is not True:
            return _json_response(200, final, self.extra_headers())
        events: list[bytes] = []

        def emit(kind: str, payload: dict[str, Any]) -> None:
            events.append(_event(kind, len(events), payload))

        start = self.response_object(rid, body, convo, "in_progress", [], None)
        emit("response.created", {"response": start})
        emit("response.in_progress", {"response": start})
        for idx, item in enumerate(output):
            if item["type"] == "message":
                emit(
                    "response.output_item.added",
                    {"output_index": idx, "item": {**item, "status": "in_progress", "content": []}},
                )
                part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
                ids = {"item_id": item["id"], "output_index": idx, "content_index": 0}
                emit("response.content_part.added", {**ids, "part": part})
                for piece in reply.pieces():
                    emit("response.output_text.delta", {**ids, "delta": piece, "logprobs": []})
                emit("response.output_text.done", {**ids, "text": reply.text, "logprobs": []})
                emit("response.content_part.done", {**ids, "part": item["content"][0]})
            elif item["type"] == "function_call":
                args = item["arguments"]
                emit(
                    "response.output_item.added",
                    {"output_index": idx, "item": {**item, "status": "in_progress", "arguments": ""}},
                )
                step = max(1, -(-len(args) // 4))
                for k in range(0, len(args), step):
                    emit(
                        "response.function_call_arguments.delta",
                        {"item_id": item["id"], "output_index": idx, "delta": args[k : k + step]},
                    )
                emit(
                    "response.function_call_arguments.done",
                    {"item_id": item["id"], "output_index": idx, "arguments": args},
                )
            else:
                emit("response.output_item.added", {"output_index": idx, "item": {**item, "summary": []}})
            emit("response.output_item.done", {"output_index": idx, "item": item})
        emit("response.incomplete" if incomplete else "response.completed", {"response": final})
        return await self.send_stream(request, events, cut)


__all__ = ["_OpenAIPlatform"]
