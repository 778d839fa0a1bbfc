"""Stored responses: ``previous_response_id``, ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``, kept by the gateway (``ext_proc.conversations``).

Backends are always sent ``store: false``: the gateway keeps each stored response
itself, so a continued conversation can go to any backend (another dialect, a
failover target) and any replica sharing the store. One record per response,
keyed by (tenant, response id), JSON:

``{"response": <the response object the client got, its output left out>, "items":
[<the input the model saw, earlier turns included, then this response's output>],
"inputs": <how many of "items" are input>}``

A record larger than the store's ``max_entry_bytes`` keeps only the response (or
only its size): retrieving it still works when the response fits, continuing it or
listing its input is a 400 that says why. Items get ids as the API gives them
(``msg_``, ``fc_``, ``fco_``); an input message's id is derived from its place and
content, so the same message keeps its id in every later turn. Replayed to a
backend, input messages lose their id (the API takes none there) and reasoning
items without ``encrypted_content`` are left out (a backend that stored nothing
cannot resolve them; other dialects ignore reasoning anyway).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import orjson

from ... import metrics
from ...conversations import ConversationStore, StoreUnavailable
from ...errors import GatewayError, invalid
from ...translation.fields import type_error
from ...translation.sse import SSEReader
from ..base import ClientCall, ResponseKeeper
from .codec import PREVIOUS_NOT_FOUND

log = logging.getLogger("llm_gateway.responses_state")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_TERMINAL = frozenset({"response.completed", "response.incomplete"})
# Options of the API this gateway does not implement for any backend (it keeps no conversations
# objects and runs nothing in the background).
_UNSUPPORTED = {
    "conversation": "the Conversations API is not supported by this gateway; continue a stored "
    "response with 'previous_response_id'",
    "background": "background responses are not supported by this gateway",
}


# ---- items -----------------------------------------------------------------------------


def _digest_id(prefix: str, index: int, item: dict[str, Any]) -> str:
    raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return f"{prefix}_{hashlib.sha256(str(index).encode() + b':' + raw).hexdigest()[:32]}"


def normalize(items: list[Any]) -> list[Any]:
    """Input items as the API lists them: messages with content lists, ids, statuses."""
    out: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.append(item)
            continue
        t = item.get("type", "message" if "role" in item else None)
        if t == "message":
            role = item.get("role")
            content = item.get("content")
            if role == "assistant":
                if isinstance(content, str):
                    content = [{"type": "output_text", "text": content, "annotations": []}]
                base = {"type": "message", "role": role, "content": content}
                out.append(
                    {"id": item.get("id") or _digest_id("msg", i, base), **base, "status": "completed"}
                )
                continue
            if isinstance(content, str):
                content = [{"type": "input_text", "text": content}]
            base = {"type": "message", "role": role, "content": content}
            out.append({"id": _digest_id("msg", i, base), **base, "status": "completed"})
        elif t in ("function_call", "function_call_output"):
            prefix = "fc" if t == "function_call" else "fco"
            base = {k: v for k, v in item.items() if k not in ("id", "status")}
            out.append({"id": item.get("id") or _digest_id(prefix, i, base), **base, "status": "completed"})
        else:
            out.append(item)
    return out


def replayable(items: list[Any]) -> list[Any]:
    """Stored items as a backend that stores nothing can take them back."""
    out: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        t = item.get("type")
        if t == "message" and item.get("role") != "assistant":
            out.append({k: v for k, v in item.items() if k != "id"})
        elif t == "reasoning" and not item.get("encrypted_content"):
            continue
        else:
            out.append(item)
    return out


def _input_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise type_error("input", "a string or an array of input items")
    return value


# ---- records ----------------------------------------------------------------------------


async def _record(
    store: ConversationStore, tenant: str, rid: Any, missing: GatewayError
) -> tuple[dict[str, Any], int]:
    """The stored record of ``rid`` for ``tenant`` and its size; ``missing`` when there is none."""
    if not isinstance(rid, str) or not _ID.match(rid):
        raise missing
    raw = await store.get(tenant, rid)
    if raw is None:
        raise missing
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise missing from None
    if not isinstance(record, dict):
        raise missing
    return record, len(raw)


def _too_large(rid: str, record: dict[str, Any], store: ConversationStore, param: str | None) -> GatewayError:
    return invalid(
        f"response '{rid}' was not kept whole: its conversation ({record['too_large']} bytes) is larger "
        f"than this gateway keeps ({store.max_entry_bytes} bytes); start a new conversation, sending the "
        "items it needs in 'input'",
        param,
    )


async def expand(store: ConversationStore, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
    """``previous_response_id`` resolved: the stored conversation, then this request's input."""
    for key, why in _UNSUPPORTED.items():
        if body.get(key) not in (None, False):
            raise invalid(f"'{key}': {why}", key)
    prev = body.get("previous_response_id")
    if prev is None:
        return body
    if not isinstance(prev, str) or not prev:
        raise type_error("previous_response_id", "a non-empty string")
    missing = invalid(f"{PREVIOUS_NOT_FOUND} '{prev}' not found.", "previous_response_id")
    record, size = await _record(store, tenant, prev, missing)
    if "too_large" in record:
        raise _too_large(prev, record, store, "previous_response_id")
    new = _input_list(body.get("input"))
    added = len(orjson.dumps(new)) if new else 0
    if size + added > store.max_entry_bytes:
        raise invalid(
            f"the conversation continued from '{prev}' would hold {size + added} bytes, more than this "
            f"gateway keeps ({store.max_entry_bytes} bytes); start a new conversation, sending the items "
            "it needs in 'input'",
            "previous_response_id",
        )
    return {**body, "input": replayable(record.get("items") or []) + new}


class StoredResponseKeeper(ResponseKeeper):
    """Keeps the answer (the terminal event's response, or the JSON body) and the input it answered."""

    __slots__ = ("body", "final", "parts", "reader", "store", "tenant")

    def __init__(self, store: ConversationStore, tenant: str, body: dict[str, Any], stream: bool):
        self.store = store
        self.tenant = tenant
        self.body = body
        self.reader = SSEReader() if stream else None
        self.parts: list[bytes] = []
        self.final: str | None = None  # a stream's terminal event data

    def observe(self, data: bytes) -> None:
        if self.reader is None:
            if data:
                self.parts.append(data)
            return
        for ev in self.reader.feed(data):
            if ev.event in _TERMINAL:
                self.final = ev.data

    def _response(self) -> dict[str, Any] | None:
        if self.reader is not None:
            for ev in self.reader.close():
                if ev.event in _TERMINAL:
                    self.final = ev.data
            obj = orjson.loads(self.final) if self.final is not None else None
            obj = obj.get("response") if isinstance(obj, dict) else None
        else:
            obj = orjson.loads(b"".join(self.parts))
        if not isinstance(obj, dict) or obj.get("object") != "response" or not isinstance(obj.get("id"), str):
            return None
        return obj

    async def keep(self, status: int) -> None:
        if status != 200:
            return
        try:
            resp = self._response()
            if resp is None or not _ID.match(resp["id"]):
                return
            # A Responses backend's answer echoes what it was sent; kept, it says what the client asked.
            resp["store"] = True
            resp["previous_response_id"] = self.body.get("previous_response_id")
            inputs = normalize(_input_list(self.body.get("input")))
            output: list[Any] = resp["output"] if isinstance(resp.get("output"), list) else []
            # The output is kept once, as the conversation's last items.
            record = orjson.dumps(
                {"response": {**resp, "output": None}, "items": inputs + output, "inputs": len(inputs)}
            )
            limit, size = self.store.max_entry_bytes, len(record)
            if size > limit:
                small = orjson.dumps({"response": resp, "too_large": size})
                record = small if len(small) <= limit else orjson.dumps({"too_large": size})
                metrics.child(metrics.CONVERSATIONS, "put", "too_large").inc()
                log.info("response %s kept without its conversation: %d bytes > %d", resp["id"], size, limit)
            await self.store.put(self.tenant, resp["id"], record)
        except StoreUnavailable:
            pass  # counted and logged by the store; the client has its answer, a next turn gets a 503
        except Exception:
            log.exception("could not keep a response")


def keeper(
    store: ConversationStore, tenant: str, body: dict[str, Any], stream: bool
) -> ResponseKeeper | None:
    """``store`` defaults to true in the API: every answer is kept unless the client says not to."""
    if body.get("store") is False:
        return None
    return StoredResponseKeeper(store, tenant, body, stream)


# ---- GET / DELETE ----------------------------------------------------------------------------


def _not_found(rid: str) -> GatewayError:
    return GatewayError("not_found", f"Response with id '{rid}' not found.")


async def serve(store: ConversationStore, tenant: str, call: ClientCall) -> tuple[int, Any]:
    rid = call.resource or ""
    query = parse_qs(call.query)
    if call.action == "delete":
        if not _ID.match(rid) or not await store.delete(tenant, rid):
            raise _not_found(rid)
        return 200, {"id": rid, "object": "response", "deleted": True}
    if query.get("stream", ["false"])[-1] == "true":
        raise invalid("streaming a stored response again is not supported by this gateway", "stream")
    record, _ = await _record(store, tenant, rid, _not_found(rid))
    if call.action == "get":
        if "response" not in record:
            raise _too_large(rid, record, store, None)
        resp = record["response"]
        if resp.get("output") is None and isinstance(record.get("items"), list):
            resp["output"] = record["items"][record.get("inputs", 0) :]
        return 200, resp
    if "too_large" in record:
        raise _too_large(rid, record, store, None)
    return 200, _page(record["items"][: record.get("inputs", 0)], query)


def _page(items: list[Any], query: dict[str, list[str]]) -> dict[str, Any]:
    """A cursor page of input items: ``limit`` (1-100, default 20), ``order`` (desc by default), ``after``."""
    raw_limit = query.get("limit", ["20"])[-1]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise invalid("'limit' must be an integer from 1 to 100", "limit")
    order = query.get("order", ["desc"])[-1]
    if order not in ("asc", "desc"):
        raise invalid("'order' must be 'asc' or 'desc'", "order")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after", [None])[-1]
    if after is not None:
        ids = [i.get("id") if isinstance(i, dict) else None for i in ordered]
        if after not in ids:
            raise invalid(f"'after': no item with id '{after}' in this response's input", "after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[: int(raw_limit)]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": len(ordered) > len(data),
    }
