"""Pure analytics shared by services, reports and the backtest (no I/O, no clock)."""
