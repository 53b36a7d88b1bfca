"""The candle handler: load the symbol's state (warming it from market_data), run the core, save.

States live in memory per (run id, symbol): the consumer handles one message at a time in stream
order, and every value is a function of bounded windows that ``market_data`` can rebuild. So a
restart, or a gap that ``market_data`` has since filled (a collector backfill), costs one warm-up
query, never a wrong value. Every candle meets the trust boundary's checks
(``coinpilot.market_checks``) before its symbol is warmed or its state touched: a refused one
raises ``RefusedMessage`` (dead-lettered and alerted) and changes nothing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract, IndicatorSnapshot, MinuteCandle, RegimeUpdate
from coinpilot.market_checks import CandleGate, CandleLimits, CandleSettings
from coinpilot.runs import LIVE_RUN
from services.indicator import core, metrics
from services.indicator.stores import IndicatorStore, load_history

ONE_MINUTE = timedelta(minutes=1)


@dataclass
class SymbolEntry:
    state: core.SymbolState
    recent: OrderedDict[datetime, tuple[Contract, ...]] = field(default_factory=OrderedDict)

    def remember(self, ts_open: datetime, out: tuple[Contract, ...], keep: int) -> None:
        self.recent[ts_open] = out
        while len(self.recent) > keep:
            self.recent.popitem(last=False)


class CandleHandler:
    """What ``indicator-candles`` does with each ``candles.1m.<SYM>`` message."""

    def __init__(
        self,
        store: IndicatorStore,
        config: core.IndicatorConfig,
        *,
        regime_ttl_seconds: int,
        keep_outputs: int,
        log: logging.Logger,
        gauge_run_id: str = LIVE_RUN,
        limits: CandleLimits | None = None,
        clock: Callable[[], datetime] = wall_clock_now,
    ) -> None:
        self.gauge_run_id = gauge_run_id  # the run this process's gauges describe (COINPILOT_RUN_ID)
        self.store = store
        self.config = config
        self.regime_ttl_seconds = regime_ttl_seconds
        self.keep_outputs = keep_outputs
        self.log = log
        self.entries: dict[tuple[str, str], SymbolEntry] = {}
        self.gate = CandleGate(limits or CandleSettings().limits(), LIVE_RUN)
        self.clock = clock  # read for the live run's candles only (the FUTURE_TIME rule)

    async def handle(
        self, candle: MinuteCandle, run_id: str, subject: str | None = None
    ) -> tuple[Contract, ...]:
        """Outputs of ``candle``; a redelivered candle gets its earlier outputs again (deduped by id)."""
        return (await self.handle_batch([(candle, run_id)], [subject or candle.subject()]))[0]

    async def handle_batch(
        self, items: Sequence[tuple[MinuteCandle, str]], subjects: Sequence[str] | None = None
    ) -> list[tuple[Contract, ...]]:
        """Outputs of each ``(candle, run id)`` (arrived on ``subjects``, default their own) in
        order; their regime rows written in one statement per run before they are returned (and so
        before they are published). Raises ``RefusedMessage`` at the first candle that breaks a
        rule: the runtime then handles the run again one candle at a time (the candles before it
        are repeats, answered from memory)."""
        outputs: list[tuple[Contract, ...]] = []
        regimes: dict[str, list[RegimeUpdate]] = defaultdict(list)
        now = self.clock() if any(run_id == LIVE_RUN for _, run_id in items) else None
        for k, (candle, run_id) in enumerate(items):
            subject = subjects[k] if subjects is not None else candle.subject()
            ahead = self.gate.admit([(subject, candle, run_id)], now)
            out = await self._step(candle, run_id)
            self.gate.commit(ahead)
            outputs.append(out)
            regimes[run_id].extend(m for m in out if isinstance(m, RegimeUpdate))
        for run_id, updates in regimes.items():
            if not updates:
                continue
            await self.store.save_regimes(run_id, updates)
            for update in updates:
                await self.store.cache_regime(run_id, update, self.regime_ttl_seconds)
                if run_id == self.gauge_run_id:
                    metrics.publish_regime_gauge(update)
        return outputs

    async def _step(self, candle: MinuteCandle, run_id: str) -> tuple[Contract, ...]:
        entry = await self._entry(candle, run_id)
        step = core.on_candle(entry.state, candle, self.config)
        metrics.CANDLES.labels(candle.symbol, step.outcome.value).inc()
        if step.outcome is not core.CandleOutcome.PROCESSED:
            return entry.recent.get(candle.ts_open, ())
        entry.state = step.state
        entry.remember(candle.ts_open, step.out, self.keep_outputs)
        snapshot = step.out[-1]
        if isinstance(snapshot, IndicatorSnapshot) and snapshot.gap_minutes:
            metrics.MISSING_MINUTES.labels(candle.symbol).inc(snapshot.gap_minutes)
        return step.out

    async def _entry(self, candle: MinuteCandle, run_id: str) -> SymbolEntry:
        key = (run_id, candle.symbol)
        entry = self.entries.get(key)
        if entry is None:
            entry = SymbolEntry(await self._warm(candle, "start"))
            self.entries[key] = entry
            return entry
        last = entry.state.last_open
        if (
            last is not None
            and candle.ts_open - last > ONE_MINUTE
            and await self.store.has_candles_between(candle.symbol, last, candle.ts_open)
        ):
            entry.state = await self._warm(candle, "gap filled in market_data")
        return entry

    async def _warm(self, candle: MinuteCandle, reason: str) -> core.SymbolState:
        history = await load_history(self.store, candle.symbol, candle.ts_open, self.config)
        metrics.WARMUPS.labels(reason).inc()
        self.log.info(
            "%s warmed from market_data (%s): %d candles, %d hours",
            candle.symbol,
            reason,
            len(history.recent),
            len(history.hours),
        )
        return core.warm_state(candle.symbol, history.recent, history.hours, self.config)
