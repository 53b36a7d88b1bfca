"""Permanent failures over real NATS and a real PostgreSQL: dead-lettered on the first delivery
with the reason, never retried; a refusal's alerts are published first; the next message runs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal

import pytest
from sqlalchemy import text

from coinpilot.bus import Bus, Consumer, Delivery, parser_for
from coinpilot.contracts import AlertType, Contract, DeadLetter, MinuteCandle, RiskAlert
from coinpilot.db import Database
from coinpilot.errors import RefusedMessage
from coinpilot.runtime.pull import PullLoop
from tests.support.messages import candle
from tests.support.servers import wait_for

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

_names = itertools.count()


@pytest.fixture
async def db(pg_url: str):
    database = Database(pg_url)
    async with database.transaction() as tx:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS ladder_probe (symbol text, minute int, amount numeric(8, 2), "
            "label varchar(4), PRIMARY KEY (symbol, minute))"
        )
    yield database
    await database.dispose()


def fresh(prefix: str) -> tuple[str, str]:
    n = next(_names)
    return f"KRW-PM{prefix.upper()}{n}", f"permanent{prefix}{n}"


async def letters(js, service: str, n: int) -> list[tuple[int, DeadLetter]]:
    """The first ``n`` dead letters of ``service`` with their DLQ sequences."""
    sub = await js.subscribe(f"dlq.{service}", stream="DLQ", ordered_consumer=True)
    try:
        msgs = [await sub.next_msg(timeout=5) for _ in range(n)]
    finally:
        await sub.unsubscribe()
    return [(m.metadata.sequence.stream, DeadLetter.from_json(m.data)) for m in msgs]


async def stored(db: Database, symbol: str) -> list[tuple[int, Decimal]]:
    async with db.transaction() as tx:
        rows = await tx.fetch(
            "SELECT minute, amount FROM ladder_probe WHERE symbol = $1 ORDER BY minute", symbol
        )
    return [(r["minute"], r["amount"]) for r in rows]


async def run(nc, js, bus: Bus, consumer: Consumer, until) -> None:  # type: ignore[no-untyped-def]
    loop = PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=5, ack_wait=30.0)
    await loop.start()
    try:
        await wait_for(until, timeout=20)
    finally:
        await loop.stop()


async def test_a_numeric_overflow_is_dead_lettered_on_its_first_delivery(nc, js, db) -> None:
    symbol, service = fresh("a")
    bus = Bus(js, service)
    attempts: list[tuple[int, int]] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        attempts.append((d.message.ts_open.minute, d.deliveries))
        async with db.transaction() as tx:  # the driver's hot path
            await tx.execute(
                "INSERT INTO ladder_probe (symbol, minute, amount) VALUES ($1, $2, $3)",
                d.message.symbol,
                d.message.ts_open.minute,
                d.message.close,
            )
        return []

    await bus.publish(candle(0, symbol=symbol, close="100000000"), run_id="live")  # > numeric(8, 2)
    await bus.publish(candle(1, symbol=symbol, close="123.45"), run_id="live")
    consumer = Consumer(f"candles.1m.{symbol}", f"p-{symbol}", handle, parser_for(MinuteCandle))
    await run(nc, js, bus, consumer, lambda: len(attempts) == 2)

    assert attempts == [(0, 1), (1, 1)], "tried once, never retried"
    [(_, letter)] = await letters(js, service, 1)
    assert letter.deliveries == 1
    assert letter.reason.startswith("permanent: PermanentError: database refused the data: SQLSTATE 22003")
    assert letter.stream == "CANDLES" and letter.stream_sequence is not None
    assert await stored(db, symbol) == [(1, Decimal("123.45"))]


async def test_a_value_too_long_for_its_column_through_the_orm_session_is_dead_lettered_at_once(
    nc, js, db
) -> None:
    symbol, service = fresh("b")
    bus = Bus(js, service)
    attempts: list[int] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        attempts.append(d.deliveries)
        async with db.session() as session:
            await session.execute(
                text("INSERT INTO ladder_probe (symbol, minute, label) VALUES (:s, :m, :label)"),
                {"s": d.message.symbol, "m": d.message.ts_open.minute, "label": "x" * int(d.message.volume)},
            )
        return []

    await bus.publish(candle(0, symbol=symbol, volume="9"), run_id="live")  # 9 chars > varchar(4)
    await bus.publish(candle(1, symbol=symbol, volume="2"), run_id="live")
    consumer = Consumer(f"candles.1m.{symbol}", f"p-{symbol}", handle, parser_for(MinuteCandle))
    await run(nc, js, bus, consumer, lambda: len(attempts) == 2)

    assert attempts == [1, 1]
    [(_, letter)] = await letters(js, service, 1)
    assert "SQLSTATE 22001" in letter.reason and letter.deliveries == 1
    assert [minute for minute, _ in await stored(db, symbol)] == [1]


async def test_a_refused_message_publishes_its_alerts_then_is_dead_lettered_with_its_rule(nc, js) -> None:
    symbol, service = fresh("c")
    bus = Bus(js, service)
    attempts: list[int] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        attempts.append(d.message.ts_open.minute)
        if d.message.close <= 0:
            alert = RiskAlert(
                ts_event=d.message.ts_event,
                type=AlertType.CANDLE_REJECTED,
                level="WARNING",
                message=f"{symbol}: non-positive price",
                symbol=symbol,
            )
            raise RefusedMessage("PRICE_POSITIVE", "close is not positive", alerts=(alert,))
        return []

    await bus.publish(candle(0, symbol=symbol, close="0"), run_id="live")
    await bus.publish(candle(1, symbol=symbol), run_id="live")
    consumer = Consumer(f"candles.1m.{symbol}", f"p-{symbol}", handle, parser_for(MinuteCandle))
    await run(nc, js, bus, consumer, lambda: len(attempts) == 2)

    assert attempts == [0, 1]
    [(_, letter)] = await letters(js, service, 1)
    assert letter.reason == "permanent: RefusedMessage: PRICE_POSITIVE: close is not positive"
    sub = await js.subscribe("risk.alerts", stream="RISK", ordered_consumer=True)
    try:
        while True:  # other tests publish alerts too: find ours
            alert = RiskAlert.from_json((await sub.next_msg(timeout=5)).data)
            if alert.symbol == symbol:
                break
    finally:
        await sub.unsubscribe()
    assert alert.type == AlertType.CANDLE_REJECTED
