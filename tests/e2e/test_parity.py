"""One pipeline, identical results: seven services over real servers == the in-process backtest.

Real candles (the bundled BTC + ETH sample): everything but the last hours is imported into
``market_data`` as history (as a deployment has after its backfill), the last hours are replayed
with ``--pace lockstep`` through the seven services running as separate processes over real
NATS, PostgreSQL and Redis, and the ledger they book is compared with ``coinpilot backtest``
over the same candles: the same fills, prices, quantities, fees and PnL, to the last decimal.
The run's report, rebuilt from the database alone (its ledger and the candles recorded over the
window, equity marked to market at the backtest's hourly marks), is the backtest's report, figure
for figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import nats
import pytest
from sqlalchemy import text

from apps.backtest.ledger_report import load_run, run_report
from apps.backtest.report import BacktestReport
from apps.backtest.run import Window, run_backtest
from apps.backtest.settings import ModeSettings
from apps.cli.trace import build_trace
from apps.demo import sample_files, split_warmup, start_services, stop_services, wait_ready
from apps.stage_replay.diff import NUMBERS, StageDiff, ledger_figures, signal_order_id
from apps.stage_replay.recorded import Recorded, read_run
from apps.stage_replay.run import stage_replay
from coinpilot.bus import ensure_streams
from coinpilot.candle_files import load_candles
from coinpilot.clock import trading_day
from coinpilot.contracts import EntrySignal, Fill
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.strategy_config import SHIPPED_CONFIG, load_strategy_config
from services.executor.records import fill_from_row
from services.risk.params import RiskParams

BOUNDARY = RiskParams.from_config(load_strategy_config()).day_boundary

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REPLAY_HOURS = 36.0
ISO = "%Y-%m-%dT%H:%M:%S"  # as the command's --from and --to take it


def canonical(fill: Fill) -> str:
    """A fill as text with every decimal at 8 places: PostgreSQL returns NUMERIC(20,8) padded."""

    def norm(value: object) -> object:
        if isinstance(value, Decimal):
            return f"{value:.8f}"
        return value

    data = {k: norm(v) for k, v in fill.model_dump().items()}
    return json.dumps(data, sort_keys=True, default=str)


async def distributed_ledger(database_url: str, run_id: str) -> list[Fill]:
    db = Database(database_url)
    try:
        async with db.session() as s:
            rows = (
                (await s.execute(text("SELECT * FROM trading_history WHERE run_id = :r"), {"r": run_id}))
                .mappings()
                .all()
            )
    finally:
        await db.dispose()
    return sorted((fill_from_row(r) for r in rows), key=lambda f: (f.ts_event, f.symbol))


async def run_distributed(
    warm: list, replay: list, run_id: str, nats_url: str, pg_url: str, redis_url: str, workdir: Path
) -> list[Fill]:
    await upgrade(pg_url)
    db = Database(pg_url)
    await copy_candles(db, warm)
    await db.dispose()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    stack = EmbeddedStack(workdir, nats_url=nats_url, database_url=pg_url, redis_url=redis_url)
    services = start_services(stack, workdir)
    try:
        await wait_ready(services)
        await replay_candles(js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=60)
    finally:
        stop_services(services)
        await nc.close()
    return await distributed_ledger(pg_url, run_id)


@pytest.mark.timeout(900)  # two replays through the services, and the in-process replays between them
async def test_a_lockstep_replay_through_the_services_books_the_backtest_ledger(
    nats_url: str, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    warm, replay = split_warmup(load_candles(sample_files()), REPLAY_HOURS)
    run_id = f"parity-{uuid.uuid4().hex[:8]}"

    backtest, report = await run_backtest(Window(warm, replay), run_id=run_id)
    expected = sorted(backtest.fills, key=lambda f: (f.ts_event, f.symbol))
    assert len(expected) >= 4 and len({t.exit_reason for t in report.trips}) >= 2, "the window must trade"

    booked = await run_distributed(warm, replay, run_id, nats_url, pg_url, redis_url, tmp_path)

    assert [canonical(f) for f in booked] == [canonical(f) for f in expected]
    await the_runs_report_is_the_backtests(pg_url, run_id, replay, report)
    await trace_shows_the_whole_chain(nats_url, pg_url, booked, run_id)
    loop_limited, tight = await a_stage_replay_reproduces_the_run_and_answers_a_what_if(
        nats_url, pg_url, run_id, Window(warm, replay), tmp_path
    )
    window = (replay[0].ts_open, replay[-1].ts_open + timedelta(minutes=2))
    await aged_out_inputs_are_read_from_the_database(nats_url, pg_url, run_id, window)
    await a_replay_published_into_a_nats_is_the_in_process_one(
        nats_url, pg_url, redis_url, run_id, window, tight, loop_limited, tmp_path
    )


async def the_runs_report_is_the_backtests(
    pg_url: str, run_id: str, replay: list, expected: BacktestReport
) -> None:
    """Return, MDD, Sharpe, win rate, profit factor, exposure, fees, trades by exit reason, and
    every hourly equity mark: from the database, as the backtest computed them in process."""
    db = Database(pg_url)
    try:
        run = await load_run(
            db, run_id, replay[0].ts_open, replay[-1].ts_open, sorted({c.symbol for c in replay})
        )
    finally:
        await db.dispose()
    report, _ = run_report(run, expected.label, Decimal(0))
    assert report.summary_lines() == expected.summary_lines()
    assert report.equity == expected.equity
    assert report == expected


async def trace_shows_the_whole_chain(nats_url: str, pg_url: str, booked: list[Fill], run_id: str) -> None:
    """`coinpilot trace <order id>`: candle -> indicators -> signal -> risk -> AI -> fill."""
    buy = next(f for f in booked if f.side.value == "BUY")
    nc = await nats.connect(nats_url)
    db = Database(pg_url)
    try:
        trace = await build_trace(nc.jetstream(), db, buy.order_id, run_id)
    finally:
        await nc.close()
        await db.dispose()
    subjects = [hop.subject.rsplit(".", 1)[0] for hop in trace.hops]
    for stage in ("candles.1m", "indicators.1m", "signals.entry", "orders.proposed", "ai.decisions",
                  "orders.approved", "fills"):  # fmt: skip
        assert stage in subjects, (stage, subjects)
    assert trace.decisions and trace.decisions[0]["decision"] == "CONFIRM"
    assert [row["order_id"] for row in trace.ledger] == [buy.order_id]
    text_lines = trace.lines()
    assert text_lines[0] == f"trace {trace.trace_id}" and any("reasoning:" in line for line in text_lines)


async def a_stage_replay_reproduces_the_run_and_answers_a_what_if(
    nats_url: str, pg_url: str, run_id: str, window: Window, tmp_path: Path
) -> tuple[StageDiff, Path]:
    """Issue 22, in process, over the run just recorded: risk replayed alone and the trading loop
    replayed through the executor reproduce it byte for byte with unchanged parameters; with a
    daily limit of one BUY, risk changes exactly the verdicts the limit must change (counted here
    from the recorded fills), and the loop books what a full backtest with that limit books."""
    tight = tmp_path / "one_buy_a_day.yaml"
    yaml_text = SHIPPED_CONFIG.read_text()
    assert "max_daily_trades: 6" in yaml_text
    tight.write_text(yaml_text.replace("max_daily_trades: 6", "max_daily_trades: 1"))
    settings = ModeSettings.from_environment()
    nc = await nats.connect(nats_url)
    db = Database(pg_url)
    try:
        js = nc.jetstream()
        replay = partial(stage_replay, js, db, run_id=run_id, settings=settings)
        same = await replay(stage="risk", through=None, replay_run=f"{run_id}-r")
        assert same.identical_outputs and not same.changed and len(same.rows) >= 4
        limited = await replay(stage="risk", through=None, replay_run=f"{run_id}-r1", strategy_config=tight)
        recorded = await read_run(js, run_id, ("signals.*.*", "fills.*", "orders.>"))
        loop_same = await replay(stage="strategy", through="executor", replay_run=f"{run_id}-l")
        loop_limited = await replay(
            stage="risk", through="executor", replay_run=f"{run_id}-l1", strategy_config=tight
        )
        executor_same = await replay(stage="executor", through=None, replay_run=f"{run_id}-e")
        no_fee = ModeSettings.from_environment({"COINPILOT_EXECUTOR_FEE_RATE": "0"})
        executor_free = await stage_replay(js, db, stage="executor", through=None, run_id=run_id,
                                           replay_run=f"{run_id}-e0", settings=no_fee)  # fmt: skip
    finally:
        await nc.close()
        await db.dispose()
    expected = one_buy_a_day(recorded, same)
    assert expected, "the window must have a day with a second BUY for the limit to refuse"
    assert {r.order_id: r.new.label for r in limited.changed} == expected
    assert limited.counts()["new"].get("REJECTED MAX_DAILY_TRADES", 0) >= len(expected)

    assert loop_same.identical_outputs, loop_same.first_difference  # signals, verdicts, alerts, fills
    assert not loop_same.changed
    assert executor_same.identical_outputs and not executor_same.changed and executor_same.rows
    assert executor_free.ledgers is not None and Decimal(executor_free.ledgers[1].fees) == 0
    assert Decimal(executor_free.ledgers[0].fees) > 0
    assert {r.new.outcome for r in executor_free.changed} == {"FILLED"}
    assert loop_same.ledgers is not None and loop_same.ledgers[0] == loop_same.ledgers[1]
    backtest, _ = await run_backtest(window, run_id="limited", strategy_config=tight)
    assert loop_limited.ledgers is not None
    assert loop_limited.ledgers[1] == ledger_figures(backtest.fills)
    assert loop_limited.ledgers[1] != loop_limited.ledgers[0], "the limit must change the ledger"
    assert "MAX_DAILY_TRADES" in loop_limited.to_html() and json.loads(loop_limited.to_json())["ledgers"]

    # the command an operator runs, as a process: the same diff, written as JSON
    out = tmp_path / "diff.json"
    env = {**os.environ, "COINPILOT_NATS_URL": nats_url, "COINPILOT_DATABASE_URL": pg_url}
    command = [sys.executable, "-m", "apps.cli.main", "replay-stage", "--run-id", run_id, "--stage", "risk",
               "--strategy-config", str(tight), "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(limited.changed)} decided differently" in done.stdout
    assert json.loads(out.read_text())["rows"] == json.loads(limited.to_json())["rows"]
    return loop_limited, tight


async def aged_out_inputs_are_read_from_the_database(
    nats_url: str, pg_url: str, run_id: str, window: tuple[datetime, datetime]
) -> None:
    """Retention took the run's candles and indicator outputs (INDICATORS keeps 3 days, CANDLES 14):
    the loop replay reads the candles from market_data and computes the indicators again, and still
    reproduces the run's outputs, every number of them, and its ledger (signals, orders and fills
    are kept longer)."""
    nc = await nats.connect(nats_url)
    db = Database(pg_url)
    try:
        js = nc.jetstream()
        for stream in ("INDICATORS", "CANDLES"):
            await js.purge_stream(stream)
        same = await stage_replay(js, db, stage="strategy", through="executor", run_id=run_id,
                                  replay_run=f"{run_id}-aged", settings=ModeSettings.from_environment(),
                                  start=window[0], end=window[1])  # fmt: skip
    finally:
        await nc.close()
        await db.dispose()
    # market_data pads decimals (26775.0 comes back 26775.00000000): equal as numbers, not as bytes
    assert same.identical_outputs and same.identity == NUMBERS, same.first_difference
    assert same.ledgers is not None and same.ledgers[0] == same.ledgers[1] and same.ledgers[0].fills >= 4
    assert same.skipped == {
        "indicator outputs aged out of the stream: recomputed from the candles": 1,
        "read from market_data (aged out of the stream)": 1,
    }


async def a_replay_published_into_a_nats_is_the_in_process_one(
    nats_url: str,
    pg_url: str,
    redis_url: str,
    run_id: str,
    window: tuple[datetime, datetime],
    tight: Path,
    in_process: StageDiff,
    tmp_path: Path,
) -> None:
    """Issue 22, distributed: the services redeployed with the one-BUY-a-day YAML (the target's
    what-if), `replay-stage --into` publishes the run's candles (read from market_data: the stream
    no longer holds them) into their NATS under a new run id; its diff is the in-process loop's with
    that YAML, row for row and ledger for ledger, the new ledger is the one the services booked for
    that run, and the original run is untouched."""
    before = await distributed_ledger(pg_url, run_id)
    workdir = tmp_path / "staging"
    workdir.mkdir()
    stack = EmbeddedStack(workdir, nats_url=nats_url, database_url=pg_url, redis_url=redis_url)
    services = start_services(stack, workdir, extra_env={"COINPILOT_STRATEGY_CONFIG": str(tight)})
    out = tmp_path / "distributed.json"
    env = {**os.environ, "COINPILOT_NATS_URL": nats_url, "COINPILOT_DATABASE_URL": pg_url}
    command = [sys.executable, "-m", "apps.cli.main", "replay-stage", "--run-id", run_id, "--stage", "risk",
               "--into", nats_url, "--as", f"{run_id}-d1", "--json", str(out),
               "--from", f"{window[0]:{ISO}}", "--to", f"{window[1]:{ISO}}"]  # fmt: skip
    try:
        await wait_ready(services)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop_services(services)
    assert done.returncode == 0, done.stderr
    diff = json.loads(out.read_text())
    expected = json.loads(in_process.to_json())
    assert diff["rows"] == expected["rows"] and diff["counts"] == expected["counts"]
    assert diff["ledgers"] == expected["ledgers"]
    assert diff["ledgers"]["new"] == asdict(ledger_figures(await distributed_ledger(pg_url, f"{run_id}-d1")))
    assert await distributed_ledger(pg_url, run_id) == before


def one_buy_a_day(recorded: list[Recorded], original: StageDiff) -> dict[str, str]:
    """The entries a one-BUY daily limit must refuse, counted from the recording: an entry risk let
    through (or refused for a reason checked after the daily limit) on a trading day that already
    had a BUY fill when it came. Downstream is the original run's, so the BUY fills are its."""
    before_limit = {"ORDER_PENDING", "ACCOUNT_MISSING", "IMPLAUSIBLE_PRICE", "NON_POSITIVE_AMOUNT",
                    "NON_POSITIVE_REFERENCE_EQUITY", "TRADING_HALTED", "COOLDOWN_ACTIVE"}  # fmt: skip
    verdicts = {r.order_id: r.original for r in original.rows}
    buys_by_day: dict[object, int] = {}
    expected: dict[str, str] = {}
    for r in recorded:
        m = r.message
        if isinstance(m, Fill) and m.side.value == "BUY":
            day = trading_day(m.ts_event, BOUNDARY)
            buys_by_day[day] = buys_by_day.get(day, 0) + 1
        elif isinstance(m, EntrySignal):
            day = trading_day(m.ts_event, BOUNDARY)
            verdict = verdicts[signal_order_id(m)]
            if buys_by_day.get(day, 0) >= 1 and verdict.reason not in before_limit:
                expected[signal_order_id(m)] = "REJECTED MAX_DAILY_TRADES"
    return expected
