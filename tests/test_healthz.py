"""``GET /healthz`` on every server flavour of ``python -m wsloop serve``: 200 while serving, 503
once SIGTERM has begun the shutdown, while the websockets are still open (``--drain-delay``),
which get 1001 only after that."""

from __future__ import annotations

import http.client
import select
import signal
import time

import pytest

from tests.support.serverproc import FLAVOURS, ServerProcess
from tests.support.wsclient import Client


def health(port: int, path: str = "/healthz", method: str = "GET") -> tuple[int, bytes]:
    """A load balancer's check: a plain HTTP request, its status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def nothing_received(client: Client) -> bool:
    """The server has sent the websocket nothing (no close frame, no EOF) so far."""
    return not select.select([client.sock], [], [], 0)[0]


def wait_for_status(port: int, status: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        got, body = health(port)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/healthz still answers {got} {body!r}"
        time.sleep(0.05)


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_healthz_turns_503_on_sigterm_before_the_1001s(flavour: str) -> None:
    server = ServerProcess(*FLAVOURS[flavour], "--drain-delay", "3")
    try:
        client = Client(server.port)
        assert client.echo("before").data == b"before"
        assert health(server.port) == (200, b"ok\n")
        assert health(server.port, "/healthz?probe=lb", "HEAD") == (200, b"")
        server.send_signal(signal.SIGTERM)
        assert wait_for_status(server.port, 503) == b"draining\n"
        # The check failed while the websocket is still open: nothing sent to it yet, and it
        # is still served.
        assert nothing_received(client)
        assert client.echo("while draining").data == b"while draining"
        assert health(server.port)[0] == 503
        assert server.matches(r"draining: /healthz answers 503; closing the websockets in 3 s")
        # Then the websocket is closed with 1001.
        assert client.recv_close(timeout=15).code == 1001
        client.flush()
        assert client.wait_eof()
        client.sock.close()
    finally:
        code = server.stop()
    assert code == 0, server.output


@pytest.mark.parametrize("flavour", ["standalone", "cherrypy"])
def test_second_signal_ends_the_drain(flavour: str) -> None:
    server = ServerProcess(*FLAVOURS[flavour], "--drain-delay", "120")
    try:
        with Client(server.port) as client:
            server.send_signal(signal.SIGTERM)
            wait_for_status(server.port, 503)
            assert nothing_received(client)
            server.proc.send_signal(signal.SIGINT)  # a user insisting
            assert client.recv_close(timeout=30).code == 1001
    finally:
        code = server.stop(timeout=60)
    assert code == 0 and not server.killed, server.output


def test_without_drain_delay_shutdown_is_immediate_and_health_is_on() -> None:
    server = ServerProcess()
    try:
        assert health(server.port) == (200, b"ok\n")
        with Client(server.port) as client:
            server.send_signal(signal.SIGTERM)
            assert client.recv_close().code == 1001
    finally:
        assert server.stop() == 0, server.output
    assert "draining" not in server.output


@pytest.mark.parametrize("flavour", ["standalone", "gevent"])
def test_health_path_moves_or_turns_off(flavour: str) -> None:
    moved = ServerProcess(*FLAVOURS[flavour], "--health-path", "/lb/ready")
    try:
        assert health(moved.port, "/lb/ready") == (200, b"ok\n")
        assert health(moved.port)[0] == 400  # not an upgrade, not the health path
    finally:
        assert moved.stop() == 0, moved.output
    off = ServerProcess(*FLAVOURS[flavour], "--health-path", "none")
    try:
        assert health(off.port)[0] == 400
        with Client(off.port) as client:
            assert client.echo("still a websocket server").data == b"still a websocket server"
    finally:
        assert off.stop() == 0, off.output


def test_bad_health_options_are_refused() -> None:
    from wsloop.health import HealthCheck  # here: the module is new, the other tests run without it

    for args in (
        ["--health-path", "healthz"],
        ["--health-path", "none", "--drain-delay", "5"],
        ["--drain-delay", "-1"],
        ["--workers", "2", "--drain-delay", "11"],  # the supervisor kills workers 15 s after SIGTERM
    ):
        server = ServerProcess(*args, timeout=None)
        assert server.proc.wait(30) == 2, server.output
    with pytest.raises(ValueError):
        HealthCheck("healthz")


def test_workers_drain_too() -> None:
    server = ServerProcess("--workers", "2", "--drain-delay", "3", stop_timeout=30)
    try:
        clients = [Client(server.port) for _ in range(4)]
        assert health(server.port) == (200, b"ok\n")
        server.send_signal(signal.SIGTERM)
        wait_for_status(server.port, 503)
        for client in clients:
            assert nothing_received(client)
        for client in clients:
            assert client.recv_close(timeout=20).code == 1001
            client.sock.close()
    finally:
        assert server.stop() == 0, server.output
