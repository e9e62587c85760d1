"""A WebSocket server with no framework: accept, handshake and serve, all inside the reactor.

With the selectors poller the listening socket and every handshake in progress are watched by
the same reactor thread that serves the websockets (non-blocking, each handshake bounded by
``handshake_timeout``). With the threaded poller, a thread accepts and each connection gets a
thread. A plain ``GET /`` (no upgrade) serves a small demo page that talks to the server.

With an ``ssl_context`` (or ``certfile``/``keyfile``) the server speaks ``wss://``: each accepted
socket's TLS handshake is done without blocking in the reactor, bounded by the same
``handshake_timeout``, and a failed one closes only that socket.

Accepting is bounded: while ``max_pending_handshakes`` connections wait for their handshake,
accepting pauses (new connections wait in the listen backlog), and when ``accept()`` fails for
want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the listener is paused for a back-off of
0.1 s doubling to 1 s; one warning per episode either way, and the connections already open are
served meanwhile.
"""

from __future__ import annotations

import errno
import importlib.resources
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..brokers import Broker, make_broker
from ..deflate import DeflateOptions, choose
from ..exc import HandshakeError
from ..handshake import MAX_HEADER_SIZE, Request, accept, error_response, http_response, parse_request
from ..poller import Reactor, ThreadedManager, make_manager
from ..poller.reactor import EVENT_READ, EVENT_WRITE, Handler
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..transport import TimerHandle
from ..websocket import EchoWebSocket, WebSocket
from .limits import (
    ACCEPT_BACKOFF_MAX,
    ACCEPT_BACKOFF_MIN,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    check_capacity,
    pending_limit,
)

__all__ = ["WebSocketServer", "demo_page", "serve", "tls_context"]

logger = logging.getLogger("wsloop.server")

_ACCEPTS_PER_TURN = 256
_intern = sys.intern

# accept() errors that concern one connection only (it was reset before it was accepted): the
# next one is accepted at once. Any other error (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) would
# recur at once: the listener is paused (_AcceptBackoff).
_TRANSIENT_ACCEPT_ERRORS = frozenset(
    {errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EAGAIN, errno.EINTR, errno.EPERM}
)


def demo_page() -> bytes:
    """The built-in HTML page served at ``/``."""
    return importlib.resources.files("wsloop").joinpath("static/demo.html").read_bytes()


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server TLS context for a PEM certificate chain and its key (in ``certfile`` when
    ``keyfile`` is None): TLS 1.2 or later, renegotiation off (it would make a non-blocking
    write wait for a read), ALPN ``http/1.1``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile, keyfile)
    return context


def request_environ(request: Request, sock: socket.socket, peer: Any = None) -> dict[str, Any]:
    """A WSGI-style environ for a handshake request, as ws4py handlers expect in ``environ``.

    ``peer`` is the client's address if known (``accept()`` gives it), else it is asked of
    ``sock``. Every string but the key is interned: the names and most values are the same on
    every connection, and an environ is kept for as long as its connection is open.
    """
    path, _, query = request.path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": _intern(request.method),
        "PATH_INFO": _intern(path),
        "QUERY_STRING": _intern(query),
        "SERVER_PROTOCOL": _intern(request.version),
    }
    if peer is None:
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
    if peer:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = _intern(str(peer[0])), str(peer[1])
    if isinstance(sock, ssl.SSLSocket):
        environ["wsgi.url_scheme"] = "https"
    for name, value in request.headers.items():
        environ[_environ_key(name)] = value if name == "sec-websocket-key" else _intern(value)
    return environ


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    return key if key is not None else _intern("HTTP_" + name.upper().replace("-", "_"))


_ENVIRON_KEYS = {
    name: _intern("HTTP_" + name.upper().replace("-", "_"))
    for name in (
        "host",
        "upgrade",
        "connection",
        "origin",
        "user-agent",
        "pragma",
        "cache-control",
        "accept-encoding",
        "accept-language",
        "cookie",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    )
}


class WebSocketServer:
    """Serve ``handler_cls`` websockets on ``host:port``.

    :param poller: ``"selectors"`` (one reactor thread) or ``"threaded"`` (a thread each).
    :param protocols: subprotocols the server speaks, by preference.
    :param heartbeat_freq: seconds between keepalive pings (None: no pings).
    :param max_message_size: largest message accepted (None: unlimited); larger ones get 1009.
    :param compression: permessage-deflate: False never, True the handler class's policy
        (``handler_cls.compression``), or a :class:`~wsloop.deflate.DeflateOptions` of its own.
    :param handshake_timeout: seconds a client has to send its whole upgrade request.
    :param close_timeout: seconds to wait for the peer's close frame (each websocket's
        ``close_timeout``), and for the closing handshakes when the server stops.
    :param serve_page: answer a plain ``GET /`` with the demo page.
    :param max_connections: websockets served at once (None: no limit); an upgrade beyond it is
        answered ``503 Service Unavailable`` with ``Retry-After: 1``.
    :param idle_timeout: close with 1001 a websocket that receives nothing for this many
        seconds (None: the handler class's ``idle_timeout``, by default never).
    :param max_header_size: largest request head (request line and headers) in bytes; a larger
        one is answered ``431 Request Header Fields Too Large``.
    :param max_pending_handshakes: connections accepted whose opening handshake (TLS, then HTTP)
        is not done yet (None: no limit; at most half the open-file limit either way, see
        :func:`~wsloop.servers.limits.pending_limit`). At the limit accepting pauses (new
        connections wait in the listen backlog, ``backlog``) until an eighth of them are done,
        with one warning per episode. With the threaded poller it also bounds the handshake
        threads.
    :param ssl_context: serve ``wss://`` with this server-side context.
    :param certfile: serve ``wss://`` with this PEM certificate chain (and ``keyfile``, unless
        the key is in ``certfile``), through :func:`tls_context`.
    :param sock: a listening socket to serve on instead of binding ``host:port`` (a worker of
        :mod:`wsloop.workers` gets one); the server closes it when it stops.
    :param broker: join the reactor to this :class:`~wsloop.brokers.Broker` (selectors poller
        only): ``broadcast()`` and channels then reach every process joined to it.
    :param max_buffered: the reactor's cap on the unsent output of a connection whose peer
        does not keep up (see :class:`~wsloop.poller.Reactor`; None: its default, 16 MiB); past
        it the connection is reset and reported ``closed(1008)``. Not used with ``manager`` or
        the threaded poller.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        handler_cls: type[WebSocket] = EchoWebSocket,
        *,
        poller: str = "selectors",
        protocols: Sequence[str] | None = None,
        heartbeat_freq: float | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        compression: bool | DeflateOptions = True,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        close_timeout: float = 5.0,
        backlog: int = 1024,
        serve_page: bool = True,
        manager: Reactor | ThreadedManager | None = None,
        max_connections: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        sock: socket.socket | None = None,
        broker: Broker | None = None,
        idle_timeout: float | None = None,
        max_header_size: int = MAX_HEADER_SIZE,
        max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
        max_buffered: int | None = None,
    ) -> None:
        if ssl_context is None and certfile is not None:
            ssl_context = tls_context(certfile, keyfile)
        self.ssl_context = ssl_context
        self.handler_cls = handler_cls
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_header_size = max_header_size
        self.protocols = list(protocols) if protocols else None
        self.heartbeat_freq = heartbeat_freq
        self.max_message_size = max_message_size
        self.compression = choose(handler_cls.compression, compression)
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.serve_page = serve_page
        self.manager = manager if manager is not None else make_manager(
            poller, close_timeout=close_timeout, max_buffered=max_buffered
        )
        if broker is not None:
            if not isinstance(self.manager, Reactor):
                raise ValueError("a broker needs the selectors poller")
            self.manager.use_broker(broker)
        self.sock = sock if sock is not None else socket.create_server((host, port), backlog=backlog)
        self.sock.setblocking(False)
        self._stopped = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._admitting = threading.Lock()  # threaded poller: handshake threads' admissions
        self._started = False
        self.max_pending_handshakes = max_pending_handshakes
        self._pending_limit = pending_limit(max_pending_handshakes)
        self._pending = 0  # handshakes in progress (the reactor's thread, or under _pending_cond)
        self._pending_cond = threading.Condition()  # threaded poller: a handshake thread ended
        self._full = _Episodes()  # accepting paused at max_pending_handshakes
        self._acceptor: _Acceptor | None = None

    @property
    def server_address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]  # type: ignore[no-any-return]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"{'wss' if self.ssl_context else 'ws'}://{host}:{port}/"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start serving in the background."""
        if self._started:
            return
        self._started = True
        manager = self.manager
        if isinstance(manager, Reactor):
            self._acceptor = _Acceptor(self, manager)
            manager.add_handler(self.sock, self._acceptor)
            manager.start()
        else:
            manager.start()
            self.sock.setblocking(True)
            self.sock.settimeout(0.2)
            self._accept_thread = threading.Thread(
                target=self._accept_loop, name="wsloop-accept", daemon=True
            )
            self._accept_thread.start()

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called (from another thread or a signal handler)."""
        self.start()
        while not self._stopped.wait(0.5):
            pass

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, close every websocket with 1001 (waiting up to ``timeout`` for the
        closing handshakes), and release every socket."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        manager = self.manager
        if isinstance(manager, Reactor) and self._started:
            manager.call_soon_threadsafe(manager.remove_handler, self.sock)
        manager.stop(timeout)
        if self._accept_thread is not None:
            self._accept_thread.join()
        self.sock.close()

    def __enter__(self) -> WebSocketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ handshake

    def respond(
        self, data: bytes, sock: socket.socket, peer: Any = None
    ) -> tuple[WebSocket | None, bytes, bytes] | None:
        """Answer the request at the start of ``data``: ``None`` while it is incomplete, else
        ``(websocket or None, response bytes, bytes received after the request)``; ``peer`` is
        the client's address if known."""
        try:
            parsed = parse_request(data, self.max_header_size)
            if parsed is None:
                return None
            request, length = parsed
            if not request.is_upgrade and request.method in ("GET", "HEAD"):
                if request.path.partition("?")[0] == "/" and self.serve_page:
                    page = demo_page()
                    response = http_response(200, page, "text/html; charset=utf-8")
                    if request.method == "HEAD":
                        response = response[: len(response) - len(page)]
                    return None, response, b""
                raise HandshakeError("this is a WebSocket endpoint: send an Upgrade request")
            accepted = accept(request, self.protocols, self.compression, policy=self.handler_cls)
            check_capacity(self.manager, self.max_connections)
        except HandshakeError as exc:
            logger.debug("handshake refused (%s %s)", exc.status, exc.reason)
            return None, error_response(exc), b""
        try:
            ws = self.handler_cls(
                sock,
                protocols=[accepted.subprotocol] if accepted.subprotocol else None,
                extensions=accepted.extensions or None,
                environ=request_environ(request, sock, peer),
                heartbeat_freq=self.heartbeat_freq,
                max_message_size=self.max_message_size,
                deflate=accepted.deflate,
                idle_timeout=self.idle_timeout,
            )
        except Exception:  # the user's constructor: log it, answer 500, keep serving
            logger.exception("error creating %s", self.handler_cls.__name__)
            return None, http_response(500, b"internal server error\n"), b""
        ws.close_timeout = self.close_timeout
        return ws, accepted.response, data[length:]

    # ------------------------------------- accepting (both pollers), threaded mode

    def _full_now(self) -> bool:
        """Whether ``max_pending_handshakes`` handshakes are in progress (logged, once per
        episode): accepting pauses until no more than :meth:`_resume_at` are."""
        limit = self._pending_limit
        if limit is None or self._pending < limit:
            return False
        self._full.begin(
            "%d handshakes in progress (max_pending_handshakes): accepting paused until %d are done",
            self._pending,
            self._pending - self._resume_at(),
        )
        return True

    def _resume_at(self) -> int:
        limit = self._pending_limit
        assert limit is not None
        return limit - max(1, limit // 8)

    def _handshake_done(self) -> None:
        """A handshake counted in ``_pending`` ended (the reactor's thread)."""
        self._pending -= 1
        if self._acceptor is not None:
            self._acceptor.handshake_done()

    def _accept_loop(self) -> None:
        backoff = _AcceptBackoff()
        cond = self._pending_cond
        while not self._stopped.is_set():
            with cond:
                if self._full_now():
                    while self._pending > self._resume_at() and not self._stopped.is_set():
                        cond.wait(0.2)
                    self._full.end()
                    continue
            try:
                sock, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopped.is_set():
                    return
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    self._stopped.wait(backoff.failed(exc))
                continue
            backoff.succeeded()
            with cond:
                self._pending += 1
            try:
                threading.Thread(target=self._handshake_thread, args=(sock,), daemon=True).start()
            except RuntimeError:  # can't start new thread
                self._handshake_thread_ended()
                sock.close()
                self._stopped.wait(backoff.failed(OSError(errno.EAGAIN, "cannot start a thread")))

    def _handshake_thread(self, sock: socket.socket) -> None:
        try:
            self._handshake_blocking(sock)
        finally:
            self._handshake_thread_ended()

    def _handshake_thread_ended(self) -> None:
        with self._pending_cond:
            self._pending -= 1
            self._pending_cond.notify()

    def _handshake_blocking(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + self.handshake_timeout
        sock.settimeout(self.handshake_timeout)
        data = b""
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            while True:
                # The whole request within handshake_timeout, not each read of it.
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(4096)
                if not chunk:
                    sock.close()
                    return
                data += chunk
                with self._admitting:  # max_connections: the check and the add, one at a time
                    answer = self.respond(data, sock)
                    if answer is not None and answer[0] is not None:
                        sock.settimeout(None)
                        self.manager.add(answer[0], preamble=answer[1], received=answer[2])
                if answer is not None:
                    break
        except OSError:
            sock.close()
            return
        ws, response, rest = answer
        if ws is None:
            try:
                sock.sendall(response)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()


class _Acceptor(Handler):
    """Accepts connections on the listening socket inside the reactor."""

    def __init__(self, server: WebSocketServer, reactor: Reactor) -> None:
        self.server = server
        self.reactor = reactor
        self.backoff = _AcceptBackoff()
        self.timer: TimerHandle | None = None  # set while paused after accept() failed
        self.full = False  # paused at max_pending_handshakes
        self.listening = True  # the listener is registered (the server registers it first)

    def on_read(self) -> None:
        server = self.server
        listener = server.sock
        for _ in range(_ACCEPTS_PER_TURN):
            if server._full_now():
                self.full = True
                self._update()
                return
            try:
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
            self.backoff.succeeded()
            server._pending += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = self.server.ssl_context
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except OSError as exc:  # the peer is already gone
                    logger.debug("TLS setup for %s failed: %s", peer, exc)
                    server._handshake_done()
                    sock.close()
                    continue
            # The request has often arrived by the time the connection is accepted: read it at
            # once, and watch the socket (with a timeout) only if it is not all there.
            handshake = _Handshake(server, self.reactor, sock, peer)
            try:
                handshake.on_read()
            except Exception:
                logger.exception("error in the handshake with %s", peer)
                handshake.close()

    def _resume(self) -> None:
        self.timer = None
        self._update()

    def handshake_done(self) -> None:
        if self.full and self.server._pending <= self.server._resume_at():
            self.full = False
            self.server._full.end()
            self._update()

    def _update(self) -> None:
        """Watch the listener unless paused (or the server stopped)."""
        listen = self.timer is None and not self.full and not self.server._stopped.is_set()
        if listen != self.listening:
            self.listening = listen
            if listen:
                self.reactor.add_handler(self.server.sock, self)
            else:
                self.reactor.remove_handler(self.server.sock)

    def on_write(self) -> None:
        pass

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # the server closes its listening socket


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


class _Handshake(Handler):
    """One connection's opening handshake (its TLS handshake first, for ``wss://``), read and
    answered without blocking."""

    __slots__ = ("server", "reactor", "sock", "peer", "data", "out", "timer", "events", "tls", "pending")

    def __init__(
        self, server: WebSocketServer, reactor: Reactor, sock: socket.socket, peer: Any = None
    ) -> None:
        self.server = server
        self.reactor = reactor
        self.sock = sock
        self.peer = peer
        self.data = b""
        self.out = b""
        self.timer: TimerHandle | None = None  # set once the socket is watched
        self.events = 0
        self.tls = isinstance(sock, ssl.SSLSocket)  # its TLS handshake is still to do
        self.pending = True  # counted in the server's handshakes in progress

    def _watch(self, events: int = EVENT_READ) -> None:
        """Have the reactor watch the socket for this handler, within the handshake timeout."""
        if self.timer is None:
            self.timer = self.reactor.call_later(self.server.handshake_timeout, self.close)
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
        try:
            chunk = self.sock.recv(self.server.max_header_size + 1)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            if self.timer is None:
                self._watch()
            return
        except OSError:
            self.close()
            return
        if not chunk:
            self.close()
            return
        self.data += chunk
        answer = self.server.respond(self.data, self.sock, self.peer)
        if answer is None:
            if self.timer is None:
                self._watch()
            return
        ws, response, rest = answer
        if ws is None:
            self.out = response
            self._watch(EVENT_WRITE)
            self.on_write()
            return
        if self.timer is not None:
            self.timer.cancel()
        self._done()
        # The reactor takes the socket over from this handler (its registration is reused).
        self.reactor.add(ws, preamble=response, received=rest)

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
        if self.pending:
            self.pending = False
            self.server._handshake_done()

    def close(self) -> None:
        self._done()
        if self.timer is not None:
            self.timer.cancel()
            self.reactor.remove_handler(self.sock)
        self.sock.close()


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
    poller: str = "selectors",
    max_connections: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    sock: socket.socket | None = None,
    broker: str | Broker | None = None,
    idle_timeout: float | None = None,
    close_timeout: float = 5.0,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = MAX_HEADER_SIZE,
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
    max_buffered: int | None = None,
    started: Callable[[WebSocketServer], None] | None = None,
) -> None:
    """Serve ``handler_cls`` until ``stop`` is set, then close all with 1001 (the CLI's entry).

    ``sock``: a listening socket to use instead of binding ``host:port``. ``broker``: a
    :class:`~wsloop.brokers.Broker` or a URL (``redis://host:port/db``; such a broker is made
    here and closed at the end); ``ready`` is called once its subscriptions are in effect, or
    after 5 s without them (logged; local clients are served meanwhile). ``started(server)``,
    if given, is called once the server has started, before ``ready``.
    """
    joined = make_broker(broker)
    server = WebSocketServer(
        host,
        port,
        handler_cls,
        sock=sock,
        broker=joined,
        poller=poller,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        close_timeout=close_timeout,
        handshake_timeout=handshake_timeout,
        max_header_size=max_header_size,
        max_pending_handshakes=max_pending_handshakes,
        max_buffered=max_buffered,
        ssl_context=ssl_context,
        heartbeat_freq=heartbeat_freq,
        max_message_size=max_message_size,
        compression=compression,
    )
    server.start()
    if started is not None:
        started(server)
    if joined is not None and not joined.wait_ready(5.0):
        logger.warning("%r: subscriptions not in effect after 5 s; serving local clients meanwhile", joined)
    ready(server.url)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if joined is not None and joined is not broker:
            joined.close()
