"""CherryPy integration: ws4py's ``WebSocketTool`` and ``WebSocketPlugin`` over the wsloop reactor.

Usage, as in ws4py (only the imports change)::

    import cherrypy
    from wsloop.servers.cherrypyserver import WebSocketPlugin, WebSocketTool
    from wsloop.websocket import EchoWebSocket

    WebSocketPlugin(cherrypy.engine).subscribe()
    cherrypy.tools.websocket = WebSocketTool()

    class Root:
        @cherrypy.expose
        def ws(self):
            handler = cherrypy.request.ws_handler   # the WebSocket instance

    cherrypy.quickstart(Root(), "/", config={"/ws": {"tools.websocket.on": True,
                                                     "tools.websocket.handler_cls": EchoWebSocket}})

Per-path options: ``tools.websocket.handler_cls`` (a :class:`~wsloop.websocket.WebSocket`
subclass; the default does nothing), ``protocols`` (subprotocols spoken, by preference),
``heartbeat_freq`` (seconds between keepalive pings), ``max_message_size`` (bytes; ``None``: no
limit; default: the handler class's), ``idle_timeout`` and ``close_timeout`` (seconds; default:
the handler class's) and ``passthrough`` (let a plain ``GET``/``HEAD`` that asks
for no upgrade at all reach the page handler, with ``cherrypy.request.ws_handler = None``; without
it such a request gets a 400). A request that is not a valid upgrade gets the status the standalone
server gives (400 with a one-line reason; 426 with ``Sec-WebSocket-Version: 13`` for another
version) as a short ``text/plain`` answer, and the page handler does not run.

How the socket leaves CherryPy
------------------------------

One upgrade request runs like any other CherryPy request, on a cheroot worker thread:

1. ``before_request_body`` (the tool, priority 50 as in ws4py): the request is validated with
   :func:`wsloop.handshake.accept`; the response becomes ``101 Switching Protocols`` with the
   headers ``accept()`` produced; the handler is created (``cherrypy.request.ws_handler``); the
   request body is not read; and cheroot's own request object (found up the call stack, as ws4py
   did: CherryPy exposes no reference to it) gets ``close_connection = True``, so cheroot neither
   reads "the rest of the body" from the socket nor keeps the connection for another request.
2. The page handler runs (what it returns is dropped: a 1xx has no body; if it raises or sets
   another status, that answer goes out without the upgrade's headers and nothing is handed
   over). Then cheroot writes the 101 through its blocking, unbuffered writer: by the time
   CherryPy runs its ``on_end_request`` hooks the whole 101 is in the kernel. CherryPy/cheroot add
   only ``Date`` and ``Server`` to it (a 1xx never gets ``Content-Length`` or chunked coding).
3. ``on_end_request`` (the hand-over), only if cheroot really sent the 101. The bytes cheroot has
   already buffered beyond the request head (a client may send its first frame right behind its
   request) are taken out of cheroot's reader; the file descriptor is *detached* from cheroot's
   socket object (``socket.detach()``) and wrapped in a new socket object that becomes the
   handler's ``sock``; cheroot's connection is marked ``linger`` so it does not even try to
   ``shutdown()`` its (now empty) socket object. Then ``handle-websocket`` is published on the
   bus with ``(handler, (ip, port))``, as ws4py does, and the plugin adds the websocket to its
   reactor with those buffered bytes as ``received=``.
4. cheroot's ``communicate()`` returns at once (connection not kept alive), and the worker thread
   goes back to the pool. Its ``close()`` only closes cheroot's reader.

Why detach rather than ``os.dup()``: there is never a second descriptor for the connection, so
nothing can send a FIN behind the reactor's back (``shutdown()`` acts on the connection, not on
one descriptor), nothing delays a close until a garbage collection (cheroot's connection object
lives in a reference cycle), and any late use of the socket by cheroot fails with ``EBADF`` on its
own empty object instead of touching the websocket. Why let cheroot write the 101 rather than
the reactor's ``preamble=``: the response then goes through CherryPy's normal machinery, so headers
other tools and the page handler add (cookies, for instance) are part of it, the access log shows
the 101, and cheroot is never left holding a response it believes it still has to write. Because
the 101 is written synchronously before the hand-over, the reactor's first frame (from
``opened()``, or a message the page handler sent through ``ws_handler``) always follows it.

TLS (``server.ssl_module = "builtin"``): the connection's ``ssl.SSLSocket`` cannot be detached
from its TLS session, so that object itself becomes the handler's ``sock`` (cheroot, lingering,
never closes it) and the reactor serves it with a ``TLSConnection``. cheroot's pyOpenSSL adapter
is not supported: an upgrade over it gets a 501.

:class:`WebSocketPlugin` runs one :class:`~wsloop.poller.Reactor` (its ``manager``) from the
engine's ``start`` to its ``stop``; at ``stop`` (and so at ``engine.exit()``) every websocket is
closed with 1001, the closing handshakes get up to ``close_timeout`` seconds, and every socket is
released. :func:`serve` runs a whole CherryPy server for the command line.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import cherrypy  # type: ignore[import-untyped]
from cheroot.server import HTTPRequest as _CherootRequest
from cherrypy.process import plugins  # type: ignore[import-untyped]

from ..deflate import DeflateOptions, choose
from ..exc import HandshakeError
from ..handshake import Request, accept
from ..poller import Reactor
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..websocket import WebSocket
from .limits import DEFAULT_HANDSHAKE_TIMEOUT, check_capacity

__all__ = ["WebSocketTool", "WebSocketPlugin", "serve"]

logger = logging.getLogger("wsloop.cherrypy")

_CLASS_DEFAULT: Any = object()  # "the handler class's own max_message_size"
_STATE = "_wsloop_upgrade"  # attribute of cherrypy.request while an upgrade is in progress
_NAMES = "_wsloop_header_names"  # attribute of cherrypy.request: header names to spell as given

# Bytes read by cheroot beyond the request head, from the hand-over to the plugin's handle().
_received: weakref.WeakKeyDictionary[WebSocket, bytes] = weakref.WeakKeyDictionary()
_received_lock = threading.Lock()
# Set on a request whose upgrade the plugin counts as in progress (WebSocketPlugin.reserve) until
# the hand-over, when the reactor counts it instead.
_RESERVED = "_wsloop_reserved"


class _Upgrade:
    """What the tool's hooks share about one upgrade in progress."""

    __slots__ = ("http_request", "handler")

    def __init__(self, http_request: _CherootRequest, handler: WebSocket):
        self.http_request = http_request
        self.handler = handler


class WebSocketTool(cherrypy.Tool):  # type: ignore[misc]
    """Upgrades the requests of the paths where it is on, and hands their sockets to the plugin."""

    def __init__(self) -> None:
        super().__init__("before_request_body", self.upgrade)

    def _setup(self) -> None:
        conf = self._merged_args()
        hooks = cherrypy.serving.request.hooks
        priority = conf.pop("priority", getattr(self.callable, "priority", self._priority))
        hooks.attach(self._point, self.callable, priority=priority, **conf)
        hooks.attach("before_finalize", self._before_finalize, priority=priority)
        hooks.attach("after_error_response", self._undo_upgrade_headers, priority=priority)
        hooks.attach("on_end_resource", self._restore_header_names, priority=70)
        hooks.attach("on_end_request", self._hand_over, priority=70)

    def upgrade(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        protocols: Sequence[str] | None = None,
        heartbeat_freq: float | None = None,
        max_message_size: int | None = _CLASS_DEFAULT,
        passthrough: bool = False,
        extensions: Sequence[str] | None = None,
        version: int = 13,
        compression: bool | DeflateOptions = True,
        idle_timeout: float | None = None,
        close_timeout: float | None = None,
    ) -> None:
        """Validate the upgrade, answer 101 and create ``cherrypy.request.ws_handler``.

        ``compression`` (``tools.websocket.compression``): False never, True the handler class's
        policy, or a :class:`~wsloop.deflate.DeflateOptions`. ``extensions`` and ``version`` are
        accepted for ws4py's configurations and ignored (permessage-deflate is governed by
        ``compression``; version 13 is the only one).
        """
        request = cherrypy.serving.request
        response = cherrypy.serving.response
        request.process_request_body = False
        handshake = _handshake_request(request)
        if passthrough and not handshake.is_upgrade and request.method in ("GET", "HEAD"):
            request.ws_handler = None
            return
        try:
            if not handshake.is_upgrade and request.method in ("GET", "HEAD"):
                raise HandshakeError("this is a WebSocket endpoint: send an Upgrade request")
            accepted = accept(
                handshake, protocols, choose(handler_cls.compression, compression), policy=handler_cls
            )
            answer, subprotocol = accepted.response, accepted.subprotocol
            http_request = _cheroot_request()
            if http_request is None or not hasattr(http_request.conn.rfile, "has_data"):
                raise HandshakeError("WebSocketTool needs CherryPy's own HTTP server (cheroot)", 501)
            if type(http_request.conn.socket) not in (socket.socket, ssl.SSLSocket):
                raise HandshakeError(
                    "WebSocketTool serves TLS from cheroot's builtin ssl adapter only", 501
                )
            _reserve(request)  # the last check: 503 when the plugin is at its max_connections
        except HandshakeError as exc:
            logger.debug("handshake refused (%s %s)", exc.status, exc.reason)
            _refuse(exc)
            return
        kwargs: dict[str, Any] = {}
        if max_message_size is not _CLASS_DEFAULT:
            kwargs["max_message_size"] = max_message_size
        handler = handler_cls(
            http_request.conn.socket,
            protocols=[subprotocol] if subprotocol else None,
            extensions=accepted.extensions or None,
            environ=_environ(request.wsgi_environ),
            heartbeat_freq=heartbeat_freq,
            deflate=accepted.deflate,
            idle_timeout=idle_timeout,
            **kwargs,
        )
        if close_timeout is not None:
            handler.close_timeout = close_timeout
        response.status = 101
        headers = []
        for line in answer.decode("latin-1").split("\r\n")[1:]:
            name, sep, value = line.partition(": ")
            if sep:
                headers.append((name, value))
        _set_headers(headers)
        http_request.close_connection = True  # never read the "body" nor keep the connection
        setattr(request, _STATE, _Upgrade(http_request, handler))
        request.ws_handler = handler

    def _before_finalize(self) -> None:
        request = cherrypy.serving.request
        response = cherrypy.serving.response
        state: _Upgrade | None = getattr(request, _STATE, None)
        if state is None:
            return
        if str(response.status).startswith("101"):
            # A 1xx has no body: drop whatever the page handler returned, even streamed.
            response.stream = False
            response.body = b""
            response.headers.pop("Content-Type", None)
        else:
            self._undo_upgrade_headers()  # the page handler answered an error, a redirect...

    def _undo_upgrade_headers(self) -> None:
        """No 101 after all: drop the upgrade's headers from the response."""
        request = cherrypy.serving.request
        if getattr(request, _STATE, None) is None:
            return
        headers = cherrypy.serving.response.headers
        for name in getattr(request, _NAMES, {}).values():
            headers.pop(name.decode("latin-1"), None)

    def _restore_header_names(self) -> None:
        """CherryPy title-cases header names (Sec-Websocket-Accept): restore RFC 6455's spelling."""
        names: dict[bytes, bytes] | None = getattr(cherrypy.serving.request, _NAMES, None)
        response = cherrypy.serving.response
        if names and response.header_list:
            response.header_list = [(names.get(k.lower(), k), v) for k, v in response.header_list]

    def _hand_over(self) -> None:
        """After cheroot has written the 101: give the socket to the plugin's reactor; the
        upgrade stops being counted apart as the reactor counts it (in the plugin's handle()),
        or here when it was not handed over."""
        try:
            self._give_socket()
        finally:
            request = cherrypy.serving.request
            if getattr(request, _RESERVED, False):
                setattr(request, _RESERVED, False)
                cherrypy.engine.publish("websocket-release")

    def _give_socket(self) -> None:
        request = cherrypy.serving.request
        state: _Upgrade | None = getattr(request, _STATE, None)
        if state is None:
            return
        delattr(request, _STATE)
        http_request = state.http_request
        status: Any = http_request.status  # bytes at run time (cheroot's stub says str)
        if not http_request.sent_headers or status[:3] not in (b"101", "101"):
            return  # an error page went out instead; cheroot closes the connection
        conn = http_request.conn
        handler = state.handler
        received = _take_buffered(conn.rfile)
        conn.linger = True  # cheroot's close() must not shutdown() (nor close) the connection
        sock: socket.socket = conn.socket
        # A TLS session cannot move to another object: the reactor takes cheroot's SSLSocket,
        # which cheroot, lingering, leaves alone (a TLSConnection reads what OpenSSL still holds).
        if not isinstance(sock, ssl.SSLSocket):
            sock = socket.socket(fileno=sock.detach())
        sock.setblocking(True)  # it may still be non-blocking from cheroot's timeout
        handler.sock = sock
        with _received_lock:
            _received[handler] = received
        address = (request.remote.ip, request.remote.port)
        try:
            taken = cherrypy.engine.publish("handle-websocket", handler, address)
        except Exception:
            taken = []  # the bus has logged the listener's error
        if not taken:
            logger.warning("no WebSocketPlugin is running: dropping the websocket from %s", address)
            with _received_lock:
                _received.pop(handler, None)
            sock.close()


class WebSocketPlugin(plugins.SimplePlugin):  # type: ignore[misc]
    """Serves the websockets the tool upgrades, on one reactor thread (``manager``).

    ``manager`` (a :class:`~wsloop.poller.Reactor`) exists from construction and runs from the
    engine's ``start``; an engine started again after a ``stop`` gets a new one (a stopped
    reactor cannot run again).

    :param close_timeout: seconds ``stop`` waits for the closing handshakes.
    :param max_connections: websockets served at once (None: no limit), upgrades in progress
        included; the tool answers an upgrade beyond it with ``503 Service Unavailable`` and
        ``Retry-After: 1`` (asking through the bus's ``websocket-reserve`` channel).
    :param max_buffered: the reactor's cap on a slow reader's unsent output
        (:class:`~wsloop.poller.Reactor`).
    """

    def __init__(
        self,
        bus: Any,
        close_timeout: float = 5.0,
        max_connections: int | None = None,
        max_buffered: int | None = None,
    ) -> None:
        super().__init__(bus)
        self.close_timeout = close_timeout
        self.max_connections = max_connections
        self.max_buffered = max_buffered
        self.manager = Reactor(close_timeout=close_timeout, max_buffered=max_buffered)
        self._upgrading = 0  # upgrades the tool accepted and has not handed over yet
        self._lock = threading.Lock()
        self._running = False
        self._used = False

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            if self._used:  # a stopped reactor cannot run again: the engine restarted
                self.manager = Reactor(close_timeout=self.close_timeout, max_buffered=self.max_buffered)
                self._upgrading = 0
            self._used = True
            self.manager.start()
            self._running = True
        self.bus.log("Starting WebSocket processing")
        self.bus.subscribe("handle-websocket", self.handle)
        self.bus.subscribe("websocket-broadcast", self.broadcast)
        self.bus.subscribe("websocket-reserve", self.reserve)
        self.bus.subscribe("websocket-release", self.release)

    # Before the HTTP server (75) starts accepting.
    start.priority = 50  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.bus.unsubscribe("handle-websocket", self.handle)
        self.bus.unsubscribe("websocket-broadcast", self.broadcast)
        self.bus.unsubscribe("websocket-reserve", self.reserve)
        self.bus.unsubscribe("websocket-release", self.release)
        with self._lock:
            if not self._running:
                return
            self._running = False
        self.bus.log("Terminating WebSocket processing")
        self.manager.stop(self.close_timeout)

    # After the HTTP server (25) has stopped accepting and its workers have finished.
    stop.priority = 50  # type: ignore[attr-defined]

    def handle(self, ws_handler: WebSocket, peer_addr: Any = None) -> None:
        """Serve ``ws_handler`` (the tool's ``handle-websocket`` message)."""
        with _received_lock:
            received = _received.pop(ws_handler, b"")
        with self._lock:
            # Called on the thread of the tool's request: its reservation ends as the reactor
            # counts the websocket, in one step, so a concurrent reserve() sees it once.
            request = cherrypy.serving.request
            if getattr(request, _RESERVED, False):
                setattr(request, _RESERVED, False)
                self._upgrading -= 1
            if self._running:
                self.manager.add(ws_handler, received=received)
                return
        if ws_handler.sock is not None:
            ws_handler.sock.close()

    def broadcast(self, message: str | bytes, binary: bool = False) -> None:
        """Send ``message`` to every open websocket (also the ``websocket-broadcast`` channel)."""
        self.manager.broadcast(message, binary)

    def reserve(self) -> HandshakeError | None:
        """Count one more upgrade in progress (the ``websocket-reserve`` channel), or return the
        503 to answer when the websockets served and the upgrades in progress are at
        ``max_connections`` already (the page handler and the 101 come between the tool's check
        and the hand-over, so those count too)."""
        with self._lock:
            try:
                check_capacity(self.manager, self.max_connections, self._upgrading)
            except HandshakeError as refusal:
                return refusal  # returned: the bus would log a raised one as a listener's error
            self._upgrading += 1
        return None

    def release(self) -> None:
        """An upgrade counted by :meth:`reserve` was handed over, or failed (``websocket-release``)."""
        with self._lock:
            self._upgrading -= 1


# ---------------------------------------------------------------------- helpers


def _handshake_request(request: Any) -> Request:
    """A :class:`wsloop.handshake.Request` from CherryPy's request."""
    headers: dict[str, str] = {}
    raw: list[tuple[str, str]] = []
    for name, value in request.header_list:
        name = name.lower()
        raw.append((name, value))
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    major, minor = request.protocol
    path = request.path_info + (f"?{request.query_string}" if request.query_string else "")
    return Request(request.method, path, f"HTTP/{major}.{minor}", headers, raw)


def _reserve(request: Any) -> None:
    """Have the running plugin count this upgrade until it is handed over; raise its 503 when it
    serves its ``max_connections`` already (upgrades in progress included)."""
    for refusal in cherrypy.engine.publish("websocket-reserve"):
        if refusal is not None:
            raise refusal
    setattr(request, _RESERVED, True)


def _cheroot_request() -> _CherootRequest | None:
    """cheroot's request object for the current request: found up the call stack."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, _CherootRequest):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _set_headers(headers: Sequence[tuple[str, str]]) -> None:
    """Set response headers, keeping their spelling on the wire (see ``_restore_header_names``)."""
    request = cherrypy.serving.request
    response = cherrypy.serving.response
    names: dict[bytes, bytes] = getattr(request, _NAMES, None) or {}
    for name, value in headers:
        response.headers[name] = value
        names[name.lower().encode("latin-1")] = name.encode("latin-1")
    setattr(request, _NAMES, names)


def _refuse(error: HandshakeError) -> None:
    """Answer ``error`` as the standalone server does, without running the page handler, and
    close the connection after it (a failed upgrade may be followed by frames, not requests)."""
    request = cherrypy.serving.request
    response = cherrypy.serving.response
    response.status = error.status
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    _set_headers(error.headers)
    response.body = (error.reason + "\n").encode("utf-8")
    request.handler = None
    http_request = _cheroot_request()
    if http_request is not None:
        http_request.close_connection = True


def _environ(environ: dict[str, Any]) -> dict[str, Any]:
    """The request's WSGI environ without its objects (``wsgi.input`` would keep cheroot's
    reader and its buffer alive as long as the websocket)."""
    plain = (str, bytes, int, float, bool, tuple)
    return {key: value for key, value in environ.items() if isinstance(value, plain)}


def _take_buffered(rfile: Any) -> bytes:
    """The bytes cheroot's buffered reader holds, without reading from the socket."""
    chunks = []
    while rfile.has_data():
        chunks.append(rfile.read1(65536))
    return b"".join(chunks)


# ---------------------------------------------------------------------- command line


class _Root:
    """The application :func:`serve` mounts at ``/``: websockets anywhere, the demo page at ``/``."""

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def index(self) -> bytes | None:
        if getattr(cherrypy.request, "ws_handler", None) is not None:
            return None
        from .standalone import demo_page

        cherrypy.response.headers["Content-Type"] = "text/html; charset=utf-8"
        return demo_page()

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def default(self, *args: str, **kwargs: str) -> None:
        if getattr(cherrypy.request, "ws_handler", None) is None:
            raise cherrypy.NotFound()


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
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    close_timeout: float = 5.0,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_buffered: int | None = None,
) -> None:
    """Serve ``handler_cls`` websockets on ``host:port`` at any path with CherryPy until ``stop``.

    A plain ``GET /`` gets the demo page. ``ready(url)`` is called once the server listens
    (``port`` 0 picks a free port). When ``stop`` is set, the engine exits: every websocket is
    closed with 1001 and every socket released. Installs no signal handler and does not block in
    ``engine.block()``; CherryPy writes nothing to the console itself, its ``cherrypy.error``
    logger passes on warnings and errors only, and its access log is not passed on.
    ``handshake_timeout`` is cheroot's ``server.socket_timeout`` (how long one read of a request
    may wait: 408 past it).
    """
    engine = cherrypy.engine
    cherrypy.config.update(
        {
            "server.socket_host": host,
            "server.socket_port": port,
            "server.socket_queue_size": 1024,
            "server.socket_timeout": handshake_timeout,
            "log.screen": False,
            "engine.autoreload.on": False,
            "checker.on": False,
        }
    )
    engine.autoreload.unsubscribe()
    # With logging configured by the caller, CherryPy's loggers would still propagate to it: keep
    # its warnings and errors, not its INFO chatter nor a line per request.
    logging.getLogger("cherrypy.error").setLevel(logging.WARNING)
    logging.getLogger("cherrypy.access").propagate = False
    if not isinstance(getattr(cherrypy.tools, "websocket", None), WebSocketTool):
        cherrypy.tools.websocket = WebSocketTool()
    plugin = WebSocketPlugin(
        engine, close_timeout=close_timeout, max_connections=max_connections, max_buffered=max_buffered
    )
    plugin.subscribe()
    cherrypy.tree.mount(
        _Root(),
        "/",
        config={
            "/": {
                "tools.websocket.on": True,
                "tools.websocket.handler_cls": handler_cls,
                "tools.websocket.heartbeat_freq": heartbeat_freq,
                "tools.websocket.max_message_size": max_message_size,
                "tools.websocket.compression": compression,
                "tools.websocket.idle_timeout": idle_timeout,
                "tools.websocket.close_timeout": close_timeout,
                "tools.websocket.passthrough": True,
            }
        },
    )
    engine.start()
    try:
        bound_host, bound_port = cherrypy.server.bound_addr[:2]
        ready(f"ws://{bound_host}:{bound_port}/")
        while not stop.wait(0.5):
            pass
    finally:
        engine.exit()
        plugin.unsubscribe()
