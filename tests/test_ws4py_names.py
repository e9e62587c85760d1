"""ws4py 0.6.0's top-level names (``WS_KEY``, ``WS_VERSION``, ``configure_logger``,
``format_addresses``), its ``compat`` module, ``websocket.Heartbeat`` and
``WebSocket.close_connection()``, on real sockets where they take one."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsloop
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop import compat
from wsloop.framing import OPCODE_CLOSE
from wsloop.handshake import accept_value
from wsloop.messaging import CloseControlMessage, PongControlMessage
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import Heartbeat, WebSocket


def connected_pair(family: int, host: str) -> tuple[socket.socket, socket.socket]:
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return server, client


def test_ws_key_is_rfc6455s_guid_as_bytes() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    expected = base64.b64encode(hashlib.sha1(key.encode() + wsloop.WS_KEY).digest()).decode()
    assert isinstance(wsloop.WS_KEY, bytes)
    assert accept_value(key) == expected == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert wsloop.WS_VERSION == (13,)
    assert {"WS_KEY", "WS_VERSION", "configure_logger", "format_addresses"} <= set(wsloop.__all__)


def test_format_addresses_ipv4() -> None:
    server, client = connected_pair(socket.AF_INET, "127.0.0.1")
    with server, client:
        port = server.getsockname()[1]
        peer_port = client.getsockname()[1]
        text = wsloop.format_addresses(WebSocket(server))
    assert text == f"[Local => 127.0.0.1:{port} | Remote => 127.0.0.1:{peer_port}]"


def test_format_addresses_ipv6() -> None:
    """An IPv6 address is a 4-tuple (host, port, flowinfo, scope_id): ip and port are shown."""
    try:
        server, client = connected_pair(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server, client:
        assert len(server.getsockname()) == 4
        text = wsloop.format_addresses(WebSocket(server))
        assert text == f"[Local => ::1:{server.getsockname()[1]} | Remote => ::1:{client.getsockname()[1]}]"


def test_format_addresses_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            server, _ = listener.accept()
            with server:
                assert wsloop.format_addresses(WebSocket(server)) == f"[Bound to '{path}']"


@pytest.fixture
def wsloop_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("wsloop")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for handler in logger.handlers[len(handlers) :]:
        handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_configure_logger_to_stdout_and_a_file(
    wsloop_logger: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wsloop.log"
    logger = wsloop.configure_logger(stdout=True, filepath=str(path), level=logging.DEBUG)
    assert logger is wsloop_logger and logger.level == logging.DEBUG
    logging.getLogger("wsloop.server").debug("a record from below")
    for handler in logger.handlers:
        handler.flush()
    assert "DEBUG a record from below" in path.read_text()
    assert "DEBUG a record from below" in capsys.readouterr().out


def test_configure_logger_level_filters(
    wsloop_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    wsloop.configure_logger(level=logging.WARNING)
    logging.getLogger("wsloop.websocket").info("not shown")
    logging.getLogger("wsloop.websocket").warning("shown")
    out = capsys.readouterr().out
    assert "shown" in out and "not shown" not in out


def test_compat_names() -> None:
    assert compat.py3k is True
    assert compat.unicode is str and compat.range is range
    assert isinstance(b"x", compat.basestring) and isinstance("x", compat.basestring)
    assert compat.ord(b"a"[0]) == 97 and compat.ord("a") == 97
    assert compat.urlsplit("ws://h:1/p").port == 1


def test_compat_connection_of_a_file_object() -> None:
    server, client = connected_pair(socket.AF_INET, "127.0.0.1")
    with server, client:
        reader = server.makefile("rb")
        assert compat.get_connection(reader) is server
        compat.detach_connection(reader)
        client.sendall(b"still open")
        assert server.recv(64) == b"still open"


class Beating(WebSocket):
    """Starts ws4py's Heartbeat thread when opened; remembers itself and how it ended."""

    instances: list[Beating] = []

    def opened(self) -> None:
        self.ended_with: list[int] = []
        self.heartbeat = Heartbeat(self, frequency=0.05)
        self.heartbeat.start()
        Beating.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.ended_with.append(code)


@pytest.fixture
def beating_server() -> Iterator[WebSocketServer]:
    Beating.instances.clear()
    with WebSocketServer(port=0, handler_cls=Beating) as server:
        yield server


def test_heartbeat_sends_unsolicited_pongs_until_the_connection_ends(beating_server: WebSocketServer) -> None:
    client = Client(beating_server.port)
    pongs = [client.recv(timeout=5) for _ in range(3)]
    assert all(isinstance(p, PongControlMessage) and p.data == b"beep" for p in pongs)
    (ws,) = Beating.instances
    client.send_frame(OPCODE_CLOSE, b"\x03\xe8")
    client.recv_close()
    ws.heartbeat.join(5)
    assert not ws.heartbeat.is_alive() and not ws.heartbeat.running
    wait_for(lambda: ws.ended_with == [1000], timeout=5.0)


def test_close_connection_drops_a_served_connection_without_a_close_frame(
    beating_server: WebSocketServer,
) -> None:
    client = Client(beating_server.port)
    wait_for(lambda: len(Beating.instances) == 1, timeout=5.0)
    (ws,) = Beating.instances
    ws.heartbeat.stop()
    ws.close_connection()  # from this thread, not the reactor's
    assert client.wait_eof(5)
    assert not [m for m in client.stream.received if isinstance(m, CloseControlMessage)]
    wait_for(lambda: ws.ended_with == [1006], timeout=5.0)


def test_close_connection_of_an_unattached_websocket_closes_its_socket() -> None:
    server, client = connected_pair(socket.AF_INET, "127.0.0.1")
    with client:
        ws = WebSocket(server)
        ws.close_connection()
        assert ws.sock is None and server.fileno() == -1
        client.settimeout(5)
        assert client.recv(1) == b""
        ws.close_connection()  # again: nothing to do
