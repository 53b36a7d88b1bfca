"""Agent: the LLM second opinion on risk-approved BUYs; it can say no, never alter an order (§5)."""
