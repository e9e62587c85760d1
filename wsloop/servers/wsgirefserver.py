"""wsgiref's simple server with WebSocket support (ws4py's ``wsgirefserver`` names).

When the WSGI application upgrades a request, the handler writes nothing itself: the 101, the
socket and any bytes the request's reader already took go to the server's reactor. Usage, as in
ws4py's docs::

    server = make_server('', 9000, server_class=WSGIServer,
                         handler_class=WebSocketWSGIRequestHandler,
                         app=WebSocketWSGIApplication(handler_cls=EchoWebSocket))
    server.initialize_websockets_manager()
    server.serve_forever()
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, make_server
from wsgiref.simple_server import WSGIServer as _WSGIServer

from ..poller import Reactor
from ..upgrade import DEFAULT_HANDSHAKE_TIMEOUT, ServeOptions
from ..websocket import WebSocket
from .running import host_family, listen_url, run_until_stopped
from .wsgiutils import WebSocketWSGIApplication

__all__ = ["WSGIServer", "WebSocketWSGIRequestHandler", "WebSocketWSGIHandler", "serve"]

logger = logging.getLogger("wsloop.server.wsgiref")


class WebSocketWSGIHandler(ServerHandler):
    """wsgiref's ServerHandler that leaves upgraded connections to the reactor."""

    request_handler: WebSocketWSGIRequestHandler
    environ: dict[str, Any]

    def setup_environ(self) -> None:
        super().setup_environ()
        self.environ["wsloop.socket"] = self.environ["ws4py.socket"] = self.request_handler.connection
        self.environ["wsloop.manager"] = self.request_handler.server.manager  # for max_connections

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if status.startswith("101"):
            # wsgiref refuses hop-by-hop headers (Upgrade, Connection), which a 101 needs;
            # the 101 is written by the reactor from environ["wsloop.response"] anyway.
            self.status = status
            self.headers = self.headers_class(headers)
            return self.write
        return super().start_response(status, headers, exc_info)

    def finish_response(self) -> None:
        ws = self.environ.get("wsloop.websocket") if self.environ else None
        if not isinstance(ws, WebSocket):
            super().finish_response()
            return
        response = self.environ.pop("wsloop.response")
        self.environ.pop("wsloop.socket", None)
        self.environ.pop("ws4py.socket", None)
        self.request_handler.hand_over(ws, response)
        self.close()


class WebSocketWSGIRequestHandler(WSGIRequestHandler):
    """Request handler that runs :class:`WebSocketWSGIHandler` (ws4py's name)."""

    server: WSGIServer
    WebSocketWSGIHandler = WebSocketWSGIHandler

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.handshake_timeout)  # each read of the request

    def handle(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():
                return
        except TimeoutError:
            logger.debug("handshake timeout: dropping %s", self.client_address)
            return
        handler = self.WebSocketWSGIHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]
            self.get_stderr(),
            self.get_environ(),
        )
        handler.request_handler = self
        app = self.server.get_app()
        assert app is not None
        handler.run(app)

    def hand_over(self, ws: WebSocket, response: bytes) -> None:
        """Give the upgraded connection to the server's reactor."""
        sock: socket.socket = self.connection
        sock.setblocking(False)
        try:
            received = self.rfile.read1(65536) or b""  # what the buffered reader already holds
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            received = b""
        server = self.server
        server._handover[ws] = (response, received)
        try:
            server.link_websocket_to_server(ws)  # ws4py's call: a subclass's override is honoured
        finally:
            if server._handover.pop(ws, None) is not None:  # never reached our base method
                logger.warning("link_websocket_to_server() did not serve %r: dropping it", ws)
                sock.close()


class WSGIServer(_WSGIServer):
    """wsgiref's WSGIServer whose upgraded connections are served by a wsloop reactor.

    Its listen backlog is 1,024 (wsgiref's is 5: with many clients connecting at once, the
    handshakes of those beyond it stall until they time out). A client whose request stalls for
    :attr:`handshake_timeout` seconds is dropped (None: wait for ever, as wsgiref does).
    """

    manager: Reactor | None = None
    request_queue_size = 1024
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT

    # An upgraded websocket's 101 and the bytes read past its request, until
    # link_websocket_to_server() takes them (ws4py's signature has no room for them).
    _handover: dict[WebSocket, tuple[bytes, bytes]]

    def __init__(self, server_address: Any, *args: Any, **kwargs: Any) -> None:
        self._handover = {}
        # The family of the host listened on (wsgiref's is IPv4 only): "::1" works too.
        self.address_family = host_family(server_address[0])
        super().__init__(server_address, *args, **kwargs)

    def initialize_websockets_manager(self, manager: Reactor | None = None) -> None:
        """Create and start the reactor that serves the websockets (ws4py's name)."""
        self.manager = manager if manager is not None else Reactor()
        self.manager.start()
        self._upgraded: set[socket.socket] = set()

    def link_websocket_to_server(self, ws: WebSocket) -> None:
        """Serve ``ws`` with the reactor (ws4py's name; the request handler calls it once the
        application upgraded the connection). An upgrade's 101 is sent from here."""
        if self.manager is None:
            self.initialize_websockets_manager()
        assert self.manager is not None and ws.sock is not None
        preamble, received = self._handover.pop(ws, (b"", b""))
        self._upgraded.add(ws.sock)
        self.manager.add(ws, preamble=preamble, received=received)

    def shutdown_request(self, request: Any) -> None:
        upgraded = getattr(self, "_upgraded", None)
        if upgraded is not None and request in upgraded:
            upgraded.discard(request)  # the reactor owns it now
            return
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Close every websocket with 1001 (waiting for the closing handshakes), then the server."""
        if self.manager is not None:
            self.manager.stop()
            self.manager = None
        super().server_close()


class _QuietHandler(WebSocketWSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


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
    """Serve ``handler_cls`` on the wsgiref server until ``stop`` is set (the CLI's entry);
    ``options`` and ``option_kwargs`` as :class:`~wsloop.upgrade.ServeOptions` takes them."""
    app = WebSocketWSGIApplication(handler_cls=handler_cls, options=ServeOptions.of(options, **option_kwargs))
    options = app.policy.options
    server = make_server(host, port, app, server_class=WSGIServer, handler_class=_QuietHandler)
    server.handshake_timeout = options.handshake_timeout
    server.initialize_websockets_manager(
        Reactor(close_timeout=app.policy.close_timeout, max_buffered=options.max_buffered)
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()

    def shutdown() -> None:
        server.shutdown()
        thread.join()
        server.server_close()

    run_until_stopped(stop, ready, listen_url(server.socket.getsockname()), shutdown, health=options.health)
