"""The service cores wired in one process over an in-memory bus (``coinpilot backtest``).

Every decision is made by the same pure core the distributed service runs; this module only
does what the services' handlers do around their cores, with dictionaries in place of
PostgreSQL and Redis. Candles go in one at a time in (time, symbol) order and each candle's
whole chain is handled before the next (a FIFO of messages), exactly as ``replay --pace
lockstep`` drains the real pipeline after every candle, so both reach the same ledger.

Warm-up candles only advance the indicator (the distributed services warm it from
``market_data``); strategy, risk, agent and executor start empty, like a fresh run id.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from apps.backtest.report import ChartRenderer, EquityPoint, equity_point
from apps.backtest.series import SeriesWindow
from apps.backtest.timeline import SymbolRun, Timeline
from apps.backtest.volatility_track import FitsAhead, VolatilityTrack, expected_fits, fit_in_line
from coinpilot.analytics.volatility import VolatilityState
from coinpilot.clock import floor_hour, trading_day
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
from coinpilot.strategy_config import load_strategy_config
from coinpilot.symbols import quote_currency
from services.agent import core as agent_core
from services.agent import guard_state
from services.agent.graph import InlineReviewer, Reviewer
from services.agent.prompts import load_prompts
from services.agent.providers import RulesProvider
from services.agent.recording import Caller, CallSource, RecordStore
from services.agent.routing import RULES, choose_route
from services.agent.settings import AgentSettings
from services.executor import core as executor_core
from services.indicator import core as indicator_core
from services.risk import core as risk_core
from services.strategy import core as strategy_core

#: From this many GARCH fits on, a run fits them ahead in a worker process (it costs a start-up).
FIT_AHEAD_MIN = 8
Progress = Callable[[int, int], None]


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
        llm: str = "rules",
        records: RecordStore | None = None,
    ) -> None:
        from services.agent.settings import params_from_strategy
        from services.executor.settings import ExecutorSettings
        from services.indicator.settings import config_from_strategy
        from services.risk.settings import RiskSettings
        from services.strategy.settings import StrategySettings

        config = load_strategy_config(strategy_config)
        self.run_id = run_id
        self.indicator_config = config_from_strategy(config)
        self.strategy_params = StrategySettings().params(strategy_config)
        risk_settings = RiskSettings()
        self.risk_params = risk_settings.params(config)
        self.vol = config.risk_management.volatility
        executor_settings = ExecutorSettings()
        self.fill_params = executor_settings.params()
        self.initial_balance = executor_settings.initial_balance
        self.risk_initial_balance = risk_settings.paper_initial_balance
        agent_settings = AgentSettings(llm_mode_source=llm)
        self.agent_params = params_from_strategy(config)
        self.routing = agent_settings.routing()
        self.reviewer: Reviewer = offline_reviewer(agent_settings, records)

        self.indicators: dict[str, indicator_core.SymbolState] = {}
        self.strategy: dict[str, strategy_core.SymbolState] = {}
        self.risk: risk_core.RiskState | None = None
        self.prices: dict[str, tuple[Decimal, datetime]] = {}
        self.reference: dict[date, Decimal] = {}
        self.volatility = VolatilityTrack(self.vol, fit_in_line(self.vol))
        self.book = agent_core.ContextBook()
        self.guard = guard_state.GuardBook()
        self.balances: dict[str, Decimal] = {}
        self.positions: dict[str, executor_core.Position] = {}
        self.last_close: dict[str, Decimal] = {}
        self.seen: dict[str, list[MinuteCandle]] = {}  # what market_data would hold, per symbol
        self._runs: dict[str, SymbolRun] = {}  # the fast path's symbols (market_data is their series)
        self.result = BacktestResult(run_id=run_id, initial_balance=self.initial_balance)

    # -- feeding ----------------------------------------------------------------------------------
    def warm(self, candles: Sequence[MinuteCandle]) -> None:
        """Advance only the indicator (its outputs are history, not trading events)."""
        self._remember(candles)
        for candle in candles:
            state = self._indicator_state(candle.symbol)
            self.indicators[candle.symbol] = indicator_core.on_candle(
                state, candle, self.indicator_config
            ).state

    async def run(self, candles: Sequence[MinuteCandle], progress: Progress | None = None) -> BacktestResult:
        ordered = sorted(candles, key=lambda c: (c.ts_open, c.symbol))
        last_hour: datetime | None = None
        for i, candle in enumerate(ordered):
            await self.on_candle(candle)
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
        ordered = sorted(candles, key=lambda c: (c.ts_open, c.symbol))
        last_hour: datetime | None = None
        for i, candle in enumerate(ordered):
            self.last_close[candle.symbol] = candle.close
            self.seen.setdefault(candle.symbol, []).append(candle)
            await self._drain(groups.pop((candle.ts_open, candle.symbol), []))
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
        ahead = (
            FitsAhead(self.vol).start() if expected_fits(self.vol, traded_hours) >= FIT_AHEAD_MIN else None
        )
        try:
            runs = [
                SymbolRun.prepare(s, window.start, self.indicator_config, self.strategy_params)
                for s in window.series.values()
            ]
            runs = [r for r in runs if r.first < len(r.series)]
            self._runs = {r.series.symbol: r for r in runs}
            timeline = Timeline.merge(runs)
            if ahead is not None:
                ahead.submit({r.series.symbol: r.traded_hours() for r in runs})
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
        state = self._strategy_state(symbol)
        position = state.position
        if position is not None:
            hwm = max(position.high_water_mark, run.series.highest("close", lo, upto))
            position = replace(position, high_water_mark=hwm)
        ts_event = run.series.ts_event(upto - 1)
        self.strategy[symbol] = replace(state, position=position, last_candle_at=ts_event)
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
        state = self._indicator_state(candle.symbol)
        step = indicator_core.on_candle(state, candle, self.indicator_config)
        self.indicators[candle.symbol] = step.state
        self.last_close[candle.symbol] = candle.close
        self.seen.setdefault(candle.symbol, []).append(candle)
        await self._drain(step.out)

    async def _drain(self, first: Sequence[Contract]) -> None:
        """Handle a candle's messages and everything they cause, first in first out."""
        queue: deque[Contract] = deque(first)
        while queue:
            queue.extend(await self.route(queue.popleft()))

    # -- the bus ----------------------------------------------------------------------------------
    async def route(self, msg: Contract) -> list[Contract]:
        if isinstance(msg, IndicatorSnapshot):
            self.result.counters.snapshots += 1
            return self._strategy_snapshot(msg)
        if isinstance(msg, HourlyCandle):
            self._warm_agent(msg.symbol, msg.ts_event)
            self.book = agent_core.on_hourly_candle(self.book, msg, self.agent_params)
            return self._risk_hourly(msg)
        if isinstance(msg, EntrySignal | ExitSignal):
            self.result.counters.signals += 1
            return self._risk_signal(msg)
        if isinstance(msg, OrderProposed):
            self.result.counters.proposals += 1
            return await self._agent_order(msg)
        if isinstance(msg, OrderApproved):
            return [self._execute(msg)]
        if isinstance(msg, OrderRejected):
            self.result.counters.rejections += 1
            self.result.rejections.append(msg)
            self.strategy[msg.symbol] = strategy_core.on_rejection(self._strategy_state(msg.symbol), msg)
            self.risk = risk_core.on_rejection(self._risk_state(msg.ts_event), msg)
            return []
        if isinstance(msg, Fill):
            self.result.fills.append(msg)
            self.strategy[msg.symbol] = strategy_core.on_fill(self._strategy_state(msg.symbol), msg)
            self._note_price(msg.symbol, msg.fill_price, msg.ts_event)
            step = risk_core.on_fill(self._risk_state(msg.ts_event), msg, self.risk_params)
            self.risk = step.state
            return list(step.out)
        if isinstance(msg, AiDecision):
            self.result.counters.ai_decisions += 1
            self.result.decisions.append(msg)
        elif isinstance(msg, RiskAlert):
            self.result.counters.alerts += 1
            self.result.alerts.append(msg)
        return []

    # -- strategy ---------------------------------------------------------------------------------
    def _strategy_state(self, symbol: str) -> strategy_core.SymbolState:
        return self.strategy.get(symbol) or strategy_core.SymbolState(symbol=symbol)

    def _strategy_snapshot(self, snapshot: IndicatorSnapshot) -> list[Contract]:
        step = strategy_core.on_snapshot(
            self._strategy_state(snapshot.symbol), snapshot, self.strategy_params
        )
        self.strategy[snapshot.symbol] = step.state
        return list(step.out)

    # -- risk -------------------------------------------------------------------------------------
    def _risk_state(self, now: datetime) -> risk_core.RiskState:
        if self.risk is None:
            self.risk = risk_core.RiskState(
                daily=risk_core.DailyState(trading_day(now, self.risk_params.day_boundary))
            )
        return self.risk

    def _note_price(self, symbol: str, price: Decimal, at: datetime) -> None:
        """Risk's price memory (§4.4): the latest price seen, never overwritten by an older one."""
        known = self.prices.get(symbol)
        if known is None or known[1] <= at:
            self.prices[symbol] = (price, at)

    def _risk_signal(self, signal: EntrySignal | ExitSignal) -> list[Contract]:
        self._note_price(signal.symbol, signal.price, signal.ts_event)
        if isinstance(signal, ExitSignal):
            step = risk_core.on_exit_signal(self._risk_state(signal.ts_event), signal, self.risk_params)
            self.risk = step.state
            return list(step.out)
        day = trading_day(signal.ts_event, self.risk_params.day_boundary)
        snapshot = None if self.risk_params.reference_equity is not None else self.reference.get(day)
        currency = quote_currency(signal.symbol)
        held = {s: p for s, p in self.positions.items() if p.quantity > 0 and quote_currency(s) == currency}
        ledger = risk_core.Ledger(
            self.balances.get(currency, self.risk_initial_balance),
            {s: risk_core.Holding(p.quantity, p.avg_price) for s, p in held.items()},
            {s: self.prices[s][0] for s in held if s in self.prices},
            snapshot,
        )
        state = self.vol_states.get(signal.symbol)
        reading = risk_core.VolatilityReading(state)
        step = risk_core.on_entry_signal(
            self._risk_state(signal.ts_event), signal, ledger, reading, self.risk_params
        )
        self.risk = step.state
        if (
            snapshot is None
            and step.reference_equity is not None
            and self.risk_params.reference_equity is None
        ):
            self.reference[day] = step.reference_equity
        return list(step.out)

    @property
    def vol_states(self) -> dict[str, VolatilityState]:
        return self.volatility.states

    @property
    def hourly_closes(self) -> dict[str, list[tuple[datetime, Decimal]]]:
        return self.volatility.closes

    def _risk_hourly(self, candle: HourlyCandle) -> list[Contract]:
        self._note_price(candle.symbol, candle.close, candle.ts_event)
        refit = self.volatility.on_hour(candle.symbol, candle.ts_open, candle.close, candle.ts_event)
        if refit is None or refit.after is None:
            return []
        alert = risk_core.volatility_alert(refit.before, refit.after, candle.ts_event)
        return [] if alert is None else [alert]

    # -- agent ------------------------------------------------------------------------------------
    def _warm_agent(self, symbol: str, ts: datetime) -> None:
        """The agent's first message of a symbol in a run warms its book from market_data's hours
        (``services.agent.core.warm_bars``); here market_data is the candles seen so far."""
        if not agent_core.needs_warm(self.book, symbol):
            return
        keep = self.agent_params.keep_bars
        start, end = agent_core.warm_span(ts, keep)
        run = self._runs.get(symbol)
        if run is not None:
            minutes = run.minutes(start, end)
        else:
            minutes = [c for c in self.seen.get(symbol, ()) if start <= c.ts_open < end]
        bars = agent_core.warm_bars(indicator_core.hourly_buckets(minutes), ts, keep)
        self.book = agent_core.warm_book(self.book, symbol, bars, keep)

    async def _agent_order(self, order: OrderProposed) -> list[Contract]:
        self._warm_agent(order.symbol, order.ts_event)
        plan = agent_core.plan_review(self.book, order, self.agent_params)
        if isinstance(plan, agent_core.Skip):
            decision = agent_core.skip_decision(order, plan.reason, plan.message)
            return list(agent_core.order_outputs(order, decision))
        guard = plan.regime_params.guard
        self.guard, block = guard_state.admit(self.guard, order.symbol, order.ts_event, guard)
        if block is not None:
            from coinpilot.contracts import RejectReason

            decision = agent_core.skip_decision(order, RejectReason.AI_GUARDRAIL_BLOCKED, block.message)
            return list(agent_core.order_outputs(order, decision))
        route = choose_route(order.symbol, plan.canary_marker, self.routing)
        outcome = await self.reviewer.review(plan, route)
        decision = agent_core.review_decision(order, outcome, route, self.reviewer.prompts.sha256)
        self.guard = guard_state.after_decision(
            self.guard, order.symbol, order.ts_event, outcome.approved, outcome.error_kind, guard
        )
        return list(agent_core.order_outputs(order, decision))

    # -- executor ---------------------------------------------------------------------------------
    def _execute(self, order: OrderApproved) -> Contract:
        currency = quote_currency(order.symbol)
        balance = self.balances.setdefault(currency, self.initial_balance)
        position = self.positions.get(order.symbol)
        ledger = executor_core.Ledger(currency, balance, position)
        # The venue's quote: the close of the decision minute, the candle the order was decided on
        # (what the paper venue reads from market_data in the services).
        quote = order.signal.snapshot.candle.close
        outcome = executor_core.fill_order(ledger, order, self.fill_params, quote)
        if isinstance(outcome, executor_core.Rejection):
            return outcome.message_out()
        self.balances[currency] = outcome.ledger.balance
        if outcome.ledger.position is None or outcome.ledger.position.quantity <= 0:
            self.positions.pop(order.symbol, None)
        else:
            self.positions[order.symbol] = outcome.ledger.position
        self.result.currency = currency
        return outcome.fill

    # -- bookkeeping ------------------------------------------------------------------------------
    def _remember(self, candles: Sequence[MinuteCandle]) -> None:
        for candle in candles:
            self.seen.setdefault(candle.symbol, []).append(candle)

    def _indicator_state(self, symbol: str) -> indicator_core.SymbolState:
        state = self.indicators.get(symbol)
        if state is None:
            state = indicator_core.initial_state(symbol, self.indicator_config)
            self.indicators[symbol] = state
        return state

    def _mark_equity(self, ts: datetime) -> None:
        currency = self.result.currency
        cash = self.balances.get(currency, self.initial_balance)
        self.result.equity.append(equity_point(ts, cash, self.positions, self.last_close))
