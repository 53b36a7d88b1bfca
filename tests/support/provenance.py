"""What stands behind a genuine order, for tests that hand orders to the executor themselves.

In the pipeline risk records its approval (``order_proposals``), the agent its CONFIRM
(``agent_decisions``) and the collector's recorder the candle the order is quoted from
(``market_data``). :class:`Approvals` writes the same rows, and puts ``market_data`` back as it
found it afterwards (it has no run id: every test of the session shares it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from coinpilot.contracts import OrderApproved, Side
from coinpilot.db import Database

_APPROVE = """
INSERT INTO order_proposals
    (run_id, order_id, symbol, side, amount, reference_price, needs_confirmation, ts_event)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (run_id, order_id) DO UPDATE SET
    symbol = EXCLUDED.symbol, side = EXCLUDED.side, amount = EXCLUDED.amount,
    reference_price = EXCLUDED.reference_price, needs_confirmation = EXCLUDED.needs_confirmation,
    ts_event = EXCLUDED.ts_event
"""
_DECIDE = """
INSERT INTO agent_decisions (run_id, order_id, symbol, decision, ts_event)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT ON CONSTRAINT uq_agent_decisions_run_order DO UPDATE SET decision = EXCLUDED.decision
"""
_CANDLE_BEFORE = """
SELECT open_price, high_price, low_price, close_price, volume FROM market_data
WHERE symbol = $1 AND interval = '1m' AND timestamp = $2
"""
_CANDLE = """
INSERT INTO market_data
    (symbol, interval, open_price, high_price, low_price, close_price, volume, timestamp)
VALUES ($1, '1m', $3, $4, $5, $6, $7, $2)
ON CONFLICT (symbol, interval, timestamp) DO UPDATE SET
    open_price = EXCLUDED.open_price, high_price = EXCLUDED.high_price,
    low_price = EXCLUDED.low_price, close_price = EXCLUDED.close_price, volume = EXCLUDED.volume
"""
_DROP_CANDLE = "DELETE FROM market_data WHERE symbol = $1 AND interval = '1m' AND timestamp = $2"

Ohlcv = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]


def decision_minute(order: OrderApproved) -> datetime:
    return order.ts_event - timedelta(minutes=1)


class Approvals:
    """Risk's record, the agent's verdict and the recorded candle of orders a test sends."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._found: dict[tuple[str, datetime], Ohlcv | None] = {}

    async def approve(
        self,
        run_id: str,
        order: OrderApproved,
        *,
        amount: Decimal | None = None,
        verdict: str | None = "CONFIRM",
        close: Decimal | None = None,
    ) -> None:
        """Record ``order`` as risk approved it (a BUY sized at ``amount``, default its own, and
        reviewed by the agent with ``verdict``; None = no decision yet) and its decision minute's
        candle closing at ``close`` (default: the order's reference price, as in the pipeline)."""
        buy = order.side is Side.BUY
        sized = (amount if amount is not None else order.amount) if buy else None
        async with self.db.transaction() as conn:
            await conn.execute(
                _APPROVE,
                run_id,
                order.order_id,
                order.symbol,
                str(order.side),
                sized,
                order.reference_price,
                buy,
                order.ts_event,
            )
            if buy and verdict is not None:
                await conn.execute(_DECIDE, run_id, order.order_id, order.symbol, verdict, order.ts_event)
        await self.candle(order.symbol, decision_minute(order), close or order.reference_price)

    async def candle(self, symbol: str, start: datetime, close: Decimal) -> None:
        """Record the 1m candle starting at ``start`` with every price at ``close``."""
        async with self.db.transaction() as conn:
            if (symbol, start) not in self._found:
                row = await conn.fetchrow(_CANDLE_BEFORE, symbol, start)
                self._found[(symbol, start)] = None if row is None else tuple(row.values())  # type: ignore[assignment]
            await conn.execute(_CANDLE, symbol, start, close, close, close, close, Decimal(1))

    async def restore(self) -> None:
        """``market_data`` as it was before this test recorded candles."""
        async with self.db.transaction() as conn:
            for (symbol, start), found in self._found.items():
                if found is None:
                    await conn.execute(_DROP_CANDLE, symbol, start)
                else:
                    await conn.execute(_CANDLE, symbol, start, *found)
        self._found.clear()
