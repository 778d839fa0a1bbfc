"""What a request cost, from the backend's price and the provider's usage report."""

from __future__ import annotations

from .config import Price


def cost_usd(
    price: Price | None, input_tokens: int, cached: int, output_tokens: int, cache_write: int = 0
) -> float:
    """USD for one request; prices are per million tokens. ``input_tokens`` counts every prompt
    token; the parts read from (``cached``) and written to (``cache_write``) a prompt cache go at
    their own prices (each the input price when unset), since providers bill them apart."""
    if price is None:
        return 0.0
    cached_price = price.input if price.cached_input is None else price.cached_input
    write_price = price.input if price.cache_write is None else price.cache_write
    fresh = max(0, input_tokens - cached - cache_write)
    return (
        fresh * price.input + cached * cached_price + cache_write * write_price + output_tokens * price.output
    ) / 1_000_000
