"""The upgrade decision every server flavour asks for.

:class:`ServeOptions` holds the server options of the limits table (docs/limits.md); :class:`ServerPolicy`
(a handler class and those options) answers a parsed request with a decision value —
:class:`Reject`, :class:`Page` (the demo page) or :class:`Accept` (the 101 and the constructed
websocket) — that an adapter only delivers, in its framework's way.
"""

from __future__ import annotations

import enum
import importlib.resources
import logging
import socket
import ssl
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, TypeAlias

from .deflate import DeflateOptions, choose
from .exc import HandshakeError
from .handshake import MAX_HEADER_SIZE, LazyEnviron, Request, accept, environ_of, parse_request
from .headers import head_bytes, status_phrase
from .health import HealthCheck
from .websocket import WebSocket

__all__ = [
    "UNSET",
    "Unset",
    "ServeOptions",
    "ServerPolicy",
    "Decision",
    "Reject",
    "Page",
    "Accept",
    "check_capacity",
    "demo_page",
    "request_environ",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
]

logger = logging.getLogger("wsloop.server")

#: Seconds a client has to send its upgrade request (the standalone and asyncio servers: in all;
#: the frameworks: for each read of it).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: Connections whose opening handshake is in progress, at most (the standalone server's
#: ``max_pending_handshakes``); at the limit it stops accepting until an eighth are done.
DEFAULT_MAX_PENDING_HANDSHAKES = 1024


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: An option not given: the handler class's attribute (or the server's default) applies.
UNSET: Final = Unset.UNSET


@dataclass(frozen=True)
class ServeOptions:
    """Every server option of the limits table (docs/limits.md), for every server flavour.

    An option left :data:`UNSET` takes the handler class's attribute of the same name
    (``max_message_size``, ``close_timeout``, ``idle_timeout``) or, for
    ``max_pending_handshakes``, the server's default; a given one overrides it.

    :param protocols: subprotocols the server speaks, by preference.
    :param heartbeat_freq: seconds between keepalive pings (None: no pings).
    :param max_message_size: largest message accepted (None: unlimited); larger ones get 1009.
    :param compression: permessage-deflate: False never, True the handler class's policy
        (``handler_cls.compression``), or a :class:`~wsloop.deflate.DeflateOptions` of its own.
    :param close_timeout: seconds each websocket waits for the peer's close frame, and the server
        for the closing handshakes when it stops.
    :param idle_timeout: close with 1001 a websocket that receives nothing for this many seconds
        (None: never).
    :param handshake_timeout: seconds a client has to send its upgrade request.
    :param max_connections: websockets served at once (None: no limit); an upgrade beyond it is
        answered ``503 Service Unavailable`` with ``Retry-After: 1``.
    :param max_header_size: largest request head in bytes (servers that read it themselves);
        a larger one gets 431.
    :param max_pending_handshakes: handshakes in progress, at most (servers that accept
        connections themselves; see :func:`~wsloop.servers.limits.pending_limit`).
    :param max_buffered: unsent output a websocket whose peer has fallen behind may hold (None:
        the driver's default, 16 MiB); past it the connection is dropped, ``closed(1008)``.
    :param serve_page: answer a plain ``GET /`` (or ``HEAD /``) with the demo page.
    :param health: answer a plain ``GET``/``HEAD`` of its path: 200, or 503 once draining.
    """

    protocols: Sequence[str] | None = None
    heartbeat_freq: float | None = None
    max_message_size: int | None | Unset = UNSET
    compression: bool | DeflateOptions = True
    close_timeout: float | Unset = UNSET
    idle_timeout: float | None | Unset = UNSET
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_connections: int | None = None
    max_header_size: int = MAX_HEADER_SIZE
    max_pending_handshakes: int | None | Unset = UNSET
    max_buffered: int | None = None
    serve_page: bool = True
    health: HealthCheck | None = None

    @classmethod
    def of(cls, options: ServeOptions | None = None, /, **given: Any) -> ServeOptions:
        """``options`` (default: all unset) with the options in ``given`` replaced; an
        :data:`UNSET` value in ``given`` leaves the option as it is. Unknown names raise
        :class:`TypeError`."""
        base = options if options is not None else cls()
        changes = {name: value for name, value in given.items() if value is not UNSET}
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"unknown server option(s): {', '.join(sorted(unknown))}")
        return replace(base, **changes) if changes else base

    @classmethod
    def embedded(cls, options: ServeOptions | None = None, /, **given: Any) -> ServeOptions:
        """As :meth:`of`, for an upgrade endpoint inside an application (ws4py's WSGI
        application, the CherryPy tool): the demo page is off unless ``options`` or
        ``serve_page=True`` turn it on."""
        return cls.of(options if options is not None else cls(serve_page=False), **given)

    def close_timeout_for(self, handler_cls: type[WebSocket]) -> float:
        """The close timeout in force: the option, else the handler class's."""
        return handler_cls.close_timeout if self.close_timeout is UNSET else self.close_timeout

    def pending_handshakes(self, default: int | None) -> int | None:
        """``max_pending_handshakes``, or ``default`` when it is not given."""
        return default if self.max_pending_handshakes is UNSET else self.max_pending_handshakes


_FIELDS = frozenset(f.name for f in fields(ServeOptions))


def check_capacity(served: Sized, max_connections: int | None, upcoming: int = 0) -> None:
    """Refuse an upgrade when ``served`` (plus ``upcoming``: upgrades accepted and not yet handed
    over) already holds ``max_connections`` websockets: :class:`~wsloop.exc.HandshakeError` 503
    with ``Retry-After: 1``. No limit when ``max_connections`` is None."""
    if max_connections is not None and len(served) + upcoming >= max_connections:
        raise HandshakeError("server at its connection limit", 503, [("Retry-After", "1")])


# ---------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with an HTTP error and close the connection (a failed upgrade may be followed by
    frames, not by another request)."""

    status: int
    headers: list[tuple[str, str]]  # Content-Type and any extra header (Retry-After, ...)
    body: bytes

    @classmethod
    def of(cls, error: HandshakeError) -> Reject:
        return cls(
            error.status,
            [("Content-Type", "text/plain; charset=utf-8"), *error.headers],
            (error.reason + "\n").encode("utf-8"),
        )

    @property
    def status_line(self) -> str:
        """``"400 Bad Request"``."""
        return f"{self.status} {status_phrase(self.status)}"

    def to_bytes(self) -> bytes:
        """The whole response, for a server that writes to the socket itself."""
        return _http_bytes(self.status_line, self.headers, self.body, self.body)


@dataclass(frozen=True, slots=True)
class Page:
    """Answer a plain ``GET /`` or ``HEAD /`` with the demo page (or a health check, 200 or 503)."""

    body: bytes
    head: bool = False  # a HEAD request: the headers only
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", _HTML)])

    @property
    def status_line(self) -> str:
        return f"{self.status} {status_phrase(self.status)}"

    def to_bytes(self) -> bytes:
        return _http_bytes(self.status_line, self.headers, self.body, b"" if self.head else self.body)


@dataclass(frozen=True, slots=True)
class Accept:
    """Upgrade: send the 101 (``headers``, or ``response`` as bytes), then serve ``websocket``
    with a driver, feeding it ``received`` (bytes the client sent after its request) first."""

    headers: list[tuple[str, str]]
    response: bytes
    websocket: WebSocket
    received: bytes = b""
    status: int = 101

    @property
    def status_line(self) -> str:
        return "101 Switching Protocols"


Decision: TypeAlias = Reject | Page | Accept


_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"


def _http_bytes(status_line: str, headers: list[tuple[str, str]], body: bytes, sent: bytes) -> bytes:
    length = ("Content-Length", str(len(body)))
    return head_bytes(status_line, [*headers, length, ("Connection", "close")]) + sent


def demo_page() -> bytes:
    """The built-in HTML page served at ``/``."""
    return importlib.resources.files("wsloop").joinpath("static/demo.html").read_bytes()


# ---------------------------------------------------------------------- the policy


class ServerPolicy:
    """Decides every upgrade of a server: ``handler_cls`` websockets under ``options``.

    :meth:`decide` takes a parsed request; :meth:`respond` the bytes received so far (servers
    that read the request themselves). Both return a :data:`Decision`; neither does any I/O.
    """

    def __init__(self, handler_cls: type[WebSocket], options: ServeOptions | None = None) -> None:
        options = options if options is not None else ServeOptions()
        self.handler_cls = handler_cls
        self.options = options
        self.protocols = list(options.protocols) if options.protocols else None
        self.compression = choose(handler_cls.compression, options.compression)
        #: Seconds each websocket waits for the closing handshake (the option, else the class's).
        self.close_timeout = options.close_timeout_for(handler_cls)
        self._kwargs: dict[str, Any] = {}
        if options.max_message_size is not UNSET:
            self._kwargs["max_message_size"] = options.max_message_size
        # A handler whose constructor is WebSocket's (not overridden: it cannot read the environ
        # argument) built by this class's make_websocket gets its environ built on first use.
        self._lazy_environ = (
            handler_cls.__init__ is WebSocket.__init__
            and type(self).make_websocket is ServerPolicy.make_websocket
        )
        self._heads: dict[bytes, bytes] = {}  # LazyEnviron's shared request heads (bounded)

    def respond(
        self,
        data: bytes,
        sock: socket.socket,
        peer: Any = None,
        served: Sized | None = None,
        upcoming: int = 0,
    ) -> Decision | None:
        """The decision for the request at the start of ``data`` (None while it is incomplete),
        bounded by ``max_header_size``; the bytes after it go to :attr:`Accept.received`."""
        try:
            parsed = parse_request(data, self.options.max_header_size)
        except HandshakeError as exc:
            logger.debug("handshake refused (%s %s)", exc.status, exc.reason)
            return Reject.of(exc)
        if parsed is None:
            return None
        request, length = parsed
        environ: Any = None
        if self._lazy_environ and peer is not None:
            # Built only if the handler reads ws.environ (WebSocket.environ builds it): most never
            # do, and it is kept for as long as the connection is open.
            environ = LazyEnviron(
                data if length == len(data) else data[:length],
                request.key,
                peer,
                isinstance(sock, ssl.SSLSocket),
                self._heads,
            )
        return self.decide(
            request,
            sock,
            environ=environ,
            peer=peer,
            served=served,
            upcoming=upcoming,
            received=data[length:] if length < len(data) else b"",
        )

    def decide(
        self,
        request: Request,
        sock: socket.socket | None,
        *,
        environ: dict[str, Any] | None = None,
        peer: Any = None,
        served: Sized | None = None,
        upcoming: int = 0,
        admit: Callable[[], None] | None = None,
        received: bytes = b"",
    ) -> Decision:
        """Answer ``request``, made on the connection ``sock`` (None: the server does not expose
        it; an upgrade then gets 500).

        ``environ``: the handler's ``environ`` (default: one made from the request, ``sock`` and
        ``peer``). ``served``: what ``len()`` counts the websockets served with, for
        ``max_connections`` (with ``upcoming`` upgrades accepted and not handed over yet; None:
        no check here). ``admit``: a last check of the server's own before the handler is
        created, raising :class:`~wsloop.exc.HandshakeError` to refuse.
        """
        options = self.options
        try:
            if not request.is_upgrade and request.method in ("GET", "HEAD"):
                if options.health is not None and request.path.partition("?")[0] == options.health.path:
                    status, body = options.health.answer()
                    return Page(body, request.method == "HEAD", status, [("Content-Type", _TEXT)])
                if options.serve_page and request.path.partition("?")[0] == "/":
                    return Page(demo_page(), head=request.method == "HEAD")
                raise HandshakeError("this is a WebSocket endpoint: send an Upgrade request")
            accepted = accept(request, self.protocols, self.compression, policy=self.handler_cls)
            if served is not None:
                check_capacity(served, options.max_connections, upcoming)
            if admit is not None:
                admit()
            if sock is None:
                raise HandshakeError("the server does not expose the connection's socket", 500)
        except HandshakeError as exc:
            logger.debug("handshake refused (%s %s)", exc.status, exc.reason)
            return Reject.of(exc)
        try:
            ws = self.make_websocket(
                sock,
                [accepted.subprotocol] if accepted.subprotocol else None,
                accepted.extensions or None,
                environ if environ is not None else request_environ(request, sock, peer),
                heartbeat_freq=options.heartbeat_freq,
                deflate=accepted.deflate,
                **self._kwargs,
            )
        except Exception:  # the user's constructor: log it, answer 500, keep serving
            logger.exception("error creating %s", self.handler_cls.__name__)
            return Reject.of(HandshakeError("internal server error", 500))
        ws.close_timeout = self.close_timeout
        if options.idle_timeout is not UNSET:
            ws.idle_timeout = options.idle_timeout
        return Accept(accepted.headers, accepted.response, ws, received)

    def make_websocket(
        self,
        sock: socket.socket,
        protocols: list[str] | None,
        extensions: list[str] | None,
        environ: dict[str, Any],
        **kwargs: Any,
    ) -> WebSocket:
        """Construct the websocket of an accepted upgrade (``kwargs``: ``heartbeat_freq``,
        ``deflate``, ``max_message_size``); an adapter may route this through its own hook."""
        return self.handler_cls(sock, protocols, extensions, environ, **kwargs)


# ---------------------------------------------------------------------- environ


def request_environ(request: Request, sock: socket.socket, peer: Any = None) -> dict[str, Any]:
    """A WSGI-style environ for a handshake request, as ws4py handlers expect in ``environ``.

    ``peer`` is the client's address if known (``accept()`` gives it), else it is asked of
    ``sock``. Every string but the key is interned: the names and most values are the same on
    every connection, and an environ is kept for as long as its connection is open.
    """
    if peer is None:
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
    return environ_of(request, peer, isinstance(sock, ssl.SSLSocket))
