"""``wss://`` on the standalone server: TLS done by the reactor without blocking (and by each
connection's thread with the threaded poller), over real loopback sockets and a certificate
made for the test session."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.serverproc import ServerProcess
from tests.support.sockets import open_fds, read_101
from tests.support.waiting import eventually
from tests.support.wsclient import Client, text_frame
from wsloop.client import WebSocketClient
from wsloop.framing import OPCODE_CLOSE, OPCODE_TEXT, build_frame
from wsloop.handshake import client_request, new_key
from wsloop.messaging import Message
from wsloop.poller import Reactor
from wsloop.protocol import Protocol
from wsloop.servers.standalone import WebSocketServer

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


@pytest.fixture
def tls_server(make_server: Callable[..., WebSocketServer], tls_files: tuple[Path, Path]) -> WebSocketServer:
    cert, key = tls_files
    return make_server(certfile=str(cert), keyfile=str(key), handshake_timeout=1.0, close_timeout=1.0)


def test_echo_over_tls(tls_server: WebSocketServer, tls_contexts: Contexts) -> None:
    assert tls_server.url.startswith("wss://")
    _, client_ctx = tls_contexts
    with Client(tls_server.port, ssl_context=client_ctx) as client:
        assert client.echo("héllo").data == "héllo".encode()
        assert client.echo(bytes(range(256))).data == bytes(range(256))
        big = bytes(range(256)) * 8192  # 2 MiB: many TLS records, more than one read buffer
        assert client.echo(big).data == big
        # 500 frames in one write: several records in one read, parsed in one pass
        client.send_raw(b"".join(text_frame(f"m{i}".encode()) for i in range(500)))
        assert [client.recv().data for _ in range(500)] == [f"m{i}".encode() for i in range(500)]


@pytest.mark.parametrize("poller", ["selectors"])
def test_many_tls_connections_share_the_reactor_thread(
    make_server: Callable[..., WebSocketServer], tls_files: tuple[Path, Path], tls_contexts: Contexts
) -> None:
    cert, key = tls_files
    server = make_server(certfile=str(cert), keyfile=str(key))
    threads = threading.active_count()
    clients = [Client(server.port, ssl_context=tls_contexts[1]) for _ in range(50)]
    try:
        for i, client in enumerate(clients):
            assert client.echo(f"c{i}").data == f"c{i}".encode()
        assert threading.active_count() == threads, "no thread per TLS connection"
        server.manager.broadcast("to all")
        for client in clients:
            assert client.recv().data == b"to all"
    finally:
        for client in clients:
            client.sock.close()


def tls11_client() -> ssl.SSLContext:
    """A client context that offers TLS 1.1 and nothing else, at OpenSSL security level 0 (at
    the default level OpenSSL 3 would not offer TLS 1.1 at all and give up before the server
    could refuse anything)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_the_tls11_client_speaks_tls11(tls_files: tuple[Path, Path]) -> None:
    """The control for the refusal below: against a plain ``ssl`` server that accepts TLS 1.1,
    the same client completes a TLS 1.1 handshake, so a refusal comes from the server."""
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    versions: list[str | None] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            sock, _ = listener.accept()
            with server_ctx.wrap_socket(sock, server_side=True) as tls:
                versions.append(tls.version())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with tls11_client().wrap_socket(raw) as tls:
                assert tls.version() == "TLSv1.1"
        thread.join(10)
    assert versions == ["TLSv1.1"]


def test_failed_tls_handshakes_cost_only_their_connection(
    tls_server: WebSocketServer, tls_contexts: Contexts
) -> None:
    _, client_ctx = tls_contexts
    good = Client(tls_server.port, ssl_context=client_ctx)
    baseline = open_fds()

    def refused(data: bytes) -> bytes:
        """Send ``data`` in clear; what the server answers before it closes (no HTTP at all)."""
        with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
            sock.sendall(data)
            got = b""
            try:
                while chunk := sock.recv(4096):
                    got += chunk
            except ConnectionResetError:
                pass
            return got

    # A plain-text upgrade request and garbage: no TLS record, the connection is closed.
    assert b"HTTP/1.1 101" not in refused(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
    assert b"HTTP/1.1 101" not in refused(bytes(range(256)) * 4)
    assert good.echo("after garbage").data == b"after garbage"

    # A client that does not trust the certificate gives up during the handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(tls_server.port, ssl_context=ssl.create_default_context())
    # A client that offers TLS 1.1 only is refused by the server's protocol_version alert.
    with pytest.raises(ssl.SSLError) as refusal:
        Client(tls_server.port, ssl_context=tls11_client())
    assert refusal.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refusal.value
    assert good.echo("after bad clients").data == b"after bad clients"

    # Half a ClientHello, then silence: dropped after the handshake timeout (1 s here).
    slow = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    slow.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    started = time.monotonic()
    assert slow.recv(4096) == b""
    assert time.monotonic() - started < 4
    slow.close()

    assert good.echo("still here").data == b"still here"
    assert eventually(lambda: open_fds() <= baseline), open_fds() - baseline
    good.close()


@pytest.mark.parametrize("poller", ["selectors"])
def test_a_peer_that_does_not_read_is_paused_alone(
    make_server: Callable[..., WebSocketServer], tls_files: tuple[Path, Path], tls_contexts: Contexts
) -> None:
    """Backpressure over TLS: the server stops reading a client that does not read its echoes,
    keeps serving the others, and delivers everything in order once the client reads.

    The lazy client writes and reads at once, so it is an asyncio one: one thread drives its TLS
    (an ``ssl.SSLSocket`` must not be read in one thread while another writes to it)."""
    cert, key = tls_files
    reactor = Reactor(high_water=256 * 1024, low_water=64 * 1024)
    server = make_server(certfile=str(cert), keyfile=str(key), manager=reactor)
    _, client_ctx = tls_contexts
    other = Client(server.port, ssl_context=client_ctx)
    payload = b"z" * 65536
    count = 640  # 40 MiB of echoes: far above the high-water mark and the loopback socket buffers
    frame = build_frame(OPCODE_TEXT, payload, masked=True)

    async def lazy() -> list[bytes]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(client_request(f"127.0.0.1:{server.port}", "/", new_key()))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

        async def send_all() -> None:
            for _ in range(count):
                writer.write(frame)
                await writer.drain()  # waits while the server does not read

        sender = asyncio.create_task(send_all())
        await asyncio.sleep(2)
        assert not sender.done(), "the server kept reading a peer that does not read"
        echo = await asyncio.to_thread(other.echo, "served meanwhile")
        assert echo.data == b"served meanwhile"
        stream = Protocol(client=True, max_message_size=None)
        while len(stream.received) < count:
            data = await asyncio.wait_for(reader.read(262144), 20)
            assert data, "connection closed by the server"
            stream.feed(data)
        await asyncio.wait_for(sender, 10)
        writer.close()
        return [message.data for message in stream.received]

    assert asyncio.run(lazy()) == [payload] * count
    other.close()


@pytest.mark.parametrize("poller", ["selectors", "threaded"])
def test_stop_closes_tls_clients_with_1001(
    poller: str,
    make_server: Callable[..., WebSocketServer],
    tls_files: tuple[Path, Path],
    tls_contexts: Contexts,
) -> None:
    cert, key = tls_files
    server = make_server(certfile=str(cert), keyfile=str(key), poller=poller)
    clients = [Client(server.port, ssl_context=tls_contexts[1]) for _ in range(5)]
    for client in clients:
        assert client.echo("x").data == b"x"
    stopper = threading.Thread(target=server.stop, args=(5,))
    stopper.start()
    for client in clients:
        assert client.recv_close().code == 1001
        client.flush()
    stopper.join(10)
    assert not stopper.is_alive()


class _Echoed(WebSocketClient):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.got: list[bytes] = []
        self.done = threading.Event()

    def received_message(self, message: Message) -> None:
        self.got.append(message.data)
        if len(self.got) == 3:
            self.done.set()


def test_wsloop_client_and_server_both_tls_in_one_reactor(
    tls_files: tuple[Path, Path], tls_contexts: Contexts
) -> None:
    """Server and 20 wss:// clients, all served by one reactor thread."""
    cert, key = tls_files
    reactor = Reactor()
    server = WebSocketServer("127.0.0.1", 0, certfile=str(cert), keyfile=str(key), manager=reactor)
    server.start()
    threads = threading.active_count()
    try:
        clients = [_Echoed(server.url, ssl_options=tls_contexts[1], reactor=reactor) for _ in range(20)]
        for client in clients:
            client.connect()
            for word in ("one", "two", "three"):
                client.send(word)
        for client in clients:
            assert client.done.wait(10)
            assert client.got == [b"one", b"two", b"three"]
        assert threading.active_count() == threads
        for client in clients:
            client.close()
        for client in clients:
            assert client.run_forever(5)
    finally:
        server.stop(2)


def test_cli_serves_wss(tls_files: tuple[Path, Path], tls_contexts: Contexts) -> None:
    cert, key = tls_files
    server = ServerProcess("--certfile", str(cert), "--keyfile", str(key))
    try:
        assert server.url.startswith("wss://"), server.output
        clients = [Client(server.port, ssl_context=tls_contexts[1]) for _ in range(3)]
        for client in clients:
            assert client.echo("over tls").data == b"over tls"
        clients[0].send_raw(build_frame(OPCODE_TEXT, b"\xff", masked=True))  # invalid UTF-8
        assert clients[0].recv_close().code == 1007
        clients[0].sock.close()
        server.send_signal(signal.SIGTERM)
        for client in clients[1:]:
            assert client.recv_close().code == 1001
            client.flush()
    finally:
        code = server.stop()
    assert code == 0, server.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("--certfile", "/nonexistent.pem"), "cannot load the TLS certificate"),
        (("--keyfile", "/k.pem"), "--keyfile needs --certfile"),
        (("--server", "gevent", "--certfile", "/c.pem"), "standalone server only"),
    ],
)
def test_cli_tls_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


def _raw_tls_upgrade(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """An upgraded ``wss://`` connection on a plain ``ssl`` socket that reports a TLS end without
    close_notify as an error (``suppress_ragged_eofs=False``); nothing after the 101 is read."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    read_101(sock, port)
    return sock


def _read_to_clean_tls_end(sock: ssl.SSLSocket) -> bytes:
    """Everything until the TLS end; an SSLEOFError (TCP closed without close_notify) fails."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ssl.SSLEOFError as exc:
            raise AssertionError(f"no close_notify before the TCP end: {exc}") from exc
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("poller", ["selectors", "threaded"])
@pytest.mark.parametrize("initiator", ["client", "server"])
def test_closing_a_tls_websocket_sends_close_notify(
    poller: str,
    initiator: str,
    make_server: Callable[..., WebSocketServer],
    tls_files: tuple[Path, Path],
    tls_contexts: Contexts,
) -> None:
    cert, key = tls_files
    server = make_server(certfile=str(cert), keyfile=str(key), poller=poller)
    sock = _raw_tls_upgrade(server.port, tls_contexts[1])
    try:
        sock.sendall(text_frame(b"hello"))
        if initiator == "client":
            sock.sendall(build_frame(OPCODE_CLOSE, b"\x03\xe8", masked=True))
            data = _read_to_clean_tls_end(sock)
        else:
            head = b""
            while len(head) < 7:
                head += sock.recv(7 - len(head))
            assert head == b"\x81\x05hello"
            server.manager.close_all(1001, "bye")
            data = b""
            while b"\x88" not in data:
                data += sock.recv(64)
            sock.sendall(build_frame(OPCODE_CLOSE, b"\x03\xe9", masked=True))
            data += _read_to_clean_tls_end(sock)
        stream = Protocol(client=True)
        stream.feed(data)
        assert stream.close_received is not None
        assert stream.close_received.code == (1000 if initiator == "client" else 1001)
    finally:
        sock.close()
