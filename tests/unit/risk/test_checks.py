"""``check_order_validity`` (BEHAVIOUR §4.2): every rule, both sides of its boundary, in order.

Rows run against balance 1,000,000, reference equity 1,000,000 and the original code defaults
(max position 5 %, exposure 20 %, 3 positions, daily loss 5 %, 10 BUYs a day) unless they say.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import RejectReason
from services.risk.checks import check_order
from tests.unit.risk.factories import CODE_DEFAULTS, T0, check

R = RejectReason
D = Decimal
HELD = frozenset({"KRW-ETH", "KRW-XRP", "KRW-SOL"})

# fmt: off
CASES = [
    pytest.param("40000", {}, None, id="H-40000-passes-the-5pct-cap"),
    pytest.param("60000", {}, R.MAX_ORDER_SIZE, id="H-60000-exceeds-the-5pct-cap"),
    pytest.param("50000", {}, None, id="amount-equal-cap-passes"),
    pytest.param("50000.01", {}, R.MAX_ORDER_SIZE, id="amount-just-above-cap"),
    pytest.param("25000", {"vol_multiplier": D("0.5")}, None, id="half-cap-when-volatile-equal-passes"),
    pytest.param("25001", {"vol_multiplier": D("0.5")}, R.MAX_ORDER_SIZE, id="half-cap-when-volatile"),
    pytest.param("40000", {"balance": None}, R.ACCOUNT_MISSING, id="1-account-missing"),
    pytest.param("0", {}, R.NON_POSITIVE_AMOUNT, id="2-zero-amount"),
    pytest.param("40000", {"reference_equity": D(0)}, R.NON_POSITIVE_REFERENCE_EQUITY, id="3-zero-equity"),
    pytest.param("40000", {"is_trading_halted": True}, R.TRADING_HALTED, id="4-halted"),
    pytest.param("40000", {"cooldown_until": T0 + timedelta(seconds=1)}, R.COOLDOWN_ACTIVE, id="5-cooldown"),
    pytest.param("40000", {"cooldown_until": T0}, None, id="5-cooldown-ending-now-has-ended"),
    pytest.param("40000", {"buy_count": 10}, R.MAX_DAILY_TRADES, id="H-6-ten-buys-hit-the-limit"),
    pytest.param("40000", {"buy_count": 9}, None, id="6-nine-buys-pass"),
    pytest.param("40000", {"total_pnl": D(-60000)}, R.MAX_DAILY_LOSS, id="H-7-loss-60000-over-50000"),
    pytest.param("40000", {"total_pnl": D(-50000)}, R.MAX_DAILY_LOSS, id="7-loss-equal-limit-halts"),
    pytest.param("40000", {"total_pnl": D("-49999.99")}, None, id="7-loss-just-below-limit"),
    pytest.param("39920", {"balance": D(40000)}, None, id="10-cash-after-buffer-equal-passes"),
    pytest.param("39920.01", {"balance": D(40000)}, R.INSUFFICIENT_CASH, id="10-cash-after-buffer-short"),
    pytest.param("40000", {"exposure": D(160000)}, None, id="11-exposure-equal-limit-passes"),
    pytest.param("40000", {"exposure": D("160000.01")}, R.MAX_TOTAL_EXPOSURE, id="11-exposure-over-limit"),
    pytest.param("40000", {"held_symbols": HELD}, R.MAX_CONCURRENT_POSITIONS, id="12-three-held-is-full"),
    pytest.param("40000", {"held_symbols": HELD - {"KRW-SOL"}}, None, id="12-two-held-passes"),
    pytest.param("40000", {"held_symbols": HELD - {"KRW-SOL"}, "pending_symbols": frozenset({"KRW-SOL"})},
                 R.MAX_CONCURRENT_POSITIONS, id="12-a-pending-buy-counts-as-a-position"),
    pytest.param("40000", {"held_symbols": frozenset({"KRW-BTC"})}, R.DUPLICATE_POSITION, id="13-duplicate"),
    pytest.param("40000", {"held_symbols": frozenset({"KRW-BTC", "KRW-ETH", "KRW-XRP"})},
                 R.DUPLICATE_POSITION, id="12-skipped-for-a-held-symbol-then-13"),
    pytest.param("40000", {"is_trading_halted": True, "cooldown_until": T0 + timedelta(hours=1)},
                 R.TRADING_HALTED, id="order-halt-before-cooldown"),
    pytest.param("60000", {"buy_count": 10, "total_pnl": D(-60000)}, R.MAX_DAILY_TRADES,
                 id="order-trades-before-loss-before-size"),
]
# fmt: on


@pytest.mark.parametrize(("amount", "changes", "expected"), CASES)
def test_check_order(amount: str, changes: dict[str, object], expected: RejectReason | None) -> None:
    assert check_order(check(amount, **changes), CODE_DEFAULTS).reason is expected


def test_the_daily_loss_rejection_halts_trading() -> None:
    verdict = check_order(check(total_pnl=Decimal(-60000)), CODE_DEFAULTS)
    assert verdict.halts_trading


def test_the_cooldown_message_gives_the_minutes_left_to_one_decimal() -> None:
    verdict = check_order(check(cooldown_until=T0 + timedelta(minutes=90, seconds=6)), CODE_DEFAULTS)
    assert "90.1 min left" in verdict.message


def test_the_size_message_notes_the_volatility_reduction() -> None:
    verdict = check_order(check("30000", vol_multiplier=Decimal("0.5")), CODE_DEFAULTS)
    assert verdict.reason is R.MAX_ORDER_SIZE and "50%" in verdict.message
