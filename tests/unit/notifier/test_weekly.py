"""Weekly tuning suggestions (§9.2 rules; §13.3 case M: 7 sells -> one data-shortage item)."""

from __future__ import annotations

import pytest

from services.notifier.weekly import ExitStats, tuning_suggestions


@pytest.mark.parametrize(
    ("total", "reasons", "regimes", "expected"),
    [
        pytest.param(7, {}, {}, ["data shortage: SELL 7 (min 20 required)"], id="case-M-shortage"),
        pytest.param(
            7,
            {"TRAILING_STOP": ExitStats(avg_post_24h_pct=9.0)},
            {"BULL": 0.9},
            ["data shortage: SELL 7 (min 20 required)"],
            id="shortage-stops-every-other-rule",
        ),
        pytest.param(
            25,
            {
                "TRAILING_STOP": ExitStats(avg_post_24h_pct=3.5),
                "STOP_LOSS": ExitStats(avg_post_4h_pct=1.2),
                "TAKE_PROFIT": ExitStats(avg_post_4h_pct=2.5),
                "TIME_LIMIT": ExitStats(avg_post_24h_pct=-2.5),
            },
            {"BULL": 0.5, "BEAR": 0.4, "SIDEWAYS": None},
            [
                "widen trailing_stop_pct by +0.5 pp",
                "consider relaxing stop_loss_pct",
                "consider raising take_profit_pct",
                "keep TIME_LIMIT as is",
                "BULL early-exit rate 50.0 % — review exit params",
            ],
            id="all-rules-fire-in-order-and-0.40-is-not-above",
        ),
        pytest.param(
            20,
            {"TRAILING_STOP": ExitStats(avg_post_24h_pct=3.0), "TIME_LIMIT": ExitStats()},
            {},
            ["no adjustment signal; keep parameters, collect more data"],
            id="thresholds-are-strict-and-missing-data-is-silent",
        ),
    ],
)
def test_tuning_suggestions(total, reasons, regimes, expected) -> None:
    assert tuning_suggestions(total, reasons, regimes) == expected
