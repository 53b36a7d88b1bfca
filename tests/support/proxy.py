"""A loopback TCP proxy that can take a server away from its clients and give it back.

Services connect to the proxy's port instead of the server's. :meth:`TcpProxy.refuse` makes the
server unreachable the way an outage does: every open connection is cut at once and new connects
are refused (nothing listens on the port any more). :meth:`TcpProxy.restore` listens again on the
same port, so clients reconnect to the same address and find the server with its data intact.

The proxy runs its own event loop in a thread, so it keeps forwarding while the test's loop is
blocked (``subprocess`` waits, a synchronous fixture) and can be driven from sync or async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from coinpilot.embedded import free_port

CHUNK = 65536
T = TypeVar("T")


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self.accepted = 0
        """Connections accepted since start (a test can check its clients really came through)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    # -- control (any thread) -------------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def refuse(self) -> None:
        """Stop listening (connects are refused) and cut every open connection."""
        self._run(self._refuse())

    def restore(self) -> None:
        """Listen again on the same port."""
        self._run(self._listen())

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._refuse())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        return len(self._open) // 2

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- the proxy's loop ---------------------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _refuse(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant the outage began
            client_writer.transport.abort()
            return
        self.accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self._open.update(pair)
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer), self._pump(server_reader, client_writer)
            )
        finally:
            for writer in pair:
                self._open.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF (passed on as a half-close) or a cut (passed on as a cut)."""
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            writer.transport.abort()
            return
        if writer.can_write_eof() and not writer.transport.is_closing():
            with contextlib.suppress(OSError, ConnectionError):
                writer.write_eof()
