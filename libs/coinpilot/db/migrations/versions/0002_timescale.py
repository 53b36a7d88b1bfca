"""TimescaleDB for ``market_data`` when the extension is available; a no-op on plain PostgreSQL.

Upgrade, only if ``pg_available_extensions`` lists ``timescaledb``:

* ``CREATE EXTENSION IF NOT EXISTS timescaledb`` (remembered with a comment when this migration
  created it, so the downgrade drops only what it added);
* ``create_hypertable('market_data', 'timestamp', migrate_data => true)`` (default 7-day chunks);
* compression with ``segmentby = 'symbol, interval'`` and a policy compressing chunks older than
  7 days (BEHAVIOUR §10.1);
* a retention policy dropping chunks older than N days. N comes from ``-x
  market_data_retention_days=N`` (or ``upgrade(url, x_arguments={...})``), else env
  ``COINPILOT_MARKET_DATA_RETENTION_DAYS``, else 365; ``0`` means keep everything.

On plain PostgreSQL nothing happens: ``market_data`` stays an ordinary table with the same columns,
keys and indexes, and every query in ``coinpilot.db.market`` works on both (``date_bin``, never
``time_bucket``).

Downgrade turns the hypertable back into the plain table of 0001 (rows kept, identity continued)
and drops the extension if this migration created it and no other hypertable uses it.

Both directions are one PL/pgSQL ``DO`` block that checks the server itself, so ``--sql`` (offline)
output is correct for either kind of server, and the body is syntax-checked even where it is skipped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKER = "installed by coinpilot migration 0002"
DEFAULT_RETENTION_DAYS = 365
COLUMNS = "id, symbol, interval, open_price, high_price, low_price, close_price, volume, timestamp"


def retention_days() -> int:
    options = {
        **context.get_x_argument(as_dictionary=True),
        **context.config.attributes.get("x_arguments", {}),
    }
    raw = options.get("market_data_retention_days") or os.environ.get("COINPILOT_MARKET_DATA_RETENTION_DAYS")
    days = DEFAULT_RETENTION_DAYS if raw in (None, "") else int(raw)
    if days < 0:
        raise ValueError(f"market_data_retention_days must be >= 0, got {days}")
    return days


def upgrade() -> None:
    days = retention_days()
    retention = (
        f"PERFORM add_retention_policy('market_data', INTERVAL '{days} days', if_not_exists => true);"
        if days > 0
        else ""
    )
    op.execute(
        f"""
DO $timescale$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb not available: market_data stays a plain PostgreSQL table';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE EXTENSION timescaledb;
        COMMENT ON EXTENSION timescaledb IS '{MARKER}';
    END IF;
    PERFORM create_hypertable('market_data', 'timestamp', migrate_data => true, if_not_exists => true);
    ALTER TABLE market_data SET (
        timescaledb.compress,
        timescaledb.compress_segmentby = 'symbol, interval',
        timescaledb.compress_orderby = 'timestamp DESC'
    );
    PERFORM add_compression_policy('market_data', INTERVAL '7 days', if_not_exists => true);
    {retention}
END
$timescale$
"""
    )


def downgrade() -> None:
    table = plain_market_data()
    dialect = postgresql.dialect()
    ddl = ";\n            ".join(
        str(statement.compile(dialect=dialect)).strip()
        for statement in (CreateTable(table), *(CreateIndex(index) for index in table.indexes))
    )
    op.execute(
        f"""
DO $timescale$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'market_data'
    ) THEN
        CREATE TEMP TABLE market_data_rows ON COMMIT DROP AS SELECT {COLUMNS} FROM market_data;
        DROP TABLE market_data;
        {ddl};
        COMMENT ON COLUMN market_data."timestamp" IS 'candle start, UTC';
        INSERT INTO market_data ({COLUMNS}) OVERRIDING SYSTEM VALUE SELECT {COLUMNS} FROM market_data_rows;
        PERFORM setval(
            pg_get_serial_sequence('market_data', 'id'),
            COALESCE((SELECT max(id) FROM market_data), 0) + 1,
            false
        );
    END IF;
    IF obj_description(
        (SELECT oid FROM pg_extension WHERE extname = 'timescaledb'), 'pg_extension'
    ) = '{MARKER}'
    AND NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables) THEN
        DROP EXTENSION timescaledb;
    END IF;
END
$timescale$
"""
    )


def plain_market_data() -> sa.Table:
    """``market_data`` exactly as 0001 created it (dropping a hypertable drops its chunks and policies)."""
    metadata = sa.MetaData()
    table = sa.Table(
        "market_data",
        metadata,
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("interval", sa.String(10), server_default=sa.text("'1m'"), nullable=False),
        sa.Column("open_price", sa.Numeric(28, 8), nullable=False),
        sa.Column("high_price", sa.Numeric(28, 8), nullable=False),
        sa.Column("low_price", sa.Numeric(28, 8), nullable=False),
        sa.Column("close_price", sa.Numeric(28, 8), nullable=False),
        sa.Column("volume", sa.Numeric(28, 8), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("timestamp", "id", name="pk_market_data"),
        sa.UniqueConstraint("symbol", "interval", "timestamp", name="uq_market_data_symbol_interval_ts"),
    )
    sa.Index(
        "idx_market_data_symbol_interval_time", table.c.symbol, table.c.interval, table.c.timestamp.desc()
    )
    return table
