"""JSON-schema walks shared by the codecs: the structured-output and strict-tool rules of
the providers are rules about every object schema inside a schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Keywords whose value is a schema, a list of schemas, or a name -> schema map.
_ONE = ("items", "not", "additionalItems", "contains", "if", "then", "else")
_MANY = ("anyOf", "allOf", "oneOf", "prefixItems")
_NAMED = ("properties", "$defs", "definitions", "patternProperties")
# Deeper than this is not a schema a provider takes; the walk stops (and says so).
MAX_SCHEMA_DEPTH = 32


def subschemas(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The schemas directly inside ``schema``."""
    for key in _ONE:
        if isinstance(schema.get(key), dict):
            yield schema[key]
    for key in _MANY:
        if isinstance(schema.get(key), list):
            yield from (s for s in schema[key] if isinstance(s, dict))
    for key in _NAMED:
        if isinstance(schema.get(key), dict):
            yield from (s for s in schema[key].values() if isinstance(s, dict))


def is_object_schema(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    return (
        t == "object" or (isinstance(t, list) and "object" in t) or isinstance(schema.get("properties"), dict)
    )


def object_schemas(schema: Any) -> Iterator[dict[str, Any] | None]:
    """Every object schema in ``schema`` (itself included), depth first; a None for a
    schema nested deeper than ``MAX_SCHEMA_DEPTH`` (callers treat it as failing their rule)."""
    if not isinstance(schema, dict):
        return
    stack: list[tuple[dict[str, Any], int]] = [(schema, 0)]
    while stack:
        s, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            yield None
            return
        if is_object_schema(s):
            yield s
        stack.extend((sub, depth + 1) for sub in subschemas(s))


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with ``additionalProperties: false`` on every object schema that
    does not say otherwise (what some providers' structured outputs require)."""

    # The same subschemas as ``subschemas`` finds, so that ``all_closed(closed(s))`` holds.
    def walk(s: Any, depth: int) -> Any:
        if not isinstance(s, dict) or depth > MAX_SCHEMA_DEPTH:
            return s
        out: dict[str, Any] = {}
        for key, value in s.items():
            if key in _NAMED and isinstance(value, dict):
                out[key] = {k: walk(v, depth + 1) for k, v in value.items()}
            elif key in _MANY and isinstance(value, list):
                out[key] = [walk(v, depth + 1) for v in value]
            elif key in _ONE:
                out[key] = walk(value, depth + 1)
            else:
                out[key] = value
        if is_object_schema(out) and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out

    result = walk(schema, 0)
    return result if isinstance(result, dict) else schema


def all_closed(schema: Any) -> bool:
    """Is every object schema in ``schema`` closed (``additionalProperties: false``)?"""
    return all(s is not None and s.get("additionalProperties") is False for s in object_schemas(schema))


def all_required(schema: Any) -> bool:
    """Does every object schema in ``schema`` list all its properties as required?"""
    for s in object_schemas(schema):
        if s is None:
            return False
        props = s.get("properties")
        required = s.get("required") or []
        if isinstance(props, dict) and (
            not isinstance(required, list) or set(props) - {r for r in required if isinstance(r, str)}
        ):
            return False
    return True
