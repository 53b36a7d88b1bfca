"""Schema conventions every table keeps, checked on the models (no database needed)."""

from __future__ import annotations

import pytest
from sqlalchemy import DateTime, Numeric, String

import coinpilot.cache
import coinpilot.db
from coinpilot.db import TABLES, Base

TIMESTAMPS = [
    f"{table.name}.{column.name}"
    for table in Base.metadata.sorted_tables
    for column in table.columns
    if isinstance(column.type, DateTime)
]
# Tables that are not per-run state: shared facts, a cache keyed by content, notification plumbing.
WITHOUT_RUN_ID = {"market_data", "llm_call_records", "notification_deliveries", "notification_sent"}


@pytest.mark.parametrize("name", TIMESTAMPS)
def test_every_timestamp_column_is_timezone_aware(name: str) -> None:
    table, column = name.split(".")
    assert Base.metadata.tables[table].columns[column].type.timezone


@pytest.mark.parametrize("table", sorted(Base.metadata.tables))
def test_every_per_run_table_has_a_live_defaulted_run_id(table: str) -> None:
    columns = Base.metadata.tables[table].columns
    if table in WITHOUT_RUN_ID:
        assert "run_id" not in columns
        return
    run_id = columns["run_id"]
    assert isinstance(run_id.type, String) and run_id.type.length == 64
    assert not run_id.nullable
    assert str(run_id.server_default.arg) == "'live'"


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("positions", ["run_id", "symbol"]),
        ("account_state", ["run_id", "currency"]),
        ("daily_risk_state", ["run_id", "date"]),
        ("risk_state", ["run_id"]),
        ("strategy_state", ["run_id", "symbol"]),
        ("job_runs", ["run_id", "job_name", "boundary"]),
        ("inbox", ["run_id", "consumer", "msg_id"]),
        ("order_proposals", ["run_id", "order_id"]),
        ("venue_orders", ["run_id", "order_id"]),
        ("market_data", ["timestamp", "id"]),
        ("notification_sent", ["sink", "event_key"]),
        ("llm_call_records", ["key_hash"]),
    ],
)
def test_primary_keys_make_rows_per_run(table: str, keys: list[str]) -> None:
    assert [c.name for c in Base.metadata.tables[table].primary_key.columns] == keys


@pytest.mark.parametrize(
    ("table", "name", "columns"),
    [
        ("market_data", "uq_market_data_symbol_interval_ts", ["symbol", "interval", "timestamp"]),
        ("trading_history", "uq_trading_history_run_order", ["run_id", "order_id"]),
        ("agent_decisions", "uq_agent_decisions_run_order", ["run_id", "order_id"]),
        ("risk_audit", "uq_risk_audit_run_order_violation", ["run_id", "order_id", "violation_type"]),
        ("regime_history", "uq_regime_history_run_symbol_as_of", ["run_id", "symbol", "as_of"]),
    ],
)
def test_idempotency_keys_are_unique_constraints(table: str, name: str, columns: list[str]) -> None:
    constraints = {c.name: c for c in Base.metadata.tables[table].constraints}
    assert [c.name for c in constraints[name].columns] == columns


def test_market_prices_are_wide_enough_for_krw_and_money_keeps_eight_decimals() -> None:
    market = Base.metadata.tables["market_data"].columns
    for name in ("open_price", "high_price", "low_price", "close_price", "volume"):
        assert (market[name].type.precision, market[name].type.scale) == (28, 8)
    trading = Base.metadata.tables["trading_history"].columns
    assert isinstance(trading["price"].type, Numeric) and trading["price"].type.scale == 8


def test_every_model_is_listed_once_in_tables() -> None:
    assert len(TABLES) == len(set(TABLES)) == len(Base.metadata.tables)


def test_the_public_surface_of_the_storage_packages() -> None:
    assert set(coinpilot.db.__all__) == {
        "TABLES",
        "AccountState",
        "AgentDecision",
        "Base",
        "DailyRiskState",
        "Database",
        "InboxEntry",
        "JobRun",
        "LlmCallRecord",
        "LlmUsageEvent",
        "MarketData",
        "NotificationDelivery",
        "NotificationSent",
        "OrderProposal",
        "Position",
        "RegimeHistory",
        "RiskAudit",
        "RiskState",
        "StrategyState",
        "TransactionBook",
        "TradingHistory",
        "VenueOrder",
        "claim",
        "claim_on",
        "current_revision",
        "downgrade",
        "rehearsal_run_id",
        "upgrade",
    }
    assert set(coinpilot.cache.__all__) == {"CACHE_FALLBACKS", "Cache", "keys"}
