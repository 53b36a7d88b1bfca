"""The executor's own instruments (names kept from the original where dashboards use them, §11)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FILLS = Counter("coinpilot_executor_fills", "Orders filled", ["symbol", "side"])
REJECTIONS = Counter("coinpilot_executor_rejections", "Orders the executor refused", ["symbol", "reason"])
REFUSALS = Counter(
    "coinpilot_executor_refusals",
    "Orders refused as forged or corrupt (no approval recorded, or not as recorded), by rule",
    ["symbol", "rule"],
)
REPLAYED_FILLS = Counter(
    "coinpilot_executor_replayed_fills",
    "Redelivered orders answered with their stored fill instead of a second one",
    ["symbol"],
)
FEES = Counter("coinpilot_executor_fees", "Fees charged, in the account's quote currency", ["currency"])
TRADE_COUNT = Counter("coinpilot_trade_count", "Successful BUY and SELL fills (original name)")
ACTIVE_POSITIONS = Gauge("coinpilot_active_positions", "Open positions after the last fill")
EQUITY_KRW = Gauge(
    "coinpilot_equity_krw", "KRW cash plus KRW positions at their last fill price, after the last fill"
)
VENUE_ORDERS = Counter(
    "coinpilot_executor_venue_orders",
    "Live venue orders by the state they reached (intended, submitted, open, done, cancelled, failed)",
    ["symbol", "state"],
)
VENUE_HALTED = Gauge(
    "coinpilot_executor_venue_halted", "1 while the live venue takes no orders (the exchange blocked us)"
)
