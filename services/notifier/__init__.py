"""Notifier: fills, AI decisions, risk alerts and the daily report to Discord and n8n (§7, §8)."""
