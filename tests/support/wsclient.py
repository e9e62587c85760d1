"""A small blocking WebSocket client over a real socket, for the tests.

It frames and parses with :class:`wsloop.protocol.Protocol` (client side) and does the
handshake by hand, so tests can also send raw, deliberately broken bytes.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

from wsloop.handshake import Response, client_request, new_key, parse_response, validate_response
from wsloop.messaging import CloseControlMessage, Message
from wsloop.protocol import Protocol

from .frames import TEXT, frame


class Client:
    """A handshake with the server on 127.0.0.1:``port``, then messages through a client
    :class:`Protocol` (:meth:`make_stream` makes it: a subclass may add an extension)."""

    def __init__(
        self,
        port: int,
        path: str = "/",
        timeout: float = 10.0,
        protocols: list[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: list[tuple[str, str]] | None = None,
        extensions: list[str] | None = None,
    ):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname="localhost")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = new_key()
        request = client_request(f"127.0.0.1:{port}", path, key, protocols, extensions, headers=headers or ())
        self.sock.sendall(request)
        data = b""
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed during handshake")
            data += chunk
            parsed = parse_response(data)
            if parsed is not None:
                break
        response, length = parsed
        self.response = response
        self.subprotocol, self.extensions = validate_response(response, key, protocols, extensions)
        self.stream = self.make_stream(response)
        self.eof = False
        if data[length:]:
            self.stream.feed(data[length:])

    def make_stream(self, response: Response) -> Protocol:
        """The client side's protocol, once the handshake's ``response`` is validated."""
        return Protocol(client=True, max_message_size=None)

    def send(self, payload: str | bytes, binary: bool | None = None) -> None:
        if binary is None:
            binary = isinstance(payload, bytes)
        self.stream.send(payload, binary)
        self.flush()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> None:
        """One masked frame, built by hand (:mod:`tests.support.frames`): RSV bits may be set."""
        self.sock.sendall(frame(opcode, payload, fin=fin, rsv=rsv, key=os.urandom(4)))

    def flush(self) -> None:
        data = self.stream.data_to_send()
        if data:
            self.sock.sendall(data)

    def recv(self, timeout: float = 10.0) -> Message:
        """The next message (text, binary, pong or the server's close)."""
        deadline = time.monotonic() + timeout
        received = self.stream.received
        while not received:
            if self.eof:
                raise ConnectionError("connection closed by the server")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(262144)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                continue
            self.stream.feed(data)
            self.flush()  # pongs and the close reply
        return received.pop(0)

    def recv_close(self, timeout: float = 10.0) -> CloseControlMessage:
        """Read until the server's close frame; data messages before it are skipped."""
        while True:
            message = self.recv(timeout)
            if isinstance(message, CloseControlMessage):
                return message

    def wait_eof(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the TCP connection."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.eof = True
            else:
                self.stream.feed(data)
        return self.eof

    def echo(self, payload: str | bytes) -> Message:
        self.send(payload)
        return self.recv()

    def close(self, code: int = 1000) -> None:
        try:
            self.stream.close(code)
            self.flush()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def text_frame(payload: bytes, fin: bool = True) -> bytes:
    """A masked text frame, as a client sends it."""
    return frame(TEXT, payload, fin=fin, key=os.urandom(4))


def raw_request(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes as an HTTP request and return everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


#: The RFC 6455 §1.3 sample Sec-WebSocket-Key.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(**overrides: str | None) -> bytes:
    """A valid upgrade request; ``name=value`` replaces a header (``_`` for ``-``), ``None`` drops
    it, ``request_line=`` replaces the request line."""
    headers = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    request_line = overrides.pop("request_line", None) or "GET / HTTP/1.1"
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    lines = [request_line] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _upgrade_with(request_line: bytes = b"GET / HTTP/1.1", extra: bytes = b"") -> bytes:
    """A valid upgrade request but for ``request_line`` and ``extra`` (raw field lines)."""
    return (
        request_line
        + b"\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n".encode()
        + extra
        + b"\r\n"
    )


#: Upgrade requests whose head a proxy in front could read differently (RFC 9112: 400 each).
AMBIGUOUS_UPGRADES = {
    "bare-lf-in-value": _upgrade_with(extra=b"X-A: 1\nHost: evil\r\n"),
    "bare-cr-in-value": _upgrade_with(extra=b"X-A: 1\rX-B: 2\r\n"),
    "nul-in-name": _upgrade_with(extra=b"X\x00A: 1\r\n"),
    "space-in-name": _upgrade_with(extra=b"X A: 1\r\n"),
    "ctl-in-value": _upgrade_with(extra=b"X-A: 1\x012\r\n"),
    "obs-fold": _upgrade_with(extra=b"X-A: 1\r\n  2\r\n"),
    "bare-cr-in-path": _upgrade_with(request_line=b"GET /a\rb HTTP/1.1"),
    "two-hosts": _upgrade_with(extra=b"Host: evil\r\n"),
}


def upgrade_with_early_frame(port: int, path: str = "/") -> bytes:
    """Send an upgrade request with a masked text frame ``early`` right behind it (in the same
    segment, so the server's HTTP reader is likely to have buffered it), and return everything
    received until the echo of that frame."""
    request = upgrade(request_line=f"GET {path} HTTP/1.1", Host="x")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + frame(TEXT, b"early", key=b"\x01\x02\x03\x04"))
        data = b""
        while not data.endswith(b"\x81\x05early"):
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    return data
