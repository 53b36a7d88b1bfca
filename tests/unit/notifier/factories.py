"""Valid notifier events for tests (unit and integration)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from coinpilot.contracts import (
    AiDecision,
    AiVerdict,
    AlertLevel,
    AlertType,
    DailyReport,
    ExitBreakdown,
    ExitReason,
    Fill,
    Regime,
    RejectReason,
    RiskAlert,
    Side,
)

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
D = Decimal


def buy_fill(order_id: str = "KRW-BTC:2026-03-02T01:00Z:buy", at: datetime = T0) -> Fill:
    return Fill(
        ts_event=at,
        order_id=order_id,
        symbol="KRW-BTC",
        side=Side.BUY,
        currency="KRW",
        decision_price=D("100000000"),
        fill_price=D("100100000"),
        quantity=D("0.00999"),
        amount=D("999999"),
        fee=D("499.9995"),
        balance_after=D("8999501.0005"),
        position_quantity_after=D("0.00999"),
        position_avg_price_after=D("100100000"),
        regime=Regime.BULL,
        high_water_mark=D("100100000"),
        opened_at=at,
    )


def sell_fill(at: datetime = T0 + timedelta(hours=5)) -> Fill:
    return Fill(
        ts_event=at,
        order_id="KRW-BTC:2026-03-02T06:00Z:sell",
        symbol="KRW-BTC",
        side=Side.SELL,
        currency="KRW",
        decision_price=D("103000000"),
        fill_price=D("102897000"),
        quantity=D("0.00999"),
        amount=D("1027941.03"),
        fee=D("513.970515"),
        balance_after=D("10026928.059985"),
        position_quantity_after=D(0),
        position_avg_price_after=D(0),
        realized_pnl=D("27428.059485"),
        realized_pnl_gross=D("27942.03"),
        entry_avg_price=D("100100000"),
        regime=Regime.BULL,
        exit_reason=ExitReason.TRAILING_STOP,
        high_water_mark=D("104200000"),
        opened_at=T0,
    )


def ai_decision(
    decision: AiVerdict = AiVerdict.REJECT,
    reasoning: str = "Falling knife: three long bearish candles.",
    confidence: int | None = 72,
    rsi: float | None = 33.46,
) -> AiDecision:
    return AiDecision(
        ts_event=T0,
        order_id="KRW-BTC:2026-03-02T01:00Z:buy",
        symbol="KRW-BTC",
        decision=decision,
        reason_code=RejectReason.AI_REJECTED if decision is AiVerdict.REJECT else None,
        confidence=confidence,
        reasoning=reasoning,
        regime=Regime.BEAR,
        rsi=rsi,
        model_used="anthropic:claude-haiku-4-5-20251001 (primary)",
    )


def risk_alert(level: AlertLevel = AlertLevel.CRITICAL) -> RiskAlert:
    return RiskAlert(
        ts_event=T0,
        type=AlertType.COOLDOWN,
        level=level,
        message="3 consecutive losses: trading paused until 03:00 UTC",
    )


def daily_report(
    total_pnl: str = "100.0",
    trades: int = 5,
    sell_trades: int = 3,
    win_rate: float | None = 0.6,
    mdd_pct: float = 5.0,
    summary: str = "Quiet day.",
) -> DailyReport:
    end = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    return DailyReport(
        ts_event=end,
        report_date=date(2026, 3, 2),
        period_start=end - timedelta(days=1),
        period_end=end,
        currency="KRW",
        total_pnl=D(total_pnl),
        trades=trades,
        sell_trades=sell_trades,
        win_rate=win_rate,
        mdd_pct=mdd_pct,
        exit_breakdown={"TAKE_PROFIT": ExitBreakdown(ts_event=end, count=2, avg_pnl_pct=3.1)},
        notes=("n1",),
        summary=summary,
    )
