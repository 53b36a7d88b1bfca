"""``coinpilot reconcile`` and ``coinpilot halt``: live trading's checks and kill switch (issue 23).

* ``reconcile`` compares the ledger of a run with the Upbit account (``services/executor/reconcile``),
  prints one line per currency, records the comparison and exits 1 on a discrepancy; ``--halt``
  also halts new entries and publishes the CRITICAL alert.
* ``halt [--reason R]`` sets the kill switch (risk refuses entries ``TRADING_HALTED``; exits pass)
  and publishes a CRITICAL ``TRADING_HALT`` alert; ``halt --clear`` lifts it (only an operator
  can); ``halt --status`` shows it. ``halt --flatten`` also publishes one ``KILL_SWITCH`` exit per
  open position (``coinpilot.kill_switch.flatten_exit``), decided on the symbol's latest recorded
  minute; risk approves it like any exit and the executor sells the ledger's quantity at its quote.

The database is the switch: these commands write ``trading_halts`` directly, so they work while
NATS or risk is down (the alert is then skipped, with a warning). Upbit keys come from
``COINPILOT_UPBIT_ACCESS_KEY`` / ``COINPILOT_UPBIT_SECRET_KEY`` (never printed).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import click
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from coinpilot.bus import Bus
    from coinpilot.settings import CommonSettings

NO_DISCREPANCY, DISCREPANCY = 0, 1


class UpbitAccess(BaseSettings):
    """``COINPILOT_UPBIT_*``: the exchange the reconciliation reads (keys never logged)."""

    model_config = SettingsConfigDict(env_prefix="COINPILOT_UPBIT_", extra="ignore", frozen=True)

    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    base_url: str | None = None


def _common() -> CommonSettings:
    from coinpilot.settings import CommonSettings

    return CommonSettings()


def _database_url(settings: CommonSettings) -> str:
    if settings.database_url is None:
        raise click.UsageError("COINPILOT_DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


@asynccontextmanager
async def _alert_bus(settings: CommonSettings) -> AsyncIterator[Bus | None]:
    """The operator's bus for alerts, or None (with a warning) when NATS cannot be reached."""
    from coinpilot.bus import Bus
    from coinpilot.bus.connect import connect

    try:
        nc = await asyncio.wait_for(connect(settings, "coinpilot-halt", attempts=1), timeout=10)
    except Exception as exc:
        click.echo(f"warning: NATS unreachable, no alert published ({type(exc).__name__}: {exc})", err=True)
        yield None
        return
    try:
        yield Bus(nc.jetstream(), "operator")
    finally:
        await nc.close()


async def _publish(bus: Bus | None, alert: Any, run_id: str) -> None:
    if bus is None:
        return
    try:
        await bus.publish(alert, run_id=run_id)
    except Exception as exc:
        click.echo(f"warning: the alert was not published ({type(exc).__name__}: {exc})", err=True)


@click.command()
@click.option("--run-id", default=None, help="The run compared (default COINPILOT_RUN_ID)")
@click.option("--halt", "halt_on", is_flag=True, help="On a discrepancy halt new entries and alert CRITICAL")
@click.option("--base-url", default=None, help="Upbit's API (default COINPILOT_UPBIT_BASE_URL, else Upbit)")
def reconcile(run_id: str | None, halt_on: bool, base_url: str | None) -> None:
    """Compare the ledger with the Upbit account per currency; exit 1 on a discrepancy beyond dust."""
    from coinpilot.clock import wall_clock_now
    from coinpilot.db import Database
    from services.executor import reconcile as rec
    from services.executor.upbit import DEFAULT_BASE_URL, Credentials, UpbitClient

    common = _common()
    access = UpbitAccess()
    if access.access_key is None or access.secret_key is None:
        raise click.UsageError("COINPILOT_UPBIT_ACCESS_KEY and COINPILOT_UPBIT_SECRET_KEY must be set")
    run = run_id or common.run_id
    settings = rec.ReconcileSettings()
    credentials = Credentials.of(access.access_key.get_secret_value(), access.secret_key.get_secret_value())
    url = base_url or access.base_url or DEFAULT_BASE_URL

    async def go() -> rec.Report:
        db = Database(_database_url(common))
        try:
            async with UpbitClient(credentials, base_url=url) as client:
                if not halt_on:
                    report = await rec.build_report(db, client, settings, run, symbols=common.symbols)
                    await rec.record(db, run, report, wall_clock_now())
                    return report
                async with _alert_bus(common) as bus:
                    return await rec.reconcile_once(
                        db, client, bus, settings, run_id=run, halt=True, symbols=common.symbols
                    )
        finally:
            await db.dispose()

    report = asyncio.run(go())
    click.echo(f"reconciliation of run {run} against {url} ({report.open_orders} open orders)")
    for line in report.lines:
        click.echo("  " + line.text())
    click.echo(report.summary())
    if not report.ok:
        if halt_on:
            click.echo("new entries are halted; clear with `coinpilot halt --clear` once resolved")
        raise SystemExit(DISCREPANCY)


# Dust (``positions.is_dust``) is not an open position: no order could sell it.
_OPEN_POSITIONS = """
SELECT symbol, quantity, avg_price, position_id, opened_at, regime, high_water_mark
FROM positions WHERE run_id = $1 AND quantity > 0 AND NOT is_dust ORDER BY symbol
"""
_LATEST_CANDLE = """
SELECT timestamp, open_price, high_price, low_price, close_price, volume FROM market_data
WHERE symbol = $1 AND interval = '1m' ORDER BY timestamp DESC LIMIT 1
"""


async def flatten_exits(db: Any, run_id: str) -> tuple[list[Any], list[str]]:
    """The exits closing every open position of the run, each decided on its symbol's latest
    recorded minute; and the symbols that have no recorded candle (nothing to quote: skipped)."""
    from datetime import timedelta

    from coinpilot.clock import ensure_utc
    from coinpilot.contracts import MinuteCandle
    from coinpilot.kill_switch import OpenPosition, flatten_exit

    exits, skipped = [], []
    async with db.transaction() as conn:
        rows = await conn.fetch(_OPEN_POSITIONS, run_id)
        for row in rows:
            position = OpenPosition(
                row["symbol"], row["quantity"], row["avg_price"], row["position_id"],
                ensure_utc(row["opened_at"]), row["regime"], row["high_water_mark"],
            )  # fmt: skip
            c = await conn.fetchrow(_LATEST_CANDLE, position.symbol)
            if c is None:
                skipped.append(position.symbol)
                continue
            start = ensure_utc(c["timestamp"])
            candle = MinuteCandle(
                symbol=position.symbol, ts_open=start, ts_event=start + timedelta(minutes=1),
                open=c["open_price"], high=c["high_price"], low=c["low_price"], close=c["close_price"],
                volume=c["volume"],
            )  # fmt: skip
            exits.append(flatten_exit(position, candle))
    return exits, skipped


@click.command()
@click.option("--reason", default="operator halt", show_default=True, help="Why (shown by risk's rejections)")
@click.option("--clear", is_flag=True, help="Lift the halt (only an operator can)")
@click.option("--status", is_flag=True, help="Only show the halt")
@click.option("--run-id", default=None, help="The run to halt (default COINPILOT_RUN_ID, live)")
@click.option(
    "--flatten",
    is_flag=True,
    help="Also close every open position: one KILL_SWITCH exit each on signals.exit (risk approves exits)",
)
def halt(reason: str, clear: bool, status: bool, run_id: str | None, flatten: bool) -> None:
    """Kill switch: stop new entries (exits still pass) until `coinpilot halt --clear`."""
    from coinpilot.clock import wall_clock_now
    from coinpilot.db import Database
    from coinpilot.db import halts as store
    from services.risk.control import halt_alert

    if (clear or status) and flatten:
        raise click.UsageError("--flatten goes with a halt, not with --clear or --status")
    if clear and status:
        raise click.UsageError("--clear and --status exclude each other")
    common = _common()
    run = run_id or common.run_id

    async def go() -> list[str]:
        db = Database(_database_url(common))
        try:
            if status:
                found = await store.active_halt(db, run)
                return [f"run {run}: " + (found.describe() if found else "not halted")]
            if clear:
                cleared = await store.clear_halt(db, run, f"operator:{getpass.getuser()}", wall_clock_now())
                return [f"run {run}: " + (f"cleared: {cleared.describe()}" if cleared else "was not halted")]
            current, is_new = await store.set_halt(db, run, "operator", reason, wall_clock_now())
            out = [
                f"run {run}: " + (current.describe() if is_new else f"already halted: {current.describe()}")
            ]
            if not is_new and not flatten:
                return out
            exits, skipped = await flatten_exits(db, run) if flatten else ([], [])
            async with _alert_bus(common) as bus:
                if is_new:
                    await _publish(bus, halt_alert(current), run)
                if bus is None and exits:
                    raise click.ClickException("NATS unreachable: no exit published (the halt is set)")
                for signal in exits:
                    assert bus is not None
                    await bus.publish(signal, run_id=run)
                    minutes = (wall_clock_now() - signal.ts_event).total_seconds() / 60
                    out.append(
                        f"flatten {signal.symbol}: exit of {signal.quantity} (position {signal.position_id}) "
                        f"published, decided on the close {signal.price} of the minute "
                        f"{signal.snapshot.candle.ts_open:%Y-%m-%d %H:%M}Z ({minutes:.0f} min ago)"
                    )
            out += [f"flatten {symbol}: no recorded candle to quote, not closed" for symbol in skipped]
            if flatten and not exits and not skipped:
                out.append("flatten: no open position")
            return out
        finally:
            await db.dispose()

    lines = asyncio.run(go())
    for line in lines:
        click.echo(line)
    if any(line.endswith("not closed") for line in lines):
        raise SystemExit(1)
