"""The strategy service: the rule engine of BEHAVIOUR §3 over closed-candle indicator snapshots."""
