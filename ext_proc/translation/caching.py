"""Prompt-cache breakpoints the gateway places itself (a model's ``auto_cache``).

Clients of dialects without explicit breakpoints cannot ask a backend whose dialect has them
(``Codec.cache_breakpoints``) to cache their prefix. With ``auto_cache`` the gateway marks, as
a coding agent's stable prefix: the end of the tools, the end of the system prompt, the end of
the previous request's prompt (the last turn before the latest assistant turn, which the new
request repeats: a cache read) and the end of this one (a cache write the next turn reads),
at most as many as the target takes. A request that carries breakpoints of its own is left as
the client made it. See docs/caching.md.
"""

from __future__ import annotations

from .ir import DEFAULT_CACHE_TTL, ChatRequest, Message, Part, ReasoningPart, Tool

# A breakpoint ends a block that can carry one: never a thought (providers with breakpoints
# cache thoughts with the turn around them and refuse a mark on one: docs/caching.md).
Cacheable = Tool | Part


def _cacheable(parts: list[Part]) -> list[Part]:
    return [p for p in parts if not isinstance(p, ReasoningPart)]


def breakpoints(req: ChatRequest) -> int:
    """How many cache breakpoints ``req`` carries."""
    marked = [t for t in req.tools if t.cache] + [p for p in req.system if p.cache]
    return len(marked) + sum(1 for m in req.messages for p in m.parts if getattr(p, "cache", None))


def _stable_turns(messages: list[Message]) -> list[Message]:
    """The turns whose last part ends a breakpoint: the last non-assistant turn before the
    latest assistant turn (where the previous request ended), and the latest turn."""
    if not messages:
        return []
    out = []
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last_assistant is not None:
        before = [m for m in messages[:last_assistant] if m.role != "assistant"]
        if before and before[-1] is not messages[-1]:
            out.append(before[-1])
    return [*out, messages[-1]]


def place_breakpoints(req: ChatRequest, limit: int) -> bool:
    """Mark ``req``'s stable prefix for caching (in place), at most ``limit`` breakpoints (the
    latest ones go first when fewer are allowed: they cover the most); False when it had
    breakpoints already (the client's own choice wins) or has nothing to mark."""
    if breakpoints(req) or limit <= 0:
        return False
    ends: list[Cacheable] = []
    if req.tools:
        ends.append(req.tools[-1])
    if req.system:
        ends.append(req.system[-1])
    ends += [_cacheable(m.parts)[-1] for m in _stable_turns(req.messages) if _cacheable(m.parts)]
    for end in ends[-limit:]:
        if not isinstance(end, ReasoningPart):
            end.cache = DEFAULT_CACHE_TTL
    return bool(ends)
