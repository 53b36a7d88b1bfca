"""``check_order_validity`` (BEHAVIOUR §4.2) as one small pure function per rule, run in order,
after :func:`signal_price`, the sanity of the entry signal's price (issue 19).

Each check reads an :class:`OrderCheck` (everything the original read from the database, Redis
and the clock, handed in) and returns a :class:`Verdict`: ``PASS`` or a reject code with a human
message. The first failing check wins. Check 7 also says that trading must halt for the day.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from coinpilot.contracts import EntrySignal, RejectReason
from services.risk.params import RiskParams

ONE = Decimal(1)
MINUTE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: RejectReason | None = None
    message: str = ""
    halts_trading: bool = False

    @property
    def passed(self) -> bool:
        return self.reason is None


PASS = Verdict()


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """The inputs of §4.2 for one BUY of ``amount`` (quote currency) at event time ``now``."""

    symbol: str
    amount: Decimal
    now: datetime
    reference_equity: Decimal
    balance: Decimal | None
    exposure: Decimal
    held_symbols: frozenset[str]
    pending_symbols: frozenset[str] = frozenset()
    vol_multiplier: Decimal = ONE
    total_pnl: Decimal = Decimal(0)
    buy_count: int = 0
    is_trading_halted: bool = False
    cooldown_until: datetime | None = None

    @property
    def open_positions(self) -> int:
        """Held symbols plus BUYs already proposed for other symbols (they become positions)."""
        return len(self.held_symbols | (self.pending_symbols - {self.symbol}))


def account_exists(c: OrderCheck, p: RiskParams) -> Verdict:  # 1
    if c.balance is None:
        return Verdict(RejectReason.ACCOUNT_MISSING, "no account row for this run and currency")
    return PASS


def amount_positive(c: OrderCheck, p: RiskParams) -> Verdict:  # 2
    if c.amount <= 0:
        return Verdict(RejectReason.NON_POSITIVE_AMOUNT, f"order amount {c.amount} <= 0")
    return PASS


def reference_positive(c: OrderCheck, p: RiskParams) -> Verdict:  # 3
    if c.reference_equity <= 0:
        return Verdict(
            RejectReason.NON_POSITIVE_REFERENCE_EQUITY, f"reference equity {c.reference_equity} <= 0"
        )
    return PASS


def not_halted(c: OrderCheck, p: RiskParams) -> Verdict:  # 4
    if c.is_trading_halted:
        return Verdict(RejectReason.TRADING_HALTED, "trading is halted for the rest of the trading day")
    return PASS


def not_in_cooldown(c: OrderCheck, p: RiskParams) -> Verdict:  # 5
    if c.cooldown_until is not None and c.cooldown_until > c.now:
        minutes = (c.cooldown_until - c.now).total_seconds() / MINUTE_SECONDS
        return Verdict(
            RejectReason.COOLDOWN_ACTIVE,
            f"cooldown: {minutes:.1f} min left (until {c.cooldown_until.isoformat()})",
        )
    return PASS


def daily_trades(c: OrderCheck, p: RiskParams) -> Verdict:  # 6
    if c.buy_count >= p.max_daily_trades:
        return Verdict(
            RejectReason.MAX_DAILY_TRADES,
            f"max daily trades reached: {c.buy_count} BUYs >= {p.max_daily_trades}",
        )
    return PASS


def daily_loss(c: OrderCheck, p: RiskParams) -> Verdict:  # 7
    limit = c.reference_equity * p.max_daily_loss
    if c.total_pnl <= -limit:
        return Verdict(
            RejectReason.MAX_DAILY_LOSS,
            f"max daily loss reached: realised {c.total_pnl} <= -{limit}; trading halted for the day",
            halts_trading=True,
        )
    return PASS


def max_order_size(c: OrderCheck, p: RiskParams) -> Verdict:  # 8 (multiplier given) and 9
    cap = c.reference_equity * p.max_position_size * c.vol_multiplier
    if c.amount > cap:
        note = f" (reduced to {c.vol_multiplier:.0%} for high volatility)" if c.vol_multiplier != ONE else ""
        return Verdict(RejectReason.MAX_ORDER_SIZE, f"single order cap: {c.amount} > {cap}{note}")
    return PASS


def available_cash(c: OrderCheck, p: RiskParams) -> Verdict:  # 10
    usable = (c.balance or Decimal(0)) * (ONE - p.fee_buffer)
    if c.amount > usable:
        return Verdict(RejectReason.INSUFFICIENT_CASH, f"amount {c.amount} > usable cash {usable}")
    return PASS


def total_exposure(c: OrderCheck, p: RiskParams) -> Verdict:  # 11
    limit = c.reference_equity * p.max_total_exposure
    if c.exposure + c.amount > limit:
        return Verdict(RejectReason.MAX_TOTAL_EXPOSURE, f"exposure {c.exposure} + {c.amount} > limit {limit}")
    return PASS


def concurrency(c: OrderCheck, p: RiskParams) -> Verdict:  # 12
    if c.symbol not in c.held_symbols and c.open_positions >= p.max_concurrent_positions:
        return Verdict(
            RejectReason.MAX_CONCURRENT_POSITIONS,
            f"{c.open_positions} open positions >= {p.max_concurrent_positions}",
        )
    return PASS


def duplicate(c: OrderCheck, p: RiskParams) -> Verdict:  # 13
    if not p.allow_same_coin_duplicate and c.symbol in c.held_symbols:
        return Verdict(RejectReason.DUPLICATE_POSITION, f"{c.symbol} is already held")
    return PASS


def signal_price(signal: EntrySignal, recorded_close: Decimal | None, p: RiskParams) -> Verdict:
    """Is the entry signal's price one the market could have made? (checked before anything else)

    A genuine signal's price is the close of the candle its snapshot carries (same symbol and
    minute), within ``p.average_band`` of that snapshot's moving average, and within
    ``p.price_band`` of the candle ``market_data`` recorded for that minute when one is recorded
    (``recorded_close``; the recorder may not have written it yet, then the rest must do).
    """
    price, snapshot = signal.price, signal.snapshot
    candle = snapshot.candle
    if not price.is_finite() or price <= 0:
        return Verdict(RejectReason.IMPLAUSIBLE_PRICE, f"signal price {price} <= 0")
    if (snapshot.symbol, candle.symbol, snapshot.ts_event) != (signal.symbol, signal.symbol, signal.ts_event):
        return Verdict(
            RejectReason.IMPLAUSIBLE_PRICE,
            f"the snapshot it carries is of {candle.symbol} at {snapshot.ts_event.isoformat()}, "
            f"not {signal.symbol} at {signal.ts_event.isoformat()}",
        )
    if price != candle.close:
        return Verdict(
            RejectReason.IMPLAUSIBLE_PRICE, f"signal price {price} is not its candle's close {candle.close}"
        )
    average = snapshot.ma_20
    if average is not None and math.isfinite(average) and average > 0:
        mean = Decimal(repr(average))
        if abs(price - mean) > mean * p.average_band:
            return Verdict(
                RejectReason.IMPLAUSIBLE_PRICE,
                f"signal price {price} is more than {p.average_band:.0%} from its MA({snapshot.ma_period}) "
                f"{mean}",
            )
    if recorded_close is not None and abs(price - recorded_close) > recorded_close * p.price_band:
        return Verdict(
            RejectReason.IMPLAUSIBLE_PRICE,
            f"signal price {price} is more than {p.price_band:.0%} from the recorded close "
            f"{recorded_close} of its minute",
        )
    return PASS


Check = Callable[[OrderCheck, RiskParams], Verdict]

CHECKS: tuple[Check, ...] = (
    account_exists,
    amount_positive,
    reference_positive,
    not_halted,
    not_in_cooldown,
    daily_trades,
    daily_loss,
    max_order_size,
    available_cash,
    total_exposure,
    concurrency,
    duplicate,
)

#: Rejections written to ``risk_audit`` (checks 4-13, §4.8 rebuild, and an implausible price).
AUDITED: frozenset[RejectReason] = frozenset(
    {
        RejectReason.IMPLAUSIBLE_PRICE,
        RejectReason.TRADING_HALTED,
        RejectReason.COOLDOWN_ACTIVE,
        RejectReason.MAX_DAILY_TRADES,
        RejectReason.MAX_DAILY_LOSS,
        RejectReason.MAX_ORDER_SIZE,
        RejectReason.INSUFFICIENT_CASH,
        RejectReason.MAX_TOTAL_EXPOSURE,
        RejectReason.MAX_CONCURRENT_POSITIONS,
        RejectReason.DUPLICATE_POSITION,
    }
)


def check_order(check: OrderCheck, params: RiskParams) -> Verdict:
    """Run the §4.2 checks in order; the first failure is the verdict."""
    for rule in CHECKS:
        verdict = rule(check, params)
        if not verdict.passed:
            return verdict
    return PASS
