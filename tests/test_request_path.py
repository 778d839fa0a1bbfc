"""The request path without Envoy: ``plan``, ``finish`` and ``attempt`` over plain data.

Table-driven: every way a request is refused, where it goes (spill-over past
cooling or full backends), what it carries there, how a failover attempt is
re-translated, and how the end of a response is reconciled.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG, parse_config
from ext_proc.dialects import get_dialect
from ext_proc.errors import GatewayError
from ext_proc.request import finish as F
from ext_proc.request.answer import MAX_BODY, PASS, AnswerCheck, Failed
from ext_proc.request.attempt import AttemptContext, AttemptFailure, AttemptPlan, refused, retranslate
from ext_proc.request.plan import Answer, RoutePlan, Started, plan, start
from ext_proc.request.responses import InvalidAnswer, make_translator
from ext_proc.routing.health import HealthTable
from ext_proc.state import GatewayState
from ext_proc.translation.ir import ChatRequest, MessageStart, Usage

ENV = {
    "MOCK_OPENAI_API_KEY": "sk-openai",
    "MOCK_ANTHROPIC_API_KEY": "sk-ant",
    "MOCK_GEMINI_API_KEY": "sk-gem",
}
KEY = "demo-key"
OPENAI = {":method": "POST", ":path": "/v1/chat/completions", "authorization": f"Bearer {KEY}"}
ANTHROPIC = {":method": "POST", ":path": "/v1/messages", "x-api-key": KEY, "anthropic-version": "2023-06-01"}
GEMINI = {
    ":method": "POST",
    ":path": "/v1beta/models/gemini-3.5-flash:generateContent",
    "x-goog-api-key": KEY,
}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def state_of(mutate: Any = None) -> GatewayState:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if mutate is not None:
        mutate(data)
    state = GatewayState(parse_config(yaml.safe_dump(data), "test.yaml"), env=ENV)
    state.health = HealthTable(clock=lambda: 100.0)
    return state


def run(coro: Any) -> Any:
    return asyncio.new_event_loop().run_until_complete(coro)


def started(state: GatewayState, headers: dict[str, str]) -> Started:
    result = start(state, headers, end_of_stream=False)
    assert isinstance(result, Started), result
    return result


def do_plan(state: GatewayState, headers: dict[str, str], body: dict[str, Any]) -> RoutePlan | Answer:
    return run(plan(state, started(state, headers), orjson.dumps(body)))


def error_of(answer: Answer) -> dict[str, Any]:
    return orjson.loads(answer.body)


# ---- start: request headers --------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ({":method": "POST", ":path": "/v1/chat/completions"}, 401, "Authorization: Bearer"),
        ({":method": "POST", ":path": "/v1/messages", "anthropic-version": "x"}, 401, "x-api-key"),
        ({":method": "POST", ":path": "/v1beta/models/m:generateContent"}, 401, "x-goog-api-key"),
        ({**OPENAI, "authorization": "Bearer wrong"}, 401, "invalid API key"),
        ({**OPENAI, ":path": "/v1/nowhere"}, 404, "no such endpoint: POST /v1/nowhere"),
        ({**OPENAI, ":method": "GET", ":path": "/v1/models/nope"}, 404, "model 'nope' is not served"),
    ],
)
def test_start_refuses(headers: dict[str, str], status: int, says: str) -> None:
    answer = start(state_of(), headers, end_of_stream=False)
    assert isinstance(answer, Answer)
    assert answer.status == status
    assert says in answer.body.decode()


def test_start_wants_a_body_for_chat() -> None:
    answer = start(state_of(), OPENAI, end_of_stream=True)
    assert isinstance(answer, Answer) and answer.status == 400
    assert "request body is required" in answer.body.decode()


@pytest.mark.parametrize(
    ("headers", "key", "first"),
    [
        ({":method": "GET", ":path": "/v1/models", "authorization": f"Bearer {KEY}"}, "data", "gpt-5.5"),
        (
            {":method": "GET", ":path": "/v1/models", "x-api-key": KEY, "anthropic-version": "x"},
            "data",
            "gpt-5.5",
        ),
        ({":method": "GET", ":path": "/v1beta/models", "x-goog-api-key": KEY}, "models", "models/gpt-5.5"),
    ],
)
def test_model_listings_in_each_dialect(headers: dict[str, str], key: str, first: str) -> None:
    answer = start(state_of(), headers, end_of_stream=True)
    assert isinstance(answer, Answer) and answer.status == 200
    items = orjson.loads(answer.body)[key]
    assert first in {item.get("id") or item.get("name") for item in items}
    assert len(items) == 3


def test_an_overloaded_refusal_has_each_dialects_status() -> None:
    """Anthropic clients know overload as 529, the others as 503."""
    from ext_proc.errors import GatewayError
    from ext_proc.request.plan import reject

    err = GatewayError("overloaded", "busy")
    assert reject(started(state_of(), ANTHROPIC), err, "x").status == 529
    assert reject(started(state_of(), OPENAI), err, "x").status == 503


# ---- plan: request body ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "raw", "status", "says"),
    [
        (OPENAI, b"{not json", 400, "not valid JSON"),
        (OPENAI, b"[1, 2]", 400, "must be a JSON object"),
        (OPENAI, orjson.dumps(CHAT), 400, "missing required field 'model'"),
        (OPENAI, orjson.dumps({**CHAT, "model": "nope"}), 404, "model 'nope' does not exist"),
        (
            ANTHROPIC,
            orjson.dumps({**CHAT, "model": "gpt-5.5", "max_tokens": 5, "top_k": 3}),
            400,
            "'top_k' cannot be expressed",
        ),
    ],
)
def test_plan_refuses(headers: dict[str, str], raw: bytes, status: int, says: str) -> None:
    state = state_of()
    answer = run(plan(state, started(state, headers), raw))
    assert isinstance(answer, Answer)
    assert answer.status == status, answer.body
    assert says in answer.body.decode()


def nested(levels: int) -> dict[str, Any]:
    """A JSON schema of objects within objects, ``levels`` JSON objects deep (a client's tool parameters)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels // 2):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def with_schema(headers: dict[str, str], model: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A request of ``headers``' dialect with one tool whose parameters are ``schema``."""
    if headers is GEMINI:
        return {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "t", "parametersJsonSchema": schema}]}],
        }
    if headers is ANTHROPIC:
        return {**CHAT, "model": model, "max_tokens": 5, "tools": [{"name": "t", "input_schema": schema}]}
    return {
        **CHAT,
        "model": model,
        "tools": [{"type": "function", "function": {"name": "t", "parameters": schema}}],
    }


# client dialect -> (headers, a model whose primary speaks another dialect; Gemini's is in its path)
TRANSLATED = {
    "openai": (OPENAI, "claude-sonnet-4-6"),
    "anthropic": (ANTHROPIC, "gemini-3.5-flash"),
    "gemini": (GEMINI, "gpt-5.5"),
}


@pytest.mark.parametrize("dialect", list(TRANSLATED))
@pytest.mark.parametrize("levels", [66, 300, 2000])
def test_a_body_nested_past_the_limit_is_a_400_naming_it(dialect: str, levels: int) -> None:
    """Past 254 levels orjson could not re-encode a translated body, past 1024 not even read it:
    every depth beyond the gateway's limit (64) is the same 400, in the client's dialect."""
    headers, model = TRANSLATED[dialect]
    if dialect == "gemini":
        headers = {**GEMINI, ":path": "/v1beta/models/gpt-5.5:generateContent"}
    body = with_schema(GEMINI if dialect == "gemini" else headers, model, {"type": "string"})
    raw = orjson.dumps(body).replace(b'{"type":"string"}', b'{"a":' * levels + b"1" + b"}" * levels)
    for state in (state_of(), state_of(budgets)):  # with budgets, admission walks the body too
        answer = run(plan(state, started(state, headers), raw))
        assert isinstance(answer, Answer) and answer.status == 400, answer.body
        assert "64 levels" in error_of(answer)["error"]["message"]


@pytest.mark.parametrize("dialect", list(TRANSLATED))
def test_a_deep_but_allowed_schema_is_translated(dialect: str) -> None:
    headers, model = TRANSLATED[dialect]
    if dialect == "gemini":
        headers = {**GEMINI, ":path": "/v1beta/models/gpt-5.5:generateContent"}
    # 56 levels of schema, plus the body's own few: just under the limit.
    p = do_plan(
        state_of(budgets), headers, with_schema(GEMINI if dialect == "gemini" else headers, model, nested(56))
    )
    assert isinstance(p, RoutePlan) and p.new_body is not None and p.ir is not None
    assert len(p.ir.tools) == 1


def test_a_gemini_call_id_that_is_not_a_string_is_a_400_naming_it() -> None:
    contents = [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "t", "args": {}, "id": "c1"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "t", "response": {}, "id": {"x": 1}}}]},
    ]
    headers = {**GEMINI, ":path": "/v1beta/models/gpt-5.5:generateContent"}
    answer = do_plan(state_of(), headers, {"contents": contents})
    assert isinstance(answer, Answer) and answer.status == 400
    err = error_of(answer)["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert "'contents[2].parts[0].functionResponse.id' must be a string" in err["message"]
    contents[1]["parts"][0]["functionCall"]["id"] = 7
    answer = do_plan(state_of(), headers, {"contents": contents})
    assert isinstance(answer, Answer) and "'contents[1].parts[0].functionCall.id'" in answer.body.decode()


def test_a_gateway_bug_while_planning_is_an_error_in_the_clients_dialect(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Never Envoy's empty 500 after a reset gRPC stream: the client learns it was the gateway."""
    from ext_proc.dialects import DIALECTS

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug")

    monkeypatch.setattr(DIALECTS["openai"].codec, "parse_request", broken)
    answer = do_plan(state_of(), ANTHROPIC, {**CHAT, "model": "gpt-5.5", "max_tokens": 5})
    assert isinstance(answer, RoutePlan)  # same dialect: not parsed
    answer = do_plan(state_of(), OPENAI, {**CHAT, "model": "claude-sonnet-4-6"})
    assert isinstance(answer, Answer) and answer.status == 500
    assert error_of(answer)["error"]["type"] == "server_error"
    assert "a bug" in caplog.text  # logged with its traceback for the operator


def test_translated_request_carries_the_backends_credentials_not_the_clients() -> None:
    p = do_plan(state_of(), OPENAI, {**CHAT, "model": "claude-sonnet-4-6"})
    assert isinstance(p, RoutePlan)
    assert p.primary.name == "anthropic/claude-sonnet-4-6"
    assert p.set_headers[":path"] == "/v1/messages"
    assert p.set_headers["x-api-key"] == "sk-ant"
    assert p.set_headers["anthropic-version"] == "2023-06-01"
    assert "authorization" in p.remove_headers and "accept-encoding" in p.remove_headers
    assert p.new_body is not None and p.set_headers["content-length"] == str(len(p.new_body))
    sent = orjson.loads(p.new_body)
    assert sent["model"] == "claude-sonnet-4-6" and sent["max_tokens"] == 4096
    assert p.ir is not None


def test_same_dialect_passes_through_with_only_the_model_renamed() -> None:
    def rename(data: dict[str, Any]) -> None:
        data["models"]["gpt-5.5"]["backends"][0]["model"] = "gpt-4o-2024"

    p = do_plan(state_of(rename), OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(p, RoutePlan) and p.ir is None
    assert orjson.loads(p.new_body or b"") == {**CHAT, "model": "gpt-4o-2024"}
    assert p.set_headers[":path"] == "/v1/chat/completions"
    assert p.set_headers["authorization"] == "Bearer sk-openai"
    unchanged = do_plan(state_of(), OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(unchanged, RoutePlan) and unchanged.new_body is None


def test_a_streamed_passthrough_asks_for_usage() -> None:
    p = do_plan(state_of(), OPENAI, {**CHAT, "model": "gpt-5.5", "stream": True})
    assert isinstance(p, RoutePlan) and p.stream
    assert orjson.loads(p.new_body or b"")["stream_options"] == {"include_usage": True}


def test_gemini_takes_model_and_stream_from_the_path() -> None:
    headers = {**GEMINI, ":path": "/v1beta/models/gpt-5.5:streamGenerateContent?alt=sse"}
    p = do_plan(state_of(), headers, {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert isinstance(p, RoutePlan)
    assert (p.model, p.stream, p.primary.name) == ("gpt-5.5", True, "openai/gpt-5.5")
    assert orjson.loads(p.new_body or b"")["stream"] is True


def test_a_cooling_primary_is_skipped() -> None:
    state = state_of()
    for _ in range(2):
        state.health.failure("openai/gpt-5.5")
    p = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(p, RoutePlan) and p.primary.name == "anthropic/claude-sonnet-4-6"


def test_every_backend_rate_limited_is_a_429_with_the_shortest_wait() -> None:
    state = state_of()
    for name, wait in (
        ("openai/gpt-5.5", 30),
        ("anthropic/claude-sonnet-4-6", 7),
        ("gemini/gemini-3.5-flash", 9),
    ):
        state.health.failure(name, 429, wait)
    answer = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(answer, Answer) and answer.status == 429
    assert answer.headers["retry-after"] == "7"


def budgets(data: dict[str, Any]) -> None:
    data["tenants"]["demo"]["limits"] = {"requests_per_minute": 2, "burst_seconds": 60}
    data["models"]["gpt-5.5"]["backends"][0]["limits"] = {"concurrent_requests": 1}


def test_admission_spills_a_full_primary_over_and_rejects_past_the_budget() -> None:
    state = state_of(budgets)
    first = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert (
        isinstance(first, RoutePlan) and first.primary.name == "openai/gpt-5.5" and first.ticket is not None
    )
    second = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})  # the primary's one slot is taken
    assert isinstance(second, RoutePlan) and second.primary.name == "anthropic/claude-sonnet-4-6"
    third = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(third, Answer) and third.status == 429
    assert "requests per minute" in error_of(third)["error"]["message"]
    assert third.headers["x-ratelimit-remaining-requests"] == "0" and "retry-after" in third.headers


def test_a_refused_translation_refunds_its_reservation() -> None:
    state = state_of(budgets)
    body = {**CHAT, "model": "gpt-5.5", "max_tokens": 5, "top_k": 3}
    for _ in range(3):  # the budget allows 2: refunds keep it whole
        answer = do_plan(state, ANTHROPIC, body)
        assert isinstance(answer, Answer) and answer.status == 400
        assert answer.headers["x-ratelimit-limit-requests"] == "2"
    admitted = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(admitted, RoutePlan)


def test_a_bad_priority_header_is_a_400() -> None:
    answer = do_plan(state_of(budgets), {**OPENAI, "x-priority": "urgent"}, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(answer, Answer) and answer.status == 400 and "x-priority" in answer.body.decode()


# ---- finish: the end of a response -------------------------------------------------------
def priced(data: dict[str, Any]) -> None:
    budgets(data)
    for b in data["models"]["gpt-5.5"]["backends"]:
        b["price"] = {"input": 1.0, "output": 2.0}


@pytest.mark.parametrize(
    ("status", "backend", "usage", "cost", "failover", "healthy"),
    [
        (200, "openai/gpt-5.5", Usage(1000, 500), 0.002, None, "openai/gpt-5.5"),
        (
            200,
            "anthropic/claude-sonnet-4-6",
            Usage(10, 0),
            0.00001,
            ("openai/gpt-5.5", "anthropic/claude-sonnet-4-6"),
            "anthropic/claude-sonnet-4-6",
        ),
        (503, "openai/gpt-5.5", None, None, None, None),
        (0, "", None, None, None, None),
    ],
)
def test_finish_reconciles(
    status: int,
    backend: str,
    usage: Usage | None,
    cost: float | None,
    failover: tuple[str, str] | None,
    healthy: str | None,
) -> None:
    state = state_of(priced)
    p = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
    assert isinstance(p, RoutePlan) and p.primary.name == "openai/gpt-5.5"
    done = F.finish(state, p, status, backend, usage, p.started.t0 + 0.1, p.started.t0 + 0.5)
    assert done.cost == pytest.approx(cost) if cost is not None else done.cost is None
    assert (done.failover, done.healthy) == (failover, healthy)
    assert done.log_fields["tenant"] == "demo" and done.log_fields["ttfb_ms"] == pytest.approx(100.0)
    F.apply(state, p, done)
    assert p.ticket is not None and p.ticket.settled
    if failover is not None:
        assert state.health.backends["openai/gpt-5.5"].failures == 1


def test_a_failed_request_gives_its_budget_back() -> None:
    state = state_of(priced)
    for _ in range(5):  # 2 requests per minute: only refunds let 5 through
        p = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5"})
        assert isinstance(p, RoutePlan)
        F.apply(state, p, F.finish(state, p, 503, p.primary.name, None, p.started.t0, p.started.t0))


def test_streamed_success_has_a_time_per_output_token() -> None:
    state = state_of()
    p = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5", "stream": True})
    assert isinstance(p, RoutePlan)
    done = F.finish(state, p, 200, "openai/gpt-5.5", Usage(5, 11), p.started.t0 + 1, p.started.t0 + 2)
    assert done.tpot == pytest.approx(0.1)


# ---- attempt: failover re-translation ----------------------------------------------------
def test_a_failover_attempt_is_retranslated_for_its_backend() -> None:
    state = state_of()
    p = do_plan(state, OPENAI, {**CHAT, "model": "claude-sonnet-4-6"})
    assert isinstance(p, RoutePlan) and p.new_body is not None
    ctx = AttemptContext(
        backend="gemini/gemini-3.5-flash",
        model="claude-sonnet-4-6",
        primary=p.primary.name,
        stream=False,
        version=state.config.version,
    )
    out = retranslate(state, ctx, p.new_body)
    assert isinstance(out, AttemptPlan)
    assert out.set_headers[":path"] == "/v1beta/models/gemini-3.5-flash:generateContent"
    assert out.set_headers["x-goog-api-key"] == "sk-gem"
    assert "x-api-key" in out.remove_headers and "anthropic-version" in out.remove_headers
    assert orjson.loads(out.body)["contents"][0]["parts"][0]["text"] == "hi"


def test_a_same_dialect_attempt_only_renames_the_model() -> None:
    state = state_of()
    ctx = AttemptContext("openai/gpt-5.5", "gemini-3.5-flash", "openai/gpt-5.5", False, state.config.version)
    out = retranslate(state, ctx, orjson.dumps({**CHAT, "model": "other"}))
    assert isinstance(out, AttemptPlan) and orjson.loads(out.body)["model"] == "gpt-5.5"


@pytest.mark.parametrize(
    ("ctx", "raw", "status"),
    [
        (AttemptContext("openai/gpt-5.5", "gpt-5.5", "nope", False, ""), b"{}", 500),
        (
            AttemptContext("gemini/gemini-3.5-flash", "gpt-5.5", "openai/gpt-5.5", False, ""),
            b"{not json",
            500,
        ),
    ],
)
def test_an_attempt_without_context_or_body_fails_cleanly(
    ctx: AttemptContext, raw: bytes, status: int
) -> None:
    out = retranslate(state_of(), ctx, raw)
    assert isinstance(out, AttemptFailure) and out.status == status
    assert "error" in orjson.loads(out.body)


# ---- what reaches a provider -----------------------------------------------------------
CLIENT_EXTRAS = {
    "openai-organization": "org",
    "anthropic-beta": "b",
    "cookie": "c",
    "x-foo": "f",
    "user-agent": "u",
    "accept": "application/json",
    "content-type": "application/json",
}


def test_client_headers_reach_a_provider_only_by_its_allow_list() -> None:
    def listing(data: dict[str, Any]) -> None:
        data["providers"]["anthropic"]["forward_headers"] = ["anthropic-beta"]

    state = state_of(listing)
    to_openai = do_plan(state, {**OPENAI, **CLIENT_EXTRAS}, {**CHAT, "model": "gpt-5.5"})
    to_anthropic = do_plan(state, {**OPENAI, **CLIENT_EXTRAS}, {**CHAT, "model": "claude-sonnet-4-6"})
    assert isinstance(to_openai, RoutePlan) and isinstance(to_anthropic, RoutePlan)
    assert {"openai-organization", "anthropic-beta", "cookie", "x-foo", "user-agent"} <= set(
        to_openai.remove_headers
    )
    assert {"openai-organization", "cookie", "x-foo", "user-agent"} <= set(to_anthropic.remove_headers)
    kept = {"anthropic-beta", "accept", "content-type"}
    assert not kept & set(to_anthropic.remove_headers)
    # A failover attempt from the provider that lists it to one that does not removes it.
    ctx = AttemptContext(
        "openai/gpt-5.5", "claude-sonnet-4-6", to_anthropic.primary.name, False, state.config.version
    )
    out = retranslate(state, ctx, to_anthropic.new_body or b"{}")
    assert isinstance(out, AttemptPlan) and "anthropic-beta" in out.remove_headers


def test_an_unknown_path_names_no_model() -> None:
    answer = start(state_of(), {**OPENAI, ":path": "/v1/files"}, end_of_stream=False)
    assert isinstance(answer, Answer) and answer.status == 404
    assert error_of(answer)["error"]["code"] == "unknown_url"
    missing = do_plan(state_of(), OPENAI, {**CHAT, "model": "nope"})
    assert isinstance(missing, Answer) and error_of(missing)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "backend", ["openai/gpt-5.5", "anthropic/claude-sonnet-4-6", "gemini/gemini-3.5-flash"]
)
def test_a_provider_refusing_the_gateway_key_is_a_502_in_its_dialect(backend: str) -> None:
    state = state_of()
    codec = get_dialect(state.config.backends[backend].dialect).codec
    said = codec.render_error(GatewayError("authentication", "Incorrect API key provided: sk-***"))
    err = codec.parse_error(502, refused(state, backend, 401, orjson.dumps(said)))
    assert (err.kind, err.status) == ("api_error", 502)
    assert err.message == (
        f"the provider of backend '{backend}' refused the gateway's credentials "
        "(HTTP 401: Incorrect API key provided: sk-***)"
    )


# ---- responses: a stream the gateway ends ----------------------------------------------
@pytest.mark.parametrize(
    ("client", "backend", "ends_with"),
    [
        ("openai", "openai/gpt-5.5", b'"code":"timeout"}}\n\n'),
        ("anthropic", "openai/gpt-5.5", b'"type":"timeout_error","message":"quiet"}}\n\n'),
        ("gemini", "gemini/gemini-3.5-flash", b'"status":"DEADLINE_EXCEEDED"}}\n\n'),
    ],
)
def test_an_aborted_stream_ends_with_an_error_event_in_the_client_dialect(
    client: str, backend: str, ends_with: bytes
) -> None:
    state = state_of()
    done: list[int] = []
    headers, body = {
        "openai": (OPENAI, {**CHAT, "model": "gemini-3.5-flash", "stream": True}),
        "anthropic": (ANTHROPIC, {**CHAT, "model": "gemini-3.5-flash", "max_tokens": 5, "stream": True}),
        "gemini": (
            {**GEMINI, ":path": "/v1beta/models/gemini-3.5-flash:streamGenerateContent?alt=sse"},
            {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        ),
    }[client]
    p = do_plan(state, headers, body)
    assert isinstance(p, RoutePlan)
    b = state.config.backends[backend]
    ir = get_dialect(client).codec.parse_request(p.body, p.started.call.model, True)
    t = make_translator(
        client=get_dialect(client),
        backend=b,
        status=200,
        stream=True,
        model=p.model,
        ir=ir,
        body=p.body,
        on_done=lambda status, *_: done.append(status),
        redact=state.redact,
    )
    assert t.streams and not t.done
    # The backend's first event went to the client, then it went quiet.
    t.feed(
        get_dialect(b.dialect).codec.stream_encoder(ir).encode(MessageStart("m1", b.upstream_model)), False
    )
    out = t.abort(GatewayError("timeout", "quiet"))
    assert out.endswith(ends_with), out
    assert t.done and done == [200]  # finished once: usage recorded, the reservation settled


def test_a_backend_is_at_its_tier_in_this_models_chain() -> None:
    """anthropic/claude-sonnet-4-6 is tier 0 of one model and tier 1 of another: answering as
    the primary of the first is no failover (it once cooled a healthy backend down)."""
    state = state_of()
    p = do_plan(state, ANTHROPIC, {**CHAT, "model": "claude-sonnet-4-6", "max_tokens": 5})
    assert isinstance(p, RoutePlan) and p.primary.tier == 0
    assert state.config.backends[p.primary.name].tier != 0  # the other model's place for it
    done = F.finish(state, p, 429, p.primary.name, None, p.started.t0, p.started.t0)
    assert done.failover is None


# ---- responses: what the client receives --------------------------------------------------------
def translate(
    state: GatewayState,
    client: str,
    backend: str,
    status: int,
    chunks: list[bytes],
    stream: bool = False,
    ir: Any = None,
    body: dict[str, Any] | None = None,
) -> bytes:
    """The bytes a client of ``client``'s dialect receives for ``chunks`` from ``backend``."""
    from ext_proc.dialects import get_dialect
    from ext_proc.request.responses import make_translator

    t = make_translator(
        client=get_dialect(client),
        backend=state.config.backends[backend],
        status=status,
        stream=stream,
        model="gpt-5.5",
        ir=ir,
        body=body,
        on_done=lambda *a: None,
        redact=state.redact,
    )
    out = b""
    for i, chunk in enumerate(chunks):
        got = t.feed(chunk, i == len(chunks) - 1)
        out += chunk if got is None else got
    return out


ECHO = "Incorrect API key provided: sk-ant. You can find your API key at https://example.com"


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
def test_a_provider_error_echoing_our_key_is_redacted_for_every_client(client: str) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "authentication_error", "message": ECHO}})
    out = translate(state_of(), client, "anthropic/claude-sonnet-4-6", 401, [body[:20], body[20:]])
    assert b"sk-ant" not in out and b"[REDACTED]" in out
    assert b"You can find your API key" in out  # the rest of the provider's words stay


@pytest.mark.parametrize(
    ("client", "backend", "event"),
    [
        (
            "anthropic",
            "anthropic/claude-sonnet-4-6",  # same dialect: the event is passed on, redacted
            b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"'
            + ECHO.encode()
            + b'"}}\n\n',
        ),
        (
            "openai",
            "anthropic/claude-sonnet-4-6",  # translated
            b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"'
            + ECHO.encode()
            + b'"}}\n\n',
        ),
        (
            "gemini",
            "openai/gpt-5.5",
            b'data: {"error":{"message":"'
            + ECHO.replace("sk-ant", "sk-openai").encode()
            + b'","type":"x"}}\n\n',
        ),
    ],
)
def test_a_stream_error_echoing_our_key_is_redacted(client: str, backend: str, event: bytes) -> None:
    state = state_of()
    ir = ChatRequest(model="gpt-5.5", messages=[], stream=True)
    start = {
        "anthropic/claude-sonnet-4-6": b'event: message_start\ndata: {"type":"message_start","message":'
        b'{"id":"m","model":"c","usage":{"input_tokens":1}}}\n\n',
        "openai/gpt-5.5": b'data: {"id":"c","model":"g","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
    }
    out = translate(state, client, backend, 200, [start[backend], event], stream=True, ir=ir, body={})
    assert b"sk-ant" not in out and b"sk-openai" not in out and b"[REDACTED]" in out


# ---- answers: is a provider's 200 an answer? ------------------------------------------------------

GOOD = {
    "openai": b'{"id":"c","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}',
    "anthropic": b'{"id":"m","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"hi"}],'
    b'"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}',
    "gemini": b'{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP"}],'
    b'"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}',
}
FIRST_EVENT = {
    "openai": b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
    "anthropic": b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"m",'
    b'"usage":{"input_tokens":1}}}\n\n',
    "gemini": b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"}}]}\n\n',
}
# A body that is not an answer -> what the client is told it was.
NOT_ANSWERS = {
    b"": "it was empty",
    b"   ": "it was empty",
    b"<html><body>502 Bad Gateway</body></html>": "it was text/html, not JSON",
    b'{"choices": [{"mess': "it was not complete JSON",
    b"[1, 2]": "must be a JSON object",
    b'{"error": {"message": "boom", "type": "server_error"}}': "it was an error: boom",
}


def check(dialect: str, stream: bool, content_type: str) -> AnswerCheck:
    from ext_proc.dialects import get_codec

    return AnswerCheck(get_codec(dialect), f"{dialect}/m", stream, content_type)


@pytest.mark.parametrize("dialect", list(GOOD))
def test_an_answer_passes_once_whole(dialect: str) -> None:
    c = check(dialect, False, "application/json")
    body = GOOD[dialect]
    assert c.feed(body[:10], False) is None  # held until the body is whole
    assert c.feed(body[10:], True) == PASS


@pytest.mark.parametrize("dialect", list(GOOD))
@pytest.mark.parametrize(("body", "says"), list(NOT_ANSWERS.items()))
def test_a_body_that_is_not_an_answer_fails_the_attempt(dialect: str, body: bytes, says: str) -> None:
    from ext_proc.dialects import get_codec

    ct = "text/html" if body.startswith(b"<html>") else "application/json"
    verdict = check(dialect, False, ct).feed(body, True)
    assert isinstance(verdict, Failed) and verdict.status == 502
    # The body is an error in the backend's own dialect: the router stage reads it like any error.
    err = get_codec(dialect).parse_error(502, verdict.body)
    assert err.kind == "api_error" and "the provider's answer was invalid" in err.message
    assert says in err.message and f"backend '{dialect}/m'" in err.message


@pytest.mark.parametrize(
    ("dialect", "body", "path"),
    [
        ("openai", b'{"choices": [{"message": 5}]}', "'choices[0].message' must be an object"),
        (
            "openai",
            b'{"choices": [{"message": {"content": 5}}]}',
            "'choices[0].message.content' must be a string",
        ),
        (
            "openai",
            b'{"choices": [{"message": {}}], "usage": {"prompt_tokens": 18446744073709551615}}',
            "'usage.prompt_tokens' must be a token count",
        ),
        ("anthropic", b'{"type": "message", "content": 5}', "'content' must be an array"),
        ("gemini", b'{"candidates": 1.5}', "'candidates' must be an array"),
        ("gemini", b'{"candidates": []}', "'candidates' must be an array with at least one candidate"),
    ],
)
def test_a_wrongly_typed_answer_names_the_field(dialect: str, body: bytes, path: str) -> None:
    verdict = check(dialect, False, "application/json").feed(body, True)
    assert isinstance(verdict, Failed) and path in verdict.error.message


@pytest.mark.parametrize("dialect", list(FIRST_EVENT))
def test_a_stream_passes_at_its_first_event(dialect: str) -> None:
    c = check(dialect, True, "text/event-stream")
    event = FIRST_EVENT[dialect]
    assert c.feed(event[:15], False) is None
    rest = c.feed(event[15:] + b'data: {"more": 1}', False)
    if dialect == "anthropic":  # message_start only opens the message: the guard waits for what follows it
        assert rest is None
        rest = c.feed(b'\n\nevent: ping\ndata: {"type": "ping"}\n\n', False)
    assert rest == PASS


@pytest.mark.parametrize("dialect", list(FIRST_EVENT))
def test_streams_that_are_not_answers_fail_the_attempt(dialect: str) -> None:
    empty = check(dialect, True, "text/event-stream")
    assert empty.feed(b"", False) is None
    verdict = empty.feed(b": keep-alive\n\n", True)
    assert isinstance(verdict, Failed) and "empty event stream" in verdict.error.message
    json_instead = check(dialect, True, "application/json").feed(b'{"error": {"message": "x"}}', True)
    assert isinstance(json_instead, Failed) and "a stream was asked for" in json_instead.error.message
    wrong = check(dialect, True, "text/event-stream").feed(
        b'data: {"choices": 1.5, "candidates": 1.5, "type": "message_start", "message": 5}\n\n', False
    )
    assert isinstance(wrong, Failed) and wrong.status == 502


def test_an_in_band_error_keeps_its_status() -> None:
    """Anthropic's 200 + overloaded_error event: a 503 for Envoy to retry (its 529 would not be)."""
    event = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    verdict = check("anthropic", True, "text/event-stream").feed(event, False)
    assert isinstance(verdict, Failed) and verdict.status == 503
    assert "Overloaded" in verdict.error.message


def test_a_huge_body_is_let_go_unjudged() -> None:
    c = check("openai", False, "application/json")
    assert c.feed(b"x" * (MAX_BODY + 1), False) == PASS


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("backend", ["openai/gpt-5.5", "anthropic/claude-sonnet-4-6"])
def test_the_router_stage_never_delivers_an_unjudged_non_answer(client: str, backend: str) -> None:
    """A 200 the guard did not judge, found invalid after its headers went out: not a body
    (it would pass for an answer) but ``InvalidAnswer``, which the router stage aborts."""
    state = state_of()
    body = b'{"error": {"message": "quota of sk-openai and sk-ant exceeded"}}'
    with pytest.raises(InvalidAnswer) as e:
        translate(state, client, backend, 200, [body[:9], body[9:]])
    assert "it was an error" in e.value.error.message and "sk-" not in e.value.error.message
    assert b"[REDACTED]" in e.value.body


def test_a_wrongly_typed_event_in_a_same_dialect_stream_ends_it_with_an_error_event() -> None:
    chunks = [
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
        b'data: {"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":"many"}}\n\n',
        b"data: [DONE]\n\n",
    ]
    out = translate(state_of(), "openai", "openai/gpt-5.5", 200, chunks, stream=True, body={})
    assert b'"content":"hi"' in out and b"[DONE]" not in out
    assert b"'usage.prompt_tokens' must be a token count" in out


def test_a_same_dialect_event_too_deep_to_re_encode_ends_the_stream_with_an_error_event() -> None:
    """The model name must change (the upstream model differs), and orjson writes at most 254 levels."""

    def rename(data: dict[str, Any]) -> None:
        data["models"]["gpt-5.5"]["backends"][0]["model"] = "gpt-4o-2024"

    deep = (
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}],"x":'
        + b"[" * 300
        + b"]" * 300
    )
    out = translate(
        state_of(rename), "openai", "openai/gpt-4o-2024", 200, [deep + b"}\n\n"], stream=True, body={}
    )
    assert b"254 levels" in out and b"[DONE]" not in out
