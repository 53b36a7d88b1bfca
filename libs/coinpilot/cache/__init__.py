"""Redis as a cache of rebuildable values: key builders with TTLs (``keys``) and :class:`Cache`.

Importing this package registers ``coinpilot_cache_fallbacks_total{purpose}``.
"""

from coinpilot.cache import keys
from coinpilot.cache.client import Cache
from coinpilot.cache.metrics import CACHE_FALLBACKS

__all__ = ["CACHE_FALLBACKS", "Cache", "keys"]
