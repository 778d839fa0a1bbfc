"""Gemini embeddings: ``models/{model}:embedContent`` and ``:batchEmbedContents``.

Request fields follow the API reference (https://ai.google.dev/api/embeddings):
an ``EmbedContentRequest`` has ``content`` (only its ``parts[].text`` is
embedded), optional ``taskType`` (an enum), ``title`` and ``outputDimensionality``;
a batch has ``requests[]``, and "the model in each of these requests must match
the model specified" in the path. The API reads proto JSON, so unknown field
names are refused. A batch the gateway carries gives every request the same
``taskType``, ``title`` and ``outputDimensionality`` (the IR has one of each);
differing ones are a 400 that says so. Providers are always sent a batch.
"""

from __future__ import annotations

from typing import Any

from ...errors import GatewayError, invalid
from ...translation.fields import answer_count, answer_objects, objects, type_error
from ...translation.operations import EmbeddingsCodec, EmbedInput, EmbedRequest, EmbedResponse, answer_vector

TASK_TYPES = frozenset(
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
REQUEST_KEYS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})
SINGLE = "embedContent"
BATCH = "batchEmbedContents"
WIRE = "gemini"


def bare(model: str) -> str:
    return model[7:] if model.startswith("models/") else model


def _text(content: Any, path: str) -> str:
    """The text a ``Content`` holds (its text parts, joined)."""
    if not isinstance(content, dict):
        raise type_error(path, "an object (a Content)")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise type_error(f"{path}.parts", "a non-empty array of parts")
    texts: list[str] = []
    for ppath, part in objects(parts, f"{path}.parts"):
        text = part.get("text")
        if not isinstance(text, str) or set(part) - {"text"}:
            raise invalid(f"'{ppath}' must be a text part: only text is embedded through this gateway", ppath)
        texts.append(text)
    joined = " ".join(texts)
    if not joined.strip():
        raise invalid(f"'{path}' has no text to embed", path)
    return joined


def _one(req: Any, path: str) -> tuple[str, tuple[str | None, str | None, int | None]]:
    """(text, (task, title, dimensions)) of one ``EmbedContentRequest``."""
    if not isinstance(req, dict):
        raise type_error(path or "body", "an object")
    prefix = f"{path}." if path else ""
    for key in req:
        if key not in REQUEST_KEYS:
            raise invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{path or 'body'}'", prefix + key
            )
    if "content" not in req:
        raise invalid(f"missing required field '{prefix}content'", prefix + "content")
    text = _text(req["content"], prefix + "content")
    task = req.get("taskType")
    if task is not None and task not in TASK_TYPES:
        raise invalid(
            f"'{prefix}taskType' must be one of {', '.join(sorted(TASK_TYPES))}", prefix + "taskType"
        )
    title = req.get("title")
    if title is not None and not isinstance(title, str):
        raise type_error(prefix + "title", "a string")
    dims = req.get("outputDimensionality")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise type_error(prefix + "outputDimensionality", "an integer of at least 1")
    return text, (task, title, dims)


class GeminiEmbeddings(EmbeddingsCodec):
    wire = WIRE

    def parse_request(self, body: dict[str, Any], path_model: str | None, action: str) -> EmbedRequest:
        if action == SINGLE:
            text, settings = _one(body, "")
            task, title, dims = settings
            return EmbedRequest([text], dims, task, title, single=True, origin=WIRE)
        reqs = body.get("requests")
        if set(body) - {"requests"}:
            key = next(iter(set(body) - {"requests"}))
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}"', key)
        if not isinstance(reqs, list) or not reqs:
            raise type_error("requests", "a non-empty array of EmbedContentRequest")
        want = f"models/{bare(path_model or '')}"
        inputs: list[EmbedInput] = []
        first: tuple[str | None, str | None, int | None] | None = None
        for i, req in enumerate(reqs):
            path = f"requests[{i}]"
            model = req.get("model") if isinstance(req, dict) else None
            if model is None:
                raise invalid(f"missing required field '{path}.model'", f"{path}.model")
            if not isinstance(model, str) or f"models/{bare(model)}" != want:
                raise invalid(
                    f"'{path}.model' is {model!r}: the model of each request must match the model "
                    f"in the path ({want!r})",
                    f"{path}.model",
                )
            text, settings = _one(req, path)
            if first is None:
                first = settings
            elif settings != first:
                raise invalid(
                    f"'{path}' sets taskType, title or outputDimensionality differently from requests[0]: "
                    "the gateway carries one setting per batch; send differing ones as separate batches",
                    path,
                )
            inputs.append(text)
        assert first is not None
        task, title, dims = first
        return EmbedRequest(inputs, dims, task, title, origin=WIRE)

    def build_request(self, req: EmbedRequest, upstream_model: str) -> dict[str, Any]:
        if req.extra and req.origin != WIRE:
            key = next(iter(req.extra))
            raise invalid(
                f"'{key}' cannot be expressed for a Gemini-style embeddings backend; remove it", key
            )
        model = f"models/{bare(upstream_model)}"
        out: list[dict[str, Any]] = []
        for i, item in enumerate(req.inputs):
            if not isinstance(item, str):
                path = "input" if req.single else f"input[{i}]"
                raise invalid(
                    f"'{path}' is token ids: a Gemini-style embeddings backend takes text only", path
                )
            one: dict[str, Any] = {"model": model, "content": {"parts": [{"text": item}]}}
            if req.task is not None:
                one["taskType"] = req.task
            if req.title is not None:
                one["title"] = req.title
            if req.dimensions is not None:
                one["outputDimensionality"] = req.dimensions
            out.append(one)
        return {"requests": out}

    def request_path(self, upstream_model: str) -> str:
        return f"/v1beta/models/{bare(upstream_model)}:{BATCH}"

    def parse_response(self, data: Any) -> EmbedResponse:
        if not isinstance(data, dict):
            raise GatewayError("api_error", "upstream returned a non-object response body", status=502)
        if "embeddings" in data:
            items = list(answer_objects(data["embeddings"], "embeddings"))
        elif "embedding" in data:
            items = list(answer_objects([data["embedding"]], "embedding"))
        else:
            raise GatewayError(
                "api_error", "the provider's answer was invalid: it has no 'embeddings'", status=502
            )
        if not items:
            raise GatewayError(
                "api_error", "the provider's answer was invalid: 'embeddings' is empty", status=502
            )
        vectors = [answer_vector(item.get("values"), f"{path}.values") for path, item in items]
        usage = data.get("usageMetadata")
        tokens = (
            answer_count(usage.get("promptTokenCount"), "usageMetadata.promptTokenCount")
            if isinstance(usage, dict)
            else None
        )
        return EmbedResponse(vectors, tokens)

    def render_response(self, resp: EmbedResponse, req: EmbedRequest, input_tokens: int) -> dict[str, Any]:
        if req.single:
            return {"embedding": {"values": resp.vectors[0]}}
        return {"embeddings": [{"values": v} for v in resp.vectors]}


GEMINI_EMBEDDINGS = GeminiEmbeddings()
