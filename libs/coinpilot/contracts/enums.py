"""Closed sets used across messages. Members are stable codes: greppable, usable as metric labels."""

from __future__ import annotations

from enum import StrEnum


class Regime(StrEnum):
    BULL = "BULL"
    SIDEWAYS = "SIDEWAYS"
    BEAR = "BEAR"
    UNKNOWN = "UNKNOWN"


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class EntryReason(StrEnum):
    """Why an entry evaluation ended where it did (BEHAVIOUR §3.2). ``ENTRY_OK`` means all passed."""

    ENTRY_OK = "ENTRY_OK"
    REGIME_UNKNOWN = "REGIME_UNKNOWN"
    WARMING_UP = "WARMING_UP"
    RSI14_MISSING = "RSI14_MISSING"
    RSI14_TOO_HIGH = "RSI14_TOO_HIGH"
    RSI7_MISSING = "RSI7_MISSING"
    RSI7_NOT_OVERSOLD = "RSI7_NOT_OVERSOLD"
    RSI7_NOT_RECOVERED = "RSI7_NOT_RECOVERED"
    RSI7_BOUNCE_TOO_SMALL = "RSI7_BOUNCE_TOO_SMALL"
    MA_DATA_MISSING = "MA_DATA_MISSING"
    MA_FILTER = "MA_FILTER"
    BELOW_BB_LOWER = "BELOW_BB_LOWER"
    VOLUME_TOO_LOW = "VOLUME_TOO_LOW"
    VOLUME_BELOW_MIN = "VOLUME_BELOW_MIN"
    VOLUME_SURGE = "VOLUME_SURGE"
    BB_TOUCH_RECOVERY_PENDING = "BB_TOUCH_RECOVERY_PENDING"


class ExitReason(StrEnum):
    STOP_LOSS = "STOP_LOSS"
    TRAILING_STOP = "TRAILING_STOP"
    TAKE_PROFIT = "TAKE_PROFIT"
    RSI_OVERBOUGHT = "RSI_OVERBOUGHT"
    TIME_LIMIT = "TIME_LIMIT"
    KILL_SWITCH = "KILL_SWITCH"  # an operator's `coinpilot halt --flatten` (issue 23)


class RejectReason(StrEnum):
    """Every code an order can be rejected with, by risk (§4), the agent (§5) or the executor (§6)."""

    # risk sizing (§4.1)
    EXPOSURE_LIMIT_REACHED = "EXPOSURE_LIMIT_REACHED"
    CASH_INSUFFICIENT = "CASH_INSUFFICIENT"
    ORDER_AMOUNT_NOT_POSITIVE = "ORDER_AMOUNT_NOT_POSITIVE"
    # risk checks (§4.2)
    ACCOUNT_MISSING = "ACCOUNT_MISSING"
    NON_POSITIVE_AMOUNT = "NON_POSITIVE_AMOUNT"
    NON_POSITIVE_REFERENCE_EQUITY = "NON_POSITIVE_REFERENCE_EQUITY"
    TRADING_HALTED = "TRADING_HALTED"
    COOLDOWN_ACTIVE = "COOLDOWN_ACTIVE"
    MAX_DAILY_TRADES = "MAX_DAILY_TRADES"
    MAX_DAILY_LOSS = "MAX_DAILY_LOSS"
    MAX_ORDER_SIZE = "MAX_ORDER_SIZE"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    MAX_TOTAL_EXPOSURE = "MAX_TOTAL_EXPOSURE"
    MAX_CONCURRENT_POSITIONS = "MAX_CONCURRENT_POSITIONS"
    DUPLICATE_POSITION = "DUPLICATE_POSITION"
    ORDER_PENDING = "ORDER_PENDING"
    IMPLAUSIBLE_PRICE = "IMPLAUSIBLE_PRICE"  # a non-positive or implausible signal price (risk, agent)
    # agent (§5)
    AI_CONTEXT_SHORT = "AI_CONTEXT_SHORT"
    FALLING_KNIFE = "FALLING_KNIFE"
    VOLUME_RECOVERY_LOW = "VOLUME_RECOVERY_LOW"
    AI_GUARDRAIL_BLOCKED = "AI_GUARDRAIL_BLOCKED"
    AI_REJECTED = "AI_REJECTED"
    AI_LOW_CONFIDENCE = "AI_LOW_CONFIDENCE"
    AI_RISK_WARNING = "AI_RISK_WARNING"
    AI_TIMEOUT = "AI_TIMEOUT"
    AI_ERROR = "AI_ERROR"
    AI_INVALID_OUTPUT = "AI_INVALID_OUTPUT"
    AI_RECORD_MISSING = "AI_RECORD_MISSING"
    # executor (§6)
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    NO_POSITION = "NO_POSITION"
    QUANTITY_TOO_SMALL = "QUANTITY_TOO_SMALL"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"  # the venue's quote is far from the order's price
    # executor, live venue (issue 23)
    ORDER_CAP_EXCEEDED = "ORDER_CAP_EXCEEDED"  # a BUY over the per-order cap
    DAILY_CAP_EXCEEDED = "DAILY_CAP_EXCEEDED"  # a BUY over what the day may still spend
    BELOW_EXCHANGE_MINIMUM = "BELOW_EXCHANGE_MINIMUM"  # under the minimum order total (dust)
    VENUE_REFUSED = "VENUE_REFUSED"  # the exchange refused the order (its error name in the message)
    VENUE_NOT_PLACED = "VENUE_NOT_PLACED"  # its answer was lost and the exchange has no such order
    VENUE_NOTHING_EXECUTED = "VENUE_NOTHING_EXECUTED"  # closed on the exchange with nothing executed
    MARKET_NOT_SUPPORTED = "MARKET_NOT_SUPPORTED"  # live trading is KRW markets only


class RejectStage(StrEnum):
    RISK = "risk"
    AGENT = "agent"
    EXECUTOR = "executor"


class AiVerdict(StrEnum):
    CONFIRM = "CONFIRM"
    REJECT = "REJECT"
    SKIP = "SKIP"


class AlertLevel(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class AlertType(StrEnum):
    COOLDOWN = "COOLDOWN"
    DAILY_LOSS_HALT = "DAILY_LOSS_HALT"
    VOLATILITY_HIGH = "VOLATILITY_HIGH"
    RISK_REJECTION = "RISK_REJECTION"
    AI_GLOBAL_BLOCK = "AI_GLOBAL_BLOCK"
    # the trust boundary: input refused and dead-lettered (issue 19)
    CANDLE_REJECTED = "CANDLE_REJECTED"
    ORDER_REFUSED = "ORDER_REFUSED"
    FILL_MISMATCH = "FILL_MISMATCH"
    # live trading (issue 23): the ledger differs from the exchange; the kill switch was set
    RECONCILIATION_MISMATCH = "RECONCILIATION_MISMATCH"
    TRADING_HALT = "TRADING_HALT"
    # the live venue: the exchange blocked us (HTTP 418), no further orders (issue 23)
    VENUE_BLOCKED = "VENUE_BLOCKED"
