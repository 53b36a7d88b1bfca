"""Where an order gets executed. Paper now; a live Upbit broker implements the same protocol.

A venue only says what was executed (price, quantity, fee) or why not; booking it into the
ledger is always ``core.apply_execution``, so the ledger rules never depend on the venue.
"""

from __future__ import annotations

from typing import Protocol

from coinpilot.contracts import OrderApproved
from services.executor.core import Execution, FillParams, Ledger, Rejection, quote_paper


class FillVenue(Protocol):
    async def execute(self, order: OrderApproved, ledger: Ledger) -> Execution | Rejection: ...


class PaperVenue:
    """Fills at the decision price moved by the configured slippage, charging the configured fee."""

    def __init__(self, params: FillParams) -> None:
        self.params = params

    async def execute(self, order: OrderApproved, ledger: Ledger) -> Execution | Rejection:
        return quote_paper(order, ledger, self.params)
