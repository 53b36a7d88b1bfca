"""The services' own handlers wired in one process over an in-memory bus (``coinpilot backtest``).

Each stage runs the handler its service runs, over that service's memory stores instead of
PostgreSQL and Redis: the indicator (``services.indicator.handlers``, on the live path), the
strategy (``services.strategy.handlers``), risk (``services.risk.handlers``), the agent
(``services.agent.service``) and the executor (``services.executor.handler``). This module only
routes messages and keeps what a store reads from another stage (the recorded candles, the
executor's ledger, risk's proposals, the agent's verdicts). Candles go in one at a time in (time,
symbol) order and each candle's whole chain is handled before the next (a FIFO of messages),
exactly as ``replay --pace lockstep`` drains the real pipeline after every candle, so both reach
the same ledger. The speed-ups are pure optimisations, each proven by the equivalence tests
(``tests/unit/backtest``): the vectorised indicator batch path, the float64 candidate pre-filter
of the fast path with the strategy's hold transition (``strategy.core.absorb_holds``), and GARCH
fits made ahead in a worker (``volatility_track``).

Warm-up candles are history, as ``market_data`` holds it before a run (the services warm from
it: the indicator its windows, risk its GARCH windows at each symbol's first hour); strategy, risk,
agent and executor otherwise start empty, like a fresh run id.
"""

from __future__ import annotations

import bisect
import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from apps.backtest.report import ChartRenderer, EquityPoint, equity_point
from apps.backtest.series import SeriesWindow
from apps.backtest.settings import ModeSettings
from apps.backtest.timeline import SymbolRun, Timeline
from apps.backtest.volatility_track import FitsAhead, VolatilityTrack, expected_fits, fit_in_line
from coinpilot.analytics.volatility import VolatilityState
from coinpilot.clock import floor_hour
from coinpilot.contracts import (
    AiDecision,
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    HourlyCandle,
    IndicatorSnapshot,
    MinuteCandle,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RiskAlert,
)
from coinpilot.fill_ledger import RecordedFill, recorded_from_fill
from coinpilot.strategy_config import load_strategy_config
from coinpilot.symbols import quote_currency
from services.agent.graph import InlineReviewer, Reviewer
from services.agent.memory_stores import MemoryDecisionStore
from services.agent.prompts import load_prompts
from services.agent.providers import RulesProvider
from services.agent.recording import Caller, CallSource, RecordStore
from services.agent.routing import RULES
from services.agent.service import AgentService, in_memory_service
from services.agent.settings import AgentSettings
from services.executor import core as executor_core
from services.executor.handler import execute
from services.executor.memory_book import MemoryExecutorBook
from services.executor.provenance import Provenance, proposal_of
from services.executor.venue import PaperVenue
from services.indicator import core as indicator_core
from services.indicator.handlers import CandleHandler
from services.indicator.memory_store import MemoryIndicatorStore
from services.risk import core as risk_core
from services.risk.core import LedgerRows
from services.risk.handlers import RiskHandlers
from services.risk.refit import Window, history_span
from services.risk.stores import MemoryRiskBook
from services.strategy import core as strategy_core
from services.strategy.handlers import StrategyHandlers
from services.strategy.memory_book import MemoryStrategyBook, NoMirror

#: From this many GARCH fits on, a run fits them ahead in a worker process (it costs a start-up).
FIT_AHEAD_MIN = 8
Progress = Callable[[int, int], None]
MINUTE = timedelta(minutes=1)
log = logging.getLogger("coinpilot.backtest")
log.addHandler(logging.NullHandler())  # handlers log to a configured root only: the report has it all


@dataclass
class Counters:
    candles: int = 0
    snapshots: int = 0
    signals: int = 0
    proposals: int = 0
    ai_decisions: int = 0
    rejections: int = 0
    alerts: int = 0


@dataclass
class BacktestResult:
    run_id: str
    fills: list[Fill] = field(default_factory=list)
    equity: list[EquityPoint] = field(default_factory=list)
    decisions: list[AiDecision] = field(default_factory=list)
    rejections: list[OrderRejected] = field(default_factory=list)
    alerts: list[RiskAlert] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    initial_balance: Decimal = Decimal(0)
    currency: str = "KRW"
    #: The run's GARCH worker, kept up to render the report's chart (``charts_ahead``).
    chart_renderer: ChartRenderer | None = field(default=None, compare=False, repr=False)


def offline_reviewer(settings: AgentSettings, records: RecordStore | None) -> Reviewer:
    """The agent's reviewer without a network: the rules reviewer, or verdicts recorded live
    answered from ``llm_call_records`` (``--llm replay``: a missing record is a REJECT); the
    review graph walked in line (``InlineReviewer``: same verdicts, no LangGraph import)."""
    source = settings.llm_mode_source
    if source is CallSource.LIVE:
        raise ValueError("a backtest never calls a model: use --llm rules or --llm replay")
    if source is CallSource.REPLAY and records is None:
        raise ValueError("--llm replay needs the recorded verdicts (COINPILOT_DATABASE_URL)")
    caller = Caller({RULES: RulesProvider()}, source, records if source is CallSource.REPLAY else None)
    return InlineReviewer(
        caller,
        load_prompts(settings.prompt_version),
        timeout_seconds=settings.ai_timeout_seconds,
        max_tokens=settings.llm_max_tokens,
    )


class Engine:
    """One run: feed it warm-up candles, then the candles to trade on."""

    def __init__(
        self,
        run_id: str = "backtest",
        strategy_config: Path | None = None,
        *,
        settings: ModeSettings | None = None,
        records: RecordStore | None = None,
    ) -> None:
        """``settings``: the services' settings of this run (default: the environment's, rules agent)."""
        from services.agent.settings import params_from_strategy
        from services.indicator.settings import config_from_strategy

        settings = settings or ModeSettings.from_environment()
        config = load_strategy_config(strategy_config)
        self.run_id = run_id
        self.indicator_config = config_from_strategy(config)
        self.strategy_params = settings.strategy.params(strategy_config)
        risk_settings = settings.risk
        self.risk_params = risk_settings.params(config)
        self.vol = config.risk_management.volatility
        executor_settings = settings.executor
        self.initial_balance = executor_settings.initial_balance
        agent_settings = settings.agent
        self.agent: AgentService = in_memory_service(
            agent_settings,
            params_from_strategy(config),
            offline_reviewer(agent_settings, records),
            self._market_hours,
        )

        self.indicator = CandleHandler(
            MemoryIndicatorStore(lambda symbol: self.seen.get(symbol, ())),
            self.indicator_config,
            regime_ttl_seconds=0,
            keep_outputs=1,
            log=log,
        )
        self.strategy_book = MemoryStrategyBook(self._recorded_fill)
        self.strategy = StrategyHandlers(self.strategy_params, self.strategy_book, NoMirror(), log)
        self.volatility = VolatilityTrack(self.vol, fit_in_line(self.vol), run_id=run_id)
        self.recorded: dict[str, RecordedFill] = {}  # what trading_history would hold, by order id
        self.risk_book = MemoryRiskBook(self._ledger_rows, self._recorded_close, self._recorded_fill)
        self.risk = RiskHandlers(
            params=self.risk_params,
            volatility=self.vol,
            initial_balance=risk_settings.paper_initial_balance,
            cache=self.volatility.cache,
            book=self.risk_book,
            fit=self.volatility.refit_fit,
            log=log,
            history=self._recorded_hours,
        )
        self.venue = PaperVenue(executor_settings.params())
        self.executor = MemoryExecutorBook(self._provenance, self._recorded_close)
        self.last_close: dict[str, Decimal] = {}
        self.seen: dict[str, list[MinuteCandle]] = {}  # what market_data would hold, per symbol
        self._runs: dict[str, SymbolRun] = {}  # the fast path's symbols (market_data is their series)
        self.result = BacktestResult(run_id=run_id, initial_balance=self.initial_balance)

    # -- feeding ----------------------------------------------------------------------------------
    def warm(self, candles: Sequence[MinuteCandle]) -> None:
        """Record the warm-up candles, as ``market_data`` holds history before a run: the
        indicator's handler warms each symbol from them at its first candle, as the service does."""
        self._remember(candles)

    async def run(self, candles: Sequence[MinuteCandle], progress: Progress | None = None) -> BacktestResult:
        """The live path: every candle through the indicator service's own handler."""
        return await self._run_candles(candles, self.on_candle, progress)

    async def run_batch(
        self,
        warmup: Sequence[MinuteCandle],
        candles: Sequence[MinuteCandle],
        progress: Progress | None = None,
    ) -> BacktestResult:
        """Like :meth:`warm` then :meth:`run`, with the indicator's vectorised batch path.

        ``history_messages`` emits exactly the messages the live indicator would (proven bitwise
        by the indicator's tests), so every downstream core sees the same inputs, just sooner.
        """
        self._remember(warmup)
        groups: dict[tuple[datetime, str], list[Contract]] = {}
        by_symbol: dict[str, list[MinuteCandle]] = {}
        for candle in (*warmup, *candles):
            by_symbol.setdefault(candle.symbol, []).append(candle)
        start = min((c.ts_open for c in candles), default=None)
        for symbol, series in by_symbol.items():
            series.sort(key=lambda c: c.ts_open)
            group: list[Contract] = []
            for msg in indicator_core.history_messages(series, self.indicator_config):
                group.append(msg)
                if isinstance(msg, IndicatorSnapshot):
                    if start is not None and msg.candle.ts_open >= start:
                        groups[(msg.candle.ts_open, symbol)] = group
                    group = []
        return await self._run_groups(candles, groups, progress)

    async def run_recorded(
        self,
        history: Sequence[MinuteCandle],
        candles: Sequence[MinuteCandle],
        outputs: Sequence[HourlyCandle | IndicatorSnapshot],
    ) -> BacktestResult:
        """The stages after the indicator over a recorded run's indicator outputs (a stage replay,
        ``apps/stage_replay``): ``history`` is what ``market_data`` held before the run (the
        agent's context warms from it), then each candle's recorded hourly candles and snapshot are
        handed on when its candle comes, in the order :meth:`run_batch` hands on the computed ones."""
        self._remember(history)
        groups: dict[tuple[datetime, str], list[Contract]] = {}
        for msg in outputs:
            opened = msg.candle.ts_open if isinstance(msg, IndicatorSnapshot) else msg.ts_event - MINUTE
            groups.setdefault((opened, msg.symbol), []).append(msg)
        return await self._run_groups(candles, groups, None)

    async def _run_groups(
        self,
        candles: Sequence[MinuteCandle],
        groups: dict[tuple[datetime, str], list[Contract]],
        progress: Progress | None,
    ) -> BacktestResult:
        """Each candle in (time, symbol) order: recorded, its messages drained, equity marked."""

        async def handle(candle: MinuteCandle) -> None:
            self.last_close[candle.symbol] = candle.close
            self.seen.setdefault(candle.symbol, []).append(candle)
            await self._drain(groups.pop((candle.ts_open, candle.symbol), []))

        return await self._run_candles(candles, handle, progress)

    async def _run_candles(
        self,
        candles: Sequence[MinuteCandle],
        handle: Callable[[MinuteCandle], Awaitable[None]],
        progress: Progress | None,
    ) -> BacktestResult:
        """``handle`` each candle in (time, symbol) order; equity marked at each new hour and at the end."""
        ordered = sorted(candles, key=lambda c: (c.ts_open, c.symbol))
        last_hour: datetime | None = None
        for i, candle in enumerate(ordered):
            await handle(candle)
            hour = floor_hour(candle.ts_event)
            if hour != last_hour:
                self._mark_equity(candle.ts_event)
                last_hour = hour
            if progress is not None and (i % 5000 == 0 or i == len(ordered) - 1):
                progress(i + 1, len(ordered))
        if ordered:
            self._mark_equity(ordered[-1].ts_event)
        self.result.counters.candles += len(ordered)
        return self.result

    async def run_series(self, window: SeriesWindow, progress: Progress | None = None) -> BacktestResult:
        """The fast path: the same cores on the same messages, run only where they can act.

        Indicators of each symbol are computed once over its whole history (``ComputedHistory``); then
        only the candles that close an hour, start a new hour of the merged timeline (an equity
        mark) or are strategy candidates (``candidates.py``) are handled, in (time, symbol) order,
        each with exactly the messages run_batch would drain for it. Every other candle is a hold
        the strategy state absorbs in one step (its high-water mark). Equal ledgers to
        :meth:`run_batch` (tests/unit/backtest/test_fast_path.py).
        """
        traded_hours = {s.symbol: s.traded_hours(window.start) for s in window.series.values()}
        recorded = {s.symbol: s.hours_before(window.start) for s in window.series.values()}
        fits = expected_fits(self.vol, traded_hours, recorded)
        ahead = FitsAhead(self.vol).start() if fits >= FIT_AHEAD_MIN else None
        try:
            runs = [
                SymbolRun.prepare(s, window.start, self.indicator_config, self.strategy_params)
                for s in window.series.values()
            ]
            runs = [r for r in runs if r.first < len(r.series)]
            self._runs = {r.series.symbol: r for r in runs}
            timeline = Timeline.merge(runs)
            if ahead is not None:
                ahead.submit(
                    {r.series.symbol: r.traded_hours() for r in runs},
                    {r.series.symbol: self._seeding_hours(r) for r in runs},
                )
                self.volatility.fit = ahead
            result = await self._run_timeline(runs, timeline, progress)
            if ahead is not None:
                result.chart_renderer = ahead.to_chart_renderer()
            return result
        finally:
            if ahead is not None:
                ahead.close()
                self.volatility.fit = fit_in_line(self.vol)

    async def _run_timeline(
        self, runs: list[SymbolRun], timeline: Timeline, progress: Progress | None
    ) -> BacktestResult:
        pending: list[tuple[int, int]] = []  # (merged position, run index) of strategy candidates
        for k, run in enumerate(runs):
            self._schedule(pending, k, run, run.first)
        total, static = len(timeline.symbol), timeline.static_events()
        s_ptr = evaluated = 0
        while True:
            p_static = int(static[s_ptr]) if s_ptr < len(static) else total
            p = min(p_static, pending[0][0] if pending else total)
            if p >= total:
                break
            if p == p_static:
                s_ptr += 1
            k, i = int(timeline.symbol[p]), int(timeline.index[p])
            run = runs[k]
            run.cursor = i
            messages = run.history.hours_closing(i)
            evaluate = bool(pending) and pending[0] == (p, k)
            if evaluate:
                evaluated += 1
                heapq.heappop(pending)
                self._absorb_holds(run, i)
                messages.append(run.history.snapshot_at(i, run.series.candle(i)))
                run.evaluated = i
            if messages:
                await self._drain(messages)
            if evaluate:
                self._schedule(pending, k, run, i + 1)
            if timeline.marks[p]:
                self._mark_equity_at(timeline, p)
            if progress is not None:
                progress(p + 1, total)
        if total:
            self._mark_equity_at(timeline, total - 1)
        for run in runs:
            self._absorb_holds(run, len(run.series))
        traded = sum(len(r.series) - r.first for r in runs)
        self.result.counters.candles += traded
        self.result.counters.snapshots += traded - evaluated  # the holds count as evaluated too
        return self.result

    def _schedule(self, pending: list[tuple[int, int]], k: int, run: SymbolRun, start: int) -> None:
        i = run.next_candidate(self._strategy_state(run.series.symbol), start, self.strategy_params)
        if i is not None:
            heapq.heappush(pending, (run.position_of(i), k))

    def _absorb_holds(self, run: SymbolRun, upto: int) -> None:
        """The strategy state after the holds of candles ``run.evaluated + 1 .. upto - 1``."""
        lo = run.evaluated + 1
        if upto <= lo:
            return
        symbol = run.series.symbol
        highest, last = run.series.highest("close", lo, upto), run.series.ts_event(upto - 1)
        self.strategy_book.store(
            self.run_id, strategy_core.absorb_holds(self._strategy_state(symbol), highest, last)
        )
        run.evaluated = upto - 1

    def _mark_equity_at(self, timeline: Timeline, p: int) -> None:
        """``_mark_equity`` after merged candle ``p``, each symbol marked at its close by then."""
        for symbol in self.positions:
            run = self._runs.get(symbol)
            if run is not None:
                i = run.last_index_by(p)
                if i >= run.first:
                    self.last_close[symbol] = run.series.price("close", i)
        self._mark_equity(timeline.ts_event(p))

    async def on_candle(self, candle: MinuteCandle) -> None:
        """The live path: the candle is recorded, then the indicator service's own handler (over
        the memory store of what is recorded) computes its messages."""
        self.last_close[candle.symbol] = candle.close
        self.seen.setdefault(candle.symbol, []).append(candle)
        await self._drain(await self.indicator.handle(candle, self.run_id))

    async def _drain(self, first: Sequence[Contract]) -> None:
        """Handle a candle's messages and everything they cause, first in first out."""
        queue: deque[Contract] = deque(first)
        while queue:
            queue.extend(await self.route(queue.popleft()))

    # -- the bus ----------------------------------------------------------------------------------
    async def route(self, msg: Contract) -> list[Contract]:
        if isinstance(msg, IndicatorSnapshot):
            self.result.counters.snapshots += 1
            return list((await self.strategy.on_snapshots([(self.run_id, msg)]))[0])
        if isinstance(msg, HourlyCandle):
            await self.agent.add_hourly_candle(self.run_id, msg)
            return list(
                await self.risk.on_hourly_close(self.run_id, msg.symbol, msg.ts_open, msg.close, msg.ts_event)
            )
        if isinstance(msg, EntrySignal | ExitSignal):
            self.result.counters.signals += 1
            return list(await self.risk.on_signal(self.run_id, msg))
        if isinstance(msg, OrderProposed):
            self.result.counters.proposals += 1
            return list(await self.agent.decide(self.run_id, msg))
        if isinstance(msg, OrderApproved):
            return [await self._execute(msg)]
        if isinstance(msg, OrderRejected):
            self.result.counters.rejections += 1
            self.result.rejections.append(msg)
            await self.strategy.on_rejection(self.run_id, msg)
            await self.risk.on_rejection(self.run_id, msg)
            return []
        if isinstance(msg, Fill):
            self.result.fills.append(msg)
            await self.strategy.on_fill(self.run_id, msg)
            return list(await self.risk.on_fill(self.run_id, msg))
        if isinstance(msg, AiDecision):
            self.result.counters.ai_decisions += 1
            self.result.decisions.append(msg)
        elif isinstance(msg, RiskAlert):
            self.result.counters.alerts += 1
            self.result.alerts.append(msg)
        return []

    # -- strategy ---------------------------------------------------------------------------------
    def _strategy_state(self, symbol: str) -> strategy_core.SymbolState:
        """The strategy's state of ``symbol``, read by the fast path's candidate search."""
        return self.strategy_book.state(self.run_id, symbol)

    # -- risk: the service's handlers over memory; the executor's ledger and the candles are its reads
    def _ledger_rows(self, run_id: str, currency: str) -> LedgerRows:
        open_positions = self.positions
        held = [s for s, p in open_positions.items() if p.quantity > 0]
        positions = {
            s: risk_core.Holding(open_positions[s].quantity, open_positions[s].avg_price)
            for s in held
            if quote_currency(s) == currency
        }
        return LedgerRows(self.balances.get(currency), held, positions)

    def _recorded_close(self, symbol: str, minute: datetime) -> Decimal | None:
        """The close ``market_data`` would hold for the candle of ``symbol`` opened at ``minute``."""
        run = self._runs.get(symbol)
        if run is not None:
            found = run.minutes(minute, minute + MINUTE)
        else:
            seen = self.seen.get(symbol, [])
            i = bisect.bisect_left(seen, minute, key=lambda c: c.ts_open)
            found = seen[i : i + 1] if i < len(seen) and seen[i].ts_open == minute else []
        return found[0].close if found else None

    async def _recorded_hours(self, symbol: str, start: datetime, end: datetime) -> Window:
        """Risk's ``market_data`` read (``refit.RecordedHours``): the closes of the hours opened in
        ``[start, end)`` of the candles recorded so far."""
        run = self._runs.get(symbol)
        if run is not None:
            return run.recorded_hours(start, end)
        seen = self.seen.get(symbol, [])
        lo = bisect.bisect_left(seen, start, key=lambda c: c.ts_open)
        hi = bisect.bisect_left(seen, end, key=lambda c: c.ts_open)
        return [(h.ts_open, h.close) for h in indicator_core.hourly_buckets(seen[lo:hi])]

    def _seeding_hours(self, run: SymbolRun) -> Window:
        """The recorded hours risk seeds ``run``'s window with at its first traded hour."""
        hours = run.traded_hours()
        if not hours:
            return []
        return run.recorded_hours(*history_span(hours[0][0], self.vol))

    def _recorded_fill(self, run_id: str, order_id: str) -> RecordedFill | None:
        return self.recorded.get(order_id)

    @property
    def vol_states(self) -> dict[str, VolatilityState]:
        return self.volatility.states

    @property
    def hourly_closes(self) -> dict[str, list[tuple[datetime, Decimal]]]:
        return self.volatility.closes

    # -- agent ------------------------------------------------------------------------------------
    def _market_hours(self, symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
        """The agent's ``market_data``: hourly aggregates of the candles seen so far opened in
        ``[start, end)`` (the agent warms a run's book from them, rule ``stores.load_warm_bars``)."""
        run = self._runs.get(symbol)
        if run is not None:
            minutes = run.minutes(start, end)
        else:
            minutes = [c for c in self.seen.get(symbol, ()) if start <= c.ts_open < end]
        return indicator_core.hourly_buckets(minutes)

    # -- executor ---------------------------------------------------------------------------------
    async def _execute(self, order: OrderApproved) -> Contract:
        """The executor's own handler (``services.executor.handler.execute``) over its memory ledger,
        quoting from the recorded candle of the decision minute as the paper venue does."""
        answer = await execute(
            self.executor,
            self.venue,
            order,
            run_id=self.run_id,
            trace_id=None,
            initial_balance=self.initial_balance,
        )
        if isinstance(answer, Fill):
            closes = order.signal.position_id if isinstance(order.signal, ExitSignal) else None
            self.recorded[order.order_id] = recorded_from_fill(answer, closes)
            self.result.currency = answer.currency
        return answer

    def _provenance(self, run_id: str, order_id: str) -> Provenance:
        """Risk's record of the order and the agent's verdict on it (their memory stores)."""
        proposed = self.risk_book.proposals.get((run_id, order_id))
        proposal = None if proposed is None else proposal_of(proposed)
        decisions = self.agent.decisions
        assert isinstance(decisions, MemoryDecisionStore)
        decided = decisions.decisions.get((run_id, order_id))
        return Provenance(proposal, None if decided is None else str(decided.decision))

    @property
    def balances(self) -> dict[str, Decimal]:
        return self.executor.balances(self.run_id)

    @property
    def positions(self) -> dict[str, executor_core.Position]:
        return self.executor.open_positions(self.run_id)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _remember(self, candles: Sequence[MinuteCandle]) -> None:
        for candle in candles:
            self.seen.setdefault(candle.symbol, []).append(candle)

    def _mark_equity(self, ts: datetime) -> None:
        currency = self.result.currency
        cash = self.balances.get(currency, self.initial_balance)
        self.result.equity.append(equity_point(ts, cash, self.positions, self.last_close))
