"""``check_order_validity`` (BEHAVIOUR §4.2): every rule, both sides of its boundary, in order.

Rows run against balance 1,000,000, reference equity 1,000,000 and the original code defaults
(max position 5 %, exposure 20 %, 3 positions, daily loss 5 %, 10 BUYs a day) unless they say.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import EntrySignal, RejectReason
from services.risk.checks import check_order, signal_price
from tests.unit.risk.factories import CODE_DEFAULTS, T0, YAML, check, entry

R = RejectReason
D = Decimal
HELD = frozenset({"KRW-ETH", "KRW-XRP", "KRW-SOL"})
MIN = timedelta(minutes=1)

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


class TestSignalPrice:
    """The sanity of an entry signal's price, before sizing (issue 19). Entries close at 100."""

    @pytest.mark.parametrize(
        ("signal", "recorded", "says"),
        [
            pytest.param(entry(price="0"), None, "signal price 0 <= 0", id="zero"),
            pytest.param(entry(price="-5"), None, "signal price -5 <= 0", id="negative"),
            pytest.param(
                entry(price="100").model_copy(update={"price": D(1)}),
                None,
                "signal price 1 is not its candle's close 100",
                id="not-the-candle-close",
            ),
            pytest.param(
                entry(price="100").model_copy(update={"snapshot": entry("KRW-ETH", price="100").snapshot}),
                None,
                "the snapshot it carries is of KRW-ETH",
                id="snapshot-of-another-symbol",
            ),
            pytest.param(
                entry(price="100").model_copy(update={"snapshot": entry(at=T0 - MIN, price="100").snapshot}),
                None,
                "the snapshot it carries is of KRW-BTC at 2026-03-02T11:59:00+00:00",
                id="snapshot-of-another-minute",
            ),
            pytest.param(
                entry(price="1").model_copy(
                    update={"snapshot": entry(price="1").snapshot.model_copy(update={"ma_20": 100.0})}
                ),
                None,
                "signal price 1 is more than 25% from its MA(20) 100.0",
                id="far-from-its-average",
            ),
            pytest.param(
                entry(price="100"),
                D("98.9"),
                "signal price 100 is more than 1% from the recorded close 98.9 of its minute",
                id="far-from-the-recorded-close",
            ),
        ],
    )
    def test_an_implausible_price_is_rejected_with_the_reason(
        self, signal: EntrySignal, recorded: Decimal | None, says: str
    ) -> None:
        verdict = signal_price(signal, recorded, YAML)
        assert verdict.reason is R.IMPLAUSIBLE_PRICE
        assert verdict.message.startswith(says)

    @pytest.mark.parametrize(
        ("signal", "recorded"),
        [
            pytest.param(entry(price="100"), None, id="nothing-recorded-yet"),
            pytest.param(entry(price="100"), D(100), id="equal-to-the-recorded-close"),
            pytest.param(entry(price="100"), D("99.01"), id="recorded-close-within-1pct"),
            pytest.param(
                entry(price="75").model_copy(
                    update={"snapshot": entry(price="75").snapshot.model_copy(update={"ma_20": 100.0})}
                ),
                None,
                id="25pct-below-its-average",
            ),
            pytest.param(
                entry(price="100").model_copy(
                    update={"snapshot": entry(price="100").snapshot.model_copy(update={"ma_20": None})}
                ),
                None,
                id="no-average-yet",
            ),
        ],
    )
    def test_a_plausible_price_passes(self, signal: EntrySignal, recorded: Decimal | None) -> None:
        assert signal_price(signal, recorded, YAML).passed

    def test_the_bands_are_parameters(self) -> None:
        narrow = replace(YAML, price_band=D("0.001"), average_band=D("0.5"))
        assert signal_price(entry(price="100"), D("99.8"), narrow).reason is R.IMPLAUSIBLE_PRICE
        far = entry(price="60").model_copy(
            update={"snapshot": entry(price="60").snapshot.model_copy(update={"ma_20": 100.0})}
        )
        assert signal_price(far, None, narrow).passed
