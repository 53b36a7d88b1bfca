"""Reconciliation's pure comparison (``services/executor/reconcile.compare``): equal, dust, discrepancy."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from coinpilot.contracts import AlertLevel, AlertType
from coinpilot.errors import ConfigError
from services.executor.reconcile import LedgerView, Verdict, compare, mismatch_alert, run_currencies
from services.executor.settings import non_krw_markets, require_krw_markets
from services.executor.upbit import Account

D = Decimal
TOLERANCES = {"KRW": D(1)}
MIN_TOTALS = {"BTC": D(5000)}


def account(currency: str, balance: str, locked: str = "0", avg: str = "0") -> Account:
    return Account(currency, D(balance), D(locked), D(avg), False, "KRW")


def ledger(krw: str = "1000000", btc: str | None = "0.01") -> LedgerView:
    coins = {} if btc is None else {"BTC": D(btc)}
    return LedgerView({"KRW": D(krw)}, coins, {"BTC": D(100_000_000)}, {"BTC": "KRW"})


def verdicts(report) -> dict[str, Verdict]:  # type: ignore[no-untyped-def]
    return {line.currency: line.verdict for line in report.lines}


def test_a_ledger_equal_to_balance_plus_locked_is_equal() -> None:
    accounts = [account("KRW", "900000", locked="100000"), account("BTC", "0.006", locked="0.004")]
    report = compare(ledger(), accounts, tolerances=TOLERANCES, min_totals=MIN_TOTALS)
    assert report.ok
    assert verdicts(report) == {"KRW": Verdict.EQUAL, "BTC": Verdict.EQUAL}
    assert [line.difference for line in report.lines] == [D(0), D(0)]


def test_cash_within_its_tolerance_is_dust_and_beyond_it_a_discrepancy() -> None:
    dust = compare(ledger(), [account("KRW", "1000000.6"), account("BTC", "0.01")], tolerances=TOLERANCES)
    assert dust.ok and verdicts(dust)["KRW"] is Verdict.DUST
    off = compare(ledger(), [account("KRW", "999998"), account("BTC", "0.01")], tolerances=TOLERANCES)
    assert not off.ok
    (line,) = off.discrepancies
    assert (line.currency, line.difference) == ("KRW", D(-2))
    assert "KRW ledger 1000000 exchange 999998 (-2)" in off.summary()


def test_a_coin_difference_worth_less_than_the_minimum_order_total_is_dust() -> None:
    # 0.00004 BTC at 100,000,000 KRW = 4,000 KRW < 5,000: no order could trade it
    accounts = [account("KRW", "1000000"), account("BTC", "0.01004")]
    report = compare(ledger(), accounts, tolerances=TOLERANCES, min_totals=MIN_TOTALS)
    assert report.ok
    (btc,) = [line for line in report.lines if line.currency == "BTC"]
    assert (btc.verdict, btc.value, btc.min_total) == (Verdict.DUST, D("4000.00000"), D(5000))


def test_a_coin_difference_worth_the_minimum_order_total_is_a_discrepancy_at_the_latest_price() -> None:
    accounts = [account("KRW", "1000000"), account("BTC", "0.01004")]
    # the ledger's average price would call it dust; the latest close (150M) makes it 6,000 KRW
    report = compare(
        ledger(), accounts, tolerances=TOLERANCES, min_totals=MIN_TOTALS, prices={"BTC": D(150_000_000)}
    )
    assert [line.currency for line in report.discrepancies] == ["BTC"]
    assert report.discrepancies[0].value == D("6000.00000")


def test_a_coin_the_ledger_does_not_hold_is_compared_and_one_that_cannot_be_valued_is_a_discrepancy() -> None:
    accounts = [account("KRW", "1000000"), account("BTC", "0.01"), account("ETH", "1")]
    report = compare(ledger(), accounts, tolerances=TOLERANCES, min_totals={"ETH": D(5000)})
    assert verdicts(report)["ETH"] is Verdict.DISCREPANCY
    assert report.discrepancies[0].why == "no price to value it"
    # the exchange's own average buy price values it when nothing else does
    accounts[2] = account("ETH", "0.000001", avg="4000000")
    assert compare(ledger(), accounts, tolerances=TOLERANCES, min_totals={"ETH": D(5000)}).ok


def test_a_position_missing_on_the_exchange_is_a_discrepancy() -> None:
    report = compare(ledger(), [account("KRW", "1000000")], tolerances=TOLERANCES, min_totals=MIN_TOTALS)
    assert [(d.currency, d.difference) for d in report.discrepancies] == [("BTC", D("-0.01"))]


def test_ignored_currencies_are_never_compared() -> None:
    accounts = [account("KRW", "1000000"), account("BTC", "0.01"), account("XRP", "500")]
    report = compare(ledger(), accounts, tolerances=TOLERANCES, ignore=("XRP",))
    assert report.ok and "XRP" not in verdicts(report)


def test_a_run_compares_krw_its_krw_markets_coins_and_every_coin_the_ledger_holds() -> None:
    held = LedgerView({"KRW": D(1)}, {"XRP": D(5)}, {}, {"XRP": "KRW"})
    scope = run_currencies("KRW", ["KRW-BTC", "BTC-ETH"], held)
    assert scope == {"KRW", "BTC", "XRP"}  # BTC-ETH is not a KRW market: ETH is not the run's
    accounts = [account("KRW", "1"), account("XRP", "5"), account("ETH", "3"), account("DOGE", "9")]
    report = compare(held, accounts, tolerances=TOLERANCES, scope=scope)
    assert report.ok and [line.currency for line in report.lines] == ["KRW", "XRP"]
    unscoped = compare(held, accounts, tolerances=TOLERANCES)
    assert {line.currency for line in unscoped.discrepancies} == {"ETH", "DOGE"}


def test_live_refuses_symbols_quoted_in_anything_but_krw() -> None:
    assert non_krw_markets(["KRW-BTC", "BTC-ETH", "USDT-BTC"]) == ["BTC-ETH", "USDT-BTC"]
    require_krw_markets(["KRW-BTC", "KRW-ETH"])
    with pytest.raises(ConfigError, match="BTC-ETH, USDT-BTC"):
        require_krw_markets(["KRW-BTC", "BTC-ETH", "USDT-BTC"])


def test_the_alert_is_critical_and_says_whether_entries_are_halted() -> None:
    report = compare(ledger(), [account("KRW", "1"), account("BTC", "0.01")], tolerances=TOLERANCES)
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    alert = mismatch_alert(report, now, halted=True)
    assert (alert.type, alert.level) == (AlertType.RECONCILIATION_MISMATCH, AlertLevel.CRITICAL)
    assert "new entries are halted" in alert.message and "KRW" in alert.message
    assert "halting is disabled" in mismatch_alert(report, now, halted=False).message
