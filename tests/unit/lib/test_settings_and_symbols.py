"""Settings from the environment keep secrets masked; market codes map both ways."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coinpilot import symbols
from coinpilot.settings import CommonSettings


def test_settings_come_from_coinpilot_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINPILOT_NATS_URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("COINPILOT_SYMBOLS", "KRW-BTC, KRW-ETH")
    monkeypatch.setenv("COINPILOT_NATS_PASSWORD", "hunter2")
    monkeypatch.setenv("COINPILOT_DATABASE_URL", "postgresql+asyncpg://u:secretpw@db/cp")
    settings = CommonSettings()
    assert settings.nats_url == "nats://10.0.0.1:4222"
    assert settings.symbols == ("KRW-BTC", "KRW-ETH")
    assert "hunter2" not in repr(settings) and "secretpw" not in repr(settings)
    assert settings.nats_password is not None and settings.nats_password.get_secret_value() == "hunter2"


def test_empty_urls_mean_no_database_and_no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINPILOT_DATABASE_URL", "")
    monkeypatch.setenv("COINPILOT_REDIS_URL", "")
    settings = CommonSettings()
    assert settings.database_url is None and settings.redis_url is None


def test_bad_symbols_and_run_ids_are_rejected() -> None:
    with pytest.raises(ValidationError, match="market codes"):
        CommonSettings(symbols=("BTC",))
    with pytest.raises(ValidationError):
        CommonSettings(run_id="has space")


@pytest.mark.parametrize(("pair", "market"), [("BTC/USDT", "USDT-BTC"), ("eth/krw", "KRW-ETH")])
def test_pairs_map_to_upbit_markets_and_back(pair: str, market: str) -> None:
    assert symbols.pair_to_market(pair) == market
    assert symbols.market_to_pair(market) == pair.upper()


def test_quote_currency_labels_every_amount() -> None:
    assert symbols.quote_currency("KRW-BTC") == "KRW"
    assert symbols.quote_currency("USDT-BTC") == "USDT"
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        symbols.pair_to_market("BTCUSDT")
