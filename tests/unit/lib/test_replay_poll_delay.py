"""How often a replay reads the pipeline's backlog while it waits for a drain."""

from coinpilot.replay.publisher import LONG_POLL_MAX, SHORT_POLL_MAX, next_poll_delay


def test_a_small_backlog_is_read_again_soon_and_a_little_later_each_time() -> None:
    delays = [0.001 / 1.5]
    for _ in range(12):
        delays.append(next_poll_delay(delays[-1], backlog=3))
    assert delays[1] == 0.001
    assert delays[2] == 0.0015
    assert max(delays) == SHORT_POLL_MAX


def test_a_large_backlog_is_read_again_in_proportion_to_its_size() -> None:
    assert next_poll_delay(0.001, backlog=5_000) == 5_000 * 20e-6
    assert next_poll_delay(0.001, backlog=1_000_000) == LONG_POLL_MAX


def test_a_backlog_that_shrinks_is_read_sooner_again() -> None:
    after_large = next_poll_delay(0.001, backlog=10_000)
    assert next_poll_delay(after_large, backlog=10) == SHORT_POLL_MAX
