"""ws4py's ``async_websocket``: websockets served on an asyncio event loop.

:class:`WebSocket` is :class:`wsloop.websocket.WebSocket` whose callbacks (``opened``,
``received_message``, ``ponged``, ``closed``) may be coroutines, and whose ``send()`` and
``close()`` may be awaited::

    class Chat(WebSocket):
        async def received_message(self, message):
            reply = await lookup(str(message))     # anything asyncio
            await self.send(reply)                 # waits while the peer is slow to read

- A callback that returns a coroutine (or any awaitable) runs as a task on the loop, so it may
  await anything. Tasks start in the order their messages arrived, but the next message's
  callback does not wait for the previous task to finish. An exception a task raises is logged
  by ``unhandled_error()`` and closes the connection with 1011, as a plain callback's does;
  :class:`~wsloop.exc.StreamClosed` from a send that lost the race with the closing handshake
  (the peer closed while the task was waiting) is not an error. While more than
  :attr:`WebSocket.max_pending_tasks` tasks of a connection are unfinished, reading from its
  peer pauses.
- ``send()`` frames the message at once, as in ws4py (so code that does not await it works as
  before), and returns an awaitable that completes when the transport's buffer is below its
  high-water mark: asyncio's ``drain()``. Frames written during one loop turn are handed to the
  transport together at the end of that turn (one ``write``, hence one ``send()`` system call,
  per connection and turn, as in the reactor); past :data:`COALESCE_LIMIT` queued bytes they are
  handed over at once, so at most that much waits outside the transport's accounting.
- From a thread other than the loop's, ``send()``, ``close()`` and ``ping()`` are safe: they run
  on the loop via ``call_soon_threadsafe``, a sending thread waiting while the connection is
  above its high-water mark (as with the reactor); the awaitable returned is then complete.

:class:`AsyncioTransport` is the driver: it implements :class:`wsloop.transport.Transport` over
an :class:`asyncio.Transport`, so the same protocol core runs on the loop's thread, for any
:class:`wsloop.websocket.WebSocket` (synchronous ones too). :mod:`wsloop.servers.asyncioserver`
does the handshake and creates it.

Typing: :class:`wsloop.websocket.WebSocket` declares its callbacks as returning ``object``, so an
``async def`` callback type-checks as an override.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from .exc import ProtocolException, StreamClosed
from .framing import OPCODE_BINARY, OPCODE_PONG
from .messaging import Message
from .protocol import CLOSED, OPEN
from .transport import DEFAULT_HIGH_WATER as HIGH_WATER
from .transport import OVERFLOW_CODE, OVERFLOW_REASON, TimerHandle, Transport, max_buffered_for
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

#: The transport's buffer size above which reading pauses and ``await send()`` waits...
DEFAULT_HIGH_WATER = HIGH_WATER
#: ...until it drains below this.
DEFAULT_LOW_WATER = 1024 * 1024

#: Queued frames past this many bytes go to the transport at once, not at the end of the turn.
COALESCE_LIMIT = 64 * 1024

_get_ident = threading.get_ident
# Threads other than the loop's wait on this while the connection they send to is above its
# high-water mark (one condition for every connection, as in the reactor).
_drained = threading.Condition()

# Reasons reading from a connection is paused.
_HOLD_WRITE = 1  # the transport's buffer is above the high-water mark
_HOLD_TASKS = 2  # too many callback tasks are pending


class _Done:
    """An awaitable that is complete: what ``send()`` returns when there is nothing to wait for."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator that ends at once

    def done(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "<wsloop.async_websocket.DONE>"


#: The completed awaitable ``send()`` and ``close()`` return when they need not wait.
DONE = _Done()


def _discard(data: bytes) -> None:
    pass


class _LoopTimer(TimerHandle):
    """A :class:`~wsloop.transport.TimerHandle` backed by ``loop.call_later``."""

    __slots__ = ("handle",)

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        super().__init__(loop.time() + delay, fn, args)
        self.handle = loop.call_later(delay, fn, *args)

    def cancel(self) -> None:
        self.cancelled = True
        self.handle.cancel()


class AsyncioTransport:
    """The :class:`wsloop.transport.Transport` of one websocket over an asyncio transport.

    The asyncio protocol that owns ``transport`` forwards its events here (``data_received``,
    ``eof_received``, ``pause_writing``, ``resume_writing``, ``connection_lost``). Everything runs
    on the loop's thread; other threads' ``send()`` and ``close()`` come in through
    ``loop.call_soon_threadsafe``, a sending thread waiting while the connection is above its
    high-water mark.

    :param high_water: the transport's buffer size above which reading from the peer pauses (a
        peer that stops reading cannot grow our memory) and ``await send()`` waits.
    :param low_water: the buffer size below which both resume.
    :param max_buffered: what the transport's buffer may hold once the peer has fallen behind
        (default: 16 MiB, or 4 x ``high_water`` if larger), as the reactor's ``max_buffered``:
        from the moment the buffer passes ``high_water`` it may grow by ``max_buffered -
        high_water`` more (output queued on the loop's thread, by callbacks, broadcasts and
        pongs, does not wait); past that the connection is aborted and its websocket's
        ``closed(1008, "output buffer limit exceeded")`` called.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        max_buffered: int | None = None,
    ) -> None:
        self.transport = transport
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.ws: _SyncWebSocket | None = None
        self.high_water = high_water
        self.low_water = low_water
        self.max_buffered = max_buffered_for(high_water, max_buffered)
        self._cap = 0  # while writing is paused: the buffer size past which the peer is dropped
        transport.set_write_buffer_limits(high_water, low_water)
        # Frames waiting for the end of the loop turn (see write()).
        self._out: list[bytes] = []
        self._out_size = 0
        self._reading = False  # in data_received: it flushes at its end
        self._flush_handle: asyncio.Handle | None = None
        self.closing = False  # closed or closing: input is ignored
        self.lost = False  # connection_lost has run
        self.writing_paused = False  # the transport's buffer is above the high-water mark
        self._tid = _get_ident()
        self._holds = 0
        self._queued = 0  # bytes other threads submitted that the loop has not framed yet
        self._waiters = 0  # threads waiting in call()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None

    def start(self, ws: _SyncWebSocket, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``ws``: send ``preamble`` (the 101 response), attach it (``opened()`` runs),
        then process ``received``, bytes the peer sent after its handshake."""
        self.ws = ws
        self._reading = True  # what follows goes out in one write
        try:
            if preamble:
                self.write(preamble)
            ws.attach(self)
            if received and not self.closing:
                ws.process(received)
        finally:
            self._reading = False
            if self._out:
                self.flush()

    # ------------------------------------------------------ Transport contract

    def write(self, data: bytes) -> None:
        """Queue a frame: frames written in one loop turn go to the transport together, at the
        end of the turn (or at once past :data:`COALESCE_LIMIT` bytes)."""
        self._out.append(data)
        size = self._out_size = self._out_size + len(data)
        if size > COALESCE_LIMIT:
            self.flush()
        elif not self._reading and self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the queued frames to the transport."""
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        out = self._out
        if out:
            transport = self.transport
            if transport.is_closing():
                pass  # closed under us (the peer's FIN, an abort): nothing more goes out
            elif len(out) == 1:
                transport.write(out[0])
            elif self._out_size <= COALESCE_LIMIT:
                transport.write(b"".join(out))
            else:
                for chunk in out:  # large payloads are not copied just to join them
                    transport.write(chunk)
            out.clear()
            self._out_size = 0
            if self.writing_paused and transport.get_write_buffer_size() > self._cap:
                self.overflow()

    def overflow(self) -> None:
        """The buffer is past ``max_buffered`` for a peer that does not read: abort the
        connection (no close frame: it would wait behind the unread output); ``closed(1008)``."""
        transport = self.transport
        logger.warning(
            "%r: %d bytes of output unsent (max_buffered %d): the peer does not read; closing (%d)",
            self.ws,
            transport.get_write_buffer_size(),
            self.max_buffered,
            OVERFLOW_CODE,
        )
        self.closing = True
        transport.abort()  # connection_lost follows, at the loop's next turn
        if self.ws is not None:
            self.ws.stream.fail(ProtocolException(OVERFLOW_REASON, OVERFLOW_CODE))

    def in_context(self) -> bool:
        return _get_ident() == self._tid

    def call(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        if size:
            self._admit(size)
            args = (size, fn, args)
            fn = self._submitted
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the connection is gone
            if size:
                with _drained:
                    self._queued -= size

    def close(self, linger: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self.flush()
        transport = self.transport
        if linger and self.ws is not None and transport.can_write_eof():
            # FIN once our close frame is out, then discard input until the peer closes, so a
            # reset does not destroy the close frame (RFC 6455 §7.1.7); bounded by close_timeout.
            transport.write_eof()
            if self._holds:
                self._holds = 0
                transport.resume_reading()
            self._timer = self.loop.call_later(self.ws.close_timeout, transport.abort)
        else:
            transport.close()  # after the buffer is flushed

    def abort(self) -> None:
        if self.in_context():
            self.transport.abort()
        else:
            try:
                self.loop.call_soon_threadsafe(self.transport.abort)
            except RuntimeError:
                pass

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        return _LoopTimer(self.loop, delay, fn, args)

    def unsent(self) -> int:
        return self._out_size + (0 if self.lost else self.transport.get_write_buffer_size())

    # ------------------------------------------------ the asyncio protocol's events

    def data_received(self, data: bytes | memoryview) -> None:
        ws = self.ws
        if ws is not None and not self.closing:
            self._reading = True
            try:
                ws.process(data)
            finally:
                self._reading = False
                if self._out:
                    self.flush()

    def eof_received(self) -> bool:
        """The peer sent FIN: close once our output is flushed (bounded by close_timeout)."""
        self.flush()
        if not self.closing:
            self.closing = True
            timeout = self.ws.close_timeout if self.ws is not None else 5.0
            self._timer = self.loop.call_later(timeout, self.transport.abort)
        return False  # asyncio closes the transport

    def pause_writing(self) -> None:
        self.writing_paused = True
        # Falling behind: from now on the buffer may grow by max_buffered - high_water (what was
        # queued while the peer kept up, a large message for one, is never refused).
        self._cap = self.transport.get_write_buffer_size() + self.max_buffered - self.high_water
        self.hold_reading(_HOLD_WRITE, True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.hold_reading(_HOLD_WRITE, False)
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.lost:
            return
        self.lost = self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
        self._out.clear()
        self._out_size = 0
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        ws = self.ws
        if ws is not None:
            ws.stream.write = _discard
            ws._connection_lost()

    # ------------------------------------------------------------ backpressure

    def hold_reading(self, reason: int, held: bool) -> None:
        """Pause reading from the peer while any reason holds it; resume when none does."""
        before = self._holds
        after = before | reason if held else before & ~reason
        if after == before:
            return
        self._holds = after
        if self.closing:
            return  # closed (asyncio reads no more) or lingering (reading until EOF)
        if not before:
            self.transport.pause_reading()
        elif not after:
            self.transport.resume_reading()

    def drain(self) -> Awaitable[None]:
        """An awaitable that completes when the transport is below its high-water mark (on the
        loop's thread)."""
        if not self.writing_paused or self.lost:
            return DONE
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        return waiter

    def _wake(self) -> None:
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._waiters:
            with _drained:
                _drained.notify_all()

    def _admit(self, size: int) -> None:
        """Account for ``size`` bytes another thread submits; wait first while the connection
        is above the high-water mark, until it drains to the low-water mark."""
        with _drained:
            if (self.writing_paused or self._queued > self.high_water) and self._live():
                self._waiters += 1
                try:
                    while (self.writing_paused or self._queued > self.low_water) and self._live():
                        _drained.wait(1.0)
                finally:
                    self._waiters -= 1
            self._queued += size

    def _live(self) -> bool:
        return not self.lost and not self.loop.is_closed()

    def _submitted(self, size: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with _drained:
            self._queued -= size
            if self._waiters and self._queued <= self.low_water:
                _drained.notify_all()
        fn(*args)

    def __repr__(self) -> str:
        return f"<AsyncioTransport {self.transport.get_extra_info('peername')}>"


class WebSocket(_SyncWebSocket):
    """A websocket whose callbacks may be coroutines and whose ``send``/``close`` may be awaited.

    Served by :mod:`wsloop.servers.asyncioserver` (or any :class:`AsyncioTransport`), its
    callbacks run on the event loop's thread. Each callback that returns an awaitable becomes a
    task; while more than :attr:`max_pending_tasks` of them are unfinished, reading from the
    peer pauses.
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
        if isinstance(transport, AsyncioTransport) and transport.writing_paused and transport.in_context():
            return transport.drain()
        return DONE

    def close(self, code: int = 1000, reason: str = "") -> Awaitable[None]:  # type: ignore[override]
        """Start the closing handshake: the close frame is queued at once (from another thread:
        at the loop's next turn) and :meth:`closed` follows when the connection has ended. The
        awaitable returned is complete."""
        if not self._finished:
            super().close(code, reason)
        return DONE

    # ------------------------------------------------------- driver's side

    def attach(self, transport: Transport) -> None:
        """Bind to ``transport`` (in context) and call :meth:`opened`."""
        if isinstance(transport, AsyncioTransport):
            self.loop = transport.loop
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
        if limit is not None and len(tasks) > limit and isinstance(self.transport, AsyncioTransport):
            self.transport.hold_reading(_HOLD_TASKS, True)

    def _untrack(self) -> None:
        tasks = self._tasks
        if tasks is None:
            return
        tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        limit = self.max_pending_tasks
        if limit is not None and len(tasks) <= limit // 2 and isinstance(self.transport, AsyncioTransport):
            self.transport.hold_reading(_HOLD_TASKS, False)

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

    def _report(self, exc: Exception) -> None:
        try:
            self.unhandled_error(exc)
        except Exception:
            logger.exception("error in %s.unhandled_error", type(self).__name__)

    def _call_closed(self, code: int, reason: str) -> None:
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
