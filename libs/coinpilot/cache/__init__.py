"""Redis as a cache of rebuildable values: key builders with TTLs (``keys``) and :class:`Cache`.

``keys`` is pure (names and TTLs), so a pure core may import it; :class:`Cache` (the Redis client)
and ``CACHE_FALLBACKS`` (``coinpilot_cache_fallbacks_total{purpose}``) are loaded on first use
(PEP 562), so importing ``coinpilot.cache.keys`` pulls in neither redis nor prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coinpilot.cache import keys

if TYPE_CHECKING:
    from coinpilot.cache.client import Cache
    from coinpilot.cache.metrics import CACHE_FALLBACKS

__all__ = ["CACHE_FALLBACKS", "Cache", "keys"]


def __getattr__(name: str) -> Any:
    if name == "Cache":
        from coinpilot.cache.client import Cache

        return Cache
    if name == "CACHE_FALLBACKS":
        from coinpilot.cache.metrics import CACHE_FALLBACKS

        return CACHE_FALLBACKS
    raise AttributeError(f"module 'coinpilot.cache' has no attribute {name!r}")
