"""A translated request fitted to its target model's limits, before the codec builds it.

- Output cap: a client's max tokens above the model's max output is clamped to it (the
  backend would refuse the request, and the client asked for "at most"); the default
  the gateway fills in for dialects that require one is clamped the same way.
- Stop sequences: more than the model accepts cannot be trimmed without changing the
  answer, so the request is refused (400, naming the client's own field and the limit).
- Media types: every image and document part is given the one spelling providers document
  (``image/jpg`` -> ``image/jpeg``: the same type); a type the target does not accept (the
  model's catalog ``image_types`` / ``document_types``, else its dialect's ``Codec.media``)
  is refused (400 naming the client's part), or dropped where the model sets
  ``drop_unsupported``. A plain-text document is always carried (as text where the target
  takes no text documents), and a part without a type is left to the codec.
- Sampling: a reasoning model that takes only the default temperature and top_p (always, or
  while it reasons) gets a translated request's other values refused in the client's words,
  or dropped with the model's ``drop_unsupported`` (the provider would refuse them).

Unknown figures limit nothing. This runs once per translated request, for every target;
wire-level fitting (which field carries the output cap) is the target dialect's
(``Dialect.fit_body``).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import GatewayError
from ..translation import reasoning
from ..translation.codec import client_field
from ..translation.ir import PLAIN_TEXT, ChatRequest, FilePart, ImagePart, Part, ToolResultPart, part_path
from ..translation.media import ANY_MEDIA, MediaRules, normal_type
from .caps import ModelCaps


def clamp_to_model(
    req: ChatRequest,
    caps: ModelCaps | None,
    default_max_tokens: int,
    media: MediaRules = ANY_MEDIA,
    drop: bool = False,
    target: str = "",
) -> int:
    """Clamp ``req`` to ``caps`` in place; the default max tokens to build with. ``media``:
    what the target dialect accepts (narrowed by ``caps``); ``drop``: the model's
    ``drop_unsupported``; ``target``: the target dialect (named in refusals when ``caps`` is
    unknown). Raises ``GatewayError`` (400) for what cannot be fitted."""
    fit_media(req, media_rules(media, caps), drop, caps.model if caps is not None else None, target)
    if caps is None:
        return default_max_tokens
    fit_sampling(req, caps, drop)
    limit = caps.max_stop_sequences
    if limit is not None and len(req.stop) > limit:
        name = client_field(req, "stop")
        raise GatewayError(
            "invalid_request",
            f"'{name}' has {len(req.stop)} stop sequences; the backend model '{caps.model}' "
            f"accepts at most {limit}",
            param=name,
        )
    cap = caps.max_output_tokens
    if cap is None:
        return default_max_tokens
    if req.max_tokens is not None and req.max_tokens > cap:
        req.max_tokens = cap
    return min(default_max_tokens, cap)


def media_rules(dialect: MediaRules, caps: ModelCaps | None) -> MediaRules:
    """The target's media rules: its model's catalog lists where it records them, else its
    dialect's."""
    if caps is None:
        return dialect
    images = frozenset(caps.image_types) if caps.image_types is not None else dialect.image_types
    documents = frozenset(caps.document_types) if caps.document_types is not None else dialect.document_types
    return MediaRules(images, documents)


def fit_media(
    req: ChatRequest, rules: MediaRules, drop: bool, model: str | None = None, target: str = ""
) -> None:
    """Each image and document part of ``req`` (tool results' too), in place: its type
    spelled as providers do, and refused (or, with ``drop``, left out) where ``rules`` say
    the target does not take it."""
    for i, m in enumerate(req.messages):
        kept: list[Part] = []
        for j, p in enumerate(m.parts):
            where = f"messages[{i}].content[{j}]"
            if isinstance(p, ImagePart | FilePart):
                if _fit(p, rules, drop, part_path(p, where), model, target):
                    kept.append(p)
            elif isinstance(p, ToolResultPart) and any(isinstance(c, ImagePart) for c in p.content):
                content = [
                    c
                    for k, c in enumerate(p.content)
                    if not isinstance(c, ImagePart)
                    or _fit(c, rules, drop, part_path(c, f"{where}.content[{k}]"), model, target)
                ]
                kept.append(replace(p, content=content) if len(content) != len(p.content) else p)
            else:
                kept.append(p)
        if len(kept) != len(m.parts):
            m.parts = kept


def _fit(
    p: ImagePart | FilePart, rules: MediaRules, drop: bool, path: str, model: str | None, target: str
) -> bool:
    """Normalise ``p``'s type in place; False: leave it out (``drop``). Raises for a type
    the target does not take."""
    if p.media_type is None:
        return True
    p.media_type = normal_type(p.media_type)
    document = isinstance(p, FilePart)
    if document and p.media_type == PLAIN_TEXT:
        return True  # a text document: sent as text where the target takes no text documents
    allowed = rules.document_types if document else rules.image_types
    if allowed is None or p.media_type in allowed:
        return True
    if drop:
        return False
    kind = "document" if document else "image"
    name = target or "this"
    who = f"the backend model '{model}'" if model else f"{'an' if name[0] in 'aeiou' else 'a'} {name} backend"
    raise GatewayError(
        "invalid_request",
        f"'{path}' is {kind} type '{p.media_type}', which {who} does not accept "
        f"(it takes {', '.join(sorted(allowed))}); remove it, or set 'drop_unsupported: true' "
        "on the model to let the gateway drop it",
        param=path,
    )


def output_cap(caps: ModelCaps | None, requested: int) -> int:
    """``requested`` output tokens as the model can produce them (admission reserves this)."""
    cap = caps.max_output_tokens if caps is not None else None
    return min(requested, cap) if cap is not None else requested


# Sampling settings a reasoning model refuses unless they are the default (1).
_SAMPLING = ("temperature", "top_p")


def fit_sampling(req: ChatRequest, caps: ModelCaps, drop: bool) -> None:
    """A model whose ``sampling`` is fixed (some reasoning models always, some while a reasoning
    effort is on: docs/catalog.md) refuses a temperature or top_p other than 1: a 400 naming the
    client's field, or the setting dropped with ``drop``."""
    if caps.sampling is None or (caps.sampling == "fixed_when_reasoning" and not reasoning.requested(req)):
        return
    for name in _SAMPLING:
        value = getattr(req, name)
        if value is None or value == 1:
            continue
        if drop:
            setattr(req, name, None)
            continue
        field = client_field(req, name)
        when = "" if caps.sampling == "fixed" else " while it reasons (turn reasoning off to set it)"
        raise GatewayError(
            "invalid_request",
            f"'{field}': the backend model '{caps.model}' takes only the default {name} (1){when}",
            param=field,
        )
