"""n8n payloads (§7.2, §8.4, case M) and Discord embeds (§7.3 layouts and colours)."""

from __future__ import annotations

import pytest

from coinpilot.contracts import AiVerdict, AlertLevel
from services.notifier import payloads as p
from tests.unit.notifier.factories import ai_decision, buy_fill, daily_report, risk_alert, sell_fill


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        pytest.param(
            daily_report("100.0", 5, 3, 0.6, 5.0),
            {"pnl": "100 KRW", "trades": 5, "sell_trades": 3, "win_rate": "60.0%", "mdd": "5.00%"},
            id="case-M-figures",
        ),
        pytest.param(
            daily_report("100.0", 5, 0, None, 5.0),
            {"pnl": "100 KRW", "trades": 5, "sell_trades": 0, "win_rate": "N/A", "mdd": "5.00%"},
            id="case-M-no-sells-is-NA",
        ),
        pytest.param(
            daily_report("-12345.6", 2, 1, 0.0, 1.234),
            {"pnl": "-12,346 KRW", "trades": 2, "sell_trades": 1, "win_rate": "0.0%", "mdd": "1.23%"},
            id="negative-pnl-with-separators",
        ),
    ],
)
def test_daily_report_payload_formats_figures(report, expected: dict[str, object]) -> None:
    payload = p.daily_report_payload(report)
    assert {k: payload[k] for k in expected} == expected
    assert payload["title"] == "📅 CoinPilot Daily Report (2026-03-02)"
    assert payload["period_label"] == "2026-03-01 22:00 ~ 2026-03-02 22:00 KST"
    assert payload["exit_breakdown"] == {
        "TAKE_PROFIT": {"count": 2, "avg_pnl_pct": 3.1, "avg_post_1h_pct": None}
    }
    assert payload["timestamp"] == "2026-03-02T13:00:00+00:00"


def test_trade_payload_keeps_the_original_fields_and_labels_the_currency() -> None:
    payload = p.trade_payload(sell_fill())
    assert payload | {"reason": None} == {
        "symbol": "KRW-BTC",
        "side": "SELL",
        "price": 102897000.0,
        "quantity": 0.00999,
        "strategy": "AdaptiveMeanReversion",
        "executed_at": "2026-03-02T06:00:00+00:00",
        "timestamp": "2026-03-02T06:00:00+00:00",
        "currency": "KRW",
        "order_id": "KRW-BTC:2026-03-02T06:00Z:sell",
        "amount": 1027941.03,
        "fee": 513.970515,
        "exit_reason": "TRAILING_STOP",
        "realized_pnl": 27428.059485,
        "reason": None,
    }
    assert payload["reason"] == "TRAILING_STOP, realised PnL 27,428.059485 KRW (fee included)"


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        pytest.param(
            ai_decision(),
            {
                "decision": "REJECT",
                "rsi": 33.5,
                "confidence": 72,
                "reason": "Falling knife: three long bearish candles.",
            },
            id="reject-rounds-rsi",
        ),
        pytest.param(
            ai_decision(reasoning="", confidence=None, rsi=None),
            {"decision": "REJECT", "rsi": 0.0, "confidence": None, "reason": "No reason provided"},
            id="missing-fields-get-defaults",
        ),
        pytest.param(
            ai_decision(reasoning="x" * 2000),
            {"decision": "REJECT", "rsi": 33.5, "confidence": 72, "reason": "x" * 1500},
            id="reason-cut-at-1500",
        ),
    ],
)
def test_ai_decision_payload(decision, expected: dict[str, object]) -> None:
    payload = p.ai_decision_payload(decision)
    assert {k: payload[k] for k in expected} == expected
    assert payload["regime"] == "BEAR" and payload["boundary_terms"] == []
    assert payload["model_used"] == "anthropic:claude-haiku-4-5-20251001 (primary)"


def test_risk_payload() -> None:
    assert p.risk_payload(risk_alert()) == {
        "type": "COOLDOWN",
        "level": "CRITICAL",
        "message": "3 consecutive losses: trading paused until 03:00 UTC",
        "symbol": None,
        "timestamp": "2026-03-02T01:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("embed", "title", "colour", "fields", "footer"),
    [
        pytest.param(
            p.trade_embed(buy_fill()),
            "Trade Executed: BUY",
            5763719,
            [("Symbol", "KRW-BTC"), ("Price", "100,100,000 KRW"), ("Quantity", "0.00999")],
            "CoinPilot v3.0",
            id="buy-is-green",
        ),
        pytest.param(
            p.trade_embed(sell_fill()),
            "Trade Executed: SELL",
            15548997,
            [("Symbol", "KRW-BTC"), ("Price", "102,897,000 KRW"), ("Quantity", "0.00999")],
            "CoinPilot v3.0",
            id="sell-is-red",
        ),
        pytest.param(
            p.ai_decision_embed(ai_decision(AiVerdict.CONFIRM, confidence=None)),
            "AI Decision: CONFIRM",
            5763719,
            [("Symbol", "KRW-BTC"), ("Regime", "BEAR"), ("RSI", "33.5"), ("Confidence", "-")],
            "CoinPilot AI Agent",
            id="confirm-is-green-null-confidence-dash",
        ),
        pytest.param(
            p.ai_decision_embed(ai_decision()),
            "AI Decision: REJECT",
            15548997,
            [("Symbol", "KRW-BTC"), ("Regime", "BEAR"), ("RSI", "33.5"), ("Confidence", "72")],
            "CoinPilot AI Agent",
            id="reject-is-red",
        ),
        pytest.param(
            p.ai_decision_embed(ai_decision(AiVerdict.SKIP)),
            "AI Decision: SKIP",
            9807270,
            [("Symbol", "KRW-BTC"), ("Regime", "BEAR"), ("RSI", "33.5"), ("Confidence", "72")],
            "CoinPilot AI Agent",
            id="skip-is-grey",
        ),
        pytest.param(
            p.risk_embed(risk_alert()),
            "⚠️ Risk Alert: COOLDOWN",
            15158332,
            [("🚨 Level", "CRITICAL"), ("📋 Type", "COOLDOWN")],
            "CoinPilot Risk Manager",
            id="critical-alert-is-red",
        ),
        pytest.param(
            p.risk_embed(risk_alert(AlertLevel.WARNING)),
            "⚠️ Risk Alert: COOLDOWN",
            16776960,
            [("🚨 Level", "WARNING"), ("📋 Type", "COOLDOWN")],
            "CoinPilot Risk Manager",
            id="warning-alert-is-yellow",
        ),
        pytest.param(
            p.daily_report_embed(daily_report()),
            "📅 CoinPilot Daily Report (2026-03-02)",
            3447003,
            [
                ("💰 Total PnL", "100 KRW"),
                ("📊 Trades", "5건"),
                ("🎯 Win Rate", "60.0%"),
                ("📉 MDD", "5.00%"),
                ("Period", "2026-03-01 22:00 ~ 2026-03-02 22:00 KST"),
            ],
            "CoinPilot v3.0",
            id="daily-report-is-blue",
        ),
    ],
)
def test_discord_embeds_follow_the_workflow_layouts(embed, title, colour, fields, footer) -> None:
    assert embed["title"] == title
    assert embed["color"] == colour
    assert [(f["name"], f["value"]) for f in embed["fields"]] == fields
    assert embed["footer"] == {"text": footer}
    assert embed["description"]
    assert all(f["value"] for f in embed["fields"])


def test_trade_and_ai_titles_are_emoji_free() -> None:
    titles = [p.trade_embed(buy_fill())["title"], p.ai_decision_embed(ai_decision())["title"]]
    assert all(title.isascii() for title in titles)


def test_embed_text_is_cut_to_discord_limits() -> None:
    embed = p.daily_report_embed(daily_report(summary="s" * 5000))
    assert len(embed["description"]) == 4096


def test_discord_message_never_pings() -> None:
    body = p.discord_message(p.trade_embed(buy_fill()))
    assert body["allowed_mentions"] == {"parse": []} and len(body["embeds"]) == 1
