"""``WebSocketWSGIApplication``: the WebSocket upgrade as a WSGI application (ws4py's name).

The application validates the upgrade from the WSGI environ with :mod:`wsloop.handshake`, creates
the handler and leaves it in ``environ["wsloop.websocket"]`` (the exact 101 response bytes in
``environ["wsloop.response"]``). A WSGI server that can give up its socket then hands both to a
driver: :mod:`wsloop.servers.wsgirefserver` and :mod:`wsloop.servers.geventserver` do. The server
must put the connection's socket in ``environ["wsloop.socket"]`` (ws4py's ``"ws4py.socket"`` is
accepted too). A request that is not a valid upgrade gets its HTTP error as a normal WSGI response.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from ..deflate import DeflateOptions, choose
from ..exc import HandshakeError
from ..handshake import Request, accept
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..websocket import WebSocket

__all__ = ["WebSocketWSGIApplication", "request_from_environ", "status_line", "with_demo_page"]

StartResponse = Callable[..., Any]


def status_line(status: int) -> str:
    """``"400 Bad Request"`` for 400."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


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
    """

    def __init__(
        self,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[str] | None = None,
        handler_cls: type[WebSocket] = WebSocket,
        heartbeat_freq: float | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        compression: bool | DeflateOptions = True,
    ) -> None:
        self.protocols = list(protocols) if protocols else None
        self.extensions = list(extensions) if extensions else None
        self.handler_cls = handler_cls
        self.heartbeat_freq = heartbeat_freq
        self.max_message_size = max_message_size
        self.compression = choose(handler_cls.compression, compression)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            accepted = accept(
                request_from_environ(environ), self.protocols, self.compression, policy=self.handler_cls
            )
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
        )
        environ["wsloop.websocket"] = environ["ws4py.websocket"] = ws
        environ["wsloop.response"] = accepted.response
        lines = accepted.response.decode("latin-1").split("\r\n")
        headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines[1:] if line)]
        start_response(lines[0].split(" ", 1)[1], headers)
        return []


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
