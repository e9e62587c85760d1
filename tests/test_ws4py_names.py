"""ws4py 0.6.0's top-level names (``WS_KEY``, ``WS_VERSION``, ``configure_logger``,
``format_addresses``) and its ``compat`` module, on real sockets where they take one."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsloop
from wsloop import compat
from wsloop.handshake import accept_value
from wsloop.websocket import WebSocket


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
