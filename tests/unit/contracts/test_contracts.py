"""Every message type round-trips, knows its subject and builds a deterministic id."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import jsonschema
import pytest

from coinpilot import proto
from coinpilot.contracts import (
    ALL_CONTRACTS,
    AiDecision,
    AiVerdict,
    AlertLevel,
    AlertType,
    Contract,
    DailyReport,
    DeadLetter,
    EntryReason,
    EntrySignal,
    ExitReason,
    ExitSignal,
    Fill,
    HaltCommand,
    HourlyCandle,
    IndicatorSnapshot,
    MinuteCandle,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Regime,
    RegimeUpdate,
    RejectReason,
    RejectStage,
    RiskAlert,
    Side,
    parse_subject,
    subject_for,
)
from coinpilot.errors import ContractError
from tests.support.messages import T0, candle

D = Decimal


def examples() -> list[Contract]:
    c = candle(0, close="95050000", volume="1.23456789")
    snap = IndicatorSnapshot(
        symbol="KRW-BTC",
        ts_event=c.ts_event,
        candle=c,
        regime=Regime.BULL,
        rsi_14=40.5,
        recent_vol_ratios=(0.5, float("inf")),
        bars_seen=200,
    )
    entry = EntrySignal(
        symbol="KRW-BTC", ts_event=c.ts_event, price=c.close, regime=Regime.BULL, snapshot=snap
    )
    exit_ = ExitSignal(
        symbol="KRW-BTC",
        ts_event=c.ts_event,
        price=c.close,
        exit_reason=ExitReason.TAKE_PROFIT,
        entry_regime=Regime.BULL,
        regime=Regime.BULL,
        avg_price=D("90000000"),
        quantity=D("0.01"),
        high_water_mark=D("95050000"),
        opened_at=T0,
        position_id="KRW-BTC:2025-12-31T00:00Z:buy",
        snapshot=snap,
    )
    proposed = OrderProposed(
        order_id="KRW-BTC:2026-01-01T00:01Z:buy",
        symbol="KRW-BTC",
        ts_event=c.ts_event,
        reference_price=c.close,
        amount=D("2000000"),
        regime=Regime.BULL,
        vol_multiplier=D("1"),
        signal=entry,
    )
    hour = HourlyCandle(
        symbol="KRW-BTC",
        ts_open=T0,
        ts_event=T0 + timedelta(hours=1),
        open=D(1),
        high=D(2),
        low=D(1),
        close=D(2),
        volume=D(60),
        minute_count=60,
    )
    return [
        c,
        hour,
        snap,
        RegimeUpdate(
            symbol="KRW-BTC",
            ts_event=hour.ts_event,
            regime=Regime.SIDEWAYS,
            ma50=1.0,
            ma200=1.0,
            diff_pct=0.0,
            hourly_count=200,
            as_of=T0,
        ),
        entry,
        exit_,
        proposed,
        OrderApproved(
            order_id=proposed.order_id,
            symbol="KRW-BTC",
            ts_event=c.ts_event,
            side=Side.SELL,
            reference_price=c.close,
            quantity=D("0.01"),
            regime=Regime.BULL,
            approved_by=RejectStage.RISK,
            signal=exit_,
        ),
        OrderRejected(
            order_id=proposed.order_id,
            symbol="KRW-BTC",
            ts_event=c.ts_event,
            side=Side.BUY,
            stage=RejectStage.RISK,
            reason=RejectReason.COOLDOWN_ACTIVE,
            message="cooling down",
        ),
        Fill(
            order_id=proposed.order_id,
            symbol="KRW-BTC",
            ts_event=c.ts_event,
            side=Side.BUY,
            currency="KRW",
            decision_price=c.close,
            fill_price=c.close,
            quantity=D("0.02104155"),
            amount=D("1999999.7"),
            fee=D("999.99985"),
            balance_after=D("7999000.30015"),
            position_quantity_after=D("0.02104155"),
            position_avg_price_after=c.close,
            regime=Regime.BULL,
            high_water_mark=c.close,
            opened_at=c.ts_event,
        ),
        AiDecision(
            order_id=proposed.order_id,
            symbol="KRW-BTC",
            ts_event=c.ts_event,
            decision=AiVerdict.REJECT,
            reason_code=RejectReason.AI_TIMEOUT,
            regime=Regime.BULL,
            model_used="rules:v1",
        ),
        RiskAlert(
            ts_event=c.ts_event, type=AlertType.COOLDOWN, level=AlertLevel.CRITICAL, message="3 losses"
        ),
        DailyReport(
            ts_event=datetime(2026, 1, 1, 13, tzinfo=UTC),
            report_date=date(2026, 1, 1),
            period_start=datetime(2025, 12, 31, 13, tzinfo=UTC),
            period_end=datetime(2026, 1, 1, 13, tzinfo=UTC),
            total_pnl=D("100"),
            trades=5,
            sell_trades=3,
            win_rate=0.6,
            mdd_pct=5.0,
        ),
        HaltCommand(ts_event=c.ts_event, reason="exchange maintenance", requested_by="ops"),
        DeadLetter(
            ts_event=c.ts_event,
            service="risk",
            subject_original="signals.entry.KRW-BTC",
            reason="contract: bad",
            deliveries=1,
            body="{not json",
        ),
    ]


def test_there_is_an_example_of_every_contract() -> None:
    assert {type(m) for m in examples()} == set(ALL_CONTRACTS)


@pytest.mark.parametrize("message", examples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_json(message: Contract) -> None:
    wire = message.to_json()
    again = type(message).from_json(wire)
    assert again == message
    assert again.to_json() == wire


@pytest.mark.parametrize("message", examples(), ids=lambda m: type(m).__name__)
def test_every_message_validates_against_its_generated_json_schema(message: Contract) -> None:
    schema = proto.json_schema(type(message))
    jsonschema.validate(json.loads(message.to_json()), schema)


@pytest.mark.parametrize("message", examples(), ids=lambda m: type(m).__name__)
def test_every_message_has_a_concrete_subject_and_a_stable_id(message: Contract) -> None:
    assert "{" not in message.subject() and "*" not in message.subject()
    rebuilt = type(message).from_json(message.to_json())
    assert rebuilt.msg_id() == message.msg_id()
    assert message.schema_version == 1


def test_unknown_fields_are_a_contract_error_naming_the_field() -> None:
    wire = json.loads(candle().to_json())
    wire["clsoe"] = "1"
    with pytest.raises(ContractError, match="clsoe"):
        MinuteCandle.from_json(json.dumps(wire))


def test_an_open_candle_is_not_a_valid_minute_candle() -> None:
    wire = json.loads(candle().to_json())
    wire["ts_event"] = wire["ts_open"]
    with pytest.raises(ContractError, match="closed candle"):
        MinuteCandle.from_json(json.dumps(wire))


def test_naive_times_are_rejected_and_aware_times_become_utc() -> None:
    wire = json.loads(candle().to_json())
    with pytest.raises(ContractError):
        MinuteCandle.from_json(
            json.dumps({**wire, "ts_open": "2026-01-01T00:00:00", "ts_event": "2026-01-01T00:01:00"})
        )
    kst = MinuteCandle.from_json(
        json.dumps({**wire, "ts_open": "2026-01-01T09:00:00+09:00", "ts_event": "2026-01-01T09:01:00+09:00"})
    )
    assert kst.ts_open == T0 and kst.ts_open.utcoffset() == timedelta(0)


def test_money_is_exact_on_the_wire() -> None:
    c = candle(close="95050000.12345678", volume="0.00000001")
    assert b'"close":"95050000.12345678"' in c.to_json()
    assert MinuteCandle.from_json(c.to_json()).volume == Decimal("0.00000001")


def test_candle_ids_are_per_minute_and_per_symbol() -> None:
    assert candle(0).msg_id() == "candle:1m:KRW-BTC:2026-01-01T00:00Z"
    assert candle(0, symbol="KRW-ETH").msg_id() != candle(0).msg_id()
    assert candle(1).msg_id() != candle(0).msg_id()


@pytest.mark.parametrize(
    ("subject", "prefix", "symbol"),
    [
        ("candles.1m.KRW-BTC", "candles.1m", "KRW-BTC"),
        ("orders.proposed.USDT-ETH", "orders.proposed", "USDT-ETH"),
        ("fills.KRW-DOGE", "fills", "KRW-DOGE"),
        ("risk.alerts", "risk.alerts", None),
        ("dlq.risk", "dlq", None),
    ],
)
def test_subjects_parse_into_prefix_and_symbol(subject: str, prefix: str, symbol: str | None) -> None:
    parsed = parse_subject(subject)
    assert (parsed.prefix, parsed.symbol) == (prefix, symbol)
    if symbol:
        assert subject_for(prefix, symbol) == subject


@pytest.mark.parametrize("subject", ["candles.1m.btc", "nope.KRW-BTC", "fills.KRW-BTC.extra"])
def test_bad_subjects_are_contract_errors(subject: str) -> None:
    with pytest.raises(ContractError):
        parse_subject(subject)


def test_subscription_patterns_cover_every_symbol() -> None:
    assert MinuteCandle.subject_pattern() == "candles.1m.*"
    assert DeadLetter.subject_pattern() == "dlq.*"
    assert EntryReason.ENTRY_OK == "ENTRY_OK"


def test_proto_directory_matches_the_models() -> None:
    """The drift test: regenerate with `make proto` when this fails."""
    assert proto.stale_files() == []
