"""The wsgiref adapter: ws4py's example unmodified, many websockets, shutdown."""

from __future__ import annotations

import resource
import ssl
import threading
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest

from tests.support.autobahn import NO_COMPRESSION, assert_all_passed, run_suite
from tests.support.examples import ExampleProcess
from tests.support.sockets import open_fds
from tests.support.wsclient import Client, raw_request, upgrade_with_early_frame
from wsloop.servers.wsgirefserver import WebSocketWSGIRequestHandler, WSGIServer
from wsloop.servers.wsgiutils import WebSocketWSGIApplication
from wsloop.websocket import EchoWebSocket


class Quiet(WebSocketWSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def start_server(ssl_context: ssl.SSLContext | None = None) -> tuple[WSGIServer, threading.Thread]:
    """ws4py's wsgiref setup on a free port (optionally serving TLS), serving in a thread."""
    server = make_server(
        "127.0.0.1",
        0,
        server_class=WSGIServer,
        handler_class=Quiet,
        app=WebSocketWSGIApplication(handler_cls=EchoWebSocket),
    )
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    server.initialize_websockets_manager()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def wsgiref_server():  # type: ignore[no-untyped-def]
    server, thread = start_server()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.mark.xdist_group("port-9000")  # ws4py's examples listen on the fixed port 9000
@pytest.mark.timeout(300)
def test_ws4py_example_passes_autobahn(tmp_path: Path) -> None:
    example = ExampleProcess("wsgiref_echo.py", 9000)
    try:
        cases = run_suite("ws://127.0.0.1:9000/", tmp_path, *NO_COMPRESSION)
    finally:
        example.stop()
    assert_all_passed(cases)


def test_thousand_websockets_through_the_single_threaded_server(wsgiref_server) -> None:  # type: ignore[no-untyped-def]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    port = wsgiref_server.server_port
    clients = [Client(port) for _ in range(1000)]
    assert len(wsgiref_server.manager) == 1000
    for i, client in enumerate(clients):
        client.send(f"m{i}")
    for i, client in enumerate(clients):
        assert client.recv().data == f"m{i}".encode()
    # The wsgiref server itself is still free to answer.
    assert raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 400")
    for client in clients:
        client.close()


def test_handshake_errors_are_wsgi_responses(wsgiref_server) -> None:  # type: ignore[no-untyped-def]
    port = wsgiref_server.server_port
    response = raw_request(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    assert response.split(b" ")[1] == b"426"
    assert b"Sec-WebSocket-Version: 13" in response


def test_server_close_sends_1001_and_releases_every_socket() -> None:
    before = open_fds()
    server, thread = start_server()
    clients = [Client(server.server_port) for _ in range(20)]
    for client in clients:
        assert client.echo("x").data == b"x"
    server.shutdown()
    thread.join()
    closer = threading.Thread(target=server.server_close)
    closer.start()
    for client in clients:
        assert client.recv_close().code == 1001
        client.flush()
    closer.join(10)
    assert not closer.is_alive()
    for client in clients:
        client.sock.close()
    assert open_fds() <= before


def test_frame_pipelined_with_the_request_is_served(wsgiref_server) -> None:  # type: ignore[no-untyped-def]
    """Bytes the request's buffered reader already took reach the websocket."""
    data = upgrade_with_early_frame(wsgiref_server.server_port)
    assert data.startswith(b"HTTP/1.1 101 ")


def test_tls_connections_are_served_by_the_reactor(tls_contexts) -> None:  # type: ignore[no-untyped-def]
    """wsgiref serving HTTPS hands TLS sockets over: the reactor serves them, no thread each."""
    server_ctx, client_ctx = tls_contexts
    server, thread = start_server(server_ctx)
    try:
        plain_threads = threading.active_count()
        clients = [Client(server.server_port, ssl_context=client_ctx) for _ in range(3)]
        for i, client in enumerate(clients):
            assert client.echo(f"secret {i}").data == f"secret {i}".encode()
            assert client.echo(b"\x00" * 100_000).data == b"\x00" * 100_000
        assert server.manager is not None and len(server.manager) == 3
        assert threading.active_count() == plain_threads, "TLS websockets served by the reactor's thread"
        server.manager.broadcast("all")
        for client in clients:
            assert client.recv().data == b"all"
    finally:
        server.shutdown()
        thread.join()
        closer = threading.Thread(target=server.server_close)
        closer.start()
        for client in clients:
            assert client.recv_close().code == 1001
            client.flush()
        closer.join(10)
        for client in clients:
            client.sock.close()
