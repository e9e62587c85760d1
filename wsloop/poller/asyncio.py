"""The asyncio driver: :class:`AsyncioTransport` runs one websocket over an ``asyncio.Transport``
on the event loop's thread (:mod:`wsloop.servers.asyncioserver` does the handshake and makes it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..exc import ProtocolException
from ..stats import Counters, LagProbe, Stats, track
from ..transport import (
    DEFAULT_HIGH_WATER,
    DONE,
    OVERFLOW_CODE,
    OVERFLOW_REASON,
    TimerHandle,
    max_buffered_for,
    reset_on_close,
)

if TYPE_CHECKING:
    from ..transport import ChannelHub
    from ..websocket import WebSocket

__all__ = ["AsyncioTransport", "AsyncioStats", "DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER", "COALESCE_LIMIT"]

logger = logging.getLogger("wsloop.websocket")

#: The transport's buffer size below which reading and waiting senders resume.
DEFAULT_LOW_WATER = 1024 * 1024

#: Queued frames past this many bytes go to the transport at once, not at the end of the turn.
COALESCE_LIMIT = 64 * 1024

_get_ident = threading.get_ident

# Reasons reading from a connection is paused.
_HOLD_WRITE = 1  # the transport's buffer is above the high-water mark
_HOLD_TASKS = 2  # too many callback tasks are pending


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


class AsyncioStats:
    """The asyncio driver's ``stats()``: the counts of the :class:`AsyncioTransport` objects made
    with it (every one made without ``stats=`` shares :data:`SHARED`) and their open websockets.
    Its loop lag is sampled on the loop of the first connection (again when that loop closes)."""

    def __init__(self) -> None:
        self.counters = Counters()
        self._open: set[AsyncioTransport] = set()
        self._probe: LagProbe | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None
        track(self)

    def _opened(self, driver: AsyncioTransport) -> None:
        self._open.add(driver)
        loop = driver.loop
        if self._probe_loop is None or self._probe_loop.is_closed():
            self._probe_loop = loop
            self._probe = LagProbe(self.counters, loop.call_later, loop.time)
            self._probe.start()

    def _closed(self, driver: AsyncioTransport) -> None:
        self._open.discard(driver)

    def stats(self) -> Stats:
        """The figures now (:class:`wsloop.stats.Stats`); ``pending_handshakes`` is 0 (the
        asyncio server's handshakes are not counted)."""
        total = largest = 0
        drivers = list(self._open)
        for driver in drivers:
            size = driver.unsent()
            total += size
            if size > largest:
                largest = size
        return self.counters.snapshot(len(drivers), total, largest)


class AsyncioTransport:
    """The :class:`wsloop.transport.Transport` of one websocket over an asyncio transport.

    The asyncio protocol that owns ``transport`` forwards its events here (``data_received``,
    ``eof_received``, ``pause_writing``, ``resume_writing``, ``connection_lost``). Everything runs
    on the loop's thread; other threads' ``send()`` and ``close()`` come in through
    ``loop.call_soon_threadsafe``, a sending thread waiting while the connection is above its
    high-water mark (on this connection's own condition: another connection's drain does not
    wake it).

    :param high_water: the transport's buffer size above which reading from the peer pauses (a
        peer that stops reading cannot grow our memory) and ``await send()`` waits.
    :param low_water: the buffer size below which both resume.
    :param max_buffered: what the transport's buffer may hold once the peer has fallen behind
        (default: 16 MiB, or 4 x ``high_water`` if larger), as the reactor's ``max_buffered``:
        from the moment the buffer passes ``high_water`` it may grow by ``max_buffered -
        high_water`` more (output queued on the loop's thread, by callbacks, broadcasts and
        pongs, does not wait); past that the connection is aborted and its websocket's
        ``closed(1008, b"output buffer limit exceeded")`` called.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        max_buffered: int | None = None,
        stats: AsyncioStats | None = None,
    ) -> None:
        self.transport = transport
        #: Where its figures go (:class:`AsyncioStats`; default :data:`SHARED`).
        self.stats = stats if stats is not None else SHARED
        self.counters = self.stats.counters
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.ws: WebSocket | None = None
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
        self._drained = threading.Condition()  # they wait on it: this connection's only
        self._failure: ProtocolException | None = None  # why the driver dropped it (overflow)
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None

    def start(self, ws: WebSocket, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``ws``: send ``preamble`` (the 101 response), attach it (``opened()`` runs),
        then process ``received``, bytes the peer sent after its handshake."""
        self.ws = ws
        ws.stream.counters = self.counters
        self.stats._opened(self)
        self._reading = True  # what follows goes out in one write
        try:
            if preamble:
                self.write(preamble)
                self.counters.bytes_out -= len(preamble)  # the handshake's: bytes count frames only
            ws.attach(self)
            if received and not self.closing:
                self.counters.bytes_in += len(received)
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
            self.counters.bytes_out += self._out_size  # (taken by the transport: sent or buffered)
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
        self.counters.slow_dropped += 1
        self._failure = ProtocolException(OVERFLOW_REASON, OVERFLOW_CODE)  # for connection_lost
        reset_on_close(transport.get_extra_info("socket"))  # the kernel's share is dropped too
        transport.abort()  # connection_lost follows, at the loop's next turn

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
                with self._drained:
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
        self.counters.bytes_in += len(data)
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
        self._hold(_HOLD_WRITE, True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._hold(_HOLD_WRITE, False)
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.lost:
            return
        self.lost = self.closing = True
        self.stats._closed(self)
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
            ws.connection_lost(self._failure)

    # ------------------------------------------------------------ backpressure

    def hold_reading(self, held: bool) -> None:
        """Pause reading while the websocket's callback tasks are too many (or resume)."""
        self._hold(_HOLD_TASKS, held)

    def hub(self) -> ChannelHub:
        raise RuntimeError("channels need a websocket served by the reactor (selectors poller)")

    def _hold(self, reason: int, held: bool) -> None:
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
            with self._drained:
                self._drained.notify_all()

    def _admit(self, size: int) -> None:
        """Account for ``size`` bytes another thread submits; wait first while the connection
        is above the high-water mark, until it drains to the low-water mark."""
        with self._drained:
            if (self.writing_paused or self._queued > self.high_water) and self._live():
                self._waiters += 1
                try:
                    while (self.writing_paused or self._queued > self.low_water) and self._live():
                        self._drained.wait(1.0)
                finally:
                    self._waiters -= 1
            self._queued += size

    def _live(self) -> bool:
        return not self.lost and not self.loop.is_closed()

    def _submitted(self, size: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with self._drained:
            self._queued -= size
            if self._waiters and self._queued <= self.low_water:
                self._drained.notify_all()
        fn(*args)

    def __repr__(self) -> str:
        return f"<AsyncioTransport {self.transport.get_extra_info('peername')}>"


#: The :class:`AsyncioStats` of every :class:`AsyncioTransport` made without ``stats=``.
SHARED = AsyncioStats()
