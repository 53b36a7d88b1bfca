"""``positions.is_dust`` and ``strategy_state.exiting`` (issue 23: partial sells and dust).

A live market sell that runs out of book executes part of a position: the ledger keeps the rest
open, and the strategy remembers the exit it was deciding (``exiting``, its exit reason) so it
signals the rest again on the next candle. A position worth less than the exchange's minimum
order total cannot be sold: once a SELL of it is refused ``BELOW_EXCHANGE_MINIMUM`` the ledger
holds it as dust (``is_dust``): kept (the exchange holds it too), no longer an open position for
risk or the strategy, and taken over by the next BUY of the symbol.

Written out in full, not imported from ``coinpilot.db.models`` (a migration is a frozen record).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "positions",
        sa.Column(
            "is_dust",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
            comment="worth less than the exchange minimum: held, not an open position",
        ),
    )
    op.add_column(
        "strategy_state",
        sa.Column(
            "exiting",
            sa.String(30),
            nullable=True,
            comment="exit reason of a partly executed exit: the rest is signalled again",
        ),
    )


def downgrade() -> None:
    op.drop_column("strategy_state", "exiting")
    op.drop_column("positions", "is_dust")
