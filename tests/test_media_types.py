"""Media types fitted to the target model (``catalog.limits``): one spelling per type for every
target, and a type the target does not take refused naming the client's part, or dropped with
``drop_unsupported`` (docs/catalog.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ext_proc.catalog import lookup
from ext_proc.catalog.caps import ModelCaps
from ext_proc.catalog.limits import clamp_to_model, media_rules
from ext_proc.dialects import get_dialect
from ext_proc.errors import GatewayError
from ext_proc.translation.media import ALIASES, MediaRules, normal_type

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
TARGETS = {
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-3.5-flash",
    "openai_responses": "gpt-5.5",
    "bedrock": "us.anthropic.claude-sonnet-4-6",
}


def _openai_image(media_type: str) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{PNG_B64}"}},
                ],
            }
        ],
    }


def build(client: str, target: str, body: dict[str, Any], drop: bool = False, caps: Any = "catalog") -> Any:
    """``body`` of a ``client`` request as built for ``target`` (the steps of ``request/plan.py``)."""
    codec = get_dialect(target).codec
    ir = get_dialect(client).codec.parse_request(copy.deepcopy(body), "m", False)
    model = TARGETS[target]
    found = lookup(target, model) if caps == "catalog" else caps
    default_max = clamp_to_model(ir, found, 1024, codec.media, drop, codec.dialect)
    return codec.build_request(ir, model, default_max_tokens=default_max, drop_unsupported=drop)


def test_image_jpg_goes_to_every_target_as_image_jpeg() -> None:
    body = _openai_image("image/jpg")
    ant = build("openai", "anthropic", body)["messages"][0]["content"][1]["source"]
    assert ant == {"type": "base64", "media_type": "image/jpeg", "data": PNG_B64}
    gem = build("openai", "gemini", body)["contents"][0]["parts"][1]
    assert gem == {"inlineData": {"mimeType": "image/jpeg", "data": PNG_B64}}
    resp = build("openai", "openai_responses", body)["input"][0]["content"][1]
    assert resp["image_url"] == f"data:image/jpeg;base64,{PNG_B64}"
    bed = build("openai", "bedrock", body)["messages"][0]["content"][1]
    assert bed == {"image": {"format": "jpeg", "source": {"bytes": PNG_B64}}}


def test_upper_case_and_parameters_are_spelled_as_providers_do() -> None:
    ant = build("openai", "anthropic", _openai_image("IMAGE/PNG"))["messages"][0]["content"][1]
    assert ant["source"]["media_type"] == "image/png"


def test_a_type_the_target_does_not_take_is_refused_naming_the_clients_part() -> None:
    body = _openai_image("image/heic")
    with pytest.raises(GatewayError) as e:
        build("openai", "anthropic", body)
    assert e.value.status == 400 and e.value.param == "messages[0].content[1]"
    assert "'messages[0].content[1]' is image type 'image/heic'" in e.value.message
    assert "the backend model 'claude-sonnet-4-6' does not accept" in e.value.message
    # Gemini takes HEIC; Bedrock's Converse does not (its ImageBlock formats).
    assert (
        build("openai", "gemini", body)["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "image/heic"
    )
    with pytest.raises(GatewayError, match="image type 'image/heic'"):
        build("openai", "bedrock", body)


def test_drop_unsupported_leaves_the_part_out() -> None:
    out = build("openai", "anthropic", _openai_image("image/heic"), drop=True)
    assert out["messages"][0]["content"] == "what is it?"


def test_an_unknown_model_falls_back_to_the_dialects_documented_types() -> None:
    with pytest.raises(GatewayError) as e:
        build("openai", "anthropic", _openai_image("image/bmp"), caps=None)
    assert "which an anthropic backend does not accept" in e.value.message
    assert e.value.param == "messages[0].content[1]"


def test_the_catalog_entry_narrows_the_dialect() -> None:
    only_png = ModelCaps(model="png-only", family="anthropic", image_types=("image/png",))
    assert media_rules(get_dialect("anthropic").codec.media, only_png).image_types == {"image/png"}
    with pytest.raises(GatewayError, match="the backend model 'png-only' does not accept"):
        build("openai", "anthropic", _openai_image("image/jpeg"), caps=only_png)
    build("openai", "anthropic", _openai_image("image/png"), caps=only_png)


def test_documents_are_checked_and_plain_text_always_goes() -> None:
    def doc(media_type: str) -> dict[str, Any]:
        part = {"type": "file", "file": {"filename": "a", "file_data": f"data:{media_type};base64,cHJvYmU="}}
        return {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}],
        }

    with pytest.raises(GatewayError) as e:
        build("openai", "anthropic", doc("text/csv"))
    assert "'messages[0].content[1]' is document type 'text/csv'" in e.value.message
    bed = build("openai", "bedrock", doc("text/csv"))["messages"][0]["content"][1]
    assert bed["document"]["format"] == "csv"  # Converse takes CSV documents
    ant = build("openai", "anthropic", doc("application/x-pdf"))["messages"][0]["content"][1]
    assert ant["source"]["media_type"] == "application/pdf"
    txt = build("openai", "anthropic", doc("text/plain; charset=utf-8"))["messages"][0]["content"][1]
    assert txt["source"] == {"type": "text", "media_type": "text/plain", "data": "probe"}


def test_images_in_tool_results_are_checked_too() -> None:
    body = {
        "model": "m",
        "max_tokens": 100,
        "tools": [{"name": "shot", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "here"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/gif", "data": PNG_B64},
                            },
                        ],
                    }
                ],
            },
        ],
    }
    # Gemini takes no GIF: the Anthropic client's own part is named.
    with pytest.raises(GatewayError) as e:
        build("anthropic", "gemini", body)
    assert e.value.param == "messages[2].content[0].content[1]"


def test_the_dialect_tables_are_the_documented_ones() -> None:
    media = {d: get_dialect(d).codec.media for d in ("openai", "anthropic", "gemini", "bedrock")}
    assert media["anthropic"] == MediaRules(
        frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"}),
        frozenset({"application/pdf", "text/plain"}),
    )
    assert media["gemini"].image_types == {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/heic",
        "image/heif",
    }
    assert media["openai"].image_types == {"image/png", "image/jpeg", "image/webp", "image/gif"}
    assert "image/jpg" not in media["bedrock"].image_types  # one spelling: normal_type maps it
    assert get_dialect("vertex_anthropic").codec.media == media["anthropic"]


@given(st.text(max_size=60))
def test_normal_type_is_total_and_idempotent(raw: str) -> None:
    once = normal_type(raw)
    assert normal_type(once) == once
    assert ";" not in once and once == once.strip() and once == once.lower()
    assert once not in ALIASES


@given(st.sampled_from(sorted(ALIASES)), st.sampled_from(["", "; q=1", " ;charset=x"]), st.booleans())
def test_aliases_map_whatever_their_case_and_parameters(alias: str, params: str, upper: bool) -> None:
    raw = (alias.upper() if upper else alias) + params
    assert normal_type(raw) == ALIASES[alias]
