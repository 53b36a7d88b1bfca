"""Executor: approved orders in, paper fills out, exactly once per order (BEHAVIOUR §6)."""
