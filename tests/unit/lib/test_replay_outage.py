"""Which failures a replay rides out as a NATS outage, and how long it waits between attempts."""

import pytest
from nats import errors as nats_errors
from nats.js import errors as js_errors

from coinpilot.errors import TransientError
from coinpilot.replay.outage import FIRST_PAUSE, MAX_PAUSE, nats_away, next_pause


def wrapped(cause: BaseException) -> TransientError:
    """What ``Bus.publish`` raises: the NATS error as the cause of a TransientError."""
    try:
        raise TransientError("publish to candles.1m.KRW-BTC failed") from cause
    except TransientError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        pytest.param(nats_errors.TimeoutError(), True, id="request-timeout"),
        pytest.param(TimeoutError(), True, id="publish-ack-never-came"),
        pytest.param(nats_errors.NoRespondersError(), True, id="jetstream-recovering"),
        pytest.param(js_errors.ServiceUnavailableError(), True, id="jetstream-503"),
        pytest.param(nats_errors.ConnectionReconnectingError(), True, id="reconnecting"),
        pytest.param(wrapped(nats_errors.TimeoutError()), True, id="bus-publish-timed-out"),
        pytest.param(wrapped(nats_errors.MaxPayloadError()), False, id="payload-too-large-is-a-refusal"),
        pytest.param(js_errors.NotFoundError(), False, id="no-such-stream-is-a-refusal"),
        pytest.param(nats_errors.AuthorizationError(), False, id="no-permission-is-a-refusal"),
        pytest.param(TransientError("database down"), False, id="not-a-nats-error"),
        pytest.param(ValueError("bad candle"), False, id="a-bug-is-raised"),
    ],
)
def test_nats_away_tells_an_outage_from_a_refusal(exc: BaseException, away: bool) -> None:
    assert nats_away(exc) is away


def test_pauses_double_from_50_ms_up_to_a_second() -> None:
    pauses = [next_pause(0.0)]
    for _ in range(6):
        pauses.append(next_pause(pauses[-1]))
    assert pauses == [FIRST_PAUSE, 0.1, 0.2, 0.4, 0.8, MAX_PAUSE, MAX_PAUSE]
