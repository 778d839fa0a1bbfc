"""The request path of operations besides chat: embeddings and token counting.

Both reuse the chat request's envelope (authentication, model lookup, health,
admission, failover, metrics, cost) and differ where the body is translated,
where it is sent (``Dialect.embeddings_path``, ``counting_path``) and how the
answer is read:

- **embed**: the client's body is parsed by its dialect's ``EmbeddingsCodec`` into
  the embeddings IR and built by the backend's; the answer is parsed back and
  rendered in the client's dialect (vectors, and input tokens: the provider's
  count, else the gateway's estimate). Only models of ``kind: embedding`` serve it.
- **count_tokens**: the client's counting body is the chat request it counts. When
  every backend of the model has a counting endpoint (``CountingCodec.forwards``) it
  is translated like a chat request and sent to the primary's counting endpoint
  (failover stays among them); otherwise the gateway answers with its own estimate
  and the header ``x-gateway-token-count: estimate``. A forwarded count reaches a
  provider, so it is admitted against the tenant's request and concurrency budgets
  (``plan._count``); it generates and costs nothing, so it takes no tokens, spend or
  backend quota. An estimated count touches no provider and is not admitted.

A failover attempt knows the operation from the model (embeddings) or from the
counting path the earlier attempt went to (``attempt_operation``).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..admission import estimate
from ..config import GatewayConfig, ResolvedBackend
from ..dialects import Dialect, get_dialect
from ..errors import GatewayError
from ..translation.fields import invalid_answer
from ..translation.ir import ChatRequest, Usage
from ..translation.operations import EmbedRequest, estimate_tokens
from .responses import Buffered, answer_json

# Response header of a token count the gateway estimated itself (no backend counted it).
ESTIMATE_HEADER = "x-gateway-token-count"
ESTIMATE = "estimate"
EMBED = "embed"
COUNT = "count_tokens"


def wrong_kind(model: str, operation: str, kind: str) -> GatewayError | None:
    """The 400 for a request whose operation the model does not serve."""
    if operation == EMBED and kind != "embedding":
        return GatewayError(
            "invalid_request",
            f"model '{model}' is not an embedding model; embeddings need a model of kind 'embedding'",
            param="model",
        )
    if operation != EMBED and kind == "embedding":
        return GatewayError(
            "invalid_request",
            f"model '{model}' is an embedding model: it serves the embeddings endpoints only",
            param="model",
        )
    return None


def embeddings_codec(dialect: Dialect, role: str) -> Any:
    """A dialect's embeddings codec; a 400 for a dialect without embeddings (config prevents
    backends of one; a client of one never gets here: its paths do not classify as embed)."""
    if dialect.embeddings is None:
        raise GatewayError("invalid_request", f"the {role}'s API ({dialect.name}) has no embeddings endpoint")
    return dialect.embeddings


def parse_embed(client: Dialect, body: dict[str, Any], path_model: str | None, action: str) -> EmbedRequest:
    return embeddings_codec(client, "client").parse_request(body, path_model, action)


def build_embed(dialect: Dialect, req: EmbedRequest, upstream_model: str) -> dict[str, Any]:
    return embeddings_codec(dialect, "backend").build_request(req, upstream_model)


def embed_estimate(req: EmbedRequest) -> int:
    return estimate_tokens(req.inputs, estimate.CHARS_PER_TOKEN)


def forwards_counts(cfg: GatewayConfig, model: str) -> bool:
    """Does every backend of ``model`` have a counting endpoint (so counts are forwarded,
    and a failover attempt lands on another one)?"""
    return all(
        (c := get_dialect(b.dialect).counting) is not None and c.forwards for b in cfg.chains.get(model, ())
    )


def count_chat(
    client: Dialect, body: dict[str, Any], path_model: str | None
) -> tuple[dict[str, Any], ChatRequest]:
    """A client's counting body as the chat body it counts, and that body in the chat IR
    (validated like a chat request: a 400 in the client's dialect names the field)."""
    assert client.counting is not None
    chat = client.counting.chat_body(body)
    return chat, client.codec.parse_request(chat, path_model, False)


def estimated_count(client: Dialect, chat: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The gateway's own count: body and headers of its answer."""
    assert client.counting is not None
    tokens = estimate.input_tokens(chat, client)
    return orjson.dumps(client.counting.render_count(tokens)), {ESTIMATE_HEADER: ESTIMATE}


def build_count(
    source: Dialect,
    chat: dict[str, Any],
    ir: ChatRequest | None,
    target: Dialect,
    upstream_model: str,
    default_max_tokens: int,
    drop_unsupported: bool,
    source_model: str | None = None,
) -> dict[str, Any]:
    """The counting request for a backend of ``target``: the chat body passed through
    (same wire) or translated through the IR, then put in its counting endpoint's form.
    ``source_model``: the model ``chat`` was built for, for wires whose model is in the path."""
    assert target.counting is not None
    if target.wire == source.wire:
        out = target.passthrough_body(chat, upstream_model, False) or chat
    else:
        if ir is None:
            ir = source.codec.parse_request(chat, source_model, False)
        out = target.codec.build_request(
            ir, upstream_model, default_max_tokens=default_max_tokens, drop_unsupported=drop_unsupported
        )
    return target.counting.build_request(out, upstream_model)


def attempt_operation(cfg: GatewayConfig, router_targets: dict[str, Any], model: str, path: str) -> str:
    """The operation of a failover attempt: the model says embeddings; a counting path of one
    of the model's backends (where the earlier attempt went) says a count; else chat."""
    settings = cfg.models.get(model)
    if settings is not None and settings.kind == "embedding":
        return EMBED
    if path and forwards_counts(cfg, model):
        for b in cfg.chains.get(model, ()):
            target = router_targets.get(b.name)
            if target is not None and target.operation_path(COUNT) == path:
                return COUNT
    return "chat"


def retranslate(
    cfg: GatewayConfig,
    operation: str,
    source: ResolvedBackend,
    target: ResolvedBackend,
    model: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """An attempt's body (built for ``source``) rebuilt for ``target``."""
    src, dst = get_dialect(source.dialect), get_dialect(target.dialect)
    if operation == EMBED:
        req = embeddings_codec(src, "backend").parse_request(body, source.upstream_model, "")
        return build_embed(dst, req, target.upstream_model)
    assert src.counting is not None
    chat = src.counting.chat_body(body)  # a counting body built for a provider reads as a client's
    settings = cfg.models[model]
    return build_count(
        src,
        chat,
        None,
        dst,
        target.upstream_model,
        settings.default_max_tokens,
        settings.drop_unsupported,
        source.upstream_model,
    )


class OperationAnswer(Buffered):
    """A non-chat answer, read whole: parsed by the backend's codec of the operation and
    rendered by the client's (errors as for chat: ``Buffered._error``)."""

    def __init__(self, *args: Any, operation: str, embed: EmbedRequest | None, estimate_tokens: int) -> None:
        super().__init__(*args, ir=None)
        self.operation = operation
        self.embed = embed
        self.estimate_tokens = estimate_tokens

    def _success(self, body: bytes) -> bytes | None:
        data = answer_json(body)
        assert self.backend is not None
        backend = get_dialect(self.backend.dialect)
        if self.operation == EMBED:
            assert self.embed is not None
            resp = embeddings_codec(backend, "backend").parse_response(data)
            if len(resp.vectors) != len(self.embed.inputs):
                raise invalid_answer(
                    f"it has {len(resp.vectors)} embeddings for {len(self.embed.inputs)} inputs"
                )
            tokens = resp.input_tokens if resp.input_tokens is not None else self.estimate_tokens
            self.usage = Usage(input_tokens=tokens)
            resp.model = self.model
            return orjson.dumps(
                embeddings_codec(self.dialect, "client").render_response(resp, self.embed, tokens)
            )
        if backend.counting is None or self.dialect.counting is None:
            raise invalid_answer("the backend has no token counting endpoint")
        tokens = backend.counting.parse_count(data)
        return orjson.dumps(self.dialect.counting.render_count(tokens))


def judge(dialect: Dialect, kind: str) -> Any:
    """How the answer guard reads a 200 of ``dialect`` for a model of ``kind``: None for chat."""
    if kind == "embedding" and dialect.embeddings is not None:
        return dialect.embeddings.parse_response
    counting = dialect.counting
    if counting is not None and counting.forwards:
        chat_parse, count_parse = dialect.codec.parse_response, counting.parse_count

        def chat_or_count(data: Any) -> object:
            """A chat model's 200 is a chat answer, or (a forwarded count) a count; neither:
            what is wrong with it as a chat answer (the common case) is the error."""
            try:
                return chat_parse(data)
            except GatewayError as chat_error:
                try:
                    return count_parse(data)
                except GatewayError:
                    raise chat_error from None

        return chat_or_count
    return None
