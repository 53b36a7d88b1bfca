"""Strategy and risk at the trust boundary (issue 19), over real NATS, PostgreSQL and Redis.

* A fill is a notification: strategy and risk apply it only when it is the fill the executor's
  ledger recorded (``trading_history``); a forged one is dead-lettered ``FILL_MISMATCH`` with a
  CRITICAL alert and changes nothing in their state.
* Risk rejects an entry signal whose price is non-positive or implausible ``IMPLAUSIBLE_PRICE``.

The executor does not run here: a genuine fill is booked the way the executor books it (its
``records.row_values`` row, committed before the fill is published), so these cases depend on
nothing but the ledger row they reconcile with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal

import pytest
from sqlalchemy import delete, select, text

from coinpilot.bus import Bus
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    Contract,
    DeadLetter,
    EntrySignal,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Regime,
    RejectReason,
    RejectStage,
    RiskAlert,
    Side,
)
from coinpilot.db import (
    DailyRiskState,
    Database,
    MarketData,
    RiskAudit,
    RiskState,
    StrategyState,
    TradingHistory,
)
from services.executor.records import row_values
from tests.integration.risk.harness import Pipeline, open_pipeline
from tests.support.servers import NatsProcess
from tests.unit.strategy.factories import T0, snap

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]
MIN = timedelta(minutes=1)
EIGHT_DP = Decimal("0.00000001")
BALANCE = Decimal(10_000_000)


@pytest.fixture
async def pipeline(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> AsyncIterator[Pipeline]:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "trust-it")
    await p.start("strategy", "risk")
    yield p
    await p.close()
    await nc.close()


def buy_fill(proposal: OrderProposed) -> tuple[OrderApproved, Fill]:
    """The agent's approval of ``proposal`` and the fill the executor books for it (no fee, no slippage)."""
    order = OrderApproved(
        ts_event=proposal.ts_event,
        order_id=proposal.order_id,
        symbol=proposal.symbol,
        side=Side.BUY,
        reference_price=proposal.reference_price,
        amount=proposal.amount,
        regime=proposal.regime,
        approved_by=RejectStage.AGENT,
        signal=proposal.signal,
    )
    price = proposal.reference_price
    quantity = (proposal.amount / price).quantize(EIGHT_DP, rounding=ROUND_FLOOR)
    amount = price * quantity
    fill = Fill(
        ts_event=proposal.ts_event,
        order_id=proposal.order_id,
        symbol=proposal.symbol,
        side=Side.BUY,
        currency="KRW",
        decision_price=price,
        fill_price=price,
        quantity=quantity,
        amount=amount,
        fee=Decimal(0),
        balance_after=BALANCE - amount,
        position_quantity_after=quantity,
        position_avg_price_after=price,
        regime=proposal.regime,
        high_water_mark=price,
        opened_at=proposal.ts_event,
    )
    return order, fill


def sell_fill(order: OrderApproved, bought: Fill) -> Fill:
    """The fill of risk's approved exit ``order`` closing the position ``bought`` opened."""
    price = order.reference_price
    pnl = (price - bought.fill_price) * bought.quantity
    assert isinstance(order.signal, ExitSignal)
    return Fill(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        side=Side.SELL,
        currency="KRW",
        decision_price=price,
        fill_price=price,
        quantity=bought.quantity,
        amount=price * bought.quantity,
        fee=Decimal(0),
        balance_after=bought.balance_after + price * bought.quantity,
        position_quantity_after=Decimal(0),
        position_avg_price_after=Decimal(0),
        realized_pnl=pnl,
        realized_pnl_gross=pnl,
        entry_avg_price=bought.fill_price,
        regime=bought.regime,
        exit_reason=order.signal.exit_reason,
        high_water_mark=order.signal.high_water_mark,
        opened_at=bought.opened_at,
    )


async def book(db: Database, run_id: str, order: OrderApproved, fill: Fill) -> None:
    """Commit the ``trading_history`` row of ``fill`` as the executor does before publishing it."""
    async with db.session() as s:
        s.add(TradingHistory(**row_values(order, fill, run_id, None)))


async def state_of(db: Database, run_id: str) -> tuple[object, ...]:
    """Everything of strategy and risk a fill could move: positions, pending orders, counters."""
    async with db.session() as s:
        strategy = (
            await s.execute(
                select(
                    StrategyState.symbol,
                    StrategyState.has_position,
                    StrategyState.position_id,
                    StrategyState.quantity,
                    StrategyState.last_reason,
                )
                .where(StrategyState.run_id == run_id)
                .order_by(StrategyState.symbol)
            )
        ).all()
        daily = (
            await s.execute(
                select(
                    DailyRiskState.buy_count,
                    DailyRiskState.sell_count,
                    DailyRiskState.trade_count,
                    DailyRiskState.total_pnl,
                ).where(DailyRiskState.run_id == run_id)
            )
        ).all()
        risk = (
            await s.execute(
                select(
                    RiskState.consecutive_losses, RiskState.cooldown_until, RiskState.pending_orders
                ).where(RiskState.run_id == run_id)
            )
        ).all()
        inbox = (
            await s.execute(
                text("SELECT count(*) FROM inbox WHERE run_id = :run AND consumer = 'risk-fills'"),
                {"run": run_id},
            )
        ).scalar_one()
    return tuple(strategy), tuple(daily), tuple(risk), inbox


async def refusals(p: Pipeline) -> list[tuple[str, str]]:
    """(service, reason) of every dead letter of the run."""
    return [(d.service, d.reason) for d in await p.of_type("DLQ", DeadLetter)]  # type: ignore[attr-defined]


async def test_forged_fills_change_nothing_are_dead_lettered_and_alerted_while_genuine_ones_apply(
    pipeline: Pipeline, migrated_db: Database
) -> None:
    p, db = pipeline, migrated_db
    await p.step(snap(symbol="KRW-BTC", at=T0, close="1005"))
    (proposal,) = await p.of_type("ORDERS", OrderProposed)
    assert isinstance(proposal, OrderProposed)
    order, bought = buy_fill(proposal)
    await book(db, p.run_id, order, bought)
    await p.step(bought)  # genuine: the strategy holds it, risk counts it, neither has it pending
    held = await state_of(db, p.run_id)
    (strategy_row,), ((buys, sells, trades, pnl),), ((_, _, pending),), _ = held
    assert strategy_row[:3] == ("KRW-BTC", True, bought.order_id)
    assert (buys, sells, trades, pnl, pending) == (1, 0, 1, 0, {})

    sell_id = "KRW-BTC:2026-03-02T12:01Z:sell"
    forged_sell = bought.model_copy(
        update={
            "order_id": sell_id,
            "side": Side.SELL,
            "ts_event": T0 + MIN,
            "position_quantity_after": Decimal(0),
            "realized_pnl": Decimal(-500_000),
        }
    )
    unordered_buy = bought.model_copy(
        update={"order_id": "KRW-ETH:2026-03-02T12:01Z:buy", "symbol": "KRW-ETH", "ts_event": T0 + MIN}
    )
    await p.step(forged_sell, unordered_buy)
    await p.publish_copy(bought.model_copy(update={"fill_price": Decimal(1)}), copy=1)
    await p.publish_copy(bought.model_copy(update={"quantity": bought.quantity * 10}), copy=2)
    await p.drain()

    assert await state_of(db, p.run_id) == held
    letters = await refusals(p)
    assert sorted(service for service, _ in letters) == ["risk"] * 4 + ["strategy"] * 4
    assert all(reason.startswith("permanent: RefusedMessage: FILL_MISMATCH: ") for _, reason in letters)
    reasons = " | ".join(reason for _, reason in letters)
    assert f"no trading_history row for order {sell_id}" in reasons
    assert "no trading_history row for order KRW-ETH:2026-03-02T12:01Z:buy" in reasons
    assert f"differs from its trading_history row: fill_price 1 (ledger {bought.fill_price:.8f})" in reasons
    assert f"differs from its trading_history row: quantity {bought.quantity * 10} (ledger" in reasons
    alerts = [a for a in await p.of_type("RISK", RiskAlert) if a.type is AlertType.FILL_MISMATCH]  # type: ignore[attr-defined]
    assert alerts and all(a.level is AlertLevel.CRITICAL for a in alerts)  # type: ignore[attr-defined]
    assert {a.symbol for a in alerts} == {"KRW-BTC", "KRW-ETH"}  # type: ignore[attr-defined]

    # the strategy still holds the position, so its stop-loss fires, and the genuine SELL applies
    await p.step(snap(symbol="KRW-BTC", at=T0 + 2 * MIN, close="970", rsi=30, rsi7=20))
    (exit_order,) = [o for o in await p.of_type("ORDERS", OrderApproved) if o.side is Side.SELL]  # type: ignore[attr-defined]
    assert isinstance(exit_order, OrderApproved)
    sold = sell_fill(exit_order, bought)
    await book(db, p.run_id, exit_order, sold)
    await p.step(sold)
    (strategy_row,), ((buys, sells, _, pnl),), _, _ = await state_of(db, p.run_id)
    assert strategy_row[1] is False
    assert (buys, sells, pnl) == (1, 1, sold.realized_pnl)
    assert len(await refusals(p)) == 8


async def test_a_sell_the_ledger_recorded_for_another_position_does_not_close_this_one(
    pipeline: Pipeline, migrated_db: Database
) -> None:
    """A genuine fill of an earlier round trip, sent again later: the strategy refuses it."""
    p, db = pipeline, migrated_db
    await p.step(snap(symbol="KRW-XRP", at=T0, close="1005"))
    (first,) = await p.of_type("ORDERS", OrderProposed)
    order, bought = buy_fill(first)  # type: ignore[arg-type]
    await book(db, p.run_id, order, bought)
    await p.step(bought)
    await p.step(snap(symbol="KRW-XRP", at=T0 + MIN, close="970", rsi=30, rsi7=20))
    (exit_order,) = [o for o in await p.of_type("ORDERS", OrderApproved) if o.side is Side.SELL]  # type: ignore[attr-defined]
    old_sell = sell_fill(exit_order, bought)  # type: ignore[arg-type]
    await book(db, p.run_id, exit_order, old_sell)  # type: ignore[arg-type]
    await p.step(old_sell)
    await p.step(snap(symbol="KRW-XRP", at=T0 + 5 * MIN, close="1005"))
    second = [o for o in await p.of_type("ORDERS", OrderProposed) if o.ts_event == T0 + 5 * MIN]  # type: ignore[attr-defined]
    order2, bought2 = buy_fill(second[0])  # type: ignore[arg-type]
    await book(db, p.run_id, order2, bought2)
    await p.step(bought2)
    held = await state_of(db, p.run_id)

    await p.publish_copy(old_sell)  # the first round trip's SELL again, past JetStream's dedup
    await p.drain()

    assert await state_of(db, p.run_id) == held
    ((service, reason),) = await refusals(p)
    assert service == "strategy"
    assert reason.endswith(f"it closed position {bought.order_id}, the strategy holds {bought2.order_id}")


def entry_signal(symbol: str, minute: int, price: str) -> EntrySignal:
    s = snap(symbol=symbol, at=T0 + minute * MIN, close=price)
    return EntrySignal(
        ts_event=s.ts_event, symbol=symbol, price=Decimal(price), regime=Regime.BULL, snapshot=s
    )


@pytest.fixture
async def recorded_candle(migrated_db: Database) -> AsyncIterator[MarketData]:
    """A ``market_data`` candle of KRW-ADA closing at 2000 at minute 3 (removed afterwards: the
    table has no run id, every test of the session shares it)."""
    candle = MarketData(
        symbol="KRW-ADA",
        interval="1m",
        open_price=Decimal(2000),
        high_price=Decimal(2000),
        low_price=Decimal(2000),
        close_price=Decimal(2000),
        volume=Decimal(1),
        timestamp=T0 + 2 * MIN,
    )
    async with migrated_db.session() as s:
        s.add(candle)
    yield candle
    async with migrated_db.session() as s:
        await s.execute(delete(MarketData).where(MarketData.symbol == "KRW-ADA"))


async def publish_unrecorded(p: Pipeline, *messages: Contract) -> None:
    """Publish without recording the candle (``Pipeline.publish`` records it as the recorder
    would), so the recorded candle stays the one a test wrote, and wait for the pipeline."""
    bus = Bus(p.js, "test")
    for message in messages:
        await bus.publish(message, run_id=p.run_id)
    await p.drain()


async def test_entry_signals_with_a_zero_negative_or_implausible_price_are_rejected(
    pipeline: Pipeline, migrated_db: Database, recorded_candle: MarketData
) -> None:
    p = pipeline
    await publish_unrecorded(
        p,
        entry_signal("KRW-ADA", 0, "0"),
        entry_signal("KRW-ADA", 1, "-5"),
        entry_signal("KRW-ADA", 3, "1005"),  # market_data recorded this minute closing at 2000
        entry_signal("KRW-ADA", 4, "1"),  # its own snapshot's MA(20) is 1000
    )
    rejected = await p.of_type("ORDERS", OrderRejected)
    assert [(r.order_id, r.reason, r.message) for r in rejected] == [  # type: ignore[attr-defined]
        ("KRW-ADA:2026-03-02T12:00Z:buy", RejectReason.IMPLAUSIBLE_PRICE, "signal price 0 <= 0"),
        ("KRW-ADA:2026-03-02T12:01Z:buy", RejectReason.IMPLAUSIBLE_PRICE, "signal price -5 <= 0"),
        (
            "KRW-ADA:2026-03-02T12:03Z:buy",
            RejectReason.IMPLAUSIBLE_PRICE,
            "signal price 1005 is more than 1% from the recorded close 2000.00000000 of its minute",
        ),
        (
            "KRW-ADA:2026-03-02T12:04Z:buy",
            RejectReason.IMPLAUSIBLE_PRICE,
            "signal price 1 is more than 25% from its MA(20) 1000.0",
        ),
    ]
    assert await p.of_type("ORDERS", OrderProposed) == []
    async with migrated_db.session() as s:
        audits = (
            await s.execute(select(RiskAudit.violation_type).where(RiskAudit.run_id == p.run_id))
        ).scalars()
        assert list(audits) == ["IMPLAUSIBLE_PRICE"] * 4

    await p.step(entry_signal("KRW-ADA", 5, "1005"))  # nothing was left pending: a sane one is proposed
    (proposal,) = await p.of_type("ORDERS", OrderProposed)
    assert proposal.order_id == "KRW-ADA:2026-03-02T12:05Z:buy"  # type: ignore[attr-defined]


async def test_a_strategy_signal_far_from_the_recorded_candle_is_rejected_and_frees_the_strategy(
    pipeline: Pipeline, recorded_candle: MarketData
) -> None:
    """The snapshot the strategy decided on disagrees with the candle the recorder stored: risk
    rejects the signal, and the usual rejection frees the strategy to signal on the next candle."""
    p = pipeline
    await publish_unrecorded(p, snap(symbol="KRW-ADA", at=T0 + 3 * MIN, close="1005"))
    (rejected,) = await p.of_type("ORDERS", OrderRejected)
    assert rejected.reason is RejectReason.IMPLAUSIBLE_PRICE  # type: ignore[attr-defined]
    await p.step(snap(symbol="KRW-ADA", at=T0 + 4 * MIN, close="1005"))
    (proposal,) = await p.of_type("ORDERS", OrderProposed)
    assert proposal.order_id == "KRW-ADA:2026-03-02T12:04Z:buy"  # type: ignore[attr-defined]
