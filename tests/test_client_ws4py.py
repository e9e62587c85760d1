"""ws4py's client API on wsloop: ``WebSocketBaseClient`` (its attributes and handshake hooks,
``handshake_ok()``), and ``threadedclient.WebSocketClient`` (``daemon``, ``run_forever``), on real
loopback and Unix sockets, against wsloop servers and raw scripted ones."""

from __future__ import annotations

import inspect
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wsloop
import wsloop.client
from tests.support.frames import frame
from tests.support.waiting import eventually
from wsloop.client import WebSocketBaseClient, WebSocketClient, threadedclient
from wsloop.exc import HandshakeError
from wsloop.framing import OPCODE_TEXT
from wsloop.handshake import accept, accept_value, parse_request
from wsloop.manager import WebSocketManager
from wsloop.messaging import Message
from wsloop.poller import Reactor
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    r.start()
    yield r
    r.stop(timeout=2)


@pytest.fixture
def echo_server() -> Iterator[WebSocketServer]:
    with WebSocketServer("127.0.0.1", 0, EchoWebSocket, protocols=["chat"]) as server:
        yield server


class Recorder(WebSocketBaseClient):
    """Records the hooks and callbacks it sees, in order, with the thread they ran on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.got = threading.Event()

    def handshake_ok(self) -> None:
        self.events.append("handshake_ok")
        super().handshake_ok()

    def opened(self) -> None:
        self.events.append("opened")

    def received_message(self, message: Message) -> None:
        self.events.append(("message", message.data))
        self.threads.append(threading.current_thread())
        self.got.set()

    def closed(self, code: int, reason: Any = None) -> None:
        self.events.append(("closed", code))


class OneShotServer:
    """Accepts one connection, answers its upgrade with a 101 and ``after`` in ONE send, then
    reads until the client goes (answering a close frame with one)."""

    def __init__(self, after: bytes, tls: ssl.SSLContext | None = None) -> None:
        self.after = after
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = f"wss://localhost:{port}/" if tls else f"ws://127.0.0.1:{port}/"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        with sock:
            sock.settimeout(10)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            data = b""
            while (parsed := parse_request(data)) is None:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            key = parsed[0].headers["sec-websocket-key"]
            head = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_value(key)}\r\n\r\n"
            ).encode()
            sock.sendall(head + self.after)  # one segment: the client reads both at once
            try:
                while chunk := sock.recv(4096):
                    if chunk[0] & 0x0F == 0x8:
                        sock.sendall(frame(0x8, b"\x03\xe8"))
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def one_shot() -> Iterator[Callable[..., OneShotServer]]:
    servers: list[OneShotServer] = []

    def make(after: bytes, tls: ssl.SSLContext | None = None) -> OneShotServer:
        server = OneShotServer(after, tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


# ------------------------------------------------------------ the classes


def test_base_client_is_its_own_class_with_ws4pys_signature() -> None:
    ws4py_client = pytest.importorskip("ws4py.client")
    ws4py_threaded = pytest.importorskip("ws4py.client.threadedclient")
    assert WebSocketBaseClient is not WebSocketClient
    assert issubclass(WebSocketClient, WebSocketBaseClient)
    assert threadedclient.WebSocketClient is WebSocketClient
    for ours, theirs in (
        (WebSocketBaseClient, ws4py_client.WebSocketBaseClient),
        (WebSocketClient, ws4py_threaded.WebSocketClient),
    ):
        ws4py_params = list(inspect.signature(theirs.__init__).parameters.values())
        our_params = list(inspect.signature(ours.__init__).parameters.values())
        assert [(p.name, p.default) for p in our_params[: len(ws4py_params)]] == [
            (p.name, p.default) for p in ws4py_params
        ]
        assert all(p.kind is p.KEYWORD_ONLY for p in our_params[len(ws4py_params) :])
    for name in ("bind_addr", "process_response_line", "process_handshake_header", "handshake_ok"):
        assert hasattr(WebSocketBaseClient, name)
    assert wsloop.client.WS_KEY == wsloop.WS_KEY and wsloop.client.WS_VERSION == wsloop.WS_VERSION


def test_key_is_bytes_and_the_handshake_checks_it(echo_server: WebSocketServer, reactor: Reactor) -> None:
    client = Recorder(echo_server.url, reactor=reactor)
    assert isinstance(client.key, bytes) and len(client.key) == 24
    client.key = b"dGhlIHNhbXBsZSBub25jZQ=="  # ws4py: "reset the key attribute to provide yours"
    assert ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==") in client.handshake_headers
    client.connect()
    client.send("keyed")
    assert client.got.wait(10)
    client.close()
    assert client.run_forever(10)


def test_bind_addr_and_hosts() -> None:
    assert WebSocketBaseClient("ws://example.com/x").bind_addr == ("example.com", 80)
    assert WebSocketBaseClient("wss://example.com:8443/x").bind_addr == ("example.com", 8443)
    unix = WebSocketBaseClient("ws+unix:///tmp/some.sock")
    assert (unix.host, unix.port, unix.unix_socket_path, unix.resource) == (
        "localhost",
        None,
        "/tmp/some.sock",
        "/",
    )
    assert unix.bind_addr == "/tmp/some.sock"
    assert ("Host", "localhost") in unix.handshake_headers


def test_unix_socket_client(tmp_path: Path, reactor: Reactor) -> None:
    path = str(tmp_path / "ws.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    requests: list[Any] = []

    def serve() -> None:  # one echo connection over the Unix socket
        sock, _ = listener.accept()
        data = b""
        while (parsed := parse_request(data)) is None:
            data += sock.recv(4096)
        requests.append(parsed[0])
        sock.sendall(accept(parsed[0]).response)
        EchoWebSocket(sock).run(data[parsed[1] :])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = Recorder(f"ws+unix://{path}", reactor=reactor)
        assert client.host == "localhost" and client.bind_addr == path
        client.connect()
        client.send("over unix")
        assert client.got.wait(10)
        assert ("message", b"over unix") in client.events
        assert requests[0].headers["host"] == "localhost"
        client.close()
        assert client.run_forever(10)
    finally:
        listener.close()
        thread.join(10)


# ------------------------------------------------------------ handshake hooks


def test_the_handshake_goes_through_the_ws4py_hooks(echo_server: WebSocketServer, reactor: Reactor) -> None:
    seen: list[Any] = []

    class Hooked(Recorder):
        compression = None  # no permessage-deflate offer: the server chooses no extension

        def process_response_line(self, response_line: bytes) -> None:
            seen.append(("line", response_line))
            super().process_response_line(response_line)

        def process_handshake_header(self, headers: bytes) -> tuple[list[bytes], list[bytes]]:
            result = super().process_handshake_header(headers)
            seen.append(("headers", headers, result))
            return result

    client = Hooked(echo_server.url, protocols=["chat"], reactor=reactor)
    client.connect()
    assert seen[0] == ("line", b"HTTP/1.1 101 Switching Protocols")
    _, headers, (protocols, extensions) = seen[1]
    assert isinstance(headers, bytes) and not headers.startswith(b"HTTP/") and not headers.endswith(b"\r\n")
    assert b"\r\nsec-websocket-accept: " in b"\r\n" + headers.lower()
    assert protocols == [b"chat"] and extensions == []
    assert client.protocols == ["chat"]
    client.close()
    assert client.run_forever(10)


def test_an_overriding_hook_is_honoured(echo_server: WebSocketServer, reactor: Reactor) -> None:
    class Refusing(Recorder):
        def process_handshake_header(self, headers: bytes) -> tuple[list[bytes], list[bytes]]:
            raise HandshakeError("not this server")

    client = Refusing(echo_server.url, reactor=reactor)
    with pytest.raises(HandshakeError, match="not this server"):
        client.connect()
    assert client.events == [("closed", 1006)]  # handshake_ok never ran

    class Renaming(Recorder):
        def process_handshake_header(self, headers: bytes) -> tuple[list[bytes], list[bytes]]:
            protocols, extensions = super().process_handshake_header(headers)
            return [b"renamed", *protocols], extensions

    renamed = Renaming(echo_server.url, protocols=["chat"], reactor=reactor)
    renamed.connect()
    assert renamed.protocols == ["renamed", "chat"]
    renamed.close()
    assert renamed.run_forever(10)


@pytest.mark.parametrize(
    "line, message",
    [
        (b"HTTP/1.1 403 Forbidden", "403"),
        (b"HTTP/1.1 302 Found", "redirect"),
        (b"garbage", "malformed"),
    ],
)
def test_process_response_line_refuses_anything_but_101(line: bytes, message: str) -> None:
    client = WebSocketBaseClient("ws://127.0.0.1:1/")
    client.process_response_line(b"HTTP/1.1 101 Switching Protocols")
    with pytest.raises(HandshakeError, match=message):
        client.process_response_line(line)


def test_process_handshake_header_validates_like_ws4py() -> None:
    client = WebSocketBaseClient("ws://127.0.0.1:1/", protocols=["chat"])
    key = client.key.decode()
    good = f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_value(key)}"
    assert client.process_handshake_header(good.encode()) == ([], [])
    chosen = good + "\r\nSec-WebSocket-Protocol: chat"
    assert client.process_handshake_header(chosen.encode()) == ([b"chat"], [])
    for bad, message in (
        (good.replace(accept_value(key), accept_value("dGhlIHNhbXBsZSBub25jZQ==")), "Accept"),
        (good.replace("Upgrade: websocket\r\n", ""), "Upgrade"),
        (good + "\r\nSec-WebSocket-Protocol: other", "subprotocol"),
    ):
        with pytest.raises(HandshakeError, match=message):
            client.process_handshake_header(bad.encode())


# ------------------------------------------------------------ handshake_ok


def test_handshake_ok_runs_before_opened_and_any_message(
    one_shot: Callable[..., OneShotServer], reactor: Reactor
) -> None:
    """A message the server sends right behind its 101, in the same segment, comes after
    ``handshake_ok()`` and ``opened()``, and is not lost."""
    server = one_shot(frame(OPCODE_TEXT, b"right behind the 101"))
    client = Recorder(server.url, reactor=reactor)
    client.connect()
    assert client.events[0] == "handshake_ok"  # connect() returns after it
    assert client.got.wait(10)
    assert client.events[:3] == ["handshake_ok", "opened", ("message", b"right behind the 101")]
    client.close()
    assert client.run_forever(10)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_bytes_after_the_101_follow_the_client_to_a_manager(
    one_shot: Callable[..., OneShotServer],
    reactor: Reactor,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    scheme: str,
) -> None:
    """``handshake_ok()`` hands the client to another reactor (a manager): the messages that
    arrived with the 101 (in the same segment, or the same TLS record) are delivered there, on
    the manager's thread."""
    server_ctx, client_ctx = tls_contexts
    m = WebSocketManager()
    m.start()
    try:

        class Managed(Recorder):
            def handshake_ok(self) -> None:
                self.events.append("handshake_ok")
                m.add(self)

        server = one_shot(
            frame(OPCODE_TEXT, b"first") + frame(OPCODE_TEXT, b"second"),
            server_ctx if scheme == "wss" else None,
        )
        client = Managed(server.url, reactor=reactor, ssl_options=client_ctx)
        client.connect()
        assert eventually(lambda: len(client.events) >= 4)
        assert client.events[:4] == ["handshake_ok", "opened", ("message", b"first"), ("message", b"second")]
        assert all(thread is m._thread for thread in client.threads)
        assert client.reactor is m and client in m and len(m) == 1
        client.close()
        assert client.run_forever(10)
    finally:
        m.stop(timeout=2)


def test_handshake_ok_that_raises_fails_connect(echo_server: WebSocketServer, reactor: Reactor) -> None:
    class Failing(Recorder):
        def handshake_ok(self) -> None:
            raise ValueError("no thanks")

    client = Failing(echo_server.url, reactor=reactor)
    with pytest.raises(ValueError, match="no thanks"):
        client.connect()
    assert client.events == [("closed", 1006)]
    assert client.sock is not None and client.sock.fileno() == -1


def test_send_right_after_a_handoff_waits_for_the_new_driver(
    echo_server: WebSocketServer, reactor: Reactor
) -> None:
    m = WebSocketManager()
    try:

        class Managed(Recorder):
            def handshake_ok(self) -> None:
                m.add(self)

        client = Managed(echo_server.url, reactor=reactor)
        client.connect()  # returns once handshake_ok() has; m has not started yet
        sender = threading.Thread(target=client.send, args=("after the handoff",))
        sender.start()
        time.sleep(0.2)
        assert sender.is_alive()  # waits for m to attach the client
        m.start()
        sender.join(10)
        assert client.got.wait(10)
        assert ("message", b"after the handoff") in client.events
        client.close()
        assert client.run_forever(10)
    finally:
        m.stop(timeout=2)


# ------------------------------------------------------------ threaded client


def test_threaded_client_daemon_flag() -> None:
    client = WebSocketClient("ws://127.0.0.1:1/")
    assert client.daemon is True
    client.daemon = False
    assert client.daemon is False


_NON_DAEMON = """
import sys
from wsloop.client.threadedclient import WebSocketClient

class Late(WebSocketClient):
    def received_message(self, message):
        print("got", message, flush=True)
        if str(message) == "first":
            # The second message is sent 0.5 s later, long after the main thread has ended.
            self.transport.call_later(0.5, self.send, "second")
        else:
            self.close()

    def closed(self, code, reason=None):
        print("closed", code, flush=True)

ws = Late(sys.argv[1])
ws.daemon = {daemon}
ws.connect()
ws.send("first")
"""


@pytest.mark.parametrize("daemon", [False, True])
def test_non_daemon_client_keeps_the_program_until_it_ends(
    echo_server: WebSocketServer, daemon: bool
) -> None:
    """ws4py: with ``daemon = False`` the program does not exit until the client has ended."""
    done = subprocess.run(
        [sys.executable, "-c", _NON_DAEMON.format(daemon=daemon), echo_server.url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if not daemon:
        assert lines == ["got first", "got second", "closed 1000"]
    else:
        assert "closed 1000" not in lines  # a daemon client does not hold the exit
