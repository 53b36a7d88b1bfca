"""``coinpilot replay``: publish recorded candles into a NATS, paced, under a run id."""

from coinpilot.replay.pacing import Pace, parse_pace
from coinpilot.replay.publisher import ReplayResult, replay_candles, wait_drained

__all__ = ["Pace", "ReplayResult", "parse_pace", "replay_candles", "wait_drained"]
