"""The indicator's own instruments (the runtime records the per-consumer standard ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from coinpilot.contracts import Regime, RegimeUpdate

REGIME = Gauge(
    "coinpilot_indicator_regime",
    "1 for the live regime of the symbol, 0 for the others (updated on every closed hour)",
    ["symbol", "regime"],
)
CANDLES = Counter(
    "coinpilot_indicator_candles",
    "1m candles handled, by outcome (processed, duplicate = redelivered last candle, stale = older)",
    ["symbol", "outcome"],
)
MISSING_MINUTES = Counter(
    "coinpilot_indicator_missing_minutes",
    "Minutes missing right before a processed candle (gaps in the 1m stream)",
    ["symbol"],
)
WARMUPS = Counter(
    "coinpilot_indicator_warmups",
    "Symbol states rebuilt from market_data: first candle after a start, or market_data filled a gap",
    ["reason"],
)
REGIME_CACHE_FAILURES = Counter(
    "coinpilot_indicator_regime_cache_failures",
    "market:regime:<SYM> writes skipped because Redis was unavailable (the regime still went out on NATS)",
)


def publish_regime_gauge(update: RegimeUpdate) -> None:
    for regime in Regime:
        REGIME.labels(update.symbol, regime.value).set(1 if regime is update.regime else 0)
