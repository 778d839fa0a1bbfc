"""Issue 14's "bookkeeping refused" and "content the target can take, refused" classes, per
mapping: what each client dialect says, what each backend dialect receives.

Codec level (parse in the client's dialect, build for the backend's); the end-to-end proof with
the official SDKs is the conformance matrix's *structured* and *pdf* cells
(``tests/test_translation_matrix.py``) and ``test_parse_with_a_pydantic_model``
(``tests/test_responses_api.py``).
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext_proc.dialects import CODECS
from ext_proc.errors import GatewayError
from ext_proc.translation.fields import data_url
from ext_proc.translation.ir import ChatResponse, FilePart, TextPart, text_document, text_of
from ext_proc.translation.schema import all_closed, all_required, closed, object_schemas

BACKENDS = ("openai", "anthropic", "gemini", "openai_responses", "bedrock")
PDF = "JVBERi0xLjQK"  # "%PDF-1.4\n"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"type": "integer"}}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
OPEN_SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}
BASE = {
    "openai": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "anthropic": {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    "openai_responses": {"model": "m", "input": "hi"},
}


def parse(client: str, **extra: Any) -> Any:
    return CODECS[client].parse_request(copy.deepcopy({**BASE[client], **extra}), "m")


def build(backend: str, req: Any, drop: bool = False) -> dict[str, Any]:
    return CODECS[backend].build_request(req, "up", default_max_tokens=100, drop_unsupported=drop)


def refusal(backend: str, req: Any) -> GatewayError:
    with pytest.raises(GatewayError) as e:
        build(backend, req)
    assert (e.value.status, e.value.kind) == (400, "invalid_request")
    assert e.value.param and f"'{e.value.param}'" in e.value.message
    return e.value


# ---- bookkeeping -----------------------------------------------------------------------------------

END_USER = {
    "openai": lambda b: b.get("user"),
    "anthropic": lambda b: b.get("metadata", {}).get("user_id"),
    "gemini": lambda b: None,  # no such field: dropped
    "openai_responses": lambda b: b.get("user"),
    "bedrock": lambda b: b.get("requestMetadata", {}).get("user"),
}
BOOKKEEPING = {
    "openai": {
        "user": "u-1",
        "metadata": {"k": "v"},
        "store": True,
        "prompt_cache_key": "c",
        "service_tier": "auto",
    },
    "anthropic": {"metadata": {"user_id": "u-1"}, "service_tier": "auto"},
    "openai_responses": {
        "user": "u-1",
        "metadata": {"k": "v"},
        "store": False,
        "prompt_cache_key": "c",
        "prompt_cache_retention": "24h",
        "service_tier": "auto",
    },
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("client", list(BOOKKEEPING))
def test_bookkeeping_is_carried_or_dropped_never_refused(client: str, backend: str) -> None:
    """The end user maps to the target's equivalent (Gemini has none: dropped); request tags are dropped."""
    body = build(backend, parse(client, **BOOKKEEPING[client]))
    assert END_USER[backend](body) == (None if backend == "gemini" else "u-1")


@pytest.mark.parametrize("client", ["openai", "openai_responses"])
def test_safety_identifier_is_the_end_user(client: str) -> None:
    assert parse(client, safety_identifier="hash-1").user == "hash-1"
    assert parse(client, safety_identifier="hash-1", user="u").user == "u"  # user wins
    assert build("anthropic", parse(client, safety_identifier="hash-1"))["metadata"] == {"user_id": "hash-1"}


def test_prediction_is_dropped_and_neutral_modalities_pass() -> None:
    req = parse("openai", prediction={"type": "content", "content": "x"})
    for backend in BACKENDS:
        assert "prediction" not in build(backend, req)
    neutral = parse("gemini", generationConfig={"responseModalities": ["TEXT"]})
    assert neutral.unmapped == []
    images = parse("gemini", generationConfig={"responseModalities": ["TEXT", "IMAGE"]})
    assert refusal("openai", images).param == "generationConfig.responseModalities"


def test_a_bedrock_user_outside_its_alphabet_is_left_out() -> None:
    body = build("bedrock", parse("anthropic", metadata={"user_id": "jörg@example.com"}))
    assert "requestMetadata" not in body


# ---- structured output -----------------------------------------------------------------------------

FORMATS = {
    "openai": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "strict": True, "schema": SCHEMA},
        }
    },
    "anthropic": {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
    "gemini": {"generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}},
    "openai_responses": {
        "text": {"format": {"type": "json_schema", "name": "x", "strict": True, "schema": SCHEMA}}
    },
}
SCHEMA_SENT = {
    "openai": lambda b: b["response_format"]["json_schema"]["schema"],
    "anthropic": lambda b: b["output_config"]["format"]["schema"],
    "gemini": lambda b: b["generationConfig"]["responseJsonSchema"],
    "openai_responses": lambda b: b["text"]["format"]["schema"],
    "bedrock": lambda b: __import__("json").loads(
        b["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"]
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("client", list(FORMATS))
def test_a_json_schema_reaches_every_backend(client: str, backend: str) -> None:
    req = parse(client, **FORMATS[client])
    assert req.unmapped == []
    body = build(backend, req)
    assert SCHEMA_SENT[backend](body) == SCHEMA
    if backend == "openai":  # every dialect's schema output is enforced: strict where OpenAI's rules hold
        assert body["response_format"]["json_schema"]["strict"] is True
    if backend == "openai_responses":
        assert body["text"]["format"]["strict"] is True


def test_anthropic_gets_closed_objects_and_refuses_json_mode() -> None:
    req = parse(
        "openai", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": OPEN_SCHEMA}}
    )
    sent = build("anthropic", req)["output_config"]["format"]["schema"]
    assert sent == {**OPEN_SCHEMA, "additionalProperties": False}
    for backend in ("anthropic", "bedrock"):
        err = refusal(backend, parse("gemini", generationConfig={"responseMimeType": "application/json"}))
        assert err.param == "generationConfig.responseMimeType" and "without a schema" in err.message


def test_anthropic_output_config_keeps_its_other_keys_by_path() -> None:
    """``format`` is the structured output, ``effort`` a reasoning control (docs/reasoning.md);
    a key the IR has no place for stays unmapped by its path, and is refused elsewhere."""
    oc = {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "low", "task_budget": 1000}
    req = parse("anthropic", output_config=oc, max_tokens=4096)
    assert req.unmapped == ["output_config.task_budget"] and req.reasoning_effort == "low"
    out = build("anthropic", req)["output_config"]
    assert out["format"] == {"type": "json_schema", "schema": SCHEMA} and out["task_budget"] == 1000
    assert refusal("openai", req).param == "output_config.task_budget"


@pytest.mark.parametrize(
    "bad, param",
    [
        ({"format": {"type": "json_object"}}, "output_config.format.type"),
        ({"format": {"type": "json_schema"}}, "output_config.format.schema"),
        ({"format": "json"}, "output_config.format"),
        ("json", "output_config"),
    ],
)
def test_a_malformed_output_config_is_400_naming_it(bad: Any, param: str) -> None:
    with pytest.raises(GatewayError) as e:
        parse("anthropic", output_config=bad)
    assert (e.value.status, e.value.param) == (400, param)


@pytest.mark.parametrize(
    ("words", "sent"),
    [
        ("Reply in JSON please", {"type": "json_object"}),
        (
            "Reply please",
            {"type": "json_schema", "json_schema": {"name": "json_object", "schema": {"type": "object"}}},
        ),
    ],
)
def test_json_mode_towards_openai_needs_the_word_json(words: str, sent: dict[str, Any]) -> None:
    """OpenAI refuses JSON mode unless the messages say "json": without it the same request goes
    as an any-object schema (Chat Completions) / json_schema format (Responses)."""
    req = parse(
        "gemini",
        contents=[{"role": "user", "parts": [{"text": words}]}],
        generationConfig={"responseMimeType": "application/json"},
    )
    assert build("openai", req)["response_format"] == sent
    fmt = build("openai_responses", req)["text"]["format"]
    assert fmt["type"] == sent["type"]
    if sent["type"] == "json_schema":
        assert fmt == {
            "type": "json_schema",
            "name": "json_object",
            "schema": {"type": "object"},
            "strict": False,
        }


# ---- strict tools ----------------------------------------------------------------------------------


def _tool_strict(backend: str, body: dict[str, Any]) -> Any:
    return {
        "openai": lambda: body["tools"][0]["function"].get("strict"),
        "anthropic": lambda: body["tools"][0].get("strict"),
        "openai_responses": lambda: body["tools"][0]["strict"],
        "bedrock": lambda: body["toolConfig"]["tools"][0]["toolSpec"].get("strict"),
    }[backend]()


@pytest.mark.parametrize(
    ("schema", "openai_strict", "anthropic_strict"),
    [
        (SCHEMA, True, True),
        (OPEN_SCHEMA, False, None),
        ({**OPEN_SCHEMA, "additionalProperties": False}, False, True),
    ],
)
def test_strict_tools_are_carried_where_the_target_takes_the_schema(
    schema: dict[str, Any], openai_strict: bool, anthropic_strict: bool | None
) -> None:
    """OpenAI strict mode wants closed objects with every property required, Anthropic closed
    objects: a strict tool whose schema does not qualify goes unstrict rather than refused."""
    req = parse("anthropic", tools=[{"name": "f", "strict": True, "input_schema": schema}])
    assert req.tools[0].strict is True
    assert _tool_strict("openai", build("openai", req)) is openai_strict
    assert _tool_strict("openai_responses", build("openai_responses", req)) is openai_strict
    oreq = parse(
        "openai",
        tools=[{"type": "function", "function": {"name": "f", "strict": True, "parameters": schema}}],
    )
    assert _tool_strict("anthropic", build("anthropic", oreq)) is anthropic_strict
    # Converse's ToolSpecification.strict (bedrock-runtime service model): Claude's rule there too,
    # and read back when a failover attempt re-reads the Converse body.
    converse = build("bedrock", req)
    assert _tool_strict("bedrock", converse) is anthropic_strict
    assert CODECS["bedrock"].parse_request(converse, "m").tools[0].strict is anthropic_strict
    assert "strict" not in str(build("gemini", req)["tools"])  # no strict flag: the schema as is


def test_a_responses_backend_always_hears_strict() -> None:
    """The Responses API makes function tools strict by default: unsaid is false."""
    req = parse("anthropic", tools=[{"name": "f", "input_schema": SCHEMA}])
    assert build("openai_responses", req)["tools"][0]["strict"] is False


# ---- documents -------------------------------------------------------------------------------------

PDF_PARTS = {
    "openai": {
        "type": "file",
        "file": {"filename": "r.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
    },
    "anthropic": {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "r.pdf",
    },
    "gemini": {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
    "openai_responses": {
        "type": "input_file",
        "filename": "r.pdf",
        "file_data": f"data:application/pdf;base64,{PDF}",
    },
}


def with_part(client: str, part: dict[str, Any]) -> Any:
    if client == "gemini":
        return parse(client, contents=[{"role": "user", "parts": [{"text": "read"}, part]}])
    if client == "openai_responses":
        return parse(
            client, input=[{"role": "user", "content": [{"type": "input_text", "text": "read"}, part]}]
        )
    return parse(client, messages=[{"role": "user", "content": [{"type": "text", "text": "read"}, part]}])


def last_parts(backend: str, body: dict[str, Any]) -> list[Any]:
    if backend == "gemini":
        return body["contents"][-1]["parts"]
    if backend == "openai_responses":
        return body["input"][-1]["content"]
    return body["messages"][-1]["content"]


PDF_SENT = {
    "openai": lambda name: {
        "type": "file",
        "file": {"filename": name or "file", "file_data": f"data:application/pdf;base64,{PDF}"},
    },
    "anthropic": lambda name: {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        **({"title": name} if name else {}),
    },
    "gemini": lambda name: {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
    "openai_responses": lambda name: {
        "type": "input_file",
        **({"filename": name} if name else {}),
        "file_data": f"data:application/pdf;base64,{PDF}",
    },
    "bedrock": lambda name: {
        "document": {"format": "pdf", "name": "r" if name else "document-1", "source": {"bytes": PDF}}
    },
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("client", list(PDF_PARTS))
def test_a_pdf_reaches_every_backend_as_its_document(client: str, backend: str) -> None:
    req = with_part(client, PDF_PARTS[client])
    assert req.unmapped == []
    name = None if client == "gemini" else "r.pdf"  # Gemini parts have no file name
    assert last_parts(backend, build(backend, req))[1] == PDF_SENT[backend](name)


def test_a_text_document_is_text_where_the_target_has_no_text_documents() -> None:
    req = with_part(
        "anthropic",
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "ünï"}},
    )
    b64 = base64.b64encode("ünï".encode()).decode()
    assert last_parts("openai", build("openai", req))[1] == {"type": "text", "text": "ünï"}
    assert last_parts("openai_responses", build("openai_responses", req))[1] == {
        "type": "input_text",
        "text": "ünï",
    }
    assert last_parts("gemini", build("gemini", req))[1] == {
        "inlineData": {"mimeType": "text/plain", "data": b64}
    }
    assert last_parts("bedrock", build("bedrock", req))[1]["document"]["format"] == "txt"
    assert last_parts("anthropic", build("anthropic", req))[1] == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "ünï"},
    }


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("https://generativelanguage.googleapis.com/v1beta/files/abc", "Gemini Files API"),
        ("gs://bucket/report.pdf", "Cloud Storage"),
        ("https://www.youtube.com/watch?v=x", "YouTube"),
    ],
)
@pytest.mark.parametrize("backend", ["openai", "anthropic", "openai_responses", "bedrock"])
def test_a_google_only_file_uri_is_never_handed_to_another_provider(backend: str, uri: str, why: str) -> None:
    req = with_part("gemini", {"fileData": {"mimeType": "image/png", "fileUri": uri}})
    err = refusal(backend, req)
    assert err.param == "contents[0].parts[1].fileData" and why in err.message
    assert "fileUri" not in str(build(backend, req, drop=True))  # dropped, never sent as a URL


def test_a_public_pdf_url_is_a_url_document() -> None:
    req = with_part(
        "gemini", {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/r.pdf"}}
    )
    assert last_parts("anthropic", build("anthropic", req))[1] == {
        "type": "document",
        "source": {"type": "url", "url": "https://example.com/r.pdf"},
    }


@pytest.mark.parametrize(
    ("client", "part", "param", "why"),
    [
        (
            "openai",
            {"type": "file", "file": {"file_id": "file-1"}},
            "messages[0].content[1]",
            "uploaded to OpenAI",
        ),
        (
            "anthropic",
            {"type": "document", "source": {"type": "file", "file_id": "f1"}},
            "messages[0].content[1].source",
            "uploaded to Anthropic",
        ),
        (
            "anthropic",
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                "citations": {"enabled": True},
            },
            "messages[0].content[1].citations",
            "citation blocks",
        ),
    ],
)
def test_provider_files_and_citations_are_refused_with_the_reason(
    client: str, part: dict[str, Any], param: str, why: str
) -> None:
    err = refusal("gemini", with_part(client, part))
    assert err.param == param and why in err.message


def test_gemini_url_safe_base64_is_sent_standard() -> None:
    req = with_part("gemini", {"inlineData": {"mimeType": "application/pdf", "data": "ab-_"}})
    assert last_parts("anthropic", build("anthropic", req))[1]["source"]["data"] == "ab+/"


# ---- several candidates ----------------------------------------------------------------------------


def test_n_and_candidate_count_map_both_ways() -> None:
    assert build("gemini", parse("openai", n=3))["generationConfig"]["candidateCount"] == 3
    assert build("openai", parse("gemini", generationConfig={"candidateCount": 2}))["n"] == 2
    for backend in ("anthropic", "openai_responses", "bedrock"):  # one answer per request there
        assert refusal(backend, parse("openai", n=2)).param == "n"
        build(backend, parse("openai", n=1))  # neutral
    # Streamed too: several answers stream together (test_translation_fidelity).
    assert build("gemini", parse("openai", n=2, stream=True))["generationConfig"]["candidateCount"] == 2
    gemini_streamed = CODECS["gemini"].parse_request(
        {**BASE["gemini"], "generationConfig": {"candidateCount": 2}}, "m", path_stream=True
    )
    assert build("openai", gemini_streamed)["n"] == 2


def test_every_candidate_comes_back() -> None:
    """OpenAI's choices -> IR -> Gemini's candidates and back, in order, each with its stop."""
    answer = {
        "id": "x",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "one"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "two"}, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    resp = CODECS["openai"].parse_response(answer)
    gem = CODECS["gemini"].render_response(resp)
    assert [(c["content"]["parts"], c["finishReason"], c["index"]) for c in gem["candidates"]] == [
        ([{"text": "one"}], "STOP", 0),
        ([{"text": "two"}], "MAX_TOKENS", 1),
    ]
    back = CODECS["openai"].render_response(CODECS["gemini"].parse_response(gem))
    assert [(c["message"]["content"], c["finish_reason"]) for c in back["choices"]] == [
        ("one", "stop"),
        ("two", "length"),
    ]
    single = CODECS["gemini"].render_response(ChatResponse("x", "m", [TextPart("only")]))
    assert len(single["candidates"]) == 1


# ---- hypothesis: the new parsers and schema walks ---------------------------------------------------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=12,
)
keywords = st.sampled_from(
    ["type", "properties", "items", "anyOf", "required", "additionalProperties", "$defs", "title", "x"]
)
schemas = st.recursive(
    st.dictionaries(keywords, json_leaf | st.sampled_from(["object", "string"]), max_size=3),
    lambda kids: st.dictionaries(
        keywords,
        kids | st.lists(kids, max_size=2) | st.dictionaries(st.text(max_size=3), kids, max_size=2),
        max_size=4,
    ),
    max_leaves=15,
)


@SETTINGS
@given(schema=schemas)
def test_closing_a_schema_closes_every_object_and_nothing_else(schema: dict[str, Any]) -> None:
    before = copy.deepcopy(schema)
    out = closed(schema)
    assert schema == before  # the client's schema is not changed in place
    assert closed(out) == out  # idempotent
    explicit = [o for o in object_schemas(schema) if o is not None and "additionalProperties" in o]
    if not explicit:  # where the client said nothing, every object ends closed
        assert all_closed(out) or any(o is None for o in object_schemas(out))
    if all_closed(schema):
        assert out == schema
    assert all_required(schema) in (True, False)


@SETTINGS
@given(value=json_values)
def test_new_request_parts_only_ever_400(value: Any) -> None:
    """Whatever sits where a document, a file part, an output_config or a fileData goes, the
    answer is an IR part or a 400 naming a field: never another exception."""
    attempts = [
        ("anthropic", lambda: with_part("anthropic", {"type": "document", "source": value})),
        (
            "anthropic",
            lambda: with_part(
                "anthropic", {"type": "document", "source": {"type": "text", "data": value}, "title": value}
            ),
        ),
        ("anthropic", lambda: parse("anthropic", output_config=value)),
        ("anthropic", lambda: parse("anthropic", output_config={"format": value})),
        ("openai", lambda: with_part("openai", {"type": "file", "file": value})),
        ("openai", lambda: with_part("openai", {"type": "file", "file": {"file_data": value}})),
        (
            "gemini",
            lambda: with_part("gemini", {"fileData": {"mimeType": "application/pdf", "fileUri": value}}),
        ),
        ("gemini", lambda: with_part("gemini", {"inlineData": {"mimeType": value, "data": "QUJD"}})),
        (
            "gemini",
            lambda: parse("gemini", generationConfig={"responseModalities": value, "candidateCount": 2}),
        ),
    ]
    for _, attempt in attempts:
        try:
            req = attempt()
        except GatewayError as e:
            assert e.status == 400 and e.param
            continue
        for backend in BACKENDS:
            try:
                build(backend, req)
            except GatewayError as e:
                assert e.status == 400 and e.param


@SETTINGS
@given(media=st.text(max_size=20), data=st.binary(max_size=30))
def test_data_urls_parse_back(media: str, data: bytes) -> None:
    b64 = base64.b64encode(data).decode()
    url = f"data:{media};base64,{b64}"
    try:
        got_media, got = data_url(url, "f")
    except GatewayError as e:
        assert e.param == "f"
        return
    assert got == b64 or "," in media
    assert got_media is None or got_media == got_media.strip().lower()


@SETTINGS
@given(text=st.text(max_size=50), name=st.none() | st.text(max_size=10))
def test_text_documents_round_trip(text: str, name: str | None) -> None:
    doc = text_document(text, name)
    assert text_of(doc) == text and doc.filename == name
    assert text_of(FilePart("application/pdf", doc.data)) is None
