"""Upbit's per-second request budget, read from the ``Remaining-Req`` answer header.

Every answer says ``Remaining-Req: group=order; min=1800; sec=11``: the request's rate-limit group
and how many requests of that group are left in the current second (``min`` is deprecated and
fixed). Groups are counted apart (``order`` for placing orders, ``default`` for the other exchange
calls, ``orderbook`` for the public book endpoints), so an exhausted order budget never delays a
lookup. When a group's ``sec`` reaches 0 the next request of that group waits until one second has
passed since that answer. The state is plain data; time and sleeping are injected, so tests drive
it with a fake clock.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

WINDOW_SECONDS = 1.0

_FIELD = re.compile(r"\s*([a-z_]+)\s*=\s*([^;]+?)\s*(?:;|$)")


@dataclass(frozen=True, slots=True)
class Remaining:
    """One ``Remaining-Req`` header: ``sec`` requests of ``group`` are left in this second."""

    group: str
    sec: int
    min: int | None = None


def parse_remaining_req(value: str | None) -> Remaining | None:
    """Parse ``group=order; min=1800; sec=11``; None when absent or unreadable."""
    if not value:
        return None
    fields = dict(_FIELD.findall(value))
    group, sec = fields.get("group"), fields.get("sec")
    if group is None or sec is None or not sec.isdigit():
        return None
    minute = fields.get("min")
    return Remaining(group, int(sec), int(minute) if minute is not None and minute.isdigit() else None)


@dataclass(slots=True)
class _Budget:
    left: int
    seen_at: float


@dataclass
class RateLimiter:
    """Per-group budgets learnt from answers; ``acquire(group)`` waits while a group has none left."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _budgets: dict[str, _Budget] = field(default_factory=dict)
    _endpoint_groups: dict[str, str] = field(default_factory=dict)

    def delay(self, group: str, now: float) -> float:
        """Seconds to wait before the next request of ``group`` (0 when it may go now)."""
        budget = self._budgets.get(group)
        if budget is None or budget.left > 0:
            return 0.0
        return max(0.0, budget.seen_at + WINDOW_SECONDS - now)

    def spend(self, group: str, now: float) -> None:
        """Count a request about to be sent, so concurrent callers see the budget shrink."""
        budget = self._budgets.get(group)
        if budget is None:
            return
        if now >= budget.seen_at + WINDOW_SECONDS:
            del self._budgets[group]  # a new second: the next answer tells the new budget
        elif budget.left > 0:
            budget.left -= 1

    def observe(self, endpoint: str, header: str | None, now: float) -> Remaining | None:
        """Record an answer's header; also learn which group ``endpoint`` belongs to."""
        remaining = parse_remaining_req(header)
        if remaining is None:
            return None
        self._endpoint_groups[endpoint] = remaining.group
        self._budgets[remaining.group] = _Budget(remaining.sec, now)
        return remaining

    def group_of(self, endpoint: str, default: str) -> str:
        """The group Upbit last named for ``endpoint``, else the documented ``default``."""
        return self._endpoint_groups.get(endpoint, default)

    def left(self, group: str) -> int | None:
        budget = self._budgets.get(group)
        return None if budget is None else budget.left

    async def acquire(self, group: str) -> None:
        """Wait (through the injected sleeper) until ``group`` may send, then count the request."""
        while (wait := self.delay(group, self.clock())) > 0:
            await self.sleep(wait)
        self.spend(group, self.clock())
