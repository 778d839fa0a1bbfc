"""Field validators shared by the dialect codecs: one wording for every dialect's errors.

Two kinds of input, two kinds of fault. A client's request that is wrongly
typed is a 400 naming the field (``type_error``). A provider's answer that is
wrongly typed is the provider's fault (``bad_answer``: 502, a failed attempt
that is failed over where possible); the ``answer_*`` readers below type-check
what a codec reads from an answer, so nothing but ``GatewayError`` leaves a
codec whatever a provider sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from ..errors import GatewayError, invalid

# Request bodies nested deeper than this are refused (400) when the body is
# parsed: every later step then stays far from its own limit (orjson writes at
# most 254 levels, a translated body adds a few, Python recursion stops near
# 1000). No chat request needs more: a tool schema is a handful of levels.
MAX_DEPTH = 64

# Token counts above this are not counts (usage near 2**64 was seen from a
# fuzzer, not a provider): far beyond any real request, small enough that sums
# stay exact and serialisable.
MAX_COUNT = 2**40


def type_error(path: str, what: str) -> GatewayError:
    return invalid(f"'{path}' must be {what}", path)


def objects(items: list[Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The elements of the array at ``path`` with their own paths (``path[i]``),
    in order; the first one that is not an object is a 400 naming it."""
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise type_error(item_path, "an object")
        yield item_path, item


def opt_num(body: dict[str, Any], key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise type_error(key, "a number")
    return v


def opt_int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise type_error(key, "an integer")
    return v


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        nxt = body.get(k)
        if not isinstance(nxt, dict):
            nxt = body[k] = {}
        body = nxt
    body[keys[-1]] = value


def nonempty_str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise type_error(path, "a non-empty string")
    return v


def data_url(value: Any, path: str) -> tuple[str | None, str]:
    """A base64 ``data:`` URL at ``path`` -> (media type or None, base64 data); anything
    else is a 400 naming ``path``."""
    url = nonempty_str(value, path)
    comma = url.find(",")
    header = url[5:comma].split(";") if url.startswith("data:") and comma > 0 else []
    if "base64" not in header[1:]:
        raise invalid(f"'{path}' must be a base64 data URL", path)
    return header[0].strip().lower() or None, url[comma + 1 :]


def args_object(arguments: str, path: str) -> dict[str, Any]:
    """IR tool-call arguments (JSON text) -> the object a backend's tool input must be."""
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise invalid(f"'{path}' must be a JSON object, got invalid JSON", path) from None
    if not isinstance(value, dict):
        raise invalid(f"'{path}' must be a JSON object", path)
    return value


def error_json(body: bytes) -> Any:
    """A backend error body as JSON, or None: error bodies are often not JSON at all."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Are arrays/objects nested more than ``limit`` levels in ``value``? (Level by level, no recursion.)"""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        nxt: list[Any] = []
        for v in level:
            children = v.values() if isinstance(v, dict) else v
            nxt.extend(c for c in children if isinstance(c, dict | list))
        if not nxt:
            return False
        level = nxt
    return True


def check_depth(value: Any, raw: bytes | None = None) -> None:
    """Refuse a request body nested deeper than ``MAX_DEPTH`` (400 naming the limit).
    ``raw``, the body's bytes, lets most bodies skip the walk: fewer brackets than
    the limit cannot nest deeper than it."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    if _deeper_than(value, MAX_DEPTH):
        raise too_deep()


def too_deep() -> GatewayError:
    return invalid(
        f"the request body nests arrays and objects more than {MAX_DEPTH} levels deep, the gateway's limit"
    )


# ---- provider answers -----------------------------------------------------------------


def invalid_answer(detail: str) -> GatewayError:
    """A provider's 200 that is not an answer: the provider's fault, a failed attempt (502)."""
    return GatewayError("api_error", f"the provider's answer was invalid: {detail}", status=502)


def bad_answer(path: str, what: str) -> GatewayError:
    """A field of a provider's answer that is not what its API documents."""
    return invalid_answer(f"'{path}' must be {what}")


def answer_obj(v: Any, path: str) -> dict[str, Any]:
    """An optional object of an answer (absent or null: empty)."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad_answer(path, "an object")
    return v


def answer_list(v: Any, path: str) -> list[Any]:
    """An optional array of an answer (absent or null: empty)."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise bad_answer(path, "an array")
    return v


def answer_objects(v: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of an optional array of an answer, with their paths."""
    for i, item in enumerate(answer_list(v, path)):
        if not isinstance(item, dict):
            raise bad_answer(f"{path}[{i}]", "an object")
        yield f"{path}[{i}]", item


def answer_str(v: Any, path: str, default: str = "") -> str:
    """An optional string of an answer (absent or null: ``default``)."""
    if v is None:
        return default
    if not isinstance(v, str):
        raise bad_answer(path, "a string")
    return v


def answer_opt_str(v: Any, path: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise bad_answer(path, "a string")
    return v


def answer_int(v: Any, path: str, default: int = 0) -> int:
    """An optional integer of an answer (an index, a code)."""
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or abs(v) > MAX_COUNT:
        raise bad_answer(path, "an integer")
    return v


def answer_count(v: Any, path: str) -> int:
    """A token count of an answer (absent or null: 0)."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
        raise bad_answer(path, f"a token count (an integer from 0 to {MAX_COUNT})")
    return v


def answer_json(value: Any, path: str) -> str:
    """A JSON value of an answer (tool-call input) as JSON text."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise bad_answer(path, "JSON nested at most 254 levels deep") from None
