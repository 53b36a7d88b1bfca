"""The seven services' names, in pipeline order; a module of its own so the CLI can check a name
without importing the runtime (NATS, FastStream: ~0.3 s a `coinpilot backtest` need not pay)."""

SERVICES: tuple[str, ...] = ("collector", "indicator", "strategy", "risk", "agent", "executor", "notifier")
