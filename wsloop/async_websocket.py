"""ws4py's ``async_websocket``: websockets served on an asyncio event loop.

:class:`WebSocket`'s callbacks may be coroutines (each runs as a task; reading pauses past
:attr:`WebSocket.max_pending_tasks` unfinished ones) and its ``send()``/``close()`` may be
awaited (``send()`` frames at once and returns the transport's ``drain()``). Its driver is
:class:`wsloop.poller.asyncio.AsyncioTransport` (re-exported here); ``await ws.run()`` waits for
the end of the exchange, or drives one over ws4py's ``proto.reader``/``proto.writer`` streams.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .exc import StreamClosed
from .framing import OPCODE_BINARY, OPCODE_PONG
from .messaging import Message
from .poller.asyncio import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, AsyncioTransport
from .protocol import CLOSED, OPEN
from .transport import DONE, Transport
from .websocket import SendPayload
from .websocket import WebSocket as _SyncWebSocket

__all__ = [
    "WebSocket",
    "EchoWebSocket",
    "AsyncioTransport",
    "DONE",
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
]

logger = logging.getLogger("wsloop.websocket")


class WebSocket(_SyncWebSocket):
    """A websocket whose callbacks may be coroutines and whose ``send``/``close`` may be awaited.

    Served by :mod:`wsloop.servers.asyncioserver` (or any :class:`AsyncioTransport`), its
    callbacks run on the event loop's thread. Each callback that returns an awaitable becomes a
    task; while more than :attr:`max_pending_tasks` of them are unfinished, reading from the
    peer pauses. ::

        class Chat(WebSocket):
            async def received_message(self, message):
                reply = await lookup(str(message))     # anything asyncio
                await self.send(reply)                 # waits while the peer is slow to read
    """

    #: Unfinished callback tasks above which reading from the peer pauses (None: no limit).
    max_pending_tasks: int | None = 1024

    loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Future[Any]] | None = None
    _ended: asyncio.Future[None] | None = None

    def __init__(
        self,
        proto: Any,
        protocols: list[str] | None = None,
        extensions: list[str] | None = None,
        environ: dict[str, Any] | None = None,
        heartbeat_freq: float | None = None,
        **options: Any,
    ) -> None:
        """``proto``: ws4py's :class:`asyncio.Protocol` of the connection (with ws4py's
        ``reader``/``writer`` streams, or a ``transport``), or the connection's socket, which
        is what wsloop's servers pass. The rest are :class:`wsloop.websocket.WebSocket`'s."""
        if proto is None or (hasattr(proto, "getpeername") and hasattr(proto, "fileno")):
            sock, proto = proto, None  # a socket (asyncio's TransportSocket too)
        else:
            sock = _socket_of(proto)
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq, **options)
        #: The connection's :class:`asyncio.Protocol` (ws4py's attribute): the one given, or,
        #: once served by :mod:`wsloop.servers.asyncioserver`, that server's protocol.
        self.proto: Any = proto
        #: True once the exchange has started (``opened()`` was called), as in ws4py.
        self.started = False

    # ------------------------------------------------------------ callbacks

    # Callbacks (opened, received_message, ponged, closed) are inherited: override them with
    # ``def`` or ``async def``.

    # ---------------------------------------------------------------- calls

    def send(self, payload: SendPayload, binary: bool = False) -> Awaitable[None]:  # type: ignore[override]
        """Send a message now (see :meth:`wsloop.websocket.WebSocket.send`); the awaitable
        returned completes once the transport is below its high-water mark. From another
        thread, the call itself waits while the connection is above it (as with the reactor)
        and the awaitable returned is complete.

        Raises :class:`~wsloop.exc.StreamClosed` once the connection is closing or gone.
        """
        if self._finished:
            raise StreamClosed("Cannot send on a terminated websocket")
        super().send(payload, binary)
        transport = self.transport
        if transport is not None and transport.in_context():
            return transport.drain()
        return DONE

    def close(self, code: int = 1000, reason: str | bytes = "") -> Awaitable[None]:  # type: ignore[override]
        """Start the closing handshake: the close frame is queued at once (from another thread:
        at the loop's next turn) and :meth:`closed` follows when the connection has ended. The
        awaitable returned is complete."""
        if not self._finished:
            super().close(code, reason)
        return DONE

    def once(self) -> bool:
        """Not for this class, as in ws4py (whose ``once()`` raised): its connection is driven
        by the event loop; ``await`` :meth:`run` to wait for the end of the exchange.

        :raises NotImplementedError: always.
        """
        raise NotImplementedError(
            f"{type(self).__name__} is driven by its asyncio loop: await run() instead of calling once()"
        )

    async def run(self) -> None:  # type: ignore[override]
        """Run until the websocket exchange is terminated (ws4py's coroutine): returns once
        :meth:`closed` has been called.

        Served by a driver (:mod:`wsloop.servers.asyncioserver`, ``tulipserver``), this waits for
        the end of the connection, on any loop. Not yet served, and made with ws4py's ``proto``
        (``proto.reader``, an :class:`asyncio.StreamReader`, and ``proto.writer``, its
        :class:`asyncio.StreamWriter`, after the opening handshake), it drives the connection
        itself on the running loop, as ws4py's ``run()`` did: :meth:`opened`, then every
        message, until the exchange ends.
        """
        if self.transport is None and not self._finished:
            reader = getattr(self.proto, "reader", None)
            writer = getattr(self.proto, "writer", None)
            if reader is None or writer is None:
                raise RuntimeError(
                    f"{type(self).__name__} is not served: serve it with wsloop.servers.asyncioserver, "
                    "or make it with a proto that has ws4py's reader and writer streams"
                )
            await self._drive(reader, writer)
        loop = self.loop
        if loop is None or loop is _running_loop():
            await self._wait_end()
        else:  # awaited on another loop than the one serving it
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._wait_end(), loop))

    async def _wait_end(self) -> None:
        if self._finished:
            return
        ended = self._ended
        if ended is None:
            ended = self._ended = asyncio.get_running_loop().create_future()
            if self._finished:  # ended meanwhile, in another thread (connection_lost saw no future)
                return
        await asyncio.shield(ended)

    async def _drive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve the connection over ws4py's streams: what ``reader`` gets is fed to the
        websocket, what it sends goes to ``writer``'s transport; until the peer's EOF or the
        transport closes."""
        transport = writer.transport
        driver = AsyncioTransport(transport)  # type: ignore[arg-type]
        driver.start(self)
        try:
            while True:
                try:
                    data = await reader.read(self.reading_buffer_size)
                except OSError:
                    break
                if not data:
                    break
                driver.data_received(data)  # (ignored once closing: input after our close)
            driver.flush()
            if not transport.is_closing():
                transport.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), self.close_timeout)
            except OSError:  # TimeoutError included
                transport.abort()
        finally:
            driver.connection_lost(None)

    # ------------------------------------------------------- driver's side

    def attach(self, transport: Transport) -> None:
        """Bind to ``transport`` (in context, so on the loop's thread) and call :meth:`opened`."""
        try:
            self.loop = asyncio.get_running_loop()  # where callback tasks run
        except RuntimeError:
            self.loop = None  # a driver without an event loop: callbacks must not be coroutines
        if self.proto is None and isinstance(transport, AsyncioTransport):
            self.proto = transport.transport.get_protocol()
        self.started = True
        super().attach(transport)

    def connection_lost(self, failure: Any = None) -> None:
        """The connection has ended: :meth:`closed` runs, then :meth:`run` returns."""
        try:
            super().connection_lost(failure)
        finally:
            ended = self._ended
            if ended is not None:
                loop = ended.get_loop()
                if loop is _running_loop():
                    _resolve(ended)
                else:  # run() awaited on another loop than this driver's thread
                    try:
                        loop.call_soon_threadsafe(_resolve, ended)
                    except RuntimeError:  # that loop is closed: nobody waits any more
                        pass

    def _dispatch(self, message: Message) -> None:
        op = message.opcode
        if op <= OPCODE_BINARY:
            self._invoke(self.received_message, message)
        elif op == OPCODE_PONG:
            self._awaiting_pong = False
            self._invoke(self.ponged, message)

    def _invoke(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run a callback; if it returns an awaitable, run that as a task."""
        try:
            result = callback(*args)
        except Exception as exc:
            self._handler_failed(exc)
            return
        if result is not None and inspect.isawaitable(result):
            self._spawn(result, self._guard)

    def _spawn(
        self, awaitable: Awaitable[Any], guard: Callable[[Awaitable[Any]], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``guard(awaitable)`` as a task on the loop."""
        loop = self.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
                self._handler_failed(
                    RuntimeError(
                        f"{type(self).__name__}'s callback returned a coroutine, but no asyncio loop "
                        "runs this websocket: serve it with wsloop.servers.asyncioserver"
                    )
                )
                return
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        tasks.add(loop.create_task(guard(awaitable)))  # a strong reference while it runs
        limit = self.max_pending_tasks
        if limit is not None and len(tasks) > limit and self.transport is not None:
            self.transport.hold_reading(True)

    def _untrack(self) -> None:
        tasks = self._tasks
        if tasks is None:
            return
        tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        limit = self.max_pending_tasks
        if limit is not None and len(tasks) <= limit // 2 and self.transport is not None:
            self.transport.hold_reading(False)

    async def _guard(self, awaitable: Awaitable[Any]) -> None:
        """A callback's awaitable, as a task: its error is the handler's error."""
        try:
            await awaitable
        except Exception as exc:
            self._task_failed(exc)
        finally:
            self._untrack()

    def _task_failed(self, exc: Exception) -> None:
        stream = self.stream
        if isinstance(exc, StreamClosed) and (self._finished or stream.state is not OPEN):
            # A send that lost the race with the end of the connection: nothing went wrong.
            logger.debug("%r: send after the connection closed", self)
            return
        if self._finished or stream.state is CLOSED:
            self._report(exc)  # too late to close with 1011
            return
        self._handler_failed(exc)
        self._after_close()

    def _run_closed(self, code: int, reason: bytes) -> None:
        try:
            result = self.closed(code, reason)
        except Exception:
            logger.exception("error in %s.closed", type(self).__name__)
            return
        if result is not None and inspect.isawaitable(result):
            self._spawn(result, self._guard_closed)

    async def _guard_closed(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            logger.exception("error in %s.closed", type(self).__name__)
        finally:
            self._untrack()


class EchoWebSocket(WebSocket):
    """Sends every message back as it came, awaiting the send."""

    async def received_message(self, message: Message) -> None:
        await self.send(message.data, message.is_binary)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _socket_of(proto: Any) -> socket.socket | None:
    """The socket of ws4py's ``proto`` (through its transport, or its reader's), if it has one."""
    transport = getattr(proto, "transport", None)
    if transport is None:
        transport = getattr(getattr(proto, "reader", None), "_transport", None)
    if transport is None:
        transport = getattr(getattr(proto, "writer", None), "transport", None)
    get_extra_info = getattr(transport, "get_extra_info", None)
    return get_extra_info("socket") if get_extra_info is not None else None
