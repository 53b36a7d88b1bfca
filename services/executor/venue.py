"""Where an order gets executed: paper here, Upbit in ``live.venue.UpbitVenue`` (the same protocol).

A venue quotes and says what was executed (price, quantity, fee) or why not; booking it into the
ledger is always ``core.apply_execution``, so the ledger rules never depend on the venue. The
price is the venue's own quote, never the order's: the paper venue quotes the recorded market
(:class:`RecordedMarket`), a live one the exchange; either refuses a quote out of the band around
the order's reference price (``core.refuse_out_of_band``) before it trades.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from coinpilot.contracts import OrderApproved
from coinpilot.errors import TransientError
from services.executor.core import Execution, FillParams, Ledger, Rejection, quote_paper


@dataclass(frozen=True, slots=True)
class RecordedMarket:
    """The recorded candle of an order's decision minute (``market_data``), read with its ledger."""

    candle_start: datetime
    close: Decimal | None
    """None while the collector's recorder has not stored that candle yet."""


class FillVenue(Protocol):
    async def execute(
        self, order: OrderApproved, ledger: Ledger, market: RecordedMarket, *, run_id: str
    ) -> Execution | Rejection:
        """What the venue executed for ``order`` (of run ``run_id``), or why not."""
        ...


class PaperVenue:
    """Fills at the recorded close of the decision minute (the close the strategy decided on), moved
    by the configured slippage, charging the configured fee."""

    def __init__(self, params: FillParams) -> None:
        self.params = params

    async def execute(
        self, order: OrderApproved, ledger: Ledger, market: RecordedMarket, *, run_id: str
    ) -> Execution | Rejection:
        if market.close is None:
            # The recorder runs beside the indicator: it stores the candle, it has not yet. Retried
            # in place until it has, never filled at another price.
            raise TransientError(
                f"no recorded {order.symbol} candle at {market.candle_start.isoformat()} to quote "
                f"order {order.order_id} from yet"
            )
        return quote_paper(order, ledger, self.params, market.close)
