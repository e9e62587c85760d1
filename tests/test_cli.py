"""``python -m wsloop serve`` as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.support.serverproc import ServerProcess
from tests.support.wsclient import Client, raw_request
from wsloop.framing import OPCODE_BINARY, build_frame


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("poller", ["selectors", "threaded"])
def test_serve_echoes_and_shuts_down_gracefully(poller: str, sig: int) -> None:
    server = ServerProcess("--poller", poller)
    try:
        assert any("wsloop serving EchoWebSocket on ws://127.0.0.1:" in line for line in server.lines), (
            server.output
        )
        clients = [Client(server.port) for _ in range(3)]
        for i, client in enumerate(clients):
            assert client.echo(f"hello {i}").data == f"hello {i}".encode()
        assert b"<html" in raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        server.send_signal(sig)
        for client in clients:
            assert client.recv_close().code == 1001
            client.flush()  # the close reply lets the server finish at once
            assert client.wait_eof()
            client.sock.close()
    finally:
        code = server.stop(sig)
    assert code == 0, server.output


def test_handler_option_loads_a_class() -> None:
    server = ServerProcess("--handler", "tests.support.handlers:UpperWebSocket")
    try:
        with Client(server.port) as client:
            assert client.echo("shout").data == b"SHOUT"
    finally:
        assert server.stop() == 0


def test_max_message_size_option() -> None:
    server = ServerProcess("--max-message-size", "1k")
    try:
        with Client(server.port) as client:
            assert client.echo(b"x" * 1024).data == b"x" * 1024
            client.send_raw(build_frame(OPCODE_BINARY, b"y" * 1025, masked=True))
            assert client.recv_close().code == 1009
    finally:
        assert server.stop() == 0


def test_max_connections_option() -> None:
    server = ServerProcess("--max-connections", "1")
    try:
        with Client(server.port) as client:
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            request = (
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            assert raw_request(server.port, request).startswith(b"HTTP/1.1 503 ")
            assert client.echo(b"served").data == b"served"
    finally:
        assert server.stop() == 0


def test_max_header_size_is_refused_where_the_framework_reads_the_head() -> None:
    # --max-connections works on every server (tests/test_limits.py); the request head of the
    # framework servers is read by the framework, with limits of its own (README).
    result = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", "--server", "wsgiref", "--max-header-size", "4k"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--max-header-size" in result.stderr


@pytest.mark.parametrize("spec", ["nomodule:Thing", "tests.support.handlers:NotAHandler", "justaname"])
def test_bad_handler_is_a_usage_error(spec: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", "--handler", spec],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--handler" in result.stderr
