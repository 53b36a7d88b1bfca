"""Where replayed candles come from: files (``coinpilot.candle_files``) or ``market_data``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import text

from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database
from coinpilot.db.market import load_candles

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


async def candles_from_db(
    db: Database, symbols: Sequence[str] | None, start: datetime | None, end: datetime | None
) -> list[MinuteCandle]:
    """Recorded 1m candles of ``symbols`` (all recorded ones if None), merged in (time, symbol) order."""
    async with db.session() as session:
        if not symbols:
            rows = await session.execute(
                text("SELECT DISTINCT symbol FROM market_data WHERE interval = '1m'")
            )
            symbols = sorted(r[0] for r in rows)
        out: list[MinuteCandle] = []
        for symbol in symbols:
            out.extend(await load_candles(session, symbol, start or EARLIEST, end or LATEST))
    return sorted(out, key=lambda c: (c.ts_open, c.symbol))
