"""ws4py's gevent client (``ws4py.client.geventclient.WebSocketClient``) on wsloop's core.

The connect, TLS and opening handshake are cooperative (gevent's hub waits, whether or not the
program monkey-patched); :meth:`WebSocketClient.handshake_ok` then starts the greenlet ``_th``
that drives the connection, and received messages wait in the :attr:`WebSocketClient.messages`
queue for :meth:`WebSocketClient.receive`. No OS thread and no reactor are involved.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gevent  # type: ignore[import-untyped]
from gevent import Greenlet, monkey
from gevent.lock import RLock  # type: ignore[import-untyped]
from gevent.queue import Queue  # type: ignore[import-untyped]
from gevent.socket import wait, wait_read, wait_write  # type: ignore[import-untyped]

from ..exc import HandshakeError
from ..handshake import MAX_HEADER_SIZE
from ..messaging import Message
from ..transport import DONE, ChannelHub, TimerHandle, close_notify
from . import WebSocketBaseClient as _ClientBase

__all__ = ["WebSocketClient", "GeventTransport"]

logger = logging.getLogger("wsloop.client.gevent")

# The standard library's socket and resolver, even once gevent patched them: the sockets here
# are non-blocking and every wait goes through gevent's hub, so they need no patching.
_StdSocket: type[socket.socket] = monkey.get_original("socket", "socket")
_std_getaddrinfo: Callable[..., list[tuple[Any, ...]]] = monkey.get_original("socket", "getaddrinfo")

_READ = 1  # libev/libuv event masks for loop.io()
_WRITE = 2
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)


class _Wake(Exception):
    """Thrown into the reading greenlet to make it notice a close requested elsewhere."""


class _GreenletTimer(TimerHandle):
    """A :class:`~wsloop.transport.TimerHandle` run by a greenlet spawned for it."""

    __slots__ = ("greenlet",)

    def __init__(
        self, transport: GeventTransport, delay: float, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        super().__init__(time.monotonic() + delay, fn, args)
        self.greenlet: Any = gevent.spawn_later(delay, self._fire, transport)

    def _fire(self, transport: GeventTransport) -> None:
        if self.cancelled:
            return
        if self.callback == transport.abort:  # the close timeout: never waits for the lock
            transport.abort()
        else:
            transport.call(self.callback, *self.args)

    def cancel(self) -> None:
        super().cancel()
        if self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)


class GeventTransport:
    """The :class:`wsloop.transport.Transport` of one connection driven by greenlets.

    The greenlet that runs :meth:`serve` reads; output is written at once, cooperatively, under
    a gevent lock that also guards the protocol state (as :class:`~wsloop.transport.
    BlockingTransport` does with a thread lock), so ``send()`` from any greenlet is safe and
    waits while the peer does not read. Timers are greenlets. ``sock`` must be non-blocking.
    """

    def __init__(self, sock: socket.socket, read_size: int = 65536, linger_timeout: float = 5.0) -> None:
        self.sock = sock
        self.read_size = read_size
        self.linger_timeout = linger_timeout
        self.lock: Any = RLock()
        self.finished = False
        self._closing = False
        self._linger = False
        hub = gevent.get_hub()
        self._hub: Any = hub
        fd = sock.fileno()
        self._read_io: Any = hub.loop.io(fd, _READ)
        self._write_io: Any = hub.loop.io(fd, _WRITE)
        self._reader: Any = None  # the greenlet in serve()

    # ------------------------------------------------------ Transport contract

    def in_context(self) -> bool:
        return False  # every call goes through the lock, which is re-entrant

    def call(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        with self.lock:
            if not self.finished:
                fn(*args)

    def write(self, data: bytes) -> None:
        if self.finished:
            return
        try:
            _send_all(self.sock, data, self._write_io)
        except OSError:
            self.abort()

    def close(self, linger: bool = False) -> None:
        self._closing = True
        self._linger = linger
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            self._hub.cancel_wait(self._read_io, _Wake(), False)  # if it waits for input

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end at once
            except OSError:
                pass

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        return _GreenletTimer(self, delay, fn, args)

    def flush(self) -> None:
        pass  # written at once

    def unsent(self) -> int:
        return 0

    def drain(self) -> Any:
        return DONE  # writes complete before send() returns: nothing to wait for

    def hold_reading(self, held: bool) -> None:
        pass  # callbacks run to completion in the reading greenlet

    def hub(self) -> ChannelHub:
        raise RuntimeError("channels need a websocket served by the reactor (selectors poller)")

    # ------------------------------------------------------------ reading

    def serve(self, process: Callable[[bytes], bool]) -> None:
        """Read and ``process`` until the connection ends, then close the socket."""
        self._reader = gevent.getcurrent()
        sock = self.sock
        recv = sock.recv
        size = self.read_size
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the descriptor does not show
        ready = True  # data may be there already: try before waiting
        try:
            while not self.finished and not self._closing:
                if not ready:
                    try:
                        wait(self._read_io)
                    except _Wake:
                        continue
                try:
                    data = recv(size)
                except _WOULD_BLOCK:
                    ready = False
                    continue
                except ssl.SSLWantWriteError:
                    wait_write(sock.fileno())
                    continue
                except OSError:
                    break
                if not data:
                    break
                ready = len(data) == size or (pending is not None and pending() > 0)
                with self.lock:
                    if not self.finished and not process(data):
                        break
        finally:
            self._reader = None
            self._shut(sock)

    def _shut(self, sock: socket.socket) -> None:
        with self.lock:
            linger = self._linger and not self.finished
            self.finished = True
        self._read_io.close()
        self._write_io.close()
        close_notify(sock)
        if linger:
            _drain(sock, self.linger_timeout)
        try:
            sock.close()
        except OSError:
            pass


def _send_all(sock: socket.socket, data: bytes, write_io: Any = None) -> None:
    """Write all of ``data`` to the non-blocking ``sock``, waiting cooperatively (on
    ``write_io``, the connection's write watcher, if given) while it is full."""
    try:
        sent = sock.send(data)
        if sent == len(data):
            return  # the common case: no view, no wait
    except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        sent = 0
    view = memoryview(data)[sent:]
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            if write_io is not None:
                wait(write_io)
            else:
                wait_write(sock.fileno())
            continue
        except ssl.SSLWantReadError:  # renegotiation: the reader may be waiting on its watcher
            wait_read(sock.fileno())
            continue
        view = view[sent:]


def _drain(sock: socket.socket, timeout: float) -> None:
    """Send FIN, then discard input until the peer closes or ``timeout`` passes (cooperatively)."""
    with gevent.Timeout(timeout, False):
        try:
            sock.shutdown(socket.SHUT_WR)
            while True:
                try:
                    if not sock.recv(65536):
                        return
                except _WOULD_BLOCK:
                    wait_read(sock.fileno())
        except OSError:
            return


class WebSocketClient(_ClientBase):
    """ws4py's gevent client: ``run()`` in a greenlet, messages in a queue.

    Usage, as in ws4py's docs::

        ws = WebSocketClient('ws://localhost:9000/echo', protocols=['http-only', 'chat'])
        ws.connect()
        ws.send("Hello world")

        def incoming():
            while True:
                m = ws.receive()
                if m is None:
                    break
                print(str(m))

        def outgoing():
            for i in range(0, 40, 5):
                ws.send("*" * i)

        gevent.joinall([gevent.spawn(incoming), gevent.spawn(outgoing)])

    :meth:`connect` blocks only its greenlet (bounded by ``handshake_timeout``, 10 s) and
    raises :class:`~wsloop.exc.HandshakeError` or :class:`OSError` if the connection cannot be
    made (``closed(1006, reason)`` is called too, so :meth:`receive` returns None). The other
    parameters are those of :class:`wsloop.client.WebSocketClient`.
    """

    def __init__(
        self,
        url: str,
        protocols: list[str] | None = None,
        extensions: list[str] | None = None,
        heartbeat_freq: float | None = None,
        ssl_options: ssl.SSLContext | Mapping[str, Any] | None = None,
        headers: Iterable[tuple[str, str]] | None = None,
        exclude_headers: Iterable[str] | None = None,
    ) -> None:
        super().__init__(
            url,
            protocols,
            extensions,
            heartbeat_freq,
            ssl_options=ssl_options,
            headers=headers,
            exclude_headers=exclude_headers,
        )
        #: The greenlet that runs :meth:`run` once :meth:`handshake_ok` starts it (ws4py's name).
        self._th: Any = Greenlet(self.run)
        #: Received messages, then ``StopIteration`` once the connection has ended (a gevent
        #: :class:`~gevent.queue.Queue`).
        self.messages: Any = Queue()
        self._received = b""  # bytes that followed the server's handshake response
        self._connect_called = False

    # ------------------------------------------------------------- handshake

    def connect(self) -> None:  # type: ignore[override]
        """Connect, (for ``wss://``) negotiate TLS and do the opening handshake, waiting
        cooperatively; then :meth:`handshake_ok`."""
        if self._connect_called or self._finished:
            raise RuntimeError("connect() was already called on this client")
        self._connect_called = True
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()  # one the base class may have made in advance: this client makes its own
        try:
            with gevent.Timeout(
                self.handshake_timeout,
                TimeoutError(f"no WebSocket connection to {self.url} within {self.handshake_timeout}s"),
            ):
                self._received = self._handshake()
        except BaseException as exc:
            sock, self.sock = self.sock, None
            if sock is not None:
                sock.close()
            if isinstance(exc, Exception):
                logger.debug("connection to %s failed: %s", self.url, exc)
                self._finished = True
                self._call_closed(1006, f"handshake failed: {exc}")
            raise
        self.handshake_ok()

    def _handshake(self) -> bytes:
        """The connection's steps; what the server sent after its response."""
        family, address = self._address()
        sock = self.sock = _StdSocket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address)
        if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            wait_write(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect to {self.url}: {os.strerror(err)}")
        if self.scheme == "wss":
            sock = self.sock = self._ssl_context().wrap_socket(
                sock, server_hostname=self._server_hostname(), do_handshake_on_connect=False
            )
            self._tls_handshake(sock)
        _send_all(sock, self.handshake_request)
        data = b""
        while True:
            try:
                chunk = sock.recv(MAX_HEADER_SIZE + 1)
            except _WOULD_BLOCK:
                wait_read(sock.fileno())
                continue
            if not chunk:
                raise HandshakeError("the server closed the connection during the handshake")
            data += chunk
            length = self._handshake_done(data)
            if length is not None:
                return data[length:]

    def _address(self) -> tuple[int, Any]:
        if self.scheme == "ws+unix":
            return socket.AF_UNIX, self.unix_socket_path
        try:  # an address: no resolver (gevent's default one runs in a thread pool)
            info = _std_getaddrinfo(
                self.host, self.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            info = gevent.socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        family, _, _, _, address = info[0]
        return family, address

    @staticmethod
    def _tls_handshake(sock: ssl.SSLSocket) -> None:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                wait_read(sock.fileno())
            except ssl.SSLWantWriteError:
                wait_write(sock.fileno())

    def handshake_ok(self) -> None:
        """Called once the opening handshake has succeeded: starts the greenlet ``_th`` that
        runs the connection (``opened()`` is called there)."""
        self._th.start()

    # --------------------------------------------------------------- running

    def run(self, received: bytes = b"") -> None:
        """Drive the connection in the calling greenlet until it ends (``_th`` runs it)."""
        sock = self.sock
        if sock is None:
            raise ValueError("no socket to run on: connect() first")
        received = received or self._received
        self._received = b""
        transport = GeventTransport(sock, linger_timeout=self.close_timeout)
        try:
            with transport.lock:
                self.attach(transport)
                if received and not self.process(received):
                    transport.close()
            transport.serve(self.process)
        finally:
            with transport.lock:
                self.connection_lost()

    def run_forever(self, timeout: float | None = None) -> bool:
        """Wait, cooperatively, until the connection has ended and :meth:`closed` has run;
        False if ``timeout`` passed first."""
        if self._th.started:
            self._th.join(timeout)
        return bool(self._finished)

    # ----------------------------------------------------- ws4py's queue API

    def received_message(self, message: Message) -> None:
        """Put ``message`` in :attr:`messages` (each message is a fresh object: no copy)."""
        self.messages.put(message)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        """Put ``StopIteration`` in :attr:`messages`: :meth:`receive` returns None after the
        messages received before the end."""
        self.messages.put(StopIteration)

    def receive(self, block: bool = True) -> Message | None:
        """The next received message, or None once the connection has ended and every message
        was taken. ``block=False`` raises :class:`gevent.queue.Empty` when none is waiting."""
        if self.terminated and self.messages.empty():
            return None
        message = self.messages.get(block=block)
        if message is StopIteration:
            return None
        return message  # type: ignore[no-any-return]
