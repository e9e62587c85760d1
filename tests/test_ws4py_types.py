"""ws4py 0.6.0's types and behaviour at ws4py's names, on real loopback sockets: close reasons as
bytes, settable ``client_terminated``/``server_terminated``, ``once()`` returning False on a
socket error, (host, port) addresses for IPv6, and the names ws4py's modules define."""

from __future__ import annotations

import ast
import inspect
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import wsloop.messaging
import wsloop.websocket
from tests.support.sockets import raw_upgraded
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.client import WebSocketClient
from wsloop.handshake import accept, parse_request
from wsloop.messaging import BinaryMessage, CloseControlMessage, Message, TextMessage
from wsloop.poller import Reactor
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket


class Ends(EchoWebSocket):
    """Records what closed() received, and the instance; acts on a few commands."""

    instances: list[Ends] = []
    ends: list[tuple[int, Any]] = []

    def opened(self) -> None:
        Ends.instances.append(self)

    def received_message(self, message: Message) -> None:
        data = message.data
        if data == b"fail":
            raise RuntimeError("handler error on purpose")
        if data == b"close":
            self.close(4001, "ours ☃")
        elif data == b"flood":
            self._flood(32)
        else:
            super().received_message(message)

    def _flood(self, left: int) -> None:
        # 1 MiB a turn (a timer's), for a peer that does not read: past max_buffered in a few.
        if left and not self.terminated and self.transport is not None:
            self.send(b"f" * (1 << 20), binary=True)
            self.transport.call_later(0.01, self._flood, left - 1)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Ends.ends.append((code, reason))

    def unhandled_error(self, error: BaseException) -> None:
        pass  # the 1011 case raises on purpose


@pytest.fixture
def ends(make_server: Callable[..., WebSocketServer]) -> WebSocketServer:
    Ends.instances, Ends.ends = [], []
    return make_server(handler_cls=Ends)


# ------------------------------------------------------- close reasons as bytes, every path


def test_closed_gets_the_peers_reason_as_bytes(ends: WebSocketServer) -> None:
    with Client(ends.port) as client:
        client.stream.close(4000, "bye ☃")
        client.flush()
        reply = client.recv_close()
        assert isinstance(reply.reason, bytes)
        wait_for(lambda: Ends.ends)
    assert Ends.ends == [(4000, "bye ☃".encode())]
    ws = Ends.instances[0]
    assert (ws.close_code, ws.close_reason) == (4000, "bye ☃")  # wsloop's names: the reason as str


def test_closed_after_our_own_close_gets_bytes_and_the_peer_sees_our_reason(ends: WebSocketServer) -> None:
    with Client(ends.port) as client:
        client.send("close")
        close = client.recv_close()
        assert (close.code, close.reason) == (4001, "ours ☃".encode())
        assert close.text == str(close) == "ours ☃"
        client.flush()  # the protocol's echo of 4001 completes the handshake
        wait_for(lambda: Ends.ends)
    assert Ends.ends == [(4001, b"")]  # the code our peer echoed, with its (empty) reason
    assert Ends.instances[0].close_reason == ""


def test_closed_gets_bytes_for_1006_without_a_close_frame(ends: WebSocketServer) -> None:
    client = Client(ends.port)
    wait_for(lambda: Ends.instances)
    client.sock.close()
    wait_for(lambda: Ends.ends)
    # ws4py passes the str "Going away" here; wsloop gives bytes on every path (b"": none came).
    assert Ends.ends == [(1006, b"")]
    assert (Ends.instances[0].close_code, Ends.instances[0].close_reason) == (1006, "")


def test_closed_gets_bytes_for_1011_after_a_handler_error(ends: WebSocketServer) -> None:
    with Client(ends.port) as client:
        client.send("fail")
        close = client.recv_close()
        assert close.code == 1011 and isinstance(close.reason, bytes) and close.reason
        client.flush()
    wait_for(lambda: Ends.ends)  # (a failed connection lingers until the peer's FIN)
    assert Ends.ends == [(1011, close.reason)]
    assert Ends.instances[0].close_reason == close.text


def test_closed_gets_bytes_for_1008_past_the_output_limit() -> None:
    Ends.instances, Ends.ends = [], []
    reactor = Reactor(max_buffered=4 << 20)
    server = WebSocketServer("127.0.0.1", 0, Ends, manager=reactor)
    server.start()
    sock = raw_upgraded(server.port, rcvbuf=4096)
    try:
        wait_for(lambda: Ends.instances)
        # A masked "flood" text frame: the server then sends 1 MiB a turn to a peer that never reads.
        mask = b"\x01\x02\x03\x04"
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(b"flood"))
        sock.sendall(b"\x81\x85" + mask + body)
        wait_for(lambda: Ends.ends, timeout=20)
        assert Ends.ends == [(1008, b"output buffer limit exceeded")]
        assert Ends.instances[0].close_reason == "output buffer limit exceeded"
    finally:
        sock.close()
        server.stop(timeout=1)
        reactor.stop(timeout=1)


class ClientEnds(WebSocketClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ends: list[tuple[int, Any]] = []

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.ends.append((code, reason))


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    r.start()
    yield r
    r.stop(timeout=2)


def test_client_closed_gets_bytes_when_the_handshake_fails(reactor: Reactor) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client = ClientEnds(f"ws://127.0.0.1:{port}/", reactor=reactor)
    with pytest.raises(ConnectionRefusedError):
        client.connect()
    ((code, reason),) = client.ends
    assert code == 1006 and isinstance(reason, bytes) and reason.startswith(b"handshake failed")
    assert client.close_reason == reason.decode()


def test_client_closed_gets_the_servers_reason_as_bytes(ends: WebSocketServer, reactor: Reactor) -> None:
    client = ClientEnds(f"ws://127.0.0.1:{ends.port}/", reactor=reactor)
    client.connect()
    client.send("close")  # the server closes with 4001 "ours ☃"
    wait_for(lambda: client.ends)
    assert client.ends == [(4001, "ours ☃".encode())]
    assert (client.close_code, client.close_reason) == (4001, "ours ☃")


def test_a_bytes_reason_can_be_sent_back_as_ws4py_allows(ends: WebSocketServer, reactor: Reactor) -> None:
    client = ClientEnds(f"ws://127.0.0.1:{ends.port}/", reactor=reactor)
    client.connect()
    client.close(4002, "from bytes ☃".encode())
    wait_for(lambda: Ends.ends and client.ends)
    assert Ends.ends == [(4002, "from bytes ☃".encode())]


def test_close_control_message_reason_is_bytes_as_ws4pys() -> None:
    assert CloseControlMessage(1000, "é").reason == "é".encode()
    assert CloseControlMessage(1000, b"\xc3\xa9").reason == b"\xc3\xa9"
    assert CloseControlMessage(1000, bytearray(b"x")).reason == b"x"
    assert CloseControlMessage(1000, None).reason == b""  # ws4py keeps None (and then str() fails)
    assert CloseControlMessage().reason == b""
    m = CloseControlMessage(1001, "bye")
    assert (str(m), m.text, m.data) == ("bye", "bye", struct.pack("!H", 1001) + b"bye")


def test_binary_message_encoding_is_none_as_ws4pys(ends: WebSocketServer, reactor: Reactor) -> None:
    got: list[Message] = []

    class Keep(ClientEnds):
        def received_message(self, message: Message) -> None:
            got.append(message)

    client = Keep(f"ws://127.0.0.1:{ends.port}/", reactor=reactor)
    client.connect()
    client.send(b"\x00\x01", binary=True)
    client.send("text")
    wait_for(lambda: len(got) == 2)
    client.close()
    binary, text = got
    assert isinstance(binary, BinaryMessage) and binary.encoding is None
    assert isinstance(text, TextMessage) and text.encoding == "utf-8"
    assert str(binary) == "\x00\x01"  # ws4py's raises TypeError here; ours decodes
    binary.extend("é")  # ws4py's raises TypeError (no encoding); ours takes UTF-8
    assert binary.data == b"\x00\x01\xc3\xa9"


# ------------------------------------------------ client_terminated / server_terminated


def test_terminated_flags_can_be_set_as_ws4py_code_does(ends: WebSocketServer) -> None:
    with Client(ends.port) as client:
        wait_for(lambda: Ends.instances)
        ws = Ends.instances[0]
        # ws4py's __init__ (and code modelled on it) assigns False: the values still follow
        # the connection.
        ws.client_terminated = False
        ws.server_terminated = False
        assert (ws.client_terminated, ws.server_terminated, ws.terminated) == (False, False, False)
        ws.server_terminated = True  # as ws4py's Heartbeat does before close_connection()
        assert (ws.server_terminated, ws.client_terminated, ws.terminated) == (True, False, False)
        ws.client_terminated = True
        assert ws.terminated  # ws4py's rule: client_terminated and server_terminated
        ws.client_terminated = ws.server_terminated = False
        assert not ws.terminated
        assert client.echo("still open").data == b"still open"
        client.stream.close(1000)
        client.flush()
        client.recv_close()
        wait_for(lambda: Ends.ends)
        # Cleared marks do not hide the end of the connection.
        assert (ws.client_terminated, ws.server_terminated, ws.terminated) == (True, True, True)


# --------------------------------------------------------------- once(), ws4py's contract


class Manual(EchoWebSocket):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.events: list[Any] = []

    def unhandled_error(self, error: BaseException) -> None:
        self.events.append(("error", type(error)))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.events.append(("closed", code, reason))


@pytest.fixture
def served_once() -> Iterator[Callable[..., tuple[int, list[Any]]]]:
    """Serve one connection with ws4py's manual style (``while ws.once(): pass``) in a thread:
    returns (port, results); results gets the websocket, then what the loop ended with.
    ``turns``: leave the loop after that many and call ``terminate()``, as ws4py's run() does."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def start(turns: int | None = None) -> tuple[int, list[Any]]:
        results: list[Any] = []

        def serve() -> None:
            sock, _ = listener.accept()
            data = b""
            while (parsed := parse_request(data)) is None:
                data += sock.recv(4096)
            sock.sendall(accept(parsed[0])[0])
            ws = Manual(sock)
            results.append(ws)
            left = turns
            try:
                while ws.once():
                    if left is not None:
                        left -= 1
                        if not left:
                            ws.terminate()
                            results.append("terminated")
                            return
            except Exception as exc:
                results.append(("raised", type(exc)))
            else:
                results.append("returned False")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return listener.getsockname()[1], results

    yield start
    for thread in threads:
        thread.join(10)
    listener.close()


def test_once_returns_false_when_the_peer_resets(served_once: Any) -> None:
    port, results = served_once()
    client = Client(port)
    assert client.echo("one").data == b"one"
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()  # a reset (RST), not a FIN
    wait_for(lambda: len(results) == 2)
    ws = results[0]
    assert results[1] == "returned False"  # on main: ConnectionResetError raised from once()
    assert ws.events == [("error", ConnectionResetError), ("closed", 1006, b"")]
    assert ws.once() is False  # and stays so
    assert ws.sock.fileno() == -1


def test_once_returns_false_once_both_sides_are_marked_terminated(served_once: Any) -> None:
    port, results = served_once()
    with Client(port) as client:
        assert client.echo("one").data == b"one"
        wait_for(lambda: results)
        ws = results[0]
        ws.client_terminated = ws.server_terminated = True
        client.send("two")  # wakes the loop: its next once() sees terminated and ends it
        client.flush()
        wait_for(lambda: len(results) == 2)
        assert results[1] == "returned False"
        assert ws.events == [("closed", 1006, b"")]


def test_terminate_after_leaving_the_once_loop_reports_the_end(served_once: Any) -> None:
    port, results = served_once(turns=1)
    client = Client(port)
    assert client.echo("one").data == b"one"
    wait_for(lambda: len(results) == 2)
    ws = results[0]
    assert results[1] == "terminated"
    assert ws.events == [("closed", 1006, b"")]  # on main: never called (terminate() only shut down)
    assert ws.sock.fileno() == -1
    assert client.wait_eof()
    client.sock.close()


def test_terminate_from_another_thread_ends_a_blocked_once_loop_once(served_once: Any) -> None:
    """(Passes on main too: a guard that terminate()'s own report does not add a second
    closed() or a spurious socket error.)"""
    port, results = served_once()
    client = Client(port)
    assert client.echo("one").data == b"one"
    ws = results[0]
    ws.terminate()  # the loop's thread is blocked in recv()
    wait_for(lambda: len(results) == 2)
    assert results[1] == "returned False"
    assert ws.events == [("closed", 1006, b"")]
    assert client.wait_eof()
    client.sock.close()


# ------------------------------------------------------------ addresses and module names


def test_ipv6_addresses_are_host_port_pairs(reactor: Reactor) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    Ends.instances, Ends.ends = [], []
    server = WebSocketServer(handler_cls=Ends, sock=listener)
    server.start()
    try:
        port = listener.getsockname()[1]
        client = ClientEnds(f"ws://[::1]:{port}/", reactor=reactor)
        client.connect()
        wait_for(lambda: Ends.instances)
        ws = Ends.instances[0]
        assert ws.local_address == ("::1", port)
        assert ws.peer_address == client.local_address
        assert client.peer_address == ("::1", port)
        assert len(client.local_address) == 2 and client.local_address[0] == "::1"
        remote = client.local_address[1]
        assert wsloop.format_addresses(ws) == f"[Local => ::1:{port} | Remote => ::1:{remote}]"
        client.close()
    finally:
        server.stop(timeout=1)


def defined_names(module: Any) -> set[str]:
    """Public names a module's own top-level code binds (def, class, assignment; in try/except
    too), not the names it imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.col_offset == 0:
            names.add(node.name)
        elif isinstance(node, ast.Assign) and node.col_offset == 0:
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    if "pyOpenSSLError" in vars(module):  # ws4py's fallback class, inside its try/except
        names.add("pyOpenSSLError")
    return {name for name in names if not name.startswith("_")}


def test_names_defined_in_ws4pys_websocket_and_messaging_modules() -> None:
    assert wsloop.websocket.DEFAULT_READING_SIZE == 2
    assert wsloop.websocket.pyOpenSSLError is ssl.SSLError
    assert WebSocket.reading_buffer_size >= 65536
    import ws4py.messaging
    import ws4py.websocket

    for ours, theirs in ((wsloop.websocket, ws4py.websocket), (wsloop.messaging, ws4py.messaging)):
        defined = defined_names(theirs)
        assert defined, theirs
        missing = sorted(name for name in defined if not hasattr(ours, name))
        assert missing == [], (theirs.__name__, missing)
    assert "DEFAULT_READING_SIZE" in defined_names(ws4py.websocket)
