"""Embeddings and token counting on the mock providers.

Vectors are deterministic: a hash of the input text seeds a unit vector of the
requested dimensions, so a test can compare what two backends (or two dialects)
return for the same text. Validation follows each API's reference; every rule
cites it."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from aiohttp import web

from .common import _INVALID, _json_response, _words

# The handlers take the provider they answer for (``p``: its auth check and error shapes) as
# ``Any``: its modules import this one.
# Default output dimensions of the embedding models the mocks know; others get DEFAULT_DIMS.
MODEL_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "gemini-embedding-001": 3072,
    "text-embedding-004": 768,
}
DEFAULT_DIMS = 768
# OpenAI: "dimensions: Only supported in text-embedding-3 and later models."
# (https://platform.openai.com/docs/api-reference/embeddings/create)
NO_DIMENSIONS = ("text-embedding-ada-002",)
# OpenAI: "any array must be 2048 dimensions or less" (same reference).
OPENAI_MAX_INPUTS = 2048
# Gemini task types (https://ai.google.dev/api/embeddings#tasktype).
GEMINI_TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


def vector(text: str, dims: int) -> list[float]:
    """The deterministic unit vector of ``text``: hash blocks as numbers, normalised."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(v / 2**31) for v in struct.unpack(f"<{dims}i", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _bare(model: str) -> str:
    return model[7:] if model.startswith("models/") else model


# ------------------------------------------------------------------------------ OpenAI


async def openai_embeddings(p: Any, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
    """``POST /v1/embeddings`` (https://platform.openai.com/docs/api-reference/embeddings/create)."""
    p.check_auth(request)
    if body is _INVALID or not isinstance(body, dict):
        raise p.error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise p.missing("model")
    if "input" not in body:
        raise p.missing("input")
    raw = body["input"]
    # input: a string, array of strings, array of token ids, or array of token-id arrays;
    # "cannot be an empty string, and any array must be 2048 dimensions or less".
    if isinstance(raw, str):
        inputs: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        inputs = [raw]
    elif isinstance(raw, list):
        inputs = raw
    else:
        raise p.bad_type("input", "string or array", raw)
    if not inputs or (isinstance(raw, list) and len(raw) > OPENAI_MAX_INPUTS):
        raise p.error(
            400,
            f"'input' must have between 1 and {OPENAI_MAX_INPUTS} items.",
            param="input",
            code="invalid_value",
        )
    texts: list[str] = []
    tokens = 0
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            if not item:
                raise p.error(400, "'$.input' is invalid. Please check the API reference.", param="input")
            texts.append(item)
            tokens += max(1, _words(item))
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        ):
            texts.append(" ".join(map(str, item)))
            tokens += len(item)
        else:
            raise p.bad_type(f"input[{i}]", "string or array of integers", item)
    dims = body.get("dimensions")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise p.bad_type("dimensions", "integer of at least 1", dims)
        if model in NO_DIMENSIONS:  # dimensions: "Only supported in text-embedding-3 and later models."
            raise p.error(400, "This model does not support specifying dimensions.", param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):  # encoding_format: "Can be either float or base64."
        raise p.bad_value("encoding_format", fmt, ("float", "base64"))
    if "user" in body and not isinstance(body["user"], str):
        raise p.bad_type("user", "string", body["user"])
    n = dims or MODEL_DIMS.get(model, DEFAULT_DIMS)
    data = []
    for i, text in enumerate(texts):
        vec = vector(text, n)
        emb: Any = base64.b64encode(struct.pack(f"<{n}f", *vec)).decode() if fmt == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return _json_response(
        200,
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


# ------------------------------------------------------------------------------ Gemini


def _gemini_one(p: Any, req: Any, where: str) -> tuple[str, int | None]:
    """(text, outputDimensionality) of one EmbedContentRequest (https://ai.google.dev/api/embeddings)."""
    if not isinstance(req, dict):
        raise p.invalid(f"Invalid value at '{where}': expected an object")
    for key in req:  # proto JSON: unknown names are refused
        if key not in ("model", "content", "taskType", "title", "outputDimensionality"):
            raise p.invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
            )
    content = req.get("content")  # content: "Required. The content to embed."
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
        raise p.invalid(f"* {where}.content: contents.parts must not be empty.")
    # "Only the parts.text fields will be counted."
    text = " ".join(str(part.get("text", "")) for part in content["parts"] if isinstance(part, dict))
    if not text.strip():
        raise p.invalid(f"* {where}.content: text must not be empty.")
    task = req.get("taskType")
    if task is not None and task not in GEMINI_TASK_TYPES:
        raise p.invalid(
            f"Invalid value at '{where}.task_type' (type.googleapis.com/google.ai.TaskType), \"{task}\""
        )
    dims = req.get("outputDimensionality")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise p.invalid(f"* {where}.output_dimensionality: must be a positive integer.")
    return text, dims


def _gemini_values(model: str, text: str, dims: int | None) -> dict[str, Any]:
    full = MODEL_DIMS.get(_bare(model), DEFAULT_DIMS)
    # outputDimensionality: "truncates the output embedding from the end" (at most the model's own size)
    return {"values": vector(text, full)[: min(dims or full, full)]}


async def gemini_embed(p: Any, model: str, action: str, body: Any) -> web.StreamResponse:
    """``models/{m}:embedContent`` and ``:batchEmbedContents`` (https://ai.google.dev/api/embeddings)."""
    if body is _INVALID or not isinstance(body, dict):
        raise p.invalid("Invalid JSON payload received.")
    if action == "embedContent":
        text, dims = _gemini_one(p, body, "content")
        return _json_response(200, {"embedding": _gemini_values(model, text, dims)})
    reqs = body.get("requests")
    if set(body) - {"requests"}:
        key = sorted(set(body) - {"requests"})[0]
        raise p.invalid(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    if not isinstance(reqs, list) or not reqs:
        raise p.invalid("* BatchEmbedContentsRequest.requests: requests must not be empty.")
    out = []
    for i, req in enumerate(reqs):
        where = f"requests[{i}]"
        # requests[]: "The model in each of these requests must match the model specified
        # BatchEmbedContentsRequest.model."
        if (
            not isinstance(req, dict)
            or f"models/{_bare(str(req.get('model', '')))}" != f"models/{_bare(model)}"
        ):
            raise p.invalid(
                f"* BatchEmbedContentsRequest.{where}.model: the model in each request must match the model "
                f"of the batch (models/{_bare(model)})."
            )
        text, dims = _gemini_one(p, req, where)
        out.append(_gemini_values(model, text, dims))
    return _json_response(200, {"embeddings": out})


async def gemini_count(p: Any, model: str, body: Any) -> web.StreamResponse:
    """``models/{m}:countTokens`` (https://ai.google.dev/api/tokens): ``contents`` or a whole
    ``generateContentRequest``, "mutually exclusive"; answers ``totalTokens``."""
    if body is _INVALID or not isinstance(body, dict):
        raise p.invalid("Invalid JSON payload received.")
    if "contents" in body and "generateContentRequest" in body:
        raise p.invalid("contents and generateContentRequest are mutually exclusive.")
    inner = body.get("generateContentRequest")
    if inner is not None:
        if not isinstance(inner, dict):
            raise p.invalid("Invalid value at 'generate_content_request'")
        # GenerateContentRequest.model: "Required. The name of the Model to use"
        if f"models/{_bare(str(inner.get('model', '')))}" != f"models/{_bare(model)}":
            raise p.invalid(
                "* CountTokensRequest.generate_content_request.model: must match the request's model."
            )
        chat = {k: v for k, v in inner.items() if k != "model"}
    else:
        chat = {"contents": body.get("contents")}
    convo, _ = p.validate(model, chat)
    return _json_response(
        200,
        {
            "totalTokens": convo.input_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": convo.input_tokens}],
        },
    )


# ------------------------------------------------------------------------------ Anthropic


async def anthropic_count(p: Any, request: web.Request, body: Any, cut: bool) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens`` (https://docs.anthropic.com/en/api/messages-count-tokens):
    a Messages request without ``max_tokens`` (which it refuses as an extra input)."""
    p.check_headers(request)
    if body is _INVALID:
        raise p.invalid("There was an error parsing the body of your request: invalid JSON")
    if not isinstance(body, dict):
        raise p.invalid("Input should be a valid dictionary or object to extract fields from")
    for key in ("max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences"):
        if key in body:
            raise p.invalid(f"{key}: Extra inputs are not permitted")
    convo, _ = p.validate({**body, "max_tokens": 1})
    return _json_response(200, {"input_tokens": convo.input_tokens})
