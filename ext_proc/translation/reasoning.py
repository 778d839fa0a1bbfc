"""Reasoning across dialects: one effort <-> budget <-> level table, and sealed signatures.

Controls (docs/reasoning.md "Controls", which cites each provider's documentation). Clients
say how hard a model should think in three vocabularies: an *effort* name (``none`` ..
``xhigh``), a token *budget* (at least 1024 for some providers; 0 off, -1 dynamic for
others) or a *level* (minimal/low/medium/high, which some providers take instead of a
budget, never together with one). *Adaptive* thinking lets the model decide, steered by an
effort. The IR keeps what the client said (``ChatRequest.reasoning_effort`` and
``.thinking``); ``resolve`` turns it into a style the chosen backend takes:

- ``budget``: a token budget (from ``BUDGETS`` when the client gave an effort);
- ``adaptive``: adaptive thinking, the effort passed on as is;
- ``level``: a level name (``LEVELS``); a budget the client gave becomes its effort's level;
- ``effort``: an effort name (a budget becomes the effort whose budget covers it).

Each codec lists the styles its dialect takes (the first is its default); a client's own
form is kept when the backend takes it. A backend's ``reasoning`` config overrides the
style, the tables and which efforts the model accepts; a request outside them is a 400
naming the client's field.

Signatures (docs/reasoning.md "Multi-turn"). A provider's reasoning signature must come
back with the turn it belongs to, but a client of another dialect has no field for it that
its SDK echoes, except message content and tool-call ids. The gateway seals what must come
back in an opaque token (``seal``): zlib-compressed JSON, authenticated with an HMAC whose
key is derived from a per-deployment secret *and the tenant* (``tenant_key``), so a token is
only accepted from the tenant it was given to, and a forged or foreign one is a 400. The
token holds nothing but this answer's own reasoning and signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ..errors import invalid
from .ir import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatRequest,
    ChatResponse,
    ReasoningPart,
    StreamEvent,
    Thinking,
    ToolCallPart,
    ToolResultPart,
)

# ---- the table --------------------------------------------------------------------

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Effort -> thinking budget in tokens. 1024 is the smallest budget some providers take; each
# step doubles or quadruples; xhigh is 32k.
BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
# Effort -> level name. Levels are minimal, low, medium, high (some models take only low and
# high: set per backend); none has no level (a level model cannot stop thinking): minimal.
LEVELS: dict[str, str] = {
    "none": "minimal",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}
STYLES = ("budget", "adaptive", "level", "effort")
# The largest thinking budget a client may ask for: a 32-bit count, as one provider's field is; far
# beyond any model's output, small enough that a budget added to a token limit stays exact.
MAX_BUDGET = 2**31 - 1


def effort_for_budget(budget: int, budgets: Mapping[str, int] = BUDGETS) -> str:
    """The smallest effort whose budget covers ``budget`` (0: none; -1, dynamic: medium)."""
    if budget == 0:
        return "none"
    if budget < 0:
        return "medium"
    for effort in EFFORTS[1:]:
        if budget <= budgets.get(effort, BUDGETS[effort]):
            return effort
    return "xhigh"


def effort_for_level(level: str) -> str:
    """A level name is an effort name (the levels are a subset of the efforts)."""
    return level if level in EFFORTS else "medium"


@dataclass(slots=True)
class Policy:
    """What one backend takes (config ``backends[].reasoning``); empty: its dialect's default."""

    style: str | None = None
    efforts: tuple[str, ...] | None = None
    budgets: dict[str, int] = field(default_factory=dict)
    levels: dict[str, str] = field(default_factory=dict)
    min_budget: int | None = None
    max_budget: int | None = None


def _field(req: ChatRequest, name: str) -> str:
    return req.field_names.get(name, name)


def _style(req: ChatRequest, styles: tuple[str, ...]) -> str:
    """The client's own form when the backend takes it (a budget stays a budget where budgets
    are taken), else the backend's first (default) style."""
    t = req.thinking
    if t is not None and t.budget_tokens is not None and "budget" in styles:
        return "budget"
    # A level backend's adaptive form (a dynamic budget) carries no effort; its levels are
    # already the ceiling of dynamic thinking, so an effort goes as its level there.
    if (
        t is not None
        and t.mode == "adaptive"
        and "adaptive" in styles
        and (req.reasoning_effort is None or "level" not in styles)
    ):
        return "adaptive"
    return styles[0]


def resolve(req: ChatRequest, policy: Policy | None, styles: tuple[str, ...]) -> None:
    """Rewrite ``req``'s reasoning controls (in place) into a style the backend takes
    (``styles``, its dialect's, first the default; the backend's config overrides); a request
    the backend's config says it cannot take is a 400 naming the client's own field."""
    t = req.thinking
    effort = req.reasoning_effort
    if effort is None and t is None:
        return
    p = policy or Policy()
    style = p.style or _style(req, styles)
    if t is not None and t.style == style:
        return  # resolved for this backend already
    budgets = {**BUDGETS, **p.budgets}
    levels = {**LEVELS, **p.levels}
    budget = t.budget_tokens if t is not None else None
    off = effort == "none" or (t is not None and t.mode == "disabled") or budget == 0
    which = "reasoning_effort" if effort is not None else "thinking"
    if effort is None and t is not None:
        if t.level is not None:
            effort = effort_for_level(t.level)
        elif budget is not None:
            effort = effort_for_budget(budget, budgets)
        elif t.mode == "adaptive":
            effort = None
        elif off:
            effort = "none"
    if effort is not None and effort not in EFFORTS:
        raise invalid(f"'{_field(req, which)}' must be one of {', '.join(EFFORTS)}", _field(req, which))
    if p.efforts is not None and effort is not None and effort not in p.efforts:
        raise invalid(
            f"'{_field(req, which)}': model '{req.model}' does not accept reasoning effort '{effort}' "
            f"(it takes {', '.join(p.efforts)})",
            _field(req, which),
        )
    out = Thinking(
        include_thoughts=t.include_thoughts if t is not None else None,
        summary=t.summary if t is not None else None,
        style=style,
    )
    if off:
        out.mode = "disabled"
        req.reasoning_effort = "none"
        req.thinking = out
        if style == "level":
            out.level = levels.get("none")
        return
    if style == "adaptive":
        out.mode = "adaptive"
    elif style == "budget":
        if budget is None or budget < 0:
            budget = budgets.get(effort or "medium", BUDGETS["medium"])
            out.derived = True
        if p.min_budget is not None and budget < p.min_budget:
            raise invalid(
                f"'{_field(req, which)}': model '{req.model}' needs a thinking budget of at least "
                f"{p.min_budget} tokens",
                _field(req, which),
            )
        if p.max_budget is not None:
            budget = min(budget, p.max_budget)
        out.mode, out.budget_tokens = "enabled", budget
    elif style == "level":
        out.mode = "enabled"
        out.level = levels.get(effort or "medium", "medium")
    else:
        out.mode = "enabled"
        if effort is None and t is not None and t.mode == "adaptive":
            # Adaptive thinking without an effort on an effort backend: medium, as a dynamic
            # budget maps (``effort_for_budget(-1)``); left unset, a model whose default effort
            # is none (gpt-5.1 and later) would not think at all.
            effort = "medium"
    req.reasoning_effort = effort
    req.thinking = out


def for_backend(req: ChatRequest, styles: tuple[str, ...]) -> tuple[str | None, Thinking | None]:
    """The request's controls for a backend taking ``styles``, without changing ``req``: as the
    gateway resolved them for the chosen backend, else by the default table."""
    if req.thinking is not None and req.thinking.style is not None:
        return req.reasoning_effort, req.thinking
    tmp = ChatRequest(
        model=req.model,
        messages=[],
        reasoning_effort=req.reasoning_effort,
        thinking=replace(req.thinking) if req.thinking is not None else None,
        field_names=req.field_names,
    )
    resolve(tmp, None, styles)
    return tmp.reasoning_effort, tmp.thinking


def requested(req: ChatRequest) -> bool:
    """Does the request ask the model to reason (before or after ``resolve``)? An effort other
    than none, thinking on (a budget, adaptive, a level), or thoughts asked for."""
    t = req.thinking
    if req.reasoning_effort == "none" or (t is not None and t.mode == "disabled"):
        return False
    if req.reasoning_effort is not None:
        return True
    return t is not None and (
        t.mode in ("enabled", "adaptive") or bool(t.include_thoughts) or t.summary not in (None, "none")
    )


MIN_BUDGET = 1024  # the smallest budget of the budget-style providers (docs/reasoning.md)


def fit_budget(req: ChatRequest, t: Thinking, limit: int, limit_field: str) -> tuple[int | None, int]:
    """A thinking budget that stays below the token limit, as budget-style providers require
    (docs/reasoning.md), and the limit to send: ``limit`` is the request's (or the default when the client set
    none, and then the budget is added on top). A client limit below the budget shrinks the
    budget under it. A limit with no room for the smallest budget is a 400 naming
    ``limit_field`` when the client asked for a budget itself; when the budget came from an
    effort, the request goes without thinking (None): the client asked how hard, not to think
    past its own limit."""
    budget = max(t.budget_tokens or BUDGETS["medium"], MIN_BUDGET)
    if req.max_tokens is None:
        return budget, limit + budget
    if limit > budget:
        return budget, limit
    if limit - 1 >= MIN_BUDGET:
        return limit - 1, limit
    if t.derived:
        return None, limit
    raise invalid(f"'{limit_field}' must be more than {MIN_BUDGET} for the model to think", limit_field)


def reasoning_text(parts: list[Any]) -> str:
    """The reasoning text of a turn's parts, joined (dialects with one reasoning string)."""
    return "\n\n".join(p.text for p in parts if isinstance(p, ReasoningPart) and p.text)


# ---- sealing ------------------------------------------------------------------------

PREFIX = "gwr1"
_MAC_LEN = 16  # bytes of HMAC-SHA256 kept: 22 base64url characters
_MAC_CHARS = 22
MAX_TOKEN = 1 << 20  # a token longer than this is not one of ours (the JSON inside is bounded too)


def tenant_key(secret: bytes, tenant: str) -> bytes:
    """The sealing key of one tenant: a token sealed for one tenant fails for every other."""
    return hmac.new(secret, b"llm-gateway reasoning seal\0" + tenant.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, payload: dict[str, Any]) -> str:
    """An opaque token of ``payload`` (characters ``[A-Za-z0-9_-]``, valid as a tool-call id
    in every dialect)."""
    data = _b64(zlib.compress(orjson.dumps(payload), 6))
    mac = hmac.new(key, data.encode(), hashlib.sha256).digest()[:_MAC_LEN]
    return PREFIX + data + _b64(mac)


# A token as it appears in a body: as is, or base64-encoded where a dialect's field is bytes.
_MARKS = (b'"' + PREFIX.encode(), b'"' + base64.b64encode(PREFIX.encode())[:5])


def carries_tokens(body: Any) -> bool:
    """Might ``body`` hold a token this gateway sealed? Such a body is never passed through to
    a provider as is, even in the client's own dialect: it is unsealed first."""
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:
        return False
    return any(m in raw for m in _MARKS)


def is_token(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX) and len(value) > len(PREFIX) + _MAC_CHARS


def unseal(key: bytes, token: str, path: str) -> dict[str, Any]:
    """The payload of a token this gateway sealed for this tenant; anything else is a 400
    naming ``path`` (a forged, altered or foreign signature)."""
    bad = invalid(f"'{path}' carries a reasoning signature this gateway did not issue to you", path)
    if not is_token(token) or len(token) > MAX_TOKEN or not token.isascii():
        raise bad
    data, mac = token[len(PREFIX) : -_MAC_CHARS], token[-_MAC_CHARS:]
    want = _b64(hmac.new(key, data.encode(), hashlib.sha256).digest()[:_MAC_LEN])
    if not hmac.compare_digest(want, mac):
        raise bad
    try:
        d = zlib.decompressobj()
        raw = d.decompress(_unb64(data), MAX_TOKEN * 4)
        payload = orjson.loads(raw)
    except (ValueError, zlib.error, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(payload, dict):
        raise bad
    return payload


def _part_json(p: ReasoningPart) -> list[Any]:
    return [p.text, p.signature, p.redacted, p.origin]


def _part_of(v: Any) -> ReasoningPart | None:
    if (
        isinstance(v, list)
        and len(v) == 4
        and isinstance(v[0], str)
        and all(x is None or isinstance(x, str) for x in v[1:])
    ):
        return ReasoningPart(v[0], v[1], v[2], v[3])
    return None


class Sealer:
    """Seals one answer's reasoning for its client: each reasoning part's signature (or
    redacted data) becomes a token, and so does every tool-call id that must bring
    something back (the reasoning before it, the call's own signature)."""

    __slots__ = ("_blocks", "_key", "_reasoning")

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Per answer (several may stream together): raw reasoning since its last tool call.
        self._reasoning: dict[int, list[ReasoningPart]] = {}
        self._blocks: dict[int, tuple[ReasoningPart, int]] = {}  # a stream's reasoning blocks, answer

    def part(self, p: ReasoningPart, answer: int = 0) -> ReasoningPart:
        """The part as the client sees it: its signature and redacted data sealed. A part the
        provider did not sign gets a sealed empty signature: echoed in a dialect that wants
        one (a thinking block), it is recognised as the gateway's and never sent as is."""
        if p.signature is None and p.redacted is None:
            return ReasoningPart(p.text, seal(self._key, {"s": None, "o": p.origin}))
        self._reasoning.setdefault(answer, []).append(
            ReasoningPart(p.text, p.signature, p.redacted, p.origin)
        )
        return ReasoningPart(
            p.text,
            seal(self._key, {"s": p.signature, "o": p.origin}) if p.signature is not None else None,
            seal(self._key, {"r": p.redacted, "o": p.origin}) if p.redacted is not None else None,
            None,
        )

    def call_id(self, call_id: str, signature: str | None, answer: int = 0) -> str:
        """A tool call's id as the client sees it (unchanged when nothing must come back). It
        takes its answer's reasoning since the previous call (interleaved thinking: each call
        its own)."""
        reasoning = self._reasoning.pop(answer, [])
        if not reasoning and signature is None:
            return call_id
        payload: dict[str, Any] = {"i": call_id, "t": [_part_json(p) for p in reasoning]}
        if signature is not None:
            payload["c"] = signature
        return seal(self._key, payload)

    def response(self, resp: ChatResponse) -> ChatResponse:
        """``resp`` with every answer's signatures sealed (several answers: each of them)."""
        resp.content = self._sealed(resp.content, 0)
        for k, answer in enumerate(resp.more, 1):
            answer.content = self._sealed(answer.content, k)
        return resp

    def _sealed(self, parts: list[Any], answer: int) -> list[Any]:
        content: list[Any] = []
        for p in parts:
            if isinstance(p, ReasoningPart):
                content.append(self.part(p, answer))
            elif isinstance(p, ToolCallPart):
                content.append(ToolCallPart(self.call_id(p.id, p.signature, answer), p.name, p.arguments))
            else:
                content.append(p)
        return content

    def events(self, ev: StreamEvent) -> list[StreamEvent]:
        """``event``, and before a reasoning block that closes unsigned its sealed empty
        signature (as ``part`` gives one)."""
        if isinstance(ev, BlockStop):
            part = self._blocks.pop(ev.index, (None, 0))[0]
            if part is not None and part.signature is None and part.redacted is None:
                empty = seal(self._key, {"s": None, "o": part.origin})
                return [BlockDelta(ev.index, "", empty), ev]
        return [self.event(ev)]

    def event(self, ev: StreamEvent) -> StreamEvent:
        """One stream event as the client sees it (reasoning text passes; signatures sealed)."""
        if isinstance(ev, BlockStart):
            if ev.kind == "reasoning":
                part = ReasoningPart("", None, ev.redacted, ev.origin)
                self._blocks[ev.index] = (part, ev.choice)
                if ev.redacted is None:
                    return ev
                self._reasoning.setdefault(ev.choice, []).append(part)
                return BlockStart(
                    ev.index,
                    "reasoning",
                    redacted=seal(self._key, {"r": ev.redacted, "o": ev.origin}),
                    choice=ev.choice,
                )
            if ev.kind == "tool_call" and ev.tool_call_id is not None:
                return BlockStart(
                    ev.index,
                    "tool_call",
                    self.call_id(ev.tool_call_id, ev.signature, ev.choice),
                    ev.tool_name,
                    choice=ev.choice,
                )
            return ev
        if isinstance(ev, BlockDelta):
            found = self._blocks.get(ev.index)
            if found is None:
                return ev
            part, answer = found
            if ev.signature is not None:
                part.signature, part.origin = ev.signature, ev.origin
                pending = self._reasoning.setdefault(answer, [])
                if not any(q is part for q in pending):
                    pending.append(part)
                return BlockDelta(ev.index, ev.text, seal(self._key, {"s": ev.signature, "o": ev.origin}))
            part.text += ev.text
            return ev
        return ev


def unseal_request(req: ChatRequest, key: bytes) -> None:
    """Restore what a client echoed sealed (in place): reasoning signatures, the reasoning
    carried in a tool-call id (put back before the call when the turn lacks it), the call's
    own signature, and the provider's own tool-call ids. A token that fails is a 400."""
    ids: dict[str, str] = {}
    for i, m in enumerate(req.messages):
        parts: list[Any] = []
        m.parts = [
            _unseal_part(p, key, f"messages[{i}].content[{j}]") if isinstance(p, ReasoningPart) else p
            for j, p in enumerate(m.parts)
        ]
        # The client kept the turn's reasoning itself (a thinking block, a reasoning item):
        # that is used; else what the call ids carry is put back before each call.
        kept = any(isinstance(p, ReasoningPart) and (p.signature or p.redacted) for p in m.parts)
        for j, p in enumerate(m.parts):
            path = f"messages[{i}].content[{j}]"
            if isinstance(p, ReasoningPart):
                parts.append(p)
            elif isinstance(p, ToolCallPart) and is_token(p.id):
                d = unseal(key, p.id, p.id_path or f"{path}.id")
                original = _opt_str(d.get("i")) or p.id
                ids[p.id] = original
                carried = [r for r in (_part_of(v) for v in d.get("t") or []) if r is not None]
                if carried and not kept:
                    # Put back before the call, replacing the bare text parts rendered from it.
                    texts = {r.text for r in carried}
                    parts = [q for q in parts if not (isinstance(q, ReasoningPart) and q.text in texts)]
                    parts += carried
                signature = _opt_str(d.get("c")) or p.signature
                parts.append(ToolCallPart(original, p.name, p.arguments, signature, p.cache, p.id_path))
            elif isinstance(p, ToolResultPart) and is_token(p.tool_call_id):
                if p.tool_call_id not in ids:
                    ids[p.tool_call_id] = (
                        _opt_str(unseal(key, p.tool_call_id, p.id_path or f"{path}.tool_call_id").get("i"))
                        or ""
                    )
                parts.append(
                    ToolResultPart(
                        ids[p.tool_call_id], p.content, p.name, p.is_error, p.path, p.cache, p.id_path
                    )
                )
            else:
                parts.append(p)
        m.parts = parts
    req.seal_key = key


def _unseal_part(p: ReasoningPart, key: bytes, path: str) -> ReasoningPart:
    """A reasoning part with its sealed signature or redacted data opened."""
    for sealed in (p.signature, p.redacted):
        if is_token(sealed):
            d = unseal(key, sealed or "", path)
            return ReasoningPart(p.text, _opt_str(d.get("s")), _opt_str(d.get("r")), _opt_str(d.get("o")))
    return p


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None
