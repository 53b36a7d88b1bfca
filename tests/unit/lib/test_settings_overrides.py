"""Settings with explicit overrides: read like the environment, above it, without writing it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.errors import ConfigError
from coinpilot.settings import env_names, fields_named, unread_names, with_overrides
from tests.support.environ import environment_read_only


class Knobs(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_KNOB_", extra="ignore", frozen=True)

    fee_rate: Decimal = Decimal("0.0005")
    balance: Decimal = Field(
        default=Decimal(100),
        validation_alias=AliasChoices("COINPILOT_KNOB_BALANCE", "COINPILOT_OTHER_BALANCE", "BALANCE"),
    )
    mode: str = "rules"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COINPILOT_KNOB_FEE_RATE", "COINPILOT_KNOB_BALANCE", "COINPILOT_OTHER_BALANCE", "BALANCE"):
        monkeypatch.delenv(name, raising=False)


def test_an_override_beats_the_environment_and_leaves_it_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINPILOT_KNOB_FEE_RATE", "0.001")
    with environment_read_only():
        assert with_overrides(Knobs, {}).fee_rate == Decimal("0.001")
        assert with_overrides(Knobs, {"COINPILOT_KNOB_FEE_RATE": "0"}).fee_rate == 0
        assert with_overrides(Knobs, {}).fee_rate == Decimal("0.001")


def test_an_override_is_read_by_any_of_the_names_the_environment_is() -> None:
    assert with_overrides(Knobs, {"coinpilot_knob_fee_rate": "0.002"}).fee_rate == Decimal("0.002")
    for name in ("COINPILOT_KNOB_BALANCE", "COINPILOT_OTHER_BALANCE", "BALANCE"):
        assert with_overrides(Knobs, {name: "7"}).balance == 7


def test_an_override_under_a_later_alias_beats_the_environment_under_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COINPILOT_KNOB_BALANCE", "1")
    assert with_overrides(Knobs, {"COINPILOT_OTHER_BALANCE": "5"}).balance == 5


def test_two_overrides_of_one_field_resolve_in_the_environments_alias_order() -> None:
    both = {"BALANCE": "3", "COINPILOT_OTHER_BALANCE": "2"}
    assert with_overrides(Knobs, both).balance == 2


def test_names_the_class_does_not_read_are_reported_unread() -> None:
    overrides = {"COINPILOT_KNOB_FEE_RATE": "0", "BALANCE": "1", "COINPILOT_KNOB_FEES": "0"}
    assert unread_names(overrides, [Knobs]) == ["COINPILOT_KNOB_FEES"]
    assert fields_named(Knobs, "COINPILOT_OTHER_BALANCE", "1") == {"balance"}
    assert env_names(Knobs) == {
        "COINPILOT_KNOB_FEE_RATE",
        "COINPILOT_KNOB_BALANCE",
        "COINPILOT_OTHER_BALANCE",
        "BALANCE",
        "COINPILOT_KNOB_MODE",
    }


def test_an_override_of_a_field_the_mode_sets_itself_is_refused() -> None:
    with pytest.raises(ConfigError, match="COINPILOT_KNOB_MODE: set explicitly"):
        with_overrides(Knobs, {"COINPILOT_KNOB_MODE": "live"}, mode="replay")
    assert with_overrides(Knobs, {"COINPILOT_KNOB_FEE_RATE": "0"}, mode="replay").mode == "replay"


def test_a_bad_override_value_fails_validation_like_a_bad_environment_value() -> None:
    with pytest.raises(ValidationError, match="fee_rate"):
        with_overrides(Knobs, {"COINPILOT_KNOB_FEE_RATE": "abc"})
