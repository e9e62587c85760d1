"""The user's object: ws4py's ``WebSocket`` API over the sans-I/O :class:`~wsloop.protocol.Protocol`.

Subclass :class:`WebSocket` and override its callbacks (``opened``, ``received_message``,
``ponged``, ``closed``). A driver (:mod:`wsloop.poller`) attaches it to a transport and uses
it only through :meth:`~WebSocket.attach`, :meth:`~WebSocket.process`,
:meth:`~WebSocket.send_broadcast` and :meth:`~WebSocket.connection_lost`; :meth:`WebSocket.run`
drives one connection in the calling thread as ws4py did. ``send()``, ``close()`` and ``ping()``
are safe from any thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import types
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

from .deflate import DEFAULT as DEFAULT_DEFLATE
from .deflate import DeflateOptions, PerMessageDeflate
from .exc import ProtocolException, StreamClosed
from .framing import OPCODE_BINARY, OPCODE_CONTINUATION, OPCODE_PONG, OPCODE_TEXT
from .handshake import LazyEnviron, Request
from .handshake import select_subprotocol as _select_subprotocol
from .messaging import BinaryMessage, Message, PongControlMessage, TextMessage
from .protocol import CLOSED, DEFAULT_MAX_MESSAGE_SIZE, OPEN, SMALL_HEADERS, Protocol, State
from .transport import BlockingTransport, ChannelHub, TimerHandle, Transport

__all__ = ["WebSocket", "EchoWebSocket", "Heartbeat", "DEFAULT_CLOSE_TIMEOUT"]

logger = logging.getLogger("wsloop.websocket")

DEFAULT_CLOSE_TIMEOUT = 5.0
#: ws4py's size of its first read of a frame (2 bytes: a frame header's start), kept for programs
#: that import it. wsloop does not read frame by frame: a driver, and :meth:`WebSocket.once`, read
#: what the socket has, up to :attr:`WebSocket.reading_buffer_size` bytes at a time.
DEFAULT_READING_SIZE = 2
#: ws4py's name for the TLS error its ``once()`` catches (pyOpenSSL's, when installed). wsloop's
#: TLS is the ``ssl`` module's, so it is :class:`ssl.SSLError`.
pyOpenSSLError = ssl.SSLError
_CLOSING = State.CLOSING
_CLASS_DEFAULT: Any = object()  # "use the class attribute"

SendPayload = str | bytes | bytearray | memoryview | Message | Iterable[Any]


class WebSocket:
    """One WebSocket connection, server side unless created with ``client=True`` by the client.

    :param sock: the connected socket (after the opening handshake).
    :param protocols: subprotocols this handler speaks, by preference (ws4py's ``protocols``).
    :param extensions: extensions in use on this connection.
    :param environ: the WSGI environ (or the request's headers) of the upgrade request.
    :param heartbeat_freq: seconds between keepalive pings; a ping still unanswered at the next
        one closes the connection with 1011.
    :param idle_timeout: close with 1001 a connection that receives nothing for this many seconds
        (``None``: the class attribute's :attr:`idle_timeout`).
    """

    #: Largest message accepted, in bytes (``None``: unlimited); a subclass may change it.
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds to wait for the peer's close frame before dropping the TCP connection.
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    #: Seconds without receiving anything (any frame, pongs included) after which the connection
    #: is closed with 1001 "idle timeout" (``None``: never). It is noticed by a check every half
    #: of it, so the connection closes after this long silent and at most half as long again.
    idle_timeout: float | None = None
    #: permessage-deflate policy for this handler's connections (None: never compress).
    compression: DeflateOptions | None = DEFAULT_DEFLATE
    #: ``Origin`` values allowed to connect, as ``scheme://host[:port]`` (compared ignoring
    #: case); include ``None`` to admit clients that send no Origin (non-browser clients).
    #: ``None`` (the default): any origin. Others get 403.
    origins: ClassVar[Collection[str | None] | None] = None
    #: Bytes :meth:`once` reads from the socket at most in one call (ws4py's attribute).
    reading_buffer_size: int = 65536

    _environ: dict[str, Any] | LazyEnviron | None = None

    #: The code :meth:`closed` received, once the connection has ended (None before).
    close_code: int | None = None
    #: The reason :meth:`closed` received, as ``str``, once the connection has ended (None
    #: before): wsloop's name for new code (``closed()`` gets it as bytes, as in ws4py).
    close_reason: str | None = None

    def __init__(
        self,
        sock: socket.socket | None,
        protocols: list[str] | None = None,
        extensions: list[str] | None = None,
        environ: dict[str, Any] | LazyEnviron | None = None,
        heartbeat_freq: float | None = None,
        *,
        client: bool = False,
        max_message_size: int | None | object = _CLASS_DEFAULT,
        deflate: PerMessageDeflate | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.sock = sock
        # Stored only when they differ from what the class gives (None, unless a subclass set
        # one): each attribute an instance has costs every connection 8 bytes
        # (docs/ARCHITECTURE.md, "Memory per connection").
        if protocols is not None or self.protocols is not None:
            self.protocols = protocols
        if extensions is not None or self.extensions is not None:
            self.extensions = extensions
        if type(self).environ is _ENVIRON:
            self._environ = environ  # what the property's setter does, without the call
        else:
            self.environ = environ
        if heartbeat_freq is not None or self.heartbeat_freq is not None:
            self.heartbeat_freq = heartbeat_freq
        if max_message_size is not _CLASS_DEFAULT:
            self.max_message_size = max_message_size  # type: ignore[assignment]
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
        # One bound method (the class's deliverer, see __init_subclass__) takes the data
        # messages and pongs; the peer's close needs no callback here (connection_lost reports it).
        # (positional: client, max_message_size, write, on_message, deflate, on_data)
        self.stream = Protocol(client, self.max_message_size, None, _ignore, deflate, self._deliver)
        self.transport: Transport | None = None
        self._finished = False
        self._heard = False  # something arrived since the last idle check (set by process())

    # Defaults of per-connection state that most connections never set (each attribute an
    # instance has costs 8 bytes a connection, whether set or not: docs/ARCHITECTURE.md,
    # "Memory per connection").
    #: The constructor's ``heartbeat_freq``, ``protocols`` and ``extensions`` (None by default).
    heartbeat_freq: float | None = None
    protocols: list[str] | None = None
    extensions: list[str] | None = None
    _close_timer: TimerHandle | None = None
    _heartbeat: TimerHandle | None = None
    _awaiting_pong = False  # a keepalive ping is unanswered
    _idle_timer: TimerHandle | None = None
    _silent = 0  # idle checks in a row that found nothing arrived

    @property
    def environ(self) -> dict[str, Any] | None:
        """The WSGI-style environ of the upgrade request (the standalone server builds it here,
        on first use)."""
        environ = self._environ
        if isinstance(environ, LazyEnviron):
            environ = self._environ = environ.build()
        return environ

    @environ.setter
    def environ(self, environ: dict[str, Any] | LazyEnviron | None) -> None:
        self._environ = environ

    # ------------------------------------------------------ handshake hooks

    # Class methods: the server calls them (through handshake.accept) on the upgrade request,
    # before any instance exists, in its own thread (the reactor's, for the standalone server),
    # so they must not block.

    @classmethod
    def process_request(cls, request: Request) -> None:
        """Inspect the upgrade request (``request.path`` with its query, ``request.headers`` with
        lower-cased names) after it was validated and its origin admitted; raise
        :class:`~wsloop.exc.HandshakeRejected` to refuse it (401 with ``WWW-Authenticate``, 403,
        ...). Any other exception is logged and answered with 500. The default accepts.
        """

    @classmethod
    def select_subprotocol(
        cls, request: Request, offered: list[str], supported: Sequence[str] | None
    ) -> str | None:
        """The subprotocol for this connection: one of ``offered`` (the client's, in its order of
        preference), or None for none. Called only when the client offers some; ``supported``
        is the server's ``protocols`` option. The choice reaches the handler as ``self.protocols``.
        The default takes the first of ``supported`` the client offered.
        """
        return _select_subprotocol(offered, supported)

    # ------------------------------------------------------------ callbacks

    # The callbacks' return type is ``object`` so that a subclass for an event loop
    # (wsloop.async_websocket) may make them coroutines.

    def opened(self) -> object:
        """Called once the connection is attached to its driver and ready."""
        return None

    def received_message(self, message: Message) -> object:
        """Called with each complete :class:`TextMessage` or :class:`BinaryMessage`."""
        return None

    def received_data(self, data: bytes, binary: bool) -> object:
        """Called with each complete message's payload (``binary``: a binary message, else
        UTF-8 text, already validated) *instead of* :meth:`received_message` when a handler
        overrides it, so no message object is made: the cheaper callback for handlers that
        only need the bytes.

        Which of the two a handler gets: the one defined by the most derived class of its
        hierarchy (below :class:`WebSocket`); a class that defines both gets this one. So a
        subclass of :class:`EchoWebSocket` (which defines both) that overrides
        ``received_message`` gets messages, as in ws4py. Handlers of
        :mod:`wsloop.async_websocket` always get messages. The default (reached only when
        called directly) makes the message and calls :meth:`received_message`.
        """
        return self.received_message(BinaryMessage(data) if binary else TextMessage(data))

    def ponged(self, pong: PongControlMessage) -> object:
        """Called with each pong the peer sends."""
        return None

    def closed(self, code: int, reason: bytes | None = None) -> object:
        """Called once when the connection has ended.

        ``code`` is the peer's close code, our own if we failed the connection (1002, 1007,
        1009, 1011, ...), or 1006 if it ended without a close frame. ``reason`` is ``bytes``
        (UTF-8; ``b""`` when there was none), as in ws4py; :attr:`close_code` and
        :attr:`close_reason` (a ``str``) keep both once this is called.
        """
        return None

    def unhandled_error(self, error: BaseException) -> None:
        """Called when a callback raised (the connection is then closed with 1011), and, as in
        ws4py, with the socket error that ended a connection driven by :meth:`once`."""
        logger.error("error in %s handler", type(self).__name__, exc_info=error)

    # ---------------------------------------------------------------- calls

    def send(self, payload: SendPayload, binary: bool = False) -> None:
        """Send a message: text unless ``binary`` (``str`` is always UTF-8 text's data).

        ``payload`` may be ``str``, ``bytes``, ``bytearray``, ``memoryview``, a
        :class:`~wsloop.messaging.Message`, or a list, tuple or generator whose items are sent
        as the fragments of one message. From a thread other than the driver's, it waits while
        the connection's unsent output is above the high-water mark; every form counts its size
        in bytes (a generator is consumed first, in the calling thread).
        """
        transport = self.transport
        if transport is None or transport.in_context():
            stream = self.stream
            if type(payload) is bytes and stream.state is OPEN:
                if len(payload) < 126 and stream.deflate is None and not stream.client:
                    # The common case of Protocol.send(), inline: one frame, nothing to mask.
                    stream.counters.messages_out += 1
                    stream.write(SMALL_HEADERS[binary][len(payload)] + payload)
                else:
                    stream.send(payload, binary)  # the common case of _send()
            else:
                self._send(payload, binary)
            return
        if self.stream.state is not OPEN or self._finished:
            # (_finished: dropped without a closing handshake, by a reset for instance)
            raise StreamClosed("Cannot send on a terminated websocket")
        # Every form is counted in bytes, so the wait above the high-water mark applies to it.
        if isinstance(payload, str):
            payload = payload.encode("utf-8")  # here rather than in the driver's thread
        if isinstance(payload, (bytes, bytearray, memoryview)):
            size = _nbytes(payload)
        elif isinstance(payload, Message):
            size = len(payload.data)  # bytes (len() of a TextMessage counts characters)
        elif isinstance(payload, (types.GeneratorType, list, tuple)):
            # One message: its fragments are framed together on the driver's side (a message
            # sent meanwhile must not come between them), so it is admitted as a whole.
            payload = [_as_bytes(chunk) for chunk in payload]
            size = sum(map(_nbytes, payload))
        else:
            raise ValueError(f"Unsupported type '{type(payload).__name__}' passed to send()")
        transport.call(self._send_submitted, payload, binary, size=size)

    def _send_submitted(self, payload: SendPayload, binary: bool) -> None:
        # Sent from another thread: if the connection closed meanwhile, the message is dropped
        # (that thread was told nothing else; ws4py's send would have raised or been lost too).
        if self.stream.state is OPEN:
            self._send(payload, binary)

    def _send(self, payload: SendPayload, binary: bool) -> None:
        stream = self.stream
        if stream.state is not OPEN:
            raise StreamClosed("Cannot send on a terminated websocket")
        if isinstance(payload, (str, bytes, bytearray, memoryview)):
            stream.send(payload, binary)
        elif isinstance(payload, Message):
            stream.send_frame(payload.opcode, payload.data)
        elif isinstance(payload, (types.GeneratorType, list, tuple)):
            opcode = OPCODE_BINARY if binary else OPCODE_TEXT
            previous = None
            for chunk in payload:
                if previous is not None:
                    stream.send_frame(opcode, _as_bytes(previous), False)
                    opcode = OPCODE_CONTINUATION
                previous = chunk
            stream.send_frame(opcode, _as_bytes(previous if previous is not None else b""), True)
        else:
            raise ValueError(f"Unsupported type '{type(payload).__name__}' passed to send()")

    def ping(self, message: str | bytes = b"") -> None:
        """Send a ping; the answer arrives in :meth:`ponged`."""
        self._in_context(self.stream.ping, message)

    def close(self, code: int = 1000, reason: str | bytes = "") -> None:
        """Start the closing handshake; :meth:`closed` follows when the connection ends.

        The TCP connection is dropped if the peer does not answer within ``close_timeout``.
        From a thread other than the driver's, this returns once the close frame, and all output
        queued before it, is written to the socket (or after ``close_timeout`` at most), as
        ws4py's synchronous close did: a program may exit right after it. From a callback (on
        the driver's thread) it never waits.
        """
        transport = self.transport
        if transport is None or transport.in_context():
            self._close(code, reason)
            return
        written = threading.Event()
        transport.call(self._close_submitted, code, reason, written)
        deadline = time.monotonic() + self.close_timeout
        while not self._finished:  # the connection ended (or its driver stopped): nothing to wait for
            remaining = deadline - time.monotonic()
            if remaining <= 0 or written.wait(min(remaining, 0.1)):
                return

    def _close_submitted(self, code: int, reason: str | bytes, written: threading.Event) -> None:
        # close() from another thread, now in context. A reactor connection writes its output at
        # the end of the loop turn: flush() writes it now, so a close frame that fits in the
        # socket's buffer releases close() at once.
        try:
            self._close(code, reason)
            if self.transport is not None:
                self.transport.flush()
        finally:
            self._when_written(written, 0.0)

    def _when_written(self, written: threading.Event, delay: float) -> None:
        """(In context) set ``written`` once this connection's queued output is written to the
        socket, or the connection has ended; looks again every ``delay`` seconds (growing to
        50 ms) while the peer drains it. Nothing is queued after a close frame, so no unsent
        bytes means the close frame is out."""
        transport = self.transport
        if self._finished or transport is None or not transport.unsent():
            written.set()
            return
        delay = min(max(delay * 2, 0.001), 0.05)
        transport.call_later(delay, self._when_written, written, delay)

    def close_connection(self) -> None:
        """Shut down and close the connection now, without a closing handshake (ws4py's call).
        Served by a driver, the connection is dropped through it, as :meth:`terminate` does, and
        :meth:`closed` follows (1006); not attached, the socket is shut down and closed here."""
        if self.transport is not None:
            self.terminate()
            return
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.close()

    def terminate(self) -> None:
        """Drop the connection at once, without a closing handshake; :meth:`closed` follows."""
        transport = self.transport
        if transport is None:
            self.connection_lost()
            return
        if transport.in_context():
            self.stream.abort()  # from a callback: the rest of the read is not delivered either
        transport.abort()
        if transport is self._once_transport:
            self._end_once()  # no driver's loop to report the end: as ws4py's terminate() does

    # Set by code written for ws4py, which assigns client_terminated and server_terminated
    # (True: that side is done); None: not set, the value follows the connection.
    _client_mark: bool | None = None
    _server_mark: bool | None = None

    @property
    def terminated(self) -> bool:
        """True once the connection has ended or both close frames have been exchanged, or both
        :attr:`client_terminated` and :attr:`server_terminated` were set True (ws4py's rule)."""
        if self._finished or self.stream.state is CLOSED:
            return True
        if self._client_mark is None and self._server_mark is None:
            return False
        return self.client_terminated and self.server_terminated

    @property
    def server_terminated(self) -> bool:
        """True once the server side has sent its close frame (or the connection ended).
        Settable, as in ws4py: True marks that side done; False clears such a mark (a side
        that is done stays so)."""
        if self._server_mark:
            return True
        stream = self.stream
        sent = stream.close_received if stream.client else stream.close_sent
        return self._finished or sent is not None

    @server_terminated.setter
    def server_terminated(self, value: bool) -> None:
        self._server_mark = bool(value)

    @property
    def client_terminated(self) -> bool:
        """True once the client side has sent its close frame (or the connection ended).
        Settable, as :attr:`server_terminated` is."""
        if self._client_mark:
            return True
        stream = self.stream
        sent = stream.close_sent if stream.client else stream.close_received
        return self._finished or sent is not None

    @client_terminated.setter
    def client_terminated(self, value: bool) -> None:
        self._client_mark = bool(value)

    @property
    def ended(self) -> bool:
        """True once the connection has ended: its driver called :meth:`connection_lost`."""
        return self._finished

    @property
    def connection(self) -> socket.socket | None:
        return self.sock

    @property
    def peer_address(self) -> Any:
        """The peer's address: ``(host, port)`` over TCP, IPv6 too (as in ws4py), the path over
        a Unix socket; None if it cannot be had (the socket is closed)."""
        return _address(self.sock, "getpeername")

    @property
    def local_address(self) -> Any:
        """The local address, as :attr:`peer_address` gives the peer's."""
        return _address(self.sock, "getsockname")

    # ------------------------------------------------------------- channels

    #: The hub (its driver's, :mod:`wsloop.poller.hub`) of the channels it joined, once it joined one.
    _hub: ChannelHub | None = None

    def subscribe(self, channel: str) -> None:
        """Receive every message published on ``channel`` from now on, by any websocket of any
        process joined to the reactor's broker (:mod:`wsloop.brokers`; in-process by default).
        Safe from any thread; a websocket leaves its channels when it closes."""
        hub = self._channels()
        hub.check_channel(channel)
        self._in_context(self._join, hub, channel)

    def _join(self, hub: ChannelHub, channel: str) -> None:
        self._hub = hub  # left when the connection ends
        hub.join(self, channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` (no error if not subscribed). Safe from any thread."""
        hub = self._hub
        if hub is not None:
            self._in_context(hub.leave, self, channel)

    def publish(self, channel: str, message: str | bytes, binary: bool = False) -> None:
        """Send ``message`` to every websocket subscribed to ``channel``, in every process
        joined to the broker (this one's at once, framed once for all), this one included if
        it is subscribed. Safe from any thread."""
        self._channels().publish(channel, message, binary)

    def _channels(self) -> ChannelHub:
        transport = self.transport
        if transport is None:
            raise RuntimeError("channels need a websocket served by the reactor (selectors poller)")
        return transport.hub()

    # ------------------------------------------------- ws4py's blocking style

    def run(self, received: bytes = b"") -> None:
        """Drive this connection in the calling thread until it ends (ws4py's ``run()``).

        ``received`` holds bytes already read from the peer after its handshake.
        """
        if self.sock is None:
            raise ValueError("no socket to run on")
        transport = BlockingTransport(
            self.sock, linger_timeout=self.close_timeout, counters=self.stream.counters
        )
        with transport.lock:
            self.attach(transport)
            if received and not self.process(received):
                transport.close()
        try:
            transport.serve(self.process)
        finally:
            with transport.lock:
                self.connection_lost()

    def once(self) -> bool:
        """Read from the socket once and process what came; False when the connection ended.

        For a websocket that is not attached to a driver (ws4py's manual style): sends are
        written straight to the socket. As in ws4py, a socket error (the peer reset the
        connection, ...) does not raise: it goes to :meth:`unhandled_error` and this returns
        False, as it does once the connection is :attr:`terminated` or the peer has gone.
        When it returns False, :meth:`closed` has run and the socket is closed.
        """
        sock = self.sock
        if sock is None or self._finished:
            return False
        if self.transport is None:
            made = self._once_transport = BlockingTransport(sock)
            with made.lock:  # as run() does: sends from other threads wait for opened()
                self.attach(made)
        if self.terminated:
            self._end_once()
            return False
        try:
            data = sock.recv(self.reading_buffer_size)
        except InterruptedError:
            return True  # (Python retries EINTR itself; ws4py's once() skips it as well)
        except OSError as exc:  # ssl.SSLError and ConnectionResetError among them
            if not self._finished:  # (not the socket terminate() closed from another thread)
                self._report(exc)
                self._end_once()
            return False
        if data:
            with self._once_lock():
                if self.process(data):
                    return True
        self._end_once()
        return False

    #: The transport once() made for the socket (None: once() never ran).
    _once_transport: BlockingTransport | None = None

    def _once_lock(self) -> AbstractContextManager[object]:
        """The lock of the transport once() made, which other threads' sends take; nothing to
        take when someone else attached the websocket (they answer for their threads)."""
        mine = self._once_transport
        return nullcontext() if mine is None else mine.lock

    def _end_once(self) -> None:
        with self._once_lock():
            self.connection_lost()
        sock = self.sock
        if sock is not None:
            sock.close()

    def _report(self, exc: Exception) -> None:
        """Hand ``exc`` to :meth:`unhandled_error`; an error there is only logged."""
        try:
            self.unhandled_error(exc)
        except Exception:
            logger.exception("error in %s.unhandled_error", type(self).__name__)

    # ------------------------------------------------------- driver's side

    def attach(self, transport: Transport) -> None:
        """Bind to ``transport`` (called by the driver, in context) and call :meth:`opened`."""
        self.transport = transport
        self.stream.redirect(transport.write)
        if self.heartbeat_freq:
            self._heartbeat = transport.call_later(self.heartbeat_freq, self._beat)
        if self.idle_timeout:
            self._idle_timer = transport.call_later(self.idle_timeout / 2, self._idle_check)
        self._invoke(self.opened)
        self._after_close()

    def process(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed bytes from the peer, running the callbacks as messages complete (in context).

        Returns False when the closing handshake is complete and the transport should close.
        """
        self._heard = True  # for the idle timeout: one store per read, no timer per message
        stream = self.stream
        stream.feed(data)
        if stream.state is OPEN:
            return True
        return self._after_close()

    def takes_shared_frames(self) -> bool:
        """Whether a message's frame made once for many connections (a broadcast's: unmasked,
        uncompressed) may be written to this connection as is, in context: it is open, and
        neither masks (a client) nor compresses. If not, the driver calls :meth:`send_broadcast`."""
        stream = self.stream
        return stream.state is OPEN and not stream.client and stream.deflate is None

    def send_broadcast(self, payload: bytes, binary: bool) -> None:
        """Send one message of a broadcast to a connection that does not take shared frames
        (:meth:`takes_shared_frames`), in context: it frames ``payload`` itself (masked, or
        compressed), or drops it once it is closing."""
        stream = self.stream
        if stream.state is OPEN:
            stream.send(payload, binary)

    def _invoke(self, callback: Any, *args: Any) -> None:
        """Run a callback; an exception is the handler's error (logged, then 1011)."""
        try:
            callback(*args)
        except Exception as exc:
            self._handler_failed(exc)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._deliver = _deliverer(cls)  # type: ignore[method-assign]

    def _deliver(self, payload: bytes, opcode: int) -> None:
        """The protocol's ``on_data``: a text or binary message's payload, or a pong's, to the
        callbacks as messages (the class's choice: :meth:`__init_subclass__`). A handler that
        gets messages is served here without a call through :meth:`_dispatch` (the hot path:
        :meth:`_invoke`'s body inlined)."""
        try:
            if opcode == OPCODE_TEXT:
                self.received_message(TextMessage(payload))
            elif opcode == OPCODE_BINARY:
                self.received_message(BinaryMessage(payload))
            else:
                if self._awaiting_pong:
                    self._awaiting_pong = False
                self.ponged(PongControlMessage(payload))
        except Exception as exc:
            self._handler_failed(exc)

    def _deliver_data(self, payload: bytes, opcode: int) -> None:
        """:meth:`_deliver` for a handler that overrides :meth:`received_data`."""
        try:
            if opcode <= 2:  # OPCODE_TEXT or OPCODE_BINARY (constants: no global lookups)
                self.received_data(payload, opcode == 2)
            else:
                if self._awaiting_pong:
                    self._awaiting_pong = False
                self.ponged(PongControlMessage(payload))
        except Exception as exc:
            self._handler_failed(exc)

    def _deliver_dispatched(self, payload: bytes, opcode: int) -> None:
        """:meth:`_deliver` for a class that overrides :meth:`_dispatch` (as
        wsloop.async_websocket does): the message is made and handed to it."""
        if opcode == OPCODE_TEXT:
            self._dispatch(TextMessage(payload))
        elif opcode == OPCODE_BINARY:
            self._dispatch(BinaryMessage(payload))
        else:
            self._dispatch(PongControlMessage(payload))

    def _dispatch(self, message: Message) -> None:
        """A text or binary message, or a pong, to its callback. A subclass that overrides
        :meth:`_invoke` overrides this too (wsloop.async_websocket does); only then is it called
        (for every data message and pong): else :meth:`_deliver` does its work."""
        op = message.opcode
        try:
            if op <= OPCODE_BINARY:
                self.received_message(message)
            elif op == OPCODE_PONG:
                if self._awaiting_pong:
                    self._awaiting_pong = False
                self.ponged(message)  # type: ignore[arg-type]
        except Exception as exc:
            self._handler_failed(exc)

    def _after_close(self) -> bool:
        """Once closing: arm the close timeout, or close the transport when done."""
        stream = self.stream
        transport = self.transport
        if transport is None or stream.state is OPEN:
            return True
        if stream.state is _CLOSING and stream.failure is None:
            if self._close_timer is None:
                self._close_timer = transport.call_later(self.close_timeout, transport.abort)
            return True
        transport.close(linger=stream.failure is not None)
        return False

    def _close(self, code: int, reason: str | bytes) -> None:
        if self.stream.close(code, reason):
            self._after_close()

    def _in_context(self, fn: Any, *args: Any) -> None:
        transport = self.transport
        if transport is None or transport.in_context():
            fn(*args)
        else:
            transport.call(fn, *args)

    def _handler_failed(self, exc: Exception) -> None:
        if type(exc) is StreamClosed and self.stream.state is _CLOSING and self.stream.failure is None:
            # A send from a callback after our close frame went (a message the peer sent before
            # it had our close, delivered): nothing can be sent any more, nothing went wrong.
            logger.debug("%r: send after our close frame, dropped", self)
            return
        self._report(exc)
        self.stream.fail(ProtocolException("unexpected server error", 1011))

    def _beat(self) -> None:
        if self.stream.state is not OPEN or self.transport is None or self.heartbeat_freq is None:
            return
        if self._awaiting_pong:
            logger.info("no pong within %ss; closing %r", self.heartbeat_freq, self)
            self.stream.fail(ProtocolException("keepalive ping timeout", 1011))
            self._after_close()
            return
        self._awaiting_pong = True
        self.stream.ping(b"")
        self._heartbeat = self.transport.call_later(self.heartbeat_freq, self._beat)

    def _idle_check(self) -> None:
        # Every idle_timeout / 2: two checks in a row with nothing received in between mean at
        # least idle_timeout of silence.
        transport = self.transport
        timeout = self.idle_timeout
        if self.stream.state is not OPEN or transport is None or not timeout:
            return
        if self._heard:
            self._heard = False
            self._silent = 0
        else:
            self._silent += 1
            if self._silent >= 2:
                logger.info("nothing received for %ss; closing %r", timeout, self)
                self._close(1001, "idle timeout")
                return
        self._idle_timer = transport.call_later(timeout / 2, self._idle_check)

    def connection_lost(self, failure: ProtocolException | None = None) -> None:
        """Called once by the driver when the connection has ended (in context): timers are
        cancelled, channels left, then :meth:`closed` runs. ``failure``: why the driver dropped
        it (its code and reason go to ``closed()``: 1008 for output past ``max_buffered``, 1001
        for a driver that is stopping); None: as the protocol saw it (1006 if no close frame)."""
        if self._finished:
            return
        self._finished = True
        for timer in (self._close_timer, self._heartbeat, self._idle_timer):
            if timer is not None:
                timer.cancel()
        stream = self.stream
        stream.write = _discard  # the transport is gone: nothing more goes out
        if failure is not None:
            stream.fail(failure)
        stream.abort()  # no callback after closed(), even for the rest of the read in progress
        stream.on_data = None  # drop the websocket <-> protocol reference cycle
        if self._hub is not None:
            self._hub.leave_all(self)
        stream.counters.close(stream.close_code)
        self._call_closed(stream.close_code, stream.close_reason)

    def _call_closed(self, code: int, reason: str) -> None:
        """Record the end (:attr:`close_code`, :attr:`close_reason`), then run :meth:`closed`
        with the reason as bytes. Every path to ``closed()`` goes through here (a driver's, the
        client's handshake failure), so the reason is encoded here, once per connection."""
        self.close_code = code
        self.close_reason = reason
        self._run_closed(code, reason.encode("utf-8"))

    def _run_closed(self, code: int, reason: bytes) -> None:
        """Run :meth:`closed`; it is too late for a 1011, so an error is only logged."""
        try:
            self.closed(code, reason)
        except Exception:
            logger.exception("error in %s.closed", type(self).__name__)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.peer_address}>"


_ENVIRON = WebSocket.__dict__["environ"]


def _deliverer(cls: type[WebSocket]) -> Any:
    """The ``_deliver`` of handler class ``cls``: by received_data (no message object), if it or
    an ancestor below WebSocket defines ``received_data`` and no more derived class defines
    ``received_message``; by ``_dispatch`` if a class overrides that; else by messages."""
    if cls._dispatch is not WebSocket._dispatch:
        return WebSocket._deliver_dispatched
    for klass in cls.__mro__:
        if klass is WebSocket:
            break
        attrs = vars(klass)
        if "received_data" in attrs:
            return WebSocket._deliver_data
        if "received_message" in attrs:
            break
    return WebSocket.__dict__["_deliver"]


class Heartbeat(threading.Thread):
    """ws4py's heartbeat: a thread that sends ``websocket`` an unsolicited pong (``b"beep"``)
    every ``frequency`` seconds until :meth:`stop` or the connection ends; a send that fails
    drops the connection (:meth:`WebSocket.close_connection`). Also a context manager that runs
    it (if ``frequency``) for the ``with`` block. ``heartbeat_freq`` (pings from the driver's
    timers, no thread) is the better way; this is for ws4py programs that made their own."""

    def __init__(self, websocket: WebSocket, frequency: float = 2.0) -> None:
        super().__init__(name="wsloop-heartbeat", daemon=True)
        self.websocket = websocket
        self.frequency = frequency
        self.running = False
        self._stop_requested = threading.Event()

    def __enter__(self) -> Heartbeat:
        if self.frequency:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.running = False
        self._stop_requested.set()

    def run(self) -> None:
        self.running = True
        while self.running and not self._stop_requested.wait(self.frequency):
            if self.websocket.terminated:
                break
            try:
                self.websocket.send(PongControlMessage(b"beep"))
            except (OSError, StreamClosed):
                logger.info("Heartbeat failed")
                self.websocket.close_connection()
                break
        self.running = False


class EchoWebSocket(WebSocket):
    """Sends every message back as it came (through :meth:`received_data`: no message object
    is made; a subclass that overrides ``received_message`` gets messages instead)."""

    def received_message(self, message: Message) -> None:
        self.send(message.data, message.is_binary)

    def received_data(self, data: bytes, binary: bool) -> None:
        self.send(data, binary)


def _ignore(message: Message) -> None:
    pass


def _discard(data: bytes) -> None:
    pass


def _as_bytes(chunk: Any) -> bytes | bytearray | memoryview:
    return chunk.encode("utf-8") if isinstance(chunk, str) else chunk


def _nbytes(data: bytes | bytearray | memoryview) -> int:
    return data.nbytes if type(data) is memoryview else len(data)


def _address(sock: socket.socket | None, method: str) -> Any:
    if sock is None:
        return None
    try:
        address = getattr(sock, method)()
    except OSError:
        return None
    # IPv6's (host, port, flowinfo, scope_id) trimmed to (host, port), as ws4py does.
    return address[:2] if type(address) is tuple and len(address) == 4 else address
