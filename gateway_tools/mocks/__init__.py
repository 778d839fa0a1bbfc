"""Fake OpenAI (Chat Completions and Responses), Anthropic, Gemini, Vertex AI, Azure OpenAI and
AWS Bedrock servers that speak each provider's real wire format.

The gateway's end-to-end tests, its ``up`` command and its load tests point the
gateway at these instead of the real APIs. Each mock checks requests the way its
real provider does (paths, auth headers, required and unknown fields, tool-call
pairing) and answers with that provider's error shapes, so a translation mistake
in the gateway surfaces as the same 4xx the real provider would send. Replies are
deterministic (see ``_plan``) so tests can assert them exactly, and every server
has fault injection and request stats under ``/_mock/``.

This package shares no code with the gateway's codecs (``ext_proc.dialects``) on purpose: only an
independent implementation can catch the codecs' mistakes.

Replies (the same rules in every dialect):

* text: ``[<spec name>:<model>] <text of the last user turn>``, whitespace
  normalised; streamed as one delta per word that join back to that text;
* a call of the first declared tool (or the one ``tool_choice`` names) when that
  text starts with ``use tool``; a forced tool choice (OpenAI ``required``/named,
  Anthropic ``any``/``tool``, Gemini ``ANY``) calls even without it, and ``none``
  never does; ``use all tools`` calls every declared tool at once (parallel tool
  calls) unless the request turns parallel calls off. Arguments conform to the
  tool's schema (``_tool_args``: required properties with type-correct values,
  strings being the last user text); a tool that declares no properties gets
  ``{"echo": <last user text>}``;
* the provider's refusal when that text starts with ``refuse``;
* thinking when asked for (Anthropic signed thinking blocks, Bedrock signed
  ``reasoningContent`` blocks for Claude models, Gemini thought parts and thought
  signatures, OpenAI reasoning tokens), and cache reads and writes
  for repeated prefixes of 1024+ words;
* ``[<name>:<model>] tool result: <result text>`` when the conversation ends
  with tool results;
* usage: input = words of all system and message text parts (not tool calls or
  results), output = words of the reply, or 1 for a tool call; a stop sequence
  cuts the reply where it first occurs; max tokens cut it to that many words.

Per server, ``/_mock/faults`` (GET, POST ``{"mode", "status", "retry_after",
"delay_ms", "rate", "message"}``, DELETE) sets the fault applied to model
endpoints (``message`` replaces the text of an ``error`` fault, e.g. ``"prompt
is too long"`` with status 400 to play a context-length error; ``delay_ms`` is
the pause of ``slow``, and of ``trickle`` between two bytes), and
``/_mock/stats`` (GET, DELETE) counts their requests and lists the tool-call
ids the server issued (``tool_call_ids``), so tests can check that a client
got the backend's id.

One module per provider (``openai_chat``, ``openai_responses``, ``anthropic_messages``, ``gemini``,
and the clouds: ``vertex`` for Gemini and Claude on Vertex AI, ``azure`` for Azure OpenAI, each with
its own OAuth2 token endpoint, ``tokens``; ``bedrock`` for AWS Bedrock), what they share in
``common`` and their lifecycle in ``server``. OpenAI's two dialects are served by one server, as
OpenAI serves both. The OpenAI mock also plays OpenAI-compatible hosts' quirks (its ``quirks``).
The Bedrock mock verifies SigV4 signatures instead of a key (``MockSpec.key_id`` and its secret)
and streams AWS event-stream frames; with a role (``MockSpec.role_arn``) it is also the account's STS
(``sts``: ``AssumeRoleWithWebIdentity``, short-lived numbered credentials, refused once expired); ``stream_malformed`` sends a frame whose checksum does not
match. With structured output asked for (a JSON schema), the reply text is a JSON value of that
schema whose strings are the usual reply and whose numbers are its word count.
"""

from .common import FAULT_MODES, NON_ANSWERS, MockSpec
from .server import BackgroundMocks, MockProviders, run_forever, start, start_in_thread

__all__ = [
    "FAULT_MODES",
    "NON_ANSWERS",
    "BackgroundMocks",
    "MockProviders",
    "MockSpec",
    "run_forever",
    "start",
    "start_in_thread",
]
