"""A WebSocket client with ws4py's API (``WebSocketClient``), driven by a reactor: thousands of
clients in one thread.

Clients without a ``reactor=`` share one reactor thread (:func:`shared_reactor`), started on first
use; the TCP connect, TLS and upgrade run there without blocking, bounded by
``handshake_timeout``. ``close()`` from another thread returns once the close frame is written,
and the interpreter's exit waits for queued output, so a script may send, close and end.
"""

from __future__ import annotations

import atexit
import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..deflate import DeflateOptions, client_accept, client_offer
from ..exc import HandshakeError, StreamClosed
from ..handshake import (
    MAX_HEADER_SIZE,
    client_headers,
    new_key,
    parse_response,
    request_head,
    validate_response,
)
from ..poller.reactor import EVENT_READ, EVENT_WRITE, Handler, Reactor
from ..protocol import OPEN
from ..transport import TimerHandle, Transport
from ..websocket import SendPayload, WebSocket

__all__ = ["WebSocketClient", "WebSocketBaseClient", "CLIENT_DEFLATE", "parse_url", "shared_reactor"]

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
    """The reactor clients share when given none (made and started on first use)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reactor: Reactor | None = None
        self.at_exit = False

    def get(self) -> Reactor:
        with self.lock:
            reactor = self.reactor
            if reactor is None or reactor.finished:
                reactor = self.reactor = Reactor()
                reactor.start()
                if not self.at_exit:
                    self.at_exit = True
                    atexit.register(self.exit_hook)
            return reactor

    def exit_hook(self) -> None:
        """At the interpreter's exit: let the reactor thread (a daemon) finish its clients' work."""
        reactor = self.reactor
        if reactor is not None and not _settle(reactor, EXIT_TIMEOUT):
            logger.warning("exiting with client output unsent after %ss", EXIT_TIMEOUT)


_shared = _Shared()


def shared_reactor() -> Reactor:
    """The reactor every :class:`WebSocketClient` made without ``reactor=`` runs on.

    Its thread is a daemon, which does not keep the program alive; the first use registers an
    exit hook that waits (at most :data:`EXIT_TIMEOUT` seconds) until every client's queued
    output is written and every closing handshake in progress has finished, so a script that
    sends and exits loses nothing.
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
        if any(_unsettled(ws) for ws in reactor.websockets) or any(
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


class WebSocketClient(WebSocket):
    """A client connection with ws4py's ``WebSocketClient`` API, served by a reactor.

    :param url: ``ws://host[:port]/path``, ``wss://...`` or ``ws+unix:///path/to/socket``.
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
    :param reactor: the :class:`~wsloop.poller.Reactor` to run on (default: one shared by all
        clients of the process, see :func:`shared_reactor`).
    :param handshake_timeout: seconds for the TCP connect, TLS and the opening handshake.
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
        self.scheme, self.host, self.port, self.resource = parse_url(url)
        self.key = new_key()
        self.ssl_options = ssl_options
        self.extra_headers = list(headers or ())
        self.exclude_headers = [name.lower() for name in exclude_headers or ()]
        self.reactor = reactor
        self.handshake_timeout = handshake_timeout
        #: The server's handshake response (status, reason, headers), once received.
        self.response: Any = None
        self._offered_extensions = list(extensions or ())
        if self.compression is not None:
            self._offered_extensions.append(client_offer(self.compression))
        self._connected = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------- handshake

    @property
    def handshake_headers(self) -> list[tuple[str, str]]:
        """The request's headers (ws4py's attribute)."""
        if self.scheme == "ws+unix":
            host = "localhost"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            if self.port != _DEFAULT_PORTS[self.scheme]:
                host = f"{host}:{self.port}"
        origin = f"{'https' if self.scheme == 'wss' else 'http'}://{host}"
        headers = client_headers(host, self.key, self.protocols, self._offered_extensions, origin)
        replaced = {name.lower() for name, _ in self.extra_headers}
        excluded = set(self.exclude_headers) | replaced
        headers = [(name, value) for name, value in headers if name.lower() not in excluded]
        return headers + self.extra_headers

    @property
    def handshake_request(self) -> bytes:
        """The upgrade request's bytes (ws4py's attribute)."""
        return request_head(self.resource, self.handshake_headers)

    def connect(self, wait: bool = True) -> None:
        """Open the connection: TCP, TLS for ``wss://``, then the opening handshake.

        With ``wait`` (the default, and ws4py's behaviour) this returns once :meth:`opened` has
        been scheduled, raising :class:`~wsloop.exc.HandshakeError` or :class:`OSError` if the
        connection could not be made. With ``wait=False`` it returns at once; a failure then
        shows as ``closed(1006, reason)``. Called on the reactor's own thread (from a callback,
        to reconnect say) it never waits.
        """
        reactor = self.reactor if self.reactor is not None else _shared.get()
        self.reactor = reactor
        if self._connected.is_set() or self.sock is not None:
            raise RuntimeError("connect() was already called on this client")
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
        reactor.call_soon_threadsafe(connector.start)
        if wait:
            # Set once attached to its driver (see attach()), or on failure; the margin covers a
            # driver that drops the connection without attaching it (a reactor stopping).
            if not self._connected.wait(self.handshake_timeout + 5.0):
                raise TimeoutError(f"no WebSocket connection to {self.url}")
            if self._error is not None:
                raise self._error

    def attach(self, transport: Transport) -> None:
        """Bind to the driver (then ``opened()``); only now may ``connect()`` return, so that a
        ``send()`` right after it finds the transport (not a protocol another thread is
        attaching)."""
        try:
            super().attach(transport)
        finally:
            self._connected.set()

    def send(self, payload: SendPayload, binary: bool = False) -> None:
        """Send a message (see :meth:`wsloop.websocket.WebSocket.send`). From a thread other
        than the reactor's while the handshake is in progress (after ``connect(wait=False)``),
        it first waits for the connection (at most ``handshake_timeout``), then sends, or raises
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
        # The reactor's thread attaches the connection (flushing what was queued before it) and
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
        if self.scheme == "ws+unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.host
        else:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
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

    def _handshake_done(self, data: bytes) -> int | None:
        """Check the response at the start of ``data``; the length of its head once complete."""
        parsed = parse_response(data, MAX_HEADER_SIZE)
        if parsed is None:
            return None
        response, length = parsed
        self.response = response
        subprotocol, chosen = validate_response(response, self.key, self.protocols, self._offered_extensions)
        accepted: list[str] = []
        for ext in chosen:
            if ext.split(";")[0].strip().lower() == "permessage-deflate":
                if self.compression is None or self.stream.deflate is not None:
                    raise HandshakeError(f"unexpected extension {ext!r}")
                self.stream.deflate = client_accept(ext, self.compression)
            accepted.append(ext)
        self.protocols = [subprotocol] if subprotocol else []
        self.extensions = accepted
        return length

    def _fail_early(self, exc: BaseException) -> None:
        """The connection could not be opened: report it to connect() and to closed()."""
        self._error = exc
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


#: ws4py's name for the client base class (``ws4py.client.WebSocketBaseClient``).
WebSocketBaseClient = WebSocketClient


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

    def __init__(self, client: WebSocketClient, reactor: Reactor, sock: socket.socket) -> None:
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
        self.reactor.add(self.client, received=rest)  # attach() releases connect()

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
