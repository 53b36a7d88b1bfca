"""The agent's pure core: market context in, review plan or skip out; outcome in, messages out.

BEHAVIOUR §5: a proposed BUY is pre-filtered (§5.1) on the last 24 closed hourly candles
(§5.2); if it survives, the edge checks the guardrails (§5.5) and runs the reviewers (§5.3-5.6);
what they said becomes an :class:`AiDecision` and either the UNCHANGED order on
``orders.approved`` or a rejection with a reason code. The model can only say no.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coinpilot.clock import HOUR, floor_hour
from coinpilot.contracts import (
    AiDecision,
    AiVerdict,
    HourlyCandle,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Regime,
    RejectReason,
    RejectStage,
)
from services.agent.context import (
    CONTEXT_CANDLES,
    Bar,
    BearFeatures,
    PatternFeatures,
    bear_features,
    market_context,
    pattern_features,
)
from services.agent.guard_rules import GuardParams
from services.agent.prefilter import PrefilterParams, should_run_ai_analysis
from services.agent.pricing import estimate_cost_usd, total_cost_usd
from services.agent.routing import Route
from services.agent.verdicts import Outcome

KEEP_BARS = 48


@dataclass(frozen=True, slots=True)
class RegimeAiParams:
    prefilter: PrefilterParams = field(default_factory=PrefilterParams)
    guard: GuardParams = field(default_factory=GuardParams)

    def entry_config(self) -> dict[str, Any]:
        """The ``ai_*`` keys of the regime entry block, as the Guardian sees them (§5.2)."""
        p, g = self.prefilter, self.guard
        return {
            "ai_prefilter_enabled": p.enabled,
            "ai_prefilter_min_context_candles": p.min_context_candles,
            "ai_prefilter_max_downtrend_ratio": p.max_downtrend_ratio,
            "ai_prefilter_min_rebound_pct": p.min_rebound_pct,
            "ai_prefilter_min_volume_recovery_ratio": p.min_volume_recovery_ratio,
            "ai_reject_cooldown_min_1": g.cooldown_minutes_1,
            "ai_reject_cooldown_min_2": g.cooldown_minutes_2,
            "ai_reject_cooldown_min_3": g.cooldown_minutes_3,
            "ai_reject_cooldown_window_min": g.cooldown_window_minutes,
            "ai_max_calls_per_hour": g.max_calls_per_hour,
            "ai_max_calls_per_day": g.max_calls_per_day,
            "ai_credit_block_minutes": g.credit_block_minutes,
            "ai_error_streak_threshold": g.error_streak_threshold,
            "ai_error_block_minutes": g.error_block_minutes,
        }


@dataclass(frozen=True, slots=True)
class AgentParams:
    """Everything the core decides with. Built from the strategy YAML (or directly by tests)."""

    regimes: Mapping[Regime, RegimeAiParams] = field(default_factory=dict)
    context_candles: int = CONTEXT_CANDLES
    keep_bars: int = KEEP_BARS

    def for_regime(self, regime: Regime) -> RegimeAiParams:
        return self.regimes.get(regime, RegimeAiParams())


# -- market context state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextBook:
    """Closed hourly bars per symbol, oldest first, at most ``keep_bars`` each."""

    bars: Mapping[str, tuple[Bar, ...]] = field(default_factory=dict)

    def with_bar(self, symbol: str, bar: Bar, keep: int = KEEP_BARS) -> ContextBook:
        """Insert or replace the bar of that hour; an old redelivered bar never truncates newer ones."""
        current = {b.ts_open: b for b in self.bars.get(symbol, ())}
        current[bar.ts_open] = bar
        ordered = tuple(current[k] for k in sorted(current))[-keep:]
        return ContextBook({**self.bars, symbol: ordered})

    def closed_by(self, symbol: str, ts: datetime) -> tuple[Bar, ...]:
        """Bars that had closed by event time ``ts``: the same answer whatever arrived later."""
        return tuple(b for b in self.bars.get(symbol, ()) if b.ts_close <= ts)

    def latest_close(self, symbol: str) -> datetime | None:
        bars = self.bars.get(symbol, ())
        return bars[-1].ts_close if bars else None


def on_hourly_candle(book: ContextBook, candle: HourlyCandle, params: AgentParams) -> ContextBook:
    return book.with_bar(candle.symbol, Bar.of(candle), params.keep_bars)


def needs_warm(book: ContextBook, symbol: str) -> bool:
    """A run's book is warmed for a symbol when its first order or hourly candle arrives."""
    return not book.bars.get(symbol)


def has_holes(book: ContextBook, symbol: str, ts: datetime, keep: int = KEEP_BARS) -> bool:
    """Whether the symbol's book lacks any of the ``keep`` hours of :func:`warm_span` at ``ts``.

    A replica of the agent holds only the ``candles.1h`` its share of the durable brought it, so
    its book has holes the stored history fills (an hour without any 1m candle also counts as a
    hole here: the history then has nothing to add and the read changes nothing)."""
    start, end = warm_span(ts, keep)
    held = sum(1 for b in book.bars.get(symbol, ()) if start <= b.ts_open and b.ts_open + HOUR <= end)
    return held < keep


def warm_span(ts: datetime, keep: int = KEEP_BARS) -> tuple[datetime, datetime]:
    """``[start, end)`` of the 1m candle opens a warm at event time ``ts`` reads: the ``keep``
    whole hours before ``floor_hour(ts)``, i.e. exactly the last ``keep`` hours with
    ``ts_open + 1h <= ts``."""
    end = floor_hour(ts)
    return end - keep * HOUR, end


def warm_bars(candles: Iterable[HourlyCandle], ts: datetime, keep: int = KEEP_BARS) -> tuple[Bar, ...]:
    """The bars a warm at event time ``ts`` adds, oldest first.

    ``candles`` are hourly aggregates of the stored 1m candles (first open, max high, min low,
    last close, summed volume, as ``candles.1h`` carries them). Kept: hours with
    ``ts_open + 1h <= ts`` among the last ``keep`` (:func:`warm_span`). An hour with at least one
    1m candle counts, however many minutes it is missing (as ``candles.1h`` and the start-up warm
    count it); hours with none do not exist.
    """
    start, end = warm_span(ts, keep)
    chosen = {c.ts_open: Bar.of(c) for c in candles if start <= c.ts_open and c.ts_open + HOUR <= end}
    return tuple(chosen[k] for k in sorted(chosen))


def warm_book(book: ContextBook, symbol: str, bars: Iterable[Bar], keep: int = KEEP_BARS) -> ContextBook:
    """Merge ``bars`` into the symbol's bars; an hour already in the book wins (it came from
    ``candles.1h``); the newest ``keep`` hours are kept."""
    merged = {b.ts_open: b for b in bars}
    merged.update({b.ts_open: b for b in book.bars.get(symbol, ())})
    ordered = tuple(merged[k] for k in sorted(merged))[-keep:]
    return ContextBook({**book.bars, symbol: ordered})


# -- review plan -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    """No model call: pre-filter or guardrail said so (§5 steps 2-3)."""

    reason: RejectReason
    message: str
    context_len: int


@dataclass(frozen=True, slots=True)
class ReviewPlan:
    """Everything the reviewers are shown about one order."""

    order: OrderProposed
    bars: tuple[Bar, ...]
    bear: BearFeatures | None
    patterns: PatternFeatures
    payload: Mapping[str, Any]
    regime_params: RegimeAiParams

    @property
    def context_len(self) -> int:
        return len(self.bars)

    @property
    def canary_marker(self) -> str:
        """Timestamp of the last context candle, else the signal candle's (§5.6 canary seed)."""
        if self.bars:
            return str(self.bars[-1].as_context()["timestamp"])
        return self.order.signal.snapshot.candle.ts_open.isoformat()


def finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def signal_payload(
    order: OrderProposed, bars: tuple[Bar, ...], bear: BearFeatures | None, params: RegimeAiParams
) -> dict[str, Any]:
    """The original ``signal_info``: indicators, regime, context and entry config (§5.2).

    ``regime_diff_pct`` comes from the regime that was in force (rebuild of the §5.4 bug that
    always showed 0.00 %).
    """
    snap = order.signal.snapshot
    payload: dict[str, Any] = {
        "symbol": order.symbol,
        "regime": str(order.regime),
        "regime_diff_pct": snap.regime_diff_pct if snap.regime_diff_pct is not None else 0.0,
        "timestamp": snap.candle.ts_open.isoformat(),
        "close": float(snap.candle.close),
        "volume": float(snap.candle.volume),
        "rsi": finite_or_none(snap.rsi_14),
        "rsi_short": finite_or_none(snap.rsi_7),
        "rsi_short_prev": finite_or_none(snap.rsi_7_prev),
        "rsi_short_min_lookback": finite_or_none(snap.rsi_7_min_lookback),
        "rsi_short_recovery_lookback": snap.rsi_7_recovery_lookback,
        "ma_trend": finite_or_none(snap.ma_20),
        "ma_period": snap.ma_period,
        "bb_mid": finite_or_none(snap.bb_mid),
        "bb_upper": finite_or_none(snap.bb_upper),
        "bb_lower": finite_or_none(snap.bb_lower),
        "vol_ratio": finite_or_none(snap.vol_ratio),
        "recent_vol_ratios": [r if math.isfinite(r) else "Infinity" for r in snap.recent_vol_ratios],
        "bb_touch_recovery": snap.bb_touch_recovery,
        "bb_touch_lookback": snap.bb_touch_lookback,
        "bb_recovery_sustain_candles": snap.bb_recovery_sustain_candles,
        "ai_context_candles": len(bars),
    }
    if bear is not None:
        payload.update(bear.as_dict())
    payload["market_context"] = list(market_context(bars, len(bars)))
    payload["entry_config"] = params.entry_config()
    return payload


def implausible(order: OrderProposed) -> Skip | None:
    """A proposal no model should be asked about: a non-positive price or amount (the decision
    price, the signal's, or its candle's close), or a decision price that is not the signal's.
    Skipped ``IMPLAUSIBLE_PRICE`` before any context is read."""
    signal = order.signal
    prices = (order.reference_price, signal.price, signal.snapshot.candle.close)
    if any(not p.is_finite() or p <= 0 for p in prices):
        decision, signalled, close = prices
        return Skip(
            RejectReason.IMPLAUSIBLE_PRICE,
            f"non-positive price in the proposal: decision {decision}, signal {signalled}, close {close}",
            0,
        )
    if not order.amount.is_finite() or order.amount <= 0:
        return Skip(RejectReason.IMPLAUSIBLE_PRICE, f"non-positive amount {order.amount}", 0)
    if order.reference_price != signal.price:
        return Skip(
            RejectReason.IMPLAUSIBLE_PRICE,
            f"decision price {order.reference_price} is not the signal's price {signal.price}",
            0,
        )
    return None


def plan_review(book: ContextBook, order: OrderProposed, params: AgentParams) -> Skip | ReviewPlan:
    """Build the market context of an order and run the pre-filter on it."""
    bars = book.closed_by(order.symbol, order.ts_event)[-params.context_candles :]
    regime_params = params.for_regime(order.regime)
    bear = bear_features(bars) if order.regime is Regime.BEAR else None
    verdict = should_run_ai_analysis(order.regime, bear, len(bars), regime_params.prefilter)
    if verdict.reason is not None:
        return Skip(verdict.reason, verdict.message, len(bars))
    return ReviewPlan(
        order=order,
        bars=bars,
        bear=bear,
        patterns=pattern_features(bars),
        payload=signal_payload(order, bars, bear, regime_params),
        regime_params=regime_params,
    )


# -- outputs -----------------------------------------------------------------------------------


def skip_decision(order: OrderProposed, reason: RejectReason, message: str) -> AiDecision:
    return AiDecision(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        decision=AiVerdict.SKIP,
        reason_code=reason,
        reasoning=message,
        regime=order.regime,
        rsi=finite_or_none(order.signal.snapshot.rsi_14),
    )


def review_decision(order: OrderProposed, outcome: Outcome, route: Route, prompt_hash: str) -> AiDecision:
    """The verdict as published and stored: latency and cost come from the calls, so a replay
    that answers from the records reproduces them byte for byte."""
    calls = outcome.calls
    return AiDecision(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        decision=AiVerdict.CONFIRM if outcome.approved else AiVerdict.REJECT,
        reason_code=outcome.reason_code,
        confidence=outcome.confidence,
        reasoning=outcome.reasoning,
        regime=order.regime,
        rsi=finite_or_none(order.signal.snapshot.rsi_14),
        model_used=route.model_used,
        prompt_hash=prompt_hash,
        latency_ms=sum(c.latency_ms for c in calls),
        cost_usd=total_cost_usd(estimate_cost_usd(c.model, c.input_tokens, c.output_tokens) for c in calls),
        boundary_violation=outcome.boundary_violation,
        boundary_terms=outcome.boundary_terms,
    )


def order_outputs(
    order: OrderProposed, decision: AiDecision
) -> tuple[AiDecision, OrderApproved | OrderRejected]:
    """The messages for a decision. The approved order is the proposed one, unchanged: same id,
    amount and reference price; the model can reject it but never alter it."""
    if decision.decision is AiVerdict.CONFIRM:
        approved = OrderApproved(
            ts_event=order.ts_event,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            reference_price=order.reference_price,
            amount=order.amount,
            regime=order.regime,
            approved_by=RejectStage.AGENT,
            signal=order.signal,
        )
        return decision, approved
    rejected = OrderRejected(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        stage=RejectStage.AGENT,
        reason=decision.reason_code or RejectReason.AI_REJECTED,
        message=decision.reasoning,
    )
    return decision, rejected
