"""One sequence of orders for the guardrail parity tests: every store must answer like the pure book.

Each step is (symbol, event time, verdict, error kind) and what the pre-call check must answer.
Covers §13.3 K, a reject window expiring by event time, the error streak block and the low-credit
block, the hourly budget and a new event-time hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.agent.guard_rules import BlockReason, ErrorKind, GuardParams

T0 = datetime(2026, 2, 18, 9, 0, tzinfo=UTC)
P = GuardParams()
BTC, ETH, XRP = "KRW-BTC", "KRW-ETH", "KRW-XRP"
APPROVE, REJECT = True, False
COOLDOWN, GLOBAL, HOURLY = BlockReason.SYMBOL_COOLDOWN, BlockReason.GLOBAL_BLOCK, BlockReason.HOURLY_BUDGET


@dataclass(frozen=True)
class Step:
    symbol: str
    minute: float
    approved: bool
    kind: ErrorKind | None = None
    blocked: BlockReason | None = None  # what the pre-call check must answer


SEQUENCE: tuple[Step, ...] = (
    # §13.3 K: rejected at t0, t0+6, t0+17 -> cooldowns 5, 10, 15 min
    Step(BTC, 0, REJECT),
    Step(BTC, 1, REJECT, blocked=COOLDOWN),
    Step(BTC, 6, REJECT),
    Step(BTC, 15.5, REJECT, blocked=COOLDOWN),
    Step(BTC, 17, REJECT),
    Step(ETH, 17, APPROVE),
    Step(BTC, 31, REJECT, blocked=COOLDOWN),  # 15 min from t0+17
    Step(BTC, 40, APPROVE),  # clears BTC's reject count
    Step(BTC, 41, REJECT),  # so the ladder starts at 5 again
    Step(BTC, 45, APPROVE, blocked=COOLDOWN),
    # the reject window ends by event time: 30 min after ETH's reject at t0+42
    Step(ETH, 42, REJECT),
    Step(ETH, 52, REJECT),  # second in the window: 10 min
    Step(ETH, 61, REJECT, blocked=COOLDOWN),
    Step(ETH, 83, REJECT),  # the window of t0+52 ended at t0+82: 5 min, not 15
    Step(ETH, 87, REJECT, blocked=COOLDOWN),
    Step(ETH, 88, APPROVE),
    # five AI errors in a row (timeouts count) -> error_streak block for 30 min
    Step("KRW-A", 90, REJECT, ErrorKind.SERVER_ERROR),
    Step("KRW-B", 91, REJECT, ErrorKind.TIMEOUT),
    Step("KRW-C", 92, REJECT, ErrorKind.RATE_LIMITED),
    Step("KRW-D", 93, REJECT, ErrorKind.OVERLOADED),
    Step("KRW-E", 94, REJECT, ErrorKind.CONNECTION),
    Step(XRP, 100, APPROVE, blocked=GLOBAL),
    Step(XRP, 123.9, APPROVE, blocked=GLOBAL),
    Step(XRP, 124, APPROVE),  # the block ends at t0+94+30 by event time; approval resets the streak
    Step("KRW-A", 125, REJECT, ErrorKind.SERVER_ERROR),  # streak 1 again: no block
    Step("KRW-B", 126, REJECT, ErrorKind.INVALID_OUTPUT),  # a malformed answer resets it
    # low credit -> 60 min block, streak untouched
    Step(ETH, 130, REJECT, ErrorKind.LOW_CREDIT),
    Step(XRP, 150, APPROVE, blocked=GLOBAL),
    Step(XRP, 190, REJECT, ErrorKind.BAD_REQUEST),
    # the hourly budget (20) on event-time hours: XRP's call at 12:10 and 19 more, then 13:00
    *(Step(f"KRW-H{i}", 200 + i, APPROVE) for i in range(19)),
    Step(BTC, 230, APPROVE, blocked=HOURLY),
    Step(BTC, 240, APPROVE),
)
