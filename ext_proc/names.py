"""Names derived from configuration, one rule each (shared by config and its cross-checks)."""

from __future__ import annotations

from typing import Any


def backend_name(model_name: str, provider: Any, model: Any = None, name: Any = None) -> str:
    """A backend's unique name: its own, else ``provider/upstream model``."""
    return str(name or f"{provider}/{model or model_name}")
