"""How the standalone server accepts connections and reads their opening handshakes.

Two acceptors behind one small interface (:class:`Acceptor`): :class:`ReactorAcceptor` watches
the listening socket and every handshake in progress from the reactor's thread, without
blocking (TLS handshakes too); :class:`ThreadedAcceptor` accepts on a thread of its own and
gives each connection a thread. Both bound the handshakes in progress and back off when
``accept()`` fails for want of resources; both ask the server's
:class:`~wsloop.upgrade.ServerPolicy` for the answer and only deliver it.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from typing import Any, Protocol

from ..poller import Reactor, ThreadedManager
from ..poller.reactor import EVENT_READ, EVENT_WRITE, Handler
from ..transport import TimerHandle
from ..upgrade import Accept, Decision, Reject, ServeOptions, ServerPolicy
from .limits import ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, pending_limit

__all__ = ["Acceptor", "Listener", "ReactorAcceptor", "ThreadedAcceptor", "acceptor_for"]

logger = logging.getLogger("wsloop.server")

_ACCEPTS_PER_TURN = 256
# After this many reads in a row found no request at accept time, the next connections are
# watched at once (a read that finds nothing is a system call and an exception for nothing),
# except every _EAGER_PROBE-th, read at once to see whether requests have started to come first.
_EAGER_MISSES = 2
_EAGER_PROBE = 16

# accept() errors that concern one connection only (it was reset before it was accepted): the
# next one is accepted at once. Any other error (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) would
# recur at once: the listener is paused (_AcceptBackoff).
_TRANSIENT_ACCEPT_ERRORS = frozenset(
    {errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EAGAIN, errno.EINTR, errno.EPERM}
)


# The listening socket families whose connections are TCP: they get TCP_NODELAY when accepted
# (a Unix socket has no TCP options: setting one fails with EOPNOTSUPP).
_TCP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})


def _is_tcp(listener: socket.socket) -> bool:
    """Whether connections accepted on ``listener`` are TCP ones, to get ``TCP_NODELAY`` (decided
    once per listener, by its family: a Unix socket's connections have no TCP options)."""
    return listener.family in _TCP_FAMILIES


def _nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on an accepted TCP connection: each frame goes out at once."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # the peer is already gone (EINVAL on some systems): the read says so
        logger.debug("TCP_NODELAY on %r: %s", sock, exc)


class Listener(Protocol):
    """What an acceptor needs of its server
    (:class:`~wsloop.servers.standalone.WebSocketServer` is one)."""

    sock: socket.socket  # the listening socket
    ssl_context: ssl.SSLContext | None
    policy: ServerPolicy
    options: ServeOptions
    handshake_timeout: float
    max_pending_handshakes: int | None

    @property
    def stopped(self) -> bool:
        """Whether the server is stopping."""

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the server to stop; whether it has."""


class Acceptor(Protocol):
    """What :class:`~wsloop.servers.standalone.WebSocketServer` asks of its acceptor."""

    #: Handshakes in progress (connections accepted and not yet upgraded or answered).
    pending: int

    def start(self) -> None:
        """Start accepting (and start the driver)."""

    def stop(self) -> None:
        """Stop accepting; the server stops the driver next."""

    def join(self) -> None:
        """Wait for the accepting thread, if any, once the driver has stopped."""


def acceptor_for(server: Listener, manager: Reactor | ThreadedManager) -> Acceptor:
    """The acceptor that suits ``manager``: in its loop for a reactor, else a thread."""
    if isinstance(manager, Reactor):
        return ReactorAcceptor(server, manager)
    return ThreadedAcceptor(server, manager)


class _Episodes:
    """One warning per episode of a condition (accept() failing, handshakes at their limit), and
    at most one per ``_EPISODE_LOG_INTERVAL`` seconds when episodes follow each other."""

    __slots__ = ("active", "logged_at", "count")

    def __init__(self) -> None:
        self.active = False
        self.logged_at = -_EPISODE_LOG_INTERVAL
        self.count = 0  # episodes since the last warning

    def begin(self, message: str, *args: object) -> None:
        if self.active:
            return
        self.active = True
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= _EPISODE_LOG_INTERVAL:
            if self.count > 1:
                message += f" ({self.count - 1} more such episodes in the last {now - self.logged_at:.0f} s)"
            logger.warning(message, *args)
            self.logged_at = now
            self.count = 0
        else:
            logger.debug(message, *args)

    def end(self) -> None:
        self.active = False


_EPISODE_LOG_INTERVAL = 10.0


class _AcceptBackoff:
    """How long to pause accepting after accept() failed for want of resources: from
    ``ACCEPT_BACKOFF_MIN`` doubling to ``ACCEPT_BACKOFF_MAX`` while it keeps failing, back to the
    start once a connection is accepted. One warning per episode (at most one per 10 s)."""

    __slots__ = ("delay", "episodes")

    def __init__(self) -> None:
        self.delay = 0.0
        self.episodes = _Episodes()

    def failed(self, exc: OSError) -> float:
        if not self.delay:
            self.episodes.begin(
                "accept() failed: %s; accepting paused (retried after %g s, then up to every %g s,"
                " until it succeeds); open connections are still served",
                exc,
                ACCEPT_BACKOFF_MIN,
                ACCEPT_BACKOFF_MAX,
            )
            self.delay = ACCEPT_BACKOFF_MIN
        else:
            self.delay = min(self.delay * 2, ACCEPT_BACKOFF_MAX)
        return self.delay

    def succeeded(self) -> None:
        if self.delay:
            logger.debug("accepting again")
            self.delay = 0.0
            self.episodes.end()


class _PendingLimit:
    """``max_pending_handshakes``: whether accepting must pause, and when it may resume."""

    def __init__(self, server: Listener) -> None:
        self.limit = pending_limit(server.max_pending_handshakes)
        self.full = _Episodes()
        self.pending = 0

    def full_now(self) -> bool:
        """Whether ``limit`` handshakes are in progress (logged, once per episode): accepting
        pauses until no more than :meth:`resume_at` are."""
        limit = self.limit
        if limit is None or self.pending < limit:
            return False
        self.full.begin(
            "%d handshakes in progress (max_pending_handshakes): accepting paused until %d are done",
            self.pending,
            self.pending - self.resume_at(),
        )
        return True

    def resume_at(self) -> int:
        limit = self.limit
        assert limit is not None
        return limit - max(1, limit // 8)


# ---------------------------------------------------------------------- in the reactor


class ReactorAcceptor(_PendingLimit, Handler):
    """Accepts connections on the listening socket inside the reactor, up to
    ``_ACCEPTS_PER_TURN`` per read event; each handshake is a :class:`_Handshake` handler of the
    same reactor.

    The handshakes the reactor watches (their request was not all there when accepted) share
    one timer for ``handshake_timeout``: they all have the same timeout, so ``waiting`` (a dict,
    in insertion order) is in the order of their deadlines, and the timer is set for the first.
    """

    def __init__(self, server: Listener, reactor: Reactor) -> None:
        super().__init__(server)
        self.server = server
        self.reactor = reactor
        self.backoff = _AcceptBackoff()
        self.timer: TimerHandle | None = None  # set while paused after accept() failed
        self.paused_full = False  # paused at max_pending_handshakes
        self.listening = False  # the listener is registered
        # TCP_NODELAY: set on the listener once; if the first connection inherited it (Linux
        # does), no connection needs its own setsockopt.
        self.nodelay = _is_tcp(server.sock)
        self.nodelay_inherited: bool | None = None  # not known before the first connection
        listener = server.sock
        # socket.accept() asks the listener's family and type as enums on every call: the
        # numbers are asked here once, and the accepted socket built from _accept()'s descriptor.
        self.raw_accept = type(listener) is socket.socket
        self.kind = (int(listener.family), int(listener.type), listener.proto)
        if self.nodelay:
            try:
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                logger.debug("TCP_NODELAY on the listener: %s", exc)
                self.nodelay_inherited = False
        self.waiting: dict[_Handshake, float] = {}  # watched handshakes -> their deadline
        # Reads at accept time that found nothing, in a row (up to _EAGER_MISSES), and the
        # connections since watched without one (see on_read).
        self.misses = 0
        self.skipped = 0
        self.sweep: TimerHandle | None = None  # for the first deadline in ``waiting``

    def start(self) -> None:
        self.listening = True
        self.reactor.add_handler(self.server.sock, self)
        self.reactor.start()

    def stop(self) -> None:
        self.reactor.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        if self.listening:
            self.listening = False
            self.reactor.remove_handler(self.server.sock)

    def join(self) -> None:
        pass

    def on_read(self) -> None:
        server = self.server
        listener = server.sock
        context = server.ssl_context
        limit = self.limit
        raw_accept = self.raw_accept
        family, kind, proto = self.kind
        for _ in range(_ACCEPTS_PER_TURN):
            if limit is not None and self.pending >= limit and self.full_now():
                self.paused_full = True
                self._update()
                return
            try:
                if raw_accept:
                    fd, peer = listener._accept()  # type: ignore[attr-defined]
                    sock = socket.socket(family, kind, proto, fd)
                else:
                    sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                    continue
                # accept() would fail again at once: stop watching the listener for a while.
                self.timer = self.reactor.call_later(self.backoff.failed(exc), self._resume)
                self._update()
                return
            if self.backoff.delay:
                self.backoff.succeeded()
            self.pending += 1
            self.reactor.counters.handshakes_pending += 1
            sock.setblocking(False)
            if self.nodelay and not self.nodelay_inherited:
                self._set_nodelay(sock, peer)
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except OSError as exc:  # the peer is already gone
                    logger.debug("TLS setup for %s failed: %s", peer, exc)
                    self.handshake_done()
                    sock.close()
                    continue
            # The request has often arrived by the time the connection is accepted: read it at
            # once, and watch the socket (with a timeout) only if it is not all there. When the
            # last reads found nothing (clients that send once connected, accepted at once), the
            # socket is watched without trying, but for a read now and then to see if that changed.
            handshake = _Handshake(self, sock, peer)
            read = True
            if self.misses >= _EAGER_MISSES:
                self.skipped += 1
                if self.skipped < _EAGER_PROBE:
                    read = False
                else:
                    self.skipped = 0
            try:
                if not read:
                    handshake._watch()
                    continue
                handshake.on_read()
            except Exception:
                logger.exception("error in the handshake with %s", peer)
                handshake.close()
                continue
            if handshake.watched:
                if self.misses < _EAGER_MISSES:
                    self.misses += 1
            elif self.misses:
                self.misses = 0

    def _set_nodelay(self, sock: socket.socket, peer: Any) -> None:
        """TCP_NODELAY on an accepted connection, unless it inherited it from the listener (asked
        of the first connection only)."""
        try:
            if self.nodelay_inherited is None:
                self.nodelay_inherited = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                if self.nodelay_inherited:
                    return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer is gone (EINVAL on some systems): the read says so
            logger.debug("TCP_NODELAY for %s: %s", peer, exc)

    def _resume(self) -> None:
        self.timer = None
        self._update()

    def handshake_done(self) -> None:
        """A handshake counted in ``pending`` ended (the reactor's thread)."""
        self.pending -= 1
        self.reactor.counters.handshakes_pending -= 1
        if self.paused_full and self.pending <= self.resume_at():
            self.paused_full = False
            self.full.end()
            self._update()

    def _update(self) -> None:
        """Watch the listener unless paused (or the server stopped)."""
        listen = self.timer is None and not self.paused_full and not self.server.stopped
        if listen != self.listening:
            self.listening = listen
            if listen:
                self.reactor.add_handler(self.server.sock, self)
            else:
                self.reactor.remove_handler(self.server.sock)

    # -- the handshake timeout

    def wait(self, handshake: _Handshake) -> None:
        """Close ``handshake`` if it is still waiting ``handshake_timeout`` seconds from now."""
        deadline = time.monotonic() + self.server.handshake_timeout
        self.waiting[handshake] = deadline
        if self.sweep is None:
            self.sweep = self.reactor.call_later(self.server.handshake_timeout, self._expire)

    def _expire(self) -> None:
        """Close the handshakes past their deadline; set the timer for the next deadline."""
        self.sweep = None
        waiting = self.waiting
        now = time.monotonic()
        expired = []
        for handshake, deadline in waiting.items():
            if deadline > now:
                break
            expired.append(handshake)
        for handshake in expired:
            handshake.close()  # leaves ``waiting``
        for deadline in waiting.values():
            self.sweep = self.reactor.call_later(max(deadline - now, 0.0), self._expire)
            break

    def on_write(self) -> None:
        pass

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None
        # the server closes its listening socket


class _Handshake(Handler):
    """One connection's opening handshake (its TLS handshake first, for ``wss://``), read and
    answered without blocking."""

    __slots__ = ("acceptor", "reactor", "sock", "peer", "data", "out", "watched", "events", "tls", "pending")

    def __init__(self, acceptor: ReactorAcceptor, sock: socket.socket, peer: Any = None) -> None:
        self.acceptor = acceptor
        self.reactor = acceptor.reactor
        self.sock = sock
        self.peer = peer
        self.data = b""
        self.out = b""
        self.watched = False  # the reactor watches the socket, within the handshake timeout
        self.events = 0
        self.tls = isinstance(sock, ssl.SSLSocket)  # its TLS handshake is still to do
        self.pending = True  # counted in the acceptor's handshakes in progress

    def _watch(self, events: int = EVENT_READ) -> None:
        """Have the reactor watch the socket for this handler, within the handshake timeout."""
        if not self.watched:
            self.watched = True
            self.acceptor.wait(self)
            self.reactor.add_handler(self.sock, self, events)
        elif events != self.events:
            self.reactor.set_handler_events(self.sock, self, events)
        self.events = events

    def _tls_handshake(self) -> bool:
        """Advance the TLS handshake; whether it is done."""
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._watch(EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._watch(EVENT_WRITE)
            return False
        except OSError as exc:  # ssl.SSLError (not TLS, bad version, bad certificate), a reset
            logger.debug("TLS handshake with %s failed: %s", self.peer, exc)
            self.close()
            return False
        self.tls = False
        return True

    def on_read(self) -> None:
        if self.tls and not self._tls_handshake():
            return
        acceptor = self.acceptor
        server = acceptor.server
        sock = self.sock
        try:
            chunk = sock.recv(server.options.max_header_size + 1)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            if not self.watched:
                self._watch()
            return
        except OSError:
            self.close()
            return
        if not chunk:
            self.close()
            return
        data = self.data = self.data + chunk if self.data else chunk
        decision = server.policy.respond(data, sock, self.peer, self.reactor)
        if decision is None:
            if not self.watched:
                self._watch()
            return
        if not isinstance(decision, Accept):
            if isinstance(decision, Reject):
                self.reactor.counters.refuse(decision.status)
            self.out = decision.to_bytes()
            self._watch(EVENT_WRITE)
            self.on_write()
            return
        self._done()
        response = decision.response
        if type(sock) is socket.socket:
            # The 101 goes out now, in one send (the socket is new: its buffer is empty), rather
            # than through the connection's output buffer on the reactor's next flush.
            try:
                sent = sock.send(response)
            except OSError:  # the reactor sends what is left, or meets the error again
                sent = 0
            response = response[sent:] if sent < len(response) else b""
        # The reactor takes the socket over from this handler (its registration is reused).
        self.reactor.add(decision.websocket, preamble=response, received=decision.received)

    def on_write(self) -> None:
        if self.tls:
            if self._tls_handshake():
                self.on_read()
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.close()

    def _done(self) -> None:
        """No longer a handshake in progress: uncounted, and out of the timeout's watch."""
        if self.pending:
            self.pending = False
            self.acceptor.handshake_done()
            if self.watched:
                self.acceptor.waiting.pop(self, None)

    def close(self) -> None:
        self._done()
        if self.watched:
            self.reactor.remove_handler(self.sock)
        self.sock.close()


# ---------------------------------------------------------------------- a thread each


class ThreadedAcceptor(_PendingLimit):
    """Accepts on a thread of its own; each connection's handshake runs on a thread of its own
    (blocking, within ``handshake_timeout``), then the websocket goes to the threaded manager."""

    def __init__(self, server: Listener, manager: ThreadedManager) -> None:
        super().__init__(server)
        self.server = server
        self.manager = manager
        self.thread: threading.Thread | None = None
        self.admitting = threading.Lock()  # max_connections: the check and the add, one at a time
        self.cond = threading.Condition()  # a handshake thread ended

    def start(self) -> None:
        self.manager.start()
        self.server.sock.setblocking(True)
        self.server.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, name="wsloop-accept", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        pass  # the loop sees the server stopped within 0.2 s

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def _accept_loop(self) -> None:
        server = self.server
        backoff = _AcceptBackoff()
        cond = self.cond
        nodelay = _is_tcp(server.sock)
        while not server.stopped:
            with cond:
                if self.full_now():
                    while self.pending > self.resume_at() and not server.stopped:
                        cond.wait(0.2)
                    self.full.end()
                    continue
            try:
                sock, _ = server.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if server.stopped:
                    return
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    server.wait_stopped(backoff.failed(exc))
                continue
            backoff.succeeded()
            if nodelay:
                _nodelay(sock)
            with cond:
                self.pending += 1
                self.manager.counters.handshakes_pending += 1
            try:
                threading.Thread(target=self._handshake_thread, args=(sock,), daemon=True).start()
            except RuntimeError:  # can't start new thread
                self._handshake_thread_ended()
                sock.close()
                server.wait_stopped(backoff.failed(OSError(errno.EAGAIN, "cannot start a thread")))

    def _handshake_thread(self, sock: socket.socket) -> None:
        try:
            self._handshake(sock)
        finally:
            self._handshake_thread_ended()

    def _handshake_thread_ended(self) -> None:
        with self.cond:
            self.pending -= 1
            self.manager.counters.handshakes_pending -= 1
            self.cond.notify()

    def _handshake(self, sock: socket.socket) -> None:
        server = self.server
        timeout = server.handshake_timeout
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        data = b""
        decision: Decision | None = None
        try:
            if server.ssl_context is not None:
                sock = server.ssl_context.wrap_socket(sock, server_side=True)
            while decision is None:
                # The whole request within handshake_timeout, not each read of it.
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(4096)
                if not chunk:
                    sock.close()
                    return
                data += chunk
                with self.admitting:
                    decision = server.policy.respond(data, sock, served=self.manager)
                    if isinstance(decision, Accept):
                        sock.settimeout(None)
                        self.manager.add(
                            decision.websocket, preamble=decision.response, received=decision.received
                        )
        except OSError:
            sock.close()
            return
        if not isinstance(decision, Accept):
            if isinstance(decision, Reject):
                self.manager.counters.refuse(decision.status)
            try:
                sock.sendall(decision.to_bytes())
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()
