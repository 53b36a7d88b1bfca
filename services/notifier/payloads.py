"""What each sink receives: n8n webhook payloads (BEHAVIOUR §7.2, §8.4) and Discord embeds (§7.3).

Pure functions of one event. Money leaves as numbers only where the original contract says float
(n8n ``price``/``quantity``); everything shown to a human is formatted with thousands separators
and labelled with the currency of the event.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from coinpilot.clock import KST, ensure_utc
from coinpilot.contracts import AiDecision, AiVerdict, AlertLevel, DailyReport, Fill, RiskAlert, Side

STRATEGY_NAME = "AdaptiveMeanReversion"
REASON_LIMIT = 1500

# Discord colours (§7.3)
GREEN = 5763719  # #57F287
RED = 15548997  # #ED4245
GREY = 9807270  # #95A5A6
ALERT_RED = 15158332  # #E74C3C
ALERT_YELLOW = 16776960  # #FFFF00
REPORT_BLUE = 3447003  # #3498DB

FOOTER_TRADE = "CoinPilot v3.0"
FOOTER_AI = "CoinPilot AI Agent"
FOOTER_RISK = "CoinPilot Risk Manager"

# Discord embed limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits)
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_VALUE_LIMIT = 1024

Json = dict[str, Any]


def iso(ts: datetime) -> str:
    return ensure_utc(ts).isoformat()


def amount_text(value: Decimal, currency: str) -> str:
    """``Decimal("100100000") -> "100,100,000 KRW"``; keeps the decimals a price really has."""
    text = format(value.normalize(), ",f") if value == value.to_integral_value() else format(value, ",f")
    return f"{text} {currency}"


def whole_amount_text(value: Decimal, currency: str) -> str:
    """Rounded to whole units, half away from zero: ``-12345.6 -> "-12,346 KRW"`` (§8.4)."""
    whole = value.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if whole == 0:
        whole = Decimal(0)  # no "-0 KRW"
    return f"{whole:,f} {currency}"


def win_rate_text(report: DailyReport) -> str:
    if report.sell_trades == 0 or report.win_rate is None:
        return "N/A"
    return f"{report.win_rate * 100:.1f}%"


def mdd_text(report: DailyReport) -> str:
    return f"{report.mdd_pct:.2f}%"


def report_title(report: DailyReport) -> str:
    return f"📅 CoinPilot Daily Report ({report.report_date.isoformat()})"


def ai_reason(decision: AiDecision) -> str:
    return decision.reasoning[:REASON_LIMIT] if decision.reasoning else "No reason provided"


def ai_rsi(decision: AiDecision) -> float:
    return round(decision.rsi, 1) if decision.rsi is not None else 0.0


def fill_reason(fill: Fill) -> str:
    if fill.side is Side.BUY:
        return f"regime {fill.regime}, amount {amount_text(fill.amount, fill.currency)}"
    pnl = "-" if fill.realized_pnl is None else amount_text(fill.realized_pnl, fill.currency)
    return f"{fill.exit_reason or 'EXIT'}, realised PnL {pnl} (fee included)"


# -- n8n payloads (§7.2) --------------------------------------------------------------------------
def trade_payload(fill: Fill) -> Json:
    return {
        "symbol": fill.symbol,
        "side": str(fill.side),
        "price": float(fill.fill_price),
        "quantity": float(fill.quantity),
        "strategy": STRATEGY_NAME,
        "executed_at": iso(fill.ts_event),
        "timestamp": iso(fill.ts_event),
        "currency": fill.currency,
        "order_id": fill.order_id,
        "amount": float(fill.amount),
        "fee": float(fill.fee),
        "exit_reason": None if fill.exit_reason is None else str(fill.exit_reason),
        "realized_pnl": None if fill.realized_pnl is None else float(fill.realized_pnl),
        "reason": fill_reason(fill),
    }


def ai_decision_payload(decision: AiDecision) -> Json:
    return {
        "symbol": decision.symbol,
        "decision": str(decision.decision),
        "regime": str(decision.regime),
        "rsi": ai_rsi(decision),
        "confidence": decision.confidence,
        "boundary_violation": decision.boundary_violation,
        "boundary_terms": list(decision.boundary_terms),
        "model_used": decision.model_used,
        "reason": ai_reason(decision),
        "reason_code": None if decision.reason_code is None else str(decision.reason_code),
        "timestamp": iso(decision.ts_event),
    }


def risk_payload(alert: RiskAlert) -> Json:
    return {
        "type": str(alert.type),
        "level": str(alert.level),
        "message": alert.message,
        "symbol": alert.symbol,
        "timestamp": iso(alert.ts_event),
    }


def daily_report_payload(report: DailyReport) -> Json:
    """§8.4, plus the explicit period (rebuild: the 24 h ending at 22:00 KST)."""
    return {
        "title": report_title(report),
        "pnl": whole_amount_text(report.total_pnl, report.currency),
        "trades": report.trades,
        "sell_trades": report.sell_trades,
        "win_rate": win_rate_text(report),
        "mdd": mdd_text(report),
        "exit_breakdown": {
            reason: row.model_dump(mode="json", exclude={"ts_event", "schema_version"})
            for reason, row in report.exit_breakdown.items()
        },
        "notes": list(report.notes),
        "summary": report.summary,
        "currency": report.currency,
        "period_start": iso(report.period_start),
        "period_end": iso(report.period_end),
        "period_label": period_label(report),
        "timestamp": iso(report.ts_event),
    }


def period_label(report: DailyReport) -> str:
    start = ensure_utc(report.period_start).astimezone(KST)
    end = ensure_utc(report.period_end).astimezone(KST)
    return f"{start:%Y-%m-%d %H:%M} ~ {end:%Y-%m-%d %H:%M} KST"


# -- Discord embeds (§7.3) ------------------------------------------------------------------------
def _field(name: str, value: str, inline: bool = True) -> Json:
    return {"name": name, "value": (value or "-")[:FIELD_VALUE_LIMIT], "inline": inline}


def _embed(title: str, colour: int, description: str, fields: list[Json], footer: str, ts: datetime) -> Json:
    return {
        "title": title[:TITLE_LIMIT],
        "color": colour,
        "description": (description or "-")[:DESCRIPTION_LIMIT],
        "fields": fields,
        "footer": {"text": footer},
        "timestamp": iso(ts),
    }


def discord_message(embed: Json) -> Json:
    """A webhook body that can never ping anyone, whatever text an LLM produced."""
    return {"username": "CoinPilot", "embeds": [embed], "allowed_mentions": {"parse": []}}


def trade_embed(fill: Fill) -> Json:
    colour = GREEN if fill.side is Side.BUY else RED
    fields = [
        _field("Symbol", fill.symbol),
        _field("Price", amount_text(fill.fill_price, fill.currency)),
        _field("Quantity", format(fill.quantity.normalize(), "f")),
    ]
    return _embed(
        f"Trade Executed: {fill.side}", colour, fill_reason(fill), fields, FOOTER_TRADE, fill.ts_event
    )


def ai_decision_embed(decision: AiDecision) -> Json:
    colour = {AiVerdict.CONFIRM: GREEN, AiVerdict.REJECT: RED}.get(decision.decision, GREY)
    fields = [
        _field("Symbol", decision.symbol),
        _field("Regime", str(decision.regime)),
        _field("RSI", f"{ai_rsi(decision):.1f}"),
        _field("Confidence", "-" if decision.confidence is None else str(decision.confidence)),
    ]
    return _embed(
        f"AI Decision: {decision.decision}", colour, ai_reason(decision), fields, FOOTER_AI, decision.ts_event
    )


def risk_embed(alert: RiskAlert) -> Json:
    colour = ALERT_RED if alert.level is AlertLevel.CRITICAL else ALERT_YELLOW
    fields = [_field("🚨 Level", str(alert.level)), _field("📋 Type", str(alert.type))]
    if alert.symbol is not None:
        fields.append(_field("Symbol", alert.symbol))
    return _embed(f"⚠️ Risk Alert: {alert.type}", colour, alert.message, fields, FOOTER_RISK, alert.ts_event)


def daily_report_embed(report: DailyReport) -> Json:
    fields = [
        _field("💰 Total PnL", whole_amount_text(report.total_pnl, report.currency)),
        _field("📊 Trades", f"{report.trades}건"),
        _field("🎯 Win Rate", win_rate_text(report)),
        _field("📉 MDD", mdd_text(report)),
        _field("Period", period_label(report), inline=False),
    ]
    return _embed(report_title(report), REPORT_BLUE, report.summary, fields, FOOTER_TRADE, report.ts_event)
