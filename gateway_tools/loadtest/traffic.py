"""What the load generator sends: a seeded mix of dialects, models, streaming, prompt sizes and tenants.

Each request is built the way that dialect's official SDK sends it (path, auth
header, body shape), so the gateway does the same work as under real traffic.
Output tokens are read back from the response's own usage fields (streamed or
not), so tokens per second need no tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

DIALECTS = ("openai", "anthropic", "gemini")
ANTHROPIC_VERSION = "2023-06-01"
_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
)


def parse_weights(spec: str, what: str) -> dict[str, float]:
    """``"a=3,b=1"`` (or ``"a,b"`` for equal weights) -> ``{"a": 3.0, "b": 1.0}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, weight = part.partition("=")
        try:
            w = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"{what}: weight of '{name}' is not a number: {weight!r}") from None
        if w < 0:
            raise ValueError(f"{what}: weight of '{name}' is negative")
        out[name.strip()] = w
    if not out or sum(out.values()) <= 0:
        raise ValueError(f"{what}: needs at least one entry with a positive weight")
    return out


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    api_key: str


@dataclass(frozen=True, slots=True)
class Planned:
    """One request to send, with the labels the report groups by."""

    dialect: str
    model: str
    stream: bool
    prompt_words: int
    tenant: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Mix:
    """Weighted choices; the same seed gives the same sequence of requests."""

    models: dict[str, float]
    dialects: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DIALECTS, 1.0))
    stream_fraction: float = 0.5
    prompt_words: dict[int, float] = field(default_factory=lambda: {8: 6.0, 64: 3.0, 256: 1.0})
    tenants: list[tuple[Tenant, float]] = field(default_factory=list)
    max_tokens: int = 1024
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.dialects) - set(DIALECTS)
        if unknown:
            raise ValueError(f"unknown dialects: {', '.join(sorted(unknown))} (known: {', '.join(DIALECTS)})")
        if not 0.0 <= self.stream_fraction <= 1.0:
            raise ValueError("stream fraction must be between 0 and 1")
        if not self.tenants:
            self.tenants = [(Tenant("anonymous", ""), 1.0)]
        self._rng = random.Random(self.seed)

    def _pick(self, weights: dict[Any, float]) -> Any:
        return self._rng.choices(list(weights), weights=list(weights.values()))[0]

    def next(self, tenant: Tenant | None = None) -> Planned:
        """The next request; ``tenant`` forces one (the spike scenario's burst)."""
        if tenant is None:
            tenant = self._rng.choices([t for t, _ in self.tenants], weights=[w for _, w in self.tenants])[0]
        dialect = self._pick(self.dialects)
        model = self._pick(self.models)
        stream = self._rng.random() < self.stream_fraction
        words = self._pick(self.prompt_words)
        text = " ".join(self._rng.choice(_WORDS) for _ in range(words))
        method, path, headers, body = build_request(
            dialect, model, stream, text, tenant.api_key, self.max_tokens
        )
        return Planned(dialect, model, stream, words, tenant.name, method, path, headers, body)


def build_request(
    dialect: str, model: str, stream: bool, text: str, api_key: str, max_tokens: int
) -> tuple[str, str, dict[str, str], bytes]:
    """Method, path, headers and body of a one-turn chat request in ``dialect``."""
    headers = {"content-type": "application/json"}
    if dialect == "openai":
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
        }
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return "POST", "/v1/chat/completions", headers, orjson.dumps(body)
    if dialect == "anthropic":
        body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
        if stream:
            body["stream"] = True
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if api_key:
            headers["x-api-key"] = api_key
        return "POST", "/v1/messages", headers, orjson.dumps(body)
    if dialect == "gemini":
        body = {
            "contents": [{"role": "user", "parts": [{"text": text}]}],
            "generationConfig": {"maxOutputTokens": max_tokens},
        }
        path = f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
        if api_key:
            headers["x-goog-api-key"] = api_key
        return "POST", path, headers, orjson.dumps(body)
    raise ValueError(f"unknown dialect {dialect!r}")


def _usage_output(obj: Any) -> int | None:
    """Output tokens in one response object or stream event, in any dialect."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        for key in ("completion_tokens", "output_tokens"):
            if isinstance(usage.get(key), int):
                return usage[key]
    meta = obj.get("usageMetadata")
    if isinstance(meta, dict) and isinstance(meta.get("candidatesTokenCount"), int):
        return meta["candidatesTokenCount"]
    message = obj.get("message")  # Anthropic message_start
    if isinstance(message, dict):
        return _usage_output(message)
    return None


def output_tokens(body: bytes, stream: bool) -> int:
    """Output tokens the response reports (the last figure in a stream is the total)."""
    if not stream:
        try:
            return _usage_output(orjson.loads(body)) or 0
        except orjson.JSONDecodeError:
            return 0
    last = 0
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            found = _usage_output(orjson.loads(data))
        except orjson.JSONDecodeError:
            continue
        if found is not None:
            last = found
    return last
