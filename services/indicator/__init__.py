"""Indicator service: closed 1m candles in; indicator snapshots, hourly candles and regimes out."""
