"""Reconciliation (issue 23): the executor's ledger against the exchange's accounts.

Per currency, the ledger's holding (``account_state`` cash for a quote currency, ``positions``
quantity for a coin) is compared with the exchange's ``balance + locked`` (``GET /v1/accounts``:
``locked`` is what open orders hold; the ledger books fills, not reservations, so both sides count
an open order's reservation as still owned). The difference (exchange - ledger) is:

* ``equal``: zero;
* ``dust``: within the currency's tolerance (``COINPILOT_RECONCILE_TOLERANCES``, units; KRW 1 by
  default), or, for a coin, worth less than the exchange's minimum order total for its market
  (``/v1/orders/chance``: no order could trade it) at the latest recorded close (else the ledger's
  or the exchange's average price);
* ``DISCREPANCY``: anything else, including a coin that cannot be valued.

A discrepancy is recorded (``reconciliations``), halts new entries (``coinpilot.db.halts``, source
``reconcile``; ``halt=False`` only reports) and raises a CRITICAL ``RECONCILIATION_MISMATCH`` alert
on ``risk.alerts`` (once per episode: when the halt is newly set, or the previous reconciliation
was clean). Risk then refuses entries ``TRADING_HALTED``; exits still pass. ``compare`` is pure;
``reconcile_once`` and ``periodic`` are the I/O around it.

Scope: live trading is the KRW market, so the ledger's cash is its KRW account only, and with the
run's symbols known only KRW and the coins the run trades (its ``KRW-`` symbols and any position
the ledger holds) are compared; the rest of the account is not the run's.

Consistency: a round reads both sides holding the run's KRW account row lock, the lock every
booking of the account takes (``state.lock_account``), from before the unsettled-order check and
the exchange read until the ledger read: no order of the account can execute on the exchange and
be booked in between, so an order in flight can never read as a difference.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.clock import ensure_utc, wall_clock_now
from coinpilot.contracts import AlertLevel, AlertType, Contract, RiskAlert
from coinpilot.db import Database
from coinpilot.db.halts import set_halt
from coinpilot.kill_switch import HaltSource
from coinpilot.symbols import quote_currency
from services.executor import state
from services.executor.upbit import Account, Blocked, Chance, Order, Unauthorized

log = logging.getLogger("coinpilot.executor.reconcile")
ZERO = Decimal(0)
VENUE = "upbit"


class Verdict(StrEnum):
    EQUAL = "equal"
    DUST = "dust"
    DISCREPANCY = "DISCREPANCY"


class ReconcileSettings(BaseSettings):
    """``COINPILOT_RECONCILE_*``; dicts and lists as JSON (``{"KRW": "1", "BTC": "0.00000002"}``)."""

    model_config = SettingsConfigDict(env_prefix="COINPILOT_RECONCILE_", extra="ignore", frozen=True)

    tolerances: dict[str, Decimal] = Field(
        default_factory=lambda: {"KRW": Decimal(1)},
        description="Per currency: a difference up to this many units is dust (default 0 units)",
    )
    ignore_currencies: tuple[str, ...] = Field(
        default=(), description="Currencies held on the account outside CoinPilot: never compared"
    )
    interval_seconds: float = Field(default=300.0, gt=0, description="Between periodic reconciliations")
    halt_on_discrepancy: bool = Field(default=True, description="False: alert and record, no halt")


@dataclass(frozen=True, slots=True)
class Line:
    """One currency's comparison; ``difference`` = exchange total - ledger."""

    currency: str
    ledger: Decimal
    exchange_balance: Decimal
    exchange_locked: Decimal
    difference: Decimal
    tolerance: Decimal
    verdict: Verdict
    value: Decimal | None = None
    """The difference in the quote currency (coins), when a price was known."""
    min_total: Decimal | None = None
    why: str = ""

    @property
    def exchange(self) -> Decimal:
        return self.exchange_balance + self.exchange_locked

    def text(self) -> str:
        value = "" if self.value is None else f" (~{self.value:.0f} quote)"
        return (
            f"{self.currency:<6} ledger {self.ledger} exchange {self.exchange} "
            f"(locked {self.exchange_locked}) diff {self.difference:+}{value} {self.verdict} {self.why}"
        ).rstrip()

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Report:
    lines: tuple[Line, ...]
    open_orders: int = 0

    @property
    def discrepancies(self) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if line.verdict is Verdict.DISCREPANCY)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def summary(self) -> str:
        if self.ok:
            return f"ledger equals the exchange within dust ({len(self.lines)} currencies)"
        return "ledger differs from the exchange: " + "; ".join(
            f"{d.currency} ledger {d.ledger} exchange {d.exchange} ({d.difference:+})"
            for d in self.discrepancies
        )


@dataclass(frozen=True, slots=True)
class LedgerView:
    """What the ledger holds: cash per quote currency, quantity and average price per coin."""

    cash: Mapping[str, Decimal] = field(default_factory=dict)
    coins: Mapping[str, Decimal] = field(default_factory=dict)
    avg_prices: Mapping[str, Decimal] = field(default_factory=dict)
    quote_of: Mapping[str, str] = field(default_factory=dict)
    """coin -> the quote currency of its market (``KRW-BTC`` -> BTC: KRW)."""

    def holding(self, currency: str) -> Decimal:
        return self.cash.get(currency, ZERO) + self.coins.get(currency, ZERO)


def run_currencies(quote: str, symbols: Iterable[str], ledger: LedgerView) -> frozenset[str]:
    """What a run trades: its quote currency, the coins of its symbols in that quote, and every
    coin the ledger holds."""
    coins = {s.split("-", 1)[1] for s in symbols if quote_currency(s) == quote}
    return frozenset({quote, *coins, *ledger.coins})


def compared_currencies(
    ledger: LedgerView,
    accounts: Iterable[Account],
    ignore: Iterable[str] = (),
    scope: Iterable[str] | None = None,
) -> list[str]:
    """Every currency either side holds (within ``scope`` when given), in a stable order (quote
    currencies first)."""
    ignored = set(ignore)
    seen = {*ledger.cash, *ledger.coins, *(a.currency for a in accounts)} - ignored
    if scope is not None:
        seen &= set(scope)
    return sorted(seen, key=lambda c: (c not in ledger.cash, c))


def beyond_tolerance(
    ledger: LedgerView, accounts: Mapping[str, Account], tolerances: Mapping[str, Decimal], currency: str
) -> Decimal | None:
    """The difference when it is more than the currency's unit tolerance, else None."""
    account = accounts.get(currency)
    exchange = ZERO if account is None else account.balance + account.locked
    difference = exchange - ledger.holding(currency)
    return difference if abs(difference) > tolerances.get(currency, ZERO) else None


def compare(
    ledger: LedgerView,
    accounts: Iterable[Account],
    *,
    tolerances: Mapping[str, Decimal],
    prices: Mapping[str, Decimal] | None = None,
    min_totals: Mapping[str, Decimal] | None = None,
    ignore: Iterable[str] = (),
    open_orders: int = 0,
    scope: Iterable[str] | None = None,
) -> Report:
    """Pure: each currency's verdict. ``prices``/``min_totals`` are per coin (in its quote currency);
    ``scope``: only these currencies (None: every currency either side holds)."""
    by_currency = {a.currency: a for a in accounts}
    prices = prices or {}
    min_totals = min_totals or {}
    lines = []
    for currency in compared_currencies(ledger, by_currency.values(), ignore, scope):
        account = by_currency.get(currency)
        balance = ZERO if account is None else account.balance
        locked = ZERO if account is None else account.locked
        held = ledger.holding(currency)
        difference = balance + locked - held
        tolerance = tolerances.get(currency, ZERO)
        line = Line(currency, held, balance, locked, difference, tolerance, Verdict.EQUAL)
        if difference == 0:
            lines.append(line)
            continue
        if abs(difference) <= tolerance:
            lines.append(_with(line, Verdict.DUST, why=f"within tolerance {tolerance}"))
            continue
        if currency in ledger.cash or currency not in min_totals:
            lines.append(_with(line, Verdict.DISCREPANCY, why=f"beyond tolerance {tolerance}"))
            continue
        price = prices.get(currency) or ledger.avg_prices.get(currency)
        if price is None and account is not None and account.avg_buy_price > 0:
            price = account.avg_buy_price
        if price is None:
            lines.append(_with(line, Verdict.DISCREPANCY, why="no price to value it"))
            continue
        value = abs(difference) * price
        minimum = min_totals[currency]
        if value < minimum:
            why = f"worth less than the minimum order total {minimum}"
            lines.append(_with(line, Verdict.DUST, value=value, min_total=minimum, why=why))
        else:
            why = f"worth at least the minimum order total {minimum}"
            lines.append(_with(line, Verdict.DISCREPANCY, value=value, min_total=minimum, why=why))
    return Report(tuple(lines), open_orders)


def _with(line: Line, verdict: Verdict, **changes: Any) -> Line:
    return replace(line, verdict=verdict, **changes)


def mismatch_alert(report: Report, now: datetime, halted: bool) -> RiskAlert:
    then = "new entries are halted until an operator clears it (`coinpilot halt --clear`)"
    if not halted:
        then = "halting is disabled (COINPILOT_RECONCILE_HALT_ON_DISCREPANCY=false)"
    return RiskAlert(
        ts_event=now,
        type=AlertType.RECONCILIATION_MISMATCH,
        level=AlertLevel.CRITICAL,
        message=f"{report.summary()}; {then}",
    )


# -- I/O ----------------------------------------------------------------------------------------


class AccountsClient(Protocol):
    """What reconciliation needs of ``UpbitClient``."""

    async def accounts(self) -> tuple[Account, ...]: ...

    async def open_orders(self) -> tuple[Order, ...]: ...

    async def chance(self, market: str) -> Chance: ...


class AlertBus(Protocol):
    async def publish(self, msg: Contract, *, run_id: str, trace_id: str | None = None) -> None: ...


_CASH = "SELECT currency, balance FROM account_state WHERE run_id = $1 AND currency = $2"
_POSITIONS = "SELECT symbol, quantity, avg_price FROM positions WHERE run_id = $1 AND quantity > 0"
_LATEST_CLOSES = """
SELECT DISTINCT ON (symbol) symbol, close_price FROM market_data
WHERE symbol = ANY($1::varchar[]) AND interval = '1m'
ORDER BY symbol, timestamp DESC
"""
_RECORD = """
INSERT INTO reconciliations (run_id, checked_at, venue, ok, discrepancies, report)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
"""
_PREVIOUS_OK = "SELECT ok FROM reconciliations WHERE run_id = $1 ORDER BY checked_at DESC, id DESC LIMIT 1"


class Deferred(Exception):
    """A round that cannot compare now (an order the ledger cannot agree on yet); nothing recorded."""


Defer = Callable[[], Awaitable[str | None]]
"""Returns why a round must wait (an order in flight, or executed and not booked), else None."""


async def read_ledger_view(db: Database, run_id: str, quote: str = "KRW") -> LedgerView:
    async with db.transaction() as conn:
        return await _ledger_view(conn, run_id, quote)


async def _ledger_view(conn: Any, run_id: str, quote: str) -> LedgerView:
    """The run's ``quote`` cash (live trades the KRW market: other cash rows are not on the
    exchange) and its positions."""
    cash_rows = await conn.fetch(_CASH, run_id, quote)
    position_rows = await conn.fetch(_POSITIONS, run_id)
    coins: dict[str, Decimal] = {}
    avg: dict[str, Decimal] = {}
    quote_of: dict[str, str] = {}
    for row in position_rows:
        quote, coin = row["symbol"].split("-", 1)
        coins[coin] = coins.get(coin, ZERO) + row["quantity"]
        avg[coin], quote_of[coin] = row["avg_price"], quote
    return LedgerView({r["currency"]: r["balance"] for r in cash_rows}, coins, avg, quote_of)


async def latest_closes(db: Database, markets: Iterable[str]) -> dict[str, Decimal]:
    wanted = sorted(set(markets))
    if not wanted:
        return {}
    async with db.transaction() as conn:
        rows = await conn.fetch(_LATEST_CLOSES, wanted)
    return {row["symbol"]: row["close_price"] for row in rows}


async def read_sides(
    db: Database, client: AccountsClient, run_id: str, quote: str = "KRW", defer: Defer | None = None
) -> tuple[tuple[Account, ...], tuple[Order, ...], LedgerView]:
    """The exchange's accounts and open orders and the ledger, read as one consistent state: under
    the run's ``quote`` account row lock (see the module docstring). ``Deferred`` when ``defer``,
    asked under the lock, gives a reason (an order left unsettled by a crash or a lost answer)."""
    async with db.transaction() as conn:
        await state.lock_existing_account(conn, run_id, quote)
        reason = await defer() if defer is not None else None
        if reason is not None:
            raise Deferred(reason)
        accounts = await client.accounts()
        orders = await client.open_orders()
        ledger = await _ledger_view(conn, run_id, quote)  # a statement started after the lock
    return accounts, orders, ledger


async def build_report(
    db: Database,
    client: AccountsClient,
    settings: ReconcileSettings,
    run_id: str,
    quote: str = "KRW",
    *,
    symbols: Iterable[str] | None = None,
    defer: Defer | None = None,
) -> Report:
    """Read both sides (``read_sides``); valuation inputs (closes, minimum totals) only for coins
    beyond tolerance. ``symbols``: the run's markets, which scope the comparison (None: every
    currency either side holds)."""
    accounts, orders, ledger = await read_sides(db, client, run_id, quote, defer)
    scope = None if symbols is None else run_currencies(quote, symbols, ledger)
    by_currency = {a.currency: a for a in accounts}
    prices: dict[str, Decimal] = {}
    min_totals: dict[str, Decimal] = {}
    for currency in compared_currencies(ledger, accounts, settings.ignore_currencies, scope):
        if currency in ledger.cash or currency == quote:
            continue
        difference = beyond_tolerance(ledger, by_currency, settings.tolerances, currency)
        if difference is None:
            continue
        market = f"{ledger.quote_of.get(currency, quote)}-{currency}"
        chance = await client.chance(market)
        min_totals[currency] = chance.ask_min_total if difference > 0 else chance.bid_min_total
        close = (await latest_closes(db, [market])).get(market)
        if close is not None:
            prices[currency] = close
    return compare(
        ledger,
        accounts,
        tolerances=settings.tolerances,
        prices=prices,
        min_totals=min_totals,
        ignore=settings.ignore_currencies,
        open_orders=len(orders),
        scope=scope,
    )


async def record(db: Database, run_id: str, report: Report, now: datetime) -> bool | None:
    """Store the report; returns whether the previous reconciliation was clean (None: first)."""
    body = json.dumps([line.as_json() for line in report.lines])
    async with db.transaction() as conn:
        previous = await conn.fetchval(_PREVIOUS_OK, run_id)
        await conn.execute(_RECORD, run_id, now, VENUE, report.ok, len(report.discrepancies), body)
    return previous


async def reconcile_once(
    db: Database,
    client: AccountsClient,
    bus: AlertBus | None,
    settings: ReconcileSettings,
    *,
    run_id: str,
    now: datetime | None = None,
    halt: bool | None = None,
    symbols: Iterable[str] | None = None,
    defer: Defer | None = None,
) -> Report:
    """Compare, record, and on a discrepancy halt entries and alert (see the module docstring).

    ``bus`` None: no alert (a command run without NATS); ``halt`` None: the settings decide;
    ``symbols`` and ``defer`` as ``build_report`` (``Deferred``: nothing recorded).
    """
    now = ensure_utc(now) if now is not None else wall_clock_now()
    halt = settings.halt_on_discrepancy if halt is None else halt
    report = await build_report(db, client, settings, run_id, symbols=symbols, defer=defer)
    previous_ok = await record(db, run_id, report, now)
    if report.ok:
        log.info("reconciliation: %s", report.summary())
        return report
    newly_halted = False
    if halt:
        _, newly_halted = await set_halt(db, run_id, HaltSource.RECONCILE, report.summary(), now)
    log.critical("reconciliation: %s", report.summary())
    if bus is not None and (newly_halted or previous_ok is not False):
        await bus.publish(mismatch_alert(report, now, halt), run_id=run_id)
    return report


async def halt_on_refusal(db: Database, bus: AlertBus, run_id: str, exc: Exception, now: datetime) -> None:
    """The exchange blocked us (418) or refused our keys: no state can be trusted, halt entries."""
    reason = f"exchange refused reconciliation: {type(exc).__name__}: {exc}"
    halt, is_new = await set_halt(db, run_id, HaltSource.RECONCILE, reason, now)
    if is_new:
        alert = RiskAlert(
            ts_event=now, type=AlertType.TRADING_HALT, level=AlertLevel.CRITICAL, message=halt.describe()
        )
        await bus.publish(alert, run_id=run_id)


async def periodic(
    db: Database,
    client: AccountsClient,
    bus: AlertBus,
    settings: ReconcileSettings,
    *,
    run_id: str,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rounds: int | None = None,
    start_now: bool = True,
    defer: Defer | None = None,
    symbols: Iterable[str] | None = None,
) -> None:
    """Reconcile now (``start_now``, else after one interval) and every ``interval_seconds`` until
    cancelled (or ``rounds`` done; ``rounds=1`` is the guarded start-up reconciliation).

    A failure of one round (exchange or database unavailable) is logged and the next round runs;
    ``Blocked`` (418) and ``Unauthorized`` halt entries with a CRITICAL alert. ``defer``, asked
    under the account lock (``read_sides``), skips a round when it returns a reason (the live venue:
    an order left unsettled, which would read as a difference); ``symbols`` scope the comparison.
    """
    if not start_now:
        await sleep(settings.interval_seconds)
    done = 0
    while rounds is None or done < rounds:
        try:
            await reconcile_once(db, client, bus, settings, run_id=run_id, symbols=symbols, defer=defer)
        except Deferred as deferred:
            log.info("reconciliation deferred: %s", deferred)
        except (Blocked, Unauthorized) as exc:
            log.critical("reconciliation refused by the exchange: %s", exc)
            try:
                await halt_on_refusal(db, bus, run_id, exc, wall_clock_now())
            except Exception as inner:
                log.error("could not halt after the exchange refused reconciliation: %r", inner)
        except Exception as exc:
            log.error("reconciliation failed, retrying in %.0f s: %r", settings.interval_seconds, exc)
        done += 1
        if rounds is None or done < rounds:
            await sleep(settings.interval_seconds)
