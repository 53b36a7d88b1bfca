"""GARCH(1,1) volatility (BEHAVIOUR §4.9, rebuild) on real hourly BTC data, and its multiplier.

The hourly closes are resampled from the real 1m file of 2025-05-20 .. 08-18 (90 days, 2178 hours);
the fit uses the last 2160 hourly log returns in percent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from coinpilot.analytics.volatility import (
    VolatilityFitError,
    VolatilityState,
    VolatilityStatus,
    fit_volatility,
    log_returns_pct,
    volatility_multiplier,
)
from coinpilot.contracts import OrderProposed
from services.risk.core import Ledger, VolatilityReading, initial_state, on_entry_signal, refit_due
from tests.unit.risk.factories import YAML, entry

AS_OF = datetime(2025, 8, 18, 18, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def btc_hourly_closes(shared_data: Path) -> list[float]:
    frame = pl.read_csv(shared_data / "BTC_USDT-1m-20250520-20250818.csv.gz")
    hourly = frame.group_by(pl.col("ts") // 3_600_000).agg(pl.col("close").sort_by("ts").last()).sort("ts")
    return hourly["close"].to_list()


@pytest.fixture(scope="module")
def fitted(btc_hourly_closes: list[float]) -> VolatilityState:
    return fit_volatility("KRW-BTC", btc_hourly_closes, AS_OF, threshold_pct=1.5)


def test_returns_are_100_times_log_ratios_without_the_first() -> None:
    assert log_returns_pct([100.0, 110.0, 99.0]) == pytest.approx([9.531018, -10.536052], abs=1e-6)


def test_a_fit_on_real_hourly_data_forecasts_a_plausible_hourly_sigma(fitted: VolatilityState) -> None:
    assert fitted.returns_used == 2160
    assert 0.2 < fitted.current_volatility < 0.8  # BTC moves roughly 0.35 % an hour in that window
    assert not fitted.is_high_volatility


def test_high_volatility_flips_exactly_when_sigma_crosses_the_threshold(
    btc_hourly_closes: list[float], fitted: VolatilityState
) -> None:
    sigma = fitted.current_volatility
    at_sigma = fit_volatility("KRW-BTC", btc_hourly_closes, AS_OF, threshold_pct=sigma)
    below = fit_volatility("KRW-BTC", btc_hourly_closes, AS_OF, threshold_pct=sigma * 0.999)
    assert (at_sigma.is_high_volatility, below.is_high_volatility) == (False, True)  # strict >


def test_the_multiplier_changes_the_proposed_size(
    btc_hourly_closes: list[float], fitted: VolatilityState
) -> None:
    high = fit_volatility("KRW-BTC", btc_hourly_closes, AS_OF, threshold_pct=0.1)
    signal = entry(at=AS_OF + timedelta(minutes=1))
    ledger = Ledger(balance=Decimal(10_000_000))
    state = initial_state(signal.ts_event, YAML)
    amounts = []
    for fit in (fitted, high):
        step = on_entry_signal(state, signal, ledger, VolatilityReading(fit), YAML)
        (proposal,) = step.out
        assert isinstance(proposal, OrderProposed)
        amounts.append((proposal.vol_multiplier, proposal.amount))
    assert amounts == [(Decimal(1), Decimal(2_000_000)), (Decimal("0.5"), Decimal(1_000_000))]


def test_too_few_returns_are_refused(btc_hourly_closes: list[float]) -> None:
    with pytest.raises(VolatilityFitError, match="499 hourly returns < 500"):
        fit_volatility("KRW-BTC", btc_hourly_closes[:500], AS_OF, threshold_pct=1.5)


def test_flat_prices_are_refused() -> None:
    with pytest.raises(VolatilityFitError, match="zero variance"):
        fit_volatility("KRW-BTC", [100.0] * 600, AS_OF, threshold_pct=1.5)


def test_the_state_json_keeps_the_original_fields_plus_symbol_and_as_of(fitted: VolatilityState) -> None:
    raw = json.loads(fitted.to_json())
    assert {"current_volatility", "is_high_volatility", "timestamp", "symbol", "as_of"} <= set(raw)
    assert raw["as_of"] == "2025-08-18T18:00:00+00:00"
    assert VolatilityState.from_json(fitted.to_json()) == fitted


@pytest.mark.parametrize("text", ["{", "{}", '{"symbol": "KRW-BTC"}', "[1]"])
def test_a_malformed_state_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        VolatilityState.from_json(text)


HALF = Decimal("0.5")


@pytest.mark.parametrize(
    ("age", "high", "expected"),
    [
        pytest.param(timedelta(hours=1), True, (HALF, VolatilityStatus.HIGH), id="fresh-high"),
        pytest.param(timedelta(hours=1), False, (Decimal(1), VolatilityStatus.NORMAL), id="fresh-normal"),
        pytest.param(timedelta(hours=36), True, (HALF, VolatilityStatus.HIGH), id="36h-is-still-fresh"),
        pytest.param(timedelta(hours=36, seconds=1), True, (Decimal(1), VolatilityStatus.STALE), id="stale"),
        pytest.param(
            timedelta(hours=-1), True, (Decimal(1), VolatilityStatus.NOT_YET_VALID), id="from-later"
        ),
    ],
)
def test_multiplier_by_age(age: timedelta, high: bool, expected: tuple[Decimal, VolatilityStatus]) -> None:
    state = VolatilityState("KRW-BTC", 2.0, high, AS_OF, 2160, 1.5)
    assert (
        volatility_multiplier(state, AS_OF + age, stale_after=timedelta(hours=36), high_multiplier=HALF)
        == expected
    )


def test_no_state_is_full_size() -> None:
    assert volatility_multiplier(None, AS_OF, stale_after=timedelta(hours=36), high_multiplier=HALF) == (
        Decimal(1),
        VolatilityStatus.MISSING,
    )


REFIT = time(0, 5)
DAY = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_fit", "candle_close", "due"),
    [
        pytest.param(None, DAY, True, id="no-fit-yet-start-up"),
        pytest.param(DAY - timedelta(hours=23), DAY, False, id="midnight-close-is-before-00:05"),
        pytest.param(DAY - timedelta(hours=23), DAY + timedelta(hours=1), True, id="first-close-after-00:05"),
        pytest.param(DAY + timedelta(hours=1), DAY + timedelta(hours=2), False, id="once-a-day"),
        pytest.param(DAY + timedelta(hours=1), DAY + timedelta(days=1), False, id="next-midnight-not-yet"),
        pytest.param(DAY + timedelta(hours=1), DAY + timedelta(days=1, hours=1), True, id="next-day"),
        pytest.param(DAY - timedelta(days=3), DAY + timedelta(hours=7), True, id="after-a-gap"),
    ],
)
def test_refit_on_the_first_hourly_candle_at_or_after_0005_utc(
    last_fit: datetime | None, candle_close: datetime, due: bool
) -> None:
    assert refit_due(last_fit, candle_close, REFIT) is due
