"""gevent's WSGI server with WebSocket support (ws4py's ``geventserver`` names).

Usage, as in ws4py's docs::

    from gevent import monkey; monkey.patch_all()
    from wsloop.websocket import EchoWebSocket
    from wsloop.servers.geventserver import WSGIServer
    from wsloop.servers.wsgiutils import WebSocketWSGIApplication

    server = WSGIServer(('localhost', 9000), WebSocketWSGIApplication(handler_cls=EchoWebSocket))
    server.serve_forever()

When the WSGI application upgrades a request, :class:`WebSocketWSGIHandler` detaches the socket
from gevent and hands it, the 101 and any bytes gevent's reader already took to the server's
reactor (a greenlet once monkey-patched, else a thread). Patch before importing ``wsloop``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from gevent import monkey, pywsgi  # type: ignore[import-untyped]
from gevent import sleep as gevent_sleep
from gevent.event import Event as GeventEvent  # type: ignore[import-untyped]
from gevent.pool import Pool  # type: ignore[import-untyped]

from .. import format_addresses
from ..poller import Reactor
from ..upgrade import DEFAULT_HANDSHAKE_TIMEOUT, ServeOptions
from ..websocket import WebSocket
from .running import listen_url, run_until_stopped
from .wsgiutils import WebSocketWSGIApplication

__all__ = ["WSGIServer", "WebSocketWSGIHandler", "GEventWebSocketPool", "serve"]

logger = logging.getLogger("wsloop.server.gevent")

#: The standard library's socket class, even when gevent has patched ``socket.socket``: the
#: reactor only makes non-blocking calls and waits in its own selector (gevent's, once patched).
_StdSocket: type[socket.socket] = monkey.get_original("socket", "socket")


class WebSocketWSGIHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """gevent's WSGI handler that hands upgraded connections to the server's reactor."""

    server: WSGIServer
    socket: Any  # gevent's socket (None once handed over)
    headers_sent: bool
    _shadow: socket.socket | None = None  # a standard socket over our fd, for environ (unpatched)
    _websocket: WebSocket | None = None  # upgraded by the application, not yet handed over

    def handle(self) -> None:
        timeout = self.server.handshake_timeout
        if timeout is not None and self.socket is not None:
            self.socket.settimeout(timeout)  # each read of a request (gevent sets none)
        super().handle()

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, TimeoutError):  # a request that stalled: drop it, no traceback
            logger.debug("handshake timeout: dropping %s", self.client_address)
            return None
        return super()._handle_client_error(ex)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ["wsloop.manager"] = self.server.manager  # for max_connections
        sock = self.socket
        if self.server.ssl_enabled:
            return environ  # no socket: WebSocketWSGIApplication answers 500
        if not isinstance(sock, socket.socket) and self._connection_upgrade_requested():
            # gevent's socket is a socket.socket only once monkey-patched; the application wants
            # one. This object shares our file descriptor; it is detached again, or becomes the
            # reactor's socket once gevent has let go of the descriptor.
            self._drop_shadow()
            sock = self._shadow = _StdSocket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
        environ["wsloop.socket"] = environ["ws4py.socket"] = sock
        return environ

    def process_result(self) -> None:
        environ = self.environ
        ws = environ.get("wsloop.websocket") or environ.get("ws4py.websocket")
        if isinstance(ws, WebSocket) and self.code == 101 and not self.headers_sent:
            # Nothing is written here: the reactor sends the 101 as the connection's first bytes.
            response = environ.get("wsloop.response")
            self.response_length = len(response) if isinstance(response, bytes) else 0  # for the log
            self.headers_sent = True
            self.close_connection = True
            self._websocket = ws
            return
        if self.code != 101 and self._connection_upgrade_requested():
            # A refused upgrade (400, 401, 403, ...): close after the answer as the other servers
            # do; a client may already have sent frames, not another request.
            self.close_connection = True
        super().process_result()

    def handle_one_response(self) -> None:
        try:
            super().handle_one_response()
            ws = self._websocket
            if ws is not None and self.code == 101 and self.socket is not None:
                self._websocket = None
                self._hand_over(ws)
        finally:
            self._websocket = None
            self._drop_shadow()

    def _drop_shadow(self) -> None:
        shadow = self._shadow
        if shadow is not None:
            self._shadow = None
            shadow.detach()  # the descriptor stays gevent's

    def _upgrade_response(self) -> bytes:
        response = self.environ.pop("wsloop.response", None)
        if isinstance(response, bytes):
            return response
        # An application other than ours: the status and headers it gave start_response.
        head = bytearray(b"HTTP/1.1 " + self.status + b"\r\n")
        for name, value in self.response_headers:
            head += name + b": " + value + b"\r\n"
        return bytes(head + b"\r\n")

    def _hand_over(self, ws: WebSocket) -> None:
        """Take the connection away from gevent and give it to the server's reactor."""
        environ = self.environ
        response = self._upgrade_response()
        for key in ("wsloop.socket", "ws4py.socket"):
            environ.pop(key, None)
        gsock = self.socket
        family, type_, proto = gsock.family, gsock.type, gsock.proto
        # What gevent's buffered reader took beyond the request head (a frame pipelined with
        # the request): non-blocking, so an empty buffer costs one EAGAIN, not a wait.
        gsock.setblocking(False)
        try:
            received = self.rfile.read1(65536) or b""
        except OSError:  # BlockingIOError from an empty buffer; any error: the reactor sees it
            received = b""
        self.rfile.close()
        # Detach rather than dup: gevent drops its watchers and forgets the descriptor, so its
        # close after this handler returns is a no-op and the reactor owns the one descriptor.
        # (A dup works too, but when gevent had waited on the original, closing it leaves a stale
        # registration in libev's epoll set, which libev repairs by rebuilding the whole set.)
        self.socket = None  # handle() then skips its drain-and-close of the socket
        fd = gsock.detach()
        sock, self._shadow = self._shadow, None
        if sock is None:
            sock = _StdSocket(family, type_, proto, fileno=fd)
        ws.sock = sock
        self.server.link_websocket_to_server(ws, response, received)


class GEventWebSocketPool(Pool):  # type: ignore[misc]
    """A gevent pool of websockets, each run (:meth:`WebSocket.run`) in a greenlet of its own
    (ws4py's name). :meth:`clear` starts every websocket's closing handshake (1001).

    :class:`WSGIServer` serves the websockets it upgrades on its reactor, not here; its
    ``pool`` is for websockets an application runs itself (``server.pool.track(ws)``), and it
    is cleared when the server stops. Use it monkey-patched, as ws4py's docs do: unpatched,
    ``run()`` blocks gevent's hub while it waits.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._websockets: dict[Any, WebSocket] = {}  # greenlet -> the websocket it runs

    def track(self, websocket: WebSocket) -> Any:
        """Run ``websocket`` in a new greenlet of the pool, and return that greenlet."""
        logger.info("Managing websocket %s", format_addresses(websocket))
        greenlet = self.spawn(websocket.run)
        self._websockets[greenlet] = websocket
        greenlet.link(self._forget)
        return greenlet

    def _forget(self, greenlet: Any) -> None:
        self._websockets.pop(greenlet, None)

    def clear(self) -> None:
        """Close every tracked websocket with 1001 and stop tracking it (its greenlet runs on
        until the closing handshake ends). Other greenlets of the pool (a server's request
        handlers, when the pool is also its ``spawn`` pool) stay."""
        logger.info("Terminating server and all connected websockets")
        for greenlet, websocket in list(self._websockets.items()):
            del self._websockets[greenlet]
            try:
                websocket.close(1001, "Server is shutting down")
            except Exception:  # a connection already gone: nothing to close
                logger.debug("closing %r", websocket, exc_info=True)
            finally:
                self.discard(greenlet)


class WSGIServer(pywsgi.WSGIServer):  # type: ignore[misc]
    """gevent's ``pywsgi.WSGIServer`` whose upgraded connections are served by a wsloop reactor.

    Takes gevent's arguments (``WSGIServer(listener, application, ...)``), ``manager=``: the
    :class:`~wsloop.poller.Reactor` to use (a new one by default), and ``handshake_timeout=``:
    seconds a read of a request may wait before the client is dropped (None: for ever, as gevent
    does). The reactor starts with the server (:meth:`start`, :meth:`serve_forever`).
    ``pool``: a :class:`GEventWebSocketPool` for websockets the application runs itself,
    cleared by :meth:`stop`; with ``spawn=N`` it is also gevent's pool of N request handlers
    (ws4py replaced gevent's pool, which lost the limit's resumption and stop()'s join); with
    a ``spawn`` pool of the caller's, ``pool`` stays that pool.
    """

    handler_class = WebSocketWSGIHandler
    pool: Any  # a GEventWebSocketPool, or the caller's own spawn pool

    def __init__(
        self,
        *args: Any,
        manager: Reactor | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        args, kwargs = _websocket_pool_spawn(args, kwargs)
        super().__init__(*args, **kwargs)
        if self.pool is None:  # gevent spawns plain greenlets: the pool is for websockets only
            self.pool = GEventWebSocketPool()
        self.handshake_timeout = handshake_timeout
        self.manager: Reactor = manager if manager is not None else Reactor()
        self._reactor_started = False
        self._reactor_stopping = False
        self._reactor_stopped = GeventEvent()

    def start(self) -> None:
        """Listen, and start the reactor (a greenlet once monkey-patched, else a thread)."""
        if self._reactor_stopping:  # started again after stop(): a fresh reactor
            self.manager = Reactor()
            self._reactor_started = self._reactor_stopping = False
            self._reactor_stopped = GeventEvent()
        super().start()
        if not self._reactor_started:
            self._reactor_started = True
            self.manager.start()

    def link_websocket_to_server(self, ws: WebSocket, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``ws`` (its socket upgraded, ``preamble`` not yet sent) with the reactor."""
        if self._reactor_stopping or not self._reactor_started:
            if ws.sock is not None:
                ws.sock.close()  # stopping: the upgrade is dropped
            return
        self.manager.add(ws, preamble=preamble, received=received)

    def stop(self, *args: Any, **kwargs: Any) -> None:
        """Stop accepting, clear :attr:`pool`, close every websocket with 1001 and release every
        socket (waiting up to ``timeout``, default the reactor's ``close_timeout``, for the
        closing handshakes), then stop gevent's server: ``stop(timeout=None)`` as gevent's, whose
        arguments pass on to it."""
        timeout: float | None = args[0] if args else kwargs.get("timeout")
        if isinstance(self.pool, GEventWebSocketPool):
            self.pool.clear()
        self.close()  # no new connection while the websockets close
        if not self._reactor_stopping:
            self._reactor_stopping = True
            try:
                self.manager.stop(timeout)  # never started: releases its selector and sockets
            finally:
                self._reactor_stopped.set()
        elif not self.manager.in_loop():
            self._reactor_stopped.wait()  # another greenlet is stopping it: wait for the end
        super().stop(*args, **kwargs)


def _websocket_pool_spawn(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """gevent's arguments with ``spawn=N`` (the 4th positional one) made a
    :class:`GEventWebSocketPool` of N, which gevent then uses as its pool."""
    if len(args) > 3:
        if isinstance(args[3], int):
            args = (*args[:3], GEventWebSocketPool(args[3]), *args[4:])
    elif isinstance(kwargs.get("spawn"), int):
        kwargs = {**kwargs, "spawn": GEventWebSocketPool(kwargs["spawn"])}
    return args, kwargs


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
    """Serve ``handler_cls`` websockets on ``host:port`` with gevent until ``stop`` is set;
    ``options`` and ``option_kwargs`` as :class:`~wsloop.upgrade.ServeOptions` takes them.

    ``ready(url)`` is called once the server listens (``port`` 0 picks a free port). When
    ``stop`` is set, every websocket is closed with 1001 and every socket released. Works with
    and without ``gevent.monkey.patch_all()``. Installs no signal handler; gevent's access log
    goes to this module's logger at DEBUG level, its error log at ERROR level. ``stop`` is polled
    with gevent's sleep: a real ``threading.Event.wait()`` would block the hub, and a patched one
    waits with no timer in gevent's loop (a signal handler setting ``stop`` would run only at
    the next event).
    """
    app = WebSocketWSGIApplication(handler_cls=handler_cls, options=ServeOptions.of(options, **option_kwargs))
    options = app.policy.options
    server = WSGIServer(
        (host, port),
        app,
        manager=Reactor(close_timeout=app.policy.close_timeout, max_buffered=options.max_buffered),
        handshake_timeout=options.handshake_timeout,
        backlog=1024,
        log=pywsgi.LoggingLogAdapter(logger, logging.DEBUG),
        error_log=pywsgi.LoggingLogAdapter(logger, logging.ERROR),
    )
    server.start()
    url = listen_url((server.server_host, server.server_port))
    run_until_stopped(stop, ready, url, server.stop, sleep=gevent_sleep, health=options.health)
