"""The standalone server over real loopback sockets, with both pollers."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.support.wsclient import AMBIGUOUS_UPGRADES, KEY, Client, raw_request, upgrade
from wsloop.framing import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_TEXT,
    build_frame,
)
from wsloop.handshake import accept_value
from wsloop.messaging import BinaryMessage, CloseControlMessage, PongControlMessage, TextMessage
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


class TestHandshake:
    def test_valid_upgrade_gets_101_with_accept(self, server: WebSocketServer) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(upgrade())
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {accept_value(KEY)}".encode() in head
        assert accept_value(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3

    @pytest.mark.parametrize(
        "request_bytes, status",
        [
            (upgrade(request_line="POST / HTTP/1.1"), 400),
            (upgrade(request_line="GET / HTTP/1.0"), 400),
            (upgrade(request_line="GET /"), 400),
            (upgrade(Upgrade=None), 400),
            (upgrade(Upgrade="h2c"), 400),
            (upgrade(Connection="keep-alive"), 400),
            (upgrade(Host=None), 400),
            (upgrade(Sec_WebSocket_Key=None), 400),
            (upgrade(Sec_WebSocket_Key="not base64!"), 400),
            (upgrade(Sec_WebSocket_Key="c2hvcnQ="), 400),
            (upgrade(Sec_WebSocket_Version="8"), 426),
            (upgrade(Sec_WebSocket_Version=None), 426),
            (b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nbroken header line\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431),
        ],
        ids=[
            "post",
            "http10",
            "no-version",
            "no-upgrade",
            "upgrade-h2c",
            "no-connection-upgrade",
            "no-host",
            "no-key",
            "key-not-base64",
            "key-not-16-bytes",
            "version-8",
            "no-version-header",
            "plain-get",
            "malformed-header",
            "header-too-large",
        ],
    )
    def test_bad_request_gets_http_error(
        self, server: WebSocketServer, request_bytes: bytes, status: int
    ) -> None:
        response = raw_request(server.port, request_bytes)
        assert status_of(response) == status, response[:200]
        assert b"Connection: close" in response
        if status == 426:
            assert b"Sec-WebSocket-Version: 13" in response

    def test_header_section_over_limit_without_end(self, server: WebSocketServer) -> None:
        response = raw_request(server.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000)
        assert status_of(response) == 431

    def test_plain_get_root_serves_demo_page(self, server: WebSocketServer) -> None:
        response = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(response) == 200
        assert b"text/html" in response
        assert b"new WebSocket(" in response

    def test_half_request_is_dropped_after_handshake_timeout(self, make_server) -> None:  # type: ignore[no-untyped-def]
        server = make_server(handshake_timeout=0.3)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            assert sock.recv(100) == b""
            assert time.monotonic() - start < 3

    def test_connections_beyond_the_limit_get_503(self, make_server) -> None:  # type: ignore[no-untyped-def]
        server = make_server(max_connections=2)
        with Client(server.port) as first, Client(server.port) as second:
            response = raw_request(server.port, upgrade())
            assert status_of(response) == 503, response[:200]
            assert b"Retry-After: 1" in response
            for client in (first, second):  # the two served are undisturbed
                client.send("still here")
                assert client.recv().data == b"still here"
        deadline = time.monotonic() + 5  # both closed: room again
        while len(server.manager) and time.monotonic() < deadline:
            time.sleep(0.01)
        with Client(server.port) as third:
            third.send("in")
            assert third.recv().data == b"in"

    def test_subprotocol_selected_by_server_preference(self, make_server) -> None:  # type: ignore[no-untyped-def]
        server = make_server(protocols=["chat.v2", "chat.v1"])
        with Client(server.port, protocols=["chat.v1", "chat.v2"]) as client:
            assert client.subprotocol == "chat.v2"
        with Client(server.port, protocols=["other"]) as client:
            assert client.subprotocol is None

    def test_frames_pipelined_with_the_request_are_served(self, server: WebSocketServer) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(upgrade() + build_frame(OPCODE_TEXT, b"early", masked=True))
            data = b""
            deadline = time.monotonic() + 5
            while b"early" not in data and time.monotonic() < deadline:
                data += sock.recv(4096)
        assert data.endswith(b"\x81\x05early")


class TestEcho:
    @pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 1 << 20])
    def test_text_and_binary_sizes(self, server: WebSocketServer, size: int) -> None:
        with Client(server.port) as client:
            text = ("é" * size)[: size // 2] if size else ""
            message = client.echo(text)
            assert isinstance(message, TextMessage) and str(message) == text
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            message = client.echo(data)
            assert isinstance(message, BinaryMessage) and message.data == data

    def test_fragmented_message_with_interleaved_ping(self, server: WebSocketServer) -> None:
        with Client(server.port) as client:
            client.send_frame(OPCODE_TEXT, "héllo ".encode(), fin=False)
            client.send_frame(OPCODE_PING, b"ping!")
            client.send_frame(OPCODE_CONTINUATION, "wörld".encode(), fin=True)
            pong = client.recv()
            assert isinstance(pong, PongControlMessage) and pong.data == b"ping!"
            assert str(client.recv()) == "héllo wörld"

    def test_many_messages_in_one_write_all_echoed_in_order(self, server: WebSocketServer) -> None:
        with Client(server.port) as client:
            client.send_raw(
                b"".join(build_frame(OPCODE_BINARY, b"%05d" % i, masked=True) for i in range(500))
            )
            assert [client.recv().data for _ in range(500)] == [b"%05d" % i for i in range(500)]

    def test_clean_close_initiated_by_client(self, server: WebSocketServer) -> None:
        client = Client(server.port)
        client.echo("x")
        client.stream.close(1000, "bye")
        client.flush()
        reply = client.recv_close()
        assert reply.code == 1000
        assert client.wait_eof(), "the server closes the TCP connection after the handshake"
        client.sock.close()


class TestProtocolViolations:
    @pytest.mark.parametrize(
        "frames, code",
        [
            (
                [build_frame(OPCODE_TEXT, b"x", masked=True)[:0] + b"\xc1\x81abcdx"],
                1002,
            ),  # RSV1 without extension
            ([b"\x83\x80abcd"], 1002),  # reserved opcode 3
            ([b"\x8b\x80abcd"], 1002),  # reserved control opcode 0xB
            ([build_frame(OPCODE_PING, b"x", fin=False, masked=True)], 1002),  # fragmented control frame
            ([build_frame(OPCODE_PING, b"x" * 126, masked=True)], 1002),  # control frame too long
            ([build_frame(OPCODE_CONTINUATION, b"x", masked=True)], 1002),  # nothing to continue
            (
                [
                    build_frame(OPCODE_TEXT, b"a", fin=False, masked=True),
                    build_frame(OPCODE_TEXT, b"b", masked=True),
                ],
                1002,
            ),
            ([build_frame(OPCODE_TEXT, b"hello")], 1002),  # unmasked client frame
            ([build_frame(OPCODE_CLOSE, b"\x03", masked=True)], 1002),  # 1-byte close payload
            ([build_frame(OPCODE_CLOSE, b"\x03\xed", masked=True)], 1002),  # close code 1005
            ([build_frame(OPCODE_CLOSE, b"\x03\xe8\xff", masked=True)], 1007),  # reason not UTF-8
            ([build_frame(OPCODE_TEXT, b"\xce\xba\xff", masked=True)], 1007),
            (
                [
                    build_frame(OPCODE_TEXT, b"ok", fin=False, masked=True),
                    build_frame(0, b"\xed\xa0\x80", masked=True),
                ],
                1007,
            ),
        ],
        ids=[
            "rsv1",
            "opcode-3",
            "opcode-b",
            "fragmented-ping",
            "long-ping",
            "orphan-continuation",
            "text-inside-fragmented",
            "unmasked",
            "close-1-byte",
            "close-code-1005",
            "close-reason-utf8",
            "text-utf8",
            "fragment-surrogate",
        ],
    )
    def test_violation_gets_close_code(self, server: WebSocketServer, frames: list[bytes], code: int) -> None:
        with Client(server.port) as client:
            client.echo("before")
            for frame in frames:
                client.send_raw(frame)
            close = client.recv_close()
            assert close.code == code
            client.flush()
            assert client.wait_eof()

    def test_invalid_utf8_fails_before_the_frame_is_complete(self, server: WebSocketServer) -> None:
        with Client(server.port) as client:
            frame = build_frame(OPCODE_TEXT, b"valid start \xf5" + b"x" * 10000, masked=True)
            client.send_raw(frame[:40])  # the invalid byte is in here; the rest never comes
            assert client.recv_close(timeout=5).code == 1007

    def test_message_over_limit_gets_1009_from_the_header(self, make_server) -> None:  # type: ignore[no-untyped-def]
        server = make_server(max_message_size=1000)
        with Client(server.port) as client:
            assert client.echo(b"a" * 1000).data == b"a" * 1000
            client.send_raw(build_frame(OPCODE_BINARY, b"b" * 5000, masked=True)[:14])  # header only
            assert client.recv_close(timeout=5).code == 1009

    def test_fragmented_message_over_limit_gets_1009(self, make_server) -> None:  # type: ignore[no-untyped-def]
        server = make_server(max_message_size=1000)
        with Client(server.port) as client:
            for _ in range(3):
                client.send_frame(OPCODE_BINARY if _ == 0 else OPCODE_CONTINUATION, b"c" * 400, fin=False)
            assert client.recv_close(timeout=5).code == 1009

    def test_garbage_bytes_do_not_disturb_other_connections(self, server: WebSocketServer) -> None:
        with Client(server.port) as good, Client(server.port) as bad:
            bad.send_raw(bytes(range(256)) * 4)
            assert isinstance(bad.recv_close(), CloseControlMessage)
            assert good.echo("still here").data == b"still here"


class Recorder(WebSocket):
    events: list[tuple[str, object]] = []

    def opened(self) -> None:
        Recorder.events.append(("opened", self.peer_address is not None))

    def received_message(self, message) -> None:  # type: ignore[no-untyped-def]
        Recorder.events.append(("message", message.data))
        if message.data == b"close-me":
            self.close(4000, "as asked")

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Recorder.events.append(("closed", (code, reason)))


class TestCallbacks:
    def test_opened_message_closed_sequence(self, make_server) -> None:  # type: ignore[no-untyped-def]
        Recorder.events = []
        server = make_server(handler_cls=Recorder)
        with Client(server.port) as client:
            client.send(b"one")
            client.send(b"close-me")
            close = client.recv_close()
            assert (close.code, close.reason) == (4000, b"as asked")
            client.flush()
            assert client.wait_eof()
        deadline = time.monotonic() + 5
        while len(Recorder.events) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert Recorder.events == [
            ("opened", True),
            ("message", b"one"),
            ("message", b"close-me"),
            ("closed", (4000, b"")),
        ]

    def test_closed_gets_1006_when_peer_vanishes(self, make_server) -> None:  # type: ignore[no-untyped-def]
        Recorder.events = []
        server = make_server(handler_cls=Recorder)
        client = Client(server.port)
        client.send(b"x")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.sock.close()  # RST, no close frame
        deadline = time.monotonic() + 5
        while not any(e[0] == "closed" for e in Recorder.events) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ("closed", (1006, b"")) in Recorder.events


def test_request_environ_takes_the_given_peer_and_shares_its_strings() -> None:
    from wsloop.handshake import parse_request
    from wsloop.servers.standalone import request_environ

    class NoPeerName:
        def getpeername(self) -> None:
            raise AssertionError("the peer was given")

    head = (
        b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    environs = []
    for key in (b"dGhlIHNhbXBsZSBub25jZQ==", b"AQIDBAUGBwgJCgsMDQ4PEA=="):
        parsed = parse_request(head % key)
        assert parsed is not None
        environs.append(request_environ(parsed[0], NoPeerName(), ("10.1.2.3", 4567)))  # type: ignore[arg-type]
    first, second = environs
    assert first["REMOTE_ADDR"] == "10.1.2.3" and first["REMOTE_PORT"] == "4567"
    assert first["PATH_INFO"] == "/chat" and first["QUERY_STRING"] == "room=1"
    assert first["HTTP_SEC_WEBSOCKET_KEY"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert second["HTTP_SEC_WEBSOCKET_KEY"] == "AQIDBAUGBwgJCgsMDQ4PEA=="
    # Kept for as long as a connection is open: the repeated strings are shared, not copied.
    assert first["HTTP_HOST"] is second["HTTP_HOST"]
    assert [k for k in first if k.startswith("HTTP_")] == [k for k in second if k.startswith("HTTP_")]
    for k1, k2 in zip(first, second, strict=True):
        assert k1 is k2


@pytest.mark.parametrize("request_bytes", list(AMBIGUOUS_UPGRADES.values()), ids=list(AMBIGUOUS_UPGRADES))
def test_ambiguous_request_head_gets_400(server: WebSocketServer, request_bytes: bytes) -> None:
    """RFC 9112: a head a proxy could read differently is refused (issue 13, item 16)."""
    response = raw_request(server.port, request_bytes)
    assert status_of(response) == 400, response[:200]
    assert b"Connection: close" in response
    with Client(server.port) as client:  # the server goes on serving
        assert client.echo("after").data == b"after"


def test_stop_returns_in_time_with_a_peer_that_does_not_read(
    make_server: Callable[..., WebSocketServer],
) -> None:
    """A thread blocked sending to a client that never reads (holding the threaded poller's
    connection lock) does not keep stop(timeout=1.0) from returning (issue 13, item 8: it had not
    returned after 8 s); the blocked sender is released too."""
    opened: queue.Queue[WebSocket] = queue.Queue()

    class Opened(WebSocket):
        def opened(self) -> None:
            opened.put(self)

    server = make_server(handler_cls=Opened)
    client = Client(server.port)  # never reads
    try:
        ws = opened.get(timeout=10)
        sent = [0]

        def pump() -> None:
            try:
                while True:
                    ws.send(b"x" * 65536, True)
                    sent[0] += 1
            except Exception:
                pass

        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        deadline = time.monotonic() + 30
        last = -1
        while sent[0] != last and time.monotonic() < deadline:  # until the sends block
            last = sent[0]
            time.sleep(0.5)
        assert sender.is_alive()
        started = time.monotonic()
        stopper = threading.Thread(target=server.stop, kwargs={"timeout": 1.0}, daemon=True)
        stopper.start()
        stopper.join(5.0)
        assert not stopper.is_alive(), "stop(timeout=1.0) had not returned after 5 s"
        assert time.monotonic() - started < 5.0
        sender.join(5.0)
        assert not sender.is_alive(), "the blocked sender was not released"
    finally:
        client.sock.close()


def test_close_from_another_thread_is_bounded_by_close_timeout(
    make_server: Callable[..., WebSocketServer],
) -> None:
    """close() called from a thread other than the connection's, to a peer that never answers:
    the connection is dropped once close_timeout has passed, on both pollers (the threaded
    poller's connection thread slept in poll() with no timer due, and dropped it only when the
    peer next sent something)."""
    opened: queue.Queue[WebSocket] = queue.Queue()

    class Opened(WebSocket):
        close_timeout = 0.5

        def opened(self) -> None:
            opened.put(self)

    server = make_server(handler_cls=Opened)
    client = Client(server.port)  # reads, never answers the close
    try:
        ws = opened.get(timeout=10)
        started = time.monotonic()
        ws.close(1000, "bye")
        assert client.recv_close().code == 1000
        client.sock.settimeout(10)
        assert client.sock.recv(10) == b"", "the server drops the connection"
        assert time.monotonic() - started < 5.0
    finally:
        client.sock.close()
