"""The kill switch (issue 23): a persistent halt of new entries per run, in ``trading_halts``.

While a run has a halt (a row with ``cleared_at`` NULL) risk refuses every entry signal
``TRADING_HALTED`` with the halt's source and reason; exits still pass, so positions can always be
closed. It is set by reconciliation (``services/executor/reconcile.py``), by an operator
(``coinpilot halt``) or by the operator's ``control.halt`` message (``services/risk/control.py``),
and cleared only by an operator (``coinpilot halt --clear``). Setting it while it is on keeps the
first halt (its reason is what tripped it); cleared halts stay as the history.

Pure: the halt as data. Its SQL is ``coinpilot.db.halts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class HaltSource(StrEnum):
    RECONCILE = "reconcile"
    OPERATOR = "operator"
    SUBJECT = "subject"


@dataclass(frozen=True, slots=True)
class Halt:
    run_id: str
    source: str
    reason: str
    halted_at: datetime
    cleared_at: datetime | None = None
    cleared_by: str | None = None

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def describe(self) -> str:
        """One line for a rejection message, the CLI and ``coinpilot trace``."""
        since = f"entries halted by {self.source} since {self.halted_at.isoformat()}: {self.reason}"
        if self.cleared_at is None:
            return since
        return f"{since} (cleared {self.cleared_at.isoformat()} by {self.cleared_by})"
