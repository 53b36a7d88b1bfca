"""What one transaction of the executor's ledger reads and answers (pure values, every book's)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from coinpilot.contracts import Fill, OrderRejected
from services.executor.core import Ledger
from services.executor.provenance import Provenance
from services.executor.venue import RecordedMarket


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What an already-handled order was answered with: its fill, or its rejection."""

    message: Fill | OrderRejected


@dataclass(frozen=True, slots=True)
class LockedOrder:
    """The ledger an order may touch (its account row locked), its earlier answer if any, who
    stands behind it and the recorded market of its decision minute."""

    ledger: Ledger
    stored: StoredAnswer | None
    provenance: Provenance
    market: RecordedMarket


@dataclass(frozen=True, slots=True)
class Gauges:
    """The account after a fill: open positions of the run, KRW cash plus KRW positions at cost."""

    open_positions: int
    krw_equity: Decimal | None
