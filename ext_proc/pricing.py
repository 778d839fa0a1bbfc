"""What a request cost, from the backend's price and the provider's usage report."""

from __future__ import annotations

from .config import Price


def cost_usd(price: Price | None, input_tokens: int, cached: int, output_tokens: int) -> float:
    """USD for one request; prices are per million tokens, cached input at its own price."""
    if price is None:
        return 0.0
    cached_price = price.input if price.cached_input is None else price.cached_input
    fresh = max(0, input_tokens - cached)
    return (fresh * price.input + cached * cached_price + output_tokens * price.output) / 1_000_000
