"""docs/mapping.md is generated from the codecs (``tests/mapping_probes.py``): it fails when stale,
and a few of its cells are asserted outright so the probes themselves can be seen to work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mapping_probes import ANTHROPIC, GEMINI, OPENAI, PROBES, Probe, mapping_markdown, outcome

DOC = Path(__file__).resolve().parent.parent / "docs" / "mapping.md"


def test_mapping_doc_is_generated() -> None:
    assert DOC.read_text() == mapping_markdown(), (
        "docs/mapping.md is stale: run python -m tests.mapping_probes > docs/mapping.md"
    )


def _probe(probes: list[Probe], field: str) -> Probe:
    return next(p for p in probes if p.field == field)


@pytest.mark.parametrize(
    ("client", "probes", "field", "target", "expected"),
    [
        ("openai", OPENAI, "temperature", "gemini", "→ `generationConfig.temperature`"),
        ("openai", OPENAI, "user", "gemini", "dropped"),
        ("openai", OPENAI, "user", "anthropic", "→ `metadata.user_id`"),
        ("openai", OPENAI, "temperature", "openai", "as sent"),
        ("anthropic", ANTHROPIC, "max_tokens above the model's output cap (10000000)", "gemini", "`65536`"),
        (
            "anthropic",
            ANTHROPIC,
            "tools[].strict (closed schema)",
            "openai",
            "`tools[].function.strict`: `true`",
        ),
        ("gemini", GEMINI, "safetySettings", "anthropic", "**refused**: 'safetySettings'"),
        ("gemini", GEMINI, "generationConfig.stopSequences (6)", "openai_responses", "accepts at most 4"),
    ],
)
def test_probe_outcomes(client: str, probes: list[Probe], field: str, target: str, expected: str) -> None:
    assert expected in outcome(client, target, _probe(probes, field))


def test_every_probe_field_is_unique() -> None:
    for probes in PROBES.values():
        fields = [p.field for p in probes]
        assert len(fields) == len(set(fields))
