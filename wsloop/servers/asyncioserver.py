"""ws4py's asyncio server: :class:`WebSocketProtocol` and, for the command line, :func:`serve`.

::

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: WebSocketProtocol(EchoWebSocket), "", 9007))
    loop.run_forever()

:class:`WebSocketProtocol` reads the upgrade request (bounded by ``max_header_size``, 16 KiB, and
``handshake_timeout``), answers a malformed one with its HTTP status, a plain ``GET /`` with the
demo page, and an upgrade with 101; then it drives the websocket with the same protocol core as
the reactor, through :class:`wsloop.async_websocket.AsyncioTransport`. ``handler_cls`` may be a
:class:`wsloop.async_websocket.WebSocket` (coroutine callbacks, awaitable ``send``) or any
:class:`wsloop.websocket.WebSocket`.

Design: the connection is driven on the running asyncio loop, not handed to the wsloop reactor.
An asyncio loop is itself a selectors reactor; driving the protocol core on it means callbacks
run on the user's loop, where coroutines, ``await send()`` and the rest of an asyncio application
work as they should, in one thread with no hand-over between threads. Measured (Python 3.11,
2 cores, 64-byte echo, 100 connections x 8 messages in flight, server ``taskset -c 0``, load
generator ``taskset -c 1``; median of 9 runs of 3 s; server CPU time per message)::

    standalone reactor (python -m wsloop serve)                108,700 msg/s    9.3 us/msg
    asyncio handshake, socket handed to the reactor:
        sync EchoWebSocket                                      111,500 msg/s    9.0 us/msg
        coroutine callback (run_coroutine_threadsafe to the
        loop, send() back to the reactor)                        13,800 msg/s   74.5 us/msg
    driven on the asyncio loop (this module):
        sync wsloop.websocket.EchoWebSocket                      97,500 msg/s   10.4 us/msg
        async wsloop.async_websocket.EchoWebSocket (a task
        per message, awaited send)                               42,900 msg/s   23.7 us/msg

The load generator (one Python process) bounds the msg/s of the fastest servers, so the CPU time
per message compares them better: a synchronous handler costs about 12% more on the asyncio loop
than in the reactor, and a coroutine handler about 3x less than hopping between the reactor's
thread and the loop. Two things close most of the gap to the reactor (without them the asyncio
figures were 49,000 and 24,000 msg/s, 21 and 43 us/msg): the protocol is an
:class:`asyncio.BufferedProtocol` that reads into one buffer per thread, as the reactor does,
instead of a fresh 256 KiB ``bytes`` per read; and the frames a connection writes during one
loop turn go to the transport in one ``write()`` at the end of the turn (see
:class:`~wsloop.async_websocket.AsyncioTransport`).

Backpressure: the transport's write buffer limits are ``high_water``/``low_water`` (4 MiB /
1 MiB); above the high-water mark asyncio calls ``pause_writing``, which pauses reading from the
peer (a peer that stops reading cannot grow our memory) and makes ``await send()`` wait until
``resume_writing``; other threads' ``send()`` waits as with the reactor. Heartbeats, the close
timeout and the handshake timeout run through ``loop.call_later``. A failed connection is closed
lingering (``write_eof()``, then input is discarded until the peer closes or ``close_timeout``
passes, then ``abort()``), and so is an HTTP error answer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..async_websocket import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, AsyncioTransport, EchoWebSocket
from ..deflate import DeflateOptions, choose
from ..exc import HandshakeError
from ..handshake import MAX_HEADER_SIZE, accept, error_response, http_response, parse_request
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..websocket import DEFAULT_CLOSE_TIMEOUT, WebSocket
from .limits import DEFAULT_HANDSHAKE_TIMEOUT, check_capacity, pending_limit
from .standalone import demo_page, request_environ

__all__ = ["WebSocketProtocol", "serve"]

logger = logging.getLogger("wsloop.server")

READ_SIZE = 256 * 1024

_BUSY = error_response(HandshakeError("too many handshakes in progress", 503, [("Retry-After", "1")]))

_local = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer: every connection of the thread's loop reads into it in turn
    (what a read holds is processed before the next read), as in the reactor."""
    try:
        return _local.view  # type: ignore[no-any-return]
    except AttributeError:
        _local.view = memoryview(bytearray(READ_SIZE))
        return _local.view  # type: ignore[no-any-return]


class WebSocketProtocol(asyncio.BufferedProtocol):
    """One connection: the opening handshake, then the websocket (``handler_cls``).

    :param handler_cls: the :class:`~wsloop.websocket.WebSocket` subclass to create.
    :param protocols: subprotocols the server speaks, by preference.
    :param heartbeat_freq: seconds between keepalive pings (None: no pings).
    :param max_message_size: largest message accepted (None: unlimited); larger ones get 1009.
    :param handshake_timeout: seconds the client has to send its whole upgrade request.
    :param close_timeout: seconds to wait for the closing handshake (the websocket's
        ``close_timeout``), and for the peer to hang up after an HTTP error answer.
    :param serve_page: answer a plain ``GET /`` with the demo page.
    :param compression: permessage-deflate: False never, True the handler class's policy, or a
        :class:`~wsloop.deflate.DeflateOptions` of its own.
    :param high_water: write buffer size above which reading pauses and ``await send()`` waits.
    :param low_water: write buffer size below which both resume.
    :param max_buffered: the write buffer a peer that has fallen behind may make us hold (default
        16 MiB, or 4 x ``high_water``); past it the connection is aborted, ``closed(1008)``
        (:class:`~wsloop.async_websocket.AsyncioTransport`).
    :param connections: a set this protocol adds itself to while its connection is open (the
        server's registry, for shutting down).
    :param max_connections: websockets served at once (None: no limit), counted in ``upgraded``;
        an upgrade beyond it is answered ``503 Service Unavailable`` with ``Retry-After: 1``.
    :param upgraded: a set this protocol adds itself to while its websocket is open: the one the
        server's protocols share (needed with ``max_connections``).
    :param idle_timeout: close with 1001 a websocket that receives nothing for this many
        seconds (None: the handler class's ``idle_timeout``, by default never).
    :param max_header_size: largest request head in bytes; a larger one gets 431.
    :param max_pending_handshakes: connections in ``connections`` that are not in ``upgraded``
        (handshakes in progress, and HTTP answers being sent), at most (None: no limit); a
        connection beyond it is answered ``503 Service Unavailable`` with ``Retry-After: 1`` and
        closed at once. Needs both sets.
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = EchoWebSocket,
        *,
        protocols: Sequence[str] | None = None,
        heartbeat_freq: float | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        compression: bool | DeflateOptions = True,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        serve_page: bool = True,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        max_buffered: int | None = None,
        connections: set[WebSocketProtocol] | None = None,
        max_connections: int | None = None,
        upgraded: set[WebSocketProtocol] | None = None,
        idle_timeout: float | None = None,
        max_header_size: int = MAX_HEADER_SIZE,
        max_pending_handshakes: int | None = None,
    ) -> None:
        if max_connections is not None and upgraded is None:
            raise ValueError(
                "max_connections counts the websockets in upgraded: pass the protocols' shared set"
            )
        if max_pending_handshakes is not None and (connections is None or upgraded is None):
            raise ValueError("max_pending_handshakes counts with connections and upgraded: pass both sets")
        self.max_pending_handshakes = max_pending_handshakes
        self.handler_cls = handler_cls
        self.protocols = list(protocols) if protocols else None
        self.heartbeat_freq = heartbeat_freq
        self.max_message_size = max_message_size
        self.compression = choose(handler_cls.compression, compression)
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.serve_page = serve_page
        self.high_water = high_water
        self.low_water = low_water
        self.max_buffered = max_buffered
        self.connections = connections
        self.max_connections = max_connections
        self.upgraded = upgraded
        self.idle_timeout = idle_timeout
        self.max_header_size = max_header_size
        self.transport: asyncio.Transport | None = None
        self.ws: WebSocket | None = None
        self.driver: AsyncioTransport | None = None
        self._data = b""
        self._answered = False  # an HTTP answer was sent instead of an upgrade
        self._timer: asyncio.TimerHandle | None = None
        self._view = memoryview(b"")

    # ------------------------------------------------------------ asyncio side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        limit = self.max_pending_handshakes
        if limit is not None and self.connections is not None and self.upgraded is not None:
            if len(self.connections) - len(self.upgraded) >= limit:
                logger.debug("%d handshakes in progress (max_pending_handshakes): 503", limit)
                self._answered = True
                self.transport.write(_BUSY)
                self.transport.close()
                return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.handshake_timeout, self._handshake_timeout)
        if self.connections is not None:
            self.connections.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._view = _read_buffer()
        return view

    def buffer_updated(self, nbytes: int) -> None:
        driver = self.driver
        if driver is not None:
            driver.data_received(self._view[:nbytes])
        elif not self._answered:
            self._data += self._view[:nbytes]
            self._respond()

    def data_received(self, data: bytes) -> None:
        """Bytes from a transport that does not read into :meth:`get_buffer`."""
        driver = self.driver
        if driver is not None:
            driver.data_received(data)
        elif not self._answered:
            self._data += data
            self._respond()

    def eof_received(self) -> bool:
        if self.driver is not None:
            return self.driver.eof_received()
        return False  # asyncio closes the transport

    def pause_writing(self) -> None:
        if self.driver is not None:
            self.driver.pause_writing()

    def resume_writing(self) -> None:
        if self.driver is not None:
            self.driver.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.connections is not None:
            self.connections.discard(self)
        if self.upgraded is not None:
            self.upgraded.discard(self)
        if self.driver is not None:
            self.driver.connection_lost(exc)

    # ------------------------------------------------------------ handshake

    def _respond(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            parsed = parse_request(self._data, self.max_header_size)
            if parsed is None:
                return
            request, length = parsed
            if not request.is_upgrade and request.method in ("GET", "HEAD"):
                if request.path.partition("?")[0] == "/" and self.serve_page:
                    page = demo_page()
                    response = http_response(200, page, "text/html; charset=utf-8")
                    if request.method == "HEAD":
                        response = response[: len(response) - len(page)]
                    self._answer(response)
                    return
                raise HandshakeError("this is a WebSocket endpoint: send an Upgrade request")
            accepted = accept(request, self.protocols, self.compression, policy=self.handler_cls)
            if self.upgraded is not None:
                check_capacity(self.upgraded, self.max_connections)
        except HandshakeError as exc:
            logger.debug("handshake refused (%s %s)", exc.status, exc.reason)
            self._answer(error_response(exc))
            return
        sock = cast(socket.socket, transport.get_extra_info("socket"))
        try:
            ws = self.handler_cls(
                sock,
                protocols=[accepted.subprotocol] if accepted.subprotocol else None,
                extensions=accepted.extensions or None,
                environ=request_environ(request, sock),
                heartbeat_freq=self.heartbeat_freq,
                max_message_size=self.max_message_size,
                deflate=accepted.deflate,
                idle_timeout=self.idle_timeout,
            )
        except Exception:
            logger.exception("error creating %s", self.handler_cls.__name__)
            self._answer(http_response(500, b"internal server error\n"))
            return
        ws.close_timeout = self.close_timeout
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        received = self._data[length:]
        self._data = b""
        self.ws = ws
        if self.upgraded is not None:
            self.upgraded.add(self)
        self.driver = AsyncioTransport(
            transport, high_water=self.high_water, low_water=self.low_water, max_buffered=self.max_buffered
        )
        self.driver.start(ws, preamble=accepted.response, received=received)

    def _answer(self, response: bytes) -> None:
        """Send an HTTP answer, FIN, and wait (up to close_timeout) for the peer to hang up, so
        unread request bytes do not turn our close into a reset that destroys the answer."""
        transport = self.transport
        assert transport is not None
        self._answered = True
        self._data = b""
        transport.write(response)
        if self._timer is not None:
            self._timer.cancel()
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(self.close_timeout, transport.abort)
        else:
            transport.close()

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.transport is not None and self.driver is None:
            logger.debug("handshake timeout")
            self.transport.abort()

    # ------------------------------------------------------------ server side

    def shutdown(self, code: int = 1001, reason: str = "Server is shutting down") -> None:
        """Start closing: the websocket's closing handshake, or drop a connection that has not
        upgraded."""
        if self.ws is not None:
            self.ws.close(code, reason)
        elif self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _url(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}/"


def serve(
    host: str,
    port: int,
    handler_cls: type[WebSocket],
    *,
    ready: Callable[[str], None],
    stop: threading.Event,
    heartbeat_freq: float | None = None,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    compression: bool | DeflateOptions = True,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = MAX_HEADER_SIZE,
    max_pending_handshakes: int | None = None,
    max_buffered: int | None = None,
) -> None:
    """Serve ``handler_cls`` on ``host:port`` with a new asyncio event loop in the calling thread.

    ``max_pending_handshakes`` (None: no limit; given, at most half the open-file limit, see
    :func:`~wsloop.servers.limits.pending_limit`): the connections not upgraded, at most; more
    are answered 503 at once (asyncio cannot pause accepting; it pauses by itself, for 1 s,
    when ``accept()`` fails for want of file descriptors). Calls ``ready(url)`` once
    listening (``port`` 0 picks a free port), serves until ``stop`` is
    set, then closes every websocket with 1001, waits up to ``close_timeout`` for the closing
    handshakes, drops what remains, cancels leftover tasks and closes the loop. Installs no
    signal handlers.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(
            _serve(
                host,
                port,
                ready,
                stop,
                close_timeout,
                dict(
                    handler_cls=handler_cls,
                    heartbeat_freq=heartbeat_freq,
                    max_message_size=max_message_size,
                    compression=compression,
                    close_timeout=close_timeout,
                    max_connections=max_connections,
                    idle_timeout=idle_timeout,
                    handshake_timeout=handshake_timeout,
                    max_header_size=max_header_size,
                    max_buffered=max_buffered,
                    max_pending_handshakes=(
                        None if max_pending_handshakes is None else pending_limit(max_pending_handshakes)
                    ),
                ),
            )
        )
    finally:
        try:
            _cancel_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


async def _serve(
    host: str,
    port: int,
    ready: Callable[[str], None],
    stop: threading.Event,
    close_timeout: float,
    options: dict[str, Any],
) -> None:
    loop = asyncio.get_running_loop()
    connections: set[WebSocketProtocol] = set()
    upgraded: set[WebSocketProtocol] = set()

    def factory() -> WebSocketProtocol:
        return WebSocketProtocol(connections=connections, upgraded=upgraded, **options)

    server = await loop.create_server(factory, host, port, backlog=1024)
    try:
        ready(_url(server))
        while not stop.is_set():
            await asyncio.sleep(0.05)
    finally:
        server.close()
        for protocol in list(connections):
            protocol.shutdown(1001, "Server is shutting down")
        deadline = loop.time() + close_timeout
        while connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for protocol in list(connections):
            protocol.abort()
        for _ in range(100):  # connection_lost runs at the loop's next turns
            if not connections:
                break
            await asyncio.sleep(0)
        await server.wait_closed()


def _cancel_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending (handlers' coroutines) and let them finish."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            context = {"message": "unhandled exception in a task at serve() shutdown", "task": task}
            loop.call_exception_handler({**context, "exception": task.exception()})
