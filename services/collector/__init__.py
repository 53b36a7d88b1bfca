"""Collector service: Upbit 1m candles in (backfill + minute-aligned polling), ``candles.1m.<SYM>`` out,
and the recorder that writes every published candle into ``market_data``."""
