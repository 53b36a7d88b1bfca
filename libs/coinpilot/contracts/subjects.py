"""Subject builders and parsers: ``<noun>.<qualifier>.<SYMBOL>``, symbol last."""

from __future__ import annotations

from dataclasses import dataclass

from coinpilot.errors import ContractError
from coinpilot.symbols import is_market

CANDLES_1M = "candles.1m"
CANDLES_1H = "candles.1h"
INDICATORS_1M = "indicators.1m"
REGIME = "regime"
SIGNALS_ENTRY = "signals.entry"
SIGNALS_EXIT = "signals.exit"
ORDERS_PROPOSED = "orders.proposed"
ORDERS_APPROVED = "orders.approved"
ORDERS_REJECTED = "orders.rejected"
FILLS = "fills"
AI_DECISIONS = "ai.decisions"
RISK_ALERTS = "risk.alerts"
REPORTS_DAILY = "reports.daily"
CONTROL_HALT = "control.halt"
DLQ = "dlq"

PER_SYMBOL_PREFIXES: tuple[str, ...] = (
    CANDLES_1M,
    CANDLES_1H,
    INDICATORS_1M,
    REGIME,
    SIGNALS_ENTRY,
    SIGNALS_EXIT,
    ORDERS_PROPOSED,
    ORDERS_APPROVED,
    ORDERS_REJECTED,
    FILLS,
    AI_DECISIONS,
)


def subject_for(prefix: str, symbol: str) -> str:
    """``subject_for("candles.1m", "KRW-BTC")`` -> ``candles.1m.KRW-BTC``."""
    if not is_market(symbol):
        raise ContractError(f"not a market code: {symbol!r}")
    return f"{prefix}.{symbol}"


def dlq_subject(service: str) -> str:
    return f"{DLQ}.{service}"


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    prefix: str
    symbol: str | None


def parse_subject(subject: str) -> ParsedSubject:
    """Split a concrete subject into its prefix and symbol; raises ContractError when unknown."""
    for prefix in sorted(PER_SYMBOL_PREFIXES, key=len, reverse=True):
        if subject.startswith(prefix + "."):
            symbol = subject[len(prefix) + 1 :]
            if not is_market(symbol):
                raise ContractError(f"bad symbol in subject {subject!r}")
            return ParsedSubject(prefix, symbol)
    if subject in (RISK_ALERTS, REPORTS_DAILY, CONTROL_HALT):
        return ParsedSubject(subject, None)
    if subject.startswith(DLQ + "."):
        return ParsedSubject(DLQ, None)
    raise ContractError(f"unknown subject {subject!r}")
