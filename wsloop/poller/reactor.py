"""The reactor: one thread, one event loop (``select.epoll`` driven directly on Linux, a
``selectors`` selector elsewhere or when one is given), every connection non-blocking.

:class:`Reactor` is the driver (ws4py's ``WebSocketManager``); each websocket's transport is a
:class:`Connection` (:class:`TLSConnection` over ``ssl.SSLSocket``). One loop turn reads every
readable socket into one shared buffer and feeds its websocket, sending what that read produced
with one ``send()``; then it runs other threads' calls and due timers, and flushes every other
connection that has new output. docs/ARCHITECTURE.md describes backpressure and ``max_buffered``.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from typing import Any

from ..brokers.base import Broker
from ..brokers.inprocess import InProcessBroker
from ..exc import ProtocolException
from ..framing import OPCODE_BINARY, OPCODE_TEXT, _speedups, frame_header
from ..stats import Counters, LagProbe, Stats, track
from ..transport import (
    DEFAULT_HIGH_WATER,
    DONE,
    OVERFLOW_CODE,
    OVERFLOW_REASON,
    TimerHandle,
    _Timers,
    close_notify,
    max_buffered_for,
    refuse,
    reset_on_close,
)
from ..websocket import WebSocket
from .hub import Hub

__all__ = ["Reactor", "Connection", "TLSConnection", "Handler", "EVENT_READ", "EVENT_WRITE"]

logger = logging.getLogger("wsloop.poller")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
_IOV_MAX = 1024
# Output of up to _JOIN_UNDER bytes is joined into one send(); up to _JOIN_SMALL_UNDER it is
# joined too unless its buffers average _IOV_FROM bytes or more (a header and its payload: one
# sendmsg() beats copying the payload); above that, one sendmsg() of up to _IOV_MAX buffers.
# Measured crossovers (docs/ARCHITECTURE.md, "Large messages"): sendmsg of a 4-byte header +
# 16 KiB payload costs what the join does, +32 KiB saves 0.4 us, +64 KiB 1.8 us; 256 x 128 B
# costs 10 us more than a join.
_JOIN_UNDER = 16 * 1024
_JOIN_SMALL_UNDER = 64 * 1024
_IOV_FROM = 4096
# A large frame's payload is awaited with SO_RCVLOWAT (Connection._await_frame), up to this many
# bytes at a time; a read shorter than _LOWAT_READ cannot have started such a frame (an eighth of
# protocol._DIRECT_FROM's 64 KiB).
_LOWAT_MAX = 4 * 1024 * 1024
_LOWAT_READ = 8 * 1024
# What one queued buffer costs beyond its bytes (a bytes object's header, its list slot, malloc's
# rounding): 1.25 M two-byte pongs held 83 MB, not 2.5 MB.
_OVERHEAD = 64
_SWEEP_EVERY = 1.0  # seconds between looks for sockets closed behind the reactor's back
# The C extension's writer of one frame to many plain sockets (wsloop/speedups.c): a broadcast's
# sends without a Python call each. None without the extension, with WSLOOP_NO_SPEEDUPS, or with
# an extension built before it existed: then each socket's send() is called from Python.
_send_shared: Callable[[bytes, list[socket.socket]], list[tuple[int, int]]] | None = getattr(
    _speedups, "send_shared", None
)
_SHARED_BATCH = 256  # sockets per send_shared() call (it holds the GIL: ~2 ms per call)
_PLAIN_SOCKET = socket.socket  # only these take send_shared (not TLS, not gevent's)


class Handler:
    """Anything the reactor watches: it calls ``on_read``/``on_write`` when the socket is ready."""

    def on_read(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_write(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


# epoll's event bits (the Linux ABI, select.EPOLLIN/EPOLLOUT where they exist) and the epoll
# events of a selectors mask (indexed by EVENT_READ | EVENT_WRITE).
_EPOLLIN = 0x001
_EPOLLOUT = 0x004
_TO_EPOLL = (0, _EPOLLIN, _EPOLLOUT, _EPOLLIN | _EPOLLOUT)


class _Registry:
    """What the reactor watches: file descriptor -> handler, over ``select.epoll`` driven
    directly (where it exists, unless a selector is given) or a ``selectors`` selector.

    The loop looks each event up in :attr:`handlers`; :attr:`poll` (``timeout`` in seconds,
    None to block) returns ``(fd, mask)`` pairs, where a mask equal to ``EVENT_READ`` (1, which
    is EPOLLIN's value too) means readable and nothing else: the common case. Any other mask
    goes through :meth:`mask_of`. Sockets are registered by number; :attr:`files` keeps each
    one's socket and events, so that one closed behind the reactor's back (its number -1, or
    reused) is still found and dropped.
    """

    __slots__ = ("handlers", "files", "selector", "epoll", "poll")

    def __init__(self, selector: selectors.BaseSelector | None) -> None:
        self.handlers: dict[int, Handler] = {}
        self.files: dict[int, tuple[socket.socket, int]] = {}  # fd -> (socket, EVENT_* mask)
        self.poll: Callable[[float | None], list[tuple[int, int]]]
        self.epoll: select.epoll | None = None
        self.selector = selector
        if selector is None and hasattr(select, "epoll"):
            self.epoll = select.epoll()
            self.poll = self.epoll.poll
        else:
            if selector is None:
                self.selector = selectors.DefaultSelector()
            self.poll = self._select

    def _select(self, timeout: float | None) -> list[tuple[int, int]]:
        assert self.selector is not None
        return [(key.fd, mask) for key, mask in self.selector.select(timeout)]

    def register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Watch ``sock``; KeyError if its number is registered already (ValueError for a closed
        socket, OSError if the system call fails)."""
        fd = sock.fileno()
        if fd < 0:
            raise ValueError(f"{sock!r} is closed")
        if fd in self.files:
            raise KeyError(fd)
        if self.epoll is not None:
            self.epoll.register(fd, _TO_EPOLL[events])
        else:
            assert self.selector is not None
            self.selector.register(sock, events, handler)
        self.files[fd] = (sock, events)
        self.handlers[fd] = handler

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Change what ``sock`` is watched for and who handles it; KeyError if it is not
        registered, OSError if the system call fails (its socket was closed behind our back)."""
        fd = sock.fileno()
        entry = self.files.get(fd) if fd >= 0 else None
        if entry is None:
            fd = self.fd_of(sock)
            entry = self.files[fd]
        if self.epoll is not None:
            if entry[1] != events:
                self.epoll.modify(fd, _TO_EPOLL[events])
        else:
            assert self.selector is not None
            self.selector.modify(sock, events, handler)  # no system call when only data changes
        if entry[0] is not sock or entry[1] != events:
            self.files[fd] = (sock, events)  # ``sock`` may wrap the one registered (TLS)
        self.handlers[fd] = handler

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (KeyError if it is not registered)."""
        fd = self.fd_of(sock)
        del self.files[fd]
        del self.handlers[fd]
        if self.epoll is not None:
            try:
                self.epoll.unregister(fd)
            except OSError:  # closed behind our back: the kernel has dropped it already
                pass
        else:
            assert self.selector is not None
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass

    def fd_of(self, sock: socket.socket) -> int:
        """The number ``sock`` is registered under (KeyError if it is not): its own, as
        selectors does, or when it was closed (-1), the one it was registered with."""
        fd = sock.fileno()
        if fd >= 0:
            if fd in self.files:
                return fd
            raise KeyError(sock)
        for fd, (registered, _) in self.files.items():
            if registered is sock:
                return fd
        raise KeyError(sock)

    def mask_of(self, fd: int, mask: int) -> int:
        """The ``EVENT_READ | EVENT_WRITE`` mask of an event :attr:`poll` returned for ``fd``
        (from epoll: errors and hang-ups wake both directions, as selectors does), limited to
        what ``fd`` is watched for."""
        if self.epoll is None:
            return mask
        entry = self.files.get(fd)
        if entry is None:
            return 0
        ready = (EVENT_READ if mask & ~_EPOLLOUT else 0) | (EVENT_WRITE if mask & ~_EPOLLIN else 0)
        return ready & entry[1]

    def close(self) -> None:
        self.files.clear()
        self.handlers.clear()
        if self.epoll is not None:
            self.epoll.close()
        else:
            assert self.selector is not None
            self.selector.close()


class _Waker(Handler):
    """The handler of the reactor's wake-up socket: other threads write a byte to it after
    queueing a call (:meth:`Reactor.call_soon_threadsafe`)."""

    __slots__ = ("reactor",)

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor

    def on_read(self) -> None:
        reactor = self.reactor
        try:
            while reactor._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return  # closed: the loop is ending
        reactor._woken = False

    def on_write(self) -> None:  # pragma: no cover - never watched for writing
        pass


class Connection(Handler):
    """A websocket's transport inside the reactor (see :class:`wsloop.transport.Transport`)."""

    __slots__ = (
        "reactor",
        "sock",
        "ws",
        "wbuf",
        "wsize",
        "queued",
        "events",
        "dirty",
        "paused",
        "closing",
        "lingering",
        "closed",
        "waiters",
        "cap",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, ws: WebSocket) -> None:
        self.reactor = reactor
        self.sock = sock
        self.ws = ws
        self.wbuf: list[bytes | memoryview] = []
        self.wsize = 0  # bytes in wbuf (its memory: wsize + _OVERHEAD * len(wbuf))
        self.queued = 0  # bytes other threads have submitted that the reactor has not framed yet
        self.events = EVENT_READ  # what the selector watches now
        self.dirty = False  # in the reactor's list of connections to flush this turn
        self.paused = False  # not reading: output above the high-water mark
        self.closing = False  # close once the output is flushed
        self.lingering = False  # FIN sent; discarding input until the peer closes
        self.closed = False
        self.waiters = 0  # threads blocked in call() for backpressure
        self.cap = 0  # while paused: the output it may hold before it is reset (max_buffered)

    # -- Transport interface
    def in_context(self) -> bool:
        reactor = self.reactor
        return reactor._get_ident() == reactor._tid

    def call(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        reactor = self.reactor
        if size:
            reactor._admit(self, size)
            reactor.call_soon_threadsafe(self._submitted, size, fn, args)
        else:
            reactor.call_soon_threadsafe(fn, *args)

    def _submitted(self, size: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with self.reactor._drained:
            self.queued -= size
        fn(*args)

    def write(self, data: bytes | memoryview) -> None:
        self.wbuf.append(data)
        self.wsize += len(data)
        if not self.dirty:
            self.dirty = True
            self.reactor._dirty.append(self)

    def close(self, linger: bool = False) -> None:
        self.closing = True
        self.lingering = linger
        if not self.dirty:
            self.dirty = True
            self.reactor._dirty.append(self)

    def abort(self) -> None:
        if self.in_context():
            self.teardown()
        else:
            self.reactor.call_soon_threadsafe(self.teardown)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.reactor.call_later(delay, fn, *args)

    def unsent(self) -> int:
        return self.wsize

    def drain(self) -> Awaitable[None]:
        return DONE  # senders in other threads wait in call(); the reactor's never wait

    def hold_reading(self, held: bool) -> None:
        pass  # callbacks run to completion on the reactor's thread: no tasks pile up

    def hub(self) -> Hub:
        return self.reactor.get_hub()

    def held(self) -> int:
        """The memory its unsent output holds: bytes plus ``_OVERHEAD`` per queued buffer (what
        flush() compares with the high-water mark and the cap, inline there)."""
        return self.wsize + _OVERHEAD * len(self.wbuf)

    # -- reactor side
    def on_read(self) -> None:
        reactor = self.reactor
        # A large frame's payload is read straight into its own buffer (Protocol.into).
        into = self.ws.stream.into
        try:
            n = self.sock.recv_into(reactor._buffer if into is None else into)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.teardown()
            return
        if not n:
            self.teardown()
            return
        reactor.counters.bytes_in += n
        if self.closing:
            return
        data = reactor._view[:n] if into is None else into[:n]
        if self.dirty:  # output queued earlier this turn: flushed after the turn, with the rest
            self.ws.process(data)
        else:
            # What this read produces is sent at once, with one send(), rather than after the turn:
            # marked dirty meanwhile so that write() does not list it for the end-of-turn flush.
            self.dirty = True
            try:
                self.ws.process(data)
            finally:
                if self.wbuf or self.closing:
                    self.flush()
                else:
                    self.dirty = False
        if into is None and n < _LOWAT_READ:
            return  # (too short to have started a frame read into its own buffer)
        rest = self.ws.stream.into
        if rest is not None or into is not None:
            self._await_frame(rest)

    def _await_frame(self, rest: memoryview | None) -> None:
        """Wake for a large frame's payload only once ``rest`` (the part still to come) is all
        here, or ``_LOWAT_MAX`` of it (SO_RCVLOWAT), not for every segment; back to 1 when done.
        Not while an idle timeout is set (a slow sender would look idle)."""
        if rest is not None and self.ws.idle_timeout:
            return
        try:
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1 if rest is None else min(len(rest), _LOWAT_MAX)
            )
        except OSError:
            pass

    def on_write(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Send as much queued output as the socket takes; adjust what the selector watches."""
        self.dirty = False
        if self.closed:
            return
        buf = self.wbuf
        if buf:
            try:
                # One buffer (the common case) straight to send(), as _send() does; TLS's too: an
                # SSLSocket's send() takes all of one buffer or raises.
                sent = self.sock.send(buf[0]) if len(buf) == 1 else self._send(buf)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError:
                self.teardown()
                return
            self.wsize -= sent
            self.reactor.counters.bytes_out += sent
            if not self.wsize:
                buf.clear()
                if self.events == 1 and not (self.paused or self.waiters or self.closing):
                    return  # all written, watched for reading only (EVENT_READ), nothing to change
            else:
                i = 0
                while sent:
                    size = len(buf[i])
                    if sent < size:
                        buf[i] = memoryview(buf[i])[sent:]
                        break
                    sent -= size
                    i += 1
                del buf[:i]
        reactor = self.reactor
        held = self.wsize + _OVERHEAD * len(buf)
        if self.paused:
            if held > self.cap:
                self.overflow()
                return
            if held <= reactor.low_water:
                self.paused = False
        elif held > reactor.high_water:
            # Falling behind: from now on it may grow by max_buffered - high_water (what one
            # turn queued while the peer kept up, a large message for one, is never refused).
            self.paused = True
            self.cap = held + reactor.max_buffered - reactor.high_water
        if self.waiters and held + self.queued <= reactor.low_water:
            with reactor._drained:
                reactor._drained.notify_all()
        if self.closing and not buf:
            if not self.lingering:
                self.teardown()
                return
            self._linger()
            return
        events = (0 if self.paused else EVENT_READ) | (EVENT_WRITE if buf else 0)
        if events != self.events:
            self.events = events
            try:
                reactor._registry.modify(self.sock, events, self)
            except (OSError, ValueError, KeyError):  # its socket was closed behind our back
                self.teardown()

    def _send(self, buf: list[bytes | memoryview]) -> int:
        """One system call's worth of the queued output; returns the bytes it took."""
        if len(buf) == 1:
            return self.sock.send(buf[0])
        wsize = self.wsize
        if wsize <= _JOIN_UNDER or (wsize <= _JOIN_SMALL_UNDER and wsize < len(buf) * _IOV_FROM):
            data = b"".join(buf)
            buf[:] = (data,)
            return self.sock.send(data)
        return self.sock.sendmsg(buf[:_IOV_MAX])

    def overflow(self) -> None:
        """Output past ``max_buffered``: drop it, reset the connection, report ``closed(1008)``.

        No close frame: it would wait behind output the peer does not read.
        """
        if self.closed:
            return
        reactor = self.reactor
        logger.warning(
            "%r: %d bytes of output unsent (max_buffered %d): the peer does not read; closing (%d)",
            self.ws,
            self.held(),
            reactor.max_buffered,
            OVERFLOW_CODE,
        )
        reactor.counters.slow_dropped += 1
        self.wbuf = []
        self.wsize = 0
        reset_on_close(self.sock)
        # Not TLSConnection's teardown: no close_notify behind unread output.
        Connection.teardown(self, ProtocolException(OVERFLOW_REASON, OVERFLOW_CODE))

    def _linger(self) -> None:
        """After failing the connection: FIN, then read and discard until EOF or the timeout."""
        self.lingering = False  # once
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.teardown()
            return
        if self.events != EVENT_READ:
            self.events = EVENT_READ
            try:
                self.reactor._registry.modify(self.sock, EVENT_READ, self)
            except (OSError, ValueError, KeyError):
                self.teardown()
                return
        self.reactor.call_later(self.ws.close_timeout, self.teardown)

    def teardown(self, failure: ProtocolException | None = None) -> None:
        """Close the socket now and tell the websocket, with ``failure`` if the driver dropped
        it (idempotent)."""
        if self.closed:
            return
        self.closed = True
        reactor = self.reactor
        reactor._forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self.wbuf = []
        self.wsize = 0
        if self.waiters:
            with reactor._drained:
                reactor._drained.notify_all()
        self.ws.connection_lost(failure)


class TLSConnection(Connection):
    """A connection over TLS: its socket is an ``ssl.SSLSocket`` in non-blocking mode.

    Reading: OpenSSL hands out one record per ``recv_into``, and bytes it has already taken from
    the kernel do not make the socket readable again, so a read event drains it until it wants
    more (``SSLWantReadError``) and parses everything in one pass, as the plain connection does
    with one read. If the shared buffer fills first, the rest is read on the next loop turn,
    after this one's output is flushed (so backpressure applies as it does without TLS).

    Closing: a ``close_notify`` alert is sent first (best effort, without waiting for the
    peer's), so the peer sees a clean TLS end rather than a truncation; not when the connection
    is reset for ``max_buffered``.

    Writing: ``SSLSocket.send`` takes all it is given or raises ``SSLWantWriteError``, and a
    retried write must start with the same bytes; the output list is only ever consumed from its
    front, so it does. Small queued writes are joined into records of up to 64 KiB.
    """

    __slots__ = ()

    def on_read(self) -> None:
        if self.closed or self.paused:
            return  # a deferred read (see below) after the connection ended or filled up
        reactor = self.reactor
        view = reactor._view
        size = len(view)
        sock = self.sock
        got = 0
        eof = False
        while got < size:
            try:
                n = sock.recv_into(view[got:])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                break
            except OSError:  # ssl.SSLError among them: a broken or hostile peer
                eof = True
                break
            if not n:
                eof = True
                break
            got += n
        reactor.counters.bytes_in += got
        if got and not self.closing:
            self.ws.process(view[:got])
        if eof:
            self.teardown()
        elif got == size and not self.closed and sock.pending():  # type: ignore[attr-defined]
            reactor.call_later(0.0, self.on_read)  # after this turn's flush

    def flush(self) -> None:
        paused = self.paused
        super().flush()
        if paused and not (self.paused or self.closed) and self.sock.pending():  # type: ignore[attr-defined]
            self.reactor.call_later(0.0, self.on_read)  # decrypted bytes wait inside OpenSSL

    def _linger(self) -> None:
        if not self.closed:
            close_notify(self.sock)
        super()._linger()

    def teardown(self, failure: ProtocolException | None = None) -> None:
        """Send close_notify (best effort, without blocking), then as a plain connection."""
        if not self.closed:
            close_notify(self.sock)
        super().teardown(failure)

    def _send(self, buf: list[bytes | memoryview]) -> int:
        send = self.sock.send
        sent = 0
        i = 0
        count = len(buf)
        while i < count:
            total = len(buf[i])
            j = i + 1
            while j < count and total + len(buf[j]) <= _JOIN_SMALL_UNDER:
                total += len(buf[j])
                j += 1
            if j - i > 1:
                buf[i:j] = (b"".join(buf[i:j]),)
                count -= j - i - 1
            try:
                n = send(buf[i])
            except ssl.SSLWantWriteError:
                if sent:
                    return sent
                raise
            sent += n
            if n < total:
                break
            i += 1
        return sent


class Reactor:
    """One thread serving many websockets; ws4py's ``WebSocketManager`` interface.

    :param read_size: the size of the one buffer every ``recv_into`` uses.
    :param high_water: unsent bytes above which a connection stops being read and other
        threads' sends to it wait.
    :param low_water: unsent bytes below which reading and waiting senders resume.
    :param max_buffered: the unsent output (bytes plus 64 per queued buffer) a connection whose
        peer does not keep up may hold (default: 16 MiB, or 4 x ``high_water`` if larger).
        Reading pauses at ``high_water`` and other threads' sends wait, but the reactor's own
        thread never waits: output queued by callbacks (to other websockets too),
        :meth:`broadcast`, :meth:`local_broadcast` (channels' ``publish()``) and pongs would
        grow without end for a peer that does not read. Once a connection's output is over
        ``high_water`` after a loop turn, it may grow by ``max_buffered - high_water`` more
        (so to about ``max_buffered``; output queued while the peer kept up, a message larger
        than the cap for one, is never refused); past that the connection is reset (its output
        dropped, no close frame: it would wait behind the unread output) and its websocket's
        ``closed(1008, b"output buffer limit exceeded")`` called. A broadcast skips such a
        connection; the others keep receiving. Checked before each broadcast frame is queued
        and when the output is flushed (after each loop turn).
    :param close_timeout: default seconds :meth:`stop` waits for closing handshakes.
    """

    def __init__(
        self,
        read_size: int = 256 * 1024,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = 1024 * 1024,
        close_timeout: float = 5.0,
        selector: selectors.BaseSelector | None = None,
        max_buffered: int | None = None,
    ) -> None:
        self.high_water = high_water
        self.low_water = low_water
        self.max_buffered = max_buffered_for(high_water, max_buffered)
        self.close_timeout = close_timeout
        self._registry = _Registry(selector)
        #: The ``selectors`` selector the loop runs on (the one given), or None when it drives
        #: ``select.epoll`` itself.
        self._selector = self._registry.selector
        self._buffer = bytearray(read_size)
        self._view = memoryview(self._buffer)
        self._connections: dict[WebSocket, Connection] = {}
        # Websockets handed over by other threads that the loop has not added yet: counted by
        # len(), so a connection limit checked in those threads sees them (wsloop.servers.limits).
        self._adding = 0
        self._adding_lock = threading.Lock()
        self._dirty: list[Connection] = []
        self._burst = 0  # bytes broadcast this turn
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._timers = _Timers()
        self._drained = threading.Condition()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self._registry.register(self._wake_r, EVENT_READ, _Waker(self))
        self._tid: int | None = None
        # Looked up when the reactor is made, not when the module is imported, so a reactor made
        # after gevent's monkey-patching compares greenlet identities.
        self._get_ident = threading.get_ident
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        self._finished = threading.Event()
        self._ended = False  # the loop has shut down: add() refuses (set under _adding_lock)
        self._handlers: dict[int, Handler] = {}
        #: Channels and cross-process broadcast (:mod:`wsloop.poller.hub`): set by
        #: :meth:`use_broker`, or made by :meth:`get_hub` on a websocket's first ``subscribe()``.
        self.hub: Hub | None = None
        #: What :meth:`stats` reports; the websockets' protocols count into it too.
        self.counters = Counters()
        track(self)

    # ------------------------------------------------------------ ws4py face

    def add(self, websocket: WebSocket, *, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``websocket`` (its ``sock`` connected and upgraded); calls its ``opened()``.

        ``preamble`` is sent first (the 101 response, for instance); ``received`` holds bytes
        already read from the peer after its handshake. Safe from any thread. A TLS socket
        (``ssl.SSLSocket``, its TLS handshake done) is served too, by a :class:`TLSConnection`.

        Once :meth:`stop` has begun (or the loop has ended) a websocket is refused: its socket is
        closed and its ``closed(1001, b"Server is shutting down")`` is called (``opened()`` never
        was), on the reactor's thread or, once the loop has ended, in the caller's.
        """
        if self._in_loop():
            self._add(websocket, preamble, received)
            return
        with self._adding_lock:
            if not self._ended:
                self._adding += 1
                self.call_soon_threadsafe(self._add_handed_over, websocket, preamble, received)
                return
        refuse(websocket)

    def remove(self, websocket: WebSocket) -> None:
        """Stop serving ``websocket`` without closing it; its socket is left open and blocking."""

        def _remove() -> None:
            conn = self._connections.get(websocket)
            if conn is not None and not conn.closed:
                conn.closed = True
                self._forget(conn)
                conn.sock.setblocking(True)

        self._run(_remove)

    def close_all(self, code: int = 1001, message: str = "Server is shutting down") -> None:
        """Start the closing handshake on every websocket."""
        self._run(self._close_all, code, message)

    def broadcast(self, message: str | bytes, binary: bool = False) -> None:
        """Send ``message`` to every open websocket, framing it once for all of them.

        A connection with no output queued gets the frame written at once (one ``send()``,
        TLS too); on the others, and for what a socket does not take, it waits behind the
        queued output. With a broker joined (:meth:`use_broker`), the other processes joined to it send it to
        theirs too; each client gets it once.
        """
        if self.hub is not None:  # queued first, so the other processes start at once
            self.hub.forward_broadcast(message, binary)
        self._run(self._broadcast, message, binary)

    def local_broadcast(
        self, message: str | bytes, binary: bool = False, websockets: Iterable[WebSocket] | None = None
    ) -> None:
        """Like :meth:`broadcast`, to this reactor's websockets only (those of ``websockets`` if
        given, e.g. a channel's members), never through the broker. Safe from any thread."""
        self._run(self._broadcast, message, binary, websockets)

    def use_broker(self, broker: Broker | None = None, **options: Any) -> Hub:
        """Join ``broker`` (a new :class:`~wsloop.brokers.InProcessBroker` if None): then
        :meth:`broadcast` reaches every process joined to it, and the websockets' channels go
        through it. Returns the new hub (:attr:`hub`, made with ``options``); an earlier hub
        leaves its broker. Call it before websockets subscribe."""
        old = self.hub
        if old is not None:
            old.close()
        hub = self.hub = Hub(self, broker if broker is not None else InProcessBroker(), **options)
        return hub

    def drop_broker(self) -> None:
        """Leave the broker: :meth:`broadcast` stays local; the next ``subscribe()`` makes an
        in-process hub."""
        hub, self.hub = self.hub, None
        if hub is not None:
            hub.close()

    def get_hub(self) -> Hub:
        """The hub (:attr:`hub`), made with an in-process broker if there is none. Any thread."""
        hub = self.hub
        if hub is None:
            with self._adding_lock:
                hub = self.hub
                if hub is None:
                    hub = self.hub = Hub(self, InProcessBroker())
        return hub

    @property
    def running(self) -> bool:
        """Whether the loop runs in the thread :meth:`start` made."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._finished.is_set()

    @property
    def finished(self) -> bool:
        """Whether the loop has run and ended (a stopped reactor is not started again)."""
        return self._finished.is_set()

    def start(self) -> None:
        """Run the loop in a new daemon thread."""
        if self._thread is not None:
            return
        self._thread = self._make_thread()
        self._thread.start()
        while self._tid is None and self._thread.is_alive():
            time.sleep(0.001)

    def _make_thread(self) -> threading.Thread:
        """The thread :meth:`start` runs the loop in (a daemon: it keeps no program alive)."""
        return threading.Thread(target=self.run, name="wsloop-reactor", daemon=True)

    def stop(self, timeout: float | None = None) -> None:
        """Close every websocket with 1001, wait up to ``timeout`` for their closing handshakes,
        drop the rest, and release every socket. Waits for the loop to end unless called from it.
        """
        wait = self.close_timeout if timeout is None else timeout
        if self._tid is None and self._thread is None:
            self._begin_stop(wait)
            self._run_loop()
            return
        self.call_soon_threadsafe(self._begin_stop, wait)
        if not self._in_loop():
            self._finished.wait()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def __len__(self) -> int:
        """The websockets served, and those other threads handed over that are not added yet."""
        with self._adding_lock:
            return len(self._connections) + self._adding

    def __iter__(self) -> Iterator[WebSocket]:
        return iter(list(self._connections))

    def __contains__(self, websocket: object) -> bool:
        return websocket in self._connections

    @property
    def websockets(self) -> list[WebSocket]:
        return list(self._connections)

    def stats(self) -> Stats:
        """The reactor's figures now (:class:`wsloop.stats.Stats`): open websockets, handshakes,
        messages and bytes in and out, buffered output, closes by code, slow peers dropped, loop
        lag. Any thread; reads counters the loop keeps (no call into the loop)."""
        total = largest = 0
        connections = list(self._connections.values())
        for conn in connections:
            size = conn.wsize
            total += size
            if size > largest:
                largest = size
        return self.counters.snapshot(len(connections), total, largest)

    # ------------------------------------------------------------ plumbing

    def run(self) -> None:
        """Run the loop in the calling thread until :meth:`stop`."""
        self._run_loop()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor's thread at its next turn."""
        self._calls.append((fn, args))
        if not self._woken and not self._in_loop():
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # the wake-up socket is full: the loop is awake anyway
            except OSError:
                pass  # closed: the loop has ended

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the reactor's thread after ``delay`` seconds (from that thread)."""
        return self._timers.add(delay, fn, args)

    def add_handler(self, sock: socket.socket, handler: Handler, events: int = EVENT_READ) -> None:
        """Watch a non-websocket socket (a listener, a handshake in progress): in the loop only."""
        self._register(sock, events, handler)
        self._handlers[sock.fileno()] = handler

    def set_handler_events(self, sock: socket.socket, handler: Handler, events: int) -> None:
        self._registry.modify(sock, events, handler)

    def remove_handler(self, sock: socket.socket) -> None:
        self._handlers.pop(sock.fileno(), None)
        try:
            self._registry.unregister(sock)
        except KeyError:
            pass

    def in_loop(self) -> bool:
        """Whether the caller runs on the reactor's thread."""
        return self._in_loop()

    def _in_loop(self) -> bool:
        return self._get_ident() == self._tid

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._in_loop() or self._tid is None and self._thread is None:
            fn(*args)
        else:
            self.call_soon_threadsafe(fn, *args)

    def _add_handed_over(self, websocket: WebSocket, preamble: bytes, received: bytes) -> None:
        self._add(websocket, preamble, received, counted=True)

    def _add(self, websocket: WebSocket, preamble: bytes, received: bytes, counted: bool = False) -> None:
        """Serve ``websocket``. ``counted``: :meth:`add` counted it in ``_adding`` (another
        thread handed it over); it moves to ``_connections`` in one step under the lock, so
        ``len()`` never sees it twice or not at all."""
        conn: Connection | None = None
        if counted:
            try:
                conn, handed_over = self._connection_for(websocket)
            finally:
                with self._adding_lock:
                    if conn is not None:
                        self._connections[websocket] = conn
                    self._adding -= 1  # served now, or not at all (stopping, or an error)
        else:  # nothing to move from _adding: one dict store, which len() sees whole
            conn, handed_over = self._connection_for(websocket)
            if conn is not None:
                self._connections[websocket] = conn
        if conn is None:
            return
        sock = conn.sock
        try:
            if handed_over:
                self._registry.modify(sock, EVENT_READ, conn)
            else:
                self._register(sock, EVENT_READ, conn)
        except (OSError, ValueError, KeyError):  # closed before the loop got to it
            conn.teardown()
            return
        counters = websocket.stream.counters = self.counters
        if preamble:
            conn.write(preamble)
            counters.bytes_out -= len(preamble)  # the handshake's: bytes count frames only
        websocket.attach(conn)
        if received and not conn.closed:
            counters.bytes_in += len(received)
            websocket.process(received)
        if type(conn) is TLSConnection and not conn.closed and sock.pending():  # type: ignore[attr-defined]
            # Bytes the adapter's TLS reads left decrypted inside OpenSSL: no read event for them.
            self.call_later(0.0, conn.on_read)

    def _connection_for(self, websocket: WebSocket) -> tuple[Connection | None, bool]:
        """The connection that will serve ``websocket`` (None when the loop is stopping: its
        socket is closed), and whether its socket was a handler's until now."""
        sock = websocket.sock
        if sock is None:
            raise ValueError("websocket has no socket")
        # A socket a handler watched (the standalone server's handshake) is handed over with its
        # registration: modified to the connection, no system call when only the data changes.
        handed_over = self._handlers.pop(sock.fileno(), None) is not None
        if self._stopping:
            if handed_over:
                self._registry.unregister(sock)
            refuse(websocket)
            return None, handed_over
        if sock.gettimeout() != 0.0:
            sock.setblocking(False)
        cls = TLSConnection if isinstance(sock, ssl.SSLSocket) else Connection
        return cls(self, sock, websocket), handed_over

    def _register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        """Register ``sock``; an old registration of its file descriptor number is stale (that
        socket was closed behind the reactor's back and the number reused): it is dropped first."""
        registry = self._registry
        try:
            registry.register(sock, events, handler)
        except KeyError:
            fd = sock.fileno()
            if registry.files[fd][0] is sock:
                raise
            self._drop_stale(fd, reused=True)
            registry.register(sock, events, handler)

    def _drop_stale(self, fd: int, reused: bool) -> None:
        """Forget the registration of ``fd``, whose socket was closed by someone else: a
        websocket's connection is torn down (``closed(1006)``), a handler closed. ``reused``: its
        number is another socket's now (never close that one)."""
        registry = self._registry
        sock = registry.files[fd][0]
        handler = registry.handlers[fd]
        logger.warning("fd %d was closed behind the reactor's back; dropping %r", fd, handler)
        if reused and sock.fileno() != -1:
            sock.detach()  # closed with os.close(): the number is the new socket's
        try:
            registry.unregister(sock)
        except KeyError:
            pass
        if self._handlers.get(fd) is handler:
            del self._handlers[fd]
        if isinstance(handler, Connection):
            handler.teardown()
        else:
            _close_handler(handler)

    def _sweep(self) -> None:
        """Every ``_SWEEP_EVERY`` seconds: drop registrations whose socket was closed behind the
        reactor's back (the poller reports nothing for them)."""
        self._drop_closed()
        self.call_later(_SWEEP_EVERY, self._sweep)

    def _drop_closed(self, numbers: bool = False) -> None:
        """Drop the registrations whose socket was closed behind the reactor's back: closed
        sockets, and with ``numbers`` (select() failed with EBADF) numbers closed under them."""
        for fd, (sock, _) in list(self._registry.files.items()):
            if sock.fileno() == -1:
                self._drop_stale(fd, reused=False)
            elif numbers:
                try:
                    os.fstat(fd)
                except OSError:
                    sock.detach()  # never close that number again: it may be reused any time
                    self._drop_stale(fd, reused=False)

    def _forget(self, conn: Connection) -> None:
        self._connections.pop(conn.ws, None)
        try:
            self._registry.unregister(conn.sock)
        except KeyError:
            pass

    def _close_all(self, code: int, message: str) -> None:
        for ws in list(self._connections):
            ws.close(code, message)

    def _broadcast(
        self, message: str | bytes, binary: bool, websockets: Iterable[WebSocket] | None = None
    ) -> None:
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        frame = frame_header(OPCODE_BINARY if binary else OPCODE_TEXT, len(payload)) + payload
        connections = self._connections
        targets: Collection[tuple[WebSocket, Connection]] = (
            connections.items()
            if websockets is None
            else [(ws, connections[ws]) for ws in websockets if ws in connections]
        )
        # A connection that has fallen behind (paused) is capped; counted in bytes only here (the
        # frame is one object shared by every connection): flush() adds each buffer's overhead.
        size = len(frame)
        full: list[Connection] = []
        dirty = self._dirty
        framed = queued = 0  # (for the counters) websockets that frame it themselves; bytes queued
        # Plain sockets with nothing queued are collected and written in C, _SHARED_BATCH at a
        # time (send_shared); not when a websocket is listed twice (its second frame must wait
        # behind the first's unsent rest, which is known only once the first is sent).
        shared = _send_shared
        if shared is not None and websockets is not None and len({ws for ws, _ in targets}) != len(targets):
            shared = None
        socks: list[socket.socket] = []
        held: list[Connection] = []
        for ws, conn in targets:
            if conn.paused and conn.wsize + size > conn.cap:
                full.append(conn)  # closed after the loop: it leaves _connections
            elif not ws.takes_shared_frames():
                framed += 1
                ws.send_broadcast(payload, binary)  # masked or compressed there, or closing
            else:
                wbuf = conn.wbuf
                rest: bytes | memoryview = frame
                if not wbuf:
                    sock = conn.sock
                    if shared is not None and sock.__class__ is _PLAIN_SOCKET:
                        socks.append(sock)
                        held.append(conn)
                        if len(socks) == _SHARED_BATCH:
                            queued += self._send_shared(shared, frame, socks, held)
                            socks = []
                            held = []
                        continue
                    # Nothing queued before it: written at once, one send() and no flush for
                    # it (TLS too: an SSLSocket takes all or raises; a retry starts with it).
                    try:
                        sent = sock.send(frame)
                    except OSError:  # full (EAGAIN, SSLWant*), or broken: flush() sees it
                        sent = 0
                    if sent:
                        if sent == size:
                            continue
                        rest = memoryview(frame)[sent:]
                wbuf.append(rest)  # conn.write(rest), inlined
                conn.wsize += len(rest)
                queued += len(rest)
                if not conn.dirty:
                    conn.dirty = True
                    dirty.append(conn)
        if socks and shared is not None:
            queued += self._send_shared(shared, frame, socks, held)
        shared_count = len(targets) - len(full) - framed  # (send_broadcast's are counted as sent)
        counters = self.counters
        counters.messages_out += shared_count
        counters.bytes_out += shared_count * size - queued  # written at once; flush() counts the rest
        for conn in full:
            if not (conn.ws.server_terminated or conn.ws.client_terminated):  # still open
                conn.overflow()
        self._burst += len(frame)

    def _send_shared(
        self,
        shared: Callable[[bytes, list[socket.socket]], list[tuple[int, int]]],
        frame: bytes,
        socks: list[socket.socket],
        held: list[Connection],
    ) -> int:
        """Write ``frame`` to each of ``socks`` (the plain sockets of ``held``, nothing queued on
        them) in C; queue what a socket did not take (full, or broken: flush() sees it) as
        :meth:`_broadcast` does. Returns the bytes queued."""
        queued = 0
        for index, sent in shared(frame, socks):
            rest: bytes | memoryview = memoryview(frame)[sent:] if sent else frame
            held[index].write(rest)
            queued += len(rest)
        return queued

    def _admit(self, conn: Connection, size: int) -> None:
        """Account for ``size`` bytes another thread submits; wait first while ``conn`` is
        above the high-water mark, until it drains to the low-water mark."""
        with self._drained:
            held = conn.held() + conn.queued
            if held > self.high_water and self._tid is not None:
                conn.waiters += 1
                try:
                    while (
                        conn.held() + conn.queued > self.low_water
                        and not conn.closed
                        and not self._stopping
                        and self._tid is not None
                    ):
                        self._drained.wait(1.0)
                finally:
                    conn.waiters -= 1
            conn.queued += size

    def _begin_stop(self, timeout: float) -> None:
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout
            self._close_all(1001, "Server is shutting down")

    def _run_loop(self) -> None:
        self._tid = self._get_ident()
        self._finished.clear()
        registry = self._registry
        poll = registry.poll
        handlers = registry.handlers
        calls = self._calls
        timers = self._timers
        heap = timers.heap
        monotonic = time.monotonic
        self.call_later(_SWEEP_EVERY, self._sweep)
        LagProbe(self.counters, self.call_later).start()
        try:
            while True:
                if self._stopping and (not self._connections or monotonic() >= self._stop_deadline):
                    break
                if calls or self._dirty:
                    timeout: float | None = 0
                else:
                    timeout = timers.timeout(None) if heap else None
                    if self._stopping:
                        timeout = min(timeout or 0.05, 0.05)
                try:
                    ready = poll(timeout)
                except OSError as exc:  # select(): a number closed behind the reactor's back
                    if exc.errno != errno.EBADF:
                        raise
                    self._drop_closed(numbers=True)
                    continue
                for fd, mask in ready:
                    handler = handlers.get(fd)
                    if handler is None:
                        continue  # unregistered by an earlier handler of this turn
                    try:
                        if mask == 1:  # EVENT_READ: readable, nothing else (the common case)
                            handler.on_read()
                            continue
                        mask = registry.mask_of(fd, mask)
                        if mask & EVENT_READ:
                            handler.on_read()
                        if mask & EVENT_WRITE:
                            handler.on_write()
                    except Exception:
                        logger.exception("error handling %r", handler)
                while calls:
                    fn, args = calls.popleft()
                    try:
                        fn(*args)
                    except Exception:
                        logger.exception("error in call %r", fn)
                    if self._burst > self.high_water:
                        # Broadcasts queued by other threads: flush each high_water's worth
                        # before framing more, so a reader that keeps up is not pushed past
                        # max_buffered by one burst (the rest run on the next turn, at once).
                        break
                self._burst = 0
                if heap and heap[0][0] <= monotonic():
                    for handle in timers.due():
                        try:
                            handle.callback(*handle.args)
                        except Exception:
                            logger.exception("error in timer %r", handle.callback)
                dirty = self._dirty
                if dirty:
                    self._dirty = []
                    for conn in dirty:
                        conn.flush()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for conn in list(self._connections.values()):
            conn.teardown()
        for handler in list(self._handlers.values()):
            _close_handler(handler)
        self._handlers.clear()
        # Websockets handed over too late are refused; add() refuses them from now on.
        with self._adding_lock:
            self._ended = True
            self._adding = 0
        late = [args[0] for fn, args in self._calls if fn == self._add_handed_over]
        self._calls.clear()
        for websocket in late:
            try:
                refuse(websocket)
            except Exception:
                logger.exception("error refusing %r", websocket)
        self._registry.close()
        self._wake_r.close()
        self._wake_w.close()
        self._tid = None
        self._finished.set()


def _close_handler(handler: Handler) -> None:
    """Close a non-websocket handler (a listener, a handshake in progress) if it can be closed."""
    close = getattr(handler, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.exception("error closing %r", handler)
