"""The real collector against a local Upbit and a real PostgreSQL: backfill, faults, throttling."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from coinpilot.db import Database, MarketData
from coinpilot.errors import PermanentError, TransientError
from services.collector.backfill import backfill_all
from services.collector.upbit import MINUTE_CANDLES, RetryPolicy, UpbitClient
from tests.integration.collector.conftest import NOW, minutes
from tests.integration.collector.fake_upbit import FakeUpbit, Fault, ManualClock, Series

pytestmark = pytest.mark.postgres

LOOKBACK = minutes(3_000)  # 50 hours: from 2023-03-22 18:00:30, across the gap, 15 pages
GAP = (datetime(2023, 3, 24, 12, 40, tzinfo=NOW.tzinfo), datetime(2023, 3, 24, 14, 0, tzinfo=NOW.tzinfo))


def client(upbit: FakeUpbit, clock: ManualClock, attempts: int = 5) -> UpbitClient:
    return UpbitClient(upbit.url, clock=clock, timeout_seconds=0.25, retry=RetryPolicy(attempts, 0.05, 1.0))


def expected_rows(
    series: Series, start: datetime, now: datetime
) -> list[tuple[datetime, tuple[Decimal, ...]]]:
    """What a complete backfill must store: every closed candle of the file opened after ``start``."""
    lo, hi = start.timestamp(), (now - timedelta(minutes=1)).timestamp()
    return [
        (datetime.fromtimestamp(t, NOW.tzinfo), tuple(Decimal(x) for x in values))
        for t, values in zip(series.starts, series.values, strict=True)
        if lo < t <= hi
    ]


async def stored_rows(db: Database, symbol: str) -> list[tuple[datetime, tuple[Decimal, ...]]]:
    m = MarketData.__table__.c
    statement = (
        select(m.timestamp, m.open_price, m.high_price, m.low_price, m.close_price, m.volume)
        .where(m.symbol == symbol, m.interval == "1m")
        .order_by(m.timestamp)
    )
    async with db.session() as session:
        return [(row[0], tuple(row[1:])) for row in (await session.execute(statement)).all()]


def requests_seen(status: str) -> float:
    value = REGISTRY.get_sample_value(
        "coinpilot_upbit_request_seconds_count", {"endpoint": MINUTE_CANDLES, "status": status}
    )
    return value or 0.0


async def test_backfill_stores_every_closed_candle_once_through_429s_500s_and_a_timeout_and_keeps_the_gap(
    db: Database, upbit: FakeUpbit, clock: ManualClock, served: dict[str, Series]
) -> None:
    upbit.inject(Fault.RATE_LIMITED, Fault.RATE_LIMITED_RETRY_AFTER, Fault.SERVER_ERROR, Fault.SLOW, after=2)
    before_429 = requests_seen("429")
    upbit_client = client(upbit, clock)
    results = await backfill_all(upbit_client, db, ["KRW-BTC"], now=NOW, lookback=LOOKBACK)

    result = results["KRW-BTC"]
    assert result.error is None and result.start == NOW - LOOKBACK
    want = expected_rows(served["KRW-BTC"], NOW - LOOKBACK, NOW)
    assert await stored_rows(db, "KRW-BTC") == want  # every value exact, no duplicates, nothing extra
    assert result.written == len(want) == 2_919 and result.newest == want[-1][0]
    assert not [t for t, _ in want if GAP[0] <= t < GAP[1]]  # the gap stays a gap
    assert upbit.statuses()[2:6] == [429, 429, 500, 200]  # the 200 came too late: the client had given up
    assert 1.0 in clock.sleeps  # Retry-After: 1 honoured
    assert requests_seen("429") - before_429 == 2 and requests_seen("timeout") >= 1

    again = await backfill_all(upbit_client, db, ["KRW-BTC"], now=NOW, lookback=LOOKBACK)
    assert again["KRW-BTC"].written == 0
    assert await stored_rows(db, "KRW-BTC") == want
    await upbit_client.close()


async def test_a_later_backfill_fetches_only_what_came_after_the_newest_stored_candle(
    db: Database, upbit: FakeUpbit, clock: ManualClock, served: dict[str, Series]
) -> None:
    upbit_client = client(upbit, clock)
    await backfill_all(upbit_client, db, ["KRW-BTC"], now=NOW, lookback=LOOKBACK)
    later = NOW + minutes(90)
    clock.set(later)
    before = len(upbit.requests)
    result = (await backfill_all(upbit_client, db, ["KRW-BTC"], now=later, lookback=LOOKBACK))["KRW-BTC"]
    assert (result.written, len(upbit.requests) - before) == (90, 1)
    assert await stored_rows(db, "KRW-BTC") == expected_rows(served["KRW-BTC"], NOW - LOOKBACK, later)
    await upbit_client.close()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(Fault.MALFORMED_JSON, "malformed Upbit payload: not JSON", id="malformed-json"),
        pytest.param(Fault.MALFORMED_CANDLE, "malformed Upbit candle at", id="a-candle-with-high-below-low"),
    ],
)
async def test_a_malformed_page_fails_that_symbol_with_a_permanent_error_and_stores_nothing_from_it(
    db: Database, upbit: FakeUpbit, clock: ManualClock, served: dict[str, Series], fault: Fault, reason: str
) -> None:
    upbit.inject(fault, market="KRW-BTC", after=2)
    upbit_client = client(upbit, clock)
    results = await backfill_all(upbit_client, db, ["KRW-BTC", "KRW-ETH"], now=NOW, lookback=LOOKBACK)

    assert results["KRW-BTC"].error is not None and results["KRW-BTC"].error.startswith(
        f"PermanentError: {reason}"
    )
    assert upbit.statuses("KRW-BTC") == [200, 200, 200]  # not retried
    btc_want = expected_rows(served["KRW-BTC"], NOW - LOOKBACK, NOW)
    assert await stored_rows(db, "KRW-BTC") == btc_want[-399:]  # two good pages (the newest is forming)
    assert results["KRW-ETH"].error is None  # the other symbol went on
    assert await stored_rows(db, "KRW-ETH") == expected_rows(served["KRW-ETH"], NOW - LOOKBACK, NOW)

    rerun = await backfill_all(upbit_client, db, ["KRW-BTC"], now=NOW, lookback=LOOKBACK)
    assert rerun["KRW-BTC"].error is None
    assert await stored_rows(db, "KRW-BTC") == btc_want
    await upbit_client.close()


async def test_retries_give_up_after_max_attempts_with_a_transient_error(
    upbit: FakeUpbit, clock: ManualClock
) -> None:
    upbit.inject(Fault.SERVER_ERROR, Fault.RATE_LIMITED, Fault.SERVER_ERROR)
    upbit_client = client(upbit, clock, attempts=3)
    with pytest.raises(TransientError, match="answered 500"):
        await upbit_client.minute_candles("KRW-BTC", 3)
    assert upbit.statuses() == [500, 429, 500]
    assert len([s for s in clock.sleeps if s >= 0.025]) >= 2  # two backoffs between three attempts
    await upbit_client.close()


async def test_a_4xx_other_than_429_is_a_permanent_error(upbit: FakeUpbit, clock: ManualClock) -> None:
    upbit_client = client(upbit, clock)
    with pytest.raises(PermanentError, match="answered 400"):
        await upbit_client.minute_candles("KRW-NOPE", 3)
    assert upbit.statuses() == [400]
    await upbit_client.close()


async def test_the_client_never_exceeds_the_budget_remaining_req_announces(
    upbit: FakeUpbit, clock: ManualClock
) -> None:
    upbit.per_second = 3  # Upbit says sec=0 after the third request of a second, and 429s a fourth
    upbit_client = client(upbit, clock)
    for i in range(12):
        await upbit_client.minute_candles("KRW-BTC", 2, to=NOW - minutes(i))
    assert set(upbit.statuses()) == {200}
    per_second: dict[int, int] = {}
    for r in upbit.requests:
        per_second[int(r.at)] = per_second.get(int(r.at), 0) + 1
    assert max(per_second.values()) == 3
    await upbit_client.close()


async def test_requests_are_spaced_to_at_most_8_per_second(upbit: FakeUpbit, clock: ManualClock) -> None:
    upbit_client = client(upbit, clock)
    for i in range(30):
        await upbit_client.minute_candles("KRW-ETH", 1, to=NOW - minutes(i))
    starts = [r.at for r in upbit.requests]
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) == 8
    await upbit_client.close()
