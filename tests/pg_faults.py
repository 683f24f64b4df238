"""Stand-ins for a Postgres server in trouble, on 127.0.0.1 ports of their own (the shared server is never touched).

* ``RefusingPostgres`` answers every connection attempt the way a server that is starting up or shutting down
  does: a FATAL ErrorResponse with SQLSTATE 57P03 (or any other code) right after the startup message.
* ``PostgresProxy`` forwards to a real server while "up"; ``down()`` cuts every open connection and then
  refuses new ones (as a stopped server: connection refused, or 57P03 as a stopping one), ``up()`` forwards again.
  It runs on an event loop of its own in a thread, so it keeps serving while a test blocks its own loop (as
  Litestar's test client does while the app starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

T = TypeVar("T")

SSL_REQUEST = 80877103


def error_response(sqlstate: str, message: str) -> bytes:
    fields = [(b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message)]
    body = b"".join(tag + value.encode() + b"\0" for tag, value in fields) + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def refuse_startup(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sqlstate: str, message: str
) -> None:
    try:
        while True:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            if struct.unpack("!i", body[:4])[0] == SSL_REQUEST:
                writer.write(b"N")  # no TLS here; the client goes on with its startup message
                await writer.drain()
                continue
            writer.write(error_response(sqlstate, message))
            await writer.drain()
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


class RefusingPostgres:
    def __init__(self, sqlstate: str = "57P03", message: str = "the database system is starting up") -> None:
        self.sqlstate, self.message = sqlstate, message
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/mtactl"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(
            lambda r, w: refuse_startup(r, w, self.sqlstate, self.message), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


class PostgresProxy:
    """``url_to(database)`` is the URL of ``database`` on the target server, reached through this proxy."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.refusal: str | None = None  # None: forwarding; "refused": connection refused; else a SQLSTATE
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy", daemon=True)

    def url_to(self, database: str, user: str = "postgres") -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._listen(0))
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, *_: object) -> None:
        self.__exit__()

    def go_down(self, mode: str = "57P03") -> None:
        """Cut every connection, then refuse: ``mode`` "refused" closes the port, else answers that SQLSTATE."""
        self._call(self._down(mode))

    def go_up(self) -> None:
        self._call(self._up())

    async def down(self, mode: str = "57P03") -> None:
        self.go_down(mode)
        await asyncio.sleep(0.05)

    async def up(self) -> None:
        self.go_up()

    async def _close(self) -> None:
        await self._stop_listening()
        self._cut()
        for task in list(self._tasks):
            task.cancel()

    async def _down(self, mode: str) -> None:
        self.refusal = mode
        if mode == "refused":
            await self._stop_listening()
        self._cut()

    async def _up(self) -> None:
        self.refusal = None
        if self._server is None:
            await self._listen(self.port)

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _cut(self) -> None:
        for writer in list(self._open):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusal is not None:
            await refuse_startup(reader, writer, self.refusal, "the database system is shutting down")
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, upstream_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        for end in (writer, upstream_writer):
            self._open.discard(end)
            end.transport.abort()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
