"""Composition roots: the live host, the backtest, the demo and the CLI; they import the services,
nothing imports them."""
