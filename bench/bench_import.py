"""``coinpilot import`` into PostgreSQL vs a raw COPY of the same rows, in the same run.

  raw COPY   asyncpg copy_records_to_table of the already prepared rows (no file reading, no
             parsing, no dedup) into (a) an empty copy of market_data with its indexes and unique
             key (LIKE market_data INCLUDING ALL): the same destination, the ratio is against this;
             (b) a bare table with the same columns and no index: the absolute floor
  import     services.collector.importer.import_files on the file: read the gzip CSV, parse
             every price to Decimal, COPY into a temp table, merge into market_data (idempotent)
  re-import  the same file again: everything is read and merged, nothing is written
Prints rows/s; asserts nothing. Uses COINPILOT_DATABASE_URL when set (a throwaway database on
that server is created and dropped), else the test server from tests/support/servers.py.
Usage: python bench/bench_import.py [path-to-candle-file]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinpilot.db import Database, upgrade
from coinpilot.db.market import COPY_COLUMNS
from services.collector.importer import file_rows, import_files
from tests.support.servers import create_database, drop_database

DATA = Path(os.environ.get("COINPILOT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEFAULT_FILE = DATA / "BTC_USDT-1m-20250520-20250818.csv.gz"


async def throwaway_database() -> tuple[str, str, str]:
    """(name, SQLAlchemy URL, admin DSN) of a fresh database."""
    base = os.environ.get("COINPILOT_DATABASE_URL")
    if not base:
        name, url = await create_database("cp_bench")
        return name, url, ""
    admin = base.replace("postgresql+asyncpg://", "postgresql://")
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, base.rsplit("/", 1)[0] + "/" + name, admin


async def drop(name: str, admin: str) -> None:
    if not admin:
        await drop_database(name)
        return
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main(path: Path) -> None:
    name, url, admin = await throwaway_database()
    try:
        await upgrade(url)
        db = Database(url)
        rows = file_rows(path)
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        await conn.execute("CREATE TABLE raw_indexed (LIKE market_data INCLUDING ALL)")
        await conn.execute("CREATE TABLE raw_bare AS SELECT * FROM market_data WITH NO DATA")
        await conn.execute("ALTER TABLE raw_bare ALTER COLUMN id DROP NOT NULL")
        timings = {}
        for table in ("raw_indexed", "raw_bare"):
            started = time.perf_counter()
            await conn.copy_records_to_table(table, records=rows, columns=COPY_COLUMNS)
            timings[table] = time.perf_counter() - started
        await conn.close()

        started = time.perf_counter()
        result = await import_files([path], db)
        import_s = time.perf_counter() - started
        started = time.perf_counter()
        again = await import_files([path], db)
        reimport_s = time.perf_counter() - started
        await db.dispose()
    finally:
        await drop(name, admin)

    n = len(rows)
    indexed, bare = n / timings["raw_indexed"], n / timings["raw_bare"]
    ours, re = result.rows / import_s, again.rows / reimport_s
    print(f"import of {path.name}: {n:,} rows into PostgreSQL")
    print(f"  raw COPY, indexed market_data copy  {indexed:10,.0f} rows/s  ({timings['raw_indexed']:.2f} s)")
    print(f"  raw COPY, bare table (floor)        {bare:10,.0f} rows/s  ({timings['raw_bare']:.2f} s)")
    print(
        f"  coinpilot import (from the file)    {ours:10,.0f} rows/s  ({import_s:.2f} s, {result.written:,} "
        f"written) = {ours / indexed:.0%} of raw COPY ({ours / bare:.0%} of the bare floor)"
    )
    print(
        f"  re-import (nothing new)             {re:10,.0f} rows/s  "
        f"({reimport_s:.2f} s, {again.written:,} written)"
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FILE))
