"""``WebSocketWSGIApplication``: the WebSocket upgrade as a WSGI application (ws4py's name).

The application validates the upgrade from the WSGI environ with :mod:`wsloop.handshake`, creates
the handler and leaves it in ``environ["wsloop.websocket"]`` (the exact 101 response bytes in
``environ["wsloop.response"]``). A WSGI server that can give up its socket then hands both to a
driver: :mod:`wsloop.servers.wsgirefserver` and :mod:`wsloop.servers.geventserver` do. The server
must put the connection's socket in ``environ["wsloop.socket"]`` (ws4py's ``"ws4py.socket"`` is
accepted too), and, for ``max_connections``, what serves its websockets (its reactor: anything
``len()`` counts them with) in ``environ["wsloop.manager"]``. A request that is not a valid
upgrade gets its HTTP error as a normal WSGI response.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any

from ..deflate import DeflateOptions, choose
from ..exc import HandshakeError
from ..handshake import Request, accept, status_phrase
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..websocket import WebSocket
from .limits import check_capacity

__all__ = ["WebSocketWSGIApplication", "request_from_environ", "status_line", "with_demo_page"]

StartResponse = Callable[..., Any]


def status_line(status: int) -> str:
    """``"400 Bad Request"`` for 400."""
    return f"{status} {status_phrase(status)}"


def request_from_environ(environ: dict[str, Any]) -> Request:
    """The request head a WSGI environ describes, as :mod:`wsloop.handshake` takes it."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    path = environ.get("PATH_INFO", "/") or "/"
    if environ.get("QUERY_STRING"):
        path = f"{path}?{environ['QUERY_STRING']}"
    return Request(
        environ.get("REQUEST_METHOD", "GET"),
        path,
        environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        headers,
        list(headers.items()),
    )


def socket_from_environ(environ: dict[str, Any]) -> socket.socket | None:
    sock = environ.get("wsloop.socket") or environ.get("ws4py.socket")
    return sock if isinstance(sock, socket.socket) else None


class WebSocketWSGIApplication:
    """A WSGI application that upgrades every request to a ``handler_cls`` websocket.

    :param protocols: subprotocols the server speaks, by preference.
    :param extensions: accepted for ws4py compatibility; none is negotiated yet.
    :param handler_cls: the :class:`~wsloop.websocket.WebSocket` subclass to create.
    :param heartbeat_freq: seconds between keepalive pings (None: no pings).
    :param max_message_size: largest message accepted (None: unlimited).
    :param compression: permessage-deflate: False never, True the handler class's policy, or a
        :class:`~wsloop.deflate.DeflateOptions` of its own.
    :param max_connections: websockets the server's reactor serves at once (None: no limit); an
        upgrade beyond it is answered ``503 Service Unavailable`` with ``Retry-After: 1``.
    :param idle_timeout: close with 1001 a websocket that receives nothing for this many
        seconds (None: the handler class's ``idle_timeout``, by default never).
    :param close_timeout: seconds each websocket waits for the peer's close frame (None: the
        handler class's ``close_timeout``).
    """

    def __init__(
        self,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[str] | None = None,
        handler_cls: type[WebSocket] = WebSocket,
        heartbeat_freq: float | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        compression: bool | DeflateOptions = True,
        *,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        close_timeout: float | None = None,
    ) -> None:
        self.protocols = list(protocols) if protocols else None
        self.extensions = list(extensions) if extensions else None
        self.handler_cls = handler_cls
        self.heartbeat_freq = heartbeat_freq
        self.max_message_size = max_message_size
        self.compression = choose(handler_cls.compression, compression)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.close_timeout = close_timeout

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            accepted = accept(
                request_from_environ(environ), self.protocols, self.compression, policy=self.handler_cls
            )
            if self.max_connections is not None:
                check_capacity(_manager_from_environ(environ), self.max_connections)
        except HandshakeError as exc:
            headers = [("Content-Type", "text/plain; charset=utf-8"), *exc.headers]
            start_response(status_line(exc.status), headers)
            return [(exc.reason + "\n").encode("utf-8")]
        sock = socket_from_environ(environ)
        if sock is None:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"this WSGI server does not expose the connection's socket (environ['wsloop.socket'])\n"]
        ws = self.handler_cls(
            sock,
            protocols=[accepted.subprotocol] if accepted.subprotocol else None,
            extensions=accepted.extensions or None,
            environ=environ,
            heartbeat_freq=self.heartbeat_freq,
            max_message_size=self.max_message_size,
            deflate=accepted.deflate,
            idle_timeout=self.idle_timeout,
        )
        if self.close_timeout is not None:
            ws.close_timeout = self.close_timeout
        environ["wsloop.websocket"] = environ["ws4py.websocket"] = ws
        environ["wsloop.response"] = accepted.response
        lines = accepted.response.decode("latin-1").split("\r\n")
        headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines[1:] if line)]
        start_response(lines[0].split(" ", 1)[1], headers)
        return []


def _manager_from_environ(environ: dict[str, Any]) -> Sized:
    """What serves the server's websockets, for ``max_connections`` (None: none yet)."""
    if "wsloop.manager" not in environ:
        raise HandshakeError(
            "this WSGI server does not expose its websocket manager (environ['wsloop.manager'])", 500
        )
    manager: Sized | None = environ["wsloop.manager"]
    return manager if manager is not None else ()


def with_demo_page(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wrap a websocket WSGI app so a plain (non-upgrade) ``GET /`` gets the demo page."""
    from .standalone import demo_page

    def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") == "GET"
            and environ.get("PATH_INFO", "/") == "/"
            and "HTTP_UPGRADE" not in environ
            and "HTTP_SEC_WEBSOCKET_KEY" not in environ
        ):
            page = demo_page()
            start_response(
                "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))]
            )
            return [page]
        return app(environ, start_response)

    return wrapped
