"""The risk service: order sizing, the checks of BEHAVIOUR §4, daily state, cooldowns, volatility."""
