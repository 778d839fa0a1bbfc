"""The model capability catalog: what a backend model accepts, costs, and when it retires.

The figures ship in ``models.yaml`` beside this module, each with its source and the
date it was checked (docs/catalog.md). A backend's capabilities are the catalog entry of
its model in the catalog family of its provider's dialect (``Dialect.catalog_family``),
with the backend's ``capabilities:`` config block laid over it; a model the catalog does
not know (a mock name, a self-hosted model) has none, and nothing is limited for it.

Who reads it: the request path (``catalog.limits``: clamp the output cap, refuse too many
stop sequences, name the output-cap field), admission (the real output cap), costs (the
catalog's price when the config gives none), ``llm-gateway check`` and ``status``
(retirement warnings). Other parts (tool-name and tool-call-id mapping) call ``lookup``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .caps import CatalogPrice, ModelCaps, Source

CATALOG_FILE = Path(__file__).with_name("models.yaml")
# How many days before a retirement `check` and `status` start warning (config `catalog:`).
DEFAULT_WARNING_DAYS = 90

MediaType = Annotated[str, StringConstraints(pattern=r"^[a-z]+/[a-z0-9.+-]+$", max_length=100)]
Count = Annotated[int, Field(ge=1)]


def _regex(v: str | None) -> str | None:
    if v is not None:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
    return v


class Figures(BaseModel):
    """The figures a catalog entry, a family default or a backend's ``capabilities:`` may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    context_window: Count | None = None
    max_output_tokens: Count | None = None
    max_stop_sequences: Annotated[int, Field(ge=0)] | None = None
    tool_name_pattern: str | None = None
    tool_name_max_length: Count | None = None
    tool_call_id_pattern: str | None = None
    tool_call_id_max_length: Count | None = None
    image_types: list[MediaType] | None = None
    document_types: list[MediaType] | None = None
    structured_output: bool | None = None
    # Can a tool result carry media inside it on the wire (where a dialect's API took that
    # with a model generation)? false: the dialect's fit_body puts them beside it.
    tool_result_media: bool | None = None
    # The field a Chat Completions backend takes its output cap in (reasoning models
    # refuse the older ``max_tokens``); unset: whatever the codec writes.
    output_cap_field: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")] | None = None
    # Sampling settings while the model reasons: "fixed" (a reasoning model: only the default
    # temperature and top_p, always) or "fixed_when_reasoning" (the default ones only while a
    # reasoning effort other than none is on); unset: any (catalog/limits.py applies it).
    sampling: Literal["fixed", "fixed_when_reasoning"] | None = None
    # Reasoning controls the model accepts: recorded, not applied here.
    reasoning: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] | None = None
    deprecated: bool | None = None
    retires: date | None = None

    _patterns = field_validator("tool_name_pattern", "tool_call_id_pattern")(_regex)


class _Entry(Figures):
    price: CatalogPrice | None = None
    aliases: list[str] = Field(default_factory=list)
    like: str | None = None  # a model of the inherited family whose limits this one has
    source: str | None = None
    sources: dict[str, str] = Field(default_factory=dict)


class _Family(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    inherits: str | None = None
    strip_prefixes: list[str] = Field(default_factory=list)
    strip_suffix_after: str | None = None
    strip_suffix_pattern: str | None = None  # a regex: a cloud's version suffix (e.g. -v1:0)

    _pattern = field_validator("strip_suffix_pattern")(_regex)
    defaults: _Entry = _Entry()
    models: dict[str, _Entry] = Field(default_factory=dict)


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    checked: date


class _Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sources: dict[str, _Source]
    families: dict[str, _Family]


# Figures a cloud takes over from the family whose models it hosts; prices and
# lifecycle dates are the cloud's own.
_OWN = frozenset({"deprecated", "retires"})
FIGURES = tuple(Figures.model_fields)


class CatalogError(Exception):
    """The shipped catalog is inconsistent (a bug of the package, found by its tests)."""


def _figures(entry: Figures, only: frozenset[str] | None = None, skip: frozenset[str] = frozenset()) -> dict:
    out = {}
    for name in FIGURES:
        if name in skip or (only is not None and name not in only):
            continue
        value = getattr(entry, name)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _sources(entry: _Entry, names: Any, known: dict[str, _Source]) -> dict[str, Source]:
    out = {}
    for name in names:
        sid = entry.sources.get(name, entry.source)
        if sid is None or sid not in known:
            raise CatalogError(f"figure '{name}' has no known source ({sid!r})")
        s = known[sid]
        out[name] = Source(s.url, s.checked)
    return out


class Catalog:
    """The shipped catalog, indexed: family -> model id (and alias) -> ``ModelCaps``."""

    def __init__(self, data: dict[str, Any]):
        raw = _Catalog.model_validate(data)
        self.families = raw.families
        self._index: dict[str, dict[str, ModelCaps]] = {}
        for name in raw.families:
            self._index[name] = self._build(name, raw)

    def _build(self, name: str, raw: _Catalog) -> dict[str, ModelCaps]:
        fam = raw.families[name]
        base_name = fam.inherits
        if base_name is not None and (base_name not in raw.families or raw.families[base_name].inherits):
            raise CatalogError(f"family '{name}' inherits '{base_name}', which is not a base family")
        base = raw.families[base_name] if base_name else None
        defaults: dict[str, Any] = {}
        sources: dict[str, Source] = {}
        if base is not None:
            found = _figures(base.defaults)
            defaults.update(found)
            sources.update(_sources(base.defaults, found, raw.sources))
        found = _figures(fam.defaults)
        defaults.update(found)
        sources.update(_sources(fam.defaults, found, raw.sources))
        out: dict[str, ModelCaps] = {}
        entries: dict[str, tuple[_Entry | None, _Entry | None]] = {}
        if base is not None:
            for mid, e in base.models.items():
                entries[mid] = (e, None)  # limits of the base family's model, under its own id
        for mid, e in fam.models.items():
            like = base.models.get(e.like) if (base is not None and e.like) else None
            if e.like and like is None:
                raise CatalogError(f"{name}.{mid}: like '{e.like}' is not a model of '{base_name}'")
            entries[mid] = (like, e)
        for mid, (inherited, own) in entries.items():
            figs, srcs = dict(defaults), dict(sources)
            if inherited is not None:
                skip = _OWN if base is not None else frozenset()
                found = _figures(inherited, skip=skip)
                figs.update(found)
                srcs.update(_sources(inherited, found, raw.sources))
            price = None
            if own is not None:
                found = _figures(own)
                figs.update(found)
                srcs.update(_sources(own, found, raw.sources))
                price = own.price
                if price is not None:
                    srcs.update(_sources(own, ["price"], raw.sources))
            caps = ModelCaps(model=mid, family=name, price=price, sources=srcs, **figs)
            names = [mid, *(inherited.aliases if inherited is not None and own is None else ())]
            names += own.aliases if own is not None else []
            for n in names:
                out[n] = caps
        return out

    def find(self, family: str, model: str) -> ModelCaps | None:
        """The entry of ``model`` (its id, an alias, or a cloud's spelling of it) in ``family``."""
        index = self._index.get(family)
        if index is None:
            return None
        fam = self.families[family]
        for candidate in self._spellings(fam, model):
            caps = index.get(candidate)
            if caps is not None:
                return caps
        return None

    @staticmethod
    def _spellings(fam: _Family, model: str) -> list[str]:
        """``model`` and the base ids a cloud's spelling of it may stand for: each listed prefix
        stripped in turn (a geography, then a vendor), then a suffix (a date, a version)."""
        out = [model]
        for m in out:  # grows while it is read: prefixes strip one after another
            out += [m[len(p) :] for p in fam.strip_prefixes if m.startswith(p) and m[len(p) :] not in out]
        if fam.strip_suffix_after:
            out += [m.split(fam.strip_suffix_after, 1)[0] for m in list(out) if fam.strip_suffix_after in m]
        if fam.strip_suffix_pattern:
            out += [s for m in list(out) if (s := re.sub(fam.strip_suffix_pattern, "", m)) != m]
        return out

    def find_any(self, family: str, model: str) -> ModelCaps | None:
        """``find`` in ``family``, then in the family it inherits (for ``like:`` in config)."""
        found = self.find(family, model)
        fam = self.families.get(family)
        if found is None and fam is not None and fam.inherits:
            found = self.find(fam.inherits, model)
            if found is not None:
                found = replace(found, family=family, deprecated=None, retires=None, price=None)
        return found


@cache
def shipped() -> Catalog:
    """The catalog in the package (read once)."""
    return Catalog(yaml.safe_load(CATALOG_FILE.read_text()))


def family_of(dialect: str) -> str:
    from ..dialects import get_dialect  # lazy: the dialects do not depend on the catalog

    return get_dialect(dialect).catalog_family


def lookup(dialect: str, model: str) -> ModelCaps | None:
    """The shipped catalog's capabilities of ``model`` on a backend of ``dialect`` (None: unknown)."""
    return shipped().find(family_of(dialect), model)


class CapabilityOverrides(Figures):
    """A backend's ``capabilities:`` block: figures laid over its catalog entry (or set
    for a model the catalog does not know). ``like`` names the catalog entry a backend
    runs when its model name is not one (an Azure deployment, a renamed model);
    ``catalog: false`` ignores the catalog for it."""

    like: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    catalog: bool = True


CONFIG_SOURCE = Source("gateway config (capabilities:)", date.min)


def resolve(dialect: str, model: str, overrides: CapabilityOverrides | None = None) -> ModelCaps | None:
    """A backend's capabilities: its catalog entry, with its config overrides laid over."""
    family = family_of(dialect)
    caps = None
    if overrides is None or overrides.catalog:
        caps = shipped().find_any(family, overrides.like if overrides and overrides.like else model)
    if overrides is None:
        return caps
    figs = _figures(overrides)
    if not figs:
        return caps
    if caps is None:
        caps = ModelCaps(model=model, family=family)
    sources = dict(caps.sources)
    sources.update(dict.fromkeys(figs, CONFIG_SOURCE))
    return replace(caps, sources=sources, **figs)


def retirement_warning(caps: ModelCaps | None, today: date, window_days: int) -> str | None:
    """Why a backend on this model needs attention soon (None: it does not)."""
    if caps is None or caps.retires is None:
        return None
    left = (caps.retires - today).days
    if left < 0:
        return f"model '{caps.model}' retired on {caps.retires.isoformat()} ({-left} days ago)"
    if left <= window_days:
        return f"model '{caps.model}' retires on {caps.retires.isoformat()} (in {left} days)"
    return None
