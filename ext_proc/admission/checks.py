"""Config cross-checks of the admission settings (run by ``config._cross_check``).

They work on the raw YAML data, tolerating malformed parts that pydantic
reports on its own, so every problem of a file is found in one pass.
"""

from __future__ import annotations

from typing import Any

from ..names import backend_name

_RANK = {"batch": 0, "interactive": 1}


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def config_problems(data: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    budgets = False
    # A backend (provider deployment) may serve several models: its limits and
    # price are one fact, declared once or identically everywhere.
    declared: dict[tuple[str, str], tuple[str, Any]] = {}
    for model_name, model in _d(data.get("models")).items():
        backends = _d(model).get("backends")
        for i, b in enumerate(backends if isinstance(backends, list) else []):
            b = _d(b)
            name = backend_name(model_name, b.get("provider"), b.get("model"), b.get("name"))
            for field in ("limits", "price"):
                value = b.get(field)
                if value is None:
                    continue
                where = f"models.{model_name}.backends[{i}].{field}"
                first = declared.setdefault((name, field), (where, value))
                if first[1] != value:
                    problems.append(f"{where}: backend '{name}' already has different {field} at {first[0]}")
            limits = _d(b.get("limits"))
            budgets = budgets or bool(limits)
            adaptive = _d(limits.get("adaptive"))
            lo, hi, init = adaptive.get("min", 1), adaptive.get("max", 64), adaptive.get("initial")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                problems.append(
                    f"models.{model_name}.backends[{i}].limits.adaptive: min {lo} is above max {hi}"
                )
            if isinstance(init, int) and isinstance(lo, int) and isinstance(hi, int) and not lo <= init <= hi:
                problems.append(
                    f"models.{model_name}.backends[{i}].limits.adaptive.initial: "
                    f"{init} is outside [{lo}, {hi}]"
                )
    for tname, t in _d(data.get("tenants")).items():
        t = _d(t)
        budgets = budgets or bool(_d(t.get("limits")))
        prio, top = t.get("priority", "interactive"), t.get("max_priority", "interactive")
        if prio in _RANK and top in _RANK and _RANK[prio] > _RANK[top]:
            problems.append(f"tenants.{tname}.priority: '{prio}' is above max_priority '{top}'")
    workers = _d(data.get("ext_proc")).get("workers", 1)
    if budgets and data.get("redis") is None and isinstance(workers, int) and workers > 1:
        problems.append(
            f"ext_proc.workers: {workers} workers with in-memory budgets would each enforce "
            "the whole budget; add a 'redis:' section to share them, or run one worker"
        )
    return problems
