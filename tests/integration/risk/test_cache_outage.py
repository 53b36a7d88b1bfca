"""A Redis outage never changes a risk decision (issue 19).

Redis sits behind a proxy that refuses connections and cuts the open ones, as an outage does, and
comes back with its data: what risk read or wrote before the outage is served from its in-memory
mirror, what it never saw and the writes later sizing depends on raise ``TransientError`` (the
message waits in place), and a reference equity taken during the outage reaches Redis once it is
back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import Cache, keys
from coinpilot.errors import TransientError
from services.risk import state
from tests.integration.risk.harness import new_run_id
from tests.support.proxy import TcpProxy
from tests.unit.risk.factories import T0

pytestmark = pytest.mark.redis
DAY = T0.date()
FITTED = VolatilityState("KRW-BTC", 2.5, True, T0, 2160, 1.5)


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[TcpProxy, str]]:
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379).start()
    yield proxy, f"redis://127.0.0.1:{proxy.port}{parts.path}"
    proxy.close()


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[Cache]:
    cache = Cache(redis_url)
    yield cache
    await cache.close()


async def test_an_outage_serves_what_risk_saw_and_waits_for_what_it_did_not(
    redis_proxy: tuple[TcpProxy, str], direct: Cache
) -> None:
    proxy, url = redis_proxy
    run_id = new_run_id("outage")
    cache = Cache(url)
    risk = state.RiskCache(cache, retry_seconds=0)
    try:
        await direct.set(keys.volatility_state("KRW-BTC", run_id), FITTED.to_json())
        await direct.set(keys.reference_equity(DAY, run_id), "10000000")
        up = await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(100), T0)
        assert up.state == FITTED
        assert await risk.reference_equity(run_id, DAY) == Decimal(10_000_000)

        proxy.refuse()
        later = T0 + timedelta(minutes=1)
        down = await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(101), later)
        assert down == up, "the mirror, not multiplier 1.0"
        assert await risk.volatility(run_id, "KRW-BTC") == up
        assert await risk.reference_equity(run_id, DAY) == Decimal(10_000_000)
        assert await risk.prices(run_id, ["KRW-BTC"]) == {"KRW-BTC": Decimal(101)}

        with pytest.raises(TransientError, match="volatility state of KRW-ETH"):
            await risk.note_price_and_read_volatility(run_id, "KRW-ETH", Decimal(5), T0)
        with pytest.raises(TransientError, match="reference equity"):
            await risk.reference_equity(run_id, DAY + timedelta(days=1))
        with pytest.raises(TransientError, match="price"):
            await risk.prices(run_id, ["KRW-SOL"])
        with pytest.raises(TransientError, match="volatility state"):
            await risk.keep_volatility(run_id, FITTED)
        with pytest.raises(TransientError, match="volatility state"):
            await risk.drop_volatility(run_id, "KRW-BTC")
        with pytest.raises(TransientError, match="hourly closes"):
            await risk.add_hourly_close(run_id, "KRW-BTC", T0, Decimal(100), 10)
        with pytest.raises(TransientError, match="hourly closes"):
            await risk.hourly_closes(run_id, "KRW-BTC")
        assert await risk.volatility(run_id, "KRW-BTC") == up, "a failed write leaves the mirror as Redis is"
    finally:
        proxy.restore()
        await direct.delete(
            keys.volatility_state("KRW-BTC", run_id),
            keys.reference_equity(DAY, run_id),
            keys.price("KRW-BTC", run_id),
            keys.price("KRW-ETH", run_id),
        )
        await cache.close()


async def test_a_reference_equity_taken_during_an_outage_is_written_once_redis_is_back(
    redis_proxy: tuple[TcpProxy, str], direct: Cache
) -> None:
    proxy, url = redis_proxy
    run_id = new_run_id("outage")
    cache = Cache(url)
    risk = state.RiskCache(cache, retry_seconds=0)
    key = keys.reference_equity(DAY, run_id)
    try:
        assert await risk.reference_equity(run_id, DAY) is None
        await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(100), T0)
        proxy.refuse()
        await risk.keep_reference_equity(run_id, DAY, Decimal("9876543.21"), 3600)
        assert await risk.reference_equity(run_id, DAY) == Decimal("9876543.21")
        assert await direct.get(key) is None

        proxy.restore()
        later = T0 + timedelta(minutes=1)
        assert (await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(101), later)).available
        assert await direct.get(key) == "9876543.21"
        assert 0 < await direct.ttl(key) <= 3600

        restarted = state.RiskCache(Cache(url), retry_seconds=0)
        try:
            assert await restarted.reference_equity(run_id, DAY) == Decimal("9876543.21")
        finally:
            assert restarted.cache is not None
            await restarted.cache.close()
    finally:
        proxy.restore()
        await direct.delete(key, keys.price("KRW-BTC", run_id))
        await cache.close()


async def test_writes_and_reads_go_through_again_when_redis_is_back(
    redis_proxy: tuple[TcpProxy, str], direct: Cache
) -> None:
    proxy, url = redis_proxy
    run_id = new_run_id("outage")
    cache = Cache(url)
    risk = state.RiskCache(cache, retry_seconds=0)
    try:
        await risk.add_hourly_close(run_id, "KRW-BTC", T0, Decimal(100), 10)
        proxy.refuse()
        with pytest.raises(TransientError):
            await risk.add_hourly_close(run_id, "KRW-BTC", T0 + timedelta(hours=1), Decimal(101), 10)
        proxy.restore()
        await risk.add_hourly_close(run_id, "KRW-BTC", T0 + timedelta(hours=1), Decimal(101), 10)
        assert await risk.hourly_closes(run_id, "KRW-BTC") == [
            (T0, Decimal(100)),
            (T0 + timedelta(hours=1), Decimal(101)),
        ]
        await risk.keep_volatility(run_id, FITTED)
        assert (await risk.volatility(run_id, "KRW-BTC")).state == FITTED
        assert proxy.accepted >= 2, "the cache reconnected through the proxy"
    finally:
        await direct.delete(
            state.hourly_closes_key("KRW-BTC", run_id), keys.volatility_state("KRW-BTC", run_id)
        )
        await cache.close()
