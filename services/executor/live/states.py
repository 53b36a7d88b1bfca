"""The live order state machine (pure): where an order sent to the exchange stands, and how it moves.

    intended ──send answered──► submitted ──wait/watch──► open ──done/cancel──► done | cancelled
       │  │                        │  ▲                      ▲
       │  └─answer already closed──┼──┼──────────────────────┘ (a market order closes at once)
       │                           │  └ outcome unknown (timeout, 5xx): uuid unknown, look it up
       └─refused / never placed──► failed ◄──never placed (lookup: not found)

* ``intended``: committed before anything is sent. Found on a redelivery it means "maybe sent":
  the order is looked up by identifier, never sent again.
* ``submitted``: sent; the exchange's uuid if it answered, none if the answer was lost.
* ``open``: on the exchange's book (``wait``/``watch``), possibly partly executed.
* ``done``: closed with something executed (Upbit ``done``, or ``cancel`` with executed volume: a
  market buy's usual end); the ledger books what executed.
* ``cancelled``: closed with nothing executed.
* ``failed``: the exchange refused it, or it is not on the exchange (never placed).

``done``, ``cancelled`` and ``failed`` are final.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from services.executor.upbit.models import Order


class VenueState(StrEnum):
    INTENDED = "intended"
    SUBMITTED = "submitted"
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINAL = frozenset({VenueState.DONE, VenueState.CANCELLED, VenueState.FAILED})

_ON_EXCHANGE = frozenset({VenueState.OPEN, VenueState.DONE, VenueState.CANCELLED})

TRANSITIONS: dict[VenueState, frozenset[VenueState]] = {
    # sent and answered (submitted), answered already open/closed, refused or never placed
    VenueState.INTENDED: frozenset({VenueState.SUBMITTED, VenueState.FAILED}) | _ON_EXCHANGE,
    # what the exchange says (or, after a lost answer, that it has no such order)
    VenueState.SUBMITTED: frozenset({VenueState.FAILED}) | _ON_EXCHANGE,
    # more executed while on the book, or closed; it is on the exchange: never "failed"
    VenueState.OPEN: _ON_EXCHANGE,
    VenueState.DONE: frozenset(),
    VenueState.CANCELLED: frozenset(),
    VenueState.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    """Raised when a state change is not in :data:`TRANSITIONS` (a bug, never an exchange fault)."""


def can_move(current: VenueState, new: VenueState) -> bool:
    return new in TRANSITIONS[current]


def check_move(current: VenueState, new: VenueState) -> VenueState:
    """``new`` if the machine allows ``current -> new``; else raises :class:`IllegalTransition`."""
    if not can_move(current, new):
        raise IllegalTransition(f"venue order cannot move from {current} to {new}")
    return new


def state_of(order: Order) -> VenueState:
    """Where an order the exchange answered with stands: on the book, or closed with or without
    something executed."""
    if order.is_open:
        return VenueState.OPEN
    return VenueState.DONE if order.executed_volume > 0 else VenueState.CANCELLED


IDENTIFIER_PREFIX = "cp-"


def identifier_for(run_id: str, order_id: str) -> str:
    """The exchange identifier of our order: deterministic, so every attempt of the same order
    (a retry, a redelivery after a crash) names the same one, and Upbit's refusal of a reused
    identifier makes a second placement impossible. ``cp-`` and 32 lowercase hex digits (run and
    order id hashed: order ids contain ``:`` and reach 64 characters; the run keeps a replay's
    orders apart from live ones)."""
    digest = hashlib.sha256(f"{run_id}\x1f{order_id}".encode()).hexdigest()
    return f"{IDENTIFIER_PREFIX}{digest[:32]}"
