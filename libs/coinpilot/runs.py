"""Run ids: every message, row and cache key belongs to one run (a replay or backtest has its own)."""

from __future__ import annotations

#: The run of the live deployment (a replay's run id is anything else).
LIVE_RUN = "live"
