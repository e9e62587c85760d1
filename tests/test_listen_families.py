"""The standalone server on every listening family: a Unix socket (``ws+unix://`` clients),
IPv6 (``WebSocketServer("::1", 0)`` and ``python -m wsloop serve --host ::1``) and IPv4, with
both pollers, over real sockets and real clients; and TCP_NODELAY on accepted TCP connections."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.serverproc import FLAVOURS, ServerProcess
from wsloop.client import WebSocketClient
from wsloop.handshake import client_request, new_key, parse_response, validate_response
from wsloop.messaging import Message
from wsloop.protocol import Protocol
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket


def _ipv6_loopback() -> str | None:
    """Why this machine cannot serve on ::1, or None if it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6 (socket.has_ipv6 is False)"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback on this machine: binding ::1 fails ({exc})"
    return None


needs_ipv6 = pytest.mark.skipif(_ipv6_loopback() is not None, reason=str(_ipv6_loopback()))


class SocketReport(WebSocket):
    """Echoes, and answers ``"nodelay?"`` with its socket's TCP_NODELAY and ``"family?"`` with
    its socket's family name."""

    def received_message(self, message: Message) -> None:
        sock = self.sock
        assert sock is not None
        if message.data == b"nodelay?":
            self.send(str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        elif message.data == b"family?":
            self.send(sock.family.name)
        else:
            self.send(message.data, message.is_binary)


class Recorder(WebSocketClient):
    """wsloop's ws4py-style threaded client, recording what it receives."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.messages: list[bytes] = []
        self.got = threading.Condition()

    def received_message(self, message: Message) -> None:
        with self.got:
            self.messages.append(bytes(message.data))
            self.got.notify_all()

    def ask(self, text: str, timeout: float = 10.0) -> bytes:
        """Send ``text``; the next message received."""
        with self.got:
            seen = len(self.messages)
            self.send(text)
            assert self.got.wait_for(lambda: len(self.messages) > seen, timeout), f"no answer to {text!r}"
            return self.messages[seen]


class Client6:
    """A blocking WebSocket client over a socket of any family (``connect`` to ``address``)."""

    def __init__(self, family: socket.AddressFamily, address: Any, host: str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(address)
        key = new_key()
        self.sock.sendall(client_request(host, "/", key, None, None))
        data = b""
        while (parsed := parse_response(data)) is None:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed during the handshake"
            data += chunk
        response, length = parsed
        validate_response(response, key, None, None)
        self.stream = Protocol(client=True, max_message_size=None)
        self.stream.feed(data[length:])

    def ask(self, text: str) -> bytes:
        self.stream.send(text, False)
        self.sock.sendall(self.stream.data_to_send())
        while not self.stream.received:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed"
            self.stream.feed(chunk)
        return bytes(self.stream.received.pop(0).data)

    def close(self) -> None:
        self.stream.close(1000)
        try:
            self.sock.sendall(self.stream.data_to_send())
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def servers(poller: str) -> Iterator[Callable[..., WebSocketServer]]:
    """Make standalone servers of ``poller`` (started); stopped after the test."""
    made: list[WebSocketServer] = []

    def make(*args: Any, **kwargs: Any) -> WebSocketServer:
        server = WebSocketServer(*args, handler_cls=SocketReport, poller=poller, **kwargs)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop(timeout=2)


# ---------------------------------------------------------------------- Unix sockets


def test_unix_socket_serves_ws_unix_clients(servers: Callable[..., WebSocketServer], tmp_path: Path) -> None:
    """A server on an AF_UNIX listener: wsloop's client at ``ws+unix://`` (the server's url) gets
    its echo, connection after connection (before: TCP_NODELAY on the accepted socket raised
    EOPNOTSUPP in the reactor's acceptor and the client was reset)."""
    path = str(tmp_path / "ws.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    server = servers(sock=listener)
    for round_ in range(3):
        client = Recorder(f"ws+unix://{path}")
        client.connect()
        assert client.ask(f"over unix {round_}") == f"over unix {round_}".encode()
        assert client.ask("family?") == b"AF_UNIX"
        client.close()
        assert client.run_forever(10)
    assert server.pending_handshakes == 0


def test_unix_socket_server_url(servers: Callable[..., WebSocketServer], tmp_path: Path) -> None:
    """The url of a server on a Unix socket is ``ws+unix://`` and its path, which a client
    connects to (before: ``ws:///:t/``, the path's first two characters as host and port)."""
    path = str(tmp_path / "url.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    server = servers(sock=listener)
    assert server.url == f"ws+unix://{path}"
    assert server.server_address == (path, 0)
    client = Recorder(server.url)
    client.connect()
    try:
        assert client.ask("at the url") == b"at the url"
    finally:
        client.close()
        client.run_forever(10)


def test_unix_socket_serves_ws4py_client(servers: Callable[..., WebSocketServer], tmp_path: Path) -> None:
    """ws4py 0.6.0's own threaded client at ``ws+unix:///path`` gets its echo."""
    threadedclient = pytest.importorskip("ws4py.client.threadedclient")
    path = str(tmp_path / "ws4py.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    server = servers(sock=listener)
    got: list[bytes] = []
    done = threading.Event()

    class Ws4pyClient(threadedclient.WebSocketClient):  # type: ignore[misc, name-defined]
        def opened(self) -> None:
            self.send("ws4py over unix")

        def received_message(self, message: Any) -> None:
            got.append(bytes(message.data))
            done.set()
            self.close()

    client = Ws4pyClient(f"ws+unix://{path}")
    client.connect()
    assert done.wait(10), "no echo"
    client.run_forever()
    assert got == [b"ws4py over unix"]
    assert server.pending_handshakes == 0


# ---------------------------------------------------------------------- TCP_NODELAY


def test_accepted_tcp_connections_have_nodelay(servers: Callable[..., WebSocketServer]) -> None:
    """Both pollers turn Nagle's algorithm off on what they accept (before: the threaded one
    did not, and a handler's second send in a row waited for the client's delayed ACK)."""
    server = servers("127.0.0.1", 0)
    client = Recorder(server.url)
    client.connect()
    try:
        assert client.ask("nodelay?") != b"0"
        assert client.ask("family?") == b"AF_INET"
    finally:
        client.close()
        client.run_forever(10)


# ---------------------------------------------------------------------- IPv6


@needs_ipv6
def test_ipv6_loopback(servers: Callable[..., WebSocketServer]) -> None:
    """``WebSocketServer("::1", 0)`` listens on IPv6 (before: it made an IPv4 socket and
    failed with "Address family for hostname not supported"); its url brackets the address;
    an IPv6 client and wsloop's client at that url get their echoes, on a TCP_NODELAY socket."""
    server = servers("::1", 0)
    assert server.sock.family == socket.AF_INET6
    assert server.server_address == ("::1", server.port)
    assert server.url == f"ws://[::1]:{server.port}/"
    raw = Client6(socket.AF_INET6, ("::1", server.port), f"[::1]:{server.port}")
    try:
        assert raw.ask("over ipv6") == b"over ipv6"
        assert raw.ask("family?") == b"AF_INET6"
        assert raw.ask("nodelay?") != b"0"
    finally:
        raw.close()
    client = Recorder(server.url)
    client.connect()
    try:
        assert client.ask("from the url") == b"from the url"
    finally:
        client.close()
        client.run_forever(10)


def test_empty_host_is_every_ipv4_address(servers: Callable[..., WebSocketServer]) -> None:
    """``""`` binds every IPv4 address, as before (getaddrinfo does not resolve it)."""
    server = servers("", 0)
    assert server.sock.family == socket.AF_INET
    raw = Client6(socket.AF_INET, ("127.0.0.1", server.port), f"127.0.0.1:{server.port}")
    try:
        assert raw.ask("over ipv4") == b"over ipv4"
    finally:
        raw.close()


@needs_ipv6
@pytest.mark.parametrize("flavour", [*FLAVOURS, "workers"])
def test_cli_serves_on_ipv6_loopback(flavour: str) -> None:
    """``python -m wsloop serve --host ::1`` logs ``ws://[::1]:PORT/`` and echoes to an IPv6
    client, on every flavour and with workers (before: the standalone server and wsgiref exited
    at start-up with an IPv4 socket; CherryPy logged ``ws://::1:PORT/``)."""
    args = ("--workers", "2") if flavour == "workers" else FLAVOURS[flavour]
    server = ServerProcess(*args, "--host", "::1", ready=r"ws://\[::1\]:(?P<port>\d+)/")
    try:
        raw = Client6(socket.AF_INET6, ("::1", server.port), f"[::1]:{server.port}")
        try:
            assert raw.ask("cli over ipv6") == b"cli over ipv6"
        finally:
            raw.close()
    finally:
        assert server.stop() == 0, server.output


def test_workers_listen_on_every_address_for_an_empty_host() -> None:
    """``--workers 2 --host ""`` listens on every IPv4 address and reports a URL a client can
    use (before: the supervisor failed at start-up, getaddrinfo("") being no address)."""
    server = ServerProcess("--workers", "2", "--host", "", ready=r"ws://127\.0\.0\.1:(?P<port>\d+)/")
    try:
        raw = Client6(socket.AF_INET, ("127.0.0.1", server.port), f"127.0.0.1:{server.port}")
        try:
            assert raw.ask("every address") == b"every address"
        finally:
            raw.close()
    finally:
        assert server.stop() == 0, server.output


@pytest.mark.parametrize("poller_args", [(), ("--poller", "threaded")], ids=["selectors", "threaded"])
def test_cli_reports_a_port_it_cannot_listen_on(poller_args: tuple[str, ...]) -> None:
    """A taken port: one error line and exit code 1 (before: a traceback, exit code 1 from
    the uncaught exception; the same for a host that does not resolve)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "wsloop", "serve", "--host", "127.0.0.1", "--port", str(port)]
        result = subprocess.run(
            [*argv, *poller_args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve on 127.0.0.1:{port}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
