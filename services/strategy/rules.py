"""The rule engine: entry (BEHAVIOUR §3.2) and exit (§3.4) evaluation, pure and in the exact order.

A "no" is an :class:`EntryDecision` with a reason code; a missing or NaN indicator is "missing"
(the original let a NaN RSI pass the ceiling, §14 #8). Prices are compared in ``Decimal`` so a
boundary written in the spec (``close == MA20 * 0.97``, ``close == HWM * 0.97``) lands on the side
the spec says, not on the side a binary float happens to round to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from coinpilot.contracts import EntryReason, ExitReason, IndicatorSnapshot, Regime
from services.strategy.params import EntryRules, ExitRules, StrategyParams

ONE = Decimal(1)
SURGE_WINDOW = 3


def present(value: float | None) -> float | None:
    """NaN counts as missing (rebuild of §2.3/§3.2)."""
    if value is None or math.isnan(value):
        return None
    return value


def as_decimal(value: float) -> Decimal:
    return Decimal(repr(value))


@dataclass(frozen=True, slots=True)
class EntryDecision:
    """Outcome of §3.2: ``reason`` is ENTRY_OK when every check passed."""

    reason: EntryReason
    passed_checks: tuple[str, ...] = ()
    detail: str = ""

    @property
    def is_entry(self) -> bool:
        return self.reason is EntryReason.ENTRY_OK


def evaluate_entry(snapshot: IndicatorSnapshot, params: StrategyParams) -> EntryDecision:
    """Run the entry checks of the snapshot's regime in the original order; the first failure wins."""
    regime = snapshot.regime
    rules = params.entry.get(regime)
    if regime is Regime.UNKNOWN or rules is None:
        return EntryDecision(
            EntryReason.REGIME_UNKNOWN, detail="regime unknown: waiting for 200 closed hours"
        )
    if snapshot.bars_seen < params.warmup_bars:  # minutes of history: a no-trade minute counts
        return EntryDecision(
            EntryReason.WARMING_UP,
            detail=f"{snapshot.bars_seen} < {params.warmup_bars} minutes of history since the last outage",
        )
    return _entry_checks(snapshot, regime, rules)


def _entry_checks(s: IndicatorSnapshot, regime: Regime, rules: EntryRules) -> EntryDecision:
    passed: list[str] = [f"Market Regime: {regime}"]

    def fail(reason: EntryReason, detail: str) -> EntryDecision:
        return EntryDecision(reason, tuple(passed), detail)

    rsi = present(s.rsi_14)  # 1
    if rsi is None:
        return fail(EntryReason.RSI14_MISSING, "RSI(14) not available")
    if rsi > rules.rsi_14_max:  # 2
        return fail(EntryReason.RSI14_TOO_HIGH, f"RSI(14) {rsi:.2f} > {rules.rsi_14_max:g}")
    passed.append(f"RSI(14) {rsi:.2f} <= {rules.rsi_14_max:g}")

    rsi7, rsi7_prev = present(s.rsi_7), present(s.rsi_7_prev)  # 3
    if rsi7 is None or rsi7_prev is None:
        return fail(EntryReason.RSI7_MISSING, "RSI(7) or its previous value not available")
    low = present(s.rsi_7_min_lookback)  # 4
    if low is None:
        low = min(rsi7, rsi7_prev)
    if not (low < rules.rsi_7_trigger and rsi7 >= rules.rsi_7_recover):
        if low >= rules.rsi_7_trigger:
            return fail(EntryReason.RSI7_NOT_OVERSOLD, f"RSI(7) low {low:.2f} >= {rules.rsi_7_trigger:g}")
        return fail(EntryReason.RSI7_NOT_RECOVERED, f"RSI(7) {rsi7:.2f} < {rules.rsi_7_recover:g}")
    passed.append(
        f"RSI(7) low {low:.2f} < {rules.rsi_7_trigger:g} and now {rsi7:.2f} >= {rules.rsi_7_recover:g}"
    )

    if rules.min_rsi_7_bounce is not None and rsi7 - low < rules.min_rsi_7_bounce:  # 5
        return fail(
            EntryReason.RSI7_BOUNCE_TOO_SMALL, f"RSI(7) bounce {rsi7 - low:.2f} < {rules.min_rsi_7_bounce:g}"
        )
    if rules.min_rsi_7_bounce is not None:
        passed.append(f"RSI(7) bounce {rsi7 - low:.2f} >= {rules.min_rsi_7_bounce:g}")

    ma = present(s.ma_20)  # 6
    close = s.candle.close
    if ma is None:
        return fail(EntryReason.MA_DATA_MISSING, f"MA({s.ma_period}) not available")
    ma_dec = as_decimal(ma)
    if rules.ma_condition == "crossover":  # 7
        if close <= ma_dec:
            return fail(EntryReason.MA_FILTER, f"close {close} <= MA({s.ma_period}) {ma:.8g}")
        passed.append(f"close {close} > MA({s.ma_period}) {ma:.8g}")
    elif rules.ma_condition in ("proximity", "proximity_or_above"):
        floor = ma_dec * rules.ma_proximity
        if close < floor:
            return fail(EntryReason.MA_FILTER, f"close {close} < MA({s.ma_period}) x {rules.ma_proximity}")
        passed.append(f"close {close} >= MA({s.ma_period}) x {rules.ma_proximity}")

    bb_lower = present(s.bb_lower)  # 8
    if rules.require_price_above_bb_lower and bb_lower is not None:
        if close < as_decimal(bb_lower):
            return fail(EntryReason.BELOW_BB_LOWER, f"close {close} < BB lower {bb_lower:.8g}")
        passed.append(f"close {close} >= BB lower {bb_lower:.8g}")

    vol = present(s.vol_ratio)
    if rules.volume_ratio_min is not None:  # 9
        if vol is None or vol < rules.volume_ratio_min:
            return fail(EntryReason.VOLUME_TOO_LOW, f"volume ratio {vol} < {rules.volume_ratio_min:g}")
        passed.append(f"volume ratio {vol:.2f} >= {rules.volume_ratio_min:g}")
    if rules.volume_min_ratio is not None:  # 10
        if vol is None or vol < rules.volume_min_ratio:
            return fail(EntryReason.VOLUME_BELOW_MIN, f"volume ratio {vol} < {rules.volume_min_ratio:g}")
        passed.append(f"volume ratio {vol:.2f} >= {rules.volume_min_ratio:g}")

    if rules.volume_surge_check:  # 11
        recent = s.recent_vol_ratios[-SURGE_WINDOW:]
        if any(r >= rules.volume_surge_ratio for r in recent if not math.isnan(r)):
            return fail(
                EntryReason.VOLUME_SURGE,
                f"volume surge >= {rules.volume_surge_ratio:g} in the last {SURGE_WINDOW} candles",
            )
        passed.append(f"no volume surge >= {rules.volume_surge_ratio:g}")

    if regime is Regime.SIDEWAYS and rules.bb_enabled:  # 12
        if not s.bb_touch_recovery:
            return fail(EntryReason.BB_TOUCH_RECOVERY_PENDING, "no BB lower touch-and-recovery yet")
        passed.append("BB lower touched and recovered")

    return EntryDecision(EntryReason.ENTRY_OK, tuple(passed))


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """What the exit rules read of a position."""

    avg_price: Decimal
    opened_at: datetime
    entry_regime: Regime
    high_water_mark: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """Outcome of §3.4: ``reason`` None means hold; ``new_hwm`` always includes this close."""

    reason: ExitReason | None
    new_hwm: Decimal
    rules: ExitRules
    pnl: Decimal

    @property
    def is_exit(self) -> bool:
        return self.reason is not None


def exit_rules_for(entry_regime: Regime, current: Regime, params: StrategyParams) -> ExitRules:
    """Same regime: its block. Changed: the current block with the tighter stop of the two.

    UNKNOWN (e.g. the regime is unavailable) maps to the fallback block (SIDEWAYS), so a stop can
    always fire.
    """
    entry_rules = params.exit_rules(entry_regime)
    if entry_regime == current:
        return entry_rules
    current_rules = params.exit_rules(current)
    return current_rules.with_stop_loss(min(entry_rules.stop_loss, current_rules.stop_loss))


def evaluate_exit(
    position: OpenPosition, snapshot: IndicatorSnapshot, params: StrategyParams
) -> ExitDecision:
    """Stop loss, trailing stop, take profit, RSI overbought, time limit: first hit wins.

    The trailing stop follows the high-water mark of closes (not highs) and arms once that mark is
    ``trailing_activation`` above entry. "Now" for the time limit is the candle's event time.
    """
    rules = exit_rules_for(position.entry_regime, snapshot.regime, params)
    close = snapshot.candle.close
    avg = position.avg_price
    hwm = max(position.high_water_mark or avg, close)
    if avg <= 0:
        return ExitDecision(None, hwm, rules, Decimal(0))
    pnl = (close - avg) / avg

    if close <= avg * (ONE - rules.stop_loss):
        return ExitDecision(ExitReason.STOP_LOSS, hwm, rules, pnl)
    armed = hwm >= avg * (ONE + rules.trailing_activation)
    if armed and close <= hwm * (ONE - rules.trailing_stop):
        return ExitDecision(ExitReason.TRAILING_STOP, hwm, rules, pnl)
    if close >= avg * (ONE + rules.take_profit):
        return ExitDecision(ExitReason.TAKE_PROFIT, hwm, rules, pnl)
    rsi = present(snapshot.rsi_14)
    if rsi and rsi > rules.rsi_overbought and close >= avg * (ONE + rules.rsi_exit_min_profit):
        return ExitDecision(ExitReason.RSI_OVERBOUGHT, hwm, rules, pnl)
    if snapshot.ts_event - position.opened_at > rules.time_limit:
        return ExitDecision(ExitReason.TIME_LIMIT, hwm, rules, pnl)
    return ExitDecision(None, hwm, rules, pnl)
