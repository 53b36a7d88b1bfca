"""Grafana dashboards: valid models, datasources that exist, PromQL that parses, SQL that runs.

PromQL: every expression (Grafana variables replaced by sample values) becomes a recording rule
and `promtool check rules` parses them all offline. SQL: every PostgreSQL panel and variable query
runs against the migrated schema (coinpilot.db.upgrade) with a few rows in each table.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.deploy.support import (
    INFRA,
    all_panels,
    dashboard_files,
    datasource_uid,
    panel_targets,
    require_binary,
    run_tool,
    unknown_labels,
    unknown_metrics,
)

PROVISIONING = INFRA / "grafana" / "provisioning"
PROM_UID = "coinpilot-prometheus"
PG_UID = "coinpilot-postgres"
EXPECTED = {"overview.json", "pipeline.json", "ai.json", "trades.json"}

# What Grafana puts in place of its built-in variables (any valid value parses the same).
PROM_BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
RANGE_FROM = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
RANGE_TO = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
SAMPLE_VALUES = {"run_id": "live", "symbol": "KRW-BTC", "service": "risk"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def boards() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, load(path)) for path in dashboard_files()]


def provisioned_datasources() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in (PROVISIONING / "datasources").glob("*.yaml"):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            found[ds["uid"]] = ds["type"]
    return found


def variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return board.get("templating", {}).get("list", [])


def substitute_promql(expr: str, board: dict[str, Any]) -> str:
    for name, value in PROM_BUILTINS.items():
        expr = expr.replace(name, value)
    for var in variables(board):
        expr = expr.replace("$" + var["name"], SAMPLE_VALUES[var["name"]])
    return expr


def substitute_sql(sql: str, board: dict[str, Any]) -> str:
    """Grafana's PostgreSQL macros and variables, as Grafana expands them for a query."""
    start, end = RANGE_FROM.isoformat(), RANGE_TO.isoformat()
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{start}'").replace("$__timeTo()", f"'{end}'")
    for var in variables(board):
        name = var["name"]
        if var.get("multi"):
            sql = sql.replace("$" + name, "'KRW-BTC','KRW-ETH'")
        else:
            sql = sql.replace("$" + name, SAMPLE_VALUES[name])
    return sql


def prom_queries() -> list[tuple[str, str, str]]:
    """(label, dashboard file, expression) for every Prometheus target and variable query."""
    found: list[tuple[str, str, str]] = []
    for name, board in boards():
        for panel, target in panel_targets(board):
            if datasource_uid(panel, target) == PROM_UID:
                found.append(
                    (f"{name} / #{panel['id']} {panel['title']} / {target['refId']}", name, target["expr"])
                )
    return found


def sql_queries() -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for name, board in boards():
        for panel, target in panel_targets(board):
            if datasource_uid(panel, target) == PG_UID:
                found.append((f"{name} / {panel['title']}", name, target["rawSql"]))
        for var in variables(board):
            if var["datasource"]["uid"] == PG_UID:
                found.append((f"{name} / variable {var['name']}", name, var["query"]))
    return found


# ---- the model -------------------------------------------------------------------------------


def test_the_four_dashboards_exist() -> None:
    assert {path.name for path in dashboard_files()} == EXPECTED


@pytest.mark.parametrize(("name", "board"), boards(), ids=[n for n, _ in boards()])
def test_each_dashboard_is_a_valid_grafana_model(name: str, board: dict[str, Any]) -> None:
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"].startswith("coinpilot-") and len(board["uid"]) <= 40
    assert board["title"] and "coinpilot" in board["tags"]
    assert board["timezone"] == "Asia/Seoul"
    ids = [panel["id"] for panel in all_panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(board):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids))


def test_dashboard_uids_are_unique() -> None:
    uids = [board["uid"] for _, board in boards()]
    assert len(uids) == len(set(uids))


def test_every_query_uses_a_provisioned_datasource_of_the_right_type() -> None:
    provisioned = provisioned_datasources()
    assert provisioned == {PROM_UID: "prometheus", PG_UID: "grafana-postgresql-datasource"}
    for name, board in boards():
        for panel, target in panel_targets(board):
            uid = datasource_uid(panel, target)
            assert uid in provisioned, f"{name} / {panel['title']}: unknown datasource {uid}"
            ds = target.get("datasource") or panel["datasource"]
            assert ds["type"] == provisioned[uid]
            assert ("expr" in target) == (uid == PROM_UID), f"{name} / {panel['title']}"
            assert ("rawSql" in target) == (uid == PG_UID), f"{name} / {panel['title']}"
        for var in variables(board):
            assert var["datasource"]["uid"] in provisioned


def test_the_trades_dashboard_reads_postgresql_in_korean_time() -> None:
    trades = load(Path(INFRA / "grafana" / "dashboards" / "trades.json"))
    assert trades["timezone"] == "Asia/Seoul"
    sources = {datasource_uid(p, t) for p, t in panel_targets(trades)}
    assert sources == {PG_UID}
    sql = " ".join(t["rawSql"] for _, t in panel_targets(trades))
    assert "trading_history" in sql and "exit_reason" in sql and "Asia/Seoul" in sql


def test_the_provisioned_dashboard_folder_is_where_compose_mounts_the_files() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "coinpilot.yaml").read_text())["providers"][0]
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


# ---- PromQL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "board_name", "expr"), prom_queries(), ids=[q[0] for q in prom_queries()])
def test_every_promql_expression_uses_only_catalogued_metrics_and_labels(
    label: str, board_name: str, expr: str
) -> None:
    board = load(INFRA / "grafana" / "dashboards" / board_name)
    concrete = substitute_promql(expr, board)
    assert unknown_metrics(concrete) == set(), label
    assert unknown_labels(concrete) == set(), label


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    groups = []
    for i, (label, board_name, expr) in enumerate(prom_queries()):
        board = load(INFRA / "grafana" / "dashboards" / board_name)
        concrete = substitute_promql(expr, board)
        assert "$" not in concrete, f"{label}: unreplaced variable in {concrete}"
        groups.append({"name": label, "rules": [{"record": f"dashboard:check_{i}", "expr": concrete}]})
    assert len(groups) > 40
    rules = tmp_path / "dashboards.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = run_tool([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_malformed_expression_is_caught_by_the_parse_check(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = tmp_path / "bad.rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "bad",
                        "rules": [
                            {
                                "record": "dashboard:bad",
                                "expr": "sum by (service (rate(coinpilot_messages_handled_total[5m]))",
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert run_tool([promtool, "check", "rules", str(rules)]).returncode != 0


def test_prometheus_variables_query_catalogued_metrics() -> None:
    for name, board in boards():
        for var in variables(board):
            if var["datasource"]["uid"] != PROM_UID:
                continue
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["definition"])
            assert match, f"{name}: variable {var['name']} is not label_values(metric, label)"
            assert unknown_metrics(match.group(1)) == set()


# ---- SQL -------------------------------------------------------------------------------------

TABLES = ("trading_history", "agent_decisions", "regime_history", "positions", "account_state")


async def column_types(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT c.column_name, c.data_type, c.udt_name, c.is_nullable, c.column_default, c.is_identity
        FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.table_name = $1
        ORDER BY c.ordinal_position
        """,
        table,
    )


async def filler(conn: asyncpg.Connection, column: asyncpg.Record, row: int) -> object:
    """A value for a NOT NULL column the dashboards do not read (unique per row)."""
    kind = column["data_type"]
    if kind == "USER-DEFINED":
        labels = await conn.fetch(
            "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            "WHERE t.typname = $1 ORDER BY e.enumsortorder",
            column["udt_name"],
        )
        return labels[0]["enumlabel"]
    if kind in ("integer", "bigint", "smallint"):
        return row + 1
    if kind in ("numeric", "double precision", "real"):
        return 1
    if kind == "boolean":
        return False
    if kind.startswith("timestamp"):
        return RANGE_FROM + timedelta(hours=row)
    if kind == "uuid":
        return f"00000000-0000-0000-0000-{row:012d}"
    if kind in ("json", "jsonb"):
        return "{}"
    return f"fill-{column['column_name']}-{row}"


def coerce(value: object, column: asyncpg.Record) -> object:
    """The Python type asyncpg wants for the column's SQL type."""
    kind = column["data_type"]
    if value is None:
        return None
    if kind == "numeric":
        return Decimal(str(value))
    if kind in ("double precision", "real"):
        return float(value)  # type: ignore[arg-type]
    if kind in ("integer", "bigint", "smallint"):
        return int(value)  # type: ignore[call-overload]
    if kind == "timestamp without time zone" and isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if kind in ("uuid", "json", "jsonb") or kind.startswith("character") or kind == "text":
        return str(value)
    return value


def sample_rows() -> dict[str, list[dict[str, object]]]:
    t0 = RANGE_FROM + timedelta(hours=1)
    return {
        "trading_history": [
            {
                "executed_at": t0,
                "symbol": "KRW-BTC",
                "side": "BUY",
                "price": 95_000_000,
                "quantity": 0.001,
                "amount": 95_000,
                "fee": 47.5,
                "exit_reason": None,
                "regime": "BULL",
                "realized_pnl": None,
                "run_id": "live",
            },
            {
                "executed_at": t0 + timedelta(hours=2),
                "symbol": "KRW-BTC",
                "side": "SELL",
                "price": 96_000_000,
                "quantity": 0.001,
                "amount": 96_000,
                "fee": 48,
                "exit_reason": "TAKE_PROFIT",
                "regime": "BULL",
                "realized_pnl": 904.5,
                "run_id": "live",
            },
            {
                "executed_at": t0 + timedelta(hours=3),
                "symbol": "KRW-ETH",
                "side": "SELL",
                "price": 4_000_000,
                "quantity": 0.02,
                "amount": 80_000,
                "fee": 40,
                "exit_reason": "STOP_LOSS",
                "regime": "SIDEWAYS",
                "realized_pnl": -1200,
                "run_id": "live",
            },
        ],
        "agent_decisions": [
            {
                "created_at": t0,
                "ts_event": t0,
                "symbol": "KRW-BTC",
                "decision": "CONFIRM",
                "reason_code": "AI_CONFIRMED",
                "confidence": 82,
                "model_used": "claude-haiku",
                "latency_ms": 850,
                "cost_usd": 0.0012,
                "run_id": "live",
            },
            {
                "created_at": t0 + timedelta(hours=1),
                "ts_event": t0 + timedelta(hours=1),
                "symbol": "KRW-ETH",
                "decision": "REJECT",
                "reason_code": "FALLING_KNIFE",
                "confidence": None,
                "model_used": None,
                "latency_ms": 0,
                "cost_usd": 0,
                "run_id": "live",
            },
        ],
        "regime_history": [
            {"symbol": "KRW-BTC", "as_of": t0, "regime": "BULL", "diff_pct": 1.4, "run_id": "live"},
            {"symbol": "KRW-ETH", "as_of": t0, "regime": "SIDEWAYS", "diff_pct": 0.1, "run_id": "live"},
        ],
        "positions": [
            {
                "run_id": "live",
                "symbol": "KRW-BTC",
                "quantity": 0.001,
                "avg_price": 95_000_000,
                "opened_at": t0,
                "high_water_mark": 96_500_000,
            },
        ],
        "account_state": [{"run_id": "live", "currency": "KRW", "balance": 905_000}],
    }


@pytest.fixture(scope="module")
async def dashboard_db(pg_url: str) -> str:
    """The migrated schema with a few rows in every table a dashboard reads."""
    import coinpilot.db

    await coinpilot.db.upgrade(pg_url)
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        for table, rows in sample_rows().items():
            columns = await column_types(conn, table)
            assert columns, f"table {table} does not exist after coinpilot.db.upgrade"
            for i, row in enumerate(rows):
                values = dict(row)
                for col in columns:
                    needs_value = col["is_nullable"] == "NO" and col["column_default"] is None
                    if col["column_name"] not in values and needs_value and col["is_identity"] != "YES":
                        values[col["column_name"]] = await filler(conn, col, i)
                by_name = {col["column_name"]: col for col in columns}
                for name, value in values.items():
                    col = by_name[name]
                    if value is None and col["is_nullable"] == "NO":
                        value = await filler(conn, col, i)
                    values[name] = coerce(value, col)
                names = ", ".join(values)
                params = ", ".join(f"${n}" for n in range(1, len(values) + 1))
                await conn.execute(f"INSERT INTO {table} ({names}) VALUES ({params})", *values.values())
    finally:
        await conn.close()
    return dsn


@pytest.mark.postgres
@pytest.mark.parametrize(("label", "board_name", "sql"), sql_queries(), ids=[q[0] for q in sql_queries()])
async def test_every_sql_query_runs_against_the_migrated_schema(
    dashboard_db: str, label: str, board_name: str, sql: str
) -> None:
    board = load(INFRA / "grafana" / "dashboards" / board_name)
    concrete = substitute_sql(sql, board)
    assert "$" not in concrete, f"{label}: unreplaced macro or variable"
    conn = await asyncpg.connect(dashboard_db)
    try:
        rows = await conn.fetch(concrete)
    finally:
        await conn.close()
    values = [v for row in rows for v in row.values()]
    assert any(v not in (None, 0, "") for v in values), (
        f"{label}: nothing found although every table has matching sample rows"
    )
