"""Rate-limit headers (``x-ratelimit-*``) and Retry-After.

Clients' SDKs read these to pace themselves: ``x-ratelimit-*`` describe the
tenant's requests- and tokens-per-minute budgets (limit, what is left, time
until the bucket is full again); ``retry-after`` (whole seconds, rounded up)
and ``retry-after-ms`` say when this very request would fit. Admitted
responses get them through Envoy dynamic metadata (the ext_proc does not see
response headers), rejections directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

METADATA_NAMESPACE = "gw.ratelimit"
HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def duration(seconds: float) -> str:
    """The reset format SDKs parse: ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    secs = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes else f"{secs}s"


def rate_limit_headers(budgets: Sequence[Any], levels: Sequence[float]) -> dict[str, str]:
    """Headers for a tenant's per-minute budgets, given their current levels."""
    out: dict[str, str] = {}
    for b, level in zip(budgets, levels, strict=False):
        if not b.rate_limit_headers:
            continue
        kind = b.kind
        out[f"x-ratelimit-limit-{kind}"] = str(int(getattr(b, "limit", 0) or b.cap))
        out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
        out[f"x-ratelimit-reset-{kind}"] = duration((b.cap - level) / b.rate)
    return out


def retry_headers(wait: float) -> dict[str, str]:
    wait = max(wait, 0.001)
    return {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}
