"""The mock Gemini provider: ``generateContent``, ``streamGenerateContent`` and the model
endpoints of the Gemini API, validated against its request schema the way Google does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .common import (
    _INVALID,
    _JSON_CT,
    _b62,
    _b64_ok,
    _Convo,
    _Handler,
    _is_int,
    _is_num,
    _json_response,
    _plan,
    _PrefixCache,
    _Provider,
    _Reject,
    _words,
)
from .embeddings import gemini_count, gemini_embed

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
# Multimodal function responses (Gemini 3): ``parts`` is a list of FunctionResponsePart, each
# inlineData (FunctionResponseBlob) or fileData (FunctionResponseFileData), nothing else: no
# text, no function calls (google-genai SDK types.py FunctionResponse.parts / FunctionResponsePart;
# the API's proto, googleapis/googleapis "add FunctionResponsePart"; the Gemini 3 developer
# guide, "Multimodal function responses", https://ai.google.dev/gemini-api/docs/gemini-3).
_FUNCTION_RESPONSE_PART = _Msg(
    "FunctionResponsePart",
    {
        "inlineData": _Msg(
            "FunctionResponseBlob", {"mimeType": "str", "data": "bytes", "displayName": "str"}
        ),
        "fileData": _Msg(
            "FunctionResponseFileData", {"mimeType": "str", "fileUri": "str", "displayName": "str"}
        ),
    },
)
_FUNCTION_RESPONSE = _Msg(
    "FunctionResponse",
    {
        "id": "str",
        "name": "str",
        "response": "struct",
        "parts": _List(_FUNCTION_RESPONSE_PART),
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
_THINKING_LEVEL = _Enum(
    "ThinkingConfig.ThinkingLevel",
    frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"}),
)
_THINKING = _Msg(
    "ThinkingConfig", {"includeThoughts": "bool", "thinkingBudget": "int", "thinkingLevel": _THINKING_LEVEL}
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
# Thinking (https://ai.google.dev/gemini-api/docs/thinking): Gemini 2.5 models think with a
# token budget (2.5 Pro 128-32768, Flash 0-24576, Flash-Lite 512-24576, -1 dynamic); Gemini 3
# models take a thinking level instead (a budget still works) and "a budget together with a
# level" is a 400 ("You can only set only one of thinking budget and thinking level.", quoted in
# sterlp/eclipse-peon-ai#115); a level on a model before Gemini 3 is an error.
_G_THINKING_MODEL = re.compile(r"^gemini-(2\.5|[3-9])")
_G_LEVEL_MODEL = re.compile(r"^gemini-[3-9]")
_G_BUDGETS = (
    ("gemini-2.5-pro", 128, 32768),
    ("gemini-2.5-flash-lite", 512, 24576),
    ("gemini-2.5-flash", 0, 24576),
)
# Thought signatures (https://ai.google.dev/gemini-api/docs/thought-signatures): Gemini 3 models
# return a signature on the first function-call part of each step and reject a request whose current
# turn replays function calls without it ("Function call is missing a thought_signature in
# functionCall parts. ..." quoted in ccch1mneyyy/dsh-Go discussion 2016); the documented dummy
# values skip the check.
_G_SIGNATURE_SKIP = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})
_G_SIGNING_KEY = b"mock-gemini-thought-signature"
# File URIs (https://ai.google.dev/api/caching#FileData, "Files API"): the Gemini API takes URIs
# of files uploaded with its Files API, YouTube URLs and public HTTPS URLs; Cloud Storage (gs://)
# URIs are Vertex AI's, and the Gemini API answers "Invalid or unsupported file uri"
# (google-gemini/deprecated-generative-ai-python#357).
_G_FILE_URI = re.compile(r"^https://\S+$")
_G_BEFORE_3 = re.compile(r"^gemini-[12]\.")
_G_FR_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "application/pdf", "text/plain"})


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


def _g_signature(name: str) -> str:
    """The thought signature the mock issues with a call of ``name`` (checked when replayed)."""
    return base64.b64encode(hmac.new(_G_SIGNING_KEY, name.encode(), hashlib.sha256).digest()).decode()


def _g_bytes(value: str) -> bytes:
    """A proto bytes field's value: JSON carries it in either base64 alphabet (the SDKs send URL-safe)."""
    std = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4))
    except ValueError:
        return b""


def _g_schema_problem(schema: Any, depth: int = 0) -> str | None:
    """Why ``schema`` is not a JSON Schema the API takes as ``parametersJsonSchema`` (Gemini API,
    "FunctionDeclaration": a JSON Schema describing an object whose properties are the parameters)."""
    if not isinstance(schema, dict):
        return "must be a JSON object"
    t = schema.get("type")
    types = t if isinstance(t, list) else [t]
    known = {"object", "array", "string", "number", "integer", "boolean", "null", None}
    if any(x not in known for x in types):
        return f"unknown type {_g_show(t)}"
    if depth == 0 and "object" not in types:
        return "must describe an object (type: object)"
    props = schema.get("properties")
    if props is not None and not isinstance(props, dict):
        return "properties must be an object"
    req = schema.get("required")
    if req is not None and (not isinstance(req, list) or not all(isinstance(r, str) for r in req)):
        return "required must be an array of strings"
    for sub in [*(props or {}).values(), *([schema["items"]] if "items" in schema else [])]:
        if (problem := _g_schema_problem(sub if isinstance(sub, dict) else {}, depth + 1)) is not None:
            return problem
    return None


# Headers Google's front end adds to every API response (the serving front end's timing and its
# HTTP/3 offer): about Google's servers, none of a client's business.
GOOGLE_FRONTEND_HEADERS = {
    "server-timing": "gfet4t7; dur=812",
    "alt-svc": 'h3=":443"; ma=2592000,h3-29=":443"; ma=2592000',
}


class _Gemini(_Provider):
    """Gemini API v1beta: ``models/{model}:generateContent`` and ``:streamGenerateContent``."""

    dialect = "gemini"
    #: file URIs this API takes in ``fileData`` (Vertex AI overrides: it takes gs:// too)
    file_uri = _G_FILE_URI

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.prompt_cache = _PrefixCache()

    def extra_headers(self) -> dict[str, str]:
        return dict(GOOGLE_FRONTEND_HEADERS)

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
        names = sorted(set(self.stats.by_model) | {"gemini-3.5-flash", "gemini-2.5-pro"})
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
                fr_parts = part["functionResponse"].get("parts") if "functionResponse" in part else None
                if fr_parts and _G_BEFORE_3.match(model):
                    # Multimodal function responses are a Gemini 3 feature (the Gemini 3 guide); a
                    # Gemini 2.x model answers "function_response.parts is not supported for this
                    # model." (a gemini-2.5-flash test report quoted in an adkx ADR-0002, 2025-11-16).
                    raise self.invalid("function_response.parts is not supported for this model.")
                for k, fp in enumerate(fr_parts or []):
                    # Images inside a function response: png, jpeg, webp (documents: pdf, plain
                    # text), the Gemini 3 guide's "Multimodal function responses"; the API's
                    # refusal of a type it does not take reads "Unsupported MIME type: <type>".
                    blob = fp.get("inlineData") or fp.get("fileData") or {}
                    if blob.get("mimeType") not in _G_FR_TYPES:
                        raise self.invalid(f"Unsupported MIME type: {blob.get('mimeType')}")
                    # FunctionResponsePart: oneof data {inline_data, file_data} (the API's proto,
                    # googleapis/googleapis "add FunctionResponsePart"), as a Part's oneof data.
                    held = [x for x in ("inlineData", "fileData") if x in fp]
                    if len(held) > 1:
                        raise self.invalid(
                            f"Invalid value at 'contents[{i}].parts[{j}].function_response.parts[{k}]' (oneof), "
                            f"oneof field 'data' is already set. Cannot set '{held[1]}'"
                        )
                if "fileData" in part:
                    uri = part["fileData"].get("fileUri") or ""
                    if not self.file_uri.match(uri):
                        raise self.invalid(f"Invalid or unsupported file uri: {uri}")
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
        self.check_signatures(model, contents)
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
                if "parametersJsonSchema" in fd:
                    problem = _g_schema_problem(fd["parametersJsonSchema"])
                    if problem is not None:
                        raise self.invalid(
                            f"{where}.parameters_json_schema: Invalid JSON schema: {problem}.\n"
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
        tc = gc.get("thinkingConfig") or {}
        self.check_thinking(model, tc)
        thinking = bool(tc) and bool(_G_THINKING_MODEL.match(model)) and tc.get("thinkingBudget") != 0
        stops = gc.get("stopSequences") or []
        # API reference, "GenerationConfig.stopSequences": "up to 5 character sequences".
        if len(stops) > 5:
            raise self.invalid(
                "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences\n"
            )
        mot = gc.get("maxOutputTokens")
        max_tokens = mot if isinstance(mot, int) and mot > 0 else None
        json_schema = gc.get("responseJsonSchema") or gc.get("responseSchema")
        if json_schema is None and gc.get("responseMimeType") == "application/json":
            json_schema = {}

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
            json_schema=json_schema if isinstance(json_schema, dict) else None,
            tool_schemas={
                fd["name"]: fd.get("parametersJsonSchema") or fd.get("parameters")
                for tool in req.get("tools") or []
                for fd in tool.get("functionDeclarations") or []
            },
            thinking=thinking,
            show_thoughts=thinking and bool(tc.get("includeThoughts")),
        )
        return convo, n

    def check_thinking(self, model: str, tc: dict[str, Any]) -> None:
        """The thinking-config rules of the model (see _G_THINKING_MODEL)."""
        where = "* GenerateContentRequest.generation_config.thinking_config"
        budget, level = tc.get("thinkingBudget"), tc.get("thinkingLevel")
        if budget is not None and level is not None:
            raise self.invalid("You can only set only one of thinking budget and thinking level.")
        if level is not None and _G_THINKING_MODEL.match(model) and not _G_LEVEL_MODEL.match(model):
            raise self.invalid("Thinking level is not supported for this model.")
        if budget is not None and budget != -1:
            for prefix, lo, hi in _G_BUDGETS:
                if model.startswith(prefix) and not lo <= budget <= hi:
                    raise self.invalid(f"The thinking budget ({budget}) is invalid.")
            if budget < -1:
                raise self.invalid(f"{where}.thinking_budget: must be -1 or non-negative.\n")

    def check_signatures(self, model: str, contents: list[dict[str, Any]]) -> None:
        """Gemini 3 models: every step of the current turn (the model turns after the last user
        text) replays the thought signature of its first function call (see _G_SIGNATURE_SKIP)."""
        if not _G_LEVEL_MODEL.match(model):
            return
        start = 0
        for i, c in enumerate(contents):
            if c["_role"] == "user" and any("text" in p for p in c.get("parts") or []):
                start = i + 1
        for i, c in enumerate(contents[start:], start):
            if c["_role"] != "model":
                continue
            parts = c.get("parts") or []
            first = next((p for p in parts if "functionCall" in p), None)
            if first is None:
                continue
            sig = first.get("thoughtSignature")
            name = first["functionCall"]["name"]
            if sig is None:
                raise self.invalid(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools "
                    "to work correctly, and missing thought_signature may lead to degraded model performance. "
                    f"Additional data, function call `default_api:{name}`, position {i + 1}. Please refer to "
                    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                )
            if sig not in _G_SIGNATURE_SKIP and _g_bytes(sig) != _g_bytes(_g_signature(name)):
                raise self.invalid("Corrupted thought signature.")

    # handler ---------------------------------------------------------------
    async def generate(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        self.check_auth(request)
        model, action = self.split(request)
        if action in ("embedContent", "batchEmbedContents") and model:
            return await gemini_embed(self, model, action, body)
        if action == "countTokens" and model:
            return await gemini_count(self, model, body)
        if action not in ("generateContent", "streamGenerateContent") or not model:
            raise self.error(404, f"Method not found: {request.match_info.get('model_action', '')}")
        convo, n = self.validate(model, body)
        reply = _plan(self.spec.name, convo)
        response_id = _b62(22)
        # Gemini, "Safety settings": a blocked answer is a candidate with finishReason SAFETY,
        # its safety ratings and no content.
        finish = {"length": "MAX_TOKENS", "refusal": "SAFETY"}.get(reply.finish, "STOP")
        thought = f"Thinking about: {convo.user_text}" if convo.show_thoughts else ""
        thinks = bool(_G_THINKING_MODEL.match(model))
        # The mock thinks (and counts thoughtsTokenCount) only when the request configures thinking
        # with a non-zero budget, so that plain requests keep word-count usage; signatures on calls
        # come from every thinking model, as the real ones send them.
        thought_tokens = len(f"Thinking about: {convo.user_text}".split()) if convo.thinking else 0
        system = (body or {}).get("systemInstruction") or (body or {}).get("system_instruction")
        # The prompt's prefix starts with the system instruction (implicit caching reads it too).
        prompt_words = [
            w
            for c in [system, *((body or {}).get("contents") or [])]
            if isinstance(c, dict)
            for p in c.get("parts") or []
            if isinstance(p, dict) and isinstance(p.get("text"), str)
            for w in p["text"].split()
        ]
        cached = self.prompt_cache.hit(model, prompt_words)

        def usage(out_tokens: int) -> dict[str, Any]:
            out: dict[str, Any] = {
                "promptTokenCount": convo.input_tokens,
                "candidatesTokenCount": out_tokens * n,
                "totalTokenCount": convo.input_tokens + (out_tokens + thought_tokens) * n,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": convo.input_tokens}],
            }
            if thought_tokens:
                out["thoughtsTokenCount"] = thought_tokens * n
            if cached:
                out["cachedContentTokenCount"] = min(cached, convo.input_tokens)
            return out

        def response(
            parts_of: Callable[[], list[dict[str, Any]]], done: bool, out_tokens: int
        ) -> dict[str, Any]:
            candidates = []
            for i in range(n):
                parts = parts_of()
                cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}} if parts else {}
                if done:
                    cand["finishReason"] = finish
                    if finish == "SAFETY":
                        cand["safetyRatings"] = [
                            {
                                "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                "probability": "HIGH",
                                "blocked": True,
                            }
                        ]
                cand["index"] = i
                candidates.append(cand)
            return {
                "candidates": candidates,
                "usageMetadata": usage(out_tokens),
                "modelVersion": model,
                "responseId": response_id,
            }

        def thought_parts() -> list[dict[str, Any]]:
            return [{"text": thought, "thought": True}] if thought else []

        def call_parts() -> list[dict[str, Any]]:
            parts: list[dict[str, Any]] = []
            for k, (name, args) in enumerate(reply.calls):
                part: dict[str, Any] = {
                    "functionCall": {"id": self.issue_id(_b62(8).lower()), "name": name, "args": args}
                }
                if k == 0 and thinks:  # the first call of a step carries the signature
                    part["thoughtSignature"] = _g_signature(name)
                parts.append(part)
            return parts

        def text_parts(text: str) -> list[dict[str, Any]]:
            return [] if reply.finish == "refusal" else [{"text": text}]

        if action == "generateContent":
            if reply.finish == "tool":
                out = response(lambda: thought_parts() + call_parts(), True, reply.output_tokens)
            else:
                out = response(lambda: thought_parts() + text_parts(reply.text), True, reply.output_tokens)
            return _json_response(200, out, self.extra_headers())

        chunks: list[dict[str, Any]] = []
        if thought:
            chunks.append(response(thought_parts, False, 0))
        if reply.finish == "tool":
            chunks.append(response(call_parts, True, reply.output_tokens))
        elif reply.finish == "refusal":
            chunks.append(response(lambda: [], True, 0))
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
