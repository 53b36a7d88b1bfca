"""``UpbitVenue``: the executor's venue on Upbit, through the persisted order state machine.

One order, called inside the ledger's transaction (its account locked, so orders of one account
never overlap):

1. its ``venue_orders`` row, if any: a redelivery (after a crash, a lost answer, a restart)
   resolves that order by looking it up, **never sends it again**;
2. else a market not quoted in KRW is rejected ``MARKET_NOT_SUPPORTED`` (live is the KRW market),
   then the checks (``checks``: caps, the exchange minimum from ``/v1/orders/chance``, cash), then
   the price band against the book (``band``: ``/v1/orderbook`` walked for what would be sent;
   refused ``PRICE_OUT_OF_BAND``, nothing written or sent; a quotation that fails is transient);
3. the ``intended`` row is committed (its own transaction), then the order is sent with
   ``identifier`` = ``states.identifier_for(run, order)``: a market buy for the KRW amount
   (``ord_type=price``), a market sell of the ledger's volume (``ord_type=market``);
4. ``submitted`` with the exchange's uuid; then the order is read (``GET /v1/order``, bounded
   polling) until it is closed: ``done`` with what executed, or ``cancelled`` with nothing;
5. the venue's answer: an ``Execution`` of what executed (booked by ``core.apply_execution``, as
   every venue's) or a ``Rejection``.

Failures (the executor's README has the table): 429/5xx/connection -> ``TransientError`` (the
consumer retries in place; a request the exchange certainly did not take leaves no row); an answer
lost after sending -> the row says ``submitted`` without uuid and the retry looks it up by
identifier; refused -> ``failed`` and a rejection with Upbit's error name; 418 (or 401/403) ->
the venue halts: the run's kill switch is set (risk refuses entries until an operator clears it),
a CRITICAL ``VENUE_BLOCKED`` alert, and every order (this one too) waits in place as a
``TransientError`` until an operator restarts the executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from coinpilot.clock import wall_clock_now
from coinpilot.contracts import AlertLevel, AlertType, OrderApproved, RejectReason, RiskAlert, Side
from coinpilot.db import Database
from coinpilot.db.halts import set_halt
from coinpilot.errors import TransientError
from coinpilot.kill_switch import HaltSource
from services.executor import metrics
from services.executor.core import DEFAULT_PRICE_BAND, Execution, Ledger, Rejection
from services.executor.live import band, checks, store
from services.executor.live.answers import answer_of, failure, progress_of
from services.executor.live.states import FINAL, VenueState, identifier_for
from services.executor.live.store import Progress, VenueOrderRow
from services.executor.settings import non_krw_markets
from services.executor.upbit import (
    Blocked,
    DuplicateIdentifier,
    ExchangeUnavailable,
    IncompleteAnswer,
    MalformedAnswer,
    OrderNotFound,
    OrderRefused,
    OutcomeUnknown,
    RateLimited,
    RequestRefused,
    Unauthorized,
    UpbitClient,
)
from services.executor.upbit.models import Order, OrdType
from services.executor.upbit.models import Side as UpbitSide
from services.executor.venue import RecordedMarket

log = logging.getLogger(__name__)

AlertSink = Callable[[RiskAlert, str], Awaitable[None]]
"""Publishes an alert for a run (``risk.alerts``)."""


class VenueHalted(TransientError):
    """Raised for every order while the venue is halted: the message waits, it is not lost."""


class OutcomePending(TransientError):
    """Raised while an order's outcome is not known yet (answer lost, still open, not found yet)."""


class QuoteUnavailable(TransientError):
    """Raised when the book could not be read before an order: nothing was sent, the order waits."""


@dataclass(frozen=True, slots=True)
class LiveParams:
    caps: checks.Caps
    poll_interval: float = 0.5
    poll_attempts: int = 20
    not_found_grace: timedelta = timedelta(seconds=30)
    """How long after sending a lookup that finds nothing means "not yet", not "never placed"."""
    price_band: Decimal = DEFAULT_PRICE_BAND
    """How far (a fraction) the book's average for the order may be from its reference price:
    the paper venue's ``PRICE_BAND``."""


class UpbitVenue:
    """The executor's venue on Upbit (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        client: UpbitClient,
        params: LiveParams,
        *,
        alerts: AlertSink | None = None,
        clock: Callable[[], datetime] = wall_clock_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.client = client
        self.params = params
        self._alerts = alerts
        self._clock = clock
        self._sleep = sleep
        self.halted: str | None = None

    def __repr__(self) -> str:
        return f"UpbitVenue({self.client!r}, halted={self.halted!r})"

    async def execute(
        self, order: OrderApproved, ledger: Ledger, market: RecordedMarket, *, run_id: str
    ) -> Execution | Rejection:
        if self.halted is not None:
            raise VenueHalted(f"live venue halted ({self.halted}): order {order.order_id} waits")
        try:
            row = await store.fetch(self.db, run_id, order.order_id)
            if row is None:
                placed = await self._place(order, ledger, run_id)
                if isinstance(placed, Rejection):
                    return placed
                row = placed
            return await self._resolve(order, row)
        except (Blocked, Unauthorized) as e:
            await self._halt(order, run_id, e)
            raise VenueHalted(f"live venue halted: {type(e).__name__} {e.name}") from e

    # -- placing ---------------------------------------------------------------------------------

    async def _place(self, order: OrderApproved, ledger: Ledger, run_id: str) -> VenueOrderRow | Rejection:
        if non_krw_markets([order.symbol]):
            # the ledger's live cash is the KRW account only: nothing is asked, written or sent
            return Rejection(
                order,
                RejectReason.MARKET_NOT_SUPPORTED,
                f"live trading on Upbit is KRW markets only, not {order.symbol}",
            )
        try:
            chance = await self.client.chance(order.symbol)
        except RequestRefused as e:
            if isinstance(e, Unauthorized):
                raise
            # e.g. a market the exchange does not list: nothing was sent
            return Rejection(order, RejectReason.VENUE_REFUSED, f"upbit {e.name}: {e.message}")
        buy = order.side is Side.BUY
        min_total = chance.bid_min_total if buy else chance.ask_min_total
        spent = await store.spent_since(self.db, _day_start(self._clock())) if buy else Decimal(0)
        refused = checks.refuse(order, ledger, self.params.caps, spent, min_total, chance.bid_fee)
        if refused is not None:
            return refused
        position = ledger.position
        intended = VenueOrderRow(
            run_id=run_id,
            order_id=order.order_id,
            identifier=identifier_for(run_id, order.order_id),
            market=order.symbol,
            side=str(UpbitSide.BID if buy else UpbitSide.ASK),
            ord_type=str(OrdType.PRICE if buy else OrdType.MARKET),
            amount=order.amount if buy else None,
            volume=None if buy or position is None else position.quantity,
            min_total=min_total,
        )
        off_book = await self._refuse_off_book(order, intended)
        if off_book is not None:
            return off_book  # like every refusal above: nothing written or sent
        row, ours = await store.insert_intended(self.db, intended)  # committed before anything is sent
        if not ours:
            return row  # another delivery wrote it first: resolve that one, never send
        self._count(order, row.state)
        await store.mark_sent(self.db, run_id, order.order_id)
        try:
            answer = await self._send(row)
        except (RateLimited, ExchangeUnavailable):
            await store.forget_unsent(self.db, run_id, order.order_id)  # certainly not taken
            raise
        except DuplicateIdentifier:
            return row  # the exchange knows the identifier: look it up
        except OrderRefused as e:
            row = await self._record(
                order,
                row,
                Progress(
                    VenueState.FAILED,
                    last_error=failure(RejectReason.VENUE_REFUSED, f"upbit {e.name}: {e.message}"),
                ),
            )
            return answer_of(order, row)
        except OutcomeUnknown as e:
            await self._record(order, row, Progress(VenueState.SUBMITTED, last_error=f"outcome unknown: {e}"))
            raise OutcomePending(
                f"order {order.order_id} sent as {row.identifier}, answer lost ({e.name}): looked up next"
            ) from e
        except (Blocked, Unauthorized) as e:
            await self._record(
                order,
                row,
                Progress(
                    VenueState.FAILED,
                    last_error=failure(RejectReason.VENUE_REFUSED, f"upbit {e.status} {e.name}"),
                ),
            )
            raise
        return await self._record(
            order,
            row,
            Progress(VenueState.SUBMITTED, exchange_uuid=answer.uuid, exchange_state=str(answer.state)),
        )

    async def _refuse_off_book(self, order: OrderApproved, intended: VenueOrderRow) -> Rejection | None:
        """The book walked for what ``intended`` would send (``band``), before anything is written.
        A quotation that fails (5xx, timeout, 429, an unreadable answer) raises a ``TransientError``:
        the order waits in place and nothing is sent; it is never filled without a book."""
        try:
            book = await self.client.orderbook(order.symbol)
        except MalformedAnswer as e:
            raise QuoteUnavailable(
                f"order {order.order_id}: the {order.symbol} book is unreadable ({e}), read again"
            ) from e
        except RequestRefused as e:
            if isinstance(e, Unauthorized):
                raise
            return Rejection(order, RejectReason.VENUE_REFUSED, f"upbit {e.name}: {e.message}")
        size = intended.amount if intended.amount is not None else intended.volume
        assert size is not None  # checks.refuse passed: a BUY has its amount, a SELL its position
        return band.refuse_off_book(order, book, size, self.params.price_band)

    async def _send(self, row: VenueOrderRow) -> Order:
        if row.ord_type == OrdType.PRICE:
            assert row.amount is not None
            return await self.client.buy_market(row.market, row.amount, identifier=row.identifier)
        assert row.volume is not None
        return await self.client.sell_market(row.market, row.volume, identifier=row.identifier)

    # -- resolving -------------------------------------------------------------------------------

    async def _resolve(self, order: OrderApproved, row: VenueOrderRow) -> Execution | Rejection:
        """Read the order until it is closed (bounded); a final row is answered from the row."""
        for attempt in range(self.params.poll_attempts):
            if row.state in FINAL:
                return answer_of(order, row)
            if attempt:
                await self._sleep(self.params.poll_interval)
            try:
                if row.exchange_uuid is not None:
                    answer = await self.client.get_order(uuid=row.exchange_uuid)
                else:
                    answer = await self.client.get_order(identifier=row.identifier)
            except OrderNotFound:
                if row.exchange_uuid is not None or self._maybe_early(row):
                    raise OutcomePending(
                        f"order {order.order_id} ({row.identifier}) not found on the exchange yet"
                    ) from None
                row = await self._record(
                    order,
                    row,
                    Progress(
                        VenueState.FAILED,
                        last_error=failure(
                            RejectReason.VENUE_NOT_PLACED,
                            f"order {row.identifier} may have been sent but the exchange has no such order: "
                            "it was never placed (not sent again)",
                        ),
                    ),
                )
                continue
            except (MalformedAnswer, RequestRefused) as e:
                if isinstance(e, Unauthorized):
                    raise
                # the order may have executed: never dead-letter it, read it again on the retry
                raise OutcomePending(f"order {order.order_id}: lookup failed ({e}), read again") from e
            try:
                progress = progress_of(answer, row.min_total, order.reference_price)
            except IncompleteAnswer as e:
                raise OutcomePending(f"order {order.order_id}: {e}") from e
            row = await self._record(order, row, progress)
        if row.state in FINAL:
            return answer_of(order, row)
        raise OutcomePending(
            f"order {order.order_id} ({row.identifier}) still {row.state} after "
            f"{self.params.poll_attempts} reads: read again on the retry"
        )

    def _maybe_early(self, row: VenueOrderRow) -> bool:
        """True while a lookup that finds nothing may just be ahead of the exchange."""
        return row.sent_at is not None and self._clock() - row.sent_at < self.params.not_found_grace

    async def _record(self, order: OrderApproved, row: VenueOrderRow, progress: Progress) -> VenueOrderRow:
        moved = await store.record(self.db, row, progress)
        if moved.state is not row.state:
            self._count(order, moved.state)
            log.info("venue order %s (%s): %s -> %s", order.order_id, row.identifier, row.state, moved.state)
        return moved

    @staticmethod
    def _count(order: OrderApproved, state: VenueState) -> None:
        metrics.VENUE_ORDERS.labels(order.symbol, str(state)).inc()

    # -- halting ---------------------------------------------------------------------------------

    async def _halt(self, order: OrderApproved, run_id: str, error: Blocked | Unauthorized) -> None:
        """No further orders until an operator restarts the executor, and the run's kill switch set
        (risk refuses entries until an operator clears it, across restarts); a CRITICAL alert says why."""
        first = self.halted is None
        self.halted = f"upbit {error.status} {error.name}"
        metrics.VENUE_HALTED.set(1)
        log.critical("live venue halted on order %s: %s", order.order_id, self.halted)
        if not first:
            return
        try:
            await set_halt(
                self.db, run_id, HaltSource.VENUE, f"{self.halted} on order {order.order_id}", self._clock()
            )
        except Exception as exc:  # the in-memory halt holds whether or not the row is written
            log.error("could not set the kill switch after the venue halted: %r", exc)
        if self._alerts is None:
            return
        alert = RiskAlert(
            ts_event=order.ts_event,
            type=AlertType.VENUE_BLOCKED,
            level=AlertLevel.CRITICAL,
            message=(
                f"Upbit answered {error.status} {error.name} to order {order.order_id}: the live venue "
                "takes no further orders until an operator acts and restarts the executor"
            ),
            symbol=order.symbol,
        )
        try:
            await self._alerts(alert, run_id)
        except Exception as exc:  # the halt holds whether or not the page goes out
            log.error("could not publish the venue halt alert: %r", exc)


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
