"""Initial schema: every CoinPilot table (BEHAVIOUR §10 with the Rebuild fixes).

Written out in full, not imported from ``coinpilot.db.models``: a migration is a frozen record of
what it did. ``tests/integration/db/test_migrations.py`` proves the result equals the models.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 8)
MARKET_NUMBER = sa.Numeric(28, 8)  # Upbit KRW prices reach ~2e8; volumes can exceed 1e11 base units
TIMESTAMPTZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")
ZERO = sa.text("0")
FALSE = sa.text("false")


def run_id() -> sa.Column:
    return sa.Column("run_id", sa.String(64), server_default=sa.text("'live'"), nullable=False)


def created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, TIMESTAMPTZ, server_default=NOW, nullable=False)


def identity_id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)


def desc(column: str) -> sa.ColumnClause:
    return sa.literal_column(f"{column} DESC")


def upgrade() -> None:
    op.create_table(
        "market_data",
        identity_id(),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("interval", sa.String(10), server_default=sa.text("'1m'"), nullable=False),
        sa.Column("open_price", MARKET_NUMBER, nullable=False),
        sa.Column("high_price", MARKET_NUMBER, nullable=False),
        sa.Column("low_price", MARKET_NUMBER, nullable=False),
        sa.Column("close_price", MARKET_NUMBER, nullable=False),
        sa.Column("volume", MARKET_NUMBER, nullable=False),
        sa.Column("timestamp", TIMESTAMPTZ, nullable=False, comment="candle start, UTC"),
        sa.PrimaryKeyConstraint("timestamp", "id", name="pk_market_data"),
        sa.UniqueConstraint("symbol", "interval", "timestamp", name="uq_market_data_symbol_interval_ts"),
    )
    op.create_index(
        "idx_market_data_symbol_interval_time", "market_data", ["symbol", "interval", desc("timestamp")]
    )

    op.create_table(
        "trading_history",
        sa.Column("id", UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"), nullable=False),
        run_id(),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(10), nullable=False, comment="BUY / SELL"),
        sa.Column("order_type", sa.String(10), server_default=sa.text("'MARKET'"), nullable=False),
        sa.Column("price", MONEY, nullable=False, comment="fill price"),
        sa.Column("decision_price", MONEY, nullable=True, comment="close the decision was made on"),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("amount", MONEY, nullable=False, comment="price x quantity, quote currency"),
        sa.Column("fee", MONEY, server_default=ZERO, nullable=False),
        sa.Column("currency", sa.String(10), server_default=sa.text("'KRW'"), nullable=False),
        sa.Column("status", sa.String(20), server_default=sa.text("'FILLED'"), nullable=False),
        sa.Column(
            "strategy_name", sa.String(50), server_default=sa.text("'AdaptiveMeanReversion'"), nullable=True
        ),
        sa.Column("signal_info", JSONB(), nullable=True),
        created_at(),
        sa.Column("executed_at", TIMESTAMPTZ, nullable=False, comment="event time"),
        sa.Column("regime", sa.String(10), nullable=True),
        sa.Column("high_water_mark", MONEY, nullable=True),
        sa.Column("exit_reason", sa.String(30), nullable=True),
        sa.Column("realized_pnl", MONEY, nullable=True, comment="SELL only, after fees"),
        sa.Column("entry_avg_price", MONEY, nullable=True, comment="SELL only"),
        sa.Column("post_exit_prices", JSONB(), nullable=True),
        sa.Column("trace_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trading_history"),
        sa.UniqueConstraint("run_id", "order_id", name="uq_trading_history_run_order"),
    )
    op.create_index("idx_trading_history_strategy", "trading_history", ["strategy_name"])
    op.create_index("idx_trading_history_symbol_created", "trading_history", ["symbol", desc("created_at")])
    op.create_index(
        "idx_trading_history_sell_executed_at",
        "trading_history",
        [desc("executed_at")],
        postgresql_where=sa.text("side = 'SELL' AND status = 'FILLED' AND executed_at IS NOT NULL"),
    )
    op.create_index("idx_trading_history_run_executed", "trading_history", ["run_id", desc("executed_at")])

    op.create_table(
        "positions",
        run_id(),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("avg_price", MONEY, nullable=False),
        sa.Column("opened_at", TIMESTAMPTZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=NOW, nullable=False),
        sa.Column("regime", sa.String(10), nullable=True),
        sa.Column("high_water_mark", MONEY, nullable=True),
        sa.Column("position_id", sa.String(64), nullable=False, comment="order id of the opening BUY"),
        sa.Column("currency", sa.String(10), server_default=sa.text("'KRW'"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "symbol", name="pk_positions"),
    )

    op.create_table(
        "account_state",
        run_id(),
        sa.Column("currency", sa.String(10), server_default=sa.text("'KRW'"), nullable=False),
        sa.Column("balance", MONEY, nullable=False),
        sa.Column("initial_balance", MONEY, nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "currency", name="pk_account_state"),
    )

    op.create_table(
        "daily_risk_state",
        run_id(),
        sa.Column("date", sa.Date(), nullable=False, comment="trading day"),
        sa.Column("total_pnl", MONEY, server_default=ZERO, nullable=False),
        sa.Column("buy_count", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("sell_count", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("trade_count", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("consecutive_losses", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("cooldown_until", TIMESTAMPTZ, nullable=True),
        sa.Column("is_trading_halted", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "date", name="pk_daily_risk_state"),
    )

    op.create_table(
        "risk_state",
        run_id(),
        sa.Column("consecutive_losses", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("cooldown_until", TIMESTAMPTZ, nullable=True),
        sa.Column(
            "pending_orders",
            JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="symbol -> order_id awaiting fill",
        ),
        sa.Column("last_event_at", TIMESTAMPTZ, nullable=True),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_risk_state"),
    )

    op.create_table(
        "risk_audit",
        identity_id(),
        run_id(),
        sa.Column("violation_type", sa.String(50), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("symbol", sa.String(20), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("ts_event", TIMESTAMPTZ, nullable=False),
        created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_risk_audit"),
        sa.UniqueConstraint("run_id", "order_id", "violation_type", name="uq_risk_audit_run_order_violation"),
    )
    op.create_index("idx_risk_audit_run_ts", "risk_audit", ["run_id", desc("ts_event")])

    op.create_table(
        "agent_decisions",
        identity_id(),
        run_id(),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column(
            "strategy_name", sa.String(50), server_default=sa.text("'AdaptiveMeanReversion'"), nullable=False
        ),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("reason_code", sa.String(40), nullable=True),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Integer(), nullable=True),
        sa.Column("model_used", sa.String(128), nullable=True),
        sa.Column("prompt_hash", sa.String(64), nullable=True),
        sa.Column("price_at_decision", MONEY, nullable=True),
        sa.Column("regime", sa.String(10), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("cost_usd", MONEY, nullable=True),
        sa.Column("boundary_violation", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("boundary_terms", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("ts_event", TIMESTAMPTZ, nullable=False),
        created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_agent_decisions"),
        sa.UniqueConstraint("run_id", "order_id", name="uq_agent_decisions_run_order"),
    )
    op.create_index("idx_agent_decisions_symbol", "agent_decisions", ["symbol"])
    op.create_index("idx_agent_decisions_created_at", "agent_decisions", [desc("created_at")])
    op.create_index("idx_agent_decisions_decision", "agent_decisions", ["decision"])
    op.create_index("idx_agent_decisions_regime", "agent_decisions", ["regime"])
    op.create_index("idx_agent_decisions_run_ts", "agent_decisions", ["run_id", desc("ts_event")])

    op.create_table(
        "regime_history",
        identity_id(),
        run_id(),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("as_of", TIMESTAMPTZ, nullable=False, comment="start of the last closed hour"),
        sa.Column("regime", sa.String(10), nullable=False),
        sa.Column("ma50", MARKET_NUMBER, nullable=True),
        sa.Column("ma200", MARKET_NUMBER, nullable=True),
        sa.Column("diff_pct", sa.Numeric(10, 4), nullable=True),
        sa.Column("hourly_count", sa.Integer(), server_default=ZERO, nullable=False),
        created_at("detected_at"),
        sa.PrimaryKeyConstraint("id", name="pk_regime_history"),
        sa.UniqueConstraint("run_id", "symbol", "as_of", name="uq_regime_history_run_symbol_as_of"),
    )
    op.create_index("idx_regime_history_symbol_time", "regime_history", ["symbol", desc("as_of")])

    op.create_table(
        "llm_usage_events",
        identity_id(),
        run_id(),
        created_at(),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("status", sa.String(20), server_default=sa.text("'success'"), nullable=False),
        sa.Column("error_type", sa.String(80), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("estimated_cost_usd", MONEY, nullable=True),
        sa.Column("price_version", sa.String(32), server_default=sa.text("'v1'"), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("meta", JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_llm_usage_events"),
        sa.UniqueConstraint("run_id", "request_id", name="uq_llm_usage_events_request_id"),
    )
    op.create_index("idx_llm_usage_events_created_at", "llm_usage_events", [desc("created_at")])
    op.create_index("idx_llm_usage_events_route_created", "llm_usage_events", ["route", desc("created_at")])
    op.create_index(
        "idx_llm_usage_events_provider_model_created",
        "llm_usage_events",
        ["provider", "model", desc("created_at")],
    )
    op.create_index("idx_llm_usage_events_status_created", "llm_usage_events", ["status", desc("created_at")])

    op.create_table(
        "llm_call_records",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prompt_version", sa.String(32), nullable=False),
        sa.Column("request", JSONB(), nullable=False),
        sa.Column("response", JSONB(), nullable=False),
        created_at(),
        sa.PrimaryKeyConstraint("key_hash", name="pk_llm_call_records"),
    )

    op.create_table(
        "notification_deliveries",
        identity_id(),
        sa.Column("event_key", sa.String(160), nullable=False),
        sa.Column("sink", sa.String(32), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="success | failed | dead"),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        created_at(),
        sa.CheckConstraint(
            "status IN ('success', 'failed', 'dead')", name="ck_notification_deliveries_status"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_deliveries"),
    )
    op.create_index("idx_notification_deliveries_event_key", "notification_deliveries", ["event_key"])
    op.create_index("idx_notification_deliveries_created_at", "notification_deliveries", [desc("created_at")])

    op.create_table(
        "notification_sent",
        sa.Column("sink", sa.String(32), nullable=False),
        sa.Column("event_key", sa.String(160), nullable=False),
        created_at("sent_at"),
        sa.PrimaryKeyConstraint("sink", "event_key", name="pk_notification_sent"),
    )

    op.create_table(
        "strategy_state",
        run_id(),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("has_position", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("position_id", sa.String(64), nullable=True),
        sa.Column("avg_price", MONEY, nullable=True),
        sa.Column("quantity", MONEY, nullable=True),
        sa.Column("entry_regime", sa.String(10), nullable=True),
        sa.Column("opened_at", TIMESTAMPTZ, nullable=True),
        sa.Column("high_water_mark", MONEY, nullable=True),
        sa.Column("last_candle_at", TIMESTAMPTZ, nullable=True),
        sa.Column("last_reason", sa.String(40), nullable=True),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "symbol", name="pk_strategy_state"),
    )

    op.create_table(
        "job_runs",
        run_id(),
        sa.Column("job_name", sa.String(64), nullable=False),
        sa.Column("boundary", TIMESTAMPTZ, nullable=False),
        created_at(),
        sa.PrimaryKeyConstraint("run_id", "job_name", "boundary", name="pk_job_runs"),
    )

    op.create_table(
        "inbox",
        run_id(),
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("msg_id", sa.String(200), nullable=False),
        created_at("processed_at"),
        sa.PrimaryKeyConstraint("run_id", "consumer", "msg_id", name="pk_inbox"),
    )


TABLES = (
    "market_data",
    "trading_history",
    "positions",
    "account_state",
    "daily_risk_state",
    "risk_state",
    "risk_audit",
    "agent_decisions",
    "regime_history",
    "llm_usage_events",
    "llm_call_records",
    "notification_deliveries",
    "notification_sent",
    "strategy_state",
    "job_runs",
    "inbox",
)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
