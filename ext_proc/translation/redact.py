"""Credentials out of provider error text, before any of it reaches a client.

A provider that echoes the key it received ("Incorrect API key provided:
sk-...") would otherwise put the operator's key into a client's response: the
gateway sends provider error messages on (translated, or untouched for a
client of the same dialect). Every such text passes through ``Redactor``,
built once per config with the provider keys the gateway holds
(``GatewayState.redact``); ``request/responses.py`` applies it wherever a
provider's error reaches a client, in every shape (error body, in-stream error
event, same-dialect pass-through).

What goes: the exact configured keys, and whatever looks like a credential
whoever it belongs to: ``sk-...`` keys, ``AIza...`` keys, the token after
``Bearer``/``Basic``, ``key=``/``token=`` query values, hex runs of 32+
characters and base64-like runs of 24+ that mix upper case, lower case and
digits. Over-redaction (a long request id) is the accepted price.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

MARK = "[REDACTED]"
MIN_KEY = 6  # configured keys shorter than this are not searched for (they would match ordinary text)

_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_QUERY = re.compile(r"(?i)([?&](?:key|api[_-]?key|access_token|token)=)[^&\s\"'<>\\]+")
_PREFIXED = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{20,})")
_HEX = re.compile(r"\b[0-9a-fA-F]{32,}\b")
_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_MAX_WALK = 64  # error bodies are shallow; deeper parts are redacted as text


def _looks_random(m: re.Match[str]) -> str:
    t = m.group(0)
    mixed = any(c.isupper() for c in t) and any(c.islower() for c in t) and any(c.isdigit() for c in t)
    return MARK if mixed else t


class Redactor:
    """``redactor(text)``: ``text`` without anything that looks like a credential."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        exact = sorted({k for k in keys if len(k) >= MIN_KEY}, key=len, reverse=True)
        self._keys = re.compile("|".join(re.escape(k) for k in exact)) if exact else None

    def __call__(self, text: str) -> str:
        if self._keys is not None:
            text = self._keys.sub(MARK, text)
        text = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MARK}", text)
        text = _QUERY.sub(lambda m: m.group(1) + MARK, text)
        text = _PREFIXED.sub(MARK, text)
        text = _HEX.sub(MARK, text)
        return _TOKEN.sub(_looks_random, text)

    def value(self, value: Any, depth: int = 0) -> Any:
        """Every string (keys included) in a JSON value, redacted; ``value`` itself when none changed."""
        if isinstance(value, str):
            return self(value)
        if depth >= _MAX_WALK and isinstance(value, dict | list):
            raise _TooDeep
        if isinstance(value, dict):
            out: Any = {self(k): self.value(v, depth + 1) for k, v in value.items()}
        elif isinstance(value, list):
            out = [self.value(v, depth + 1) for v in value]
        else:
            return value
        return value if out == value else out

    def body(self, raw: bytes) -> bytes:
        """An error body as a client may see it: JSON keeps its shape (strings
        redacted), anything else is redacted as text. ``raw`` itself when clean."""
        try:
            obj = orjson.loads(raw)
            out = self.value(obj)
            return raw if out is obj else orjson.dumps(out)
        except (orjson.JSONDecodeError, _TooDeep, orjson.JSONEncodeError):
            # Not JSON, or too deep to walk: the text itself (the patterns never span a quote).
            text = raw.decode("utf-8", "replace")
            clean = self(text)
            return raw if clean == text else clean.encode()


class _TooDeep(Exception):
    pass
