"""Exceptions named by what the caller must do.

CoinPilotError
 ├── ContractError      a payload does not match its contract: never retried, dead-lettered
 ├── ConfigError        configuration is invalid: the process must not start
 ├── TransientError     a dependency failed in a way that may heal (PostgreSQL, Redis, NATS,
 │    │                 Upbit 429/5xx, timeouts): retried with backoff, then dead-lettered
 │    └── RateLimitedError   the remote asked us to slow down (HTTP 429); carries retry_after
 └── PermanentError     the request is well-formed but can never succeed (HTTP 4xx other than
      │                 429, a malformed exchange response, a value that cannot fit its column):
      │                 not retried, dead-lettered on the first delivery
      └── RefusedMessage     a message broke a rule of the trust boundary (an implausible candle,
                        an order nobody proposed): dead-lettered with the rule, and the alerts it
                        carries are published, so an operator hears of it
"""

from __future__ import annotations


class CoinPilotError(Exception):
    """Base of every error CoinPilot raises on purpose."""


class ContractError(CoinPilotError):
    """Raised when bytes on the wire do not parse into the contract of their subject."""


class ConfigError(CoinPilotError):
    """Raised when a settings value or a strategy file is invalid; names the bad key."""


class TransientError(CoinPilotError):
    """Raised when a dependency failed in a way a retry may fix."""


class RateLimitedError(TransientError):
    """Raised on HTTP 429 and similar; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(CoinPilotError):
    """Raised when an operation can never succeed as asked; retrying would only repeat it."""


class RefusedMessage(PermanentError):
    """Raised by a handler that refuses its input for a named rule (``rule``, e.g. ``OHLC``).

    The ladder dead-letters the message with ``rule: message`` as the reason and publishes
    ``alerts`` (contracts such as a ``RiskAlert``) before terminating it; nothing else the handler
    did is kept, since it raised.
    """

    def __init__(self, rule: str, message: str, alerts: tuple[object, ...] = ()) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.alerts = alerts
