"""The agent core: context book, review plan, and the messages a decision becomes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from coinpilot.contracts import AiVerdict, OrderApproved, OrderRejected, Regime, RejectReason, RejectStage
from services.agent.core import (
    ContextBook,
    ReviewPlan,
    Skip,
    implausible,
    on_hourly_candle,
    order_outputs,
    plan_review,
    review_decision,
    skip_decision,
)
from services.agent.guard_rules import ErrorKind
from services.agent.routing import Route
from services.agent.verdicts import CallSummary, Outcome
from tests.unit.agent.factories import (
    PARAMS,
    bar,
    bars_from_closes,
    book_of,
    gentle_uptrend,
    hourly_candle,
    order,
)

ROUTE = Route("anthropic", "claude-haiku-4-5-20251001", "primary")


def test_book_keeps_closed_bars_in_order_and_replaces_a_redelivered_hour() -> None:
    bars = gentle_uptrend(3)
    book = book_of([bars[2], bars[0], bars[1]])
    replaced = book.with_bar("KRW-BTC", bar(1, 555.0))
    assert [b.ts_open for b in replaced.bars["KRW-BTC"]] == [b.ts_open for b in bars]
    assert replaced.bars["KRW-BTC"][1].close == 555.0


def test_book_keeps_at_most_keep_bars() -> None:
    book = book_of(gentle_uptrend(60))
    assert len(book.bars["KRW-BTC"]) == 48


def test_on_hourly_candle_adds_the_bar_for_its_symbol() -> None:
    b = bar(0, 101.0)
    book = on_hourly_candle(ContextBook(), hourly_candle(b, "KRW-ETH"), PARAMS)
    assert book.bars == {"KRW-ETH": (b,)}


def test_context_is_the_last_24_bars_closed_by_the_order_event_time() -> None:
    bars = gentle_uptrend(30)
    at = bars[25].ts_close  # bars 26..29 close later: a replay or a late consumer must not see them
    plan = plan_review(book_of(bars), order(at), PARAMS)
    assert isinstance(plan, ReviewPlan)
    assert plan.bars == bars[2:26]
    assert plan.payload["ai_context_candles"] == 24
    assert plan.canary_marker == bars[25].ts_open.isoformat()


def test_thin_context_is_skipped_before_any_model_call() -> None:
    bars = gentle_uptrend(6)
    result = plan_review(book_of(bars), order(bars[-1].ts_close), PARAMS)
    assert result == Skip(RejectReason.AI_CONTEXT_SHORT, "AI context insufficient (6 < 12)", 6)


def test_bear_falling_knife_is_skipped() -> None:
    closes = [120 - i for i in range(24)]
    bars = bars_from_closes(closes)
    result = plan_review(book_of(bars), order(bars[-1].ts_close, regime=Regime.BEAR), PARAMS)
    assert isinstance(result, Skip) and result.reason is RejectReason.FALLING_KNIFE


def test_bear_plan_carries_bear_features_and_the_regime_gap() -> None:
    bars = gentle_uptrend(24)
    plan = plan_review(book_of(bars), order(bars[-1].ts_close, regime=Regime.BEAR, diff_pct=-3.4), PARAMS)
    assert isinstance(plan, ReviewPlan)
    assert plan.bear is not None
    assert plan.payload["bear_volume_recovery_ratio_8h"] == 1.0
    assert plan.payload["regime_diff_pct"] == -3.4
    assert plan.payload["entry_config"]["ai_max_calls_per_hour"] == 20


def test_approval_publishes_the_proposed_order_unchanged() -> None:
    proposed = order(gentle_uptrend(1)[0].ts_close, amount="1234567.89", price="98765432.1")
    outcome = Outcome(True, "[Analyst] a | [Guardian] g", None, 77)
    decision, approved = order_outputs(proposed, review_decision(proposed, outcome, ROUTE, "h"))
    assert isinstance(approved, OrderApproved)
    assert (approved.order_id, approved.amount, approved.reference_price, approved.signal) == (
        proposed.order_id,
        Decimal("1234567.89"),
        Decimal("98765432.1"),
        proposed.signal,
    )
    assert approved.approved_by is RejectStage.AGENT and approved.quantity is None
    assert decision.decision is AiVerdict.CONFIRM and decision.ts_event == proposed.ts_event


def test_rejection_carries_the_reason_code_and_reasoning() -> None:
    proposed = order(gentle_uptrend(1)[0].ts_close)
    outcome = Outcome(False, "[Risk Warning] panic", RejectReason.AI_RISK_WARNING, 80)
    decision, rejected = order_outputs(proposed, review_decision(proposed, outcome, ROUTE, "h"))
    assert isinstance(rejected, OrderRejected)
    assert (rejected.stage, rejected.reason, rejected.message) == (
        RejectStage.AGENT,
        RejectReason.AI_RISK_WARNING,
        "[Risk Warning] panic",
    )
    assert decision.decision is AiVerdict.REJECT and decision.reason_code is RejectReason.AI_RISK_WARNING


def test_skip_is_published_as_a_skip_decision_and_an_agent_rejection() -> None:
    proposed = order(gentle_uptrend(1)[0].ts_close)
    decision, rejected = order_outputs(proposed, skip_decision(proposed, RejectReason.FALLING_KNIFE, "knife"))
    assert (decision.decision, decision.reason_code, decision.confidence) == (
        AiVerdict.SKIP,
        RejectReason.FALLING_KNIFE,
        None,
    )
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.FALLING_KNIFE


def test_decision_latency_and_cost_come_from_the_calls() -> None:
    proposed = order(gentle_uptrend(1)[0].ts_close)
    calls = (
        CallSummary("analyst", "anthropic", "claude-haiku-4-5-20251001", "ok", 1000, 100, 800),
        CallSummary("guardian", "anthropic", "claude-haiku-4-5-20251001", "ok", 2000, 50, 450),
    )
    outcome = Outcome(True, "ok", None, 70, calls=calls)
    decision = review_decision(proposed, outcome, ROUTE, "hash")
    # (1000+2000)/1e6*0.80 + (100+50)/1e6*4.00 = 0.0024 + 0.0006
    assert (decision.latency_ms, decision.cost_usd, decision.prompt_hash) == (
        1250,
        Decimal("0.00300000"),
        "hash",
    )
    assert decision.model_used == "anthropic:claude-haiku-4-5-20251001 (primary)"


def test_failed_calls_of_unknown_models_have_no_cost() -> None:
    proposed = order(gentle_uptrend(1)[0].ts_close)
    calls = (CallSummary("analyst", "rules", "rules-v1", "error", error_kind=ErrorKind.TIMEOUT),)
    decision = review_decision(
        proposed, Outcome(False, "t", RejectReason.AI_TIMEOUT, None, calls=calls), ROUTE, "h"
    )
    assert decision.cost_usd is None and decision.confidence is None


def test_an_order_one_minute_after_the_hour_does_not_see_an_unclosed_hour() -> None:
    bars = gentle_uptrend(13)
    at = bars[-1].ts_open + timedelta(minutes=59)
    result = plan_review(book_of(bars), order(at), PARAMS)
    assert isinstance(result, ReviewPlan) and result.context_len == 12


def test_a_proposal_with_a_non_positive_or_inconsistent_price_is_implausible() -> None:
    at = gentle_uptrend(24)[-1].ts_close + timedelta(minutes=1)
    assert implausible(order(at)) is None
    zero = implausible(order(at, price="0"))
    assert zero is not None and zero.reason is RejectReason.IMPLAUSIBLE_PRICE
    assert zero.message.startswith("non-positive price in the proposal")
    negative = implausible(order(at, price="-100"))
    assert negative is not None and negative.reason is RejectReason.IMPLAUSIBLE_PRICE
    lowered = implausible(order(at).model_copy(update={"reference_price": Decimal(1)}))
    assert lowered is not None and lowered.message == "decision price 1 is not the signal's price 100000"
    no_amount = implausible(order(at).model_copy(update={"amount": Decimal(0)}))
    assert no_amount is not None and no_amount.message == "non-positive amount 0"
