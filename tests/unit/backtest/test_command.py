"""`coinpilot backtest` as a user runs it: files or the database, a comparison, the report files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from apps.cli.main import main
from apps.demo import SAMPLE_DIR, sample_files
from coinpilot.candle_files import load_candles
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles

WINDOW = ["--from", "2023-03-27T00:00:00", "--to", "2023-03-28T12:00:00"]


def test_backtest_of_files_with_a_comparison_writes_both_reports(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["backtest", "--data", str(SAMPLE_DIR), *WINDOW, "--out", str(out),
         "--compare-env", "COINPILOT_EXECUTOR_FEE_RATE=0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "base:" in result.output and "compare:" in result.output
    assert "STOP_LOSS" in result.output and "RSI_OVERBOUGHT" in result.output
    fees = [line for line in result.output.splitlines() if line.strip().startswith("fees")]
    assert fees[1].split()[1] == "0.00" and fees[0].split()[1] != "0.00"
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table>" in (out / "report.html").read_text()


@pytest.mark.postgres
async def test_backtest_of_recorded_candles_equals_the_backtest_of_the_files(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade(pg_url)
    db = Database(pg_url)
    await copy_candles(db, load_candles(sample_files()))
    await db.dispose()
    monkeypatch.setenv("COINPILOT_DATABASE_URL", pg_url)
    runner = CliRunner()
    # the command runs its own event loop: call it from a thread, not from this test's loop
    from_db = await asyncio.to_thread(
        runner.invoke, main, ["backtest", "--data", "db", *WINDOW, "--out", str(tmp_path / "a")]
    )
    from_files = await asyncio.to_thread(
        runner.invoke, main, ["backtest", "--data", str(SAMPLE_DIR), *WINDOW, "--out", str(tmp_path / "b")]
    )
    assert from_db.exit_code == 0, from_db.output
    summary = [line for line in from_db.output.splitlines() if line.startswith("  ")]
    assert summary and summary == [line for line in from_files.output.splitlines() if line.startswith("  ")]


def test_a_compare_setting_nothing_reads_fails_before_any_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["backtest", "--data", str(SAMPLE_DIR), *WINDOW, "--out", str(tmp_path),
         "--compare-env", "COINPILOT_EXECUTOR_FEES=0"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Invalid value for --compare-env: COINPILOT_EXECUTOR_FEES: no setting" in result.output
    assert "did you mean COINPILOT_EXECUTOR_FEE_RATE?" in result.output
    assert "warm-up candles" not in result.output and not (tmp_path / "report.html").exists()
