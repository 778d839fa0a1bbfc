"""The mock Vertex AI's token-counting endpoints, driven by the official SDKs' Vertex clients
(google-genai with ``vertexai=True``; anthropic's ``AnthropicVertex``): if the mock's paths,
bodies or answers drifted from the real service's, these clients would fail on them. Raw
HTTP sends what the SDKs will not: each invalid body the mock refuses, as documented
(see the rules' citations in ``gateway_tools/mocks/vertex.py``).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import google.auth.transport.requests
import pytest
from google import genai
from google.genai import types
from google.oauth2 import service_account

from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.ports import free_port
from tests.cloud import LOCATION, PROJECT, service_account_key

BASE = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers"
GEMINI_COUNT = f"{BASE}/google/models/gemini-3.5-flash:countTokens"
CLAUDE_COUNT = f"{BASE}/anthropic/models/count-tokens:rawPredict"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@pytest.fixture(scope="module")
def vertex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundMocks, int, Any]]:
    port = free_port()
    key = service_account_key(tmp_path_factory.mktemp("vx") / "sa.json", f"http://127.0.0.1:{port}/token")
    bg = start_in_thread([MockSpec("vx", "vertex_gemini", port, "", credentials_file=str(key))])
    creds = service_account.Credentials.from_service_account_file(str(key), scopes=[SCOPE])
    creds.refresh(google.auth.transport.requests.Request())
    yield bg, port, creds
    bg.stop()


def post(vertex: tuple[BackgroundMocks, int, Any], path: str, body: Any) -> tuple[int, Any]:
    _, port, creds = vertex
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {creds.token}"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_gemini_count_through_google_genai(vertex: tuple[BackgroundMocks, int, Any]) -> None:
    _, port, creds = vertex
    client = genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=creds,
        http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{port}/", api_version="v1"),
    )
    r = client.models.count_tokens(model="gemini-3.5-flash", contents="count these four words")
    assert r.total_tokens == 4


def test_claude_count_through_anthropic_vertex(vertex: tuple[BackgroundMocks, int, Any]) -> None:
    _, port, creds = vertex
    client = anthropic.AnthropicVertex(
        region=LOCATION,
        project_id=PROJECT,
        access_token=creds.token,
        base_url=f"http://127.0.0.1:{port}/v1",
        max_retries=0,
    )
    r = client.messages.count_tokens(
        model="claude-sonnet-4-6",
        system="be brief",
        messages=[{"role": "user", "content": "count these words"}],
    )
    assert r.input_tokens == 5


GEMINI_OK = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CLAUDE_OK = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        # Vertex's CountTokensRequest has no generateContentRequest (the Gemini API's has)
        (GEMINI_COUNT, {"generateContentRequest": GEMINI_OK}, 'Unknown name "generateContentRequest"'),
        (GEMINI_COUNT, {**GEMINI_OK, "safetySettings": []}, 'Unknown name "safetySettings"'),
        # model: the publisher model of the path, by its full resource name
        (GEMINI_COUNT, {**GEMINI_OK, "model": "gemini-3.5-flash"}, "model: must be the publisher model"),
        # contents validated as generateContent validates them
        (GEMINI_COUNT, {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}, "role"),
        # Claude: "The request body must contain the model ID"
        (CLAUDE_COUNT, {"messages": CLAUDE_OK["messages"]}, "model: Field required"),
        # Anthropic's count_tokens: no generation fields
        (CLAUDE_COUNT, {**CLAUDE_OK, "max_tokens": 10}, "max_tokens: Extra inputs are not permitted"),
        (CLAUDE_COUNT, {**CLAUDE_OK, "messages": [{"role": "robot", "content": "x"}]}, "role"),
    ],
)
def test_invalid_counts_are_400s(
    vertex: tuple[BackgroundMocks, int, Any], path: str, body: dict[str, Any], fragment: str
) -> None:
    status, err = post(vertex, path, body)
    assert status == 400, err
    assert fragment in err["error"]["message"]


def test_valid_counts_pass(vertex: tuple[BackgroundMocks, int, Any]) -> None:
    resource = f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/gemini-3.5-flash"
    assert post(vertex, GEMINI_COUNT, {**GEMINI_OK, "model": resource}) == (
        200,
        {"totalTokens": 1, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1}]},
    )
    status, out = post(vertex, CLAUDE_COUNT, {**CLAUDE_OK, "anthropic_version": "vertex-2023-10-16"})
    assert (status, out) == (200, {"input_tokens": 1})


def test_counts_need_a_token(vertex: tuple[BackgroundMocks, int, Any]) -> None:
    _, port, _ = vertex
    for path, body in ((GEMINI_COUNT, GEMINI_OK), (CLAUDE_COUNT, CLAUDE_OK)):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 401, resp.read()
        conn.close()
