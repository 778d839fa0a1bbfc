"""Issue 14's agent-shaped corpus: realistic agent turns through every client x backend pair.

Each case in ``tests/corpus/`` is one agent's request in its own dialect (a coding agent's
Anthropic turn, an IDE's OpenAI turn, a Gemini agent loop, a Responses-API turn): long
system prompts, many JSON-schema tools, tool-call history with an error result, an image (and
one a tool returned), bookkeeping fields. Its last user text asks the strict mocks for a call
of every tool (``use all tools``: parallel calls). A case runs as an agent would, with the official SDK:

1. the request as is: the client must get a call of each of its tools, by its own names,
   with the arguments its schemas require, the tool stop reason and usage;
2. the same conversation plus the calls it got and their results (streamed): the client must
   get the mock's answer to those results, the end-of-turn stop reason and usage.

Each step also checks what the backend received (the mock's ``last_request``): one request
on the model's primary backend and none elsewhere (no failover hiding a rejection), every
marker of the case (system prompt, developer message, history text, image, the end user
where the target has such a field) and every declared tool, and in step 2 every result.

A case is *ok*, *refused* (a 400 before any backend was asked, whose message names a field of
the client's request) or *wrong* (anything else); any wrong fails. The totals go to the README
(between the agent-corpus markers); ``test_readme_corpus_totals`` fails when they drift
(``python -m tests.test_agent_corpus`` runs the corpus and prints the line).
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.test_translation_matrix import BACKENDS, WIRE, _camel, gateway  # noqa: F401 (a fixture)

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = {p.stem: json.loads(p.read_text()) for p in sorted(CORPUS.glob("*.json"))}
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- agent-corpus:begin -->", "<!-- agent-corpus:end -->"
# client dialect -> its stop reason for a tool call and for an answer
FINISH = {
    "openai": ("tool_calls", "stop"),
    "anthropic": ("tool_use", "end_turn"),
    "gemini": ("STOP", "STOP"),
    "openai_responses": ("completed", "completed"),
}

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@dataclass
class Got:
    """What a client got back, in neutral form (``turn``: what to replay as the assistant's)."""

    text: str = ""
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (id, name, args)
    finish: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    turn: Any = None


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---- one small runner per SDK: a raw request of its dialect in, Got out -------------------------------


def kwargs_for(method: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as keyword arguments of an SDK method; fields this SDK version has no argument
    for (e.g. Anthropic sampling parameters) go in ``extra_body``, as an app would send them."""
    known = set(inspect.signature(method).parameters)
    kw = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    return {**kw, "extra_body": extra} if extra else kw


def run_openai(stack: Stack, body: dict[str, Any], stream: bool) -> Got:
    sdk = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
    if not stream:
        c = sdk.chat.completions.create(**kwargs_for(sdk.chat.completions.create, body))
        msg = c.choices[0].message
        calls = [(t.id, t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls or ()]
        assert c.usage is not None
        return Got(
            msg.content or "",
            calls,
            c.choices[0].finish_reason,
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
        )
    got, parts = Got(), {}
    kw = kwargs_for(sdk.chat.completions.create, body)
    for chunk in sdk.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            got.input_tokens, got.output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
        for ch in chunk.choices:
            got.text += ch.delta.content or ""
            for tc in ch.delta.tool_calls or ():
                p = parts.setdefault(tc.index, [tc.id, tc.function.name if tc.function else None, ""])
                p[2] += (tc.function.arguments if tc.function else None) or ""
            got.finish = ch.finish_reason or got.finish
    got.calls = [(i, n, json.loads(a)) for i, n, a in (parts[k] for k in sorted(parts))]
    return got


def run_anthropic(stack: Stack, body: dict[str, Any], stream: bool) -> Got:
    sdk = anthropic.Anthropic(base_url=stack.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)
    kw = kwargs_for(sdk.messages.create, body)
    if stream:
        with sdk.messages.stream(**kw) as s:
            m = s.get_final_message()
    else:
        m = sdk.messages.create(**kw)
    text = "".join(b.text for b in m.content if b.type == "text")
    calls = [(b.id, b.name, dict(b.input)) for b in m.content if b.type == "tool_use"]  # type: ignore[arg-type]
    return Got(text, calls, m.stop_reason, m.usage.input_tokens, m.usage.output_tokens)


def _gemini_request(body: dict[str, Any]) -> tuple[list[types.Content], types.GenerateContentConfig]:
    cfg = {**body.get("generationConfig", {})}
    for key in ("systemInstruction", "tools", "toolConfig", "safetySettings"):
        if key in body:
            cfg[key] = body[key]
    contents = [
        c if isinstance(c, types.Content) else types.Content.model_validate(c) for c in body["contents"]
    ]
    return contents, types.GenerateContentConfig.model_validate(cfg)


def run_gemini(stack: Stack, body: dict[str, Any], stream: bool) -> Got:
    sdk = genai.Client(
        api_key=DEMO_KEY, http_options=types.HttpOptions(base_url=stack.base_url, timeout=20_000)
    )
    model = body["model"]
    contents, cfg = _gemini_request(body)
    chunks = (
        list(sdk.models.generate_content_stream(model=model, contents=contents, config=cfg))  # type: ignore[arg-type]
        if stream
        else [sdk.models.generate_content(model=model, contents=contents, config=cfg)]  # type: ignore[arg-type]
    )
    got, parts = Got(), []
    for r in chunks:
        if r.usage_metadata is not None:
            got.input_tokens = r.usage_metadata.prompt_token_count or 0
            got.output_tokens = r.usage_metadata.candidates_token_count or 0
        cand = (r.candidates or [None])[0]
        if cand is None:
            continue
        if cand.finish_reason is not None:
            got.finish = cand.finish_reason.value
        for part in (cand.content.parts if cand.content else None) or ():
            parts.append(part)
            got.text += part.text or "" if not part.thought else ""
            if part.function_call is not None:
                fc = part.function_call
                got.calls.append((fc.id or "", fc.name or "", dict(fc.args or {})))
    got.turn = types.Content(role="model", parts=parts)  # replayed as given (thought signatures too)
    return got


def run_responses(stack: Stack, body: dict[str, Any], stream: bool) -> Got:
    sdk = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
    kw = kwargs_for(sdk.responses.create, body)
    if stream:
        with sdk.responses.stream(**kw) as s:
            r = s.get_final_response()
    else:
        r = sdk.responses.create(**kw)
    calls = [(o.call_id, o.name, json.loads(o.arguments)) for o in r.output if o.type == "function_call"]
    finish = r.status + (f":{r.incomplete_details.reason}" if r.incomplete_details else "")
    assert r.usage is not None
    return Got(r.output_text, calls, finish, r.usage.input_tokens, r.usage.output_tokens)


RUNNERS = {
    "openai": run_openai,
    "anthropic": run_anthropic,
    "gemini": run_gemini,
    "openai_responses": run_responses,
}


def ask(client: str, stack: Stack, body: dict[str, Any], stream: bool) -> Got:
    """``body`` through the client's SDK; a 4xx becomes ``Refused`` (status, the error's message)."""
    try:
        return RUNNERS[client](stack, body, stream)
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        raise Refused(e.status_code, str(e)) from e
    except genai_errors.APIError as e:
        raise Refused(e.code, str(e.message)) from e


# ---- the agent's next turn: its calls and their results, in its own dialect ----------------------------


def result_text(case: dict[str, Any], name: str) -> str:
    return f"{case['results']} {name} done"


def with_results(client: str, case: dict[str, Any], body: dict[str, Any], got: Got) -> dict[str, Any]:
    nxt = copy.deepcopy({k: v for k, v in body.items() if k != "contents"})
    if client == "openai":
        nxt["messages"].append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                    for i, n, a in got.calls
                ],
            }
        )
        nxt["messages"] += [
            {"role": "tool", "tool_call_id": i, "content": result_text(case, n)} for i, n, _ in got.calls
        ]
    elif client == "anthropic":
        nxt["messages"].append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in got.calls],
            }
        )
        nxt["messages"].append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": i, "content": result_text(case, n)}
                    for i, n, _ in got.calls
                ],
            }
        )
    elif client == "gemini":
        nxt["contents"] = [*body["contents"], got.turn]
        nxt["contents"].append(
            types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            id=i or None, name=n, response={"result": result_text(case, n)}
                        )
                    )
                    for i, n, _ in got.calls
                ],
            )
        )
    else:
        nxt["input"] += [
            {"type": "function_call", "call_id": i, "name": n, "arguments": json.dumps(a)}
            for i, n, a in got.calls
        ]
        nxt["input"] += [
            {"type": "function_call_output", "call_id": i, "output": result_text(case, n)}
            for i, n, _ in got.calls
        ]
    return nxt


# ---- what the case declares, and what a backend received -----------------------------------------------


def client_tools(client: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, parameter schema) of each function tool the client declared, in order."""
    if client == "gemini":
        return [
            (d["name"], d.get("parametersJsonSchema") or d.get("parameters") or {})
            for t in body.get("tools", ())
            for d in t.get("functionDeclarations", ())
        ]
    if client == "openai":
        return [(t["function"]["name"], t["function"].get("parameters", {})) for t in body.get("tools", ())]
    if client == "anthropic":
        return [(t["name"], t.get("input_schema", {})) for t in body.get("tools", ())]
    return [
        (t["name"], t.get("parameters", {})) for t in body.get("tools", ()) if t.get("type") == "function"
    ]


def backend_tool_count(backend: str, body: dict[str, Any]) -> int:
    wire = WIRE[backend]
    if wire == "gemini":
        return sum(len(t.get("functionDeclarations", ())) for t in body.get("tools", ()))
    if wire == "bedrock":
        # toolSpec entries (a cachePoint entry marks a cache breakpoint, auto_cache: not a tool)
        return sum(1 for t in body.get("toolConfig", {}).get("tools", ()) if "toolSpec" in t)
    return len(body.get("tools", ()))


def field_named(message: str, body: dict[str, Any]) -> str | None:
    """The first quoted field path in a refusal whose top key is one of the client's."""
    for quoted in re.findall(r"'([^']+)'", message):
        top = re.split(r"[.\[]", quoted, maxsplit=1)[0]
        if top in body:
            return quoted
    return None


@dataclass
class Outcome:
    kind: str  # ok | refused | wrong
    detail: str = ""


RESULTS: dict[tuple[str, str, str], Outcome] = {}
MODES = ("plain", "streamed")  # how step 1 is asked; step 2 the other way


# Wrong results with a known cause being fixed elsewhere: (backend wire, words of the error) -> why.
def check_backend(
    admin: MockAdmin, backend: str, before: dict[str, int], markers: list[str], problems: list[str]
) -> dict[str, Any]:
    counts = {b: admin.stats(b)["requests"] for b in BACKENDS}
    asked = {b: counts[b] - before[b] for b in BACKENDS if counts[b] != before[b]}
    if asked != {backend: 1}:
        problems.append(f"backend requests {asked}, expected one on {backend}")
    body = admin.stats(backend)["last_request"]["body"]
    body = _camel(body) if WIRE[backend] == "gemini" else body
    dump = json.dumps(body)
    problems += [f"backend lacks {m!r}" for m in markers if m not in dump]
    return body


def run_case(stack: Stack, admin: MockAdmin, name: str, backend: str, first_streamed: bool) -> Outcome:
    case = CASES[name]
    client = case["client"]
    model, _ = BACKENDS[backend]
    body = copy.deepcopy(case["request"])
    body["model"] = model
    tools = client_tools(client, case["request"])
    markers = [m for m, skip in case["markers"].items() if WIRE[backend] not in skip]
    problems: list[str] = []
    before = {b: admin.stats(b)["requests"] for b in BACKENDS}
    try:
        got = ask(client, stack, body, stream=first_streamed)
    except Refused as r:
        named = field_named(r.message, case["request"])
        asked = sum(admin.stats(b)["requests"] - before[b] for b in BACKENDS)
        if r.status == 400 and named is not None and asked == 0:
            return Outcome("refused", f"`{named}`")
        return Outcome("wrong", f"step 1: {r.status} {r.message} (backend requests: {asked})")
    sent = check_backend(admin, backend, before, markers, problems)
    if backend_tool_count(backend, sent) != len(tools):
        problems.append(f"backend got {backend_tool_count(backend, sent)} tools of {len(tools)}")
    names = [n for n, _ in tools]
    if [n for _, n, _ in got.calls] != names:
        problems.append(f"calls {[n for _, n, _ in got.calls]}, expected {names}")
    for (_, n, args), (_, schema) in zip(got.calls, tools, strict=False):
        missing = set(schema.get("required", ())) - set(args)
        if missing:
            problems.append(f"call of {n} lacks required {sorted(missing)}")
    if got.finish != FINISH[client][0] or got.input_tokens <= 0 or got.output_tokens <= 0:
        problems.append(f"step 1 finish {got.finish}, usage {got.input_tokens}/{got.output_tokens}")
    if problems:
        return Outcome("wrong", "step 1: " + "; ".join(problems))
    # Step 2: the results (streamed when step 1 was not).
    nxt = with_results(client, case, body, got)
    before = {b: admin.stats(b)["requests"] for b in BACKENDS}
    try:
        final = ask(client, stack, nxt, stream=not first_streamed)
    except Refused as r:
        return Outcome("wrong", f"step 2: {r.status} {r.message}")
    check_backend(admin, backend, before, [*markers, *(result_text(case, n) for n in names)], problems)
    if "tool result:" not in final.text or not all(result_text(case, n) in final.text for n in names):
        problems.append(f"answer {final.text[:120]!r}")
    if case.get("answer_keys") is not None:  # structured output: JSON of the client's schema
        try:
            keys = sorted(json.loads(final.text))
        except ValueError:
            keys = []
        if keys != sorted(case["answer_keys"]):
            problems.append(f"structured answer keys {keys}, expected {sorted(case['answer_keys'])}")
    if final.finish != FINISH[client][1] or final.input_tokens <= 0 or final.output_tokens <= 0:
        problems.append(f"step 2 finish {final.finish}, usage {final.input_tokens}/{final.output_tokens}")
    if problems:
        return Outcome("wrong", "step 2: " + "; ".join(problems))
    return Outcome("ok")


@pytest.fixture(scope="module")
def admin(gateway: Stack) -> Iterator[MockAdmin]:  # noqa: F811
    with clean_mocks(gateway) as a:
        yield a


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(CASES))
def test_corpus(gateway: Stack, admin: MockAdmin, name: str, backend: str, mode: str) -> None:  # noqa: F811
    outcome = run_case(gateway, admin, name, backend, mode == "streamed")
    RESULTS[(name, backend, mode)] = outcome
    assert outcome.kind != "wrong", outcome.detail


# ---- the README's totals ---------------------------------------------------------------------------------


def totals_markdown(results: dict[tuple[str, str, str], Outcome]) -> str:
    """One line: cases, ok, refused (by the client field named), wrong (by what was wrong)."""
    kinds = [o.kind for o in results.values()]
    refused: dict[str, set[str]] = {}
    wrong: dict[str, set[str]] = {}
    for (name, backend, _), o in sorted(results.items()):
        pair = f"{CASES[name]['client']}→{backend}"
        if o.kind == "refused":
            refused.setdefault(o.detail, set()).add(pair)
        elif o.kind == "wrong":
            wrong.setdefault(o.detail[:120], set()).add(pair)

    def why(d: dict[str, set[str]]) -> str:
        return " (" + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in d.items()) + ")" if d else ""

    return (
        f"**Agent corpus** (`tests/test_agent_corpus.py`: {len(CASES)} agent turns x {len(BACKENDS)} "
        f"backends x step 1 plain or streamed): {len(kinds)} cases, ok {kinds.count('ok')}, "
        f"refused {kinds.count('refused')}{why(refused)}, wrong {kinds.count('wrong')}{why(wrong)}."
    )


def test_readme_corpus_totals(gateway: Stack, admin: MockAdmin) -> None:  # noqa: F811
    # The cases this session did not run (a -k selection) are run here: the totals are always checked.
    for name in CASES:
        for backend in BACKENDS:
            for mode in MODES:
                if (name, backend, mode) not in RESULTS:
                    RESULTS[(name, backend, mode)] = run_case(
                        gateway, admin, name, backend, mode == "streamed"
                    )
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the agent-corpus markers"
    line = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert line == totals_markdown(RESULTS), (
        f"README corpus totals are stale; they are:\n{totals_markdown(RESULTS)}"
    )


if __name__ == "__main__":
    import sys

    pytest.main(["-q", "-p", "no:cacheprovider", __file__, "-k", "test_corpus"])
    ran = [
        m.RESULTS for n, m in list(sys.modules.items()) if n.endswith("test_agent_corpus") and n != __name__
    ]
    print(totals_markdown(ran[0] if ran else {}))
