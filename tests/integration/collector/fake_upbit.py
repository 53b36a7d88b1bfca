"""A local Upbit: ``GET /v1/candles/minutes/1`` on 127.0.0.1, serving real candles from a file.

Speaks the real format: the response fields Upbit sends, newest first, ``to`` exclusive, ``count``
1..200, candles only for minutes that had trades, the forming minute included (with its
unfinished values) and ``Remaining-Req: group=candles; min=..; sec=..``. A second's budget is
counted on the test's clock and exceeding it gets a 429, as Upbit does. Faults are queued
(``inject``) and served to the next requests in order: 429 with or without Retry-After, 500, a
response slower than the client's timeout, malformed JSON, a malformed candle.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from coinpilot.candle_files import read_frame

KST = timedelta(hours=9)


class ManualClock:
    """The collector's clock in tests: time moves only when someone sleeps or the test sets it.

    ``sleep`` advances the time instantly and records the wait; past ``limit`` it blocks until
    the test releases it (or cancels the sleeper), so a poll loop can never run away.
    """

    def __init__(self, now: datetime, limit: datetime | None = None) -> None:
        self._now = now
        self.limit = limit
        self.sleeps: list[float] = []
        self._released = asyncio.Event()
        self.parked = asyncio.Event()
        """Set when a sleeper reached ``limit`` and waits there."""

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    def set(self, now: datetime) -> None:
        self._now = now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self._now + timedelta(seconds=max(0.0, seconds))
        if self.limit is not None and target > self.limit:
            self.parked.set()
            await self._released.wait()
        self._now = target
        await asyncio.sleep(0)


class ScaledClock:
    """Real time sped up ``speed`` times from ``start``: one time for several collector replicas
    and the fake Upbit at once (a minute passes in ``60 / speed`` real seconds), where the manual
    clock, which moves when someone sleeps, would let each sleeper move everyone's time.

    Only where things happen in simulated time depends on the machine's speed; what is published
    does not (a poll publishes what is closed at its own ``now``, and Upbit's ``now`` is later).
    """

    def __init__(self, start: datetime, speed: float, t0: float | None = None) -> None:
        """``t0``: the ``time.monotonic()`` at ``start``; CLOCK_MONOTONIC is the machine's, so a
        process given the same ``t0`` shares this time."""
        self.start = start
        self.speed = speed
        self.t0 = time.monotonic() if t0 is None else t0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)

    def monotonic(self) -> float:
        return self.start.timestamp() + (time.monotonic() - self.t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def real_seconds(self, simulated: timedelta) -> float:
        return simulated.total_seconds() / self.speed


class Fault(StrEnum):
    RATE_LIMITED = "429"
    RATE_LIMITED_RETRY_AFTER = "429 Retry-After"
    SERVER_ERROR = "500"
    SLOW = "slower than the client's timeout"
    MALFORMED_JSON = "malformed JSON"
    MALFORMED_CANDLE = "malformed candle"


@dataclass(frozen=True, slots=True)
class Request:
    market: str
    count: int
    to: datetime | None
    at: float  # the test clock's monotonic time
    status: int
    fault: Fault | None


@dataclass
class Series:
    """One market's candles: open times (epoch seconds, sorted) and the value texts of the file."""

    starts: list[int] = field(default_factory=list)
    values: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def load_series(path: Path, start: datetime | None = None, end: datetime | None = None) -> Series:
    """A file's candles in ``[start, end)`` as served values (the file text, so nothing is rounded)."""
    series = Series()
    frame = read_frame(path).select("ts", "open", "high", "low", "close", "volume")
    lo = None if start is None else int(start.timestamp() * 1000)
    hi = None if end is None else int(end.timestamp() * 1000)
    for ts, o, h, low, c, v in frame.iter_rows():
        if (lo is not None and ts < lo) or (hi is not None and ts >= hi):
            continue
        series.starts.append(ts // 1000)
        series.values.append((o, h, low, c, v))
    return series


def _utc_text(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def element(market: str, start: int, values: tuple[str, str, str, str, str]) -> str:
    o, h, low, c, v = values
    kst = (datetime.fromtimestamp(start, UTC) + KST).strftime("%Y-%m-%dT%H:%M:%S")
    turnover = Decimal(c) * Decimal(v)
    return (
        f'{{"market":"{market}","candle_date_time_utc":"{_utc_text(start)}","candle_date_time_kst":"{kst}",'
        f'"opening_price":{o},"high_price":{h},"low_price":{low},"trade_price":{c},'
        f'"timestamp":{(start + 59) * 1000 + 999},"candle_acc_trade_price":{turnover:.8f},'
        f'"candle_acc_trade_volume":{v},"unit":1}}'
    )


def forming_values(values: tuple[str, str, str, str, str]) -> tuple[str, str, str, str, str]:
    """What Upbit shows for an unfinished minute here: only its first trade so far."""
    o = values[0]
    return (o, o, o, o, "0.001")


def parse_to(text: str) -> datetime:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    ts = datetime.fromisoformat(text.replace(" ", "T"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class FakeUpbit:
    """The fake server; ``url`` is its base URL. Thread-safe enough for one client at a time."""

    def __init__(
        self, clock: ManualClock | ScaledClock, series: dict[str, Series], *, per_second: int = 10
    ) -> None:
        self.clock = clock
        self.series = series
        self.per_second = per_second
        self.faults: deque[list] = deque()  # [market or None, fault, matching requests to let through]
        self.always_failing: set[str] = set()
        self.requests: list[Request] = []
        self.slow_seconds = 0.6
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeUpbit:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, *faults: Fault, market: str | None = None, after: int = 0) -> None:
        """Serve these faults, in order, to the next requests (of ``market`` only, if given),
        letting ``after`` matching requests through first."""
        with self._lock:
            for i, fault in enumerate(faults):
                self.faults.append([market, fault, after if i == 0 else 0])

    def statuses(self, market: str | None = None) -> list[int]:
        return [r.status for r in self.requests if market is None or r.market == market]

    def _next_fault(self, market: str) -> Fault | None:
        with self._lock:
            for i, entry in enumerate(self.faults):
                only, fault, skip = entry
                if only is None or only == market:
                    if skip:
                        entry[2] -= 1
                        return None
                    del self.faults[i]
                    return fault
        return None

    def _over_budget(self, at: float) -> tuple[bool, int]:
        second = int(at)
        used = sum(1 for r in self.requests if int(r.at) == second and r.status != 429) + 1
        return used > self.per_second, max(0, self.per_second - used)

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, delay seconds) for one request."""
        if path != "/v1/candles/minutes/1":
            return 404, {}, b'{"error":{"name":"not_found"}}', 0.0
        market = query.get("market", [""])[0]
        try:
            count = int(query.get("count", ["1"])[0])
            to = parse_to(query["to"][0]) if "to" in query else None
        except ValueError:
            return 400, {}, b'{"error":{"name":"invalid_parameter"}}', 0.0
        at = self.clock.monotonic()
        over, remaining = self._over_budget(at)
        headers = {"Remaining-Req": f"group=candles; min=1800; sec={remaining}"}
        fault = None if over else self._next_fault(market)
        if over:
            status, body, delay = 429, b'{"error":{"name":"too_many_requests"}}', 0.0
        elif market in self.always_failing:
            status, body, delay = 500, b'{"error":{"name":"server_error"}}', 0.0
        elif fault is Fault.RATE_LIMITED:
            status, body, delay = 429, b'{"error":{"name":"too_many_requests"}}', 0.0
        elif fault is Fault.RATE_LIMITED_RETRY_AFTER:
            status, body, delay = 429, b'{"error":{"name":"too_many_requests"}}', 0.0
            headers["Retry-After"] = "1"
        elif fault is Fault.SERVER_ERROR:
            status, body, delay = 500, b'{"error":{"name":"server_error"}}', 0.0
        elif not 1 <= count <= 200 or market not in self.series:
            status, body, delay = 400, b'{"error":{"name":"invalid_parameter"}}', 0.0
        else:
            status, body = 200, self._candles(market, count, to, fault)
            delay = self.slow_seconds if fault is Fault.SLOW else 0.0
        with self._lock:
            self.requests.append(Request(market, count, to, at, status, fault))
        return status, headers, body, delay

    def _candles(self, market: str, count: int, to: datetime | None, fault: Fault | None) -> bytes:
        if fault is Fault.MALFORMED_JSON:
            return b'[{"market":"' + market.encode() + b'","candle_date_time_utc":'
        series = self.series[market]
        now = int(self.clock.now().timestamp())
        bound = now if to is None else int(to.timestamp()) - 1  # `to` is exclusive
        if to is not None and to.timestamp() > now:
            bound = now
        end = bisect.bisect_right(series.starts, bound)
        first = max(0, end - count)
        parts = []
        for i in range(end - 1, first - 1, -1):
            start, values = series.starts[i], series.values[i]
            if start + 60 > now:
                values = forming_values(values)
            parts.append(element(market, start, values))
        if fault is Fault.MALFORMED_CANDLE and parts:
            bad = json.loads(parts[0])
            bad["high_price"], bad["low_price"] = bad["low_price"] - 1, bad["high_price"] + 1
            parts[0] = json.dumps(bad)
        return ("[" + ",".join(parts) + "]").encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                status, headers, body, delay = fake.answer(url.path, parse_qs(url.query))
                if delay:
                    threading.Event().wait(delay)  # the server is slow; the client has given up
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
