"""Which database failures the ladder waits out (transient) and which it dead-letters at once
(permanent: SQLSTATE classes 22 and 23, or the driver refusing a parameter)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa

from coinpilot.db.database import _classified, is_transient, permanent_reason
from coinpilot.errors import PermanentError, TransientError


class AdaptedError(Exception):
    """What SQLAlchemy's asyncpg adapter wraps: the driver error's SQLSTATE as an attribute."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow"), "22003"),
        (asyncpg.exceptions.StringDataRightTruncationError("value too long for type"), "22001"),
        (asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax"), "22P02"),
        (asyncpg.exceptions.UniqueViolationError("duplicate key value"), "23505"),
        (asyncpg.exceptions.NotNullViolationError("null value in column"), "23502"),
        (sa.DataError("INSERT ...", {}, AdaptedError("numeric field overflow", "22003")), "22003"),
        (sa.IntegrityError("INSERT ...", {}, AdaptedError("duplicate key", "23505")), "23505"),
    ],
)
def test_data_and_constraint_errors_are_permanent_with_their_sqlstate(error: Exception, code: str) -> None:
    reason = permanent_reason(error)
    assert reason is not None and f"SQLSTATE {code}" in reason


def test_the_driver_refusing_a_parameter_is_permanent_although_it_is_an_interface_error() -> None:
    error = asyncpg.exceptions._base.DataError("invalid input for query argument $1: 10000000000")
    assert is_transient(error), "the reason the permanent check must come first"
    with pytest.raises(PermanentError, match="invalid query input"), _classified():
        raise error


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("connect call failed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        sa.OperationalError("SELECT 1", {}, AdaptedError("connection refused", "08001")),
        TimeoutError(),
        sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
    ],
)
def test_an_unavailable_database_is_transient_never_permanent(error: Exception) -> None:
    assert permanent_reason(error) is None
    with pytest.raises(TransientError, match="database unavailable"), _classified():
        raise error


def test_a_permanent_database_error_keeps_the_driver_error_as_its_cause() -> None:
    driver = asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow")
    with pytest.raises(PermanentError, match="22003") as raised, _classified():
        raise sa.DataError("INSERT ...", {}, driver) from driver
    assert raised.value.__cause__.orig is driver


def test_other_errors_pass_through_unchanged() -> None:
    with pytest.raises(KeyError), _classified():
        raise KeyError("a bug")
    with pytest.raises(sa.ProgrammingError), _classified():
        raise sa.ProgrammingError("SELEC 1", {}, AdaptedError("syntax error", "42601"))
