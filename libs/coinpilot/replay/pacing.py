"""How fast a replay goes: ``lockstep`` (drain between timestamps), ``realtime``, ``max`` or ``xN``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Pace:
    mode: str  # "lockstep" | "max" | "scaled"
    speed: float = 1.0  # event seconds per wall second, for "scaled" (realtime = 1)

    def wall_delay(self, previous: datetime | None, current: datetime) -> float:
        """Seconds to wait before publishing ``current`` when the last step was ``previous``."""
        if self.mode != "scaled" or previous is None:
            return 0.0
        return max(0.0, (current - previous).total_seconds() / self.speed)


def parse_pace(text: str) -> Pace:
    """``lockstep`` | ``max`` | ``realtime`` | ``x60`` (sixty times real time)."""
    text = text.strip().lower()
    if text in ("lockstep", "max"):
        return Pace(text)
    if text == "realtime":
        return Pace("scaled", 1.0)
    if text.startswith("x"):
        try:
            speed = float(text[1:])
        except ValueError:
            speed = 0.0
        if speed > 0:
            return Pace("scaled", speed)
    raise ValueError(f"pace must be lockstep, realtime, max or xN (e.g. x60), not {text!r}")
