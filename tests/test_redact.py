"""The one redaction function every provider error text passes before a client sees it."""

from __future__ import annotations

import orjson
import pytest

from ext_proc.translation.redact import MARK, Redactor

KEY = "mock-Qx7_plainlooking"  # a configured provider key: no pattern would catch it alone
redact = Redactor([KEY, "short"])


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"invalid x-api-key: {KEY}", KEY),
        (f"key {KEY}{KEY} twice", KEY),
        (
            "Incorrect API key provided: sk-proj-AbCdEf0123456789xyz. You can find your key at",
            "sk-proj-AbCdEf0123456789xyz",
        ),
        ("invalid x-api-key sk-ant-api03-AAAAbbbb1111", "sk-ant-api03-AAAAbbbb1111"),
        ("API key AIzaSyA-abcdefghijklmnopqrstuvwx is invalid", "AIzaSyA-abcdefghijklmnopqrstuvwx"),
        ("got header Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abc-def", "eyJhbGciOi.JIUzI1NiJ9.abc-def"),
        ("got header authorization: bearer abcdefgh", "abcdefgh"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("GET /v1beta/models/x:generateContent?key=whatever-it-is&alt=sse", "whatever-it-is"),
        (
            "token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 leaked",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        ("secret Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MA== inside", "Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MA=="),
    ],
)
def test_credentials_are_redacted(text: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out and MARK in out


@pytest.mark.parametrize(
    "text",
    [
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130011 tokens.",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "The input token count (1100000) exceeds the maximum number of tokens allowed (1048576).",
        "model 'claude-sonnet-4-5-20250929' is overloaded",
        "projects/my-project/locations/us-central1/publishers/google/models/gemini-3.5-flash not found",
        "Rate limit reached for gpt-5.5 in organization on requests per min (RPM): Limit 3, Used 3.",
        "a short one",  # a configured key shorter than six characters is not searched for
    ],
)
def test_ordinary_error_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_an_error_body_keeps_its_shape() -> None:
    raw = orjson.dumps(
        {
            "error": {
                "message": f"bad key {KEY}",
                "type": "invalid_request_error",
                "code": 401,
                "details": [{"key": KEY}],
            }
        }
    )
    out = orjson.loads(redact.body(raw))
    assert out == {
        "error": {
            "message": f"bad key {MARK}",
            "type": "invalid_request_error",
            "code": 401,
            "details": [{"key": MARK}],
        }
    }
    clean = orjson.dumps({"error": {"message": "overloaded"}})
    assert redact.body(clean) is clean  # nothing to redact: the provider's bytes, untouched
    assert redact.body(f"<html>bad key {KEY}</html>".encode()) == f"<html>bad key {MARK}</html>".encode()


def test_a_body_nested_past_orjsons_limit_is_redacted_as_text() -> None:
    raw = b'{"a":' * 300 + orjson.dumps(f"key {KEY}") + b"}" * 300
    out = redact.body(raw)
    assert KEY.encode() not in out and MARK.encode() in out
