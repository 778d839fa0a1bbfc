"""The internal representation (IR) every dialect codec converts to and from.

Hub and spoke: N dialects need N codecs, not N x N translators. The IR is the
richest common shape of a chat request, a response, a stream event and an
error. Anything a dialect can say that the IR cannot carry is reported by the
decoder in ``ChatRequest.unmapped`` so the gateway can refuse it (or drop it
when config says so) instead of losing it silently.

Conventions:
- ``Usage.input_tokens`` counts *all* prompt tokens, cached ones included;
  ``cached_input_tokens`` is the part read from a prompt cache and
  ``cache_write_tokens`` the part written to one (dialects that count these
  separately convert).
- Tool-call arguments are JSON text, as most dialects stream them.
- Stop reasons use the canonical names in ``STOP_REASONS``.
- A prompt-cache breakpoint (a dialect's explicit cache marker) is the ``cache`` field of the
  part, system part or tool it ends: its TTL (``CACHE_TTLS``). Targets without breakpoints
  drop it (it never changes the answer); see docs/caching.md.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

# ``system``: an instruction in mid-conversation, where the client put it (text only); a
# leading system prompt is ``ChatRequest.system``. Targets without in-place system messages
# get it as marked user text (``translation.markers.inline_system``).
Role = Literal["user", "assistant", "tool", "system"]

# Canonical stop reasons. Codecs map their dialect's values onto these.
#   end_turn        natural end of the answer
#   max_tokens      output cut by the token limit
#   stop_sequence   a client stop sequence matched
#   tool_use        the model wants tool results
#   content_filter  output withheld by a safety filter
#   refusal         the model refused
#   other           anything else (reported, never invented)
STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "content_filter", "refusal", "other")
StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "content_filter", "refusal", "other"
]


# Prompt-cache TTLs a breakpoint can ask for (default 5 minutes).
CACHE_TTLS = ("5m", "1h")
DEFAULT_CACHE_TTL = "5m"


@dataclass(slots=True)
class TextPart:
    text: str
    cache: str | None = None  # a cache breakpoint ends here (its TTL)


@dataclass(slots=True)
class ImagePart:
    """An image, inline (base64 ``data`` + ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    # Where the client put this part (the field path in its own dialect), so a target that cannot
    # take it names the client's field, not an IR index; not part of the part's value.
    path: str | None = field(default=None, compare=False, repr=False)
    cache: str | None = None


@dataclass(slots=True)
class FilePart:
    """A document (e.g. a PDF), inline (base64 ``data`` + ``media_type``) or by ``url``. Not an
    image: codecs that cannot take documents refuse it (or drop it) by its path. A plain-text
    document (``media_type`` ``text/plain``) keeps its text base64-encoded in ``data`` too;
    targets without text documents send it as a text part (``text_of``)."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    filename: str | None = None
    path: str | None = field(default=None, compare=False, repr=False)  # as ``ImagePart.path``
    cache: str | None = None


@dataclass(slots=True)
class ToolCallPart:
    """An assistant's request to call a tool; ``arguments`` is JSON text. ``signature`` is the
    provider's opaque reasoning signature attached to the call itself (some dialects put one
    on a function call), which must come back with it (docs/reasoning.md)."""

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None
    cache: str | None = None
    # Where the client put ``id`` (its own field path): a sealed id that fails names it.
    id_path: str | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class ToolResultPart:
    """The result of a tool call, matched to the call by ``tool_call_id``.

    ``name`` is the called tool's name: some dialects need it; decoders of
    those that do not send it look it up in the conversation.
    """

    tool_call_id: str
    content: list[TextPart | ImagePart] = field(default_factory=list)
    name: str | None = None
    is_error: bool = False
    path: str | None = field(default=None, compare=False, repr=False)  # as ``ImagePart.path``
    cache: str | None = None
    id_path: str | None = field(default=None, compare=False, repr=False)  # as ``ToolCallPart.id_path``


@dataclass(slots=True)
class ReasoningPart:
    """The model's reasoning in an assistant turn (docs/reasoning.md).

    ``text`` is the thought (or its summary; may be empty), ``signature`` the provider's
    opaque proof of it (a thinking block's signature, a thought signature, encrypted
    reasoning), ``redacted`` the opaque data of a redacted block. ``origin`` is the provider
    family that issued the signature (a name the dialect codecs agree on), None when it came
    raw from the client in its own dialect. Between the gateway and a client of another
    dialect the signature travels sealed (``translation.reasoning``)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    origin: str | None = None


Part = TextPart | ImagePart | FilePart | ToolCallPart | ToolResultPart | ReasoningPart

PDF = "application/pdf"
PLAIN_TEXT = "text/plain"


def text_of(p: FilePart) -> str | None:
    """The text of an inline plain-text document (None for anything else, or bad base64)."""
    if p.data is None or (p.media_type or "").split(";")[0].strip().lower() != PLAIN_TEXT:
        return None
    try:
        return base64.b64decode(p.data, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def text_document(text: str, filename: str | None = None, path: str | None = None) -> FilePart:
    """A plain-text document as an IR part."""
    return FilePart(PLAIN_TEXT, base64.b64encode(text.encode()).decode(), None, filename, path)


def part_path(part: object, fallback: str) -> str:
    """Where the client put ``part`` (``fallback``, an IR-index path, when the parser did not say)."""
    return getattr(part, "path", None) or fallback


@dataclass(slots=True)
class Message:
    """One turn. ``tool`` turns carry only ``ToolResultPart``s, ``system`` turns only ``TextPart``s."""

    role: Role
    parts: list[Part]


def append_part(messages: list[Message], role: Role, part: Part) -> None:
    """Add ``part`` to the conversation, joining the last turn if it has the same role
    (dialects that allow consecutive turns of one role map onto a single IR turn)."""
    if messages and messages[-1].role == role:
        messages[-1].parts.append(part)
    else:
        messages.append(Message(role, [part]))


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    # The client asked that calls follow ``parameters`` exactly (a tool's ``strict``);
    # None: not said. Targets with a strict mode send it; others drop it (documented).
    strict: bool | None = None
    cache: str | None = None  # a cache breakpoint ends the tools here


@dataclass(slots=True)
class ToolChoice:
    """``auto`` (model decides), ``none``, ``required`` (some tool), or ``tool`` (the named one)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None


@dataclass(slots=True)
class ResponseFormat:
    """Structured output: ``json_object`` (any JSON) or ``json_schema`` (``schema``).
    ``strict``: the client asked for the schema to be enforced exactly (None: not said)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Thinking:
    """Reasoning controls beyond an effort name (``ChatRequest.reasoning_effort``), as the
    client said them; ``translation.reasoning`` maps them onto a backend's vocabulary.

    ``mode``: "enabled" (a token budget), "adaptive" (the model decides), "disabled", or None
    (only an effort was given). ``include_thoughts``: the client wants the reasoning text
    (summaries) in the answer. ``summary``: the Responses ``reasoning.summary`` value."""

    mode: Literal["enabled", "adaptive", "disabled"] | None = None
    budget_tokens: int | None = None
    include_thoughts: bool | None = None
    summary: str | None = None
    # Filled by translation.reasoning.resolve for the chosen backend: the style it was
    # resolved in (None: not yet) and, for the level style, the level to send.
    style: str | None = None
    level: str | None = None
    # The budget was the gateway's (from an effort, or a dynamic budget), not one the client
    # gave: a token limit too small for the smallest budget then means no thinking, not a 400.
    derived: bool = False


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: list[TextPart] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int | None = None
    response_format: ResponseFormat | None = None
    # How hard a reasoning model thinks: "none", "minimal", "low", "medium", "high"... as the client said it.
    reasoning_effort: str | None = None
    # Budget / mode / thought summaries (None: the client said nothing beyond the effort).
    thinking: Thinking | None = None
    user: str | None = None
    # A prompt-cache routing key the client gave its provider; a hint only, dropped elsewhere.
    prompt_cache_key: str | None = None
    stream: bool = False
    # The client asked for usage in its stream (dialects where that is optional).
    stream_include_usage: bool = False
    # Client fields the IR cannot carry, by the client's own field path.
    unmapped: list[str] = field(default_factory=list)
    # Why an unmapped path cannot go to other dialects, where more can be said than
    # "cannot be expressed" (e.g. a provider's own file reference).
    unmapped_reasons: dict[str, str] = field(default_factory=dict)
    # Unmapped paths refused even where config drops unsupported fields, since leaving them out
    # changes the answer (e.g. a reference to a prompt cached at the client's provider).
    unmapped_required: list[str] = field(default_factory=list)
    # The dialect this request was parsed from, and the raw values of those
    # unmapped paths that address plain object fields (no list index), e.g.
    # ``logprobs`` or ``config.someOption``. A codec building a
    # request for its own dialect re-inserts them instead of refusing them;
    # every other dialect refuses (or drops) them.
    source_dialect: str | None = None
    unmapped_values: dict[str, Any] = field(default_factory=dict)
    # An IR field's name as the client's dialect spells it (where it differs),
    # so a refusal names the field the client actually sent.
    field_names: dict[str, str] = field(default_factory=dict)
    # Request settings the client's dialect repeats in its responses (e.g. a
    # response object that echoes the tools and instructions it was given),
    # as that dialect's parser found them; only its own renderer reads them.
    echo: dict[str, Any] = field(default_factory=dict)
    # Key that seals reasoning signatures in this client's answers (translation.reasoning);
    # set by the gateway after it unsealed the request, None: answers carry no seals.
    seal_key: bytes | None = None


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    # The part of output_tokens the model spent reasoning.
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Choice:
    """A further answer to the same request (a client that asked for several)."""

    content: list[TextPart | ToolCallPart | ReasoningPart]
    stop_reason: StopReason = "end_turn"


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    content: list[TextPart | ToolCallPart | ReasoningPart]
    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    # Answers 2..n when the backend gave several (``usage`` counts them all): carried to clients
    # whose dialect has several (``Codec.several_answers``); any other client is refused the answer.
    more: list[Choice] = field(default_factory=list)


# ---- stream events -------------------------------------------------------
# A stream is: MessageStart, then blocks (BlockStart, BlockDelta*, BlockStop)
# with increasing indexes, then MessageDelta (stop reason + final usage), then
# MessageStop. An error at any point is a StreamError and ends the stream.
# Several answers (``n`` / ``candidateCount`` > 1) stream together: each block names
# its answer (``BlockStart.choice``; block indexes stay unique across answers), and
# MessageDelta carries the stop reasons of answers 2..n in ``more_stops``.


@dataclass(slots=True)
class MessageStart:
    id: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class BlockStart:
    """A content block opens: ``text``, ``tool_call`` (with its id and name, and the call's
    own reasoning ``signature`` if any) or ``reasoning`` (its text follows as deltas; a
    redacted block carries its opaque data in ``redacted``)."""

    index: int
    kind: Literal["text", "tool_call", "reasoning"]
    tool_call_id: str | None = None
    tool_name: str | None = None
    signature: str | None = None
    redacted: str | None = None
    origin: str | None = None
    choice: int = 0  # which answer it belongs to (0 unless several were asked for)


@dataclass(slots=True)
class BlockDelta:
    """Text for a text or reasoning block; a JSON fragment of the arguments for a tool call.
    A reasoning block's signature arrives as a delta with ``signature`` set."""

    index: int
    text: str
    signature: str | None = None
    origin: str | None = None


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class MessageDelta:
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None
    more_stops: tuple[StopReason, ...] = ()  # answers 2..n, in order (several asked for)


@dataclass(slots=True)
class MessageStop:
    pass


@dataclass(slots=True)
class StreamError:
    error: Any  # errors.GatewayError; typed loosely to keep this module dependency-free


StreamEvent = MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop | StreamError
