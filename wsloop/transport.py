"""The driver contract's lower half: what a :class:`~wsloop.websocket.WebSocket` may call on the
transport that drives its socket (:class:`Transport`), and the pieces every driver shares.

Implemented by the reactor's connections, the asyncio transport (both in :mod:`wsloop.poller`)
and :class:`BlockingTransport` (``WebSocket.run()``, the threaded poller). docs/ARCHITECTURE.md has
the whole contract.
"""

from __future__ import annotations

import heapq
import itertools
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

from .exc import ProtocolException
from .stats import UNCOUNTED, Counters

__all__ = [
    "Transport",
    "ChannelHub",
    "TimerHandle",
    "BlockingTransport",
    "DONE",
    "close_notify",
    "refuse",
]


def close_notify(sock: socket.socket) -> None:
    """Send a TLS ``close_notify`` alert on ``sock`` before it is closed, without waiting for the
    peer's (best effort: the socket is made non-blocking, nothing is retried). Does nothing for a
    plain or an already closed socket."""
    if not isinstance(sock, ssl.SSLSocket) or sock.fileno() == -1:
        return
    try:
        sock.setblocking(False)
        sock.unwrap()  # sends ours; raises SSLWantReadError as the peer's is not there yet
    except (OSError, ValueError):
        pass


#: The default high-water mark of every driver: unsent output above which reading pauses.
DEFAULT_HIGH_WATER = 4 * 1024 * 1024
#: The default cap on the output a connection whose peer has fallen behind may hold (every
#: driver's ``max_buffered``), and what its websocket's ``closed()`` reports past it.
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
OVERFLOW_CODE = 1008
OVERFLOW_REASON = "output buffer limit exceeded"


_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s


def reset_on_close(sock: socket.socket | None) -> None:
    """Make closing ``sock`` reset the connection (SO_LINGER 0): the kernel frees what it still
    holds for the peer instead of delivering it, as a dropped slow peer's output must be."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    except OSError:
        pass  # already closed, or not a TCP socket: nothing is held for a peer


def max_buffered_for(high_water: int, max_buffered: int | None) -> int:
    """A driver's ``max_buffered``: the default (16 MiB, or 4 x ``high_water`` if larger) for
    None; a value below ``high_water`` is a :class:`ValueError`."""
    if max_buffered is None:
        return max(DEFAULT_MAX_BUFFERED, 4 * high_water)
    if max_buffered < high_water:
        raise ValueError("max_buffered must be at least high_water")
    return max_buffered


class Driven(Protocol):
    """What a driver holds of a websocket before it attaches it (see :func:`refuse`)."""

    sock: socket.socket | None

    def connection_lost(self, failure: ProtocolException | None = None) -> None: ...


def refuse(websocket: Driven) -> None:
    """A websocket handed to a driver that is stopping or stopped: its socket is closed and its
    ``closed(1001, b"Server is shutting down")`` called (``opened()`` never was)."""
    sock = websocket.sock
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
    websocket.connection_lost(ProtocolException("Server is shutting down", 1001))


class TimerHandle:
    """A scheduled call; :meth:`cancel` stops it from running."""

    __slots__ = ("when", "callback", "args", "cancelled", "_timers")

    def __init__(
        self,
        when: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        timers: _Timers | None = None,
    ) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._timers = timers  # the heap it waits in; None once popped from it

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        # A cancelled timer may wait in the heap until its time: let go of what it would call.
        self.callback = _nothing
        self.args = ()
        timers = self._timers
        if timers is not None:
            self._timers = None
            timers._cancelled_one()


def _nothing(*args: Any) -> None:
    pass


class _Done:
    """An awaitable that is complete: what ``drain()`` returns when there is nothing to wait for."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator that ends at once

    def done(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "<wsloop DONE>"


#: The completed awaitable: what ``drain()`` (and the asyncio websocket's ``send()`` and
#: ``close()``) return when there is nothing to wait for.
DONE: Awaitable[None] = _Done()


class ChannelHub(Protocol):
    """What a websocket calls on its driver's channels hub (:class:`wsloop.poller.hub.Hub`)."""

    def check_channel(self, channel: str) -> None:
        """Raise ValueError unless ``channel`` is a channel handlers may use (any thread)."""

    def join(self, ws: Any, channel: str) -> None:
        """Have ``ws`` receive what is published on ``channel`` (in context)."""

    def leave(self, ws: Any, channel: str) -> None:
        """``ws`` stops receiving ``channel`` (in context)."""

    def leave_all(self, ws: Any) -> None:
        """``ws`` leaves every channel (in context; when it closes)."""

    def publish(self, channel: str, message: str | bytes, binary: bool = False) -> None:
        """Send ``message`` to every member of ``channel``, in every process (any thread)."""


class Transport(Protocol):
    """The driver side of one connection: what a websocket may call on it."""

    def in_context(self) -> bool:
        """Whether the caller may touch the connection's protocol state directly."""

    def call(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        """Run ``fn(*args)`` in the connection's context, from any thread.

        ``size`` is the number of bytes the call will write: a caller outside the driver's
        thread waits while the connection's unsent output is above the high-water mark.
        """

    def write(self, data: bytes) -> None:
        """Queue bytes to send (in context only)."""

    def close(self, linger: bool = False) -> None:
        """Close the connection once queued output is sent (in context only).

        With ``linger`` (after failing the connection, when the peer may still be sending), send
        FIN, then read and discard until the peer closes or ``close_timeout`` passes, so our
        close frame is not destroyed by a reset.
        """

    def abort(self) -> None:
        """Drop the connection now, discarding queued output (from any thread)."""

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` in context after ``delay`` seconds (in context only)."""

    def flush(self) -> None:
        """Write queued output to the socket now, as far as it takes it (in context only)."""

    def unsent(self) -> int:
        """Bytes queued and not yet written to the socket (in context only)."""

    def drain(self) -> Awaitable[None]:
        """An awaitable that completes once the connection's output is below its high-water
        mark (in context). :data:`DONE` from drivers without an event loop, whose senders in
        other threads wait in :meth:`call` instead."""

    def hold_reading(self, held: bool) -> None:
        """Pause (``held``) or resume reading from the peer on the websocket's behalf (too many
        callback tasks unfinished), independently of the driver's own backpressure. Drivers
        that run callbacks to completion have no such tasks and ignore it (in context)."""

    def hub(self) -> ChannelHub:
        """The channels hub of this connection's driver (made with an in-process broker on
        first use); RuntimeError from a driver without channels (any thread)."""


_COMPACT_MIN = 256  # cancelled entries before the heap is worth rebuilding


class _Timers:
    """A heap of :class:`TimerHandle` with lazy deletion (the reactor's and
    :class:`BlockingTransport`'s timers).

    A cancelled timer stays in the heap until it is due or until cancelled entries are more than
    half of the heap (and at least ``_COMPACT_MIN``): then the heap is rebuilt without them, so
    it holds at most about twice the live timers (amortised O(1) per cancellation).
    """

    __slots__ = ("heap", "_seq", "cancelled")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self.cancelled = 0  # cancelled handles still in the heap

    def add(self, delay: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + delay, fn, args, self)
        heapq.heappush(self.heap, (handle.when, next(self._seq), handle))
        return handle

    def _cancelled_one(self) -> None:
        self.cancelled += 1
        if self.cancelled >= _COMPACT_MIN and self.cancelled * 2 > len(self.heap):
            heap = self.heap
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self.cancelled = 0

    def _pop(self) -> TimerHandle:
        handle = heapq.heappop(self.heap)[2]
        if handle.cancelled:
            self.cancelled -= 1
        else:
            handle._timers = None
        return handle

    def timeout(self, default: float | None) -> float | None:
        """Seconds until the next live timer (at most ``default``)."""
        heap = self.heap
        while heap and heap[0][2].cancelled:
            self._pop()
        if not heap:
            return default
        delay = max(0.0, heap[0][0] - time.monotonic())
        return delay if default is None else min(delay, default)

    def due(self) -> list[TimerHandle]:
        """Pop every timer whose time has come."""
        heap = self.heap
        now = time.monotonic()
        ready = []
        while heap and heap[0][0] <= now:
            handle = self._pop()
            if not handle.cancelled:
                ready.append(handle)
        return ready


class BlockingTransport:
    """One connection driven by blocking calls in the thread that runs :meth:`serve`.

    Output is written synchronously with ``sendall`` under a re-entrant lock, which also guards
    the protocol state, so ``send()`` from any thread is safe and naturally back-pressured.
    """

    def __init__(
        self,
        sock: socket.socket,
        read_size: int = 65536,
        linger_timeout: float = 5.0,
        counters: Counters = UNCOUNTED,
    ) -> None:
        self.sock = sock
        self.counters = counters  # its driver's (wsloop.stats): bytes in and out
        self.read_size = read_size
        self.linger_timeout = linger_timeout
        self.lock = threading.RLock()
        self.timers = _Timers()
        self.finished = False
        self._closing = False
        self._linger = False
        self._deadline: float | None = None  # set by call_nowait() for the writes of its call

    def in_context(self) -> bool:
        return False  # every call goes through the lock, which is re-entrant

    def call(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        with self.lock:
            if not self.finished:
                fn(*args)

    def call_nowait(self, fn: Callable[..., Any], *args: Any, deadline: float) -> bool:
        """Run ``fn(*args)`` in context only if the lock is free now, its writes bounded by
        ``deadline`` (``time.monotonic()``): one that cannot finish by then drops the connection.
        Whether it ran (or the connection is finished). For a server that stops: another
        thread may hold the lock for as long as a peer that does not read wants."""
        if not self.lock.acquire(blocking=False):
            return self.finished
        try:
            if not self.finished:
                self._deadline = deadline
                try:
                    fn(*args)
                finally:
                    self._deadline = None
            return True
        finally:
            self.lock.release()

    def write(self, data: bytes) -> None:
        if self.finished:
            return
        try:
            if self._deadline is None:
                self.sock.sendall(data)
            else:
                self._write_by(data, self._deadline)
            self.counters.bytes_out += len(data)
        except OSError:  # TimeoutError too
            self.abort()

    def _write_by(self, data: bytes, deadline: float) -> None:
        sock = self.sock
        sock.settimeout(max(deadline - time.monotonic(), 0.001))  # sendall(): for all the data
        try:
            sock.sendall(data)
        finally:
            sock.settimeout(None)

    def close(self, linger: bool = False) -> None:
        self._closing = True
        self._linger = linger

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.timers.add(delay, fn, args)

    def flush(self) -> None:
        pass  # written synchronously

    def unsent(self) -> int:
        return 0

    def drain(self) -> Awaitable[None]:
        return DONE  # writes are synchronous: there is never output to wait for

    def hold_reading(self, held: bool) -> None:
        pass  # callbacks run to completion in the reading thread

    def hub(self) -> ChannelHub:
        raise RuntimeError("channels need a websocket served by the reactor (selectors poller)")

    def serve(self, process: Callable[[bytes], bool]) -> None:
        """Read and ``process`` until the connection ends; timers run in between."""
        sock = self.sock
        sock.setblocking(True)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not self.finished and not self._closing:
            with self.lock:
                timeout = self.timers.timeout(None)
            # A TLS socket may hold decrypted bytes the file descriptor does not show.
            pending = getattr(sock, "pending", None)
            if (pending is not None and pending()) or poller.poll(
                None if timeout is None else timeout * 1000 + 1
            ):
                try:
                    data = sock.recv(self.read_size)
                except OSError:
                    data = b""
                if not data:
                    break
                self.counters.bytes_in += len(data)
                with self.lock:
                    if not self.finished and not process(data):
                        break
            with self.lock:
                for handle in self.timers.due():
                    if not self.finished:
                        handle.callback(*handle.args)
        with self.lock:
            linger = self._linger and not self.finished
            self.finished = True
        close_notify(sock)
        if linger:
            _drain(sock, self.linger_timeout)
        try:
            sock.close()
        except OSError:
            pass


def _drain(sock: socket.socket, timeout: float) -> None:
    """Send FIN, then discard input until the peer closes or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    try:
        sock.shutdown(socket.SHUT_WR)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(65536):
                return
    except OSError:
        return
