"""WebSocket clients with ws4py's API, driven by a reactor: thousands of clients in one thread.

:class:`WebSocketBaseClient` is ws4py's base client (its handshake hooks, ``handshake_ok()``);
:class:`WebSocketClient` (also ``wsloop.client.threadedclient``'s) is the usual one. The TCP
connect, TLS and upgrade run on a reactor without blocking (by default one shared by every client,
:func:`shared_reactor`); ``handshake_ok()`` then hands the client to a driver.
"""

from __future__ import annotations

import atexit
import base64
import errno
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .. import WS_KEY, WS_VERSION
from ..deflate import DeflateOptions, client_accept, client_offer
from ..exc import HandshakeError, StreamClosed
from ..handshake import (
    MAX_HEADER_SIZE,
    Response,
    client_headers,
    parse_response,
    request_head,
    validate_response,
)
from ..headers import split_header_list
from ..poller.reactor import EVENT_READ, EVENT_WRITE, Handler, Reactor
from ..protocol import OPEN
from ..transport import TimerHandle, Transport
from ..websocket import SendPayload, WebSocket

__all__ = [
    "WebSocketClient",
    "WebSocketBaseClient",
    "CLIENT_DEFLATE",
    "WS_KEY",
    "WS_VERSION",
    "parse_url",
    "shared_reactor",
]

logger = logging.getLogger("wsloop.client")

_DEFAULT_PORTS = {"ws": 80, "wss": 443, "ws+unix": 0}

#: The client's permessage-deflate offer: the server's window as on our servers (12 bits), and
#: ``client_no_context_takeover``: the client resets its compressor after each message, so an
#: idle client connection holds no compressor (thousands of clients stay small), and a server
#: that wants the client to reset (which RFC 7692 lets it ask) finds the offer acceptable.
CLIENT_DEFLATE = DeflateOptions(client_no_context_takeover=True)


#: Seconds the interpreter's exit waits at most for the shared client reactor (see
#: :func:`shared_reactor`) to write its clients' pending output and finish the closing
#: handshakes in progress.
EXIT_TIMEOUT = 5.0


class _Shared:
    """The reactor clients share when given none (made and started on first use), and the
    clients the interpreter's exit waits for (``daemon = False``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reactor: Reactor | None = None
        self.at_exit = False
        self.kept: set[WebSocketClient] = set()

    def get(self) -> Reactor:
        with self.lock:
            reactor = self.reactor
            if reactor is None or reactor.finished:
                reactor = self.reactor = Reactor()
                reactor.start()
                self._register_exit_hook()
            return reactor

    def _register_exit_hook(self) -> None:
        if not self.at_exit:  # under self.lock
            self.at_exit = True
            atexit.register(self.exit_hook)

    def keep(self, client: WebSocketClient, kept: bool) -> None:
        """Make the exit wait (``kept``), or not, for ``client`` to end."""
        with self.lock:
            if kept:
                self.kept.add(client)
                self._register_exit_hook()
            else:
                self.kept.discard(client)

    def exit_hook(self) -> None:
        """At the interpreter's exit: wait for the non-daemon clients to end (as for ws4py's
        non-daemon client threads), then let the shared reactor thread (a daemon) finish its
        clients' work."""
        while True:
            with self.lock:
                waiting = [client for client in self.kept if not client._done.is_set()]
            if not waiting:
                break
            for client in waiting:
                while not client._done.wait(0.1):
                    driver = client.reactor
                    if driver is None or not driver.running:  # nothing left to end it
                        self.keep(client, False)
                        break
        reactor = self.reactor
        if reactor is not None and not _settle(reactor, EXIT_TIMEOUT):
            logger.warning("exiting with client output unsent after %ss", EXIT_TIMEOUT)


_shared = _Shared()


def shared_reactor() -> Reactor:
    """The reactor every client made without ``reactor=`` connects on (and, by default, is
    driven by).

    Its thread is a daemon, which does not keep the program alive; the first use registers an
    exit hook that waits for the clients whose ``daemon`` is False to end, then (at most
    :data:`EXIT_TIMEOUT` seconds) until every client's queued output is written and every
    closing handshake in progress has finished, so a script that sends and exits loses nothing.
    """
    return _shared.get()


def _settle(reactor: Reactor, timeout: float) -> bool:
    """Wait until ``reactor``'s websockets have written their queued output and those closing
    have finished (clients still in their handshake with output queued count too); False if
    ``timeout`` passed first. From a thread other than the reactor's (it returns True at once
    on that thread, or when the reactor is not running)."""
    if reactor.in_loop() or not reactor.running:
        return True
    done = threading.Event()

    def check(delay: float) -> None:
        # In the loop, after the calls other threads queued before (their sends are framed).
        if any(_unsettled(ws) for ws in reactor) or any(
            _unsettled(connector.client) for connector in tuple(_connecting) if connector.reactor is reactor
        ):
            delay = min(max(delay * 2, 0.001), 0.05)
            reactor.call_later(delay, check, delay)
        else:
            done.set()

    reactor.call_soon_threadsafe(check, 0.0)
    deadline = time.monotonic() + timeout
    while reactor.running:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if done.wait(min(remaining, 0.1)):
            break
    return True


def _unsettled(ws: WebSocket) -> bool:
    """Whether ``ws`` has output to write or a closing handshake to finish."""
    if ws.ended:
        return False
    stream = ws.stream
    if stream.state is not OPEN:
        return True
    if ws.transport is None:
        return bool(stream.outgoing)  # still connecting: what it sent waits for the handshake
    return bool(ws.transport.unsent())


def parse_url(url: str) -> tuple[str, str, int, str]:
    """Split a ``ws://``, ``wss://`` or ``ws+unix://`` URL into (scheme, host, port, resource).

    For ``ws+unix:///path/to/socket`` the host is the socket's path, the port 0 and the resource
    ``/``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (ws, wss or ws+unix)")
    if scheme == "ws+unix":
        if not parts.path:
            raise ValueError(f"no socket path in {url!r}")
        return scheme, parts.path, 0, "/"
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return scheme, parts.hostname, port, resource


class WebSocketBaseClient(WebSocket):
    """ws4py's base client: one client connection, its opening handshake run by a reactor.

    :param url: ``ws://host[:port]/path``, ``wss://...`` or ``ws+unix:///path/to/socket``
        (then :attr:`host` is ``'localhost'``, :attr:`unix_socket_path` the socket's path and
        :attr:`resource` ``/``; set it before :meth:`connect` for another one).
    :param protocols: subprotocols to offer, by preference; after the handshake, the one the
        server chose (ws4py's behaviour): ``[chosen]`` or ``[]``.
    :param extensions: extension offers to send as they are (``permessage-deflate`` is offered
        on top of these unless ``compression`` is None); after the handshake, those the server
        accepted.
    :param heartbeat_freq: seconds between keepalive pings (an unanswered one closes with 1011).
    :param ssl_options: for ``wss://``: an :class:`ssl.SSLContext`, or ws4py's dict of
        options (``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs``, ``check_hostname``,
        ``server_hostname``, ``ciphers``, or ``context``). Default: the system's trusted CAs,
        with host name checking.
    :param headers: extra ``(name, value)`` request headers; one named like a default header
        (``Origin``, ``Host``, ...) replaces it.
    :param exclude_headers: names of default headers not to send (ws4py's option).
    :param reactor: the :class:`~wsloop.poller.Reactor` that connects the client and, unless
        :meth:`handshake_ok` hands it elsewhere, drives it (default: one shared by all clients
        of the process, see :func:`shared_reactor`).
    :param handshake_timeout: seconds for the TCP connect, TLS and the opening handshake.

    The handshake's response goes through :meth:`process_response_line` and
    :meth:`process_handshake_header` (a subclass may override them), then
    :meth:`handshake_ok` runs, on the connecting reactor's thread, before any message.
    """

    #: permessage-deflate offer (None: offer none); see :data:`CLIENT_DEFLATE`.
    compression: DeflateOptions | None = CLIENT_DEFLATE

    def __init__(
        self,
        url: str,
        protocols: list[str] | None = None,
        extensions: list[str] | None = None,
        heartbeat_freq: float | None = None,
        ssl_options: ssl.SSLContext | Mapping[str, Any] | None = None,
        headers: Iterable[tuple[str, str]] | None = None,
        exclude_headers: Iterable[str] | None = None,
        *,
        reactor: Reactor | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        super().__init__(None, protocols, extensions, heartbeat_freq=heartbeat_freq, client=True)
        self.url = url
        self.scheme, host, port, self.resource = parse_url(url)
        #: The Unix socket's path for ``ws+unix://`` (ws4py's attribute), else None.
        self.unix_socket_path: str | None = None
        self.host = host
        self.port: int | None = port
        if self.scheme == "ws+unix":
            self.unix_socket_path, self.host, self.port = host, "localhost", None
        #: The ``Sec-WebSocket-Key`` (base64 bytes, as ws4py's); set another before connecting.
        self.key: bytes = base64.b64encode(os.urandom(16))
        #: ws4py's dict of TLS options (``{}`` when none were given, as in ws4py, so a subclass
        #: may read it with ``.get()``), or the :class:`ssl.SSLContext` given instead.
        self.ssl_options: ssl.SSLContext | Mapping[str, Any] = ssl_options if ssl_options is not None else {}
        self.extra_headers = list(headers or ())
        self.exclude_headers = [name.lower() for name in exclude_headers or ()]
        self.reactor = reactor
        self.handshake_timeout = handshake_timeout
        #: The server's handshake response (status, reason, headers), once received.
        self.response: Response | None = None
        self._offered_extensions = list(extensions or ())
        if self.compression is not None:
            self._offered_extensions.append(client_offer(self.compression))
        self._received = b""  # bytes that came after the 101, for the driver that attaches it
        self._handshake_over = False  # handshake_ok() has returned, or the connect failed
        self._handshaken: threading.Event | None = None  # made only for a connect() that waits
        self._connected = threading.Event()  # attached to a driver, or the connect failed
        self._done = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------- handshake

    @property
    def bind_addr(self) -> str | tuple[str, int]:
        """The address to connect to: the Unix socket's path, or ``(host, port)`` (ws4py's)."""
        if self.unix_socket_path:
            return self.unix_socket_path
        return (self.host, self.port or _DEFAULT_PORTS[self.scheme])

    def _key_text(self) -> str:
        key = self.key
        return key.decode("ascii") if isinstance(key, bytes) else key

    @property
    def handshake_headers(self) -> list[tuple[str, str]]:
        """The request's headers (ws4py's attribute)."""
        if self.scheme == "ws+unix":
            host = "localhost"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            if self.port is not None and self.port != _DEFAULT_PORTS[self.scheme]:
                host = f"{host}:{self.port}"
        origin = f"{'https' if self.scheme == 'wss' else 'http'}://{host}"
        headers = client_headers(host, self._key_text(), self.protocols, self._offered_extensions, origin)
        replaced = {name.lower() for name, _ in self.extra_headers}
        excluded = set(self.exclude_headers) | replaced
        headers = [(name, value) for name, value in headers if name.lower() not in excluded]
        return headers + self.extra_headers

    @property
    def handshake_request(self) -> bytes:
        """The upgrade request's bytes (ws4py's attribute)."""
        return request_head(self.resource, self.handshake_headers)

    def process_response_line(self, response_line: bytes) -> None:
        """Check the response's status line (``b"HTTP/1.1 101 Switching Protocols"``): raise
        :class:`~wsloop.exc.HandshakeError` unless it is a 101 (ws4py's hook; a redirect is
        refused too)."""
        version, _, rest = response_line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/") or not code.isdigit():
            raise HandshakeError("malformed status line")
        status = int(code)
        if status == 101:
            return
        text = reason.decode("latin-1")
        if 300 <= status < 400:
            location = self.response.headers.get("location", "") if self.response is not None else ""
            raise HandshakeError(f"redirect ({status} to {location!r}) refused", status)
        raise HandshakeError(f"server answered {status} {text}", status)

    def process_handshake_header(self, headers: bytes) -> tuple[list[bytes], list[bytes]]:
        """Check the 101's header lines (``headers``: the bytes between the status line and the
        blank line, CRLF-separated) against the request: ``Upgrade``, ``Connection``,
        ``Sec-WebSocket-Accept``, and that the subprotocol and extensions chosen were offered.
        Returns (subprotocols, extensions) the server chose, as bytes (ws4py's hook); raises
        :class:`~wsloop.exc.HandshakeError`."""
        parsed = parse_response(b"HTTP/1.1 101 Switching Protocols\r\n" + headers + b"\r\n\r\n", 1 << 62)
        if parsed is None:
            raise HandshakeError("malformed response headers")
        subprotocol, chosen = validate_response(
            parsed[0], self._key_text(), self.protocols, self._offered_extensions
        )
        protocols = [subprotocol.encode("latin-1")] if subprotocol else []
        return protocols, [ext.encode("latin-1") for ext in chosen]

    def handshake_ok(self) -> None:
        """Called once the upgrade has succeeded, before any message (ws4py's hook), on the
        reactor that connected the client. This one hands the client to that reactor, which
        calls :meth:`opened` and drives it. An override may hand it to another driver instead
        (``manager.add(self)``, as ws4py's manager recipe does); bytes the server sent right
        after its 101 go to whichever driver attaches it."""
        reactor = self.reactor if self.reactor is not None else _shared.get()
        reactor.add(self)

    def _handshake_done(self, data: bytes) -> int | None:
        """Check the response at the start of ``data`` (through :meth:`process_response_line`
        and :meth:`process_handshake_header`); the length of its head once complete, None while
        incomplete. Raises :class:`~wsloop.exc.HandshakeError`."""
        parsed = parse_response(data, MAX_HEADER_SIZE)
        if parsed is None:
            return None
        response, length = parsed
        self.response = response
        status_line, _, header_lines = data[: length - 4].partition(b"\r\n")
        self.process_response_line(status_line)
        protocols, extensions = self.process_handshake_header(header_lines)
        for ext in split_header_list(response.headers.get("sec-websocket-extensions", "")):
            if ext.split(";")[0].strip().lower() == "permessage-deflate":
                if self.compression is None or self.stream.deflate is not None:
                    raise HandshakeError(f"unexpected extension {ext!r}")
                self.stream.deflate = client_accept(ext, self.compression)
        self.protocols = [_text(value) for value in protocols]
        self.extensions = [_text(value) for value in extensions]
        return length

    def connect(self, wait: bool = True) -> None:
        """Open the connection: TCP, TLS for ``wss://``, then the opening handshake, after which
        :meth:`handshake_ok` runs.

        With ``wait`` (the default, and ws4py's behaviour) this returns once
        :meth:`handshake_ok` has returned, raising :class:`~wsloop.exc.HandshakeError` or
        :class:`OSError` if the connection could not be made. With ``wait=False`` it returns at
        once; a failure then shows as ``closed(1006, reason)``. Called on the reactor's own
        thread (from a callback, to reconnect say) it never waits.
        """
        reactor = self.reactor if self.reactor is not None else _shared.get()
        self.reactor = reactor
        if self._handshake_over or self.sock is not None:
            raise RuntimeError("connect() was already called on this client")
        self._connecting()
        try:
            sock = self._open_socket()
        except OSError as exc:
            self._fail_early(exc)
            if wait:
                raise
            return
        self.sock = sock
        connector = _Connector(self, reactor, sock)
        if reactor.in_loop():
            connector.start()
            return
        # Set once handshake_ok() has returned, or on failure; made before the connector can run.
        waiter = self._handshaken = threading.Event() if wait else None
        reactor.call_soon_threadsafe(connector.start)
        if waiter is not None:
            # The margin covers a reactor that drops the connection without finishing it (a
            # reactor stopping).
            done = waiter.wait(self.handshake_timeout + 5.0)
            self._handshaken = None
            if not done:
                raise TimeoutError(f"no WebSocket connection to {self.url}")
            if self._error is not None:
                raise self._error

    def _connecting(self) -> None:
        """connect() has begun (a subclass's hook)."""

    def _handshake_completed(self, rest: bytes) -> None:
        """(On the connecting reactor's thread.) The upgrade succeeded and the reactor let go of
        the socket: run :meth:`handshake_ok`; ``rest`` (bytes after the 101) waits for the
        driver that attaches the client."""
        self._received = rest
        try:
            self.handshake_ok()
        except Exception as exc:
            if self.transport is None:  # not handed to a driver: the connection fails
                logger.exception("error in %s.handshake_ok", type(self).__name__)
                sock = self.sock
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
                self._fail_early(exc)
            else:
                self._handler_failed(exc)
        finally:
            self._end_handshake()

    def _end_handshake(self) -> None:
        """handshake_ok() has returned, or the connection failed: release connect()."""
        self._handshake_over = True
        waiter = self._handshaken
        if waiter is not None:
            waiter.set()

    def attach(self, transport: Transport) -> None:
        """Bind to the driver (then ``opened()``, then the bytes that came after the 101). A
        client served by a reactor records it as :attr:`reactor`. Only now may a ``send()`` from
        another thread go ahead (it finds the transport, not a protocol another thread is
        attaching)."""
        try:
            driver = getattr(transport, "reactor", None)
            if isinstance(driver, Reactor):
                self.reactor = driver
            super().attach(transport)
            received, self._received = self._received, b""
            if received and not self._finished:
                self.process(received)
        finally:
            self._connected.set()

    def send(self, payload: SendPayload, binary: bool = False) -> None:
        """Send a message (see :meth:`wsloop.websocket.WebSocket.send`). From a thread other
        than the reactor's while the handshake is in progress (after ``connect(wait=False)``),
        or before the driver :meth:`handshake_ok` handed it to has attached it, it first waits
        for that (at most ``handshake_timeout``), then sends, or raises
        :class:`~wsloop.exc.StreamClosed` if the connection could not be made."""
        if self.transport is None and self.sock is not None:
            self._await_connection()
            if self._finished:
                raise StreamClosed("Cannot send on a terminated websocket")
        super().send(payload, binary)

    def close(self, code: int = 1000, reason: str | bytes = "") -> None:
        """Start the closing handshake (see :meth:`wsloop.websocket.WebSocket.close`: from a
        thread other than the reactor's, it returns once the close frame is written). During
        the handshake, from another thread, it waits for the connection first."""
        if self.transport is None and self.sock is not None:
            self._await_connection()
        super().close(code, reason)

    def _await_connection(self) -> None:
        # The driver's thread attaches the connection (flushing what was queued before it) and
        # owns the protocol from then on: another thread must not write to it meanwhile.
        reactor = self.reactor
        if reactor is not None and not reactor.in_loop():
            self._connected.wait(self.handshake_timeout + 5.0)

    def run_forever(self, timeout: float | None = None) -> bool:
        """Block until the connection has ended and :meth:`closed` has run (ws4py's method).

        Returns False if ``timeout`` passed first.
        """
        if self.reactor is not None and self.reactor.in_loop():
            raise RuntimeError("run_forever() would block the reactor it waits for")
        return self._done.wait(timeout)

    def _open_socket(self) -> socket.socket:
        bind_addr = self.bind_addr
        address: Any = bind_addr
        if isinstance(bind_addr, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            family, kind, proto, _, address = socket.getaddrinfo(
                bind_addr[0], bind_addr[1], 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            sock.close()
            raise OSError(err, f"connect to {self.url}: {errno.errorcode.get(err, err)}")
        return sock

    def _ssl_context(self) -> ssl.SSLContext:
        options = self.ssl_options
        if isinstance(options, ssl.SSLContext):
            return options
        options = dict(options or {})
        context = options.pop("context", None)
        if context is not None:
            return context  # type: ignore[no-any-return]
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.pop("ca_certs", None))
        if "certfile" in options:
            context.load_cert_chain(options.pop("certfile"), options.pop("keyfile", None))
        if "ciphers" in options:
            context.set_ciphers(options.pop("ciphers"))
        cert_reqs = options.pop("cert_reqs", None)
        check_hostname = options.pop("check_hostname", None)
        if cert_reqs == ssl.CERT_NONE:
            context.check_hostname = False
        if check_hostname is not None:
            context.check_hostname = bool(check_hostname)
        if cert_reqs is not None:
            context.verify_mode = cert_reqs
        options.pop("server_hostname", None)
        if options:
            logger.warning("ignored ssl_options: %s", ", ".join(sorted(options)))
        return context

    def _server_hostname(self) -> str:
        options = self.ssl_options
        if isinstance(options, Mapping) and options.get("server_hostname"):
            return str(options["server_hostname"])
        return self.host

    def _fail_early(self, exc: BaseException) -> None:
        """The connection could not be opened: report it to connect() and to closed()."""
        self._error = exc
        self._end_handshake()
        self._connected.set()
        if not self._finished:
            self._finished = True
            self._call_closed(1006, f"handshake failed: {exc}")

    def _call_closed(self, code: int, reason: str) -> None:
        try:
            super()._call_closed(code, reason)
        finally:
            self._done.set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class WebSocketClient(WebSocketBaseClient):
    """The usual client (ws4py's ``ws4py.client.threadedclient.WebSocketClient``): a
    :class:`WebSocketBaseClient` that its reactor drives once connected, with ws4py's
    :attr:`daemon` and :meth:`run_forever`. It has no thread of its own: a reactor thread drives
    thousands of clients.
    """

    _daemon = True  # see daemon

    @property
    def daemon(self) -> bool:
        """ws4py's flag (True by default): False makes the interpreter's exit wait until this
        client's connection has ended (as for a non-daemon thread), however long that takes."""
        return self._daemon

    @daemon.setter
    def daemon(self, flag: bool) -> None:
        self._daemon = bool(flag)
        if self.sock is not None or self._handshake_over:  # connect() was called
            _shared.keep(self, not self._daemon and not self._done.is_set())

    def _connecting(self) -> None:
        if not self._daemon:
            _shared.keep(self, True)

    def _call_closed(self, code: int, reason: str) -> None:
        try:
            super()._call_closed(code, reason)
        finally:
            _shared.keep(self, False)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


# Connector states
_CONNECTING = 0
_TLS = 1
_SENDING = 2
_READING = 3

#: The handshakes in progress, every reactor's (touched on their reactors' threads only).
_connecting: set[_Connector] = set()


class _Connector(Handler):
    """One client's connect, TLS and opening handshake, inside the reactor, without blocking."""

    __slots__ = ("client", "reactor", "sock", "state", "out", "data", "timer")

    def __init__(self, client: WebSocketBaseClient, reactor: Reactor, sock: socket.socket) -> None:
        self.client = client
        self.reactor = reactor
        self.sock = sock
        self.state = _CONNECTING
        self.out = client.handshake_request
        self.data = b""
        self.timer: TimerHandle | None = None

    def start(self) -> None:
        _connecting.add(self)
        self.timer = self.reactor.call_later(self.client.handshake_timeout, self._timed_out)
        try:
            self.reactor.add_handler(self.sock, self, EVENT_WRITE)
        except (OSError, ValueError) as exc:
            self.fail(exc)

    def on_write(self) -> None:
        if self.state == _CONNECTING:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(
                    ConnectionRefusedError(
                        err, f"connect to {self.client.url}: {errno.errorcode.get(err, err)}"
                    )
                )
                return
            if self.client.scheme == "wss":
                try:
                    self.sock = self.client._ssl_context().wrap_socket(
                        self.sock,
                        server_hostname=self.client._server_hostname(),
                        do_handshake_on_connect=False,
                    )
                except (OSError, ValueError) as exc:
                    self.fail(exc)
                    return
                self.client.sock = self.sock
                self.state = _TLS
                self._tls()
                return
            self.state = _SENDING
        if self.state == _TLS:
            self._tls()
        elif self.state == _SENDING:
            self._send()

    def on_read(self) -> None:
        if self.state == _TLS:
            self._tls()
        elif self.state == _READING:
            self._receive()

    def _tls(self) -> None:
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(EVENT_WRITE)
            return
        except (OSError, ValueError) as exc:
            self.fail(exc)
            return
        self.state = _SENDING
        self._send()

    def _send(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            self._watch(EVENT_WRITE)
            return
        except ssl.SSLWantReadError:
            self._watch(EVENT_READ)
            return
        except OSError as exc:
            self.fail(exc)
            return
        self.out = self.out[sent:]
        if self.out:
            self._watch(EVENT_WRITE)
            return
        self.state = _READING
        self._watch(EVENT_READ)

    def _receive(self) -> None:
        sock = self.sock
        while True:
            try:
                chunk = sock.recv(MAX_HEADER_SIZE + 1)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                return
            except OSError as exc:
                self.fail(exc)
                return
            if not chunk:
                self.fail(HandshakeError("the server closed the connection during the handshake"))
                return
            self.data += chunk
            try:
                length = self.client._handshake_done(self.data)
            except HandshakeError as exc:
                self.fail(exc)
                return
            if length is not None:
                self._finish(self.data[length:])
                return
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def _watch(self, events: int) -> None:
        self.reactor.set_handler_events(self.sock, self, events)

    def _finish(self, rest: bytes) -> None:
        _connecting.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.reactor.remove_handler(self.sock)
        self.client._handshake_completed(rest)  # handshake_ok(); then connect() returns

    def _timed_out(self) -> None:
        self.fail(
            TimeoutError(
                f"no WebSocket connection to {self.client.url} within {self.client.handshake_timeout}s"
            )
        )

    def fail(self, exc: BaseException) -> None:
        _connecting.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.reactor.remove_handler(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        logger.debug("connection to %s failed: %s", self.client.url, exc)
        self.client._fail_early(exc)

    def close(self) -> None:
        """The reactor is stopping: the handshake will not complete."""
        self.fail(ConnectionAbortedError("the reactor stopped"))
