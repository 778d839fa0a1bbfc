"""Field validators shared by the dialect codecs: one wording for every dialect's 400s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from ..errors import GatewayError, invalid


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
