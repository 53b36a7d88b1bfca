"""The chart rendered by the GARCH worker is the chart rendered in line, and a gone worker costs nothing.

After its fits, the worker of ``FitsAhead`` renders the report's chart (``charts_ahead``); the
bytes must equal ``render_chart`` in the main process, and whenever the worker is gone, closed or
killed, the chart is rendered in line.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from apps.backtest import engine as engine_module
from apps.backtest.report import BacktestReport, Chart, chart_of, chart_png, render_chart, write_outputs
from apps.backtest.run import run_backtest, split_window
from apps.backtest.volatility_track import FitsAhead
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.strategy_config import load_strategy_config

VOLATILITY = load_strategy_config(None).risk_management.volatility
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
async def sample_report() -> BacktestReport:
    _, report = await run_backtest(split_window(load_candles(sample_files()), None, None), label="sample")
    return report


@pytest.fixture(scope="module")
def chart(sample_report: BacktestReport) -> Chart:
    return chart_of([sample_report, sample_report])


def idle_worker() -> FitsAhead:
    """A fit worker with nothing to fit: it goes straight to serving charts."""
    ahead = FitsAhead(VOLATILITY).start()
    ahead.submit({})
    return ahead


def test_the_worker_renders_the_bytes_rendered_in_line(chart: Chart) -> None:
    renderer = idle_worker().to_chart_renderer()
    assert renderer is not None
    try:
        png = renderer.render(chart)
        assert png is not None and png[:4] == b"\x89PNG"
        assert png == render_chart(chart)
        assert renderer.render(chart) == png  # it serves one chart after another
    finally:
        renderer.close()


def test_a_closed_worker_renders_nothing_and_the_chart_is_rendered_in_line(
    sample_report: BacktestReport, chart: Chart
) -> None:
    renderer = idle_worker().to_chart_renderer()
    assert renderer is not None
    renderer.close()
    assert renderer.render(chart) is None
    report = replace(sample_report, chart_renderer=renderer)
    assert chart_png([report, report]) == render_chart(chart)


def test_a_killed_worker_renders_nothing_and_the_chart_is_rendered_in_line(
    sample_report: BacktestReport, chart: Chart
) -> None:
    renderer = idle_worker().to_chart_renderer()
    assert renderer is not None
    os.kill(renderer.pid, signal.SIGKILL)  # dies without a word, its end of the pipe left open
    report = replace(sample_report, chart_renderer=renderer)
    assert chart_png([report, report]) == render_chart(chart)
    assert renderer.render(chart) is None


def test_a_gone_worker_is_not_handed_over() -> None:
    ahead = idle_worker()
    ahead.close()
    assert ahead.to_chart_renderer() is None


def test_fits_never_read_are_dropped_before_the_chart_is_asked_for(chart: Chart) -> None:
    """Handed over before any fit was read: the fits still coming are skipped, not taken for a PNG."""
    start = datetime(2025, 6, 1, tzinfo=UTC)
    hours = [
        (start + k * HOUR, Decimal(100) + Decimal(k % 7) / 10 + Decimal(k) / 1000, start + (k + 1) * HOUR)
        for k in range(VOLATILITY.min_returns + 30)
    ]
    ahead = FitsAhead(VOLATILITY).start()
    ahead.submit({"KRW-BTC": hours})  # its refits are made, and sent, after the handover
    renderer = ahead.to_chart_renderer()
    assert renderer is not None
    try:
        assert renderer.render(chart) == render_chart(chart)
    finally:
        renderer.close()


async def test_a_run_with_fits_ahead_writes_the_chart_in_its_worker_then_releases_it(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engine_module, "FIT_AHEAD_MIN", 1)
    candles = load_candles(
        [shared_data / "BTC_USDT-1m-20250520-20250818.csv.gz"], end=datetime(2025, 6, 24, tzinfo=UTC)
    )
    result, report = await run_backtest(split_window(candles, None, None), label="35 days")
    renderer = report.chart_renderer
    assert renderer is not None and result.chart_renderer is renderer
    png_path, html_path = write_outputs([report], tmp_path)
    assert png_path.read_bytes() == render_chart(chart_of([report]))
    assert report.chart_renderer is None and renderer.render(chart_of([report])) is None
    assert html_path.exists()
