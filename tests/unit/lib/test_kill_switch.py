"""``coinpilot.kill_switch.flatten_exit``: the exit an operator's flatten publishes for a position."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from coinpilot.contracts import ExitReason, MinuteCandle, Regime, Side, order_id_for
from coinpilot.kill_switch import OpenPosition, flatten_exit

OPEN = datetime(2026, 3, 2, 11, 59, tzinfo=UTC)
CANDLE = MinuteCandle(
    symbol="KRW-BTC",
    ts_open=OPEN,
    ts_event=OPEN + timedelta(minutes=1),
    open=Decimal(99),
    high=Decimal(105),
    low=Decimal(98),
    close=Decimal(104),
    volume=Decimal(3),
)
POSITION = OpenPosition(
    "KRW-BTC", Decimal(2), Decimal(100), "KRW-BTC:2026-03-02T10:00Z:buy", OPEN - timedelta(hours=2), "BULL"
)


def test_the_exit_is_decided_on_the_candle_and_sells_the_position_it_names() -> None:
    signal = flatten_exit(POSITION, CANDLE)
    assert (signal.ts_event, signal.price, signal.exit_reason) == (
        CANDLE.ts_event,
        Decimal(104),
        ExitReason.KILL_SWITCH,
    )
    assert (signal.quantity, signal.avg_price, signal.position_id) == (
        Decimal(2),
        Decimal(100),
        POSITION.position_id,
    )
    assert (signal.entry_regime, signal.regime) == (Regime.BULL, Regime.UNKNOWN)
    assert signal.high_water_mark == Decimal(104)  # the close is above the average, no HWM recorded
    # the order id a strategy exit of the same minute would have: one of the two is kept
    assert order_id_for(signal.symbol, signal.ts_event, Side.SELL) == "KRW-BTC:2026-03-02T12:00Z:sell"


def test_nothing_is_made_up_in_the_snapshot() -> None:
    snapshot = flatten_exit(POSITION, CANDLE).snapshot
    assert snapshot.candle == CANDLE and snapshot.rsi_14 is None and snapshot.ma_20 is None
    assert {"rsi_14", "ma_20", "bb_mid", "vol_ratio"} <= set(snapshot.missing)


def test_an_unknown_entry_regime_and_a_recorded_high_water_mark_are_kept_as_they_are() -> None:
    position = OpenPosition("KRW-BTC", Decimal(1), Decimal(100), "p", OPEN, None, Decimal(120))
    signal = flatten_exit(position, CANDLE)
    assert (signal.entry_regime, signal.high_water_mark) == (Regime.UNKNOWN, Decimal(120))
