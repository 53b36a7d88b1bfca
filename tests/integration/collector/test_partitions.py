"""The collector as a partitioned stage (``COINPILOT_PARTITIONS`` > 1) over a real NATS JetStream,
its KV leases included, and PostgreSQL: replicas split the symbols, a replica killed with SIGKILL
has its symbols taken over and the minutes nobody polled meanwhile published, a joining replica
takes its share; every minute of every symbol is published once and recorded once.

A replica is a ``ServiceHost`` of its own in this process (its own NATS connection and member id,
the real lease bucket ``partitions-collector``, the real partition durables) or, to be killed, a
``coinpilot run`` process (``replica_process.py``). Their pollers and the fake Upbit share a
``ScaledClock`` (a minute passes in two seconds), and each replica asks an Upbit fake of its own
(the same candles on the same clock), so the requests per symbol at each fake say which replica
polled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from sqlalchemy import select

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.bus.membership import LEASES, bucket_name
from coinpilot.bus.partitions import symbols_of
from coinpilot.clock import floor_minute
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, MarketData
from coinpilot.runtime import Runtime, ServiceDefinition
from coinpilot.settings import CommonSettings
from services.collector import state
from services.collector.app import build
from services.collector.backfill import take_symbol
from services.collector.poller import poll_once
from services.collector.settings import CollectorSettings
from services.collector.upbit import RetryPolicy, UpbitClient
from tests.integration.collector.conftest import BTC_2023, ETH_2023, NOW, minutes
from tests.integration.collector.fake_upbit import FakeUpbit, ManualClock, ScaledClock, Series, load_series
from tests.support.servers import NatsProcess, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

FILES = {
    "KRW-BTC": BTC_2023,
    "KRW-ETH": ETH_2023,
    "KRW-SOL": "SOL_USDT-1m-20230316-20230501.csv.gz",
    "KRW-DOGE": "DOGE_USDT-1m-20230316-20230501.csv.gz",
}
SYMBOLS = tuple(FILES)
PARTITIONS = 5  # the four symbols fall in partitions 1, 4, 0 and 2; partition 3 is empty
SPEED = 30.0  # simulated seconds per real second: a minute in 2 s
MINUTE0 = NOW.replace(second=0)
SEEDED = (MINUTE0 - minutes(33), MINUTE0 - minutes(3))  # market_data before the first replica starts
LEASE_SECONDS, HEARTBEAT_SECONDS = 3.0, 0.5
PLUGIN = f"{__name__}:collector"
PROCESS_PLUGIN = "tests.integration.collector.replica_process:collector"
REPO = Path(__file__).resolve().parents[3]
CLOCK: list[ScaledClock] = []  # the replicas' clock, for ``collector`` below


def collector(rt: Runtime, settings: CollectorSettings) -> ServiceDefinition:
    """The real collector on the test's clock (a plug-in service name: the host builds it)."""
    return build(rt, settings, clock=CLOCK[-1])


@pytest.fixture(scope="module")
def served4(shared_data: Path) -> dict[str, Series]:
    return {s: load_series(shared_data / f, NOW - minutes(120), NOW + minutes(60)) for s, f in FILES.items()}


@pytest.fixture
async def fresh(js: JetStreamContext, db: Database, served4: dict[str, Series]) -> AsyncIterator[None]:
    """A new CANDLES stream (``js``), no lease bucket left from another test, market_data seeded."""
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(bucket_name("collector"))
    for symbol, series in served4.items():
        await state.store_candles(db, candles_of(series, symbol, *SEEDED))
    yield
    CLOCK.clear()


def candles_of(series: Series, symbol: str, start: datetime, end: datetime) -> list[MinuteCandle]:
    """The file's candles opened in ``[start, end)``."""
    out = []
    for t, (o, hi, lo, c, v) in zip(series.starts, series.values, strict=True):
        ts = datetime.fromtimestamp(t, UTC)
        if start <= ts < end:
            out.append(
                MinuteCandle.model_validate(
                    {
                        "symbol": symbol,
                        "ts_open": ts,
                        "ts_event": ts + minutes(1),
                        "open": o,
                        "high": hi,
                        "low": lo,
                        "close": c,
                        "volume": v,
                    }
                )
            )
    return out


def minutes_of(series: Series, after: datetime, until: datetime) -> list[datetime]:
    """Open times of the file's candles in ``(after, until]``."""
    return [
        datetime.fromtimestamp(t, UTC) for t in series.starts if after.timestamp() < t <= until.timestamp()
    ]


@dataclass
class Replica:
    member: str
    host: ServiceHost
    upbit: FakeUpbit

    @property
    def owned(self) -> frozenset[str]:
        owned = self.host.runtimes[0].owned
        assert owned is not None, "the collector runs partitioned"
        return owned.symbols

    def polled_since(self, at: datetime) -> Counter[str]:
        """Requests per symbol this replica sent at or after ``at`` (the test clock's time)."""
        return Counter(r.market for r in self.upbit.requests if r.at >= at.timestamp())


class Cluster:
    """The replicas of one test, their clock and the servers they use."""

    def __init__(self, nats: NatsProcess, db: Database, series: dict[str, Series]) -> None:
        self.nats, self.db, self.series = nats, db, series
        self.clock = ScaledClock(NOW, SPEED)
        CLOCK.append(self.clock)
        self.replicas: dict[str, Replica] = {}
        self.processes: list[tuple[subprocess.Popen[bytes], FakeUpbit]] = []

    async def start(self, member: str) -> Replica:
        upbit = FakeUpbit(self.clock, self.series).start()
        settings = CommonSettings(
            nats_url=self.nats.url,
            database_url=self.db.url,
            redis_url=None,
            http_port=0,
            symbols=SYMBOLS,
            partitions=PARTITIONS,
            member_id=member,
            partition_lease_seconds=LEASE_SECONDS,
            partition_heartbeat_seconds=HEARTBEAT_SECONDS,
        )
        collector_settings = CollectorSettings(
            upbit_base_url=upbit.url, backfill_lookback_minutes=60, timeout_seconds=1.0
        )
        host = ServiceHost(
            [PLUGIN], settings, serve_http=False, service_settings={"collector": collector_settings}
        )
        await host.start()
        replica = self.replicas[member] = Replica(member, host, upbit)
        return replica

    def start_process(self, member: str, log: Path) -> subprocess.Popen[bytes]:
        """A replica as a process of its own (``replica_process.py``) on the same clock."""
        upbit = FakeUpbit(self.clock, self.series).start()
        env = os.environ | {
            "COINPILOT_NATS_URL": self.nats.url,
            "COINPILOT_DATABASE_URL": self.db.url,
            "COINPILOT_REDIS_URL": "",
            "COINPILOT_SYMBOLS": ",".join(SYMBOLS),
            "COINPILOT_PARTITIONS": str(PARTITIONS),
            "COINPILOT_MEMBER_ID": member,
            "COINPILOT_PARTITION_LEASE_SECONDS": str(LEASE_SECONDS),
            "COINPILOT_PARTITION_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "COINPILOT_HTTP_HOST": "127.0.0.1",
            "COINPILOT_HTTP_PORT": "0",
            "COINPILOT_UPBIT_BASE_URL": upbit.url,
            "COINPILOT_COLLECTOR_BACKFILL_LOOKBACK_MINUTES": "60",
            "COINPILOT_COLLECTOR_TIMEOUT_SECONDS": "1",
            "COINPILOT_TEST_CLOCK_START": self.clock.start.isoformat(),
            "COINPILOT_TEST_CLOCK_SPEED": repr(self.clock.speed),
            "COINPILOT_TEST_CLOCK_T0": repr(self.clock.t0),
        }
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "apps.cli.main", "run", PROCESS_PLUGIN],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append((proc, upbit))
        return proc

    async def settled(self, timeout: float = 20.0) -> float:
        """Real seconds until the live replicas hold the partitions balanced (as many each, or one
        more) and their owned symbols split ``SYMBOLS`` exactly."""
        started = time.monotonic()

        def split() -> bool:
            held = [len(r.host.memberships[0].owned) for r in self.replicas.values()]
            owned = [r.owned for r in self.replicas.values()]
            return (
                sum(held) == PARTITIONS
                and max(held) - min(held) <= 1
                and sum(len(o) for o in owned) == len(SYMBOLS)
                and frozenset().union(*owned) == set(SYMBOLS)
            )

        await wait_for(split, timeout=timeout, interval=0.05)
        return time.monotonic() - started

    async def stop(self) -> None:
        await asyncio.gather(*(r.host.stop() for r in self.replicas.values()))
        for replica in self.replicas.values():
            replica.upbit.stop()
        self.replicas.clear()
        for proc, upbit in self.processes:
            if proc.poll() is None:
                proc.kill()
            await asyncio.to_thread(proc.wait)
            upbit.stop()


@pytest.fixture
async def cluster(
    fresh: None, collector_nats: NatsProcess, db: Database, served4: dict[str, Series]
) -> AsyncIterator[Cluster]:
    cluster = Cluster(collector_nats, db, served4)
    try:
        yield cluster
    finally:
        await cluster.stop()


# ---- what the stream, the lease bucket and market_data hold -------------------------------------


async def lease_owners(js: JetStreamContext) -> dict[int, str]:
    """Partition -> the member holding its lease now, from the lease bucket."""
    owners: dict[int, str] = {}
    with contextlib.suppress(BucketNotFoundError):
        kv = await js.key_value(bucket_name("collector"))
        for p in range(PARTITIONS):
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(f"{LEASES}.{p}")
                if entry.value:
                    owners[p] = entry.value.decode()
    return owners


async def last_published(js: JetStreamContext, symbol: str) -> datetime | None:
    try:
        msg = await js.get_last_msg("CANDLES", f"candles.1m.{symbol}")
    except NotFoundError:
        return None
    return MinuteCandle.from_json(msg.data).ts_open


async def published(js: JetStreamContext) -> dict[str, list[tuple[datetime, str]]]:
    """Every stored candle message per symbol, in stream order: (open time, Nats-Msg-Id)."""
    info = await js.stream_info("CANDLES")
    out: dict[str, list[tuple[datetime, str]]] = {s: [] for s in SYMBOLS}
    for seq in range(info.state.first_seq, info.state.last_seq + 1 if info.state.messages else 0):
        msg = await js.get_msg("CANDLES", seq)
        candle = MinuteCandle.from_json(msg.data)
        out[candle.symbol].append((candle.ts_open, (msg.headers or {})[h.MSG_ID]))
    return out


async def recorded(db: Database, symbol: str) -> list[datetime]:
    m = MarketData.__table__.c
    statement = select(m.timestamp).where(m.symbol == symbol, m.interval == "1m").order_by(m.timestamp)
    async with db.session() as session:
        return list((await session.execute(statement)).scalars())


async def run_until_published(js: JetStreamContext, clock: ScaledClock, ahead: timedelta) -> datetime:
    """Wait (real time) until every symbol's candle opened ``ahead`` after the current minute is
    published; returns that minute."""
    target = floor_minute(clock.now()) + ahead

    async def reached() -> bool:
        lasts = await asyncio.gather(*(last_published(js, s) for s in SYMBOLS))
        return all(last is not None and last >= target for last in lasts)

    await wait_for(reached, timeout=clock.real_seconds(ahead) + 30, interval=0.2)
    return target


async def assert_each_minute_published_and_recorded_once(
    js: JetStreamContext, db: Database, series: dict[str, Series]
) -> None:
    """From the newest seeded minute on, the stream holds every candle of the file once, in time
    order, with its own id, and market_data every candle of the file (a unique key) without a hole."""
    stored = await published(js)
    for symbol in SYMBOLS:
        times = [t for t, _ in stored[symbol]]
        after = max(t for t in minutes_of(series[symbol], SEEDED[0], SEEDED[1]) if t < SEEDED[1])
        assert times and times[0] > after
        assert times == minutes_of(series[symbol], after, times[-1]), symbol
        assert [i for _, i in stored[symbol]] == [f"candle:1m:{symbol}:{t:%Y-%m-%dT%H:%MZ}" for t in times]

        async def caught_up(symbol: str = symbol, last: datetime = times[-1]) -> bool:
            rows = await recorded(db, symbol)
            return bool(rows) and rows[-1] >= last

        await wait_for(caught_up, timeout=20, interval=0.1)
        rows = await recorded(db, symbol)
        assert rows == minutes_of(series[symbol], SEEDED[0] - timedelta(seconds=1), rows[-1]), symbol


def assert_each_symbol_polled_by_its_owner_only(replicas: Iterable[Replica], since: datetime) -> None:
    for symbol in SYMBOLS:
        pollers = [r.member for r in replicas if r.polled_since(since)[symbol]]
        owners = [r.member for r in replicas if symbol in r.owned]
        assert pollers == owners and len(owners) == 1, (symbol, pollers, owners)


def summary(replicas: Iterable[Replica]) -> str:
    return "; ".join(f"{r.member}: {', '.join(sorted(r.owned))}" for r in replicas)


# ---- the tests ---------------------------------------------------------------------------------


async def test_two_replicas_split_the_symbols_and_each_minute_is_published_and_recorded_once(
    cluster: Cluster, js: JetStreamContext, db: Database, served4: dict[str, Series]
) -> None:
    a = await cluster.start("collector-a")
    await cluster.settled()
    assert a.owned == set(SYMBOLS)
    b = await cluster.start("collector-b")
    took = await cluster.settled()
    assert a.owned and b.owned  # five partitions: three and two, one of them empty
    print(f"split after a second replica joined in {took:.2f} s: {summary([a, b])}")
    steady = floor_minute(cluster.clock.now() + timedelta(seconds=30)) + minutes(1)
    await run_until_published(js, cluster.clock, minutes(3))
    assert_each_symbol_polled_by_its_owner_only([a, b], steady)
    await assert_each_minute_published_and_recorded_once(js, db, served4)


async def test_a_joining_replica_takes_its_share_and_each_minute_is_still_published_once(
    cluster: Cluster, js: JetStreamContext, db: Database, served4: dict[str, Series]
) -> None:
    a = await cluster.start("collector-a")
    await cluster.settled()
    b = await cluster.start("collector-b")
    await cluster.settled()
    await run_until_published(js, cluster.clock, minutes(1))
    before = {r.member: r.owned for r in (a, b)}
    c = await cluster.start("collector-c")
    took = await cluster.settled()
    assert c.owned and all(a_or_b.owned <= before[a_or_b.member] for a_or_b in (a, b))
    print(f"rebalanced in {took:.2f} s after a third replica joined: {summary([a, b, c])}")
    steady = floor_minute(cluster.clock.now() + timedelta(seconds=30)) + minutes(1)
    await run_until_published(js, cluster.clock, minutes(2))
    assert_each_symbol_polled_by_its_owner_only([a, b, c], steady)
    await assert_each_minute_published_and_recorded_once(js, db, served4)


async def test_two_replicas_taking_and_polling_one_symbol_in_a_handover_publish_each_minute_once(
    js: JetStreamContext, db: Database, upbit: FakeUpbit, clock: ManualClock, served: dict[str, Series]
) -> None:
    """A handover at its worst. The old owner took the symbol and lost it before its first poll,
    and the new owner takes it: the first take stored nothing after the newest recorded minute (a
    backfill publishes nothing; had it stored the minutes since, the second take would resume
    after them and they would never be published), so both resume there. Then the old owner's
    round, still in flight, and the new owner's poll publish the same minutes: JetStream stores
    each once, because the message id is the candle's (``candle:1m:<SYM>:<start>``) and the
    streams keep a 2-hour duplicate window."""
    symbol = "KRW-BTC"
    await state.store_candles(
        db, candles_of(served[symbol], symbol, MINUTE0 - minutes(40), MINUTE0 - minutes(5))
    )
    old, new = (
        UpbitClient(upbit.url, clock=clock, timeout_seconds=1.0, retry=RetryPolicy(2, 0.05, 0.1))
        for _ in range(2)
    )
    bus = Bus(js, "collector")
    resumed = [await take_symbol(c, db, symbol, now=clock.now(), lookback=minutes(60)) for c in (old, new)]
    assert resumed == [MINUTE0 - minutes(6)] * 2  # the newest recorded minute, for both
    lasts: list[dict[str, datetime | None]] = [{symbol: r} for r in resumed]
    for m in range(1, 4):
        clock.set(MINUTE0 + minutes(m) + timedelta(seconds=2))
        for client, last in zip((old, new), lasts, strict=True):
            await poll_once(client, bus, db, [symbol], last, clock.now())
    out = (await published(js))[symbol]
    want = minutes_of(served[symbol], MINUTE0 - minutes(6), MINUTE0 + minutes(2))
    assert [t for t, _ in out] == want and len({i for _, i in out}) == len(want) == 8
    assert Counter(r.market for r in upbit.requests if r.count != 200)[symbol] == 6  # both polled
    for client in (old, new):
        await client.close()


async def test_a_replica_process_killed_with_sigkill_is_taken_over_and_nothing_is_lost_or_doubled(
    cluster: Cluster, js: JetStreamContext, db: Database, served4: dict[str, Series], tmp_path: Path
) -> None:
    """The same takeover with a real kill -9: the replica holding three partitions is a process of
    its own (``coinpilot run tests.integration.collector.replica_process:collector``, on the same
    clock through a shared CLOCK_MONOTONIC origin) and gets SIGKILL."""
    proc = cluster.start_process("collector-proc", tmp_path / "replica.log")

    async def owned_by_process() -> bool:
        owners = await lease_owners(js)
        return len(owners) == PARTITIONS and set(owners.values()) == {"collector-proc"}

    await wait_for(owned_by_process, timeout=60, interval=0.1)
    b = await cluster.start("collector-b")

    async def split() -> bool:
        owners = await lease_owners(js)
        mine = [p for p, m in owners.items() if m == "collector-b"]
        return (
            len(owners) == PARTITIONS
            and len(mine) == 2
            and set(b.owned) == {s for p in mine for s in symbols_of(p, PARTITIONS, SYMBOLS)}
        )

    await wait_for(split, timeout=20, interval=0.1)
    await run_until_published(js, cluster.clock, minutes(1))
    lost = set(SYMBOLS) - b.owned
    killed_at, died_at = time.monotonic(), cluster.clock.now()
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait)
    await wait_for(lambda: b.owned == set(SYMBOLS), timeout=LEASE_SECONDS + 2 * HEARTBEAT_SECONDS + 15)
    print(
        f"kill -9 of the process holding {', '.join(sorted(lost))}: taken over in "
        f"{time.monotonic() - killed_at:.2f} s, {cluster.clock.now() - died_at} on the test clock "
        f"(lease {LEASE_SECONDS} s + 2 heartbeats of {HEARTBEAT_SECONDS} s)"
    )
    steady = floor_minute(cluster.clock.now() + timedelta(seconds=30)) + minutes(1)
    await run_until_published(js, cluster.clock, minutes(2))
    assert_each_symbol_polled_by_its_owner_only([b], steady)
    await assert_each_minute_published_and_recorded_once(js, db, served4)
