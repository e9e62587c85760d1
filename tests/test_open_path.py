"""The standalone server's opening path (issue 16, item 3): bursts of connections accepted in
batches, the request parser's one-pass and step-by-step paths agreeing, the 101 template, the
shared handshake timeout, and ``ws.environ`` built only when a handler reads it. Real servers,
real loopback sockets."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.waiting import eventually
from tests.support.wsclient import Client
from wsloop.handshake import (
    LazyEnviron,
    accept,
    accept_response,
    parse_request,
)
from wsloop.handshake import (
    _parse_request_slowly as parse_request_slowly,
)
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    "GET /chat?room=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: burst\r\n\r\n"
).encode()
RESPONSE_101 = accept_response(KEY)


def read_all(socks: list[socket.socket], size: int, within: float) -> dict[socket.socket, bytes]:
    """Up to ``size`` bytes from each of ``socks`` (b"" for one that closed or failed)."""
    got = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        left = len(socks)
        while left and (timeout := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = sock.recv(size - len(got[sock]))
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                got[sock] += chunk
                if not chunk or len(got[sock]) >= size:
                    selector.unregister(sock)
                    left -= 1
    return got


def masked_text(payload: bytes) -> bytes:
    """A client's text frame of a short ``payload``, masked with ``abcd``."""
    return (
        bytes([0x81, 0x80 | len(payload)])
        + b"abcd"
        + bytes(b ^ b"abcd"[i % 4] for i, b in enumerate(payload))
    )


# ---------------------------------------------------------------------- bursts of connections


@pytest.mark.parametrize("send_first", [True, False], ids=["request-with-connect", "connect-then-request"])
def test_burst_of_200_connections_is_served(send_first: bool) -> None:
    """200 connections at once (their requests there when accepted, or sent once all are
    connected, so the handshakes wait in the reactor): each gets its 101 and then its echo."""
    server = WebSocketServer("127.0.0.1", 0, handshake_timeout=30)
    server.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port))
            if send_first:
                sock.sendall(UPGRADE)
            socks.append(sock)
        if not send_first:
            assert eventually(lambda: server.pending_handshakes == 200)
            for sock in socks:
                sock.sendall(UPGRADE)
        answers = read_all(socks, len(RESPONSE_101), 20.0)
        assert sum(answer == RESPONSE_101 for answer in answers.values()) == 200
        assert eventually(lambda: len(server.manager) == 200 and server.pending_handshakes == 0)
        frame = masked_text(b"hi")
        for sock in socks:
            sock.setblocking(True)
            sock.sendall(frame)
        echoes = read_all(socks, 4, 20.0)
        assert sum(echo == b"\x81\x02hi" for echo in echoes.values()) == 200
    finally:
        for sock in socks:
            sock.close()
        server.stop(timeout=2)


def test_handshake_timeouts_share_one_timer() -> None:
    """Silent connections are closed after handshake_timeout, in order, with one timer for all
    of them; a connection that finishes its handshake meanwhile is served on, and nothing is
    left waiting."""
    server = WebSocketServer("127.0.0.1", 0, handshake_timeout=0.5)
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        assert eventually(lambda: server.pending_handshakes == 5)
        late = socket.create_connection(("127.0.0.1", server.port))
        assert eventually(lambda: server.pending_handshakes == 6)
        late.sendall(UPGRADE)  # within its timeout: upgraded
        assert read_all([late], len(RESPONSE_101), 5.0)[late] == RESPONSE_101
        closed = read_all(silent, 1, 10.0)
        assert all(data == b"" for data in closed.values())  # EOF: closed by the server
        assert eventually(lambda: server.pending_handshakes == 0)
        acceptor: Any = server.acceptor
        assert eventually(lambda: not acceptor.waiting and acceptor.sweep is None)
        # The upgraded one is still served.
        late.setblocking(True)
        late.sendall(masked_text(b"ok"))
        late.settimeout(5)
        assert late.recv(4) == b"\x81\x02ok"
        late.close()
    finally:
        for sock in silent:
            sock.close()
        server.stop(timeout=2)


# ---------------------------------------------------------------------- the parser


HEADS = [
    UPGRADE,
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",  # repeated: joined
    b"GET / HTTP/1.1\r\nHost:\ta \t\r\nEmpty:\r\nSpaces:   \r\n\r\n",
    b"GET /p?q=1&r=%20 HTTP/1.1\r\nHost: [::1]:80\r\nUser-Agent: a b\tc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\n\r\n",  # obs-text: the slow path
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\ntrailing bytes",
]


@pytest.mark.parametrize("head", HEADS)
def test_one_pass_parser_agrees_with_the_step_by_step_one(head: bytes) -> None:
    fast = parse_request(head)
    slow = parse_request_slowly(head, 16 * 1024)
    assert fast is not None and slow is not None
    assert fast == slow


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad\x00Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
    ],
)
def test_one_pass_parser_refuses_what_the_step_by_step_one_refuses(head: bytes) -> None:
    from wsloop.exc import HandshakeError

    with pytest.raises(HandshakeError) as fast:
        parse_request(head)
    with pytest.raises(HandshakeError) as slow:
        parse_request_slowly(head, 16 * 1024)
    assert (fast.value.status, fast.value.reason) == (slow.value.status, slow.value.reason)


def test_101_template_is_the_built_response() -> None:
    parsed = parse_request(UPGRADE)
    assert parsed is not None
    accepted = accept(parsed[0])
    assert accepted.response == RESPONSE_101
    assert accepted.headers == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]


# ---------------------------------------------------------------------- lazy environ


class Recorded:
    websockets: list[WebSocket] = []
    environs: list[dict[str, Any] | None] = []
    ready = threading.Event()


class ReadsEnviron(WebSocket):
    """Reads ws.environ in opened() and again in closed() (its socket closed by then)."""

    def opened(self) -> None:
        Recorded.environs.append(self.environ)
        self.send("opened")

    def closed(self, code: int, reason: bytes = b"") -> None:
        Recorded.environs.append(self.environ)
        Recorded.ready.set()


class NeverReadsEnviron(EchoWebSocket):
    def opened(self) -> None:
        Recorded.websockets.append(self)


class OwnInit(WebSocket):
    """A ws4py-style constructor that reads its environ argument before the base's."""

    def __init__(
        self, sock: Any, protocols: Any = None, extensions: Any = None, environ: Any = None, **kw: Any
    ):
        Recorded.environs.append(dict(environ))
        super().__init__(sock, protocols, extensions, environ, **kw)

    def opened(self) -> None:
        self.send("opened")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Recorded.websockets = []
    Recorded.environs = []
    Recorded.ready = threading.Event()


def test_handler_that_reads_environ_gets_ws4py_keys_even_after_close() -> None:
    with WebSocketServer("127.0.0.1", 0, handler_cls=ReadsEnviron) as server:
        port = server.port
        client = Client(port, path="/chat?room=7", headers=[("User-Agent", "tester")])
        assert client.recv().data == b"opened"
        client_port = client.sock.getsockname()[1]
        client.close()
        assert Recorded.ready.wait(10)
    opened, closed = Recorded.environs
    assert opened is closed  # built once, kept
    assert opened is not None
    assert opened["REQUEST_METHOD"] == "GET"
    assert opened["PATH_INFO"] == "/chat" and opened["QUERY_STRING"] == "room=7"
    assert opened["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert opened["REMOTE_ADDR"] == "127.0.0.1" and opened["REMOTE_PORT"] == str(client_port)
    assert opened["HTTP_HOST"] == f"127.0.0.1:{port}"
    assert opened["HTTP_UPGRADE"] == "websocket"
    assert opened["HTTP_USER_AGENT"] == "tester"
    assert opened["HTTP_SEC_WEBSOCKET_VERSION"] == "13"
    assert len(opened["HTTP_SEC_WEBSOCKET_KEY"]) == 24
    assert "wsgi.url_scheme" not in opened


def test_handler_that_never_reads_environ_never_builds_it() -> None:
    with WebSocketServer("127.0.0.1", 0, handler_cls=NeverReadsEnviron) as server:
        with Client(server.port, path="/x?y=1") as client:
            assert client.echo("hello").data == b"hello"
            assert eventually(lambda: len(Recorded.websockets) == 1)
            ws = Recorded.websockets[0]
            pending = ws.__dict__["_environ"]
            assert isinstance(pending, LazyEnviron)  # not built
            assert pending.host == "127.0.0.1"
            # Reading it builds it then, with the same keys an eager one has.
            assert ws.environ is not None and ws.environ["QUERY_STRING"] == "y=1"
            assert type(ws.__dict__["_environ"]) is dict


def test_handler_with_its_own_constructor_gets_a_dict() -> None:
    with WebSocketServer("127.0.0.1", 0, handler_cls=OwnInit) as server:
        with Client(server.port, path="/own") as client:
            assert client.recv().data == b"opened"
    (environ,) = Recorded.environs
    assert environ["PATH_INFO"] == "/own" and environ["REMOTE_ADDR"] == "127.0.0.1"


def test_tls_environ_says_https(make_server: Callable[..., WebSocketServer], tls_files: Any) -> None:
    import ssl

    cert, key = tls_files
    server = make_server(handler_cls=ReadsEnviron, certfile=str(cert), keyfile=str(key), poller="selectors")
    context = ssl.create_default_context(cafile=str(cert))
    client = Client(server.port, ssl_context=context)
    assert client.recv().data == b"opened"
    client.close()
    assert Recorded.ready.wait(10)
    environ = Recorded.environs[0]
    assert environ is not None and environ["wsgi.url_scheme"] == "https"


def test_idle_heads_share_their_template_and_keep_their_own_key() -> None:
    """Two clients sending the same head but for the key: one template object, each environ with
    its own key; the templates kept stay bounded however many different heads arrive."""
    with WebSocketServer("127.0.0.1", 0, handler_cls=NeverReadsEnviron) as server:
        clients = [Client(server.port, path="/same") for _ in range(2)]
        assert eventually(lambda: len(Recorded.websockets) == 2)
        first, second = (ws.__dict__["_environ"] for ws in Recorded.websockets)
        assert first.template is second.template and first.key != second.key
        keys = {ws.environ["HTTP_SEC_WEBSOCKET_KEY"] for ws in Recorded.websockets}  # type: ignore[index]
        assert keys == {first.key.decode(), second.key.decode()}
        for client in clients:
            client.close()
        for i in range(80):  # 80 different paths: 80 different templates
            with Client(server.port, path=f"/other{i}") as client:
                assert client.echo("x").data == b"x"
        heads: dict[bytes, bytes] = server.policy._heads
        assert len(heads) == 64


@pytest.mark.parametrize(
    "head", [UPGRADE, HEADS[3], b"GET /k HTTP/1.1\r\nSec-WebSocket-Key: " + KEY.encode() + b"\r\n\r\n"]
)
@pytest.mark.parametrize("peer", [("10.0.0.1", 4242), ("::1", 80, 0, 0), ""])
def test_lazy_environ_builds_what_the_eager_one_is(head: bytes, peer: Any) -> None:
    from wsloop.handshake import environ_of

    parsed = parse_request(head)
    assert parsed is not None
    request = parsed[0]
    eager = environ_of(request, peer, True)
    for templates in (None, {}):
        lazy = LazyEnviron(head, request.key, peer, True, templates)
        assert lazy.head == head
        assert lazy.build() == eager


# ---------------------------------------------------------------------- each request's own key


def _with_key(key: str, extra: bytes = b"") -> bytes:
    return UPGRADE.replace(KEY.encode(), key.encode()) + extra


def test_server_answers_each_request_with_its_own_key() -> None:
    """The standalone server's answers carry each request's own accept value."""
    from wsloop.handshake import accept_value

    server = WebSocketServer("127.0.0.1", 0)
    server.start()
    socks = []
    try:
        keys = ["AAAAAAAAAAAAAAAAAAAAAA==", KEY, "x3JJHMbDL1EzLkh9GBhXDw==", KEY]
        for key in keys:
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(_with_key(key))
            socks.append(sock)
        answers = read_all(socks, len(RESPONSE_101), 10.0)
        for sock, key in zip(socks, keys, strict=True):
            assert answers[sock] == accept_response(key)
            assert accept_value(key).encode() in answers[sock]
    finally:
        for sock in socks:
            sock.close()
        server.stop(timeout=2)


# ---------------------------------------------------------------------- reading at accept


def test_connections_whose_requests_come_late_are_watched_without_a_read() -> None:
    """After two connections whose requests were not there when accepted, the next ones are
    watched at once (a probe read every 16th); requests that then come first are read at once
    again. Every connection is served either way, within the handshake timeout."""
    server = WebSocketServer("127.0.0.1", 0, handshake_timeout=30)
    server.start()
    acceptor: Any = server.acceptor
    socks: list[socket.socket] = []
    try:
        for _ in range(40):
            socks.append(socket.create_connection(("127.0.0.1", server.port)))
        assert eventually(lambda: server.pending_handshakes == 40)
        assert acceptor.misses == 2
        for sock in socks:
            sock.sendall(UPGRADE)
        answers = read_all(socks, len(RESPONSE_101), 20.0)
        assert sum(answer == RESPONSE_101 for answer in answers.values()) == 40
        assert eventually(lambda: len(server.manager) == 40 and server.pending_handshakes == 0)
        # Requests sent with the connect: the probe finds one there, and reading at once resumes.
        more = []
        for _ in range(200):  # the first probe reads at once (unless accepted before the send)
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(UPGRADE)
            more.append(sock)
            socks.append(sock)
            assert eventually(lambda: len(server.manager) == 40 + len(more))
            if acceptor.misses == 0:
                break
        assert acceptor.misses == 0
        answers = read_all(more, len(RESPONSE_101), 20.0)
        assert all(answer == RESPONSE_101 for answer in answers.values())
    finally:
        for sock in socks:
            sock.close()
        server.stop(timeout=2)


def test_silent_connections_watched_without_a_read_still_time_out() -> None:
    server = WebSocketServer("127.0.0.1", 0, handshake_timeout=0.5)
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
    try:
        assert eventually(lambda: server.pending_handshakes == 6)
        closed = read_all(silent, 1, 10.0)
        assert all(data == b"" for data in closed.values())
        assert eventually(lambda: server.pending_handshakes == 0)
    finally:
        for sock in silent:
            sock.close()
        server.stop(timeout=2)


class OwnEnvironProperty(WebSocket):
    """A handler class with its own ``environ`` property: the constructor assigns through it."""

    seen: list[Any] = []

    @property  # type: ignore[override]
    def environ(self) -> Any:
        return self._own

    @environ.setter
    def environ(self, value: Any) -> None:
        OwnEnvironProperty.seen.append(value)
        self._own = value


def test_a_subclass_environ_property_still_gets_the_constructor_assignment() -> None:
    marker = {"PATH_INFO": "/x"}
    ws = OwnEnvironProperty(None, environ=marker)
    assert OwnEnvironProperty.seen[-1] is marker and ws.environ is marker
    plain = WebSocket(None, environ=marker)
    assert plain.environ is marker
