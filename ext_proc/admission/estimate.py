"""Fast token estimates for admission: no tokenizer on the data path.

Input: characters of every string in the request body (messages, system
prompt, tool definitions...) divided by ``CHARS_PER_TOKEN``, plus a small
per-message overhead; inline media count a flat ``MEDIA_TOKENS`` instead of
their base64 size. Dialect-agnostic: it walks the parsed JSON, skipping the
keys that are not prompt text. Accuracy and cost are measured in README
("Budgets") and ``tests/test_admission_units.py``.

Output: the request's own max output tokens (times ``n`` choices), else the
model's configured reservation.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role, separators
MEDIA_TOKENS = 1_000  # an image/audio/file part, whatever its encoded size
_MEDIA_KEYS = frozenset({"image_url", "input_audio", "file", "inline_data", "inlineData", "file_data",
                         "fileData", "source"})
_SKIP_KEYS = frozenset({"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n",
                        "temperature", "top_p", "top_k", "seed", "metadata", "user", "role", "type",
                        "generationConfig", "generation_config", "safetySettings", "safety_settings"})


def _chars(v: Any) -> tuple[int, int]:
    """(characters of text, flat media tokens) below ``v``."""
    if isinstance(v, str):
        return len(v), 0
    chars = media = 0
    if isinstance(v, dict):
        for k, item in v.items():
            if k in _SKIP_KEYS:
                continue
            if k in _MEDIA_KEYS and not isinstance(item, str):
                media += MEDIA_TOKENS
                continue
            c, m = _chars(item)
            chars += c
            media += m
    elif isinstance(v, list):
        for item in v:
            c, m = _chars(item)
            chars += c
            media += m
    return chars, media


def input_tokens(body: dict[str, Any]) -> int:
    chars, media = _chars(body)
    turns = body.get("messages") or body.get("contents") or ()
    count = len(turns) if isinstance(turns, list) else 0
    return chars // CHARS_PER_TOKEN + media + MESSAGE_OVERHEAD * count + 1


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def output_tokens(body: dict[str, Any], default: int) -> int:
    """Max output tokens the request may produce (all choices)."""
    gen = body.get("generationConfig") or body.get("generation_config")
    if isinstance(gen, dict):
        cap = _positive_int(gen.get("maxOutputTokens") or gen.get("max_output_tokens"))
        n = _positive_int(gen.get("candidateCount") or gen.get("candidate_count")) or 1
    else:
        cap = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
        n = _positive_int(body.get("n")) or 1
    return (cap or default) * n
