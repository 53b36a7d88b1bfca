"""What a run did, from its fills and equity curve: figures, a trades table, a chart and an HTML page.

Built from the same ``Fill`` messages the executor publishes and hourly equity marks made by
:func:`equity_point`, so a backtest report (marks made by the engine as it runs) and the report of
a distributed replay (marks rebuilt from its ledger and recorded candles, ``backtest.marks``) are
computed the same way, figure for figure. Definitions (BEHAVIOUR §9.1):
total return from the first to the last equity point; MDD of the hourly equity curve; Sharpe of
hourly simple returns (raw, and annualised with 8,760 periods); win rate = closed trades with
net pnl > 0; profit factor = gross profit / gross loss of closed trades (net of fees); exposure =
share of hourly points with an open position; fees = all fees paid.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from coinpilot.analytics.performance import HOURLY_PERIODS_PER_YEAR, generate_report
from coinpilot.contracts import Fill, Side

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RoundTrip:
    symbol: str
    opened_at: datetime
    closed_at: datetime
    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    fees: Decimal
    pnl: Decimal
    exit_reason: str
    regime: str

    @property
    def pnl_pct(self) -> float:
        cost = self.entry_price * self.quantity
        return float(self.pnl / cost * 100) if cost else 0.0


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts: datetime
    equity: Decimal
    has_position: bool


class Held(Protocol):
    """An open position as a mark needs it (``executor.core.Position``, ``backtest.marks.Holding``)."""

    @property
    def quantity(self) -> Decimal: ...

    @property
    def avg_price(self) -> Decimal: ...


def equity_point(
    ts: datetime, cash: Decimal, positions: Mapping[str, Held], closes: Mapping[str, Decimal]
) -> EquityPoint:
    """Equity marked to market at ``ts``: cash plus every open position at its symbol's last close
    (at its average price while the symbol has none). The one definition every mode's marks use."""
    marked = sum((p.quantity * closes.get(s, p.avg_price) for s, p in positions.items()), ZERO)
    return EquityPoint(ts, cash + marked, bool(positions))


@dataclass
class BacktestReport:
    label: str
    currency: str
    initial_equity: Decimal
    final_equity: Decimal
    candles: int
    total_return_pct: float
    mdd_pct: float
    sharpe_raw: float
    sharpe_annualised: float
    win_rate: float
    profit_factor: float | None
    exposure_pct: float
    fees: Decimal
    trips: list[RoundTrip] = field(default_factory=list)
    by_exit_reason: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    equity: list[EquityPoint] = field(default_factory=list)
    #: The run's worker that renders the chart (``write_outputs`` releases it), if one is up.
    chart_renderer: ChartRenderer | None = field(default=None, compare=False, repr=False)

    def summary_lines(self) -> list[str]:
        pf = "n/a" if self.profit_factor is None else f"{self.profit_factor:.2f}"
        lines = [
            f"{self.label}: {self.candles:,} candles, {len(self.trips)} closed trades",
            f"  equity        {self.initial_equity:,.0f} -> {self.final_equity:,.0f} {self.currency}",
            f"  total return  {self.total_return_pct:+.2f}%    MDD {self.mdd_pct:.2f}%",
            f"  sharpe        {self.sharpe_raw:.4f} per hour, {self.sharpe_annualised:.2f} annualised",
            f"  win rate      {self.win_rate:.1%}    profit factor {pf}    exposure {self.exposure_pct:.1f}%",
            f"  fees          {self.fees:,.2f} {self.currency}",
        ]
        for reason, (count, pnl) in sorted(self.by_exit_reason.items()):
            lines.append(f"  {reason:<15} {count:>4} trades  pnl {pnl:,.0f} {self.currency}")
        return lines


def round_trips(fills: Sequence[Fill]) -> list[RoundTrip]:
    """Pair each SELL with the BUY that opened its position (full exits only, one position per symbol)."""
    open_buys: dict[str, Fill] = {}
    trips: list[RoundTrip] = []
    for fill in fills:
        if fill.side is Side.BUY:
            open_buys[fill.symbol] = fill
            continue
        buy = open_buys.pop(fill.symbol, None)
        buy_fee = buy.fee if buy is not None else ZERO
        entry = fill.entry_avg_price or (buy.fill_price if buy is not None else fill.fill_price)
        if buy is not None:  # what the account really got back minus what it really paid
            pnl = (fill.amount - fill.fee) - (buy.amount + buy.fee)
        else:
            gross = fill.realized_pnl_gross
            pnl = (gross if gross is not None else (fill.fill_price - entry) * fill.quantity) - fill.fee
        trips.append(
            RoundTrip(
                symbol=fill.symbol,
                opened_at=buy.ts_event if buy is not None else fill.opened_at,
                closed_at=fill.ts_event,
                entry_price=entry,
                exit_price=fill.fill_price,
                quantity=fill.quantity,
                fees=buy_fee + fill.fee,
                pnl=pnl,
                exit_reason=str(fill.exit_reason) if fill.exit_reason else "UNKNOWN",
                regime=str(fill.regime),
            )
        )
    return trips


def build_report(
    label: str,
    fills: Sequence[Fill],
    equity: Sequence[EquityPoint],
    *,
    initial_equity: Decimal,
    currency: str,
    candles: int,
    chart_renderer: ChartRenderer | None = None,
) -> BacktestReport:
    trips = round_trips(fills)
    curve = [initial_equity, *[p.equity for p in equity]]
    perf = generate_report(curve, [t.pnl for t in trips], HOURLY_PERIODS_PER_YEAR)
    gains = sum((t.pnl for t in trips if t.pnl > 0), ZERO)
    losses = -sum((t.pnl for t in trips if t.pnl < 0), ZERO)
    by_reason: dict[str, tuple[int, Decimal]] = defaultdict(lambda: (0, ZERO))
    for t in trips:
        count, pnl = by_reason[t.exit_reason]
        by_reason[t.exit_reason] = (count + 1, pnl + t.pnl)
    exposed = sum(1 for p in equity if p.has_position)
    return BacktestReport(
        label=label,
        currency=currency,
        initial_equity=initial_equity,
        final_equity=curve[-1],
        candles=candles,
        total_return_pct=perf.total_return_pct,
        mdd_pct=perf.mdd_pct,
        sharpe_raw=perf.sharpe_ratio,
        sharpe_annualised=perf.sharpe_annualised,
        win_rate=perf.win_rate,
        profit_factor=float(gains / losses) if losses > 0 else None,
        exposure_pct=100.0 * exposed / len(equity) if equity else 0.0,
        fees=sum((f.fee for f in fills), ZERO),
        trips=trips,
        by_exit_reason=dict(by_reason),
        equity=list(equity),
        chart_renderer=chart_renderer,
    )


@dataclass(frozen=True, slots=True)
class ChartLine:
    """One run's hourly equity curve, as the chart plots it."""

    label: str
    ts: tuple[datetime, ...]
    equity: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Chart:
    """What the chart of one or more runs shows: plain values, so a worker process can render it."""

    lines: tuple[ChartLine, ...]
    currency: str


class ChartRenderer(Protocol):
    """A process that renders charts ahead of the caller (``backtest.charts_ahead.ChartAhead``)."""

    def render(self, chart: Chart) -> bytes | None:
        """The PNG of ``chart``, or None when the renderer is gone (render it in line then)."""
        ...

    def close(self) -> None: ...


def chart_of(reports: Sequence[BacktestReport]) -> Chart:
    lines = tuple(
        ChartLine(
            report.label, tuple(p.ts for p in report.equity), tuple(float(p.equity) for p in report.equity)
        )
        for report in reports
    )
    return Chart(lines, reports[0].currency if reports else "")


def render_chart(chart: Chart) -> bytes:
    """Equity (top) and drawdown (bottom) of each line, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    for line in chart.lines:
        xs, ys = list(line.ts), list(line.equity)
        peak, dd = float("-inf"), []
        for y in ys:
            peak = max(peak, y)
            dd.append((y - peak) / peak * 100 if peak > 0 else 0.0)
        top.plot(xs, ys, label=line.label, linewidth=1)
        bottom.fill_between(xs, dd, 0, alpha=0.4, label=line.label)
    top.set_ylabel(f"equity ({chart.currency})")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def chart_png(reports: Sequence[BacktestReport]) -> bytes:
    """Equity (top) and drawdown (bottom) of one or more runs, as PNG bytes.

    Rendered by a run's chart worker when one is still up (the same function, so the same bytes),
    else in line: importing matplotlib here would cost the caller ~0.5 s.
    """
    chart = chart_of(reports)
    for renderer in (r.chart_renderer for r in reports if r.chart_renderer is not None):
        png = renderer.render(chart)
        if png is not None:
            return png
    return render_chart(chart)


def html_page(reports: Sequence[BacktestReport], png: bytes) -> str:
    """A self-contained page: summary, chart (embedded), exit reasons and the trades table."""
    img = base64.b64encode(png).decode("ascii")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>CoinPilot backtest</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
        "pre{background:#f7f7f7;padding:1em}</style></head><body><h1>CoinPilot backtest</h1>",
    ]
    for report in reports:
        parts.append(
            f"<h2>{html.escape(report.label)}</h2><pre>{html.escape(chr(10).join(report.summary_lines()))}</pre>"
        )
    parts.append(f"<img alt='equity and drawdown' src='data:image/png;base64,{img}'>")
    for report in reports:
        parts.append(f"<h3>Trades: {html.escape(report.label)}</h3><table><tr>")
        cols = (
            "symbol",
            "opened (UTC)",
            "closed (UTC)",
            "entry",
            "exit",
            "qty",
            "fees",
            "pnl",
            "pnl %",
            "exit reason",
        )
        parts.append("".join(f"<th>{c}</th>" for c in cols) + "</tr>")
        for t in report.trips:
            cells = (
                t.symbol, f"{t.opened_at:%Y-%m-%d %H:%M}", f"{t.closed_at:%Y-%m-%d %H:%M}", t.entry_price,
                t.exit_price, t.quantity, t.fees, f"{t.pnl:,.2f}", f"{t.pnl_pct:+.2f}", t.exit_reason,
            )  # fmt: skip
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(reports: Sequence[BacktestReport], out_dir: Path) -> tuple[Path, Path]:
    """``equity.png`` and ``report.html`` in ``out_dir``; the reports' chart workers are released."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        png = chart_png(reports)
    finally:
        for report in reports:
            if report.chart_renderer is not None:
                report.chart_renderer.close()
                report.chart_renderer = None
    png_path = out_dir / "equity.png"
    png_path.write_bytes(png)
    html_path = out_dir / "report.html"
    html_path.write_text(html_page(reports, png))
    return png_path, html_path
