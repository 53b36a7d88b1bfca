"""Estimated cost of a model call (BEHAVIOUR §5.7): tokens / 1e6 x list price, 8 dp; unknown -> None."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

PRICE_VERSION = "v1"
EIGHT_DP = Decimal("0.00000001")
MILLION = Decimal(1_000_000)

#: USD per 1M tokens (input, output). The §5.7 table (Haiku, gpt-4o-mini) plus Sonnet 4.5, the
#: ``LLM_MODE=prod`` model, at its public list price so production spend is not reported as NULL.
PRICES_USD_PER_MILLION: dict[str, tuple[Decimal, Decimal]] = {
    "claude-haiku-4-5-20251001": (Decimal("0.80"), Decimal("4.00")),
    "claude-sonnet-4-5-20250929": (Decimal("3.00"), Decimal("15.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
}


def estimate_cost_usd(model: str, input_tokens: int | None, output_tokens: int | None) -> Decimal | None:
    price = PRICES_USD_PER_MILLION.get(model)
    if price is None or input_tokens is None or output_tokens is None:
        return None
    cost = Decimal(input_tokens) / MILLION * price[0] + Decimal(output_tokens) / MILLION * price[1]
    return cost.quantize(EIGHT_DP)


def total_cost_usd(costs: Iterable[Decimal | None]) -> Decimal | None:
    """Sum of the known costs; None when no call had a price."""
    known = [c for c in costs if c is not None]
    return sum(known, Decimal(0)).quantize(EIGHT_DP) if known else None
