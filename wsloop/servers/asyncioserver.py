"""ws4py's asyncio server: :class:`WebSocketProtocol` and, for the command line, :func:`serve`.

::

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: WebSocketProtocol(EchoWebSocket), "", 9007))
    loop.run_forever()

Each connection's handshake is read on the running loop and answered as the
:class:`~wsloop.upgrade.ServerPolicy` decides; an upgraded connection is then driven on that loop
by :class:`~wsloop.async_websocket.AsyncioTransport` (coroutine callbacks work there).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from ..async_websocket import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, AsyncioTransport, EchoWebSocket
from ..exc import HandshakeError
from ..poller.asyncio import SHARED
from ..upgrade import Accept, Reject, ServeOptions, ServerPolicy
from ..websocket import WebSocket
from .limits import pending_limit
from .running import listen_url

__all__ = ["WebSocketProtocol", "serve"]

logger = logging.getLogger("wsloop.server")

READ_SIZE = 256 * 1024

_BUSY = Reject.of(HandshakeError("too many handshakes in progress", 503, [("Retry-After", "1")])).to_bytes()

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

    The handshake is answered as ``policy`` decides (default: a
    :class:`~wsloop.upgrade.ServerPolicy` of ``handler_cls`` and ``options``, which the keyword
    arguments ``option_kwargs`` override; give the server's protocols one shared policy).
    ``max_connections`` counts the websockets in ``upgraded``; ``max_pending_handshakes`` the
    connections in ``connections`` not in ``upgraded`` (answered 503 and closed at once beyond
    it), so both need the sets.

    :param high_water: write buffer size above which reading pauses and ``await send()`` waits.
    :param low_water: write buffer size below which both resume.
    :param connections: a set this protocol adds itself to while its connection is open (the
        server's registry, for shutting down).
    :param upgraded: a set this protocol adds itself to while its websocket is open: the one the
        server's protocols share (needed with ``max_connections``).
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = EchoWebSocket,
        options: ServeOptions | None = None,
        *,
        policy: ServerPolicy | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        connections: set[WebSocketProtocol] | None = None,
        upgraded: set[WebSocketProtocol] | None = None,
        **option_kwargs: Any,
    ) -> None:
        if policy is None:
            policy = ServerPolicy(handler_cls, ServeOptions.of(options, **option_kwargs))
        elif options is not None or option_kwargs:
            raise TypeError("give either a policy or options, not both")
        options = policy.options
        if options.max_connections is not None and upgraded is None:
            raise ValueError(
                "max_connections counts the websockets in upgraded: pass the protocols' shared set"
            )
        self.max_pending_handshakes = options.pending_handshakes(None)
        if self.max_pending_handshakes is not None and (connections is None or upgraded is None):
            raise ValueError("max_pending_handshakes counts with connections and upgraded: pass both sets")
        self.policy = policy
        self.handler_cls = policy.handler_cls
        self.close_timeout = policy.close_timeout
        self.high_water = high_water
        self.low_water = low_water
        self.max_buffered = options.max_buffered
        self.connections = connections
        self.upgraded = upgraded
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
                SHARED.counters.refuse(503)
                self.transport.write(_BUSY)
                self.transport.close()
                return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.policy.options.handshake_timeout, self._handshake_timeout)
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
        sock = cast(socket.socket, transport.get_extra_info("socket"))
        decision = self.policy.respond(self._data, sock, served=self.upgraded)
        if decision is None:
            return
        if not isinstance(decision, Accept):
            if isinstance(decision, Reject):
                SHARED.counters.refuse(decision.status)
            self._answer(decision.to_bytes())
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._data = b""
        self.ws = decision.websocket
        if self.upgraded is not None:
            self.upgraded.add(self)
        self.driver = AsyncioTransport(
            transport, high_water=self.high_water, low_water=self.low_water, max_buffered=self.max_buffered
        )
        self.driver.start(decision.websocket, preamble=decision.response, received=decision.received)

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


def serve(
    host: str,
    port: int,
    handler_cls: type[WebSocket],
    options: ServeOptions | None = None,
    *,
    ready: Callable[[str], None],
    stop: threading.Event,
    **option_kwargs: Any,
) -> None:
    """Serve ``handler_cls`` on ``host:port`` with a new asyncio event loop in the calling thread.

    ``options`` (:class:`~wsloop.upgrade.ServeOptions`, overridden by ``option_kwargs``).
    ``max_pending_handshakes`` (None: no limit; given, at most half the open-file limit, see
    :func:`~wsloop.servers.limits.pending_limit`): the connections not upgraded, at most; more
    are answered 503 at once (asyncio cannot pause accepting; it pauses by itself, for 1 s,
    when ``accept()`` fails for want of file descriptors). Calls ``ready(url)`` once
    listening (``port`` 0 picks a free port), serves until ``stop`` is set, then closes every
    websocket with 1001, waits up to ``close_timeout`` for the closing handshakes, drops what
    remains, cancels leftover tasks and closes the loop. Installs no signal handlers.
    """
    options = ServeOptions.of(options, **option_kwargs)
    pending = options.pending_handshakes(None)
    if pending is not None:
        options = ServeOptions.of(options, max_pending_handshakes=pending_limit(pending))
    policy = ServerPolicy(handler_cls, options)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_serve(host, port, ready, stop, policy))
    finally:
        try:
            _cancel_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


async def _serve(
    host: str, port: int, ready: Callable[[str], None], stop: threading.Event, policy: ServerPolicy
) -> None:
    loop = asyncio.get_running_loop()
    connections: set[WebSocketProtocol] = set()
    upgraded: set[WebSocketProtocol] = set()

    def factory() -> WebSocketProtocol:
        return WebSocketProtocol(policy=policy, connections=connections, upgraded=upgraded)

    server = await loop.create_server(factory, host, port, backlog=1024)
    try:
        ready(listen_url(server.sockets[0].getsockname()))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        health = policy.options.health
        if health is not None:  # 503 to health checks; the loop serves on during drain()'s wait
            await loop.run_in_executor(None, health.drain)
    finally:
        server.close()
        for protocol in list(connections):
            protocol.shutdown(1001, "Server is shutting down")
        deadline = loop.time() + policy.close_timeout
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
