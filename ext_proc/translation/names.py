"""Tool names and tool-call ids fitted to what a target dialect accepts, reversibly.

Clients name tools as they like (an MCP client's ``github.create_issue``, a
90-character namespaced name); each provider API accepts only its own pattern
and length, and answers anything else with a 400 naming its own field. So when
a request is translated for a target, every tool name and tool-call id it
carries is *fitted* to the target's rules (``ToolRules``, one small table per
target dialect, declared in the dialect's package as ``Codec.tool_rules``):

- a value the target accepts is sent unchanged;
- any other becomes ``safe_form(value)``: the value's allowed characters (others
  become ``_``), cut short, then ``_`` and 10 hex digits of its SHA-256. The
  result is deterministic (the same name maps the same way in every turn, so a
  conversation's history matches its tools), practically collision free, and
  valid for *every* dialect's table (letters, digits and ``_`` only, starting
  with a letter, at most ``SAFE_MAX`` characters): a failover attempt that
  re-translates a body already fitted for another target leaves it unchanged.

Names come back: ``restore_names`` gives the answering target's spelling of
each of the client's names -> the client's own, and the response translation
puts the client's names back into tool calls (streamed and not), so a client
sees only the names it sent. Tool-call ids are only fitted on the way in (a
call and its result map alike, so they still pair); the ids a backend makes are
already valid for it and go to the client as the backend made them.

``rules_for`` narrows a dialect's table by the target model's catalog entry
(a model-specific pattern, a shorter length limit).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .ir import ChatRequest, Message, Part, ToolCallPart, ToolChoice, ToolResultPart

if TYPE_CHECKING:
    from ..catalog.caps import ModelCaps

# The safe form's shape: valid under every dialect table below (the strictest is 40 characters,
# the shortest id limit of a dialect table, and a letter first, as the strictest name rule wants).
SAFE_MAX = 40
_HASH_HEX = 10
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True, slots=True)
class Rule:
    """What one target accepts for one kind of identifier: ``pattern`` (a regex the whole value
    must match, ``None``: any characters) and ``max_len`` (``None``: no limit)."""

    pattern: str | None = None
    max_len: int | None = None

    def accepts(self, value: str) -> bool:
        if not value or (self.max_len is not None and len(value) > self.max_len):
            return False
        return self.pattern is None or _compiled(self.pattern).fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ToolRules:
    """A target's rules for tool names and tool-call ids (the per-dialect table)."""

    name: Rule = field(default_factory=Rule)
    call_id: Rule = field(default_factory=Rule)


ANY = ToolRules()


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def safe_form(value: str, max_len: int | None = None) -> str:
    """``value`` spelled so every dialect accepts it: ``[A-Za-z][A-Za-z0-9_]*``, at most
    ``min(SAFE_MAX, max_len)`` characters, ending in a hash of the whole value (deterministic)."""
    limit = min(SAFE_MAX, max_len) if max_len else SAFE_MAX
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    stem = _UNSAFE.sub("_", value)
    if not stem[:1].isalpha() or not stem[:1].isascii():
        stem = "t" + stem
    keep = max(1, limit - _HASH_HEX - 1)
    return f"{stem[:keep]}_{digest}"[:limit]


def fit(value: str, rule: Rule) -> str:
    """``value`` as the target takes it: unchanged when it accepts it, else its safe form."""
    if rule.accepts(value):
        return value
    out = safe_form(value, rule.max_len)
    return out if rule.accepts(out) else value  # a rule stricter than the safe form: let the target say so


def rules_for(codec: Any, caps: ModelCaps | None = None) -> ToolRules:
    """The tool rules of a target: its dialect's table (``Codec.tool_rules``), narrowed by the
    target model's catalog entry (``caps``, docs/catalog.md) where it records a rule: its pattern
    replaces the dialect's, and the shorter of the two length limits holds."""
    rules = getattr(codec, "tool_rules", None)
    base = rules if isinstance(rules, ToolRules) else ANY
    if caps is None:
        return base
    return ToolRules(
        name=_narrowed(base.name, caps.tool_name_pattern, caps.tool_name_max_length),
        call_id=_narrowed(base.call_id, caps.tool_call_id_pattern, caps.tool_call_id_max_length),
    )


def _narrowed(rule: Rule, pattern: str | None, max_len: int | None) -> Rule:
    if pattern is None and max_len is None:
        return rule
    lengths = [n for n in (rule.max_len, max_len) if n is not None]
    return Rule(pattern if pattern is not None else rule.pattern, min(lengths) if lengths else None)


def fit_request(req: ChatRequest, rules: ToolRules) -> ChatRequest:
    """A copy of ``req`` whose tool names and tool-call ids the target accepts (``req`` itself
    is left as the client sent it: the response translation reads the client's names from it)."""
    name, cid = rules.name, rules.call_id

    def part(p: Part) -> Part:
        if isinstance(p, ToolCallPart):
            return replace(p, id=fit(p.id, cid), name=fit(p.name, name))
        if isinstance(p, ToolResultPart):
            return replace(
                p,
                tool_call_id=fit(p.tool_call_id, cid),
                name=fit(p.name, name) if p.name is not None else None,
            )
        return p

    messages = [Message(m.role, [part(p) for p in m.parts]) for m in req.messages]
    tools = [replace(t, name=fit(t.name, name)) for t in req.tools]  # strict and cache kept
    choice = req.tool_choice
    if choice is not None and choice.name is not None:
        choice = ToolChoice(choice.mode, fit(choice.name, name))
    if messages == req.messages and tools == req.tools and choice == req.tool_choice:
        return req
    return replace(req, messages=messages, tools=tools, tool_choice=choice)


def renames(req: ChatRequest, rules: ToolRules) -> bool:
    """Does fitting ``req`` for a target change one of its tool names?"""
    return any(fit(n, rules.name) != n for n in client_names(req))


def client_names(req: ChatRequest) -> set[str]:
    """Every tool name the client used: its tools, its tool choice, and its history's calls."""
    names = {t.name for t in req.tools}
    if req.tool_choice is not None and req.tool_choice.name:
        names.add(req.tool_choice.name)
    for m in req.messages:
        for p in m.parts:
            name = p.name if isinstance(p, ToolCallPart | ToolResultPart) else None
            if name:
                names.add(name)
    return names


def restore_names(req: ChatRequest | None, rules: ToolRules) -> dict[str, str]:
    """Target spelling -> the client's own name, for each name of ``req``: the answering target's
    fitted spelling and the safe form (what a failover attempt re-translated from another
    target's already fitted body carries, even where the answering target would take the name)."""
    if req is None:
        return {}
    out: dict[str, str] = {}
    names = client_names(req)
    for n in sorted(names):
        for spelled in (fit(n, rules.name), safe_form(n, rules.name.max_len), safe_form(n)):
            if spelled not in names:  # a client's own name always means itself
                out.setdefault(spelled, n)
    return out
