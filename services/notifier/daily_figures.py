"""Daily report figures (BEHAVIOUR §8 with the rebuild fixes), pure.

The window is the 24 h ending at 22:00 KST, half-open ``[start, end)`` on the fill's event time,
so consecutive reports never share or drop a trade. From the fills:

* ``total_pnl``: sum of realised PnL of the window's SELLs, net of each SELL's fee (as ``Fill``).
* ``trades``: fills in the window; ``sell_trades``: SELLs whose entry price is known.
* ``win_rate``: share of those SELLs with PnL > 0 (§9.1); ``None`` with no SELL.
* ``mdd_pct``: max drawdown (§9.1) of the equity curve "cash + positions marked at the last fill
  price of their symbol", sampled at the window start and after every fill.
* ``loss_ratio_pct``: the original "MDD", ``|loss| / end balance × 100`` when the PnL is negative.
* Entry price of a SELL: the fill's ``entry_avg_price``, else FIFO over all earlier BUY lots of the
  symbol (every SELL consumes its lots, so a later SELL never reuses them).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

from coinpilot.analytics.performance import max_drawdown_pct, win_rate
from coinpilot.clock import ensure_utc
from coinpilot.contracts import Side

EIGHT_DP = Decimal("0.00000001")
UNKNOWN_EXIT = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One FILLED trade as the report reads it (a ``trading_history`` row)."""

    order_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    executed_at: datetime
    balance_after: Decimal | None = None
    position_quantity_after: Decimal | None = None
    entry_avg_price: Decimal | None = None
    exit_reason: str | None = None
    post_1h_change_pct: float | None = None


@dataclass(frozen=True, slots=True)
class ExitBucket:
    count: int
    avg_pnl_pct: float | None
    avg_post_1h_pct: float | None


@dataclass(frozen=True, slots=True)
class DailyFigures:
    period_start: datetime
    period_end: datetime
    currency: str
    total_pnl: Decimal
    fees_paid: Decimal
    trades: int
    sell_trades: int
    win_rate: float | None
    mdd_pct: float
    loss_ratio_pct: float
    end_balance: Decimal
    exit_breakdown: dict[str, ExitBucket]
    notes: tuple[str, ...]
    equity_curve: tuple[Decimal, ...]


@dataclass(frozen=True, slots=True)
class _Sale:
    row: TradeRow
    entry: Decimal
    pnl: Decimal
    pnl_pct: float


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def fifo_entry_prices(history: Iterable[TradeRow]) -> dict[str, Decimal]:
    """Entry price of every SELL without ``entry_avg_price``: weighted FIFO over earlier BUY lots."""
    lots: dict[str, deque[list[Decimal]]] = defaultdict(deque)
    out: dict[str, Decimal] = {}
    for row in sorted(history, key=lambda r: r.executed_at):
        if row.quantity <= 0:
            continue
        if row.side is Side.BUY:
            lots[row.symbol].append([row.price, row.quantity])
            continue
        left, cost, taken = row.quantity, Decimal(0), Decimal(0)
        queue = lots[row.symbol]
        while left > 0 and queue:
            price, qty = queue[0]
            use = min(qty, left)
            cost, taken, left = cost + price * use, taken + use, left - use
            if use == qty:
                queue.popleft()
            else:
                queue[0][1] = qty - use
        if row.entry_avg_price is None and taken > 0:
            out[row.order_id] = (cost / taken).quantize(EIGHT_DP, rounding=ROUND_HALF_EVEN)
    return out


def _equity(cash: Decimal, holdings: dict[str, Decimal], marks: dict[str, Decimal]) -> Decimal:
    return cash + sum((qty * marks[sym] for sym, qty in holdings.items() if qty > 0), Decimal(0))


def compute_daily(
    history: Sequence[TradeRow],
    period_start: datetime,
    period_end: datetime,
    currency: str,
    initial_balance: Decimal,
) -> DailyFigures:
    """Figures for the window from every FILLED trade of the account up to ``period_end``."""
    start, end = ensure_utc(period_start), ensure_utc(period_end)
    rows = sorted((r for r in history if ensure_utc(r.executed_at) < end), key=lambda r: r.executed_at)
    fifo = fifo_entry_prices(rows)
    cash = initial_balance
    holdings: dict[str, Decimal] = {}
    marks: dict[str, Decimal] = {}
    curve: list[Decimal] = []
    window: list[TradeRow] = []
    for row in rows:
        if ensure_utc(row.executed_at) >= start and not curve:
            curve.append(_equity(cash, holdings, marks))
        cash = row.balance_after if row.balance_after is not None else _cash_after(cash, row)
        holdings[row.symbol] = (
            row.position_quantity_after
            if row.position_quantity_after is not None
            else _holding_after(holdings.get(row.symbol, Decimal(0)), row)
        )
        marks[row.symbol] = row.price
        if ensure_utc(row.executed_at) >= start:
            window.append(row)
            curve.append(_equity(cash, holdings, marks))
    if not curve:
        curve.append(_equity(cash, holdings, marks))

    notes: list[str] = []
    sales: list[_Sale] = []
    sells = [r for r in window if r.side is Side.SELL]
    for row in sells:
        entry = row.entry_avg_price if row.entry_avg_price is not None else fifo.get(row.order_id)
        if entry is None or entry <= 0:
            notes.append(f"{row.symbol}: SELL excluded from PnL (no entry price)")
            continue
        gross = ((row.price - entry) * row.quantity).quantize(EIGHT_DP, rounding=ROUND_HALF_EVEN)
        sales.append(_Sale(row, entry, gross - row.fee, float((row.price - entry) / entry * 100)))
    if sells and not sales:
        notes.append("There were SELLs but none could be priced (no entry price)")
    if not window:
        notes.append("No trades in the window")

    total_pnl = sum((s.pnl for s in sales), Decimal(0))
    fees = sum((r.fee for r in window), Decimal(0))
    if fees > 0:
        notes.append(f"Fees paid: {fees.normalize():f} {currency}")
    loss_ratio = float(-total_pnl / cash * 100) if total_pnl < 0 and cash > 0 else 0.0
    return DailyFigures(
        period_start=start,
        period_end=end,
        currency=currency,
        total_pnl=total_pnl,
        fees_paid=fees,
        trades=len(window),
        sell_trades=len(sales),
        win_rate=win_rate([s.pnl for s in sales]) if sales else None,
        mdd_pct=max_drawdown_pct(curve),
        loss_ratio_pct=loss_ratio,
        end_balance=cash,
        exit_breakdown=_breakdown(sales),
        notes=tuple(notes),
        equity_curve=tuple(curve),
    )


def _breakdown(sales: Sequence[_Sale]) -> dict[str, ExitBucket]:
    groups: dict[str, list[_Sale]] = defaultdict(list)
    for sale in sales:
        groups[sale.row.exit_reason or UNKNOWN_EXIT].append(sale)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {
        reason: ExitBucket(
            count=len(group),
            avg_pnl_pct=_mean([s.pnl_pct for s in group]),
            avg_post_1h_pct=_mean(
                [s.row.post_1h_change_pct for s in group if s.row.post_1h_change_pct is not None]
            ),
        )
        for reason, group in ordered
    }


def _cash_after(cash: Decimal, row: TradeRow) -> Decimal:
    """For rows without a recorded balance (imported history): the executor's own cash rule."""
    gross = row.price * row.quantity
    return cash - gross - row.fee if row.side is Side.BUY else cash + gross - row.fee


def _holding_after(quantity: Decimal, row: TradeRow) -> Decimal:
    return quantity + row.quantity if row.side is Side.BUY else max(Decimal(0), quantity - row.quantity)


def basic_summary(figures: DailyFigures) -> str:
    """The plain-text summary used when no LLM is configured or the call fails."""
    rate = "N/A" if figures.win_rate is None else f"{figures.win_rate * 100:.1f}%"
    pnl = figures.total_pnl.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return (
        f"Basic summary: trades={figures.trades}, sells={figures.sell_trades}, win_rate={rate}, "
        f"total_pnl={pnl:,f} {figures.currency}, mdd={figures.mdd_pct:.2f}%"
    )


def summary_prompt(figures: DailyFigures, report_date: str) -> str:
    """The figures handed to the LLM (§8.4): one line per fact, exit reasons by count."""
    rate = "N/A" if figures.win_rate is None else f"{figures.win_rate * 100:.1f}%"
    lines = [
        f"date: {report_date} (24 h ending 22:00 KST)",
        f"total realised PnL: {figures.total_pnl.quantize(Decimal(1), rounding=ROUND_HALF_UP):,f} "
        f"{figures.currency}",
        f"fills: {figures.trades}",
        f"analysable SELLs: {figures.sell_trades}",
        f"win rate: {rate}",
        f"max drawdown of the equity curve: {figures.mdd_pct:.2f}%",
        "exit reasons:",
    ]
    for reason, bucket in figures.exit_breakdown.items():
        pnl = "N/A" if bucket.avg_pnl_pct is None else f"{bucket.avg_pnl_pct:.2f}%"
        post = "N/A" if bucket.avg_post_1h_pct is None else f"{bucket.avg_post_1h_pct:.2f}%"
        lines.append(f"- {reason}: count {bucket.count}, avg pnl {pnl}, avg 1h after exit {post}")
    if not figures.exit_breakdown:
        lines.append("- none")
    lines.append("data-quality notes: " + ("; ".join(figures.notes) if figures.notes else "none"))
    return "\n".join(lines)
