"""Risk's consumer of ``control.halt``: the kill switch by message (issue 23).

Only the operator identity may publish ``control.halt`` (``coinpilot.bus.permissions``: no service
lists it, so the server refuses it from any other user). A ``HaltCommand`` sets the run's halt
(``coinpilot.db.halts``, source ``subject``) with the inbox claim in the same transaction, so a
redelivery after an operator cleared the halt does not set it again; a halt it set is announced
by a CRITICAL ``TRADING_HALT`` alert. While the halt is on, risk rejects every entry
``TRADING_HALTED`` (``core.on_entry_signal``); exits pass. Clearing is never a message.
"""

from __future__ import annotations

from collections.abc import Sequence

from coinpilot.bus import Delivery
from coinpilot.contracts import AlertLevel, AlertType, Contract, HaltCommand, RiskAlert
from coinpilot.db import Database, claim_on
from coinpilot.db.halts import set_halt_on
from coinpilot.kill_switch import Halt, HaltSource
from coinpilot.runtime import Consumer, parser_for

CONTROL, CONTROL_DURABLE = "control.halt", "risk-control"


def halt_alert(halt: Halt) -> RiskAlert:
    """The CRITICAL alert of a halt that was just set (the notifier pages on CRITICAL)."""
    return RiskAlert(
        ts_event=halt.halted_at,
        type=AlertType.TRADING_HALT,
        level=AlertLevel.CRITICAL,
        message=f"{halt.describe()}. Exits still pass; an operator clears it with `coinpilot halt --clear`.",
    )


async def on_halt_command(db: Database, run_id: str, command: HaltCommand) -> Sequence[Contract]:
    """Set the halt once per message; the alert when this message turned it on."""
    async with db.transaction() as conn:
        if not await claim_on(conn, CONTROL_DURABLE, command.msg_id(), run_id):
            return ()
        reason = f"{command.reason} (requested by {command.requested_by})"
        halt, is_new = await set_halt_on(conn, run_id, HaltSource.SUBJECT, reason, command.ts_event)
    return (halt_alert(halt),) if is_new else ()


def control_consumer(db: Database) -> Consumer:
    """The durable ``risk-control`` on ``control.halt``."""

    async def handle(d: Delivery[HaltCommand]) -> Sequence[Contract]:
        return await on_halt_command(db, d.run_id, d.message)

    return Consumer(CONTROL, CONTROL_DURABLE, handle, parser_for(HaltCommand))
