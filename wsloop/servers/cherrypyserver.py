"""CherryPy integration: ws4py's ``WebSocketTool`` and ``WebSocketPlugin`` over the wsloop reactor.

Usage, as in ws4py (only the imports change)::

    WebSocketPlugin(cherrypy.engine).subscribe()
    cherrypy.tools.websocket = WebSocketTool()
    cherrypy.quickstart(Root(), "/", config={"/ws": {"tools.websocket.on": True,
                                                     "tools.websocket.handler_cls": EchoWebSocket}})

The tool asks a :class:`~wsloop.upgrade.ServerPolicy` about each request of its paths and
delivers the answer through CherryPy; cheroot writes the 101, then the socket (with the bytes
cheroot had buffered) goes to the plugin's reactor over the bus. :func:`serve` runs a whole
CherryPy server for the command line.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cherrypy  # type: ignore[import-untyped]
from cheroot.server import HTTPRequest as _CherootRequest
from cherrypy.process import plugins  # type: ignore[import-untyped]

from .. import WS_VERSION
from ..exc import HandshakeError
from ..handshake import Request
from ..poller import Reactor
from ..upgrade import UNSET, Accept, Page, Reject, ServeOptions, ServerPolicy, check_capacity
from ..websocket import WebSocket
from .running import listen_url, run_until_stopped

__all__ = ["WebSocketTool", "WebSocketPlugin", "serve"]

logger = logging.getLogger("wsloop.cherrypy")

_STATE = "_wsloop_upgrade"  # attribute of cherrypy.request while an upgrade is in progress
_NAMES = "_wsloop_header_names"  # attribute of cherrypy.request: header names to spell as given

# Set on a request whose upgrade the plugin counts as in progress (WebSocketPlugin.reserve) until
# the hand-over, when the reactor counts it instead.
_RESERVED = "_wsloop_reserved"

# Attribute of cherrypy.request during the hand-over: the bytes cheroot had read past the request,
# for the plugin's handle() (ws4py's handle-websocket message is (ws_handler, peer_addr) only).
_RECEIVED = "_wsloop_received"


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
        # ws4py's hook points, called through self: a subclass's override is honoured.
        hooks.attach("before_finalize", self.complete, priority=priority)
        hooks.attach("after_error_response", self._undo_upgrade_headers, priority=priority)
        hooks.attach("on_end_resource", self.cleanup_headers, priority=70)
        hooks.attach("on_end_request", self.start_handler, priority=70)

    def upgrade(
        self,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[str] | None = None,
        version: int | Sequence[int] = WS_VERSION,
        handler_cls: type[WebSocket] = WebSocket,
        heartbeat_freq: float | None = None,
        *,
        passthrough: bool = False,
        options: ServeOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        """Ask the policy about the request; answer it, or start the upgrade: 101 and
        ``cherrypy.request.ws_handler`` (the tool's callable, at ``before_request_body``).

        ws4py's arguments, in ws4py's order (each is also a ``tools.websocket.*`` config key):
        ``protocols`` (subprotocols spoken, by preference), ``extensions`` (accepted and ignored:
        permessage-deflate is negotiated by the handler class's ``compression``), ``version``
        (the WebSocket versions allowed; wsloop speaks 13, so one without 13 refuses every
        upgrade with 426), ``handler_cls``, ``heartbeat_freq``. Then, as keywords, the other
        options of :class:`~wsloop.upgrade.ServeOptions` (``max_message_size``, ``compression``,
        ``idle_timeout``, ``close_timeout``, ``serve_page``, over ``options``; one not given takes
        the handler class's attribute; the demo page is off unless ``serve_page``).
        ``passthrough``: a plain ``GET``/``HEAD`` that asks for no upgrade reaches the page
        handler with ``ws_handler = None`` (unless it gets the demo page).
        """
        request = cherrypy.serving.request
        request.process_request_body = False
        versions = (version,) if isinstance(version, int) else tuple(version)
        policy = _ToolPolicy(
            handler_cls,
            ServeOptions.embedded(
                options,
                protocols=UNSET if protocols is None else protocols,
                heartbeat_freq=UNSET if heartbeat_freq is None else heartbeat_freq,
                **option_kwargs,
            ),
        )
        handshake = _handshake_request(request)
        http_request = _cheroot_request()

        def admit() -> None:
            if 13 not in versions:
                supported = [("Sec-WebSocket-Version", ", ".join(map(str, versions)))]
                raise HandshakeError("Unhandled WebSocket version", 426, supported)
            if http_request is None or not hasattr(http_request.conn.rfile, "has_data"):
                raise HandshakeError("WebSocketTool needs CherryPy's own HTTP server (cheroot)", 501)
            if type(http_request.conn.socket) not in (socket.socket, ssl.SSLSocket):
                raise HandshakeError("WebSocketTool serves TLS from cheroot's builtin ssl adapter only", 501)
            _reserve(request)  # the last check: 503 when the plugin is at its max_connections

        decision = policy.decide(
            handshake,
            http_request.conn.socket if http_request is not None else None,
            environ=_environ(request.wsgi_environ),
            admit=admit,
        )
        if isinstance(decision, Accept):
            assert http_request is not None
            cherrypy.serving.response.status = 101
            _set_headers(decision.headers)
            http_request.close_connection = True  # never read the "body" nor keep the connection
            setattr(request, _STATE, _Upgrade(http_request, decision.websocket))
            request.ws_handler = decision.websocket
        elif passthrough and not handshake.is_upgrade and not isinstance(decision, Page):
            request.ws_handler = None  # a plain GET or HEAD, for the page handler
        else:
            _answer(decision, http_request)

    def complete(self) -> None:
        """ws4py's hook at ``before_finalize``: make the response a bare 101 (no body, even one
        the page handler returned) that cheroot writes and then leaves the connection open; or,
        when the page handler answered something else, drop the upgrade's headers."""
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

    def cleanup_headers(self) -> None:
        """ws4py's hook at ``on_end_resource``: CherryPy title-cases header names
        (Sec-Websocket-Accept); restore RFC 6455's spelling, which some clients need."""
        names: dict[bytes, bytes] | None = getattr(cherrypy.serving.request, _NAMES, None)
        response = cherrypy.serving.response
        if names and response.header_list:
            response.header_list = [(names.get(k.lower(), k), v) for k, v in response.header_list]

    def start_handler(self) -> None:
        """ws4py's hook at ``on_end_request``: after cheroot has written the 101, detach the
        socket and publish ``handle-websocket`` (``ws_handler, peer_addr``) for the plugin,
        which serves it on its reactor. The upgrade stops being counted apart as the reactor
        counts it (in the plugin's handle()), or here when it was not handed over."""
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
        address = (request.remote.ip, request.remote.port)
        setattr(request, _RECEIVED, received)  # for the plugin's handle(): ws4py's message has 2 args
        try:
            taken = cherrypy.engine.publish("handle-websocket", handler, address)
        except Exception:
            taken = []  # the bus has logged the listener's error
        finally:
            setattr(request, _RECEIVED, b"")
        if not taken:
            logger.warning("no WebSocketPlugin is running: dropping the websocket from %s", address)
            sock.close()


class _ToolPolicy(ServerPolicy):
    """The tool's policy: builds handlers with ws4py's CherryPy types (``extensions`` a list,
    ``protocols`` None unless the client offered some, then a list)."""

    def make_websocket(
        self,
        sock: socket.socket,
        protocols: list[str] | None,
        extensions: list[str] | None,
        environ: dict[str, Any],
        **kwargs: Any,
    ) -> WebSocket:
        if protocols is None and "HTTP_SEC_WEBSOCKET_PROTOCOL" in environ:
            protocols = []
        return super().make_websocket(sock, protocols, extensions or [], environ, **kwargs)


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
            running, self._running = self._running, False
        if running:
            self.cleanup()

    # After the HTTP server (25) has stopped accepting and its workers have finished.
    stop.priority = 50  # type: ignore[attr-defined]

    def cleanup(self) -> None:
        """Close every websocket with 1001 and stop the reactor, waiting up to ``close_timeout``
        for the closing handshakes (ws4py's name; :meth:`stop` calls it). Upgrades handed over
        afterwards are dropped, until the engine starts again."""
        with self._lock:
            self._running = False  # handle() now drops what is handed over
        if self.manager.finished:
            return
        self.bus.log("Terminating WebSocket processing")
        self.manager.stop(self.close_timeout)

    def handle(self, ws_handler: WebSocket, peer_addr: Any = None, received: bytes | None = None) -> None:
        """Serve ``ws_handler`` (the tool's ``handle-websocket`` message; ``peer_addr`` for
        tracing), feeding it ``received`` (what the client sent after its request; by default
        what the tool read past the current request) first."""
        if received is None:
            received = getattr(cherrypy.serving.request, _RECEIVED, b"")
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
    """cheroot's request object for the current request, found up the call stack.

    The one reach past CherryPy's API, as in ws4py: the tool must set the request's
    ``close_connection`` (else cheroot keeps a connection it no longer owns) and read its
    ``status``/``sent_headers`` after the 101, and neither CherryPy nor cheroot's WSGI gateway
    exposes that object (the environ holds only its body reader; a worker thread's documented
    ``conn`` is the connection, not the request)."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, _CherootRequest):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _set_headers(headers: Sequence[tuple[str, str]]) -> None:
    """Set response headers, keeping their spelling on the wire (see ``cleanup_headers``)."""
    request = cherrypy.serving.request
    response = cherrypy.serving.response
    names: dict[bytes, bytes] = getattr(request, _NAMES, None) or {}
    for name, value in headers:
        response.headers[name] = value
        names[name.lower().encode("latin-1")] = name.encode("latin-1")
    setattr(request, _NAMES, names)


def _answer(decision: Reject | Page, http_request: _CherootRequest | None) -> None:
    """Answer with ``decision`` instead of running the page handler; after a refused upgrade,
    close the connection (a failed upgrade may be followed by frames, not requests)."""
    request = cherrypy.serving.request
    response = cherrypy.serving.response
    response.status = decision.status
    _set_headers(decision.headers)
    response.body = decision.body
    request.handler = None
    if isinstance(decision, Reject) and http_request is not None:
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
    """The application :func:`serve` mounts at ``/``: websockets at any path (the tool answers
    ``/`` with the demo page), 404 for anything else."""

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def default(self, *args: str, **kwargs: str) -> None:
        if getattr(cherrypy.request, "ws_handler", None) is None:
            raise cherrypy.NotFound()


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
    """Serve ``handler_cls`` websockets on ``host:port`` at any path with CherryPy until ``stop``;
    ``options`` and ``option_kwargs`` as :class:`~wsloop.upgrade.ServeOptions` takes them.

    A plain ``GET /`` gets the demo page. ``ready(url)`` is called once the server listens
    (``port`` 0 picks a free port). When ``stop`` is set, the engine exits: every websocket is
    closed with 1001 and every socket released. Installs no signal handler and does not block in
    ``engine.block()``; CherryPy writes nothing to the console itself, its ``cherrypy.error``
    logger passes on warnings and errors only, and its access log is not passed on.
    ``handshake_timeout`` is cheroot's ``server.socket_timeout`` (how long one read of a request
    may wait: 408 past it).
    """
    options = ServeOptions.of(options, **option_kwargs)
    engine = cherrypy.engine
    cherrypy.config.update(
        {
            "server.socket_host": host,
            "server.socket_port": port,
            "server.socket_queue_size": 1024,
            "server.socket_timeout": options.handshake_timeout,
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
        engine,
        close_timeout=options.close_timeout_for(handler_cls),
        max_connections=options.max_connections,
        max_buffered=options.max_buffered,
    )
    plugin.subscribe()
    config = {"tools.websocket.on": True, "tools.websocket.handler_cls": handler_cls}
    config["tools.websocket.options"] = options
    config["tools.websocket.passthrough"] = True
    cherrypy.tree.mount(_Root(), "/", config={"/": config})
    engine.start()

    def shutdown() -> None:
        engine.exit()
        plugin.unsubscribe()

    run_until_stopped(stop, ready, listen_url(cherrypy.server.bound_addr), shutdown, health=options.health)
