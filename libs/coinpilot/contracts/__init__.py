"""Every message in CoinPilot: one frozen pydantic model per subject.

Open this package to see the whole system's API. Each model knows its subject (``subject()``),
its deterministic JetStream id (``msg_id()``) and its event time (``ts_event``).
"""

from coinpilot.contracts.base import SCHEMA_VERSION, Contract, Money, Symbol
from coinpilot.contracts.enums import (
    AiVerdict,
    AlertLevel,
    AlertType,
    EntryReason,
    ExitReason,
    Regime,
    RejectReason,
    RejectStage,
    Side,
)
from coinpilot.contracts.market import HourlyCandle, IndicatorSnapshot, MinuteCandle, RegimeUpdate
from coinpilot.contracts.ops import (
    AiDecision,
    DailyReport,
    DeadLetter,
    ExitBreakdown,
    HaltCommand,
    RiskAlert,
)
from coinpilot.contracts.subjects import parse_subject, subject_for
from coinpilot.contracts.trading import (
    EntrySignal,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Signal,
    order_id_for,
    order_time,
)

#: Every message type, in pipeline order. The proto generator and the drift test walk this.
ALL_CONTRACTS: tuple[type[Contract], ...] = (
    MinuteCandle,
    HourlyCandle,
    IndicatorSnapshot,
    RegimeUpdate,
    EntrySignal,
    ExitSignal,
    OrderProposed,
    OrderApproved,
    OrderRejected,
    Fill,
    AiDecision,
    RiskAlert,
    DailyReport,
    DeadLetter,
    HaltCommand,
)

__all__ = [
    "ALL_CONTRACTS",
    "SCHEMA_VERSION",
    "AiDecision",
    "AiVerdict",
    "AlertLevel",
    "AlertType",
    "Contract",
    "DailyReport",
    "DeadLetter",
    "EntryReason",
    "EntrySignal",
    "ExitBreakdown",
    "ExitReason",
    "ExitSignal",
    "Fill",
    "HaltCommand",
    "HourlyCandle",
    "IndicatorSnapshot",
    "MinuteCandle",
    "Money",
    "OrderApproved",
    "OrderProposed",
    "OrderRejected",
    "Regime",
    "RegimeUpdate",
    "RejectReason",
    "RejectStage",
    "RiskAlert",
    "Side",
    "Signal",
    "Symbol",
    "order_id_for",
    "order_time",
    "parse_subject",
    "subject_for",
]
