"""``WebSocketWSGIApplication``: the WebSocket upgrade as a WSGI application (ws4py's name).

The application asks a :class:`~wsloop.upgrade.ServerPolicy` about the request the WSGI environ
describes and delivers the decision: an error or the demo page as a normal WSGI response, or the
101's status and headers, with the handler in ``environ["wsloop.websocket"]`` and the 101's bytes
in ``environ["wsloop.response"]`` for a WSGI server that can give up its socket to a driver
(:mod:`wsloop.servers.wsgirefserver`, :mod:`wsloop.servers.geventserver`). The server puts the
connection's socket in ``environ["wsloop.socket"]`` (ws4py's ``"ws4py.socket"`` too) and, for
``max_connections``, what serves its websockets in ``environ["wsloop.manager"]``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Sequence, Sized
from contextvars import ContextVar
from typing import Any

from ..deflate import DeflateOptions
from ..exc import HandshakeError
from ..handshake import Request
from ..upgrade import UNSET, Accept, Page, Reject, ServeOptions, ServerPolicy, Unset, check_capacity
from ..websocket import WebSocket

__all__ = ["WebSocketWSGIApplication", "request_from_environ", "socket_from_environ"]

logger = logging.getLogger("wsloop.server.wsgi")

StartResponse = Callable[..., Any]


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

    ws4py's arguments (``protocols``, ``extensions``: accepted and ignored, ``handler_cls``),
    then the other options of :class:`~wsloop.upgrade.ServeOptions` (``heartbeat_freq``,
    ``max_message_size``, ``compression``... as keywords, or ``options``); an option not given
    takes the handler class's attribute. The demo page is off unless ``serve_page=True``.
    Each accepted upgrade's websocket is built by :meth:`make_websocket`.
    """

    def __init__(
        self,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[str] | None = None,
        handler_cls: type[WebSocket] = WebSocket,
        heartbeat_freq: float | None | Unset = UNSET,
        max_message_size: int | None | Unset = UNSET,
        compression: bool | DeflateOptions | Unset = UNSET,
        *,
        options: ServeOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        self.protocols = protocols
        self.extensions = extensions
        self.handler_cls = handler_cls
        self.policy: ServerPolicy = _ApplicationPolicy(
            self,
            handler_cls,
            ServeOptions.embedded(
                options,
                protocols=UNSET if protocols is None else protocols,
                heartbeat_freq=heartbeat_freq,
                max_message_size=max_message_size,
                compression=compression,
                **option_kwargs,
            ),
        )

    def make_websocket(
        self, sock: socket.socket, protocols: list[str], extensions: list[str], environ: dict[str, Any]
    ) -> WebSocket:
        """Build the ``handler_cls`` websocket of an accepted upgrade (ws4py's hook), with the
        negotiated ``protocols`` and ``extensions`` (lists, maybe empty, as ws4py's WSGI
        handlers get them) and a copy of ``environ``, and store it in
        ``environ["ws4py.websocket"]`` (and ``"wsloop.websocket"``).

        An override may build another class or return ``super().make_websocket(...)``; the
        negotiated permessage-deflate and the options (``heartbeat_freq``, ``max_message_size``)
        reach the handler through this base method, and the deflate agreement also when an
        override constructs the handler itself.
        """
        kwargs = _handler_kwargs.get() or {}
        websocket = self.handler_cls(sock, protocols, extensions, environ.copy(), **kwargs)
        environ["wsloop.websocket"] = environ["ws4py.websocket"] = websocket
        return websocket

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        max_connections = self.policy.options.max_connections

        def admit() -> None:
            if max_connections is not None:
                check_capacity(_manager_from_environ(environ), max_connections)

        decision = self.policy.decide(
            request_from_environ(environ), socket_from_environ(environ), environ=environ, admit=admit
        )
        if isinstance(decision, Accept):
            environ["wsloop.websocket"] = environ["ws4py.websocket"] = decision.websocket
            environ["wsloop.response"] = decision.response
            start_response(decision.status_line, decision.headers)
            return []
        if isinstance(decision, Reject):  # counted by the server's driver (wsloop.stats), if any
            counters = getattr(environ.get("wsloop.manager"), "counters", None)
            if counters is not None:
                counters.refuse(decision.status)
        start_response(decision.status_line, [*decision.headers, ("Content-Length", str(len(decision.body)))])
        return [] if isinstance(decision, Page) and decision.head else [decision.body]


#: The keyword arguments of the websocket being built (heartbeat_freq, deflate, ...), for the
#: base make_websocket: a context variable, so each thread or greenlet sees its own upgrade's.
_handler_kwargs: ContextVar[dict[str, Any] | None] = ContextVar("wsloop_handler_kwargs", default=None)


class _ApplicationPolicy(ServerPolicy):
    """The application's policy: builds each websocket through the application's
    :meth:`~WebSocketWSGIApplication.make_websocket`."""

    def __init__(self, app: WebSocketWSGIApplication, handler_cls: type[WebSocket], options: ServeOptions):
        super().__init__(handler_cls, options)
        self.app = app

    def make_websocket(
        self,
        sock: socket.socket,
        protocols: list[str] | None,
        extensions: list[str] | None,
        environ: dict[str, Any],
        **kwargs: Any,
    ) -> WebSocket:
        token = _handler_kwargs.set(kwargs)
        try:
            websocket = self.app.make_websocket(sock, list(protocols or ()), list(extensions or ()), environ)
        finally:
            _handler_kwargs.reset(token)
        if websocket is None:  # an override that only stored it, as ws4py's servers read it
            websocket = environ.get("ws4py.websocket")
        if not isinstance(websocket, WebSocket):
            raise TypeError(f"make_websocket() gave {websocket!r}, not a WebSocket")
        deflate = kwargs.get("deflate")
        if deflate is not None and websocket.stream.deflate is None:
            # Built by an override without the agreement the 101 announces: the peer will
            # send compressed frames, so the handler must take them.
            websocket.stream.deflate = deflate
        return websocket


def _manager_from_environ(environ: dict[str, Any]) -> Sized:
    """What serves the server's websockets, for ``max_connections`` (None: none yet)."""
    if "wsloop.manager" not in environ:
        raise HandshakeError(
            "this WSGI server does not expose its websocket manager (environ['wsloop.manager'])", 500
        )
    manager: Sized | None = environ["wsloop.manager"]
    return manager if manager is not None else ()
