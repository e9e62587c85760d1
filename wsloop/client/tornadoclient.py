"""ws4py's tornado client (``ws4py.client.tornadoclient.TornadoWebSocketClient``) on wsloop's core.

Needs tornado 6 (``pip install wsloop[tornado]``). ``connect()`` schedules the connection on the
tornado ``IOLoop``; the connection then runs on the IOLoop's asyncio event loop, driven by
wsloop's asyncio driver (:class:`~wsloop.poller.asyncio.AsyncioTransport`), so ``opened()``,
``received_message()`` and ``closed()`` are called on the IOLoop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any, cast

from tornado.ioloop import IOLoop

from ..exc import HandshakeError
from ..poller.asyncio import AsyncioTransport
from ..websocket import SendPayload
from . import WebSocketBaseClient as _ClientBase

__all__ = ["TornadoWebSocketClient"]

logger = logging.getLogger("wsloop.client.tornado")

READ_SIZE = 65536
_local = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer: the connections of the thread's loop read into it in turn
    (what a read holds is processed before the next read)."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(READ_SIZE))
    return view


class _ClientProtocol(asyncio.BufferedProtocol):
    """The asyncio side of one client connection: the opening handshake, then its driver."""

    def __init__(self, client: TornadoWebSocketClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.driver: AsyncioTransport | None = None
        #: Done once the handshake has succeeded (None) or failed (its exception).
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self._data = b""
        self._view = memoryview(b"")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.client.handshake_request)

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._view = _read_buffer()
        return view

    def buffer_updated(self, nbytes: int) -> None:
        driver = self.driver
        if driver is not None:
            driver.data_received(self._view[:nbytes])
            return
        if self.upgraded.done():
            return  # the handshake failed: the connection is being dropped
        self._data += self._view[:nbytes]
        try:
            length = self.client._handshake_done(self._data)
        except HandshakeError as exc:
            self._fail(exc)
            return
        if length is None:
            return
        transport = self.transport
        assert transport is not None
        rest, self._data = self._data[length:], b""
        self.upgraded.set_result(None)
        driver = self.driver = AsyncioTransport(transport)
        driver.start(self.client, received=rest)  # opened(), then what followed the response

    def eof_received(self) -> bool:
        if self.driver is not None:
            return self.driver.eof_received()
        return False  # asyncio closes the transport: connection_lost fails the handshake

    def pause_writing(self) -> None:
        if self.driver is not None:
            self.driver.pause_writing()

    def resume_writing(self) -> None:
        if self.driver is not None:
            self.driver.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.driver is not None:
            self.driver.connection_lost(exc)
        elif not self.upgraded.done():
            self.upgraded.set_exception(
                HandshakeError("the server closed the connection during the handshake")
                if exc is None
                else exc
            )

    def _fail(self, exc: BaseException) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def drop(self) -> None:
        """The handshake failed or was given up: drop the connection if there is one."""
        if not self.upgraded.done():
            self.upgraded.cancel()
        if self.transport is not None:
            self.transport.abort()


class TornadoWebSocketClient(_ClientBase):
    """ws4py's tornado client: a client connection run by a tornado ``IOLoop``.

    Usage, as in ws4py's docs::

        from tornado import ioloop

        class MyClient(TornadoWebSocketClient):
            def opened(self):
                for i in range(0, 200, 25):
                    self.send("*" * i)

            def received_message(self, m):
                print((m, len(str(m))))

            def closed(self, code, reason=None):
                ioloop.IOLoop.instance().stop()

        ws = MyClient('ws://localhost:9000/echo', protocols=['http-only', 'chat'])
        ws.connect()

        ioloop.IOLoop.instance().start()

    :param io_loop: the ``IOLoop`` to run on (default: ``IOLoop.current()`` when
        :meth:`connect` is called).

    A connection that cannot be made (refused, TLS or handshake failure, no answer within
    ``handshake_timeout``) is reported as ``closed(1006, reason)`` on the IOLoop
    (ws4py said 1005 for a refused connection). The other parameters are those of
    :class:`wsloop.client.WebSocketClient`.
    """

    def __init__(
        self,
        url: str,
        protocols: list[str] | None = None,
        extensions: list[str] | None = None,
        io_loop: IOLoop | None = None,
        ssl_options: ssl.SSLContext | Mapping[str, Any] | None = None,
        headers: Iterable[tuple[str, str]] | None = None,
        exclude_headers: Iterable[str] | None = None,
    ) -> None:
        super().__init__(
            url,
            protocols,
            extensions,
            ssl_options=ssl_options,
            headers=headers,
            exclude_headers=exclude_headers,
        )
        self.io_loop = io_loop
        self._protocol: _ClientProtocol | None = None
        self._opening: asyncio.Task[None] | None = None
        self._loop_thread: int | None = None  # the IOLoop's thread, once connect() ran there
        self._connect_called = False

    # ------------------------------------------------------------- connecting

    def connect(self) -> None:  # type: ignore[override]
        """Schedule the connection and its opening handshake on the IOLoop; returns at once.
        ``opened()`` follows on the IOLoop, or ``closed(1006, reason)`` if it fails."""
        if self._connect_called or self._finished:
            raise RuntimeError("connect() was already called on this client")
        self._connect_called = True
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()  # one the base class may have made in advance: asyncio makes its own
        if self.io_loop is None:
            self.io_loop = IOLoop.current()
        self.io_loop.add_callback(self._start)

    def _start(self) -> None:
        self._loop_thread = threading.get_ident()
        if self._finished:
            return  # close_connection() came first
        self._opening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        protocol = self._protocol = _ClientProtocol(self, loop)
        try:
            async with asyncio.timeout(self.handshake_timeout):
                if self.scheme == "ws+unix":
                    path = self.unix_socket_path
                    await loop.create_unix_connection(lambda: protocol, path)
                elif self.scheme == "wss":
                    await loop.create_connection(
                        lambda: protocol,
                        self.host,
                        self.port or 0,
                        ssl=self._ssl_context(),
                        server_hostname=self._server_hostname(),
                    )
                else:
                    await loop.create_connection(lambda: protocol, self.host, self.port or 0)
                await protocol.upgraded
        except (Exception, asyncio.CancelledError) as exc:
            protocol.drop()
            self._handshake_failed(exc)
        finally:
            self._opening = None

    def _handshake_failed(self, exc: BaseException) -> None:
        if self._finished:
            return
        logger.debug("connection to %s failed: %r", self.url, exc)
        if isinstance(exc, ConnectionRefusedError):
            reason = "Connection refused"  # ws4py's reason
        elif isinstance(exc, TimeoutError):
            reason = f"handshake failed: no WebSocket connection within {self.handshake_timeout}s"
        else:
            reason = f"handshake failed: {exc}"
        self._finished = True
        self._call_closed(1006, reason)

    def run_forever(self, timeout: float | None = None) -> bool:
        """From a thread other than the IOLoop's: block until the connection has ended and
        ``closed()`` has run; False if ``timeout`` passed first."""
        if self._loop_thread == threading.get_ident():
            raise RuntimeError("run_forever() would block the IOLoop it waits for")
        return super().run_forever(timeout)

    # ------------------------------------------------------------- calls

    def _outside_loop(self) -> bool:
        """Whether this is a thread other than the IOLoop's while the connection is not yet
        attached (the IOLoop's thread then owns the protocol state)."""
        return (
            self.transport is None
            and self.io_loop is not None
            and self._loop_thread != threading.get_ident()
            and not self._finished
        )

    def send(self, payload: SendPayload, binary: bool = False) -> None:
        """Send a message (see :meth:`wsloop.websocket.WebSocket.send`). Before the connection
        is open it is queued, and sent once it is."""
        if self._outside_loop():
            assert self.io_loop is not None
            self.io_loop.add_callback(self._send_early, payload, binary)
            return
        super().send(payload, binary)

    def _send_early(self, payload: SendPayload, binary: bool) -> None:
        if not self._finished:
            super().send(payload, binary)

    def close(self, code: int = 1000, reason: str | bytes = "") -> None:
        """Start the closing handshake (see :meth:`wsloop.websocket.WebSocket.close`)."""
        if self._outside_loop():
            assert self.io_loop is not None
            self.io_loop.add_callback(self._close_early, code, reason)
            return
        super().close(code, reason)

    def _close_early(self, code: int, reason: str | bytes) -> None:
        if not self._finished:
            super().close(code, reason)

    def close_connection(self) -> None:
        """Drop the connection now, without a closing handshake (ws4py's call); ``closed()``
        follows on the IOLoop (1006)."""
        if self.transport is not None:
            super().close_connection()  # through the driver, from any thread
        elif self.io_loop is not None and self._loop_thread != threading.get_ident():
            self.io_loop.add_callback(self.close_connection)
        else:
            self._drop()

    def _drop(self) -> None:
        # On the IOLoop's thread, before the connection is attached to its driver.
        if self.transport is not None:
            super().close_connection()
            return
        if self._finished or not self._connect_called:
            return
        self._handshake_failed(ConnectionAbortedError("close_connection() during the handshake"))
        if self._protocol is not None:
            self._protocol.drop()
        if self._opening is not None:
            self._opening.cancel()

    @property
    def peer_address(self) -> Any:
        """The server's address (None before the connection is made)."""
        return self._extra_info("peername")

    @property
    def local_address(self) -> Any:
        """This end's address (None before the connection is made)."""
        return self._extra_info("sockname")

    def _extra_info(self, name: str) -> Any:
        protocol = self._protocol
        transport = protocol.transport if protocol is not None else None
        return transport.get_extra_info(name) if transport is not None else None
