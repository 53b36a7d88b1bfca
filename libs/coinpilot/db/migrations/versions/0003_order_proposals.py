"""``order_proposals``: what risk approved, so the executor fills only recorded orders (issue 19).

Risk writes one row per approved order in the transaction of its verdict (a BUY with its sized
amount and whether the agent must confirm it; a SELL for an approved exit); the executor reads it
in the statement that loads an order's ledger and refuses an ``orders.approved`` that matches none.

Written out in full, not imported from ``coinpilot.db.models`` (a migration is a frozen record).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 8)
TIMESTAMPTZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "order_proposals",
        sa.Column("run_id", sa.String(64), server_default=sa.text("'live'"), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(10), nullable=False, comment="BUY / SELL"),
        sa.Column("amount", MONEY, nullable=True, comment="BUY: sized quote amount"),
        sa.Column("reference_price", MONEY, nullable=False),
        sa.Column("needs_confirmation", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("ts_event", TIMESTAMPTZ, nullable=False),
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "order_id", name="pk_order_proposals"),
    )


def downgrade() -> None:
    op.drop_table("order_proposals")
