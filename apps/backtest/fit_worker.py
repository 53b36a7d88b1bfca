"""The GARCH worker process of a backtest, forked as early as its caller likes.

The worker imports arch (~1.1 s of CPU) before it can fit. ``coinpilot backtest`` forks it first
thing (:func:`fork_spare`), while the command itself still has the engine to import (~1 s): the
two imports then run on both cores at once, and the run that wants a worker takes that one
(:func:`take`) instead of forking its own once the engine is loaded. What the worker does is
``volatility_track``'s business; this module imports nothing heavy, so the fork comes early.
:func:`fork_spare` imports ``volatility_track`` (numpy, pydantic, the contracts: ~0.25 s) just
before it forks: both processes need it, so it is imported once instead of on both cores at once
(speed-up: that much less CPU; the worker reaches arch no later, having nothing else to import).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

Worker = tuple[BaseProcess, Connection]  # the process and the parent's end of its pipe

_spare: Worker | None = None


def _main(conn: Connection) -> None:
    from apps.backtest.volatility_track import serve_fits

    serve_fits(conn)


def fork() -> Worker:
    """A new worker, started; it imports arch, then waits for what to fit."""
    context = multiprocessing.get_context("fork")  # no pickling: the child runs ``_main`` as is
    conn, child = context.Pipe()
    process = context.Process(target=_main, args=(child,), daemon=True)
    process.start()
    child.close()  # the parent's copy: the worker's end is the child's now
    return process, conn


def fork_spare() -> int | None:
    """Fork a worker now for the next :func:`take` (an unused one dies with this process); its pid."""
    global _spare
    if _spare is None or not _spare[0].is_alive():
        import apps.backtest.volatility_track  # noqa: F401  (imported once, for both processes)

        _spare = fork()
    return _spare[0].pid


def take() -> Worker:
    """The spare worker when one is alive, else a new one."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and spare[0].is_alive():
        return spare
    if spare is not None:
        spare[1].close()
    return fork()
