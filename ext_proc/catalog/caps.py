"""What one backend model accepts: the catalog's answer, a leaf module (the dialects read it
without depending on the catalog's loader)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class CatalogPrice(BaseModel):
    """USD per million tokens; an unset one is unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: Annotated[float, Field(ge=0)] | None = None
    cached_input: Annotated[float, Field(ge=0)] | None = None
    cache_write: Annotated[float, Field(ge=0)] | None = None
    output: Annotated[float, Field(ge=0)] | None = None


@dataclass(frozen=True, slots=True)
class Source:
    url: str
    checked: date


@dataclass(frozen=True)
class ModelCaps:
    """What one backend model accepts (None: unknown, no limit applied), with sources."""

    model: str  # the catalog entry (or the backend's own model name when only config set figures)
    family: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    max_stop_sequences: int | None = None
    tool_name_pattern: str | None = None
    tool_name_max_length: int | None = None
    tool_call_id_pattern: str | None = None
    tool_call_id_max_length: int | None = None
    image_types: tuple[str, ...] | None = None
    document_types: tuple[str, ...] | None = None
    structured_output: bool | None = None
    tool_result_media: bool | None = None
    output_cap_field: str | None = None
    sampling: str | None = None  # "fixed" | "fixed_when_reasoning" (catalog/limits.py)
    reasoning: tuple[str, ...] | None = None
    deprecated: bool | None = None
    retires: date | None = None
    price: CatalogPrice | None = None
    # figure -> where it comes from ("config" for a backend's own override)
    sources: dict[str, Source] = field(default_factory=dict, compare=False)

    def tool_name_ok(self, name: str) -> bool:
        """Does the model accept ``name`` as a tool name (unknown rules: yes)?"""
        if self.tool_name_max_length is not None and len(name) > self.tool_name_max_length:
            return False
        return self.tool_name_pattern is None or re.fullmatch(self.tool_name_pattern, name) is not None

    def tool_call_id_ok(self, call_id: str) -> bool:
        """Does the model accept ``call_id`` as a tool-call id (unknown rules: yes)?"""
        if self.tool_call_id_max_length is not None and len(call_id) > self.tool_call_id_max_length:
            return False
        return (
            self.tool_call_id_pattern is None or re.fullmatch(self.tool_call_id_pattern, call_id) is not None
        )

    def media_ok(self, media_type: str) -> bool | None:
        """Does the model take this image or document type (None: unknown)?"""
        known = [t for t in (self.image_types, self.document_types) if t is not None]
        if not known:
            return None
        return any(media_type in t for t in known)
