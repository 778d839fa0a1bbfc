"""docs/mapping.md, generated from the codecs: what each client field becomes on each target.

Each probe is a minimal request of one client dialect plus one field. It goes the way a chat
request goes through the gateway (``request/plan.py``): parsed by the client's codec, clamped
to the target model's catalog limits (output cap, stop sequences, media types), tool names and
ids fitted to the target, built by the target's codec (``drop_unsupported`` off) and fitted to
its wire. What comes out is compared with the same request without the field:

- the probe's marker value found in the built body: *mapped*, to where it was found;
- no marker but a different body: the differing keys (with their values: a clamp or a fitted
  name shows there);
- the same body: *dropped*;
- a ``GatewayError``: *refused*, with the gateway's reason.

A client and a target of the same wire format are passed through as sent (no codec runs).
``python -m tests.mapping_probes`` prints the document; ``tests/test_mapping_docs.py`` fails
when docs/mapping.md differs from it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from ext_proc.catalog import resolve
from ext_proc.catalog.limits import clamp_to_model
from ext_proc.dialects import get_dialect
from ext_proc.errors import GatewayError
from ext_proc.translation import names

CLIENTS = ("openai", "anthropic", "gemini", "openai_responses")
# target dialect -> the upstream model its probes are built for (the catalog's figures apply)
TARGETS = {
    "openai": "gpt-5.5",
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-3.5-flash",
    "openai_responses": "gpt-5.5",
    "bedrock": "anthropic.claude-sonnet-4-6",
}
LABELS = {
    "openai": "OpenAI Chat",
    "anthropic": "Anthropic Messages",
    "gemini": "Gemini",
    "openai_responses": "OpenAI Responses",
    "bedrock": "Bedrock Converse",
}
CLIENT_MODEL = "probe-model"
DEFAULT_MAX_TOKENS = 4096
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
PDF_B64 = "JVBERi0xLjQKJSVFT0YK"
TXT_B64 = "cHJvYmUgdGV4dCBkb2M="  # "probe text doc"
IMG_URL = "https://example.com/probe.png"
SCHEMA = {
    "type": "object",
    "properties": {"probe_prop": {"type": "string"}},
    "required": ["probe_prop"],
    "additionalProperties": False,
}
PARAMS = {"type": "object", "properties": {"probe_arg": {"type": "string"}}, "required": ["probe_arg"]}
LONG_NAME = "mcp__server__" + "x" * 80
DOTTED = "github.create-issue"
MANY_STOPS = [f"s{i}" for i in range(6)]


@dataclass
class Probe:
    """One client field: ``change`` turns the base request into one that has it; ``marker`` is
    a value (or key) that shows where it lands (None: compare whole bodies)."""

    field: str
    change: Any  # Callable[[dict], None]
    marker: Any = None
    # applied to the request with and without the field (e.g. the tools a tool field is on)
    base: Any = None


def _set(**kv: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        b.update(copy.deepcopy(kv))

    return change


def _gen(**kv: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        b.setdefault("generationConfig", {}).update(copy.deepcopy(kv))

    return change


def _user(*parts: Any, key: str = "messages") -> Any:
    """Replace the user turn's content by ``parts`` (OpenAI, Anthropic)."""

    def change(b: dict[str, Any]) -> None:
        b[key][-1]["content"] = [{"type": "text", "text": "hi"}, *copy.deepcopy(parts)]

    return change


def _turns(*msgs: Any, key: str = "messages") -> Any:
    """Put ``msgs`` before the final user turn."""

    def change(b: dict[str, Any]) -> None:
        b[key][-1:-1] = copy.deepcopy(list(msgs))

    return change


def _history(reply: Any, key: str = "messages") -> Any:
    """The conversation: a user turn, ``reply`` (an assistant turn), the final user turn."""
    first = (
        {"role": "user", "parts": [{"text": "a"}]} if key == "contents" else {"role": "user", "content": "a"}
    )
    last = (
        {"role": "user", "parts": [{"text": "hi"}]}
        if key == "contents"
        else {"role": "user", "content": "hi"}
    )

    def change(b: dict[str, Any]) -> None:
        b[key] = copy.deepcopy([first, reply, last])

    return change


def _append(*msgs: Any, key: str = "messages") -> Any:
    def change(b: dict[str, Any]) -> None:
        b[key].extend(copy.deepcopy(list(msgs)))

    return change


def _both(*changes: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        for c in changes:
            c(b)

    return change


# ---- OpenAI Chat Completions ------------------------------------------------------------------------

O_TOOL = {
    "type": "function",
    "function": {"name": "probe_tool", "description": "probe tool desc", "parameters": PARAMS},
}


def o_tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": PARAMS, **extra}}


O_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_probe1",
            "type": "function",
            "function": {"name": "probe_tool", "arguments": '{"probe_arg":"v"}'},
        }
    ],
}
O_RESULT = {"role": "tool", "tool_call_id": "call_probe1", "content": "probe result"}


def _o_history(call_id: str = "call_probe1", result: str = "probe result") -> Any:
    """A tool round trip before the last user turn, with the call's id and result text."""
    call = {**O_CALL, "tool_calls": [{**O_CALL["tool_calls"][0], "id": call_id}]}
    turns = [{"role": "user", "content": "a"}, call, {**O_RESULT, "tool_call_id": call_id, "content": result}]
    return _set(tools=[O_TOOL], messages=[*turns, {"role": "user", "content": "hi"}])


OPENAI = [
    Probe("max_tokens", _set(max_tokens=123), 123),
    Probe("max_completion_tokens", _set(max_completion_tokens=124), 124),
    Probe("max_tokens above the model's output cap (10000000)", _set(max_tokens=10_000_000)),
    Probe("temperature", _set(temperature=0.37), 0.37),
    Probe("top_p", _set(top_p=0.91), 0.91),
    Probe("stop", _set(stop=["probe_stop"]), "probe_stop"),
    Probe("stop (6 sequences)", _set(stop=MANY_STOPS), "s5"),
    Probe("seed", _set(seed=4242), 4242),
    Probe("presence_penalty", _set(presence_penalty=0.31), 0.31),
    Probe("frequency_penalty", _set(frequency_penalty=0.32), 0.32),
    Probe("n: 2", _set(n=2), None),
    Probe("n: 1", _set(n=1), None),
    Probe("user", _set(user="probe_user"), "probe_user"),
    Probe("safety_identifier", _set(safety_identifier="probe_sid"), "probe_sid"),
    Probe("metadata", _set(metadata={"probe_tag": "v"}), "probe_tag"),
    Probe("store", _set(store=True)),
    Probe("service_tier", _set(service_tier="auto")),
    Probe("prompt_cache_key", _set(prompt_cache_key="probe_pck"), "probe_pck"),
    Probe("prediction", _set(prediction={"type": "content", "content": "probe_pred"}), "probe_pred"),
    Probe("logprobs", _set(logprobs=True)),
    Probe("top_logprobs", _set(logprobs=True, top_logprobs=3)),
    Probe("logit_bias", _set(logit_bias={"50256": -100})),
    Probe("reasoning_effort", _set(reasoning_effort="low"), "low"),
    Probe(
        "response_format json_schema",
        _set(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "probe_fmt", "schema": SCHEMA, "strict": True},
            }
        ),
        "probe_prop",
    ),
    Probe("response_format json_object", _set(response_format={"type": "json_object"})),
    Probe("stream", _set(stream=True)),
    Probe("stream_options.include_usage", _set(stream=True, stream_options={"include_usage": True})),
    Probe("modalities: [text]", _set(modalities=["text"])),
    Probe("audio", _set(modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})),
    Probe("web_search_options", _set(web_search_options={})),
    Probe("tools (function)", _set(tools=[O_TOOL]), "probe tool desc"),
    Probe(
        "tools[].function.strict (closed schema)",
        _set(
            tools=[
                {
                    **o_tool("probe_tool", strict=True),
                    "function": {**o_tool("probe_tool")["function"], "parameters": SCHEMA, "strict": True},
                }
            ]
        ),
        base=_set(
            tools=[
                {
                    **o_tool("probe_tool"),
                    "function": {**o_tool("probe_tool")["function"], "parameters": SCHEMA},
                }
            ]
        ),
    ),
    Probe(
        f"tools[].function.name `{DOTTED}`",
        _set(tools=[o_tool(DOTTED)]),
        base=_set(tools=[o_tool("probe_tool")]),
    ),
    Probe(
        "tools[].function.name, 92 characters",
        _set(tools=[o_tool(LONG_NAME)]),
        base=_set(tools=[o_tool("probe_tool")]),
    ),
    Probe("tool_choice: auto", _set(tool_choice="auto"), base=_set(tools=[O_TOOL])),
    Probe("tool_choice: required", _set(tool_choice="required"), base=_set(tools=[O_TOOL])),
    Probe("tool_choice: none", _set(tool_choice="none"), base=_set(tools=[O_TOOL])),
    Probe(
        "tool_choice: a function",
        _set(tool_choice={"type": "function", "function": {"name": "other_tool"}}),
        base=_set(tools=[o_tool("probe_tool"), o_tool("other_tool")]),
    ),
    Probe("parallel_tool_calls: false", _set(parallel_tool_calls=False), base=_set(tools=[O_TOOL])),
    Probe("messages: leading system", _turns({"role": "system", "content": "probe_sys"}), "probe_sys"),
    Probe("messages: leading developer", _turns({"role": "developer", "content": "probe_dev"}), "probe_dev"),
    Probe(
        "messages: developer mid-conversation",
        _both(
            _turns(
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "developer", "content": "probe_mid"},
            )
        ),
        "probe_mid",
    ),
    Probe(
        "messages[].name",
        _history({"role": "assistant", "content": "b", "name": "probe_name"}),
        "probe_name",
        base=_history({"role": "assistant", "content": "b"}),
    ),
    Probe(
        "tool_calls + tool result",
        _both(_set(tools=[O_TOOL]), _turns({"role": "user", "content": "a"}, O_CALL, O_RESULT)),
        "probe result",
    ),
    Probe("tool_calls[].id of 60 characters", _o_history(call_id="call_" + "y" * 55), base=_o_history()),
    Probe(
        "tool result starting `[tool error]`", _o_history(result="[tool error] probe_fail"), base=_o_history()
    ),
    Probe(
        "user message after tool messages: `Images returned by tool call <id>:` + image_url",
        _both(
            _o_history(),
            lambda b: b["messages"].insert(
                3,
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Images returned by tool call call_probe1:"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    ],
                },
            ),
        ),
        PNG_B64,
        base=_o_history(),
    ),
    Probe(
        "content: image_url (data URL)",
        _user({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}),
        PNG_B64,
    ),
    Probe(
        "content: image_url (data URL `image/jpg`)",
        _user({"type": "image_url", "image_url": {"url": f"data:image/jpg;base64,{PNG_B64}"}}),
        base=_user({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}),
    ),
    Probe(
        "content: image_url (data URL `image/heic`)",
        _user({"type": "image_url", "image_url": {"url": f"data:image/heic;base64,{PNG_B64}"}}),
        base=_user({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}),
    ),
    Probe(
        "content: image_url (https URL)", _user({"type": "image_url", "image_url": {"url": IMG_URL}}), IMG_URL
    ),
    Probe(
        "content: image_url detail",
        _user({"type": "image_url", "image_url": {"url": IMG_URL, "detail": "low"}}),
        "low",
        base=_user({"type": "image_url", "image_url": {"url": IMG_URL}}),
    ),
    Probe(
        "content: file (PDF data)",
        _user(
            {
                "type": "file",
                "file": {"filename": "probe.pdf", "file_data": f"data:application/pdf;base64,{PDF_B64}"},
            }
        ),
        PDF_B64,
    ),
    Probe("content: file (file_id)", _user({"type": "file", "file": {"file_id": "file-probe"}})),
    Probe(
        "content: input_audio",
        _user({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
    ),
]


# ---- Anthropic Messages ----------------------------------------------------------------------------

A_TOOL = {"name": "probe_tool", "description": "probe tool desc", "input_schema": PARAMS}
A_USE = {
    "role": "assistant",
    "content": [
        {"type": "tool_use", "id": "toolu_probe1", "name": "probe_tool", "input": {"probe_arg": "v"}}
    ],
}


def a_result(**extra: Any) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_probe1", "content": "probe result", **extra}
        ],
    }


def _a_history(**extra: Any) -> Any:
    return _set(tools=[A_TOOL], messages=[{"role": "user", "content": "a"}, A_USE, a_result(**extra)])


ANTHROPIC = [
    Probe("max_tokens", _set(max_tokens=123), 123),
    Probe("max_tokens above the model's output cap (10000000)", _set(max_tokens=10_000_000)),
    Probe("system (string)", _set(system="probe_sys"), "probe_sys"),
    Probe(
        "system (blocks, cache_control)",
        _set(system=[{"type": "text", "text": "probe_sys", "cache_control": {"type": "ephemeral"}}]),
        "probe_sys",
    ),
    Probe("temperature", _set(temperature=0.37), 0.37),
    Probe("top_p", _set(top_p=0.91), 0.91),
    Probe("top_k", _set(top_k=17), 17),
    Probe("stop_sequences", _set(stop_sequences=["probe_stop"]), "probe_stop"),
    Probe("stop_sequences (6)", _set(stop_sequences=MANY_STOPS), "s5"),
    Probe("metadata.user_id", _set(metadata={"user_id": "probe_user"}), "probe_user"),
    Probe("service_tier", _set(service_tier="auto")),
    Probe("stream", _set(stream=True)),
    Probe("thinking", _set(max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2048})),
    Probe(
        "output_config.format",
        _set(output_config={"format": {"type": "json_schema", "schema": SCHEMA}}),
        "probe_prop",
    ),
    Probe("tools (custom)", _set(tools=[A_TOOL]), "probe tool desc"),
    Probe(
        "tools[].strict (closed schema)",
        _set(tools=[{**A_TOOL, "input_schema": SCHEMA, "strict": True}]),
        base=_set(tools=[{**A_TOOL, "input_schema": SCHEMA}]),
    ),
    Probe(
        "tools[].cache_control",
        _set(tools=[{**A_TOOL, "cache_control": {"type": "ephemeral"}}]),
        base=_set(tools=[A_TOOL]),
    ),
    Probe(f"tools[].name `{DOTTED}`", _set(tools=[{**A_TOOL, "name": DOTTED}]), base=_set(tools=[A_TOOL])),
    Probe(
        "tools[].name, 92 characters", _set(tools=[{**A_TOOL, "name": LONG_NAME}]), base=_set(tools=[A_TOOL])
    ),
    Probe(
        "tools: server tool (web_search)", _set(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    ),
    Probe("tool_choice: auto", _set(tool_choice={"type": "auto"}), base=_set(tools=[A_TOOL])),
    Probe("tool_choice: any", _set(tool_choice={"type": "any"}), base=_set(tools=[A_TOOL])),
    Probe("tool_choice: none", _set(tool_choice={"type": "none"}), base=_set(tools=[A_TOOL])),
    Probe(
        "tool_choice: a tool",
        _set(tool_choice={"type": "tool", "name": "other_tool"}),
        base=_set(tools=[A_TOOL, {**A_TOOL, "name": "other_tool"}]),
    ),
    Probe(
        "tool_choice.disable_parallel_tool_use",
        _set(tool_choice={"type": "auto", "disable_parallel_tool_use": True}),
        base=_set(tools=[A_TOOL]),
    ),
    Probe(
        "tool_use + tool_result",
        _both(
            _set(tools=[A_TOOL]),
            _turns({"role": "user", "content": "a"}, A_USE, a_result()),
            lambda b: b["messages"].pop(0),
        ),
        "probe result",
    ),
    Probe("tool_result.is_error", _a_history(is_error=True), base=_a_history()),
    Probe(
        "tool_result content: image (base64)",
        _a_history(
            content=[
                {"type": "text", "text": "probe result"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            ]
        ),
        PNG_B64,
        base=_a_history(),
    ),
    Probe(
        "content: text cache_control",
        _user({"type": "text", "text": "probe_cc", "cache_control": {"type": "ephemeral"}}),
        "probe_cc",
    ),
    Probe(
        "content: image (base64)",
        _user({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}),
        PNG_B64,
    ),
    Probe(
        "content: image (base64 `image/gif`)",
        _user({"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": PNG_B64}}),
        base=_user(
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
        ),
    ),
    Probe(
        "content: image (url)", _user({"type": "image", "source": {"type": "url", "url": IMG_URL}}), IMG_URL
    ),
    Probe(
        "content: document (base64 PDF)",
        _user(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
                "title": "probe.pdf",
            }
        ),
        PDF_B64,
    ),
    Probe(
        "content: document (plain text)",
        _user(
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "probe text doc"},
            }
        ),
        "probe text doc",
    ),
    Probe(
        "content: document citations",
        _user(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
                "citations": {"enabled": True},
            }
        ),
    ),
    Probe(
        "content: image (file_id)",
        _user({"type": "image", "source": {"type": "file", "file_id": "file_probe"}}),
    ),
    Probe("assistant prefill", _append({"role": "assistant", "content": "probe_prefill"}), "probe_prefill"),
    Probe(
        "assistant thinking block",
        _history(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "b"},
                ],
            }
        ),
        base=_history({"role": "assistant", "content": [{"type": "text", "text": "b"}]}),
    ),
]


# ---- Gemini generateContent ----------------------------------------------------------------------------

G_TOOL = {
    "functionDeclarations": [
        {"name": "probe_tool", "description": "probe tool desc", "parametersJsonSchema": PARAMS}
    ]
}


def g_decl(name: str) -> dict[str, Any]:
    return {"functionDeclarations": [{"name": name, "description": "d", "parametersJsonSchema": PARAMS}]}


G_CALL = {"role": "model", "parts": [{"functionCall": {"name": "probe_tool", "args": {"probe_arg": "v"}}}]}


def g_result(response: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": [{"functionResponse": {"name": "probe_tool", "response": response}}]}


def _g_user(*parts: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        b["contents"][-1]["parts"] = [{"text": "hi"}, *copy.deepcopy(parts)]

    return change


def _g_turns(*contents: Any) -> Any:
    return _turns(*contents, key="contents")


def _g_history(response: dict[str, Any]) -> Any:
    return _set(
        tools=[G_TOOL], contents=[{"role": "user", "parts": [{"text": "a"}]}, G_CALL, g_result(response)]
    )


GEMINI = [
    Probe("systemInstruction", _set(systemInstruction={"parts": [{"text": "probe_sys"}]}), "probe_sys"),
    Probe("generationConfig.maxOutputTokens", _gen(maxOutputTokens=123), 123),
    Probe(
        "generationConfig.maxOutputTokens above the model's output cap (10000000)",
        _gen(maxOutputTokens=10_000_000),
    ),
    Probe("generationConfig.temperature", _gen(temperature=0.37), 0.37),
    Probe("generationConfig.topP", _gen(topP=0.91), 0.91),
    Probe("generationConfig.topK", _gen(topK=17), 17),
    Probe("generationConfig.stopSequences", _gen(stopSequences=["probe_stop"]), "probe_stop"),
    Probe("generationConfig.stopSequences (6)", _gen(stopSequences=MANY_STOPS), "s5"),
    Probe("generationConfig.seed", _gen(seed=4242), 4242),
    Probe("generationConfig.presencePenalty", _gen(presencePenalty=0.31), 0.31),
    Probe("generationConfig.frequencyPenalty", _gen(frequencyPenalty=0.32), 0.32),
    Probe("generationConfig.candidateCount: 2", _gen(candidateCount=2)),
    Probe(
        "generationConfig.responseMimeType + responseJsonSchema",
        _gen(responseMimeType="application/json", responseJsonSchema=SCHEMA),
        "probe_prop",
    ),
    Probe(
        "generationConfig.responseMimeType + responseSchema",
        _gen(
            responseMimeType="application/json",
            responseSchema={"type": "OBJECT", "properties": {"probe_prop": {"type": "STRING"}}},
        ),
        "probe_prop",
    ),
    Probe("generationConfig.responseMimeType alone (JSON mode)", _gen(responseMimeType="application/json")),
    Probe("generationConfig.responseModalities: [TEXT]", _gen(responseModalities=["TEXT"])),
    Probe("generationConfig.responseLogprobs", _gen(responseLogprobs=True)),
    Probe("generationConfig.thinkingConfig", _gen(thinkingConfig={"thinkingBudget": 1024})),
    Probe(
        "safetySettings",
        _set(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]),
    ),
    Probe("cachedContent", _set(cachedContent="cachedContents/probe")),
    Probe("labels", _set(labels={"probe_label": "v"})),
    Probe("tools[].functionDeclarations", _set(tools=[G_TOOL]), "probe tool desc"),
    Probe(
        f"functionDeclarations[].name `{DOTTED}`",
        _set(tools=[g_decl(DOTTED)]),
        base=_set(tools=[g_decl("probe_tool")]),
    ),
    Probe("tools[].googleSearch", _set(tools=[{"googleSearch": {}}])),
    Probe("tools[].codeExecution", _set(tools=[{"codeExecution": {}}])),
    Probe(
        "toolConfig AUTO",
        _set(toolConfig={"functionCallingConfig": {"mode": "AUTO"}}),
        base=_set(tools=[G_TOOL]),
    ),
    Probe(
        "toolConfig ANY",
        _set(toolConfig={"functionCallingConfig": {"mode": "ANY"}}),
        base=_set(tools=[G_TOOL]),
    ),
    Probe(
        "toolConfig NONE",
        _set(toolConfig={"functionCallingConfig": {"mode": "NONE"}}),
        base=_set(tools=[G_TOOL]),
    ),
    Probe(
        "toolConfig ANY + allowedFunctionNames",
        _set(toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["other_tool"]}}),
        base=_set(tools=[G_TOOL, g_decl("other_tool")]),
    ),
    Probe(
        "functionCall + functionResponse",
        _both(
            _set(tools=[G_TOOL]),
            _g_turns(
                {"role": "user", "parts": [{"text": "a"}]}, G_CALL, g_result({"result": "probe result"})
            ),
            lambda b: b["contents"].pop(0),
        ),
        "probe result",
    ),
    Probe(
        "functionResponse.response.error",
        _g_history({"error": "probe_fail"}),
        base=_g_history({"result": "probe_fail"}),
    ),
    Probe(
        "functionResponse.parts: inlineData image",
        _both(
            _g_history({"result": "probe result"}),
            lambda b: b["contents"][-1]["parts"][0]["functionResponse"].update(
                parts=[{"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]
            ),
        ),
        PNG_B64,
        base=_g_history({"result": "probe result"}),
    ),
    Probe(
        "parts: inlineData image",
        _g_user({"inlineData": {"mimeType": "image/png", "data": PNG_B64}}),
        PNG_B64,
    ),
    Probe(
        "parts: inlineData `image/jpg`",
        _g_user({"inlineData": {"mimeType": "image/jpg", "data": PNG_B64}}),
        base=_g_user({"inlineData": {"mimeType": "image/png", "data": PNG_B64}}),
    ),
    Probe(
        "parts: inlineData `image/heic`",
        _g_user({"inlineData": {"mimeType": "image/heic", "data": PNG_B64}}),
        base=_g_user({"inlineData": {"mimeType": "image/png", "data": PNG_B64}}),
    ),
    Probe(
        "parts: inlineData PDF",
        _g_user({"inlineData": {"mimeType": "application/pdf", "data": PDF_B64}}),
        PDF_B64,
    ),
    Probe(
        "parts: fileData (https URL)",
        _g_user({"fileData": {"mimeType": "image/png", "fileUri": IMG_URL}}),
        IMG_URL,
    ),
    Probe(
        "parts: fileData (Files API URI)",
        _g_user(
            {
                "fileData": {
                    "mimeType": "image/png",
                    "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/probe",
                }
            }
        ),
    ),
    Probe("parts: inlineData audio", _g_user({"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}})),
    Probe(
        "model turn with a thought part",
        _history(
            {"role": "model", "parts": [{"text": "hmm", "thought": True}, {"text": "b"}]}, key="contents"
        ),
        base=_history({"role": "model", "parts": [{"text": "b"}]}, key="contents"),
    ),
]


# ---- OpenAI Responses ----------------------------------------------------------------------------------

R_TOOL = {
    "type": "function",
    "name": "probe_tool",
    "description": "probe tool desc",
    "parameters": PARAMS,
    "strict": False,
}
R_CALL = {
    "type": "function_call",
    "call_id": "call_probe1",
    "name": "probe_tool",
    "arguments": '{"probe_arg":"v"}',
}
R_OUT = {"type": "function_call_output", "call_id": "call_probe1", "output": "probe result"}


def _r_user(*parts: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        b["input"] = [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, *copy.deepcopy(parts)]}
        ]

    return change


def _r_items(*items: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        b["input"] = [{"role": "user", "content": "a"}, *copy.deepcopy(items)]

    return change


RESPONSES = [
    Probe("instructions", _set(instructions="probe_sys"), "probe_sys"),
    Probe("max_output_tokens", _set(max_output_tokens=123), 123),
    Probe("max_output_tokens above the model's output cap (10000000)", _set(max_output_tokens=10_000_000)),
    Probe("temperature", _set(temperature=0.37), 0.37),
    Probe("top_p", _set(top_p=0.91), 0.91),
    Probe("user", _set(user="probe_user"), "probe_user"),
    Probe("safety_identifier", _set(safety_identifier="probe_sid"), "probe_sid"),
    Probe("metadata", _set(metadata={"probe_tag": "v"}), "probe_tag"),
    Probe("store", _set(store=False)),
    Probe("service_tier", _set(service_tier="auto")),
    Probe("prompt_cache_key", _set(prompt_cache_key="probe_pck"), "probe_pck"),
    Probe("stream", _set(stream=True)),
    Probe("reasoning.effort", _set(reasoning={"effort": "low"}), "low"),
    Probe("reasoning.summary", _set(reasoning={"summary": "auto"})),
    Probe(
        "text.format json_schema",
        _set(text={"format": {"type": "json_schema", "name": "probe_fmt", "schema": SCHEMA, "strict": True}}),
        "probe_prop",
    ),
    Probe("text.format json_object", _set(text={"format": {"type": "json_object"}})),
    Probe("text.verbosity", _set(text={"verbosity": "low"})),
    Probe("truncation: auto", _set(truncation="auto")),
    Probe("include: reasoning.encrypted_content", _set(include=["reasoning.encrypted_content"])),
    Probe("top_logprobs", _set(top_logprobs=3)),
    Probe("max_tool_calls", _set(max_tool_calls=3), base=_set(tools=[R_TOOL])),
    Probe("tools (function)", _set(tools=[R_TOOL]), "probe tool desc"),
    Probe(
        "tools[].strict: true (closed schema)",
        _set(tools=[{**R_TOOL, "parameters": SCHEMA, "strict": True}]),
        base=_set(tools=[{**R_TOOL, "parameters": SCHEMA}]),
    ),
    Probe(f"tools[].name `{DOTTED}`", _set(tools=[{**R_TOOL, "name": DOTTED}]), base=_set(tools=[R_TOOL])),
    Probe("tools: web_search", _set(tools=[{"type": "web_search"}])),
    Probe("tool_choice: required", _set(tool_choice="required"), base=_set(tools=[R_TOOL])),
    Probe(
        "tool_choice: a function",
        _set(tool_choice={"type": "function", "name": "other_tool"}),
        base=_set(tools=[R_TOOL, {**R_TOOL, "name": "other_tool"}]),
    ),
    Probe("parallel_tool_calls: false", _set(parallel_tool_calls=False), base=_set(tools=[R_TOOL])),
    Probe(
        "input: developer message mid-conversation",
        _r_items(
            {"role": "assistant", "content": "b"},
            {"role": "developer", "content": "probe_mid"},
            {"role": "user", "content": "c"},
        ),
        "probe_mid",
    ),
    Probe(
        "input: function_call + function_call_output",
        _both(_set(tools=[R_TOOL]), _r_items(R_CALL, R_OUT)),
        "probe result",
    ),
    Probe(
        "function_call_output.output: input_image",
        _both(
            _set(tools=[R_TOOL]),
            _r_items(
                R_CALL,
                {
                    **R_OUT,
                    "output": [
                        {"type": "input_text", "text": "probe result"},
                        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
                    ],
                },
            ),
        ),
        PNG_B64,
        base=_both(_set(tools=[R_TOOL]), _r_items(R_CALL, R_OUT)),
    ),
    Probe(
        "input: input_image (data URL)",
        _r_user({"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"}),
        PNG_B64,
    ),
    Probe(
        "input: input_image (https URL)",
        _r_user({"type": "input_image", "image_url": IMG_URL, "detail": "auto"}),
        IMG_URL,
    ),
    Probe(
        "input: input_image (file_id)",
        _r_user({"type": "input_image", "file_id": "file-probe", "detail": "auto"}),
    ),
    Probe(
        "input: input_file (PDF data)",
        _r_user(
            {
                "type": "input_file",
                "filename": "probe.pdf",
                "file_data": f"data:application/pdf;base64,{PDF_B64}",
            }
        ),
        PDF_B64,
    ),
]

BASES: dict[str, dict[str, Any]] = {
    "openai": {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "hi"}]},
    "anthropic": {"model": CLIENT_MODEL, "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    "openai_responses": {"model": CLIENT_MODEL, "input": "hi"},
}
PROBES = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI, "openai_responses": RESPONSES}


# ---- running a probe -------------------------------------------------------------------------------------


def translate(client: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` of a ``client`` chat request as the gateway sends it to a ``target`` backend
    (the steps of ``request.plan._route`` for a translated request)."""
    upstream = TARGETS[target]
    tdialect = get_dialect(target)
    path_model = CLIENT_MODEL if client == "gemini" else None
    ir = get_dialect(client).codec.parse_request(copy.deepcopy(body), path_model, bool(body.get("stream")))
    caps = resolve(target, upstream)
    default_max = clamp_to_model(
        ir, caps, DEFAULT_MAX_TOKENS, tdialect.codec.media, False, tdialect.codec.dialect
    )
    rules = names.rules_for(tdialect.codec, caps)
    out = tdialect.codec.build_request(
        names.fit_request(ir, rules), upstream, default_max_tokens=default_max, drop_unsupported=False
    )
    return tdialect.fit_body(out, caps)


def _leaves(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path with list indexes as ``[]``, leaf value) of every leaf; a key is a leaf of its own too."""
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            out.append((p, _KEY))
            out += _leaves(v, p)
        return out
    if isinstance(obj, list) and obj:
        return [leaf for v in obj for leaf in _leaves(v, f"{path}[]")]
    return [(path, "{}" if obj == {} else "[]" if obj == [] else obj)]


_KEY = object()


def _short(path: str, depth: int = 4) -> str:
    """``path`` cut after its ``depth``-th key (a schema's inside is not the point)."""
    keys = path.split(".")
    return ".".join(keys[:depth])


def _matches(value: Any, marker: Any) -> bool:
    """A string marker anywhere in a string value; any other marker equal and of the same type."""
    if isinstance(marker, str):
        return isinstance(value, str) and marker in value
    return type(value) is type(marker) and value == marker


def _found(body: dict[str, Any], marker: Any) -> list[str]:
    hits: list[str] = []
    for p, v in _leaves(body):
        if v is _KEY:
            if p.rsplit(".", 1)[-1] == marker:
                hits.append(_short(p.rsplit(".", 1)[0]))
        elif _matches(v, marker):
            hits.append(_short(p))
    return list(dict.fromkeys(hits))


def _diff(base: dict[str, Any], out: dict[str, Any]) -> list[str]:
    b = [(p, v) for p, v in _leaves(base) if v is not _KEY]
    o = [(p, v) for p, v in _leaves(out) if v is not _KEY]
    added = [(p, v) for p, v in o if (p, v) not in b]
    removed = [p for p, v in b if (p, v) not in o and p not in {q for q, _ in o}]
    shown: dict[str, str] = {}
    for p, v in added:
        short = _short(p)
        if short == p and isinstance(v, (int, float, str, bool)) and len(str(v)) <= 48:
            shown.setdefault(short, f"`{short}`: `{_json(v)}`")
        else:
            shown.setdefault(short, f"`{short}`")
    for p in removed:
        shown.setdefault(_short(p), f"`{_short(p)}` left out")
    return list(shown.values())


def _json(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


def _reason(err: GatewayError) -> str:
    msg = re.sub(r"; remove it, or set 'drop_unsupported: true'.*$", "", err.message)
    return msg.replace("|", "\\|")


def outcome(client: str, target: str, probe: Probe) -> str:
    """One table cell: where ``probe``'s field lands on ``target``, or why it does not."""
    if get_dialect(client).wire == get_dialect(target).wire:
        return "as sent"
    plain = copy.deepcopy(BASES[client])
    if probe.base is not None:
        probe.base(plain)
    body = copy.deepcopy(plain)
    probe.change(body)
    try:
        out = translate(client, target, body)
    except GatewayError as e:
        return f"**refused**: {_reason(e)}"
    base = translate(client, target, plain)
    codec = get_dialect(target).codec
    path = codec.request_path(TARGETS[target], bool(body.get("stream")))
    if path != codec.request_path(TARGETS[target], bool(plain.get("stream"))) and out == base:
        return f"→ the path (`{path}`)"
    if probe.marker is not None:
        hits = _found(out, probe.marker)
        if hits:
            return "→ " + ", ".join(f"`{h}`" for h in hits[:3]) + (" …" if len(hits) > 3 else "")
    changed = _diff(base, out)
    if not changed:
        return "dropped"
    return "→ " + ", ".join(changed[:4]) + (" …" if len(changed) > 4 else "")


def mapping_markdown() -> str:
    lines = [
        "# Field-by-field mapping",
        "",
        "<!-- generated by `python -m tests.mapping_probes`; tests/test_mapping_docs.py fails when it is stale -->",
        "",
        "What each field a client sends becomes on each backend dialect, observed from the code: each",
        "row is a minimal request of the client's dialect with that one field, parsed by the client's",
        "codec, clamped to the target model's catalog limits (output cap, stop sequences, media types:",
        "`ext_proc/catalog/limits.py`), tool names and ids fitted to the target",
        "(`ext_proc/translation/names.py`), built by the target's codec and fitted to its wire — what",
        "`request/plan.py` does — with `drop_unsupported` off. A cell says:",
        "",
        "- `→ key`: *mapped*, to where the field's value was found in the body built for the target",
        "  (paths cut at four keys, `[]` for a list). Where the value itself is not found, the keys",
        "  that differ from the same request without the field, with their values: a clamp to the",
        "  model's output cap or a fitted tool name shows there (*mapped with a limit*).",
        "- *dropped*: the target's body is the same as without the field (bookkeeping, or a value",
        "  that asks for the default).",
        "- **refused**: a 400 in the client's dialect with this message (naming the client's field);",
        "  a model with `drop_unsupported: true` drops the field instead.",
        "- *as sent*: client and backend speak the same wire format; the body passes through untouched",
        "  (but for the model name).",
        "",
        "Target models (their catalog figures apply): "
        + ", ".join(f"{LABELS[t]} `{m}`" for t, m in TARGETS.items())
        + ". Claude and Gemini on Vertex AI and Azure OpenAI share the wire of Anthropic, Gemini"
        " and OpenAI Chat (their catalog entries may differ in figures).",
        "",
    ]
    for client in CLIENTS:
        lines += [f"## {LABELS[client]} clients", ""]
        head = ["field", *(LABELS[t] for t in TARGETS)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for probe in PROBES[client]:
            cells = [outcome(client, t, probe) for t in TARGETS]
            lines.append(f"| {probe.field} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mapping_markdown(), end="")
