"""AI verdicts, risk alerts, daily reports and dead letters."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import ClassVar

from pydantic import Field

from coinpilot.contracts.base import Contract, Money, Symbol, UtcDatetime, minute_key
from coinpilot.contracts.enums import AiVerdict, AlertLevel, AlertType, Regime, RejectReason


class AiDecision(Contract):
    """What the agent decided about one proposed BUY, and why (§5.7)."""

    SUBJECT: ClassVar[str] = "ai.decisions.{symbol}"

    order_id: str = Field(max_length=64)
    symbol: Symbol
    decision: AiVerdict
    reason_code: RejectReason | None = Field(default=None, description="Set for REJECT and SKIP")
    confidence: int | None = Field(default=None, ge=0, le=100)
    reasoning: str = ""
    regime: Regime
    rsi: float | None = None
    model_used: str = Field(default="", max_length=128)
    prompt_hash: str | None = None
    latency_ms: int | None = Field(default=None, ge=0)
    cost_usd: Money | None = None
    boundary_violation: bool = False
    boundary_terms: tuple[str, ...] = ()

    def msg_id(self) -> str:
        return f"ai:{self.order_id}"


class RiskAlert(Contract):
    """A halt, a cooldown or another risk event worth paging a human about."""

    SUBJECT: ClassVar[str] = "risk.alerts"

    type: AlertType
    level: AlertLevel
    message: str
    symbol: Symbol | None = None

    def msg_id(self) -> str:
        return f"alert:{self.type}:{self.symbol or '-'}:{minute_key(self.ts_event)}"


class HaltCommand(Contract):
    """The kill switch by message (issue 23): halt new entries of the run it is published for.

    Only the operator identity may publish ``control.halt`` (``bus/permissions.py``); risk
    consumes it and sets the halt (``coinpilot.kill_switch``). Clearing is not a message: only an
    operator clears a halt, with ``coinpilot halt --clear``.
    """

    SUBJECT: ClassVar[str] = "control.halt"

    reason: str = Field(min_length=1, max_length=500)
    requested_by: str = Field(default="operator", max_length=64)

    def msg_id(self) -> str:
        digest = hashlib.sha256(f"{self.ts_event.isoformat()}|{self.reason}".encode()).hexdigest()[:16]
        return f"control:halt:{digest}"


class ExitBreakdown(Contract):
    SUBJECT: ClassVar[str] = ""

    count: int
    avg_pnl_pct: float | None = None
    avg_post_1h_pct: float | None = None


class DailyReport(Contract):
    """The 24 hours ending at 22:00 KST (§8, rebuild): every trade in the window, counted once."""

    SUBJECT: ClassVar[str] = "reports.daily"

    report_date: date = Field(description="KST date of the report")
    period_start: UtcDatetime
    period_end: UtcDatetime
    currency: str = "KRW"
    total_pnl: Money
    trades: int
    sell_trades: int
    win_rate: float | None = Field(default=None, description="None when there were no sells")
    mdd_pct: float = Field(description="Max drawdown of the equity curve over the window, percent")
    loss_ratio_pct: float = Field(default=0.0, description="The original 'MDD': |loss| / balance * 100")
    exit_breakdown: dict[str, ExitBreakdown] = Field(default_factory=dict)
    notes: tuple[str, ...] = ()
    summary: str = ""

    def msg_id(self) -> str:
        return f"report:daily:{self.report_date.isoformat()}"


class DeadLetter(Contract):
    """A message a service could not process, with everything needed to inspect or replay it."""

    SUBJECT: ClassVar[str] = "dlq.{service}"

    service: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    subject_original: str = Field(description="Subject the message arrived on")
    reason: str
    deliveries: int = Field(ge=0)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = Field(description="Original body: UTF-8 text, or base64 when body_encoding says so")
    body_encoding: str = Field(default="utf-8", pattern=r"^(utf-8|base64)$")
    stream_sequence: int | None = None
    trace_id: str | None = None
    stream: str | None = Field(default=None, description="Stream the original was stored in")
    truncated: bool = Field(
        default=False, description="Body (and headers) cut to fit the max payload; the whole is in its stream"
    )

    def _subject_fields(self) -> dict[str, str]:
        return {"service": self.service}

    def msg_id(self) -> str:
        key = f"{self.subject_original}|{self.stream_sequence}|{self.body}"
        return f"dlq:{self.service}:{hashlib.sha256(key.encode()).hexdigest()[:24]}"
