"""ws4py's ``async_websocket``: websockets served on an asyncio event loop.

:class:`WebSocket`'s callbacks may be coroutines (each runs as a task; reading pauses past
:attr:`WebSocket.max_pending_tasks` unfinished ones) and its ``send()``/``close()`` may be
awaited (``send()`` frames at once and returns the transport's ``drain()``). Its driver is
:class:`wsloop.poller.asyncio.AsyncioTransport` (re-exported here); docs/ARCHITECTURE.md has more.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
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

    # ------------------------------------------------------- driver's side

    def attach(self, transport: Transport) -> None:
        """Bind to ``transport`` (in context, so on the loop's thread) and call :meth:`opened`."""
        try:
            self.loop = asyncio.get_running_loop()  # where callback tasks run
        except RuntimeError:
            self.loop = None  # a driver without an event loop: callbacks must not be coroutines
        super().attach(transport)

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
