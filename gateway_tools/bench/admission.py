"""The admission scenario: the translated request with a tenant budget in force.

Budgets change the data path of every tenant (any budget in a config turns
admission on for the whole gateway), so the budgeted gateways are gateways of
their own: one keeps budgets in the ext_proc process, one in a real Redis.
Their budgets are real (requests, tokens, spend per day, concurrency, so every
check runs) and far above what the bench sends, so nothing is ever rejected:
what is measured is the cost of admitting, not of refusing.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

# Far above any load the bench sends (a minute at 10,000 req/s reserves under
# 200 M tokens and $1,000 at these prices), yet each one checked on every request.
LIMITS = {
    "requests_per_minute": 100_000_000,
    "tokens_per_minute": 10_000_000_000,
    "spend_per_day_usd": 1_000_000_000.0,
    "concurrent_requests": 1_000_000,
}
# Prices make the spend budget a real check (a request's reservation is priced
# at the dearest backend of its model); per million tokens, like a large model.
PRICE = {"input": 3.0, "output": 15.0}
RATE_LIMIT_HEADER = "x-ratelimit-limit-requests"
REDIS_MISSING = "redis-server not found (apt-get install redis-server)"


def budgeted(config: dict[str, Any], tenant: str, model: str, redis_url: str | None) -> dict[str, Any]:
    """``config`` with budgets on ``tenant`` and prices on ``model``'s backends (in Redis if given)."""
    out = copy.deepcopy(config)
    out["tenants"][tenant]["limits"] = dict(LIMITS)
    for backend in out["models"][model]["backends"]:
        backend["price"] = dict(PRICE)
    if redis_url:
        # fail_closed: Redis trouble shows up as errors, not as a quiet fallback to in-memory budgets.
        out["redis"] = {"url": redis_url, "key_prefix": "bench", "on_failure": "fail_closed"}
    return out


def redis_argv(port: int, workdir: Path) -> list[str]:
    """A throwaway redis-server: loopback only, nothing written to disk."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(REDIS_MISSING)
    return [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]


def redis_missing() -> str | None:
    return None if shutil.which("redis-server") else REDIS_MISSING
