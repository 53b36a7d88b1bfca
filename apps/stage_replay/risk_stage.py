"""Replay the risk stage of a recorded run on its own, in process, with new parameters.

Risk's recorded inputs (hourly candles, entry and exit signals, fills, the other stages'
rejections) go, in the order JetStream stored them, through risk's own handlers
(``services.risk.handlers``) over its memory stores under a new run id. What risk read from other
stores in the original run is rebuilt from the same recording: the executor's cash and positions
from the recorded fills as they pass (each fill carries the ledger after it), the recorded close
of a signal's minute from the recorded 1m candles. Downstream stages are the original's (a risk
replay alone answers "which orders would risk have decided differently"); the ledger effect of a
change needs the trading loop re-run (``loop_stage``), since the strategy's state depends on the
fills and rejections a new risk causes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from apps.backtest.settings import ModeSettings
from apps.backtest.volatility_track import VolatilityTrack, fit_in_line
from apps.stage_replay.diff import StageDiff, diff_rows, verdicts_of
from apps.stage_replay.recorded import Recorded
from coinpilot.contracts import (
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    HourlyCandle,
    MinuteCandle,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectStage,
    RiskAlert,
)
from coinpilot.fill_ledger import RecordedFill, recorded_from_fill
from coinpilot.strategy_config import load_strategy_config
from coinpilot.symbols import quote_currency
from services.risk.core import Holding, LedgerRows
from services.risk.handlers import RiskHandlers
from services.risk.refit import RecordedHours
from services.risk.stores import MemoryRiskBook, MemoryRiskCache

#: What risk consumes, what it publishes, and the candles its checks read (recorded closes).
INPUTS = ("candles.1h.*", "signals.*.*", "orders.rejected.*", "fills.*")
OUTPUTS = ("orders.proposed.*", "orders.approved.*", "risk.alerts")
READS = ("candles.1m.*",)
#: The services whose dead letters in the run are no input here (they refused them then).
REFUSED_BY = ("risk", "collector")
#: The alerts risk raises itself (the others on ``risk.alerts`` come from the trust boundary).
RISK_ALERTS = frozenset({"COOLDOWN", "DAILY_LOSS_HALT", "VOLATILITY_HIGH", "RISK_REJECTION"})
log = logging.getLogger("coinpilot.stage_replay")
log.addHandler(logging.NullHandler())


class RecordedLedger:
    """The executor's cash and positions as risk read them: the ledger after each recorded fill."""

    def __init__(self) -> None:
        self.balances: dict[str, Decimal] = {}
        self.positions: dict[str, Holding] = {}
        self.records: dict[str, RecordedFill] = {}

    def apply(self, fill: Fill) -> None:
        self.balances[fill.currency] = fill.balance_after
        if fill.position_quantity_after > 0:
            self.positions[fill.symbol] = Holding(fill.position_quantity_after, fill.position_avg_price_after)
        else:
            self.positions.pop(fill.symbol, None)
        self.records[fill.order_id] = recorded_from_fill(fill)

    def rows(self, run_id: str, currency: str) -> LedgerRows:
        held = sorted(self.positions)
        mine = {s: h for s, h in self.positions.items() if quote_currency(s) == currency}
        return LedgerRows(self.balances.get(currency), held, mine)


def risk_outputs(messages: Iterable[Contract]) -> list[Contract]:
    """What risk published among ``messages``: its proposals, its own approvals (exits) and
    rejections, and its alerts, in their order."""
    out: list[Contract] = []
    for m in messages:
        if (
            isinstance(m, OrderProposed)
            or (isinstance(m, OrderApproved) and m.approved_by is RejectStage.RISK)
            or (isinstance(m, OrderRejected) and m.stage is RejectStage.RISK)
            or (isinstance(m, RiskAlert) and str(m.type) in RISK_ALERTS)
        ):
            out.append(m)
    return out


async def replay_risk(
    recorded: Sequence[Recorded],
    *,
    original_run: str,
    replay_run: str,
    settings: ModeSettings,
    strategy_config: Path | None = None,
    overrides: dict[str, str] | None = None,
    history: RecordedHours | None = None,
) -> tuple[StageDiff, list[Contract]]:
    """Run risk over the recorded inputs; the diff against the original outputs, and the new outputs."""
    config = load_strategy_config(strategy_config)
    volatility = config.risk_management.volatility
    closes = {(m.symbol, m.ts_open): m.close for r in recorded if isinstance(m := r.message, MinuteCandle)}
    ledger = RecordedLedger()
    cache = MemoryRiskCache()

    def close_at(symbol: str, minute: datetime) -> Decimal | None:
        return closes.get((symbol, minute))

    handlers = RiskHandlers(
        params=settings.risk.params(config),
        volatility=volatility,
        initial_balance=settings.risk.paper_initial_balance,
        cache=cache,
        book=MemoryRiskBook(ledger.rows, close_at, lambda run_id, order_id: ledger.records.get(order_id)),
        fit=VolatilityTrack(volatility, fit_in_line(volatility), cache, replay_run).refit_fit,
        log=log,
        history=history,
    )
    outputs: list[Contract] = []
    signals: list[EntrySignal | ExitSignal] = []
    for r in recorded:
        m = r.message
        if isinstance(m, HourlyCandle):
            outputs.extend(
                await handlers.on_hourly_close(replay_run, m.symbol, m.ts_open, m.close, m.ts_event)
            )
        elif isinstance(m, EntrySignal | ExitSignal):
            signals.append(m)
            outputs.extend(await handlers.on_signal(replay_run, m))
        elif isinstance(m, OrderRejected) and m.stage is not RejectStage.RISK:
            await handlers.on_rejection(replay_run, m)
        elif isinstance(m, Fill):
            ledger.apply(m)
            outputs.extend(await handlers.on_fill(replay_run, m))
    original = risk_outputs(r.message for r in recorded)
    diff = StageDiff(
        stage="risk",
        original_run=original_run,
        replay_run=replay_run,
        overrides=dict(overrides or {}),
        rows=diff_rows(signals, verdicts_of(original), verdicts_of(outputs)),
        identical_outputs=[m.to_json() for m in outputs] == [m.to_json() for m in original],
    )
    return diff, outputs
