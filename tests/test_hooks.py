"""The handshake hooks (``origins``, ``process_request``, ``select_subprotocol``) on every server
flavour, over real sockets against ``python -m wsloop serve --handler tests.support.handlers:...``.

One server per flavour and handler class, shared by the module's tests (see tests/support/handlers.py
for what :class:`HookedWebSocket` decides from the origin, path and offers).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.serverproc import FLAVOURS, ServerProcess
from tests.support.wsclient import Client
from wsloop.handshake import Response, client_request, new_key, parse_response

ALLOWED = [("Origin", "https://allowed.example")]


@pytest.fixture(scope="module", params=list(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def _serve(flavour: str, handler: str) -> Iterator[ServerProcess]:
    server = ServerProcess(*FLAVOURS[flavour], "--handler", f"tests.support.handlers:{handler}")
    yield server
    if server.proc.returncode is None:  # not stopped by a test
        server.stop()


@pytest.fixture(scope="module")
def server(flavour: str) -> Iterator[ServerProcess]:
    yield from _serve(flavour, "HookedWebSocket")


@pytest.fixture(scope="module")
def strict_server(flavour: str) -> Iterator[ServerProcess]:
    yield from _serve(flavour, "BrowserOnlyWebSocket")


def upgrade(
    port: int,
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    protocols: list[str] | None = None,
) -> tuple[Response, bytes]:
    """Send an upgrade request; the server's response head and its body (per Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(client_request(f"127.0.0.1:{port}", path, new_key(), protocols, headers=headers or ()))
        data = b""
        while (parsed := parse_response(data)) is None:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response: {data!r}"
            data += chunk
        response, length = parsed
        body = data[length:]
        size = int(response.headers.get("content-length", "0"))
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        if response.status != 101:  # every flavour closes the connection after a refusal
            assert sock.recv(65536) == b"", "connection kept open after a refused upgrade"
        return response, body


def echoes(client: Client) -> bool:
    return str(client.echo("hello")) == "HELLO"


# ---------------------------------------------------------------------- origins


def test_allowed_origin_is_accepted_and_echoes(server: ServerProcess) -> None:
    for origin in ("https://allowed.example", "HTTPS://Allowed.Example"):
        with Client(server.port, headers=[("Origin", origin)]) as client:
            assert client.response.status == 101
            assert echoes(client)


@pytest.mark.parametrize("origin", ["https://evil.example", "http://allowed.example", "null"])
def test_foreign_origin_gets_403(server: ServerProcess, origin: str) -> None:
    response, body = upgrade(server.port, headers=[("Origin", origin)])
    assert response.status == 403, body
    assert b"origin" in body


def test_missing_origin_admitted_when_none_is_allowed(server: ServerProcess) -> None:
    with Client(server.port) as client:
        assert echoes(client)


def test_missing_origin_refused_when_none_is_not_allowed(strict_server: ServerProcess) -> None:
    response, _ = upgrade(strict_server.port)
    assert response.status == 403
    with Client(strict_server.port, headers=ALLOWED) as client:
        assert echoes(client)


# ---------------------------------------------------------------------- process_request


@pytest.mark.parametrize("path", ["/private", "/private?token=wrong", "/private?x=token%3Ds3cret"])
def test_process_request_refuses_with_401_and_www_authenticate(server: ServerProcess, path: str) -> None:
    response, body = upgrade(server.port, path, ALLOWED)
    assert response.status == 401
    assert response.headers.get("www-authenticate") == 'Bearer realm="wsloop"'
    assert body == b"token required\n"


def test_process_request_accepts_token_in_query(server: ServerProcess) -> None:
    with Client(server.port, "/private?lang=en&token=s3cret", headers=ALLOWED) as client:
        assert echoes(client)


def test_process_request_refuses_with_403(server: ServerProcess) -> None:
    response, body = upgrade(server.port, "/forbidden", ALLOWED)
    assert response.status == 403
    assert body == b"Forbidden\n"


def test_origin_is_checked_before_process_request(server: ServerProcess) -> None:
    response, _ = upgrade(server.port, "/private", [("Origin", "https://evil.example")])
    assert response.status == 403


# ---------------------------------------------------------------------- select_subprotocol


@pytest.mark.parametrize(
    ("path", "offered", "chosen"),
    [
        ("/proto/chat.v2", ["chat.v1", "chat.v2", "chat.v3"], "chat.v2"),  # chosen by the path
        ("/proto/chat.v9", ["chat.v1", "chat.v2", "chat.v3"], "chat.v3"),  # not offered: last offer
        ("/", ["first", "second"], "second"),
        ("/", None, None),  # no offer, no subprotocol
    ],
)
def test_select_subprotocol_hook(
    flavour: str, server: ServerProcess, path: str, offered: list[str] | None, chosen: str | None
) -> None:
    with Client(server.port, path, protocols=offered, headers=ALLOWED) as client:
        assert client.response.headers.get("sec-websocket-protocol") == chosen
        assert client.subprotocol == chosen
        none = [] if flavour in ("gevent", "wsgiref") else None  # ws4py's WSGI handlers get []
        assert str(client.echo("?protocols")) == repr([chosen] if chosen else none)  # self.protocols


def test_select_subprotocol_not_offered_is_500(server: ServerProcess) -> None:
    response, _ = upgrade(server.port, "/badproto", ALLOWED, ["a", "b"])
    assert response.status == 500
    assert "sec-websocket-protocol" not in response.headers


# ---------------------------------------------------------------------- a hook that fails


def test_hook_error_is_500_and_server_keeps_serving(server: ServerProcess) -> None:
    with Client(server.port, headers=ALLOWED) as before:
        for _ in range(3):
            response, body = upgrade(server.port, "/boom", ALLOWED)
            assert response.status == 500
            assert b"hook failure" not in body  # the client is told nothing of the bug
        assert echoes(before)
        with Client(server.port, headers=ALLOWED, protocols=["x"]) as after:
            assert after.subprotocol == "x"
            assert echoes(after)


def test_hook_error_logged_with_traceback_and_clean_exit(server: ServerProcess) -> None:
    """Last of the module for its flavour: stops the server, then reads its log."""
    response, _ = upgrade(server.port, "/boom", ALLOWED)
    assert response.status == 500
    code = server.stop()
    assert code == 0, server.output
    assert "error in the handshake hooks of HookedWebSocket" in server.output
    assert "RuntimeError: hook failure (test)" in server.output
