"""What a target has no field for, said in the text instead, in one documented spelling
(README, "Mapped in translation").

- **Tool-result errors.** Some dialects flag a failed tool call's result, some have no such
  flag. Towards a target without one (its codec calls ``mark_error``) the result's text starts
  with ``TOOL_ERROR``; a request of such a dialect whose tool result starts with it is read back
  as an error result (``read_error``), so a body translated once and translated again, on
  failover, keeps the flag.
- **A system message in mid-conversation.** Some dialects take system messages anywhere in the
  conversation, and where one comes is part of what it means (an instruction given after turn 5
  is not one given before turn 1). The IR keeps it in place (a ``Message`` of role ``system``).
  Targets with only a top-level system prompt get it as user text wrapped in
  ``<system-message>`` tags at the same place (``inline_system``): joined with the neighbouring
  user turn, or a user turn of its own between two assistant turns, so roles still alternate.
  Moving it into the top-level system prompt would change when it applies.
- **Images in tool results.** Some targets take only text in a tool result (their tool
  messages are text only). There a result's images follow the turn's tool results as one user
  message: for each call, a text part ``TOOL_IMAGES`` + the call id + ``:``, then its images
  (``tool_images_intro``), which is what agent frameworks do. A request of such a dialect
  carrying that message right after the tool results is read back into them
  (``tool_images_of``), so a body translated twice keeps the images in their results.
"""

from __future__ import annotations

from .ir import ImagePart, Message, Part, TextPart

TOOL_ERROR = "[tool error] "
SYSTEM_OPEN = "<system-message>\n"
TOOL_IMAGES = "Images returned by tool call "
SYSTEM_CLOSE = "\n</system-message>"


def mark_error(content: list[TextPart | ImagePart], is_error: bool) -> list[TextPart | ImagePart]:
    """A tool result's content for a target without an error flag: marked when it failed."""
    if not is_error:
        return content
    if content and isinstance(first := content[0], TextPart):
        return [TextPart(TOOL_ERROR + first.text), *content[1:]]
    return [TextPart(TOOL_ERROR.rstrip()), *content]


def read_error(content: list[TextPart | ImagePart]) -> tuple[list[TextPart | ImagePart], bool]:
    """A tool result read from a dialect without an error flag: (content without the marker,
    whether it carried one)."""
    if content and isinstance(first := content[0], TextPart):
        if first.text.startswith(TOOL_ERROR):
            return [TextPart(first.text[len(TOOL_ERROR) :]), *content[1:]], True
        if first.text == TOOL_ERROR.rstrip():
            return list(content[1:]), True
    return content, False


def inline_system(messages: list[Message]) -> list[Message]:
    """``messages`` for a target whose only system prompt is the top-level one: each in-place
    ``system`` turn becomes marked user text at the same index. The target's codec joins it with
    neighbouring user turns as it joins any consecutive user-side turns (tool results first)."""
    if not any(m.role == "system" for m in messages):
        return messages
    return [
        Message(
            "user",
            [
                TextPart(
                    SYSTEM_OPEN
                    + "\n\n".join(p.text for p in m.parts if isinstance(p, TextPart))
                    + SYSTEM_CLOSE
                )
            ],
        )
        if m.role == "system"
        else m
        for m in messages
    ]


def _unwrapped(p: Part) -> str | None:
    if isinstance(p, TextPart) and p.text.startswith(SYSTEM_OPEN) and p.text.endswith(SYSTEM_CLOSE):
        return p.text[len(SYSTEM_OPEN) : len(p.text) - len(SYSTEM_CLOSE)]
    return None


def read_system(messages: list[Message]) -> list[Message]:
    """``inline_system`` undone, for a request of a dialect with only a top-level system prompt:
    marked user text is a ``system`` turn again, in place (a body translated once and again, on
    failover, to a target with in-place system messages gives them back their role)."""
    if not any(_unwrapped(p) is not None for m in messages if m.role == "user" for p in m.parts):
        return messages
    out: list[Message] = []
    for m in messages:
        if m.role != "user":
            out.append(m)
            continue
        start = len(out)
        for p in m.parts:
            text = _unwrapped(p)
            if text is not None:
                out.append(Message("system", [TextPart(text)]))
            elif len(out) > start and out[-1].role == "user":
                out[-1].parts.append(p)
            else:
                out.append(Message("user", [p]))
    return out


def tool_images_intro(call_id: str) -> str:
    """The text that names the tool call whose images follow (``TOOL_IMAGES``)."""
    return f"{TOOL_IMAGES}{call_id}:"


def tool_images_of(text: str) -> str | None:
    """The call id a ``tool_images_intro`` text names (None: not one)."""
    if text.startswith(TOOL_IMAGES) and text.endswith(":") and len(text) > len(TOOL_IMAGES) + 1:
        return text[len(TOOL_IMAGES) : -1]
    return None
