"""OpenAI embeddings: ``POST /v1/embeddings`` (also the wire of OpenAI-compatible hosts and Azure).

Request fields and their rules follow the API reference
(https://platform.openai.com/docs/api-reference/embeddings/create): ``input`` is a
string, an array of strings, an array of token ids or an array of token-id arrays;
it cannot be an empty string and any array holds at most 2048 items; ``dimensions``
is an integer of at least 1; ``encoding_format`` is ``float`` or ``base64``;
``user`` a string. Fields the reference does not list are kept for OpenAI backends
(compatible hosts take extras) and refused towards other dialects.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from ...errors import GatewayError, invalid, unsupported
from ...translation.fields import answer_count, answer_int, answer_objects, bad_answer, type_error
from ...translation.operations import (
    EmbeddingsCodec,
    EmbedInput,
    EmbedRequest,
    EmbedResponse,
    answer_vector,
)


def encode_base64(vec: list[float]) -> str:
    """A vector as base64 of little-endian float32, the encoding ``encoding_format: base64`` uses (and its SDK decodes)."""
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def decode_base64(text: str, where: str) -> list[float]:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise bad_answer(where, "base64") from None
    if not raw or len(raw) % 4:
        raise bad_answer(where, "base64 of float32 values")
    return answer_vector(list(struct.unpack(f"<{len(raw) // 4}f", raw)), where)


MAX_INPUTS = 2048
KNOWN = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
WIRE = "openai"


def _inputs(value: Any) -> tuple[list[EmbedInput], bool]:
    """(inputs, single) of ``input``; a 400 naming the element for anything else."""
    if isinstance(value, str):
        if not value:
            raise invalid("'input' cannot be an empty string", "input")
        return [value], True
    if not isinstance(value, list):
        raise type_error("input", "a string, an array of strings, or an array of token arrays")
    if not value:
        raise invalid("'input' cannot be an empty array", "input")
    if len(value) > MAX_INPUTS:
        raise invalid(f"'input' must have at most {MAX_INPUTS} items, not {len(value)}", "input")
    if all(_token(t) for t in value):
        return [list(value)], True  # one input as token ids
    out: list[EmbedInput] = []
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if isinstance(item, str):
            if not item:
                raise invalid(f"'{path}' cannot be an empty string", path)
            out.append(item)
        elif isinstance(item, list) and item and len(item) <= MAX_INPUTS and all(_token(t) for t in item):
            out.append(list(item))
        else:
            raise type_error(path, f"a non-empty string or an array of 1 to {MAX_INPUTS} token ids")
    return out, False


def _token(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31


class OpenAIEmbeddings(EmbeddingsCodec):
    wire = WIRE

    def parse_request(self, body: dict[str, Any], path_model: str | None, action: str) -> EmbedRequest:
        if "input" not in body:
            raise invalid("missing required field 'input'", "input")
        inputs, single = _inputs(body["input"])
        dims = body.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
            raise type_error("dimensions", "an integer of at least 1")
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            raise invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise type_error("user", "a string")
        extra = {k: v for k, v in body.items() if k not in KNOWN}
        return EmbedRequest(
            inputs, dims, user=user, base64=fmt == "base64", single=single, extra=extra, origin=WIRE
        )

    def build_request(self, req: EmbedRequest, upstream_model: str) -> dict[str, Any]:
        for name, value in (("taskType", req.task), ("title", req.title)):
            if value is not None:
                raise unsupported(name, "OpenAI-style embeddings")
        if req.extra and req.origin != WIRE:
            raise unsupported(next(iter(req.extra)), "OpenAI-style embeddings")
        out: dict[str, Any] = {
            "model": upstream_model,
            "input": req.inputs[0] if req.single else req.inputs,
            # base64 is a quarter of the JSON size; the answer is decoded either way
            "encoding_format": "base64",
        }
        if req.dimensions is not None:
            out["dimensions"] = req.dimensions
        if req.user is not None:
            out["user"] = req.user
        if req.origin == WIRE:
            out.update(req.extra)
        return out

    def request_path(self, upstream_model: str) -> str:
        return "/embeddings"

    def parse_response(self, data: Any) -> EmbedResponse:
        if not isinstance(data, dict):
            raise GatewayError("api_error", "upstream returned a non-object response body", status=502)
        if "data" not in data:
            raise GatewayError("api_error", "the provider's answer was invalid: it has no 'data'", status=502)
        items = sorted(
            answer_objects(data["data"], "data"),
            key=lambda pi: answer_int(pi[1].get("index"), f"{pi[0]}.index"),
        )
        vectors: list[list[float]] = []
        for path, item in items:
            vec = item.get("embedding")
            where = f"{path}.embedding"
            vectors.append(decode_base64(vec, where) if isinstance(vec, str) else answer_vector(vec, where))
        if not vectors:
            raise GatewayError("api_error", "the provider's answer was invalid: 'data' is empty", status=502)
        usage = data.get("usage")
        tokens = (
            answer_count(usage.get("prompt_tokens"), "usage.prompt_tokens")
            if isinstance(usage, dict)
            else None
        )
        model = data.get("model")
        return EmbedResponse(vectors, tokens, model if isinstance(model, str) else "")

    def render_response(self, resp: EmbedResponse, req: EmbedRequest, input_tokens: int) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": encode_base64(v) if req.base64 else v,
                }
                for i, v in enumerate(resp.vectors)
            ],
            "model": resp.model,
            "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
        }


OPENAI_EMBEDDINGS = OpenAIEmbeddings()
