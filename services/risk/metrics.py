"""The risk service's own instruments (the runtime records handled/failed/latency per consumer)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "coinpilot_risk_decisions",
    "Verdicts on signals: proposed, rejected (by reason), approved",
    ["decision", "reason"],
)
TRADING_HALTED = Gauge("coinpilot_risk_trading_halted", "1 while entries are halted by the daily loss limit")
TOTAL_PNL = Gauge(
    "coinpilot_total_pnl", "Realised PnL of the current trading day (quote currency), BEHAVIOUR §11 name"
)
COOLDOWN_ACTIVE = Gauge("coinpilot_risk_cooldown_active", "1 while a consecutive-loss cooldown is running")
VOLATILITY_INDEX = Gauge(
    "coinpilot_volatility_index",
    "Last GARCH(1,1) one-hour-ahead sigma of hourly returns, percent",
    ["symbol"],
)
VOLATILITY_MULTIPLIER = Gauge(
    "coinpilot_risk_volatility_multiplier",
    "Size multiplier applied to the last BUY of the symbol",
    ["symbol"],
)
VOLATILITY_FALLBACKS = Counter(
    "coinpilot_risk_volatility_fallbacks",
    "Entry sizings that used multiplier 1.0 because the fit was missing, stale or unreadable",
    ["symbol", "reason"],
)
VOLATILITY_FITS = Counter(
    "coinpilot_risk_volatility_fits",
    "GARCH refits by outcome (fitted, insufficient, failed)",
    ["symbol", "outcome"],
)
VOLATILITY_FIT_SECONDS = Histogram(
    "coinpilot_risk_volatility_fit_seconds",
    "Time of one GARCH(1,1) fit and forecast",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CACHE_FAILURES = Counter(
    "coinpilot_risk_cache_failures", "Redis reads/writes that failed and used their fallback", ["purpose"]
)
