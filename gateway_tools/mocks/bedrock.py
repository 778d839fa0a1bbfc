"""The mock AWS Bedrock runtime: Converse (``POST /model/{modelId}/converse``),
ConverseStream (``POST /model/{modelId}/converse-stream``) and CountTokens
(``POST /model/{modelId}/count-tokens``), signed with SigV4.

Sources, cited at each rule below:

- [Converse] https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
  (and its shapes: Message, ContentBlock, ImageBlock, ToolUseBlock, ToolResultBlock,
  SystemContentBlock, InferenceConfiguration, ToolConfiguration, ToolSpecification,
  ToolChoice, TokenUsage), whose constraints botocore's ``bedrock-runtime`` service
  model repeats (min/max, patterns, enums);
- [ConverseStream] https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
  (the ConverseStreamOutput events and exceptions);
- [SigV4] https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
  and https://docs.aws.amazon.com/IAM/latest/UserGuide/signature-v4-troubleshooting.html
  (the 5-minute clock skew, the error messages);
- [Errors] https://docs.aws.amazon.com/bedrock/latest/APIReference/CommonErrors.html: an error is
  ``{"message": ...}`` with its type in the ``x-amzn-ErrorType`` header;
- [CountTokens] https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_CountTokens.html
  (and its shapes CountTokensInput, ConverseTokensRequest, InvokeModelTokensRequest,
  CountTokensResponse; botocore's service model: ``input`` required, ``modelId`` a
  FoundationModelVersionIdentifier of 1-256 letters, digits and ``_.-/:``);
- [EventStream] the AWS event-stream encoding (prelude with total and headers lengths
  and a CRC32, string headers, payload, message CRC32):
  https://docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html;
- the conversation rules (first turn user, alternating roles, no blank text, tool
  results answering the previous turn's tool uses, toolConfig required with tool
  blocks) are the service's ValidationException messages, worded as it words them;
- [Thinking] https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-extended-thinking.html
  (Claude's extended thinking on Bedrock: ``additionalModelRequestFields.thinking``, the
  answer's ``reasoningContent`` block with ``reasoningText {text, signature}``, streamed as
  ``contentBlockDelta`` events with ``delta.reasoningContent.text`` then ``.signature``; the
  rules are Anthropic's, https://docs.claude.com/en/docs/build-with-claude/extended-thinking,
  and Bedrock relays the model's refusal as a ValidationException "The model returned the
  following errors: ..." (anthropics/claude-code#8756 quotes one from Bedrock)); shapes
  from [Converse]'s ReasoningContentBlock and ReasoningTextBlock.

The signature is recomputed with botocore's SigV4 implementation from the mock's own
copy of the secret (``MockSpec.api_key`` for ``MockSpec.key_id``): a wrong secret, a
request more than 5 minutes old, or a body changed after signing is a 403.

With ``MockSpec.role_arn`` the mock is also the account's STS (``mocks.sts``: web identity ->
temporary credentials, ``POST /``), and accepts requests signed with the credentials it issued
(their session token checked) until they expire: then 403 ``ExpiredTokenException``.

Stricter than the service in one respect: unknown members are refused (the service's
deserializer may ignore them); a member the gateway misspells is a bug to see, not to
drop silently.
"""

from __future__ import annotations

import base64
import hmac
import re
import struct
import time
from binascii import crc32
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .anthropic_messages import _Anthropic, _sign
from .common import (
    _INVALID,
    _b62,
    _b64_ok,
    _Convo,
    _Handler,
    _is_int,
    _is_num,
    _json_response,
    _plan,
    _Provider,
    _Reject,
    _words,
)
from .sts import EXPIRED_CREDENTIALS, STS, Issued

_EVENTSTREAM_CT = "application/vnd.amazon.eventstream"
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_SKEW = timedelta(minutes=5)  # [SigV4] a signature is valid for 5 minutes either side of the server's clock
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})"
)

# [Converse] request members (ConverseRequest / ConverseStreamRequest, modelId is in the path)
_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
        "projectIdentifier",
    }
)
_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "audio",
        "toolUse",
        "toolResult",
        "guardContent",
        "cachePoint",
        "reasoningContent",
        "citationsContent",
        "searchResult",
    }
)
# [Thinking] the thinking types Claude takes in ``additionalModelRequestFields.thinking``
_THINKING_TYPES = ("enabled", "disabled", "adaptive")
_MODEL_ERRORS = "The model returned the following errors: "  # [Thinking] how Bedrock relays Claude's 400s
_RESULT_BLOCKS = frozenset({"json", "text", "image", "document", "video", "searchResult"})
_INFERENCE = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
_IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")  # [Converse] ImageBlock.format
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # [Converse] ToolSpecification.name / ToolName
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")  # [Converse] ToolUseBlock.toolUseId
_METADATA = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}")  # [Converse] requestMetadata keys and values
# [Converse] modelId: ConversationalModelId, 1-2048 characters (model IDs, inference profile IDs, ARNs)
_MODEL_ID = re.compile(
    r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{0,12}:[a-z-]+/[a-zA-Z0-9-:./]+)"
    r"|([a-zA-Z0-9-:.]+)"
)

# [CountTokens] ConverseTokensRequest's members, and the modelId (FoundationModelVersionIdentifier)
_COUNT_CONVERSE = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})
_COUNT_MODEL_ID = re.compile(r"[a-zA-Z_.\-/0-9:]{1,256}")
# CountTokens refuses cross-region inference profiles and ARNs ("The provided model doesn't
# support counting tokens", a ValidationException), counting the base model ID: a live probe in
# Boise-State-Development/agentcore-public-stack#430, maximhq/bifrost#2169, pydantic/pydantic-ai#4001.
_COUNT_REFUSED = re.compile(r"^(arn:|(us|eu|apac|us-gov|global|jp|au|ca)\.[a-z0-9-]+\.)")

# Status -> the exception an error fault plays ([Errors], each operation's error list).
_FAULT_TYPES = {
    400: ("ValidationException", "The request is not valid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The specified model was not found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model encountered an error processing the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: (
        "InternalServerException",
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
# Status -> the exception a stream_error fault sends as its first frame ([ConverseStream] exceptions).
_STREAM_FAULTS = {
    400: "validationException",
    424: "modelStreamErrorException",
    429: "throttlingException",
    503: "serviceUnavailableException",
}


# --------------------------------------------------------------------------- event-stream frames


def _frame(headers: dict[str, str], payload: bytes) -> bytes:
    """[EventStream] one message: prelude (total length, headers length, their CRC32),
    string headers (name length, name, type 7, value length, value), payload, message CRC32."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    prelude += struct.pack(">I", crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw + payload
    return body + struct.pack(">I", crc32(body) & 0xFFFFFFFF)


def _padding() -> str:
    """The service pads event payloads with a ``p`` member of varying length (hides token sizes)."""
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[: 1 + int(time.time_ns()) % 40]


def _event(event_type: str, payload: dict[str, Any]) -> bytes:
    return _frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        orjson.dumps({**payload, "p": _padding()}),
    )


def _exception(exception_type: str, message: str) -> bytes:
    return _frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        orjson.dumps({"message": message}),
    )


# --------------------------------------------------------------------------- the provider


def _content_text(blocks: list[dict[str, Any]]) -> str:
    return " ".join(b["text"] for b in blocks if isinstance(b.get("text"), str))


def _result_text(block: dict[str, Any]) -> str:
    parts = []
    for c in block.get("content") or ():
        if isinstance(c.get("text"), str):
            parts.append(c["text"])
        elif "json" in c:
            parts.append(orjson.dumps(c["json"]).decode())
    return " ".join(parts)


def _is_claude(model: str) -> bool:
    """Claude's model IDs, inference profiles and ARNs on Bedrock name ``anthropic.`` (or claude)."""
    return "anthropic." in model or "claude" in model


def _thinking_on(body: dict[str, Any]) -> bool:
    extra = body.get("additionalModelRequestFields")
    thinking = extra.get("thinking") if isinstance(extra, dict) else None
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _text_format_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of ``outputConfig.textFormat`` (already validated by ``check_extras``):
    the reply follows it."""
    oc = body.get("outputConfig")
    tf = oc.get("textFormat") if isinstance(oc, dict) else None
    if not isinstance(tf, dict):
        return None
    schema = orjson.loads(tf["structure"]["jsonSchema"]["schema"])
    return schema if isinstance(schema, dict) else {}


class _Bedrock(_Provider):
    """Bedrock runtime Converse and ConverseStream."""

    dialect = "bedrock"
    stream_content_type = _EVENTSTREAM_CT

    def routes(self) -> list[tuple[str, str, _Handler]]:
        # The model ID is one path segment, percent-encoded by the SDKs (':' -> %3A, '/' -> %2F).
        return [
            ("POST", "/model/{model_id:[^/]+}/converse", self.converse),
            ("POST", "/model/{model_id:[^/]+}/converse-stream", self.converse),
            ("POST", "/model/{model_id:[^/]+}/count-tokens", self.count_tokens),
        ]

    def model_of(self, request: web.Request, body: Any) -> str | None:
        return request.match_info.get("model_id") or None

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        # Bedrock caches a Claude prompt as Anthropic does (same minimum, 5-minute TTL, at most
        # 4 checkpoints), a ``cachePoint`` block standing where ``cache_control`` would
        # (https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html): the
        # Anthropic mock's cache, fed an Anthropic-shaped view of the body.
        self.claude_cache = _Anthropic(spec)
        # With a role: the account's STS, whose temporary credentials sign requests too.
        self.sts = STS(spec.role_arn, spec.token_ttl_s) if spec.role_arn else None

    def admin_routes(self) -> list[tuple[str, str, Any]]:
        if self.sts is None:
            return []
        return [("POST", "/", self.sts.endpoint), ("*", "/_mock/sts", self.sts.admin)]

    def sts_credentials(self, key_id: str) -> Issued | None:
        return self.sts.lookup(key_id) if self.sts is not None else None

    @staticmethod
    def as_anthropic(body: dict[str, Any]) -> dict[str, Any]:
        """The body's prompt as Anthropic blocks (each Converse block one text block), with a
        ``cache_control`` on each block a ``cachePoint`` follows."""

        def blocks(items: Any, text_of: Any) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for b in items if isinstance(items, list) else []:
                if not isinstance(b, dict):
                    continue
                if "cachePoint" in b:
                    if out:
                        out[-1]["cache_control"] = {"type": "ephemeral"}
                    continue
                out.append({"type": "text", "text": text_of(b)})
            return out

        def text(b: dict[str, Any]) -> str:
            if isinstance(b.get("text"), str):
                return str(b["text"])
            res = b.get("toolResult")
            if isinstance(res, dict):
                return " ".join(
                    str(c.get("text", "")) for c in res.get("content") or [] if isinstance(c, dict)
                )
            return orjson.dumps(b).decode()

        tools = (
            (body.get("toolConfig") or {}).get("tools") if isinstance(body.get("toolConfig"), dict) else None
        )
        return {
            "system": blocks(body.get("system"), text),
            "messages": [
                {"role": m.get("role"), "content": blocks(m.get("content"), text)}
                for m in body.get("messages") or []
                if isinstance(m, dict)
            ],
            "tools": blocks(tools, lambda t: orjson.dumps(t).decode()),
        }

    def is_stream(self, request: web.Request, body: Any) -> bool:
        return request.method == "POST" and request.path.endswith("/converse-stream")

    def extra_headers(self) -> dict[str, str]:
        return {"x-amzn-RequestId": f"{_b62(8)}-{_b62(4)}-{_b62(4)}-{_b62(4)}-{_b62(12)}".lower()}

    def error(self, status: int, etype: str, message: str) -> _Reject:
        """[Errors] ``{"message"}``, the exception's name in ``x-amzn-ErrorType``."""
        return _Reject(status, {"message": message}, {"x-amzn-ErrorType": etype + _ERROR_TYPE_SUFFIX})

    def invalid(self, message: str) -> _Reject:
        return self.error(400, "ValidationException", message)

    def constraint(self, path: str, what: str) -> _Reject:
        """A shape constraint, worded as the service's validator words it."""
        return self.invalid(
            f"1 validation error detected: Value at '{path}' failed to satisfy constraint: {what}"
        )

    def with_message(self, err: _Reject, message: str) -> None:
        err.body["message"] = message

    def fault_error(self, status: int) -> _Reject:
        etype, message = _FAULT_TYPES.get(
            status,
            (
                "InternalServerException" if status >= 500 else "ValidationException",
                f"Mock provider error (HTTP {status}).",
            ),
        )
        return self.error(status, etype, message)

    def rate_limit_error(self, retry_after: float) -> _Reject:
        # Bedrock sends no Retry-After: the SDKs back off on their own.
        return self.error(429, "ThrottlingException", "Too many requests, please wait before trying again.")

    def too_large(self) -> _Reject:
        return self.invalid("Input is too long for requested model.")

    async def not_found(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        raise self.error(404, "UnknownOperationException", "Not Found")

    def inband_error(self, request: web.Request, status: int) -> bytes:
        etype = _STREAM_FAULTS.get(status, "internalServerException")
        message = {
            "throttlingException": "Too many requests, please wait before trying again.",
            "serviceUnavailableException": "Bedrock is unable to process your request.",
            "validationException": "The request is not valid.",
            "modelStreamErrorException": "The model encountered an error processing the stream.",
        }.get(etype, "The system encountered an unexpected error during processing. Try your request again.")
        return _exception(etype, message)

    def malformed_event(self) -> bytes:
        frame = bytearray(_event("messageStart", {"role": "assistant"}))
        frame[-1] ^= 0xFF  # the message CRC no longer matches
        return bytes(frame)

    # signature -------------------------------------------------------------
    def auth_state(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization")
        if not auth:
            return "missing"
        m = _AUTH.fullmatch(auth.strip())
        key_id = m[1].split("/")[0] if m else None
        return (
            "valid" if key_id and (key_id == self.spec.key_id or self.sts_credentials(key_id)) else "invalid"
        )

    def verify_signature(self, request: web.Request, raw: bytes) -> None:
        """[SigV4] recompute the signature from the mock's copy of the secret."""
        auth = request.headers.get("Authorization")
        if not auth:
            raise self.error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        m = _AUTH.fullmatch(auth.strip())
        if not m:
            raise self.error(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential' parameter. Authorization header requires "
                "'Signature' parameter. Authorization header requires 'SignedHeaders' parameter.",
            )
        scope = m[1].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise self.error(
                403,
                "IncompleteSignatureException",
                f"Credential should be scoped to a valid region. (Credential={m[1]})",
            )
        key_id, day, region, service, _ = scope
        issued = self.sts_credentials(key_id)
        if key_id != self.spec.key_id and issued is None:
            raise self.error(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        secret, session_token = (
            (issued.secret, issued.token) if issued else (self.spec.api_key, self.spec.session_token)
        )
        if service != "bedrock":
            raise self.error(
                403, "InvalidSignatureException", "Credential should be scoped to correct service: 'bedrock'."
            )
        if self.spec.region and region != self.spec.region:
            raise self.error(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region. (Credential={m[1]})",
            )
        token = request.headers.get("X-Amz-Security-Token")
        if (token or None) != (session_token or None):
            raise self.error(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if issued is not None and self.sts is not None and self.sts.expired(issued):
            # [Expired] temporary credentials past their Expiration
            self.sts.expired_used[key_id] += 1
            raise self.error(403, "ExpiredTokenException", EXPIRED_CREDENTIALS)
        stamp = request.headers.get("X-Amz-Date", "")
        try:
            when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise self.error(
                403,
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            ) from None
        if day != stamp[:8]:
            raise self.error(
                403,
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD "
                "from ISO-8601 version of date from HTTP: "
                f"'{day}' != '{stamp[:8]}', from '{stamp}'.",
            )
        now = datetime.now(timezone.utc)
        fmt = "%Y%m%dT%H%M%SZ"
        if when < now - _SKEW:
            raise self.error(
                403,
                "InvalidSignatureException",
                f"Signature expired: {stamp} is now earlier than "
                f"{(now - _SKEW).strftime(fmt)} ({now.strftime(fmt)} - 5 min.)",
            )
        if when > now + _SKEW:
            raise self.error(
                403,
                "InvalidSignatureException",
                f"Signature not yet current: {stamp} is still later "
                f"than {(now + _SKEW).strftime(fmt)} ({now.strftime(fmt)} + 5 min.)",
            )
        signed = m[2].split(";")
        if "host" not in signed:
            raise self.error(
                403,
                "InvalidSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )
        if token and "x-amz-security-token" not in signed:
            raise self.error(
                403,
                "InvalidSignatureException",
                "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.",
            )
        if any(h not in request.headers for h in signed):
            raise self._mismatch()
        headers = {
            h: request.headers.getall(h)[0]
            if len(request.headers.getall(h)) == 1
            else ",".join(request.headers.getall(h))
            for h in signed
        }
        path = request.raw_path  # as sent: the canonical URI is computed from the encoded path
        aws = AWSRequest(
            method=request.method, url=f"http://{request.headers['Host']}{path}", data=raw, headers=headers
        )
        aws.context["timestamp"] = stamp
        signer = SigV4Auth(Credentials(key_id, secret, session_token), service, region)
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        if not hmac.compare_digest(expected, m[3]):
            raise self._mismatch()
        if issued is not None and self.sts is not None:
            self.sts.used[key_id] += 1

    def _mismatch(self) -> _Reject:
        return self.error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your "
            "AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )

    # validation ------------------------------------------------------------
    def union(self, value: Any, path: str, members: frozenset[str]) -> tuple[str, Any]:
        """[Converse] a union object: exactly one member set."""
        if not isinstance(value, dict):
            raise self.constraint(path, "Member must be an object")
        unknown = [k for k in value if k not in members]
        if unknown:
            raise self.invalid(f"Unknown member '{unknown[0]}' at '{path}'")
        set_ = [k for k, v in value.items() if v is not None]
        if len(set_) != 1:
            raise self.invalid(f"Union at '{path}' must have exactly one member set")
        return set_[0], value[set_[0]]

    def check_image(self, img: Any, path: str) -> None:
        if not isinstance(img, dict) or set(img) - {"format", "source"}:
            raise self.constraint(path, "Member must be an ImageBlock {format, source}")
        if img.get("format") not in _IMAGE_FORMATS:
            raise self.constraint(
                f"{path}.format", f"Member must satisfy enum value set: [{', '.join(_IMAGE_FORMATS)}]"
            )
        member, src = self.union(img.get("source"), f"{path}.source", frozenset({"bytes", "s3Location"}))
        if member == "bytes" and (not isinstance(src, str) or not src or not _b64_ok(src)):
            raise self.constraint(
                f"{path}.source.bytes", "Member must be non-empty base64-encoded binary data"
            )

    def check_tool_result(self, res: Any, path: str) -> None:
        if not isinstance(res, dict) or set(res) - {"toolUseId", "content", "status", "type"}:
            raise self.constraint(path, "Member must be a ToolResultBlock {toolUseId, content, status}")
        if not isinstance(res.get("toolUseId"), str) or not _TOOL_USE_ID.fullmatch(res["toolUseId"]):
            raise self.constraint(
                f"{path}.toolUseId",
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_.:-]+ and length 1-64",
            )
        content = res.get("content")
        if not isinstance(content, list):
            raise self.constraint(f"{path}.content", "Member must not be null")
        for k, c in enumerate(content):
            member, value = self.union(c, f"{path}.content.{k}", _RESULT_BLOCKS)
            if member == "text" and not isinstance(value, str):
                raise self.constraint(f"{path}.content.{k}.text", "Member must be a string")
            if member == "image":
                self.check_image(value, f"{path}.content.{k}.image")
        if res.get("status") not in (None, "success", "error"):
            raise self.constraint(f"{path}.status", "Member must satisfy enum value set: [success, error]")

    def validate(self, model: str, body: dict[str, Any]) -> _Convo:
        if not 1 <= len(model) <= 2048 or not _MODEL_ID.fullmatch(model):
            raise self.constraint("modelId", "Member must satisfy regular expression pattern")
        for k in body:
            if k not in _FIELDS:
                raise self.invalid(f"Unknown member '{k}' in the request body")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise self.invalid(
                "A conversation must start with a user message. Try again with a conversation that "
                "starts with a user message."
            )
        input_tokens = 0
        system = body.get("system")
        if system is not None:
            if not isinstance(system, list):
                raise self.constraint("system", "Member must be a list")
            for j, b in enumerate(system):
                member, value = self.union(
                    b, f"system.{j}", frozenset({"text", "guardContent", "cachePoint"})
                )
                if member == "text":
                    if not isinstance(value, str) or not value:  # NonEmptyString
                        raise self.constraint(
                            f"system.{j}.text", "Member must have length greater than or equal to 1"
                        )
                    input_tokens += _words(value)

        has_tool_blocks = False
        prev_ids: list[str] = []
        for i, m in enumerate(msgs):
            p = f"messages.{i}"
            if not isinstance(m, dict) or set(m) - {"role", "content"}:
                raise self.constraint(p, "Member must be a Message {role, content}")
            role = m.get("role")
            if role not in ("user", "assistant"):
                raise self.constraint(f"{p}.role", "Member must satisfy enum value set: [user, assistant]")
            if i == 0 and role != "user":
                raise self.invalid(
                    "A conversation must start with a user message. Try again with a conversation "
                    "that starts with a user message."
                )
            if i > 0 and msgs[i - 1].get("role") == role:
                raise self.invalid(
                    "A conversation must alternate between user and assistant roles. Make sure the "
                    "conversation alternates between user and assistant roles and try again."
                )
            content = m.get("content")
            if not isinstance(content, list):
                raise self.constraint(f"{p}.content", "Member must not be null")
            if not content:
                raise self.invalid(
                    f"The content field in the Message object at {p} is empty. Add a ContentBlock "
                    "object to the content field and try again."
                )
            uses: list[str] = []
            answered: list[str] = []
            for j, b in enumerate(content):
                bp = f"{p}.content.{j}"
                member, value = self.union(b, bp, _BLOCKS)
                if member == "text":
                    if not isinstance(value, str):
                        raise self.constraint(f"{bp}.text", "Member must be a string")
                    if not value.strip():
                        raise self.invalid(
                            f"The text field in the ContentBlock object at {bp} is blank. Add text "
                            "to the text field, and try again."
                        )
                    input_tokens += _words(value)
                elif member == "image":
                    self.check_image(value, f"{bp}.image")
                elif member == "toolUse":
                    has_tool_blocks = True
                    if role != "assistant":
                        raise self.invalid(f"A toolUse block at {bp} must be in an assistant message.")
                    if not isinstance(value, dict) or set(value) - {"toolUseId", "name", "input", "type"}:
                        raise self.constraint(
                            f"{bp}.toolUse", "Member must be a ToolUseBlock {toolUseId, name, input}"
                        )
                    if not isinstance(value.get("toolUseId"), str) or not _TOOL_USE_ID.fullmatch(
                        value["toolUseId"]
                    ):
                        raise self.constraint(
                            f"{bp}.toolUse.toolUseId",
                            "Member must satisfy regular expression "
                            "pattern: [a-zA-Z0-9_.:-]+ and length 1-64",
                        )
                    if not isinstance(value.get("name"), str) or not _TOOL_NAME.fullmatch(value["name"]):
                        raise self.constraint(
                            f"{bp}.toolUse.name",
                            "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+ and length 1-64",
                        )
                    if not isinstance(value.get("input"), dict):
                        raise self.constraint(f"{bp}.toolUse.input", "Member must be a JSON object")
                    uses.append(value["toolUseId"])
                elif member == "reasoningContent":
                    self.check_reasoning(value, f"{bp}.reasoningContent", role)
                elif member == "toolResult":
                    has_tool_blocks = True
                    if role != "user":
                        raise self.invalid(f"A toolResult block at {bp} must be in a user message.")
                    self.check_tool_result(value, f"{bp}.toolResult")
                    if value["toolUseId"] not in prev_ids:
                        raise self.invalid(
                            f"The toolResult block at {bp} has toolUseId {value['toolUseId']}, which "
                            "does not match any toolUse block of the previous turn."
                        )
                    answered.append(value["toolUseId"])
            missing = [t for t in prev_ids if t not in answered]
            if missing:
                raise self.invalid(
                    f"Expected toolResult blocks at {p}.content for the following Ids: {', '.join(missing)}"
                )
            prev_ids = uses
        if prev_ids and msgs[-1].get("role") == "assistant" and len(msgs) > 1:
            pass  # a final assistant turn with tool uses is a prefill: the model continues it

        tool_names, choice, forced = self.check_tool_config(body.get("toolConfig"))
        if has_tool_blocks and not tool_names:
            raise self.invalid(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks."
            )
        max_tokens, stops = self.check_inference(body.get("inferenceConfig"))
        self.check_extras(body)
        if _is_claude(model):
            self.check_thinking(body, max_tokens, choice, msgs)

        last = msgs[-1]
        tool_results: list[str] | None = None
        if last["role"] == "user":
            res = [b["toolResult"] for b in last["content"] if "toolResult" in b]
            if res:
                tool_results = [_result_text(r) for r in res]
        user_text = ""
        for m in reversed(msgs):
            if m["role"] == "user":
                user_text = _content_text(m["content"])
                break
        return _Convo(
            model=model,
            input_tokens=input_tokens,
            user_text=user_text,
            tool_results=tool_results,
            tool_names=tool_names,
            choice=choice,
            forced_name=forced,
            max_tokens=max_tokens,
            stops=stops,
            json_schema=_text_format_schema(body),
            tool_schemas={
                t["toolSpec"]["name"]: (t["toolSpec"].get("inputSchema") or {}).get("json")
                for t in (body.get("toolConfig") or {}).get("tools") or []
                if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
            },
        )

    def check_reasoning(self, value: Any, path: str, role: str) -> None:
        """[Converse] ReasoningContentBlock: a union of ``reasoningText`` (ReasoningTextBlock:
        ``text`` required, ``signature`` optional) and ``redactedContent`` (a blob), in the
        model's own turns only."""
        if role != "assistant":
            raise self.invalid(f"A reasoningContent block at {path} must be in an assistant message.")
        member, rc = self.union(value, path, frozenset({"reasoningText", "redactedContent"}))
        if member == "redactedContent":
            if not isinstance(rc, str) or not rc or not _b64_ok(rc):
                raise self.constraint(
                    f"{path}.redactedContent", "Member must be non-empty base64-encoded binary data"
                )
            return
        if not isinstance(rc, dict) or set(rc) - {"text", "signature"}:
            raise self.constraint(
                f"{path}.reasoningText", "Member must be a ReasoningTextBlock {text, signature}"
            )
        if not isinstance(rc.get("text"), str):
            raise self.constraint(f"{path}.reasoningText.text", "Member must not be null")
        if "signature" in rc and not isinstance(rc["signature"], str):
            raise self.constraint(f"{path}.reasoningText.signature", "Member must be a string")

    def check_thinking(
        self, body: dict[str, Any], max_tokens: int | None, choice: str, msgs: list[Any]
    ) -> None:
        """[Thinking] Claude's rules, checked by the Anthropic mock on an Anthropic-shaped view of
        the request (as Bedrock hands Claude its native request), its refusal relayed the way
        Bedrock relays the model's: budget_tokens at least 1024 and below maxTokens, no
        temperature but 1, no top_k, topP at least 0.95, no forced tool, the turn answering tool
        results opening with its reasoning; and every replayed ``reasoningText`` carrying the
        signature issued with it."""
        extra = body.get("additionalModelRequestFields")
        thinking = extra.get("thinking") if isinstance(extra, dict) else None
        if thinking is not None and (
            not isinstance(thinking, dict) or thinking.get("type") not in _THINKING_TYPES
        ):
            raise self.invalid(
                _MODEL_ERRORS + "thinking: Input tag found using 'type' does not match any of the expected "
                "tags: 'enabled', 'disabled', 'adaptive'"
            )
        ic = body.get("inferenceConfig") or {}
        view: dict[str, Any] = {
            "temperature": ic.get("temperature"),
            "top_p": ic.get("topP"),
            "top_k": extra.get("top_k") if isinstance(extra, dict) else None,
        }

        def block(b: dict[str, Any]) -> dict[str, Any]:
            rc = b.get("reasoningContent")
            if isinstance(rc, dict) and isinstance(rc.get("reasoningText"), dict):
                rt = rc["reasoningText"]
                return {"type": "thinking", "thinking": rt["text"], "signature": rt.get("signature") or ""}
            if isinstance(rc, dict):
                return {"type": "redacted_thinking", "data": rc.get("redactedContent")}
            kind = {"toolUse": "tool_use", "toolResult": "tool_result"}.get(next(iter(b)), "text")
            return {"type": kind}

        anthropic_msgs = [
            {"role": m["role"], "content": [block(b) for b in m["content"] if "cachePoint" not in b]}
            for m in msgs
        ]
        try:
            if thinking is not None and thinking["type"] in ("enabled", "adaptive"):
                self.claude_cache.check_thinking(
                    view, thinking, max_tokens if max_tokens is not None else 2**31, choice, anthropic_msgs
                )
            self.claude_cache.check_signatures(anthropic_msgs)
        except _Reject as err:
            raise self.invalid(_MODEL_ERRORS + err.body["error"]["message"]) from None

    def check_tool_config(self, tc: Any) -> tuple[list[str], str, str | None]:
        """[Converse] ToolConfiguration: tools (at least one), toolChoice (auto | any | tool)."""
        if tc is None:
            return [], "auto", None
        if not isinstance(tc, dict) or set(tc) - {"tools", "toolChoice"}:
            raise self.constraint("toolConfig", "Member must be a ToolConfiguration {tools, toolChoice}")
        tools = tc.get("tools")
        if not isinstance(tools, list) or not tools:
            raise self.constraint("toolConfig.tools", "Member must have length greater than or equal to 1")
        names: list[str] = []
        for i, t in enumerate(tools):
            member, spec = self.union(
                t, f"toolConfig.tools.{i}", frozenset({"toolSpec", "systemTool", "cachePoint"})
            )
            if member != "toolSpec":
                continue
            p = f"toolConfig.tools.{i}.toolSpec"
            if not isinstance(spec, dict) or set(spec) - {"name", "description", "inputSchema", "strict"}:
                raise self.constraint(
                    p, "Member must be a ToolSpecification {name, description, inputSchema}"
                )
            if not isinstance(spec.get("name"), str) or not _TOOL_NAME.fullmatch(spec["name"]):
                raise self.constraint(
                    f"{p}.name",
                    "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+ and length 1-64",
                )
            if "description" in spec and (
                not isinstance(spec["description"], str) or not spec["description"]
            ):
                raise self.constraint(
                    f"{p}.description", "Member must have length greater than or equal to 1"
                )
            member, schema = self.union(spec.get("inputSchema"), f"{p}.inputSchema", frozenset({"json"}))
            if not isinstance(schema, dict):
                raise self.constraint(f"{p}.inputSchema.json", "Member must be a JSON object")
            if spec["name"] in names:
                raise self.invalid(
                    f"The tool name {spec['name']} is used by more than one tool. Tool names must be unique."
                )
            names.append(spec["name"])
        choice = tc.get("toolChoice")
        if choice is None:
            return names, "auto", None
        member, value = self.union(choice, "toolConfig.toolChoice", frozenset({"auto", "any", "tool"}))
        if member == "tool":
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                raise self.constraint("toolConfig.toolChoice.tool.name", "Member must not be null")
            if value["name"] not in names:
                raise self.invalid(
                    f"The tool {value['name']} in toolConfig.toolChoice is not in toolConfig.tools."
                )
            return names, "any", value["name"]
        if not isinstance(value, dict) or value:
            raise self.constraint(f"toolConfig.toolChoice.{member}", "Member must be an empty object")
        return names, member, None

    def check_inference(self, ic: Any) -> tuple[int | None, list[str]]:
        """[Converse] InferenceConfiguration: maxTokens >= 1, temperature and topP in [0, 1],
        at most 2500 non-empty stop sequences."""
        if ic is None:
            return None, []
        if not isinstance(ic, dict):
            raise self.constraint("inferenceConfig", "Member must be an object")
        for k in ic:
            if k not in _INFERENCE:
                raise self.invalid(f"Unknown member '{k}' at 'inferenceConfig'")
        max_tokens = ic.get("maxTokens")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise self.constraint(
                "inferenceConfig.maxTokens", "Member must have value greater than or equal to 1"
            )
        for k in ("temperature", "topP"):
            v = ic.get(k)
            if v is None:
                continue
            if not _is_num(v):
                raise self.constraint(f"inferenceConfig.{k}", "Member must be a number")
            if v < 0:
                raise self.constraint(
                    f"inferenceConfig.{k}", "Member must have value greater than or equal to 0"
                )
            if v > 1:
                raise self.constraint(
                    f"inferenceConfig.{k}", "Member must have value less than or equal to 1"
                )
        stops = ic.get("stopSequences")
        if stops is None:
            return max_tokens, []
        if not isinstance(stops, list) or len(stops) > 2500:
            raise self.constraint(
                "inferenceConfig.stopSequences", "Member must have length less than or equal to 2500"
            )
        for k, s in enumerate(stops):
            if not isinstance(s, str) or not s:
                raise self.constraint(
                    f"inferenceConfig.stopSequences.{k}", "Member must have length greater than or equal to 1"
                )
        return max_tokens, list(stops)

    def check_extras(self, body: dict[str, Any]) -> None:
        extra = body.get("additionalModelRequestFields")
        if extra is not None:
            if not isinstance(extra, dict):
                raise self.constraint("additionalModelRequestFields", "Member must be a JSON object")
            # Anthropic models on Bedrock take top_k here (a non-negative integer).
            if "top_k" in extra and (not _is_int(extra["top_k"]) or extra["top_k"] < 0):
                raise self.invalid(
                    "The model returned the following errors: top_k: must be a non-negative integer"
                )
        meta = body.get("requestMetadata")
        if meta is not None:
            if not isinstance(meta, dict) or not 1 <= len(meta) <= 16:
                raise self.constraint("requestMetadata", "Member must have length between 1 and 16")
            for k, v in meta.items():
                if (
                    not (1 <= len(k) <= 256 and _METADATA.fullmatch(k))
                    or not isinstance(v, str)
                    or not _METADATA.fullmatch(v)
                ):
                    raise self.constraint(
                        f"requestMetadata.{k}",
                        "Member must satisfy regular expression pattern: [a-zA-Z0-9\\s:_@$#=/+,-.]",
                    )
        oc = body.get("outputConfig")
        if oc is not None:
            if not isinstance(oc, dict) or set(oc) - {"textFormat", "effort"}:
                raise self.constraint("outputConfig", "Member must be an OutputConfig {textFormat, effort}")
            tf = oc.get("textFormat")
            if tf is not None:
                ok = isinstance(tf, dict) and tf.get("type") == "json_schema"
                js = (
                    tf.get("structure", {}).get("jsonSchema")
                    if ok and isinstance(tf.get("structure"), dict)
                    else None
                )
                if not isinstance(js, dict) or not isinstance(js.get("schema"), str):
                    raise self.constraint(
                        "outputConfig.textFormat",
                        "Member must be an OutputFormat {type: "
                        "json_schema, structure: {jsonSchema: {schema}}}",
                    )
                try:
                    orjson.loads(js["schema"])
                except orjson.JSONDecodeError:
                    raise self.invalid(
                        "outputConfig.textFormat.structure.jsonSchema.schema is not valid JSON"
                    ) from None

    # handlers --------------------------------------------------------------
    async def signed_object(self, request: web.Request, body: Any) -> None:
        """What every runtime call checks first: its SigV4 signature over the raw body, then a
        JSON object as the body."""
        self.verify_signature(request, await request.read())
        if body is _INVALID or not isinstance(body, dict):
            raise self.error(
                400, "SerializationException", "Unexpected content in the request body: not a JSON object"
            )

    async def count_tokens(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        """[CountTokens] ``{"input": CountTokensInput}`` -> ``{"inputTokens": N}``, signed as Converse."""
        await self.signed_object(request, body)
        model = request.match_info["model_id"]
        if not _COUNT_MODEL_ID.fullmatch(model):
            raise self.constraint(
                "modelId", "Member must satisfy regular expression pattern: [a-zA-Z_\\.\\-/0-9:]+"
            )
        if _COUNT_REFUSED.match(model):
            raise self.invalid("The provided model doesn't support counting tokens.")
        for k in body:
            if k != "input":
                raise self.invalid(f"Unknown member '{k}' in the request body")
        if body.get("input") is None:  # CountTokensRequest: input is required
            raise self.constraint("input", "Member must not be null")
        # CountTokensInput is a union: exactly one of converse, invokeModel
        member, value = self.union(body["input"], "input", frozenset({"converse", "invokeModel"}))
        if member == "invokeModel":
            # InvokeModelTokensRequest: body (required) is the model-native request, a blob
            # (base64 in JSON)
            blob = value.get("body") if isinstance(value, dict) and set(value) == {"body"} else None
            if not isinstance(blob, str) or not blob or not _b64_ok(blob):
                raise self.constraint("input.invokeModel.body", "Member must be a base64-encoded blob")
            text = base64.b64decode(blob + "=" * (-len(blob) % 4), altchars=b"-_").decode("utf-8", "replace")
            return _json_response(200, {"inputTokens": _words(text)}, self.extra_headers())
        if not isinstance(value, dict):
            raise self.constraint("input.converse", "Member must be an object")
        for k in value:
            if k not in _COUNT_CONVERSE:
                raise self.invalid(f"Unknown member '{k}' at 'input.converse'")
        # A ConverseTokensRequest "mirrors the input format for the Converse operation": its
        # messages, system and tools are validated as Converse validates them.
        convo = self.validate(model, value)
        return _json_response(200, {"inputTokens": convo.input_tokens}, self.extra_headers())

    async def converse(self, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
        await self.signed_object(request, body)
        model = request.match_info["model_id"]
        convo = self.validate(model, body)
        reply = _plan(self.spec.name, convo)
        stop = {"tool": "tool_use", "length": "max_tokens", "stop_sequence": "stop_sequence"}.get(
            reply.finish, "end_turn"
        )
        view = self.as_anthropic(body)
        read, write = self.claude_cache.cache_usage(view, model, convo.input_tokens)
        # [Thinking] Claude thinks first when asked to: a signed reasoningContent block before
        # the text and tool blocks, its tokens counted in outputTokens (Converse has no
        # separate count of them).
        thought = (
            f"Thinking about: {convo.user_text}".strip() if _is_claude(model) and _thinking_on(body) else ""
        )
        reasoning = (
            [{"reasoningContent": {"reasoningText": {"text": thought, "signature": _sign(thought)}}}]
            if thought
            else []
        )
        out_tokens = reply.output_tokens + _words(thought)
        # Converse's inputTokens leaves out the cache reads and writes it counts apart.
        usage = {
            "inputTokens": convo.input_tokens - read - write,
            "outputTokens": out_tokens,
            "totalTokens": convo.input_tokens + out_tokens,
        }
        if read or write:
            usage |= {"cacheReadInputTokens": read, "cacheWriteInputTokens": write}
        # One toolUse block per call: parallel calls are several blocks of one message.
        calls = (reply.calls or [(reply.tool_name, reply.tool_args)]) if reply.finish == "tool" else []
        ids = [self.issue_id("tooluse_" + _b62(22)) for _ in calls]
        latency = {"latencyMs": 12}
        if not self.is_stream(request, body):
            if reply.finish == "tool":
                content: list[dict[str, Any]] = [
                    {"toolUse": {"toolUseId": tid, "name": name, "input": args}}
                    for tid, (name, args) in zip(ids, calls, strict=True)
                ]
            else:
                content = [{"text": reply.text}] if reply.words else []
            out = {
                "output": {"message": {"role": "assistant", "content": reasoning + content}},
                "stopReason": stop,
                "usage": usage,
                "metrics": latency,
            }
            return _json_response(200, out, self.extra_headers())

        events = [_event("messageStart", {"role": "assistant"})]
        first = 0  # the index of the first text or tool block
        if thought:  # [Thinking] a reasoning block opens with its first delta, the signature last
            for k, w in enumerate(thought.split()):
                delta = {"reasoningContent": {"text": w if k == 0 else " " + w}}
                events.append(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}))
            signed = {"reasoningContent": {"signature": _sign(thought)}}
            events.append(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": signed}))
            events.append(_event("contentBlockStop", {"contentBlockIndex": 0}))
            first = 1
        if reply.finish == "tool":
            for idx, (tid, (name, args)) in enumerate(zip(ids, calls, strict=True), start=first):
                events.append(
                    _event(
                        "contentBlockStart",
                        {"contentBlockIndex": idx, "start": {"toolUse": {"toolUseId": tid, "name": name}}},
                    )
                )
                js = orjson.dumps(args).decode()
                step = max(1, -(-len(js) // 4))
                for k in range(0, len(js), step):
                    events.append(
                        _event(
                            "contentBlockDelta",
                            {"contentBlockIndex": idx, "delta": {"toolUse": {"input": js[k : k + step]}}},
                        )
                    )
                events.append(_event("contentBlockStop", {"contentBlockIndex": idx}))
        elif reply.words:  # a text block starts with its first delta (no contentBlockStart)
            for piece in reply.pieces():
                events.append(
                    _event("contentBlockDelta", {"contentBlockIndex": first, "delta": {"text": piece}})
                )
            events.append(_event("contentBlockStop", {"contentBlockIndex": first}))
        events.append(_event("messageStop", {"stopReason": stop}))
        events.append(_event("metadata", {"usage": usage, "metrics": latency}))
        return await self.send_stream(
            request, events, cut, content_type=_EVENTSTREAM_CT, headers=self.extra_headers()
        )


def spec_for(name: str, provider: Any, host: str) -> Any:
    """The mock of a Bedrock provider of the gateway config: it verifies signatures with the
    credentials the gateway resolves for that provider (botocore's chain, ``aws_profile``)."""
    from botocore.session import Session

    from .common import MockSpec

    credentials = Session(profile=provider.aws_profile).get_credentials()
    if credentials is None:
        raise ValueError(
            f"mock {name}: no AWS credentials to verify signatures with (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or a profile)"
        )
    frozen = credentials.get_frozen_credentials()
    return MockSpec(
        name=name,
        dialect="bedrock",
        port=provider.port,
        api_key=frozen.secret_key,
        host=host,
        key_id=frozen.access_key,
        session_token=frozen.token,
        region=provider.aws_region,
    )
