"""Media types of image and document parts: one spelling per type, and what a target accepts.

Clients spell one type several ways (a data URL's ``data:image/jpg;base64,...``, an
upper-case ``IMAGE/PNG``, a ``; charset=`` parameter); providers accept one spelling and
answer anything else with a 400 naming their own field. ``normal_type`` gives the one
spelling every provider documents, and ``MediaRules`` (one small table per target dialect,
``Codec.media``, narrowed by the target model's catalog entry) says which types a target
takes. ``catalog.limits.clamp_to_model`` applies both to a translated request, once for
every target.
"""

from __future__ import annotations

from dataclasses import dataclass

# Other spellings of one type -> the spelling the providers document (the same bytes).
ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "application/x-pdf": "application/pdf",
}


def normal_type(media_type: str) -> str:
    """``media_type`` as providers spell it: lower case, without parameters, aliases mapped."""
    base = media_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


@dataclass(frozen=True, slots=True)
class MediaRules:
    """The image and document media types a target accepts (``None``: not known, any)."""

    image_types: frozenset[str] | None = None
    document_types: frozenset[str] | None = None


ANY_MEDIA = MediaRules()
