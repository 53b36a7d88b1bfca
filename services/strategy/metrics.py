"""The strategy's own instruments (the runtime records handled/failed/latency per consumer)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SIGNALS = Counter(
    "coinpilot_strategy_signals", "Entry and exit signals emitted", ["symbol", "kind", "reason"]
)
EVALUATIONS = Counter(
    "coinpilot_strategy_evaluations",
    "Closed candles evaluated, by outcome (entry check reason, exit reason or hold code)",
    ["symbol", "action", "reason"],
)
OPEN_POSITIONS = Gauge(
    "coinpilot_strategy_open_positions", "1 while the strategy holds the symbol", ["symbol"]
)
CACHE_WRITE_FAILURES = Counter(
    "coinpilot_strategy_cache_write_failures",
    "bot:status / position HWM writes skipped because Redis was unavailable",
    ["key"],
)
