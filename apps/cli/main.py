"""The ``coinpilot`` command line: run services, provision NATS and the database, debug the pipeline."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from coinpilot.service_names import SERVICES

if TYPE_CHECKING:
    from coinpilot.settings import CommonSettings

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from apps.backtest.settings import ModeSettings


def _settings() -> CommonSettings:
    # Imported on use (pydantic-settings, ~0.1 s): `coinpilot backtest` forks its GARCH worker sooner.
    from coinpilot.settings import CommonSettings

    return CommonSettings()


def _database_url() -> str:
    url = _settings().database_url
    if url is None:
        raise click.UsageError("COINPILOT_DATABASE_URL is not set")
    return url.get_secret_value()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CoinPilot: event-driven AI-assisted trading for the Upbit KRW market."""


@main.command()
@click.argument("service")
@click.option(
    "--llm",
    type=click.Choice(["live", "replay", "rules"]),
    help="Agent verdicts: call the model (and record), answer from the record only, or the offline rules",
)
def run(service: str, llm: str | None) -> None:
    """Run SERVICE until SIGTERM/SIGINT: one of collector, indicator, strategy, risk, agent,
    executor, notifier; `all` for every service in one process; or `package.module:build` for a
    plug-in service."""
    if service not in (*SERVICES, "all") and ":" not in service:
        raise click.BadParameter(
            f"one of {', '.join(SERVICES)}, all, or module:function", param_hint="SERVICE"
        )
    from apps.host import run as run_services
    from coinpilot.runtime.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run_services([service], settings, _service_settings(llm)))


def _service_settings(llm: str | None) -> dict[str, BaseSettings]:
    """Settings by service label that ``run`` hands the hosted service of that label instead of it
    reading them from the environment: the agent's, with ``--llm``'s source when given."""
    if llm is None:
        return {}
    from services.agent.settings import AgentSettings

    return {"agent": AgentSettings(llm_mode_source=llm)}


@main.group()
def nats() -> None:
    """NATS JetStream provisioning."""


@nats.command("setup")
def nats_setup() -> None:
    """Create or update every JetStream stream (idempotent)."""
    from coinpilot.bus import ensure_streams
    from coinpilot.bus.connect import connect

    async def go() -> list[str]:
        nc = await connect(_settings())
        try:
            return await ensure_streams(nc.jetstream())
        finally:
            await nc.close()

    changed = asyncio.run(go())
    click.echo("\n".join(changed) if changed else "streams up to date")


@nats.command("permissions")
@click.option("--write", is_flag=True, help="Write the generated files into the repository")
@click.option("--check", is_flag=True, help="Fail when a generated file in the repository is stale")
@click.option("--json", "as_json", is_flag=True, help="Each identity's allow-lists as JSON (e.g. for nsc)")
def nats_permissions(write: bool, check: bool, as_json: bool) -> None:
    """Print the NATS authorization (one user per service, replay, operator) from bus/permissions.py.

    Passwords are environment references ($NATS_PASSWORD_<IDENTITY>), resolved by nats-server.
    """
    from coinpilot.bus.permissions import IDENTITIES, authorization_conf, generated_files, permissions

    if as_json:
        import json

        allowed = {name: permissions(name) for name in IDENTITIES}
        lists = {name: {"publish": a.publish, "subscribe": a.subscribe} for name, a in allowed.items()}
        click.echo(json.dumps(lists, indent=2))
        return
    if not (write or check):
        click.echo(authorization_conf(), nl=False)
        return
    root = Path(__file__).resolve().parents[2]
    stale = [path for path, text in generated_files().items() if _read(root / path) != text]
    if check:
        if stale:
            raise click.ClickException(f"stale: {', '.join(stale)}; run `coinpilot nats permissions --write`")
        click.echo("NATS permissions up to date")
        return
    for path in stale:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(generated_files()[path])
    click.echo("\n".join(f"wrote {p}" for p in stale) if stale else "NATS permissions up to date")


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (TimescaleDB hypertable when the extension exists)."""
    from coinpilot.db import upgrade

    asyncio.run(upgrade(_database_url(), revision))
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.option("--revision", default="base", show_default=True)
def db_downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION."""
    from coinpilot.db import downgrade

    asyncio.run(downgrade(_database_url(), revision))
    click.echo(f"database at {revision}")


@main.command()
@click.argument("subject")
@click.option("--symbol", help="Only messages of this market, e.g. KRW-BTC")
@click.option("--since", type=click.DateTime(), help="Start from this UTC time (JetStream history)")
@click.option("--seq", type=int, help="Start from this stream sequence")
@click.option("--last", is_flag=True, help="Start with the last message of each subject")
@click.option("--json", "as_json", is_flag=True, help="Print the raw message as JSON")
@click.option("--count", type=int, help="Stop after this many messages")
@click.option("--idle-timeout", type=float, help="Stop when nothing arrives for this many seconds")
def tail(
    subject: str,
    symbol: str | None,
    since: datetime | None,
    seq: int | None,
    last: bool,
    as_json: bool,
    count: int | None,
    idle_timeout: float | None,
) -> None:
    """Follow SUBJECT (wildcards allowed, e.g. 'signals.>') and print each message readably."""
    from datetime import UTC

    from apps.cli.tail import tail as run_tail

    since_utc = since.replace(tzinfo=UTC) if since is not None else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_tail(
                _settings(),
                subject,
                symbol=symbol,
                since=since_utc,
                seq=seq,
                last=last,
                as_json=as_json,
                count=count,
                idle_timeout=idle_timeout,
                out=lambda line: click.echo(line),
            )
        )


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--publish", is_flag=True, help="Also publish each candle to candles.1m.<SYM>")
def import_(paths: tuple[Path, ...], publish: bool) -> None:
    """Load candle files (the format of shared/data: gzip CSV) into market_data."""
    from services.collector.importer import run_import

    written = asyncio.run(run_import(_settings(), list(paths), publish=publish))
    click.echo(f"imported {written} candles")


@main.command()
@click.argument("ident")
@click.option("--no-streams", is_flag=True, help="Only the database (skip scanning JetStream)")
@click.option("--run-id", default=None, help="Only this run (ids repeat across replays of the same candles)")
def trace(ident: str, no_streams: bool, run_id: str | None) -> None:
    """Show candle -> indicators -> signal -> risk -> AI -> fill for a trade id, order id or trace id."""
    from apps.cli.trace import build_trace
    from coinpilot.bus.connect import connect
    from coinpilot.db import Database

    async def go() -> list[str]:
        settings = _settings()
        db = Database(settings.database_url.get_secret_value()) if settings.database_url else None
        nc = None if no_streams else await connect(settings, "coinpilot-trace")
        try:
            found = await build_trace(None if nc is None else nc.jetstream(), db, ident, run_id)
            return found.lines()
        finally:
            if nc is not None:
                await nc.close()
            if db is not None:
                await db.dispose()

    for line in asyncio.run(go()):
        click.echo(line)


@main.group()
def report() -> None:
    """Reports on demand."""


@report.command("daily")
@click.option(
    "--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, help="KST report date"
)
@click.option("--run-id", default=None, help="Run whose ledger to report (default COINPILOT_RUN_ID)")
@click.option("--currency", default="KRW", show_default=True)
@click.option("--publish", is_flag=True, help="Also publish on reports.daily (the notifier delivers it)")
@click.option("--json", "as_json", is_flag=True, help="Print the report message as JSON")
def report_daily(day: datetime, run_id: str | None, currency: str, publish: bool, as_json: bool) -> None:
    """The daily report for the 24 h ending 22:00 KST on DATE, exactly as the 22:00 job builds it."""
    from coinpilot.bus import Bus
    from coinpilot.bus.connect import connect
    from coinpilot.db import Database
    from services.notifier.app import make_summarizer
    from services.notifier.daily_report_job import build_daily_report
    from services.notifier.settings import NotifierSettings

    settings = _settings()
    run = run_id or settings.run_id

    async def go():  # type: ignore[no-untyped-def]
        db = Database(_database_url())
        try:
            built = await build_daily_report(
                db, day.date(), run, make_summarizer(NotifierSettings()), currency
            )
        finally:
            await db.dispose()
        if publish:
            nc = await connect(settings, "coinpilot-report")
            try:
                await Bus(nc.jetstream(), "notifier").publish(built, run_id=run)
            finally:
                await nc.close()
        return built

    built = asyncio.run(go())
    if as_json:
        click.echo(built.model_dump_json(indent=2))
        return
    click.echo(f"CoinPilot daily report {built.report_date} ({built.period_start:%Y-%m-%d %H:%M} to "
               f"{built.period_end:%Y-%m-%d %H:%M} UTC), run {run}")  # fmt: skip
    win = "N/A" if built.win_rate is None else f"{built.win_rate:.1%}"
    click.echo(f"  pnl {built.total_pnl:,.0f} {built.currency}  trades {built.trades}  "
               f"sells {built.sell_trades}  win rate {win}  MDD {built.mdd_pct:.2f}%")  # fmt: skip
    for reason, row in sorted(built.exit_breakdown.items()):
        click.echo(f"  {reason:<15} {row.count} sells, avg {row.avg_pnl_pct}%")
    for note in built.notes:
        click.echo(f"  note: {note}")
    click.echo(f"  {built.summary}")


@main.command()
@click.option("--data", "paths", multiple=True, required=True,
              help="Candle files or folders (shared/data format), or 'db' for market_data")  # fmt: skip
@click.option("--symbols", help="Comma-separated markets (default: all in the data)")
@click.option(
    "--from", "start", type=click.DateTime(), help="First traded candle (UTC); earlier ones warm up"
)
@click.option("--to", "end", type=click.DateTime(), help="Stop before this time (UTC)")
@click.option("--config", "config", type=click.Path(exists=True, path_type=Path), help="Strategy YAML")
@click.option("--llm", type=click.Choice(["rules", "replay"]), default="rules", show_default=True)
@click.option("--map-symbol", "renames", multiple=True, help="Trade market FROM as TO, e.g. USDT-BTC=KRW-BTC")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/backtest"),
              show_default=True, help="Where equity.png and report.html go")  # fmt: skip
@click.option("--compare-config", type=click.Path(exists=True, path_type=Path),
              help="Also run with this strategy YAML, side by side")  # fmt: skip
@click.option("--compare-env", multiple=True, help="Also run with these settings, e.g. COINPILOT_X=1")
def backtest(
    paths: tuple[str, ...],
    symbols: str | None,
    start: datetime | None,
    end: datetime | None,
    config: Path | None,
    llm: str,
    renames: tuple[str, ...],
    out_dir: Path,
    compare_config: Path | None,
    compare_env: tuple[str, ...],
) -> None:
    """Run the service cores in one process over recorded candles and report the result.

    Same cores, same event time and same order as a lockstep replay through the services, so the
    ledger is the one the distributed pipeline would book.
    """
    import time
    from datetime import UTC

    from apps.backtest import fit_worker

    fit_worker.fork_spare()  # it imports arch while this process imports the engine
    # At exit, the heap frozen: the interpreter's shutdown then skips collecting it (~0.3 s over
    # the imported libraries' objects; nothing of a backtest needs a collection to be released).
    atexit.register(gc.freeze)
    from apps.backtest.report import write_outputs
    from apps.backtest.run import DEFAULT_WARMUP, run_backtest, split_window, to_series
    from apps.backtest.series import load_series, series_window

    variants = [("base", config, _mode_settings({}, llm))]
    if compare_config or compare_env:
        overrides = dict(_parse_env(compare_env))
        variants.append(
            ("compare", compare_config or config, _mode_settings(overrides, llm, "--compare-env"))
        )
    wanted = [s.strip() for s in symbols.split(",")] if symbols else None
    lo = start.replace(tzinfo=UTC) if start else None
    hi = end.replace(tzinfo=UTC) if end else None
    started = time.perf_counter()
    if list(paths) == ["db"]:
        from coinpilot.db import Database
        from coinpilot.replay.sources import candles_from_db

        async def from_db() -> list:  # type: ignore[type-arg]
            db = Database(_database_url())
            try:
                return await candles_from_db(db, wanted, None, hi)
            finally:
                await db.dispose()

        window = to_series(split_window(asyncio.run(from_db()), lo, hi))
    else:
        files = [Path(p) for p in paths]
        series = load_series(files, symbols=wanted, end=hi, rename=_parse_map(renames))
        window = series_window(series, lo, DEFAULT_WARMUP)
    traded = window.traded()
    click.echo(f"{window.warmup():,} warm-up candles, {traded:,} traded candles")
    reports = []
    records = None
    if llm == "replay":
        from coinpilot.db import Database
        from services.agent.state import CallRecordStore

        records = CallRecordStore(Database(_database_url()))
    for label, cfg, mode in variants:
        with click.progressbar(length=traded, label=f"backtest {label}") as bar:
            seen = [0]

            def progress(done: int, total: int, bar=bar, seen=seen) -> None:  # type: ignore[no-untyped-def]
                bar.update(done - seen[0])
                seen[0] = done

            _, report = asyncio.run(
                run_backtest(
                    window,
                    label=label,
                    run_id=f"backtest-{label}",
                    strategy_config=cfg,
                    settings=mode,
                    progress=progress,
                    records=records,
                )
            )
        reports.append(report)
    for report in reports:
        click.echo("\n".join(report.summary_lines()))
    png, html_path = write_outputs(reports, out_dir)
    elapsed = time.perf_counter() - started
    click.echo(f"report: {html_path} (chart {png})")
    click.echo(f"{traded * len(reports):,} candles in {elapsed:.1f}s end to end")


@main.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".coinpilot/demo"), show_default=True
)
@click.option("--data", "paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Candle files instead of the bundled sample")  # fmt: skip
@click.option(
    "--replay-hours",
    type=float,
    default=48.0,
    show_default=True,
    help="Hours at the end of the data replayed through the services; the rest warms up",
)
@click.option("--run-id", default="demo", show_default=True)
def demo(workdir: Path, paths: tuple[Path, ...], replay_hours: float, run_id: str) -> None:
    """The whole pipeline on this machine (`make run`): real NATS, PostgreSQL and Redis (from the
    environment or started from wheels), the seven services as processes, a lockstep replay of real
    candles, and a summary. Ctrl-C stops everything cleanly."""
    from apps.demo import DemoOptions, run_demo

    options = DemoOptions(workdir=workdir, files=paths, run_id=run_id, replay_hours=replay_hours)
    try:
        asyncio.run(run_demo(options, out=click.echo))
    except KeyboardInterrupt:
        click.echo("interrupted: services and servers stopped")


def _mode_settings(overrides: dict[str, str], llm: str, param_hint: str | None = None) -> ModeSettings:
    """A backtest variant's settings, built before any variant runs so a bad name fails at once."""
    from pydantic import ValidationError

    from apps.backtest.settings import ModeSettings
    from coinpilot.errors import ConfigError

    try:
        return ModeSettings.from_environment(overrides, llm=llm)
    except (ConfigError, ValidationError) as exc:
        if param_hint is None:
            raise click.ClickException(f"settings from the environment: {exc}") from exc
        raise click.BadParameter(str(exc), param_hint=param_hint) from exc


def _parse_env(pairs: tuple[str, ...], param_hint: str = "--compare-env") -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=param_hint)
        out.append((key, value))
    return out


def _parse_map(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected FROM=TO, got {pair!r}", param_hint="--map-symbol")
        out[src] = dst
    return out


@main.command()
@click.option("--source", type=click.Choice(["file", "db"]), default="file", show_default=True)
@click.option("--path", "paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Candle files or folders (--source file)")  # fmt: skip
@click.option("--target", help="NATS URL to publish into (default COINPILOT_NATS_URL)")
@click.option("--run-id", required=True, help="Run id carried by every message and every row written")
@click.option("--pace", default="lockstep", show_default=True, help="lockstep | realtime | max | xN")
@click.option("--symbols", help="Comma-separated markets to replay (default: all in the source)")
@click.option("--from", "start", type=click.DateTime(), help="First candle open time (UTC)")
@click.option("--to", "end", type=click.DateTime(), help="Stop before this open time (UTC)")
@click.option(
    "--map-symbol", "renames", multiple=True, help="Publish market FROM as TO, e.g. USDT-BTC=KRW-BTC"
)
@click.option("--drain-timeout", type=float, default=120.0, show_default=True)
@click.option("--outage-timeout", type=float, default=300.0, show_default=True,
              help="Seconds NATS may be away (restarting) before the replay gives up")  # fmt: skip
def replay(
    source: str,
    paths: tuple[Path, ...],
    target: str | None,
    run_id: str,
    pace: str,
    symbols: str | None,
    start: datetime | None,
    end: datetime | None,
    renames: tuple[str, ...],
    drain_timeout: float,
    outage_timeout: float,
) -> None:
    """Publish recorded candles into a NATS (e.g. staging) under RUN_ID, paced.

    `lockstep` publishes the next timestamp only after every durable consumer has drained the
    previous one, so a replay reaches the same ledger as `coinpilot backtest`. A NATS restart is
    ridden out: the replay reconnects and resumes, each candle stored once (its Nats-Msg-Id).
    """
    from datetime import UTC

    from coinpilot.bus import ensure_streams
    from coinpilot.bus.connect import connect
    from coinpilot.candle_files import load_candles
    from coinpilot.replay import parse_pace, replay_candles

    settings = _settings()
    if target:
        settings = settings.model_copy(update={"nats_url": target})
    try:
        paced = parse_pace(pace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pace") from exc
    wanted = [s.strip() for s in symbols.split(",")] if symbols else None
    lo = start.replace(tzinfo=UTC) if start else None
    hi = end.replace(tzinfo=UTC) if end else None
    if source == "file":
        if not paths:
            raise click.UsageError("--source file needs --path")
        candles = load_candles(list(paths), symbols=wanted, start=lo, end=hi, rename=_parse_map(renames))
    else:
        from coinpilot.db import Database
        from coinpilot.replay.sources import candles_from_db

        async def from_db() -> list:  # type: ignore[type-arg]
            db = Database(_database_url())
            try:
                return await candles_from_db(db, wanted, lo, hi)
            finally:
                await db.dispose()

        candles = asyncio.run(from_db())
    click.echo(f"replaying {len(candles):,} candles as run {run_id!r} at pace {pace}")

    async def go():  # type: ignore[no-untyped-def]
        nc = await connect(settings, "coinpilot-replay")
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            return await replay_candles(
                js,
                candles,
                run_id=run_id,
                pace=paced,
                drain_timeout=drain_timeout,
                outage_timeout=outage_timeout,
            )
        finally:
            await nc.close()

    result = asyncio.run(go())
    click.echo(
        f"published {result.candles:,} candles over {result.timestamps:,} timestamps "
        f"in {result.seconds:.1f}s "
        f"({result.candles_per_second:,.0f} candles/s)"
    )


@main.command("replay-stage")
@click.option("--run-id", required=True, help="The recorded run to replay")
@click.option("--stage", type=click.Choice(["risk", "strategy", "agent", "executor"]), required=True,
              help="The stage to re-run on the run's recorded inputs")  # fmt: skip
@click.option("--through", type=click.Choice(["executor"]),
              help="Re-run the trading loop down to the executor (the ledger effect)")  # fmt: skip
@click.option("--as", "replay_run", help="Run id of the replay (default: <run-id>-replay)")
@click.option(
    "--strategy-config", type=click.Path(exists=True, path_type=Path), help="Strategy YAML to replay with"
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Service setting, e.g. COINPILOT_RISK_..."
)
@click.option("--from", "start", type=click.DateTime(), help="First event time to replay (UTC)")
@click.option("--to", "end", type=click.DateTime(), help="Stop before this event time (UTC)")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the diff as JSON here")
@click.option("--html", "html_out", type=click.Path(path_type=Path), help="Write the diff as HTML here")
@click.option("--llm", type=click.Choice(["rules", "replay"]), default="rules", show_default=True,
              help="The loop's agent: the offline rules, or the verdicts the run recorded")  # fmt: skip
@click.option(
    "--into", help="Publish the replay into this NATS (e.g. staging) instead of running it in process"
)
@click.option("--drain-timeout", type=float, default=120.0, show_default=True,
              help="--into: seconds the target's pipeline may take to drain one candle")  # fmt: skip
def replay_stage(
    run_id: str,
    stage: str,
    through: str | None,
    replay_run: str | None,
    strategy_config: Path | None,
    sets: tuple[str, ...],
    start: datetime | None,
    end: datetime | None,
    json_out: Path | None,
    html_out: Path | None,
    llm: str,
    into: str | None,
    drain_timeout: float,
) -> None:
    """Re-run one stage of a recorded run on its recorded inputs, in process, with new parameters,
    and print what it decided differently (nothing is published: the live run is not disturbed).

    With --into, the run's candles are published under the replay's run id into that NATS, whose
    deployed services (configured with the what-if) re-run the pipeline; the diff is the same."""
    from datetime import UTC

    from nats.errors import NoServersError

    from apps.stage_replay.run import check_stages, stage_replay
    from coinpilot.bus.connect import connect
    from coinpilot.db import Database

    lo = start.replace(tzinfo=UTC) if start else None
    hi = end.replace(tzinfo=UTC) if end else None
    if into is not None:
        _reject_overrides_into(strategy_config, sets)
        diff = _replay_into(into, stage, run_id, replay_run or f"{run_id}-replay", lo, hi, drain_timeout)
        _write_diff(diff, json_out, html_out)
        return
    try:
        check_stages(stage, through)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    overrides = dict(_parse_env(sets, "--set"))
    settings = _mode_settings(overrides, llm, "--set")
    common = _settings()

    async def go():  # type: ignore[no-untyped-def]
        try:
            nc = await connect(common, "coinpilot-replay-stage", attempts=3)
        except (OSError, NoServersError) as exc:
            raise click.ClickException(f"NATS at {common.nats_url} did not answer: {exc}") from exc
        db = Database(common.database_url.get_secret_value()) if common.database_url else None
        try:
            return await stage_replay(
                nc.jetstream(),
                db,
                stage=stage,
                through=through,
                run_id=run_id,
                replay_run=replay_run or f"{run_id}-replay",
                settings=settings,
                strategy_config=strategy_config,
                overrides=overrides | ({"strategy_config": str(strategy_config)} if strategy_config else {}),
                start=lo,
                end=hi,
            )
        finally:
            await nc.close()
            if db is not None:
                await db.dispose()

    try:
        diff = asyncio.run(go())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    _write_diff(diff, json_out, html_out)


def _reject_overrides_into(strategy_config: Path | None, sets: tuple[str, ...]) -> None:
    ctx = click.get_current_context()
    given = [
        name
        for name, passed in (
            ("--strategy-config", strategy_config is not None),
            ("--set", bool(sets)),
            ("--llm", ctx.get_parameter_source("llm") is not click.core.ParameterSource.DEFAULT),
            ("--through", ctx.params.get("through") is not None),
        )
        if passed
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} cannot go with --into: the target's services re-run the whole pipeline "
            "with the settings they were deployed with (deploy the target with the what-if)"
        )


def _replay_into(
    into: str,
    stage: str,
    run_id: str,
    replay_run: str,
    start: datetime | None,
    end: datetime | None,
    drain_timeout: float,
):  # type: ignore[no-untyped-def]
    from nats.errors import NoServersError

    from apps.stage_replay.distributed import NoRecordedCandles, Target, replay_into
    from coinpilot.bus import ensure_streams
    from coinpilot.bus.connect import connect
    from coinpilot.db import Database

    common = _settings()

    async def go():  # type: ignore[no-untyped-def]
        clients = []
        db = Database(common.database_url.get_secret_value()) if common.database_url else None
        try:
            for url in (common.nats_url, into):
                try:
                    clients.append(
                        await connect(
                            common.model_copy(update={"nats_url": url}), "coinpilot-replay-stage", attempts=3
                        )
                    )
                except (OSError, NoServersError) as exc:
                    raise click.ClickException(f"NATS at {url} did not answer: {exc}") from exc
            source, target = (c.jetstream() for c in clients)
            await ensure_streams(target)
            click.echo(f"publishing run {run_id!r} into {into} as {replay_run!r}")
            return await replay_into(
                source,
                Target(target, drain_timeout=drain_timeout),
                db,
                stage=stage,
                run_id=run_id,
                replay_run=replay_run,
                start=start,
                end=end,
                target_name=into,
            )
        finally:
            for c in clients:
                await c.close()
            if db is not None:
                await db.dispose()

    try:
        return asyncio.run(go())
    except (ValueError, NoRecordedCandles) as exc:
        raise click.UsageError(str(exc)) from exc


def _write_diff(diff, json_out: Path | None, html_out: Path | None) -> None:  # type: ignore[no-untyped-def]
    click.echo("\n".join(diff.lines()))
    if json_out is not None:
        json_out.write_text(diff.to_json())
    if html_out is not None:
        html_out.write_text(diff.to_html())


from apps.cli.dlq import dlq  # noqa: E402  (its own module: list, show, redrive)

main.add_command(dlq)

from apps.cli.live import halt, reconcile  # noqa: E402  (live trading: kill switch, reconciliation)

main.add_command(reconcile)
main.add_command(halt)

if __name__ == "__main__":
    main()
