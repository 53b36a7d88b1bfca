"""The CoinPilot schema as SQLAlchemy 2 models (BEHAVIOUR §10 with every Rebuild fix).

Conventions, so every table reads the same:

* money and quantities are ``Numeric(20, 8)`` (``Decimal`` in Python), except the market-data
  prices/volume and the regime moving averages, which are ``Numeric(28, 8)``: Upbit KRW prices reach
  ~2e8 and a 1m KRW volume on a thin coin can be ~1e11 base units, so 12 integer digits are too few
  once quote-value sums or small-cap coins with huge unit counts are stored;
* every timestamp is ``TIMESTAMP WITH TIME ZONE`` and holds UTC;
* every per-run state table has ``run_id VARCHAR(64) NOT NULL DEFAULT 'live'`` in its key, so a
  replay (``run_id != 'live'``) never touches live rows;
* server defaults are explicit SQL (``now()``, ``'live'``, ``0``...), so raw SQL inserts and ORM
  inserts agree;
* constraint and index names are explicit or come from the naming convention on ``Base.metadata``,
  so migrations and autogenerate comparisons are stable.

``migrations/versions/0001_initial.py`` creates exactly these tables; a test compares the two.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MONEY = Numeric(20, 8)
MARKET_NUMBER = Numeric(28, 8)
TIMESTAMPTZ = DateTime(timezone=True)
NOW = text("now()")
LIVE = text("'live'")
ZERO = text("0")
FALSE = text("false")


def run_id_column(primary_key: bool = False) -> Mapped[str]:
    """The run a row belongs to: ``'live'`` or a replay id."""
    return mapped_column(String(64), primary_key=primary_key, nullable=False, server_default=LIVE)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MarketData(Base):
    """One closed candle per (symbol, interval, candle start) — §10.1."""

    __tablename__ = "market_data"
    __table_args__ = (
        PrimaryKeyConstraint("timestamp", "id", name="pk_market_data"),
        UniqueConstraint("symbol", "interval", "timestamp", name="uq_market_data_symbol_interval_ts"),
        Index("idx_market_data_symbol_interval_time", "symbol", "interval", text("timestamp DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), nullable=False)
    symbol: Mapped[str] = mapped_column(String(20), nullable=False)
    interval: Mapped[str] = mapped_column(String(10), nullable=False, server_default=text("'1m'"))
    open_price: Mapped[Decimal] = mapped_column(MARKET_NUMBER, nullable=False)
    high_price: Mapped[Decimal] = mapped_column(MARKET_NUMBER, nullable=False)
    low_price: Mapped[Decimal] = mapped_column(MARKET_NUMBER, nullable=False)
    close_price: Mapped[Decimal] = mapped_column(MARKET_NUMBER, nullable=False)
    volume: Mapped[Decimal] = mapped_column(MARKET_NUMBER, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, comment="candle start, UTC")


class TradingHistory(Base):
    """One row per fill, idempotent on (run_id, order_id) — §10.2, §6.4."""

    __tablename__ = "trading_history"
    __table_args__ = (
        UniqueConstraint("run_id", "order_id", name="uq_trading_history_run_order"),
        Index("idx_trading_history_strategy", "strategy_name"),
        Index("idx_trading_history_symbol_created", "symbol", text("created_at DESC")),
        Index(
            "idx_trading_history_sell_executed_at",
            text("executed_at DESC"),
            postgresql_where=text("side = 'SELL' AND status = 'FILLED' AND executed_at IS NOT NULL"),
        ),
        Index("idx_trading_history_run_executed", "run_id", text("executed_at DESC")),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    run_id: Mapped[str] = run_id_column()
    order_id: Mapped[str] = mapped_column(String(64), nullable=False)
    symbol: Mapped[str] = mapped_column(String(20), nullable=False)
    side: Mapped[str] = mapped_column(String(10), nullable=False, comment="BUY / SELL")
    order_type: Mapped[str] = mapped_column(String(10), nullable=False, server_default=text("'MARKET'"))
    price: Mapped[Decimal] = mapped_column(MONEY, nullable=False, comment="fill price")
    decision_price: Mapped[Decimal | None] = mapped_column(MONEY, comment="close the decision was made on")
    quantity: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False, comment="price x quantity, quote currency")
    fee: Mapped[Decimal] = mapped_column(MONEY, nullable=False, server_default=ZERO)
    currency: Mapped[str] = mapped_column(String(10), nullable=False, server_default=text("'KRW'"))
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'FILLED'"))
    strategy_name: Mapped[str | None] = mapped_column(
        String(50), server_default=text("'AdaptiveMeanReversion'")
    )
    signal_info: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at_column()
    executed_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, comment="event time")
    regime: Mapped[str | None] = mapped_column(String(10))
    high_water_mark: Mapped[Decimal | None] = mapped_column(MONEY)
    exit_reason: Mapped[str | None] = mapped_column(String(30))
    realized_pnl: Mapped[Decimal | None] = mapped_column(MONEY, comment="SELL only, after fees")
    entry_avg_price: Mapped[Decimal | None] = mapped_column(MONEY, comment="SELL only")
    post_exit_prices: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    trace_id: Mapped[str | None] = mapped_column(String(128))


class Position(Base):
    """The open position of a symbol in a run — §10.3."""

    __tablename__ = "positions"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    quantity: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    avg_price: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    opened_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    regime: Mapped[str | None] = mapped_column(String(10))
    high_water_mark: Mapped[Decimal | None] = mapped_column(MONEY)
    position_id: Mapped[str] = mapped_column(
        String(64), nullable=False, comment="order id of the opening BUY"
    )
    currency: Mapped[str] = mapped_column(String(10), nullable=False, server_default=text("'KRW'"))
    is_dust: Mapped[bool] = mapped_column(
        Boolean,
        nullable=False,
        server_default=FALSE,
        comment="worth less than the exchange minimum: held, not an open position",
    )


class AccountState(Base):
    """Cash balance per run and currency — §10.4."""

    __tablename__ = "account_state"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    currency: Mapped[str] = mapped_column(String(10), primary_key=True, server_default=text("'KRW'"))
    balance: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    initial_balance: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class DailyRiskState(Base):
    """Counters of one trading day — §10.5 (cooldown/streak live in ``risk_state``, §4.5)."""

    __tablename__ = "daily_risk_state"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True, comment="trading day")
    total_pnl: Mapped[Decimal] = mapped_column(MONEY, nullable=False, server_default=ZERO)
    buy_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    sell_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    trade_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    consecutive_losses: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    cooldown_until: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    is_trading_halted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class RiskState(Base):
    """Risk state that survives the daily reset (§4.5 Rebuild): loss streak, cooldown, pending orders."""

    __tablename__ = "risk_state"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    consecutive_losses: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    cooldown_until: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    pending_orders: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), comment="symbol -> order_id awaiting fill"
    )
    last_event_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class RiskAudit(Base):
    """One row per rejection/halt/cooldown (§4.8 Rebuild); a redelivery writes it once."""

    __tablename__ = "risk_audit"
    __table_args__ = (
        UniqueConstraint("run_id", "order_id", "violation_type", name="uq_risk_audit_run_order_violation"),
        Index("idx_risk_audit_run_ts", "run_id", text("ts_event DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    run_id: Mapped[str] = run_id_column()
    violation_type: Mapped[str] = mapped_column(String(50), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    symbol: Mapped[str | None] = mapped_column(String(20))
    order_id: Mapped[str | None] = mapped_column(String(64))
    ts_event: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class AgentDecision(Base):
    """One AI verdict per order (§5.7, §10.7 with the model name widened)."""

    __tablename__ = "agent_decisions"
    __table_args__ = (
        UniqueConstraint("run_id", "order_id", name="uq_agent_decisions_run_order"),
        Index("idx_agent_decisions_symbol", "symbol"),
        Index("idx_agent_decisions_created_at", text("created_at DESC")),
        Index("idx_agent_decisions_decision", "decision"),
        Index("idx_agent_decisions_regime", "regime"),
        Index("idx_agent_decisions_run_ts", "run_id", text("ts_event DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    run_id: Mapped[str] = run_id_column()
    order_id: Mapped[str] = mapped_column(String(64), nullable=False)
    symbol: Mapped[str] = mapped_column(String(20), nullable=False)
    strategy_name: Mapped[str] = mapped_column(
        String(50), nullable=False, server_default=text("'AdaptiveMeanReversion'")
    )
    decision: Mapped[str] = mapped_column(String(20), nullable=False)
    reason_code: Mapped[str | None] = mapped_column(String(40))
    reasoning: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[int | None] = mapped_column(Integer)
    model_used: Mapped[str | None] = mapped_column(String(128))
    prompt_hash: Mapped[str | None] = mapped_column(String(64))
    price_at_decision: Mapped[Decimal | None] = mapped_column(MONEY)
    regime: Mapped[str | None] = mapped_column(String(10))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    boundary_violation: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    boundary_terms: Mapped[list[str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    ts_event: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class RegimeHistory(Base):
    """One regime per symbol and closed hour (§10.8 Rebuild), idempotent on (run_id, symbol, as_of)."""

    __tablename__ = "regime_history"
    __table_args__ = (
        UniqueConstraint("run_id", "symbol", "as_of", name="uq_regime_history_run_symbol_as_of"),
        Index("idx_regime_history_symbol_time", "symbol", text("as_of DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    run_id: Mapped[str] = run_id_column()
    symbol: Mapped[str] = mapped_column(String(20), nullable=False)
    as_of: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, comment="start of the last closed hour"
    )
    regime: Mapped[str] = mapped_column(String(10), nullable=False)
    ma50: Mapped[Decimal | None] = mapped_column(MARKET_NUMBER)
    ma200: Mapped[Decimal | None] = mapped_column(MARKET_NUMBER)
    diff_pct: Mapped[Decimal | None] = mapped_column(Numeric(10, 4))
    hourly_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    detected_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class LlmUsageEvent(Base):
    """One model call with its tokens and cost (§10.9), unique per (run_id, request_id)."""

    __tablename__ = "llm_usage_events"
    __table_args__ = (
        UniqueConstraint("run_id", "request_id", name="uq_llm_usage_events_request_id"),
        Index("idx_llm_usage_events_created_at", text("created_at DESC")),
        Index("idx_llm_usage_events_route_created", "route", text("created_at DESC")),
        Index("idx_llm_usage_events_provider_model_created", "provider", "model", text("created_at DESC")),
        Index("idx_llm_usage_events_status_created", "status", text("created_at DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    run_id: Mapped[str] = run_id_column()
    created_at: Mapped[datetime] = created_at_column()
    request_id: Mapped[str | None] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(64), nullable=False)
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'success'"))
    error_type: Mapped[str | None] = mapped_column(String(80))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    price_version: Mapped[str] = mapped_column(String(32), nullable=False, server_default=text("'v1'"))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class LlmCallRecord(Base):
    """A recorded model call, keyed by the hash of its request, for record/replay."""

    __tablename__ = "llm_call_records"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    prompt_version: Mapped[str] = mapped_column(String(32), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class NotificationDelivery(Base):
    """One attempt to post a notification to a sink (audit of retries and dead letters)."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('success', 'failed', 'dead')", name="status"),
        Index("idx_notification_deliveries_event_key", "event_key"),
        Index("idx_notification_deliveries_created_at", text("created_at DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    event_key: Mapped[str] = mapped_column(String(160), nullable=False)
    sink: Mapped[str] = mapped_column(String(32), nullable=False)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, comment="success | failed | dead")
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_at_column()


class NotificationSent(Base):
    """A post that succeeded: the dedup key so a redelivered event is not posted twice."""

    __tablename__ = "notification_sent"

    sink: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class StrategyState(Base):
    """The rule engine's per-symbol memory (position view, last candle seen, last reason)."""

    __tablename__ = "strategy_state"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    has_position: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    position_id: Mapped[str | None] = mapped_column(String(64))
    avg_price: Mapped[Decimal | None] = mapped_column(MONEY)
    quantity: Mapped[Decimal | None] = mapped_column(MONEY)
    entry_regime: Mapped[str | None] = mapped_column(String(10))
    opened_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    high_water_mark: Mapped[Decimal | None] = mapped_column(MONEY)
    last_candle_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    last_reason: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    exiting: Mapped[str | None] = mapped_column(
        String(30), comment="exit reason of a partly executed exit: the rest is signalled again"
    )


class JobRun(Base):
    """An event-time schedule that fired for a boundary; the key makes it fire once."""

    __tablename__ = "job_runs"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    job_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    boundary: Mapped[datetime] = mapped_column(TIMESTAMPTZ, primary_key=True)
    created_at: Mapped[datetime] = created_at_column()


class InboxEntry(Base):
    """A message a consumer has processed (exactly-once effects, see ``coinpilot.db.inbox``).

    ``run_id`` is part of the key: a replay re-processes messages whose ``msg_id`` equals a live one.
    """

    __tablename__ = "inbox"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class OrderProposal(Base):
    """An order risk approved, recorded with its verdict: the executor fills only what matches one.

    A BUY carries the sized ``amount`` (quote currency) and ``needs_confirmation`` when the agent
    reviews it (then an agent ``CONFIRM`` in ``agent_decisions`` is required too); a SELL is the
    approval of an exit, its quantity always the ledger's (issue 19, provenance at the money path).
    """

    __tablename__ = "order_proposals"

    run_id: Mapped[str] = run_id_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20), nullable=False)
    side: Mapped[str] = mapped_column(String(10), nullable=False, comment="BUY / SELL")
    amount: Mapped[Decimal | None] = mapped_column(MONEY, comment="BUY: sized quote amount")
    reference_price: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    needs_confirmation: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    ts_event: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class VenueOrder(Base):
    """An order sent to a live exchange, committed as ``intended`` before it is sent (issue 23).

    Its ``state`` follows ``services.executor.live.states``; ``identifier`` is the deterministic
    client order id the exchange knows it by (unique: Upbit never accepts one twice), so an order
    whose answer was lost is looked up, never sent again. What executed (volume, funds, fee,
    trades) is what the ledger books; a ``remainder`` under the exchange minimum is ``dust``.
    """

    __tablename__ = "venue_orders"
    __table_args__ = (
        UniqueConstraint("identifier", name="uq_venue_orders_identifier"),
        CheckConstraint(
            "state IN ('intended', 'submitted', 'open', 'done', 'cancelled', 'failed')", name="state"
        ),
        Index("idx_venue_orders_created", "created_at"),  # the day's BUYs, every run (caps)
    )

    run_id: Mapped[str] = run_id_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    identifier: Mapped[str] = mapped_column(
        String(64), nullable=False, comment="the exchange's client order id"
    )
    market: Mapped[str] = mapped_column(String(20), nullable=False)
    side: Mapped[str] = mapped_column(String(10), nullable=False, comment="bid / ask")
    ord_type: Mapped[str] = mapped_column(
        String(10), nullable=False, comment="price (market buy) / market (sell)"
    )
    amount: Mapped[Decimal | None] = mapped_column(MONEY, comment="requested quote amount (market buy)")
    volume: Mapped[Decimal | None] = mapped_column(MONEY, comment="requested base volume (market sell)")
    min_total: Mapped[Decimal] = mapped_column(
        MONEY, nullable=False, comment="the exchange's minimum order total"
    )
    state: Mapped[str] = mapped_column(String(12), nullable=False)
    exchange_uuid: Mapped[str | None] = mapped_column(String(64))
    exchange_state: Mapped[str | None] = mapped_column(String(10), comment="wait / watch / done / cancel")
    executed_volume: Mapped[Decimal] = mapped_column(MONEY, nullable=False, server_default=ZERO)
    funds: Mapped[Decimal] = mapped_column(MONEY, nullable=False, server_default=ZERO)
    paid_fee: Mapped[Decimal] = mapped_column(MONEY, nullable=False, server_default=ZERO)
    trades: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    remainder: Mapped[Decimal | None] = mapped_column(
        MONEY, comment="unspent quote (market buy) or unexecuted volume"
    )
    dust: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    sent_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)


class TradingHalt(Base):
    """The kill switch: while a run has a row with ``cleared_at`` NULL, risk refuses new entries.

    Set by reconciliation (a ledger/exchange difference beyond dust), by an operator (``coinpilot
    halt``) or by the operator's ``control.halt`` message; cleared only by an operator. Cleared rows
    stay as the history (``coinpilot.kill_switch``).
    """

    __tablename__ = "trading_halts"
    __table_args__ = (Index("idx_trading_halts_run_halted", "run_id", text("halted_at DESC")),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    run_id: Mapped[str] = run_id_column()
    source: Mapped[str] = mapped_column(String(32), nullable=False, comment="reconcile / operator / subject")
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    halted_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    cleared_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    cleared_by: Mapped[str | None] = mapped_column(String(64))


class Reconciliation(Base):
    """One comparison of the ledger with the exchange's accounts (``services/executor/reconcile.py``)."""

    __tablename__ = "reconciliations"
    __table_args__ = (Index("idx_reconciliations_run_checked", "run_id", text("checked_at DESC")),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    run_id: Mapped[str] = run_id_column()
    checked_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    venue: Mapped[str] = mapped_column(String(32), nullable=False)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    discrepancies: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    report: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, comment="per currency: ledger, exchange, difference, tolerance, verdict"
    )


TABLES: tuple[type[Base], ...] = (
    MarketData,
    TradingHistory,
    Position,
    AccountState,
    DailyRiskState,
    RiskState,
    RiskAudit,
    AgentDecision,
    RegimeHistory,
    LlmUsageEvent,
    LlmCallRecord,
    NotificationDelivery,
    NotificationSent,
    StrategyState,
    JobRun,
    InboxEntry,
    OrderProposal,
    VenueOrder,
    TradingHalt,
    Reconciliation,
)
"""Every model, in creation order."""
