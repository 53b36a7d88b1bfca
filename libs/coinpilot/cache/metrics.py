"""The cache's own instrument (registered on import of ``coinpilot.cache``)."""

from __future__ import annotations

from prometheus_client import Counter

CACHE_FALLBACKS = Counter(
    "coinpilot_cache_fallbacks",
    "Reads that returned their documented default because Redis was unavailable",
    ["purpose"],
)
