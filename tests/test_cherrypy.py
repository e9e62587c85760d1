"""The CherryPy adapter (wsloop.servers.cherrypyserver), each server in a child process.

CherryPy's engine and config are process-global, so every server here runs in a child:
ws4py's documented example, unmodified (cherrypy_echo.py in $WSLOOP_EXAMPLES, by default
../shared/examples; it listens on the fixed port 9000), tests/support/cherrypy_app.py (several
websocket paths, 10 worker threads) and tests/support/cherrypy_serve.py (the CLI's ``serve()``).
"""

from __future__ import annotations

import http.client
import re
import resource
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.autobahn import assert_all_passed, run_suite
from tests.support.examples import EXAMPLES, example_path
from tests.support.serverproc import Child
from tests.support.wsclient import Client, raw_request, text_frame
from wsloop.handshake import client_request, new_key, parse_response
from wsloop.messaging import CloseControlMessage, TextMessage

EXAMPLE = EXAMPLES / "cherrypy_echo.py"
URL = re.compile(r"ws://127\.0\.0\.1:(\d+)/")


def get(
    port: int, path: str = "/", timeout: float = 5.0, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes, float]:
    """A GET on a new connection, HTTPS with ``context``: (status, headers, body, seconds taken)."""
    start = time.monotonic()
    conn = (
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if context is None
        else http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body, time.monotonic() - start
    finally:
        conn.close()


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {needed}")


def port_busy(port: int) -> bool:
    """Whether something listens on the port (connections in TIME_WAIT do not count: CherryPy
    binds a fixed port with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start_app(*args: str, env: dict[str, str] | None = None) -> Child:
    """tests/support/cherrypy_app.py in a child, once its engine has started (a SIGTERM while it starts
    would race with the start)."""
    child = Child("-m", "tests.support.cherrypy_app", *args, env=env)
    child.wait_for("Bus STARTED")
    return child


@pytest.fixture(scope="module")
def app() -> Iterator[Child]:
    raise_fd_limit(4096)  # the child inherits it
    child = start_app()
    yield child
    code = child.stop()
    assert code == 0, child.output


# ---------------------------------------------------------------------- 1. ws4py's example


@pytest.mark.xdist_group("port-9000")  # ws4py's examples listen on the fixed port 9000
@pytest.mark.timeout(300)
def test_ws4py_example_runs_unmodified_and_passes_autobahn(tmp_path: Path) -> None:
    example_path(EXAMPLE.name)  # skips, saying why, where the shared examples are not here
    if port_busy(9000):
        pytest.skip("port 9000 is busy: the example listens on it")
    server = Child(str(EXAMPLE), pattern=re.compile(r"Serving on http://127\.0\.0\.1:(9000)"))
    try:
        with Client(9000, "/ws") as client:
            assert str(client.echo("hello example")) == "hello example"
        cases = run_suite("ws://127.0.0.1:9000/ws", tmp_path, "-x", "12.*", "-x", "13.*")
        threads = server.threads()
    finally:
        code = server.stop()
    print(f"example: {threads} threads after the suite")
    assert_all_passed(cases)
    assert code == 0, server.output


# ---------------------------------------------------------------------- 2. many websockets


@pytest.mark.timeout(120)
def test_500_websockets_on_10_worker_threads(app: Child) -> None:
    count = 500
    clients: list[Client] = []
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(20) as pool:  # 20 handshakes at a time on 10 worker threads
            for client in pool.map(lambda _: Client(app.port, "/echo"), range(count)):
                clients.append(client)
        opened = time.monotonic() - start
        for i, client in enumerate(clients):
            client.send(f"message {i}")
        for i, client in enumerate(clients):
            assert str(client.recv()) == f"message {i}"
        latencies = []
        for _ in range(20):
            status, _, body, seconds = get(app.port)
            assert (status, body) == (200, b"plain HTTP")
            latencies.append(seconds)
        threads = app.threads()
        # Still accepting websockets and echoing on the old ones.
        with Client(app.port, "/echo") as extra:
            assert str(extra.echo("one more")) == "one more"
        assert str(clients[0].echo("still there")) == "still there"
        print(
            f"{count} websockets opened in {opened:.2f} s; server threads: {threads}; "
            f"HTTP GET latency while open: max {max(latencies) * 1000:.1f} ms, "
            f"mean {sum(latencies) / len(latencies) * 1000:.1f} ms"
        )
        assert max(latencies) < 1.0
        assert threads < 50
    finally:
        for client in clients:
            client.close()


# ---------------------------------------------------------------------- 3. engine stop / exit


def open_clients(port: int, count: int) -> list[Client]:
    return [Client(port, "/echo") for _ in range(count)]


def assert_all_closed_1001(clients: list[Client]) -> None:
    for client in clients:
        close = client.recv_close()
        assert close.code == 1001
        assert client.wait_eof(10), "the server released the socket"
        client.sock.close()


@pytest.mark.timeout(120)
def test_engine_stop_closes_websockets_with_1001_and_releases_sockets() -> None:
    raise_fd_limit(4096)
    server = start_app()
    try:
        baseline = server.settled_fds()
        clients = open_clients(server.port, 200)
        assert server.fds() >= baseline + 200
        status, _, body, _ = get(server.port, "/stop")  # engine.stop() in a thread, in 0.2 s
        assert (status, body) == (200, b"stopping")
        assert_all_closed_1001(clients)
        server.wait_for("Bus STOPPED")  # before SIGTERM: CherryPy's stop() and exit() would race
        after = server.fds()
        print(f"server fds: {baseline} before, {baseline + 200}+ with 200 websockets, {after} after stop")
        assert after <= baseline  # every websocket socket (and the listener) released
    finally:
        code = server.stop()
    assert code == 0, server.output


@pytest.mark.timeout(120)
def test_engine_exit_on_sigterm_closes_websockets_with_1001() -> None:
    server = start_app()
    try:
        clients = open_clients(server.port, 100)
        upper = Client(server.port, "/upper")
        server.send_signal(signal.SIGTERM)  # CherryPy's handler: engine.exit()
        assert_all_closed_1001([*clients, upper])
    finally:
        code = server.stop()
    assert code == 0, server.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_engine_restart_gets_a_new_reactor() -> None:
    # A fixed port: cheroot sets no SO_REUSEADDR on a port-0 listener, so after a restart it
    # could not bind the same port again while the closed websocket is in TIME_WAIT.
    server = start_app(str(free_port()))
    try:
        client = Client(server.port, "/echo")
        assert get(server.port, "/restart")[2] == b"restarting"
        assert_all_closed_1001([client])
        server.wait_for("Bus STARTED", 2)  # before SIGTERM: CherryPy's start() and exit() would race
        assert URL.findall(server.output)[1] == str(server.port), server.output
        with Client(server.port, "/echo") as again:
            assert str(again.echo("after the restart")) == "after the restart"
    finally:
        code = server.stop()
    assert code == 0, server.output


# ---------------------------------------------------------------------- 4. per-path config


def test_per_path_handler_classes_and_options(app: Child) -> None:
    with Client(app.port, "/echo") as echo, Client(app.port, "/upper", protocols=["chat", "upper"]) as upper:
        assert str(echo.echo("Hello")) == "Hello"
        assert str(upper.echo("Hello")) == "HELLO"
        assert upper.subprotocol == "upper"
        assert echo.subprotocol is None
        assert str(echo.echo("Hello again")) == "Hello again"
        assert str(upper.echo("Hello again")) == "HELLO AGAIN"
    with Client(app.port, "/echo", protocols=["upper"]) as echo:
        assert echo.subprotocol is None  # /echo speaks none


def test_101_header_names_keep_their_spelling(app: Child) -> None:
    key = new_key()
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(client_request(f"127.0.0.1:{app.port}", "/upper", key, ["upper"]))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: " in head
    assert b"\r\nSec-WebSocket-Protocol: upper\r\n" in head
    assert b"Content-Type" not in head and b"Content-Length" not in head


def test_page_handler_sees_ws_handler_and_its_body_is_not_sent(app: Child) -> None:
    with Client(app.port, "/greet") as client:
        assert str(client.recv()) == "greetings from the page handler of a EchoWebSocket"
        assert str(client.echo("after the greeting")) == "after the greeting"


def test_max_message_size_option(app: Child) -> None:
    with Client(app.port, "/small") as client:
        assert str(client.echo("0123456789")) == "0123456789"
        client.send("0123456789A")
        assert client.recv_close().code == 1009


def test_heartbeat_freq_option(app: Child) -> None:
    with Client(app.port, "/heartbeat") as client:
        message = client.recv(timeout=3)  # a ping after 0.2 s, auto-ponged by the client
        assert isinstance(message, TextMessage) and str(message) == "ponged"


def test_frame_sent_right_behind_the_request(app: Child) -> None:
    """Bytes cheroot buffered after the request head reach the websocket (``received=``)."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        upgrade_with_frames(sock, app.port, "/upper", [b"early bird", b"second"], EARLY_UPPER)


EARLY_UPPER = b"\x81\x0aEARLY BIRD\x81\x06SECOND"


def upgrade_with_frames(
    sock: socket.socket, port: int, path: str, frames: list[bytes], expected: bytes, one_write: bool = True
) -> None:
    """Send an upgrade request with text ``frames`` right behind it (all in one write, or one
    write each) and check that the 101 is followed by ``expected``."""
    request = client_request(f"127.0.0.1:{port}", path, new_key())
    if one_write:
        sock.sendall(request + b"".join(text_frame(f) for f in frames))
    else:
        sock.sendall(request)
        for f in frames:
            sock.sendall(text_frame(f))
    data = b""
    deadline = time.monotonic() + 10
    while True:
        parsed = parse_response(data)
        if parsed is not None and len(data) - parsed[1] >= len(expected):
            break
        assert time.monotonic() < deadline, data
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert parsed[0].status == 101
    assert data[parsed[1] :] == expected


def test_websockets_over_https(
    tls_files: tuple[Path, Path], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """CherryPy serving HTTPS (cheroot's builtin ssl adapter): the upgraded TLS connection goes
    to the reactor as it is, with the bytes cheroot and OpenSSL had already read."""
    cert, key = tls_files
    client_ctx = tls_contexts[1]
    child = start_app(env={"CHERRYPY_APP_TLS": f"{cert}:{key}"})
    try:
        threads = child.threads()
        with Client(child.port, path="/echo", ssl_context=client_ctx) as client:
            assert client.echo("héllo").data == "héllo".encode()
            big = bytes(range(256)) * 8192  # 2 MiB: many TLS records each way
            assert client.echo(big).data == big
            client.send_raw(b"".join(text_frame(f"m{i}".encode()) for i in range(300)))
            assert [client.recv().data for _ in range(300)] == [f"m{i}".encode() for i in range(300)]
        clients = [
            Client(child.port, path="/upper", protocols=["upper"], ssl_context=client_ctx) for _ in range(20)
        ]
        try:
            for i, client in enumerate(clients):
                assert client.echo(f"c{i}").data == f"C{i}".encode()
            assert child.threads() <= threads + 1, "no thread per TLS websocket"
        finally:
            for client in clients:
                client.close()
        # Frames right behind the request, each its own TLS record: whatever cheroot's reader
        # and OpenSSL had taken in by the hand-over reaches the websocket.
        raw = socket.create_connection(("127.0.0.1", child.port), timeout=5)
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            frames = [b"early bird", b"second"]
            upgrade_with_frames(sock, child.port, "/upper", frames, EARLY_UPPER, one_write=False)
        # The request and 12 KB of frames in one TLS record: cheroot's reader takes 8 KiB of it,
        # the rest waits decrypted inside OpenSSL, where no read event announces it.
        frames = [f"frame {i:04d} ".encode() * 8 for i in range(100)]
        raw = socket.create_connection(("127.0.0.1", child.port), timeout=5)
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            expected = b"".join(bytes((0x81, len(f))) + f for f in frames)
            upgrade_with_frames(sock, child.port, "/echo", frames, expected)
        status, _, body, _ = get(child.port, context=client_ctx)
        assert status == 200 and body == b"plain HTTP"  # HTTPS pages as before
    finally:
        assert child.stop() == 0, child.output


# ---------------------------------------------------------------------- 5. refusals


def test_non_upgrade_requests_get_4xx(app: Child) -> None:
    status, headers, body, _ = get(app.port, "/echo")
    assert status == 400
    assert body == b"this is a WebSocket endpoint: send an Upgrade request\n"
    assert headers["Connection"] == "close"
    post = raw_request(app.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 400 ") and post.endswith(b"method POST is not GET\n")
    no_key = raw_request(
        app.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert no_key.startswith(b"HTTP/1.1 400 ") and no_key.endswith(b"missing Sec-WebSocket-Key\n")


def test_wrong_version_gets_426(app: Child) -> None:
    request = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    answer = raw_request(app.port, request)
    assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in answer
    assert answer.endswith(b"unsupported Sec-WebSocket-Version 8\n")
    assert get(app.port)[0] == 200  # and the server carries on


@pytest.mark.parametrize(("path", "status"), [("/forbidden", 403), ("/broken", 500)])
def test_page_handler_error_answers_without_upgrade(app: Child, path: str, status: int) -> None:
    """A page handler that raises turns the 101 into its error, without the upgrade's headers;
    nothing is handed to the reactor and cheroot closes the connection."""
    fds = app.settled_fds()
    answer = raw_request(app.port, client_request(f"127.0.0.1:{app.port}", path, new_key()))
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 %d " % status)
    assert b"upgrade" not in head and b"sec-websocket" not in head
    assert b"connection: close" in head
    assert app.settled_fds() <= fds  # the socket was not leaked to a reactor
    assert get(app.port)[0] == 200


# ---------------------------------------------------------------------- 6. serve()


@pytest.mark.timeout(300)
def test_serve_passes_autobahn_and_exits_cleanly(tmp_path: Path) -> None:
    server = Child("-m", "tests.support.cherrypy_serve")
    try:
        assert server.lines[0].strip() == f"ws://127.0.0.1:{server.port}/"
        status, headers, page, _ = get(server.port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"WebSocket" in page
        assert get(server.port, "/nothing/here")[0] == 404
        cases = run_suite(f"ws://127.0.0.1:{server.port}/", tmp_path, "-x", "12.*", "-x", "13.*")
        client = Client(server.port, "/any/path")
        assert str(client.echo("still serving")) == "still serving"
        server.send_signal(signal.SIGTERM)
        close = client.recv_close()
        assert isinstance(close, CloseControlMessage) and close.code == 1001
        assert client.wait_eof(10)
        client.sock.close()
    finally:
        code = server.stop()
    assert_all_passed(cases)
    assert code == 0, server.output
    assert "serve() returned" in server.output
    assert "ENGINE" not in server.output, "CherryPy logged to the console"
