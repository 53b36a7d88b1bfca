"""Market codes: Upbit form ``QUOTE-BASE`` (``KRW-BTC``) and file form ``BASE/QUOTE`` (``BTC/USDT``)."""

from __future__ import annotations

import re

MARKET_RE = re.compile(r"^[A-Z]{2,6}-[A-Z0-9]{1,12}$")
DEFAULT_SYMBOLS: tuple[str, ...] = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE")


def is_market(symbol: str) -> bool:
    return bool(MARKET_RE.match(symbol))


def pair_to_market(pair: str) -> str:
    """``BTC/USDT`` -> ``USDT-BTC`` (Upbit puts the quote currency first)."""
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"not a BASE/QUOTE pair: {pair!r}")
    return f"{quote.upper()}-{base.upper()}"


def market_to_pair(market: str) -> str:
    quote, _, base = market.partition("-")
    return f"{base}/{quote}"


def quote_currency(market: str) -> str:
    """The currency every amount of this market is in: ``KRW`` for ``KRW-BTC``, ``USDT`` for ``USDT-BTC``."""
    return market.partition("-")[0]
