"""The dialect is the unit of extension: outside ``ext_proc/dialects/``, no
module of the request-path package names a dialect or one of its wire keys.

The words come from the registry itself (each dialect's name, key and
credential headers, provider response headers, turn and media keys), plus the
distinctive wire keys a pass-through rule would otherwise be written with, so
a new dialect is covered by its own declaration.
"""

from __future__ import annotations

import re
from pathlib import Path

from ext_proc.dialects import DIALECTS

PACKAGE = Path(__file__).resolve().parent.parent / "ext_proc"
OUTSIDE = ("dialects/",)  # the only place a dialect is named
# Generic words a dialect also uses, which every HTTP or JSON module may say.
GENERIC = {
    "authorization",
    "messages",
    "source",
    "file",
    "model",
    "stream",
    "role",
    "type",
    "metadata",
    "user",
    "n",
    "seed",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "request-id",
    "input",
}
EXTRA_WIRE_KEYS = {
    "stream_options",
    "include_usage",
    "generationConfig",
    "message_stop",
    "[DONE]",
    "finishReason",
    "usageMetadata",
    "choices",
    "max_completion_tokens",
    "x-goog",
    "claude",
    "gpt-",
    "previous_response_id",
    "response.completed",
    "function_call_output",
    "input_items",
}


def forbidden_words() -> set[str]:
    words = set(EXTRA_WIRE_KEYS)
    for d in DIALECTS.values():
        words.add(d.name)
        words.update(d.key_headers, d.credential_header_names, d.provider_response_headers, d.version_headers)
        words.update(d.turn_keys, d.media_keys)
        words.update({"openai", "anthropic", "gemini"} & {d.name})
    # The gateway sends x-ratelimit-* to every client for its own budgets (admission.headers).
    return {w for w in words - GENERIC if not w.startswith("x-ratelimit-")}


def request_path_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not str(p.relative_to(PACKAGE)).startswith(OUTSIDE)]


def test_no_dialect_knowledge_outside_the_dialect_packages() -> None:
    words = forbidden_words()
    assert {"openai", "anthropic", "gemini", "x-api-key", "x-goog-api-key", "anthropic-version"} <= words
    pattern = re.compile(
        "|".join(rf"(?<![\w.-]){re.escape(w)}(?![\w-])" for w in sorted(words, key=len, reverse=True)),
        re.IGNORECASE,
    )
    found = []
    for path in request_path_modules():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            text = line.replace("type.googleapis.com", "").replace("google.protobuf", "")
            for m in pattern.finditer(text):
                found.append(f"{path.relative_to(PACKAGE)}:{n}: {m.group(0)!r} in {line.strip()}")
    assert not found, "dialect knowledge outside ext_proc/dialects/:\n" + "\n".join(found)


def test_the_check_would_see_a_dialect_name(tmp_path: Path) -> None:
    """The pattern is not vacuous: the words it forbids are found where they stand."""
    words = forbidden_words()
    sample = 'if p.dialect == "anthropic":\n    headers["x-goog-api-key"] = key\n'
    hits = [w for w in words if re.search(rf"(?<![\w.-]){re.escape(w)}(?![\w-])", sample, re.IGNORECASE)]
    assert set(hits) >= {"anthropic", "x-goog-api-key"}
