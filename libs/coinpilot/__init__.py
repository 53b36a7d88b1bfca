"""CoinPilot shared library: contracts, bus, storage, cache, clock, settings, metrics, CLI."""

__version__ = "0.1.0"
