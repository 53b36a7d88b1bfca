"""Reconciliation and the kill switch against real PostgreSQL, a private NATS and the fake Upbit.

Ledger of each test's run: 1,000,000 KRW cash and 0.01 BTC (KRW-BTC, avg 100,000,000). The fake
exchange's account is set per test; its KRW-BTC market's minimum order total is 5,000 KRW.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from apps.cli.main import main as cli
from apps.cli.trace import live_state
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.bus.connect import PermissionWatch, settle
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    HaltCommand,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectReason,
    RiskAlert,
)
from coinpilot.db import Database
from coinpilot.db.halts import active_halt, clear_halt, set_halt
from coinpilot.strategy_config import load_strategy_config
from services.executor import reconcile
from services.executor.upbit import Credentials, Side, UpbitClient
from services.risk import state
from services.risk.control import on_halt_command
from services.risk.handlers import RiskHandlers
from services.risk.stores import MemoryRiskCache
from tests.support.fake_upbit import TEST_ACCESS_KEY, TEST_SECRET_KEY, FakeUpbit
from tests.support.servers import NatsProcess, wait_for
from tests.unit.risk.factories import T0, YAML, entry, exit_signal

pytestmark = pytest.mark.postgres
D = Decimal
ROOT = Path(__file__).resolve().parents[3]
SETTINGS = reconcile.ReconcileSettings(tolerances={"KRW": D(1)})


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpbit]:
    async with FakeUpbit() as exchange:
        exchange.add_market("KRW-BTC")
        exchange.set_balance("KRW", "1000000")
        exchange.set_balance("BTC", "0.01", avg_buy_price="100000000")
        yield exchange


@pytest.fixture
async def client(fake: FakeUpbit) -> AsyncIterator[UpbitClient]:
    async with UpbitClient(Credentials.of(TEST_ACCESS_KEY, TEST_SECRET_KEY), base_url=fake.url) as upbit:
        yield upbit


@pytest.fixture
async def ledger(executor_db: Database, run_id: str) -> str:
    async with executor_db.transaction() as conn:
        await conn.execute(
            "INSERT INTO account_state (run_id, currency, balance, initial_balance) "
            "VALUES ($1, 'KRW', $2, $2)",
            run_id,
            D(1_000_000),
        )
        await conn.execute(
            "INSERT INTO positions (run_id, symbol, quantity, avg_price, position_id, currency) "
            "VALUES ($1, 'KRW-BTC', 0.01, 100000000, 'KRW-BTC:2026-03-02T11:00Z:buy', 'KRW')",
            run_id,
        )
    return run_id


async def alerts_of(js: JetStreamContext, run_id: str, wait: float = 0.3) -> list[RiskAlert]:
    sub = await js.subscribe(
        "risk.alerts",
        stream="RISK",
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    found = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=wait)
            except TimeoutError:
                return found
            if h.of_message(msg.headers).get(h.RUN_ID) == run_id:
                found.append(RiskAlert.from_json(msg.data))
    finally:
        await sub.unsubscribe()


def risk_over(db: Database) -> RiskHandlers:
    async def no_fit(*_: object) -> object:
        raise AssertionError("no refit here")

    return RiskHandlers(
        params=YAML,
        volatility=load_strategy_config().risk_management.volatility,
        initial_balance=D(10_000_000),
        cache=MemoryRiskCache(),
        book=state.pg_risk_book(db),
        fit=no_fit,  # type: ignore[arg-type]
        log=logging.getLogger("test"),
    )


async def test_an_equal_ledger_is_recorded_ok_with_no_alert_and_no_halt(
    executor_db: Database, client: UpbitClient, js: JetStreamContext, ledger: str
) -> None:
    report = await reconcile.reconcile_once(executor_db, client, Bus(js, "executor"), SETTINGS, run_id=ledger)
    assert report.ok and {line.verdict for line in report.lines} == {reconcile.Verdict.EQUAL}
    assert await active_halt(executor_db, ledger) is None
    assert await alerts_of(js, ledger) == []
    async with executor_db.transaction() as conn:
        row = await conn.fetchrow(
            "SELECT ok, venue, discrepancies FROM reconciliations WHERE run_id = $1", ledger
        )
    assert (row["ok"], row["venue"], row["discrepancies"]) == (True, "upbit", 0)


async def test_an_open_orders_locked_funds_count_and_dust_raises_nothing(
    executor_db: Database, fake: FakeUpbit, client: UpbitClient, js: JetStreamContext, ledger: str
) -> None:
    # a resting limit buy locks KRW on the exchange; the ledger books fills, not reservations
    fake.set_book("KRW-BTC", asks=[("101000000", "1")], bids=[("99000000", "1")])
    await client.place_limit("KRW-BTC", Side.BID, D(90_000_000), D("0.001"), identifier="rest-1")
    fake.holdings["KRW"].balance += D("0.5")  # half a won: within KRW's tolerance
    fake.holdings["BTC"].balance += D("0.00003")  # 3,000 KRW of BTC: below the 5,000 minimum total
    report = await reconcile.reconcile_once(executor_db, client, Bus(js, "executor"), SETTINGS, run_id=ledger)
    assert report.ok, report.summary()
    assert report.open_orders == 1
    krw = next(line for line in report.lines if line.currency == "KRW")
    assert krw.exchange_locked > 0 and krw.verdict is reconcile.Verdict.DUST
    assert await active_halt(executor_db, ledger) is None
    assert await alerts_of(js, ledger) == []


async def test_a_difference_beyond_dust_alerts_critical_halts_entries_and_exits_still_pass(
    executor_db: Database, fake: FakeUpbit, client: UpbitClient, js: JetStreamContext, ledger: str
) -> None:
    fake.holdings["BTC"].balance = D("0.005")  # half the position is gone: 500,000 KRW
    bus = Bus(js, "executor")
    report = await reconcile.reconcile_once(executor_db, client, bus, SETTINGS, run_id=ledger)
    assert [(d.currency, d.difference) for d in report.discrepancies] == [("BTC", D("-0.005"))]

    (alert,) = await alerts_of(js, ledger)
    assert (alert.type, alert.level) == (AlertType.RECONCILIATION_MISMATCH, AlertLevel.CRITICAL)
    assert "BTC ledger 0.01" in alert.message and "new entries are halted" in alert.message
    halt = await active_halt(executor_db, ledger)
    assert halt is not None and halt.source == "reconcile" and "BTC" in halt.reason

    # the same discrepancy again: recorded, still halted, no second alert
    await reconcile.reconcile_once(
        executor_db, client, bus, SETTINGS, run_id=ledger, now=wall_clock_now() + timedelta(minutes=5)
    )
    assert len(await alerts_of(js, ledger)) == 1

    risk = risk_over(executor_db)
    out = await risk.on_signal(ledger, entry())
    (rejected,) = [m for m in out if isinstance(m, OrderRejected)]
    assert rejected.reason is RejectReason.TRADING_HALTED
    assert rejected.message.startswith("entries halted by reconcile since") and "BTC" in rejected.message
    assert [type(m) for m in await risk.on_signal(ledger, exit_signal(at=T0 + timedelta(minutes=1)))] == [
        OrderApproved
    ]

    # only an operator clears it; then the next entry is decided as usual
    assert await clear_halt(executor_db, ledger, "operator:test", wall_clock_now()) is not None
    later = await risk.on_signal(ledger, entry(at=T0 + timedelta(minutes=2)))
    assert not any(isinstance(m, OrderRejected) and m.reason is RejectReason.TRADING_HALTED for m in later)
    assert any(isinstance(m, OrderProposed | OrderRejected) for m in later)


async def test_a_halt_published_by_a_service_user_is_refused_and_the_operators_sets_the_switch(
    executor_db: Database, executor_nats: NatsProcess, js: JetStreamContext, run_id: str
) -> None:
    command = HaltCommand(ts_event=wall_clock_now(), reason="exchange maintenance", requested_by="ops")
    watch = PermissionWatch("executor")
    forger = await nats.connect(
        executor_nats.url,
        user="executor",
        password=executor_nats.passwords["executor"],
        error_cb=watch.on_error,
    )
    try:
        await forger.publish("control.halt", command.to_json(), headers={h.RUN_ID: run_id})
        await settle(forger)
    finally:
        await forger.close()
    assert any('"control.halt"' in v for v in watch.violations), watch.violations
    assert (await js.stream_info("CONTROL")).state.messages == 0

    await Bus(js, "operator").publish(command, run_id=run_id)  # the operator may
    sub = await js.pull_subscribe("control.halt", durable=f"test-control-{run_id}", stream="CONTROL")
    (msg,) = await sub.fetch(1, timeout=5)
    assert h.of_message(msg.headers)[h.RUN_ID] == run_id
    out = await on_halt_command(executor_db, run_id, HaltCommand.from_json(msg.data))
    (alert,) = out
    assert (alert.type, alert.level) == (AlertType.TRADING_HALT, AlertLevel.CRITICAL)
    halt = await active_halt(executor_db, run_id)
    assert (
        halt is not None
        and halt.source == "subject"
        and halt.reason == "exchange maintenance (requested by ops)"
    )
    # redelivered after an operator cleared the halt: claimed already, nothing set again
    await clear_halt(executor_db, run_id, "operator:test", wall_clock_now())
    assert await on_halt_command(executor_db, run_id, HaltCommand.from_json(msg.data)) == ()
    assert await active_halt(executor_db, run_id) is None


async def test_setting_a_halt_twice_keeps_the_first(executor_db: Database, run_id: str) -> None:
    first, new = await set_halt(executor_db, run_id, "operator", "first", wall_clock_now())
    again, new_again = await set_halt(executor_db, run_id, "reconcile", "second", wall_clock_now())
    assert (new, new_again, again) == (True, False, first)


def test_coinpilot_halt_sets_shows_and_clears_the_switch(
    pg_url: str, executor_nats: NatsProcess, run_id: str
) -> None:
    env = {
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_NATS_URL": executor_nats.url,
        "COINPILOT_RUN_ID": run_id,
    }
    runner = CliRunner()
    done = runner.invoke(cli, ["halt", "--reason", "manual test"], env=env)
    assert done.exit_code == 0, done.output
    assert f"run {run_id}: entries halted by operator since" in done.output and "manual test" in done.output
    again = runner.invoke(cli, ["halt", "--reason", "other"], env=env)
    assert "already halted" in again.output and "manual test" in again.output
    assert "entries halted by operator" in runner.invoke(cli, ["halt", "--status"], env=env).output

    async def alerts() -> list[RiskAlert]:
        nc = await nats.connect(executor_nats.url)
        try:
            return await alerts_of(nc.jetstream(), run_id)
        finally:
            await nc.close()

    (alert,) = asyncio.run(alerts())
    assert alert.type is AlertType.TRADING_HALT and "manual test" in alert.message

    cleared = runner.invoke(cli, ["halt", "--clear"], env=env)
    assert cleared.exit_code == 0 and "cleared: entries halted by operator" in cleared.output
    assert "by operator:" in cleared.output
    assert "not halted" in runner.invoke(cli, ["halt", "--status"], env=env).output
    assert "was not halted" in runner.invoke(cli, ["halt", "--clear"], env=env).output
    assert runner.invoke(cli, ["halt", "--clear", "--flatten"], env=env).exit_code == 2


async def test_coinpilot_reconcile_prints_each_currency_and_exits_1_on_a_discrepancy(
    pg_url: str, executor_db: Database, fake: FakeUpbit, executor_nats: NatsProcess, ledger: str
) -> None:
    fake.holdings["KRW"].balance = D(990_000)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "libs"), str(ROOT)]),
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_NATS_URL": executor_nats.url,
        "COINPILOT_RUN_ID": ledger,
        "COINPILOT_UPBIT_ACCESS_KEY": TEST_ACCESS_KEY,
        "COINPILOT_UPBIT_SECRET_KEY": TEST_SECRET_KEY,
        "COINPILOT_UPBIT_BASE_URL": fake.url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apps.cli.main", "reconcile", "--halt",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(proc.communicate(), timeout=60))[0].decode()
    assert proc.returncode == 1, output
    assert "KRW    ledger 1000000.00000000 exchange 990000" in output and "DISCREPANCY" in output
    assert "BTC" in output and "equal" in output
    assert TEST_SECRET_KEY not in output and TEST_ACCESS_KEY not in output
    halt = await wait_for(lambda: active_halt(executor_db, ledger), timeout=5)
    assert halt.source == "reconcile"

    lines = await live_state(executor_db, ledger)
    assert lines[0].startswith(f"run {ledger}: HALTED: entries halted by reconcile")
    assert "1 discrepancies" in lines[1]
    assert any(line.strip().startswith("KRW: ledger 1000000") and "DISCREPANCY" in line for line in lines)


FLAT_SYMBOL = "KRW-DOT"  # no other test records this market's candles
FLAT_MINUTE = T0 - timedelta(minutes=1)


async def _open_dot_position(db: Database, run_id: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO account_state (run_id, currency, balance, initial_balance) VALUES ($1, 'KRW', 0, 0)",
            run_id,
        )
        await conn.execute(
            "INSERT INTO positions (run_id, symbol, quantity, avg_price, position_id, currency, regime, "
            "high_water_mark, opened_at) VALUES ($1, $2, 100, 9000, 'KRW-DOT:2026-03-02T10:00Z:buy', 'KRW', "
            "'BULL', 9500, $3)",
            run_id,
            FLAT_SYMBOL,
            T0 - timedelta(hours=2),
        )
        await conn.execute(
            "INSERT INTO market_data (symbol, interval, timestamp, open_price, high_price, low_price, "
            "close_price, volume) VALUES ($1, '1m', $2, 9900, 10100, 9800, 10000, 5) "
            "ON CONFLICT DO NOTHING",
            FLAT_SYMBOL,
            FLAT_MINUTE,
        )


def test_coinpilot_halt_flatten_closes_every_position_through_risk_and_the_executor(
    pg_url: str, executor_nats: NatsProcess, run_id: str
) -> None:
    from coinpilot.contracts import ExitReason, ExitSignal, Fill
    from services.executor.app import execute_order
    from services.executor.core import FillParams
    from services.executor.venue import PaperVenue

    async def setup() -> None:
        db = Database(pg_url)
        try:
            await _open_dot_position(db, run_id)
        finally:
            await db.dispose()

    asyncio.run(setup())
    env = {
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_NATS_URL": executor_nats.url,
        "COINPILOT_RUN_ID": run_id,
    }
    done = CliRunner().invoke(cli, ["halt", "--flatten", "--reason", "flatten test"], env=env)
    assert done.exit_code == 0, done.output
    assert (
        f"flatten {FLAT_SYMBOL}: exit of 100.00000000 (position KRW-DOT:2026-03-02T10:00Z:buy)" in done.output
    )

    async def follow() -> tuple[object, object, int]:
        db = Database(pg_url)
        nc = await nats.connect(executor_nats.url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe(f"signals.exit.{FLAT_SYMBOL}", stream="SIGNALS", ordered_consumer=True)
            msg = await sub.next_msg(timeout=5)
            assert h.of_message(msg.headers)[h.RUN_ID] == run_id
            signal = ExitSignal.from_json(msg.data)
            assert (signal.exit_reason, signal.price, signal.ts_event) == (
                ExitReason.KILL_SWITCH,
                D(10000),
                FLAT_MINUTE + timedelta(minutes=1),
            )
            (approved,) = await risk_over(db).on_signal(run_id, signal)  # exits pass while halted
            assert isinstance(approved, OrderApproved)
            fill = await execute_order(
                db, PaperVenue(FillParams(fee_rate=D(0))), approved, run_id=run_id, trace_id=None,
                initial_balance=D(0),
            )  # fmt: skip
            async with db.transaction() as conn:
                left = await conn.fetchval("SELECT count(*) FROM positions WHERE run_id = $1", run_id)
                await conn.execute(
                    "DELETE FROM market_data WHERE symbol = $1 AND timestamp = $2", FLAT_SYMBOL, FLAT_MINUTE
                )
            return signal, fill, left
        finally:
            await nc.close()
            await db.dispose()

    _, fill, left = asyncio.run(follow())
    assert isinstance(fill, Fill), fill
    assert (fill.side, fill.quantity, fill.fill_price, fill.exit_reason, left) == (
        "SELL",
        D(100),
        D(10000),
        "KILL_SWITCH",
        0,
    )
    assert fill.realized_pnl == D(100_000)  # (10,000 - 9,000) x 100, fee-free venue


async def test_periodic_survives_a_failed_round_and_a_418_halts_entries_with_an_alert(
    executor_db: Database, fake: FakeUpbit, client: UpbitClient, js: JetStreamContext, ledger: str
) -> None:
    settings = reconcile.ReconcileSettings(tolerances={"KRW": D(1)}, interval_seconds=60)
    bus = Bus(js, "executor")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    fake.fail_next(503, path="/v1/accounts")  # round 1: exchange unavailable; round 2 reconciles
    await reconcile.periodic(executor_db, client, bus, settings, run_id=ledger, sleep=sleep, rounds=2)
    assert sleeps == [60.0]
    async with executor_db.transaction() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM reconciliations WHERE run_id = $1 AND ok", ledger) == 1
        )
    assert await active_halt(executor_db, ledger) is None

    fake.block()  # 418: Upbit blocked us; nothing read can be trusted
    await reconcile.periodic(
        executor_db, client, bus, settings, run_id=ledger, sleep=sleep, rounds=1, start_now=False
    )
    assert sleeps == [60.0, 60.0]  # waited one interval first, then the one round
    halt = await active_halt(executor_db, ledger)
    assert halt is not None and halt.source == "reconcile" and "Blocked" in halt.reason
    (alert,) = await alerts_of(js, ledger)
    assert (alert.type, alert.level) == (AlertType.TRADING_HALT, AlertLevel.CRITICAL)
