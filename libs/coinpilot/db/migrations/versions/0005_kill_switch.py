"""``trading_halts`` (the kill switch) and ``reconciliations`` (ledger vs exchange), issue 23.

A run is halted while it has a ``trading_halts`` row with ``cleared_at`` NULL: risk refuses new
entries (exits still pass). Reconciliation, an operator (``coinpilot halt``) or the operator's
``control.halt`` message set it; only an operator clears it. ``reconciliations`` keeps each
comparison of the ledger with the exchange's accounts (``coinpilot trace`` shows the last one).

Written out in full, not imported from ``coinpilot.db.models`` (a migration is a frozen record).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trading_halts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.String(64), server_default=sa.text("'live'"), nullable=False),
        sa.Column("source", sa.String(32), nullable=False, comment="reconcile / operator / subject"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("halted_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("cleared_at", TIMESTAMPTZ, nullable=True),
        sa.Column("cleared_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trading_halts"),
    )
    op.create_index(
        "idx_trading_halts_run_halted", "trading_halts", ["run_id", sa.literal_column("halted_at DESC")]
    )
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.String(64), server_default=sa.text("'live'"), nullable=False),
        sa.Column("checked_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("venue", sa.String(32), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("discrepancies", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "report",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="per currency: ledger, exchange, difference, tolerance, verdict",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliations"),
    )
    op.create_index(
        "idx_reconciliations_run_checked", "reconciliations", ["run_id", sa.literal_column("checked_at DESC")]
    )


def downgrade() -> None:
    op.drop_index("idx_reconciliations_run_checked", table_name="reconciliations")
    op.drop_table("reconciliations")
    op.drop_index("idx_trading_halts_run_halted", table_name="trading_halts")
    op.drop_table("trading_halts")
