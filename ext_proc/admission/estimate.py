"""Fast token estimates for admission: no tokenizer on the data path.

Input: characters of every string in the request body (messages, system
prompt, tool definitions...) divided by ``CHARS_PER_TOKEN``, plus a small
per-message overhead; inline media count a flat ``MEDIA_TOKENS`` instead of
their base64 size. It walks the parsed JSON, skipping the keys that are not
prompt text; which keys those are, and which hold media or turns, each dialect
declares (``Dialect.setting_keys``, ``media_keys``, ``turn_keys``). Accuracy
and cost are measured in README ("Budgets") and ``tests/test_admission_units.py``.

Output: the request's own max output tokens (times the answers it asks for),
as its dialect reads them, else the model's configured reservation; either
clamped to what the model can produce (its max output in the capability
catalog), as the request path clamps what it sends.
"""

from __future__ import annotations

from typing import Any

from ..dialects import DIALECTS, Dialect
from ..translation import fields

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role, separators
MEDIA_TOKENS = 1_000  # an image/audio/file part, whatever its encoded size
# The walk is dialect-agnostic: a key one dialect uses for settings or media is that everywhere.
_MEDIA_KEYS = frozenset().union(*(d.media_keys for d in DIALECTS.values()))
_SKIP_KEYS = frozenset().union(*(d.setting_keys for d in DIALECTS.values()))
_TURN_KEYS = tuple(dict.fromkeys(k for d in DIALECTS.values() for k in d.turn_keys))
# The request phase refuses bodies nested deeper (400) before admission; the walk
# stops there anyway, so no recursion limit is ever near.
MAX_DEPTH = fields.MAX_DEPTH


def _chars(v: Any, depth: int = 0) -> tuple[int, int]:
    """(characters of text, flat media tokens) below ``v``."""
    if isinstance(v, str):
        return len(v), 0
    chars = media = 0
    if depth >= MAX_DEPTH:
        return chars, media
    if isinstance(v, dict):
        for k, item in v.items():
            if k in _SKIP_KEYS:
                continue
            # Inline media: an object, or a data URL (dialects that send images as a string).
            if k in _MEDIA_KEYS and (not isinstance(item, str) or item.startswith("data:")):
                media += MEDIA_TOKENS
                continue
            c, m = _chars(item, depth + 1)
            chars += c
            media += m
    elif isinstance(v, list):
        for item in v:
            c, m = _chars(item, depth + 1)
            chars += c
            media += m
    return chars, media


def input_tokens(body: dict[str, Any], dialect: Dialect | None = None) -> int:
    chars, media = _chars(body)
    keys = dialect.turn_keys if dialect is not None else _TURN_KEYS
    turns = next((body[k] for k in keys if body.get(k)), ())
    count = len(turns) if isinstance(turns, list) else 0
    return chars // CHARS_PER_TOKEN + media + MESSAGE_OVERHEAD * count + 1


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def output_tokens(
    body: dict[str, Any], default: int, dialect: Dialect | None = None, cap: int | None = None
) -> int:
    """Max output tokens the request may produce (all answers), each answer at most
    ``cap`` (the model's max output, when known). Without a dialect, every dialect is
    asked and the first that finds a cap answers."""
    cap_: int | None = None
    n = 1
    for d in (dialect,) if dialect is not None else DIALECTS.values():
        raw_cap, raw_n = d.requested_output(body)
        cap_, n = _positive_int(raw_cap), _positive_int(raw_n) or 1
        if cap_ is not None:
            break
    asked = cap_ or default
    return (min(asked, cap) if cap is not None else asked) * n
