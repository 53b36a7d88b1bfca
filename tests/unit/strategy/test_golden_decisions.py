"""The rule engine on real candles: BTC/USDT and ETH/USDT, 2023-03-16 22:15 .. 2023-04-10 00:00 UTC.

Pipeline, in process and pure: the real 1m files -> the indicator maths (``history_messages`` of the
indicator service, regime from closed hours) -> ``services.strategy.core`` with every order
filled at once at the signal price (no risk, no agent: this pins the rule engine alone). The
decisions are compared whole with ``tests/fixtures/decisions/strategy_2023_btc_eth.json``.

Reviewed by hand when the file was written:

* nothing fires before 2023-03-25 07:11 (BTC): a regime needs 200 closed hours (8.3 days after the
  first candle, 03-16 22:15) and UNKNOWN blocks entries;
* the window is SIDEWAYS most of the time (MA50/MA200 within +-2 %; ETH turns BULL 04-01 14:00 ..
  04-02 20:00 and 04-05 09:00 .. 04-07 20:00), so 65 of the 68 decisions carry SIDEWAYS: entries
  passed RSI14 <= 48, RSI7 low < 40 back to >= 42, bounce >= 3, close >= 0.985 MA20 and the BB
  lower touch-and-recovery;
* 35 entries and 33 exits: 25 RSI_OVERBOUGHT (RSI14 > 70 with >= 1 % profit; SIDEWAYS take-profit
  3 % rarely comes first), 3 STOP_LOSS (e.g. BTC 2023-03-27 15:01 at 26869.96 vs 28005.66 = -4.05 %,
  SIDEWAYS stop 4 %), 5 TIME_LIMIT, e.g. ETH entered BULL 04-05 14:47 and held (BULL allows 72 h)
  until 04-07 21:00, the first candle after the regime turned SIDEWAYS, whose 48 h limit had passed;
* entries and exits alternate per symbol; two symbols, one position each at most.

Regenerate after a deliberate rule change with ``python -m tests.unit.strategy.test_golden_decisions``
and review the diff like code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from coinpilot.candle_files import load_candles
from coinpilot.contracts import EntrySignal, ExitSignal, IndicatorSnapshot, Side
from coinpilot.strategy_config import load_strategy_config
from services.indicator.core import history_messages
from services.indicator.settings import config_from_strategy
from services.strategy.core import SymbolState, on_fill, on_snapshot
from services.strategy.params import StrategyParams
from tests.conftest import FIXTURES, SHARED_DATA
from tests.unit.strategy.factories import fill

GOLDEN = FIXTURES / "decisions" / "strategy_2023_btc_eth.json"
FILES = ("BTC_USDT-1m-20230316-20230501.csv.gz", "ETH_USDT-1m-20230316-20230501.csv.gz")
END = datetime(2023, 4, 10, tzinfo=UTC)


def decisions(data: Path) -> list[dict[str, str]]:
    """Every signal of the window, per symbol in time order, as the golden file stores it."""
    config = load_strategy_config()
    indicator_config = config_from_strategy(config)
    params = StrategyParams.from_config(config)
    out: list[dict[str, str]] = []
    for name in FILES:
        candles = load_candles([data / name], end=END)
        state = SymbolState(candles[0].symbol)
        for message in history_messages(candles, indicator_config):
            if not isinstance(message, IndicatorSnapshot):
                continue
            step = on_snapshot(state, message, params)
            state = step.state
            for signal in step.out:
                out.append(record(signal))
                state = settle(state, signal)
    return out


def settle(state: SymbolState, signal: EntrySignal | ExitSignal) -> SymbolState:
    """Fill the signal's order at once at its price."""
    order_id = state.pending_order_id or ""
    side = Side.BUY if isinstance(signal, EntrySignal) else Side.SELL
    return on_fill(
        state,
        fill(
            side,
            order_id=order_id,
            price=str(signal.price),
            at=signal.ts_event,
            symbol=signal.symbol,
            regime=signal.regime,
        ),
    )


def record(signal: EntrySignal | ExitSignal) -> dict[str, str]:
    if isinstance(signal, EntrySignal):
        return {
            "symbol": signal.symbol,
            "ts": signal.ts_event.isoformat(),
            "kind": "entry",
            "reason": signal.reason.value,
            "regime": signal.regime.value,
            "price": format(signal.price, "f"),
        }
    return {
        "symbol": signal.symbol,
        "ts": signal.ts_event.isoformat(),
        "kind": "exit",
        "reason": signal.exit_reason.value,
        "regime": signal.regime.value,
        "price": format(signal.price, "f"),
        "entry_regime": signal.entry_regime.value,
        "avg_price": format(signal.avg_price, "f"),
        "high_water_mark": format(signal.high_water_mark, "f"),
    }


def test_real_candles_give_the_reviewed_decisions(shared_data: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert decisions(shared_data) == golden


def test_the_golden_decisions_alternate_per_symbol_and_start_after_the_regime_warm_up() -> None:
    golden = json.loads(GOLDEN.read_text())
    for symbol in ("USDT-BTC", "USDT-ETH"):
        mine = [d for d in golden if d["symbol"] == symbol]
        assert [d["kind"] for d in mine] == ["entry", "exit"] * (len(mine) // 2) + ["entry"] * (len(mine) % 2)
        assert [d["ts"] for d in mine] == sorted(d["ts"] for d in mine)
        assert mine[0]["ts"] >= "2023-03-25T06:15:00+00:00"  # 200 closed hours after the first candle
        for entry, exit_ in zip(mine[::2], mine[1::2], strict=False):
            assert exit_["avg_price"] == entry["price"] and exit_["ts"] > entry["ts"]


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(decisions(SHARED_DATA), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
