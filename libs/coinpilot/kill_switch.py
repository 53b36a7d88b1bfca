"""The kill switch (issue 23): a persistent halt of new entries per run, in ``trading_halts``.

While a run has a halt (a row with ``cleared_at`` NULL) risk refuses every entry signal
``TRADING_HALTED`` with the halt's source and reason; exits still pass, so positions can always be
closed. It is set by reconciliation (``services/executor/reconcile.py``), by an operator
(``coinpilot halt``) or by the operator's ``control.halt`` message (``services/risk/control.py``),
and cleared only by an operator (``coinpilot halt --clear``). Setting it while it is on keeps the
first halt (its reason is what tripped it); cleared halts stay as the history.

``--flatten`` closes every open position through the normal exit path: one ``ExitSignal``
(``KILL_SWITCH``) per position on ``signals.exit.<SYM>``, which risk approves like any exit and the
executor fills at its own quote (:func:`flatten_exit`).

Pure: the halt as data. Its SQL is ``coinpilot.db.halts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from coinpilot.contracts import ExitReason, ExitSignal, IndicatorSnapshot, MinuteCandle, Regime


class HaltSource(StrEnum):
    RECONCILE = "reconcile"
    OPERATOR = "operator"
    SUBJECT = "subject"
    VENUE = "venue"  # the live venue: the exchange blocked us (418) or refused our keys


@dataclass(frozen=True, slots=True)
class Halt:
    run_id: str
    source: str
    reason: str
    halted_at: datetime
    cleared_at: datetime | None = None
    cleared_by: str | None = None

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def describe(self) -> str:
        """One line for a rejection message, the CLI and ``coinpilot trace``."""
        since = f"entries halted by {self.source} since {self.halted_at.isoformat()}: {self.reason}"
        if self.cleared_at is None:
            return since
        return f"{since} (cleared {self.cleared_at.isoformat()} by {self.cleared_by})"


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """A ``positions`` row of the ledger, as an exit needs it."""

    symbol: str
    quantity: Decimal
    avg_price: Decimal
    position_id: str
    opened_at: datetime
    regime: str | None = None
    high_water_mark: Decimal | None = None


# Every indicator value of a snapshot; a flatten exit computes none of them and says so.
_INDICATORS = (
    "regime_diff_pct", "rsi_14", "rsi_7", "rsi_7_prev", "rsi_7_min_lookback", "ma_20",
    "bb_mid", "bb_upper", "bb_lower", "vol_ratio", "bb_touch_recovery",
)  # fmt: skip


def flatten_exit(position: OpenPosition, candle: MinuteCandle) -> ExitSignal:
    """The exit that closes ``position``, decided on ``candle`` (the latest recorded minute).

    Its event time is the candle's close, so the executor quotes that candle's close (the decision
    minute, as for the strategy's exits) and the order id is the one a strategy exit of that minute
    would have: JetStream keeps one of the two, and the executor fills a position once either way.
    The snapshot carries the candle and no indicator (all named in ``missing``), nothing made up.
    """
    entry_regime = Regime(position.regime) if position.regime in Regime.__members__ else Regime.UNKNOWN
    snapshot = IndicatorSnapshot(
        symbol=position.symbol,
        ts_event=candle.ts_event,
        candle=candle,
        regime=Regime.UNKNOWN,
        bars_seen=1,
        missing=_INDICATORS,
    )
    hwm = max(position.high_water_mark or position.avg_price, candle.close)
    return ExitSignal(
        ts_event=candle.ts_event,
        symbol=position.symbol,
        price=candle.close,
        exit_reason=ExitReason.KILL_SWITCH,
        entry_regime=entry_regime,
        regime=Regime.UNKNOWN,
        avg_price=position.avg_price,
        quantity=position.quantity,
        high_water_mark=hwm,
        opened_at=position.opened_at,
        position_id=position.position_id,
        snapshot=snapshot,
    )
