"""``venue_orders``: every order the executor sends to a live exchange, written before it is sent.

The executor commits a row in state ``intended`` (its own transaction) before the order leaves the
process, then records what the exchange answered (``submitted``/``open`` with its uuid, then
``done``/``cancelled`` with what executed, or ``failed``). A redelivery after a crash finds the row
and looks the order up by ``identifier`` (unique: Upbit never accepts one twice); it never sends it
again (issue 23). The state machine is ``services.executor.live.states``.

Written out in full, not imported from ``coinpilot.db.models`` (a migration is a frozen record).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 8)
TIMESTAMPTZ = sa.DateTime(timezone=True)
STATES = "('intended', 'submitted', 'open', 'done', 'cancelled', 'failed')"


def upgrade() -> None:
    op.create_table(
        "venue_orders",
        sa.Column("run_id", sa.String(64), server_default=sa.text("'live'"), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("identifier", sa.String(64), nullable=False, comment="the exchange's client order id"),
        sa.Column("market", sa.String(20), nullable=False),
        sa.Column("side", sa.String(10), nullable=False, comment="bid / ask"),
        sa.Column("ord_type", sa.String(10), nullable=False, comment="price (market buy) / market (sell)"),
        sa.Column("amount", MONEY, nullable=True, comment="requested quote amount (market buy)"),
        sa.Column("volume", MONEY, nullable=True, comment="requested base volume (market sell)"),
        sa.Column("min_total", MONEY, nullable=False, comment="the exchange's minimum order total"),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("exchange_uuid", sa.String(64), nullable=True),
        sa.Column("exchange_state", sa.String(10), nullable=True, comment="wait / watch / done / cancel"),
        sa.Column("executed_volume", MONEY, server_default=sa.text("0"), nullable=False),
        sa.Column("funds", MONEY, server_default=sa.text("0"), nullable=False),
        sa.Column("paid_fee", MONEY, server_default=sa.text("0"), nullable=False),
        sa.Column("trades", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column(
            "remainder", MONEY, nullable=True, comment="unspent quote (market buy) or unexecuted volume"
        ),
        sa.Column("dust", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", TIMESTAMPTZ, nullable=True),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "order_id", name="pk_venue_orders"),
        sa.UniqueConstraint("identifier", name="uq_venue_orders_identifier"),
        sa.CheckConstraint(f"state IN {STATES}", name="ck_venue_orders_state"),
    )
    op.create_index("idx_venue_orders_created", "venue_orders", ["created_at"])  # the day's BUYs (caps)


def downgrade() -> None:
    op.drop_index("idx_venue_orders_created", table_name="venue_orders")
    op.drop_table("venue_orders")
