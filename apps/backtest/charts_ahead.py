"""The report's chart, rendered by the worker process that fitted GARCH ahead.

Importing matplotlib costs the main process ~0.5 s after its run. The GARCH worker
(``volatility_track.FitsAhead``) has imported most of matplotlib already (arch does) and is idle
once its fits are made, so it then imports pyplot and renders the chart of whatever runs it is
handed (:func:`serve`); the main process asks it through :class:`ChartAhead` and renders in line
when it is gone. Both sides call :func:`apps.backtest.report.render_chart`: same bytes.
"""

from __future__ import annotations

import weakref
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from apps.backtest.report import Chart, render_chart


def serve(conn: Connection) -> None:
    """The worker's side: import pyplot now, then render each chart it is sent until the pipe closes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # the import is the point: render_chart finds it done

    while True:
        try:
            chart = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(render_chart(chart))


def _stop(process: BaseProcess, conn: Connection) -> None:
    conn.close()
    if process.is_alive():
        process.kill()
    process.join()


class ChartAhead:
    """The main process's side: a worker that renders charts; None from :meth:`render` when it is gone.

    ``fits_pending``: the worker may still send fits (``FitsAhead``'s messages up to its final
    None); they are read and dropped before a chart is sent, so neither side ever blocks on a
    full pipe.
    """

    def __init__(self, process: BaseProcess, conn: Connection, *, fits_pending: bool) -> None:
        self._process = process
        self._conn = conn
        self._fits_pending = fits_pending
        self._finalizer = weakref.finalize(self, _stop, process, conn)  # for a report never written

    @property
    def pid(self) -> int | None:
        """The worker's process id."""
        return self._process.pid

    def render(self, chart: Chart) -> bytes | None:
        try:
            while self._fits_pending:
                if self._receive() is None:
                    self._fits_pending = False
            self._conn.send(chart)
            png = self._receive()
        except (EOFError, OSError):
            self.close()
            return None
        return png if isinstance(png, bytes) else None

    def _receive(self) -> object:
        """The worker's next message; EOFError once it is gone."""
        while not self._conn.poll(0.2):
            if not self._process.is_alive() and not self._conn.poll(0):
                raise EOFError("the chart worker is gone")
        return self._conn.recv()

    def close(self) -> None:
        self._finalizer()
