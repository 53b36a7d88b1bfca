"""The kill switch in risk's core: while a run is halted every entry is rejected with the halt's
reason, before sizing; exits still pass."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from coinpilot.contracts import OrderApproved, OrderProposed, OrderRejected, RejectReason
from coinpilot.kill_switch import Halt
from services.risk import core
from services.risk.core import Ledger, VolatilityReading
from tests.unit.risk.factories import T0, YAML, entry, exit_signal

HALT = Halt("live", "reconcile", "ledger differs from the exchange: KRW", T0 - timedelta(minutes=5))


def decide(halt: Halt | None):  # type: ignore[no-untyped-def]
    ledger = Ledger(Decimal(10_000_000), halt=halt)
    return core.on_entry_signal(core.initial_state(T0, YAML), entry(), ledger, VolatilityReading(), YAML)


def test_a_halted_run_rejects_an_entry_trading_halted_with_the_halts_source_and_reason() -> None:
    step = decide(HALT)
    (rejected,) = [m for m in step.out if isinstance(m, OrderRejected)]
    assert rejected.reason is RejectReason.TRADING_HALTED
    assert (
        rejected.message == f"entries halted by reconcile since {HALT.halted_at.isoformat()}: {HALT.reason}"
    )
    assert step.state.pending_orders == {}
    assert [a.violation_type for a in step.audits] == ["TRADING_HALTED"]


def test_the_same_entry_is_proposed_when_the_run_is_not_halted() -> None:
    assert any(isinstance(m, OrderProposed) for m in decide(None).out)


def test_an_exit_passes_whatever_the_switch() -> None:
    step = core.on_exit_signal(core.initial_state(T0, YAML), exit_signal(), YAML)
    assert [type(m) for m in step.out] == [OrderApproved]


def test_a_cleared_halt_describes_who_cleared_it() -> None:
    cleared = Halt("live", "operator", "maintenance", T0, T0 + timedelta(hours=1), "operator:ops")
    assert not cleared.active
    assert cleared.describe().endswith(f"(cleared {(T0 + timedelta(hours=1)).isoformat()} by operator:ops)")
