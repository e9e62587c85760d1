"""ws4py's gevent client (``wsloop.client.geventclient.WebSocketClient``) against real wsloop
servers in child processes: ws4py's documented usage, wss, closing from either side, a refused
and a stalled connection, 200 clients in one OS thread, and a monkey-patched program.

gevent is used unpatched in this process (its hub runs in the test's thread); the patched
program runs in a child process.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.serverproc import REPO
from tests.support.sockets import free_port
from wsloop.exc import HandshakeError
from wsloop.handshake import accept, parse_request
from wsloop.messaging import Message
from wsloop.servers.asyncioserver import WebSocketProtocol

gevent = pytest.importorskip("gevent")
pytest.importorskip("gevent.event")

from wsloop.client.geventclient import WebSocketClient  # noqa: E402


def os_threads() -> set[str]:
    """The ids of this process's OS threads (others may end meanwhile; none may start)."""
    return set(os.listdir("/proc/self/task"))


class Recorder(WebSocketClient):
    """Records its callbacks, and the greenlet opened() ran in, then does what ws4py's does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[Any, ...]] = []
        self.opened_in: Any = None

    def opened(self) -> None:
        self.opened_in = gevent.getcurrent()
        self.events.append(("opened",))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.events.append(("closed", code, reason))
        super().closed(code, reason)


def drain(ws: WebSocketClient, timeout: float = 10.0) -> list[str]:
    """Every message until receive() says the connection ended."""
    got: list[str] = []
    with gevent.Timeout(timeout):
        while (message := ws.receive()) is not None:
            got.append(str(message))
    return got


def test_signature_is_ws4pys() -> None:
    ws4py_client = pytest.importorskip("ws4py.client.geventclient").WebSocketClient
    ours = list(inspect.signature(WebSocketClient).parameters)
    theirs = list(inspect.signature(ws4py_client).parameters)
    assert ours == theirs
    assert list(inspect.signature(WebSocketClient.receive).parameters) == ["self", "block"]


def test_ws4py_docstring_example(echo_url: str) -> None:
    """ws4py's docstring: connect, send, then a greenlet receiving and one sending."""
    threads = os_threads()
    ws = Recorder(echo_url, protocols=["http-only", "chat"])
    ws.connect()
    assert isinstance(ws._th, gevent.Greenlet)
    ws.send("Hello world")
    received: list[str] = []

    def incoming() -> None:
        while True:
            m = ws.receive()
            if m is not None:
                received.append(str(m))
                if len(received) == 9:
                    ws.close(reason="done")
            else:
                break

    def outgoing() -> None:
        for i in range(0, 40, 5):
            ws.send("*" * i)

    greenlets = [gevent.spawn(incoming), gevent.spawn(outgoing)]
    gevent.joinall(greenlets, timeout=15, raise_error=True)
    assert all(g.dead for g in greenlets)
    assert received == ["Hello world"] + ["*" * i for i in range(0, 40, 5)]
    assert ws.opened_in is ws._th  # opened() runs in the client's greenlet, as ws4py's run() did
    assert ws.events[0] == ("opened",) and ws.events[-1][:2] == ("closed", 1000)
    assert ws._th.dead and ws.terminated
    assert ws.receive() is None  # and again: the end is not consumed away
    assert os_threads() <= threads


def test_messages_keep_their_types_and_order(echo_url: str) -> None:
    ws = WebSocketClient(echo_url)
    ws.connect()
    ws.send(b"\x00\xffbinary", binary=True)
    ws.send(["frag", "ments"])  # one message in fragments
    ws.send("é" * 1000)
    ws.send(b"\x07" * 3_000_000, binary=True)  # past the socket buffers both ways
    with gevent.Timeout(20):
        first, second, third, fourth = ws.receive(), ws.receive(), ws.receive(), ws.receive()
    assert isinstance(first, Message) and first.is_binary and first.data == b"\x00\xffbinary"
    assert second is not None and str(second) == "fragments"
    assert third is not None and str(third) == "é" * 1000
    assert fourth is not None and fourth.data == b"\x07" * 3_000_000
    with pytest.raises(gevent.queue.Empty):
        ws.receive(block=False)
    ws.close()
    assert drain(ws) == []


def test_close_with_reason(echo_url: str) -> None:
    ws = Recorder(echo_url)
    ws.connect()
    ws.send("before")
    with gevent.Timeout(10):
        assert str(ws.receive()) == "before"
    ws.close(4001, "see you")
    assert drain(ws) == []
    assert ws.events[-1] == ("closed", 4001, b"")  # the server's answer: our code, no reason
    assert ws.client_terminated and ws.server_terminated


def test_server_closes(closer_url: str) -> None:
    ws = Recorder(closer_url)
    ws.connect()
    ws.send("one")
    ws.send("close")
    assert drain(ws) == ["one"]
    assert ws.events[-1] == ("closed", 1000, b"bye")
    with pytest.raises(Exception, match="terminated"):
        ws.send("too late")


def test_wss(tls_url: str, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    ws = Recorder(tls_url, ssl_options={"ca_certs": str(cert)})
    ws.connect()
    assert isinstance(ws.sock, ssl.SSLSocket)
    payload = "x" * 300_000  # more than one TLS record each way
    ws.send(payload)
    ws.send("small")
    with gevent.Timeout(10):
        big, small = ws.receive(), ws.receive()
    assert str(big) == payload and str(small) == "small"
    ws.close(1000, "tls bye")
    assert drain(ws) == []
    assert ws.events[-1] == ("closed", 1000, b"")


def test_wss_verifies_the_certificate_by_default(tls_url: str) -> None:
    ws = Recorder(tls_url)
    with pytest.raises(ssl.SSLCertVerificationError):
        ws.connect()
    assert ws.events[-1][:2] == ("closed", 1006)
    assert ws.receive() is None
    # ws4py's behaviour (no verification) on request:
    ws = Recorder(tls_url, ssl_options={"cert_reqs": ssl.CERT_NONE})
    ws.connect()
    ws.send("unverified")
    with gevent.Timeout(10):
        assert str(ws.receive()) == "unverified"
    ws.close()
    drain(ws)


def test_refused_connection() -> None:
    ws = Recorder(f"ws://127.0.0.1:{free_port()}/")
    with pytest.raises(ConnectionRefusedError):
        ws.connect()
    assert ws.events == [("closed", 1006, ws.events[0][2])]
    assert ws.receive() is None
    assert not ws._th  # never started


def test_connect_waits_cooperatively_and_times_out() -> None:
    """A server that accepts and never answers: connect() blocks its greenlet only, until
    handshake_timeout; another greenlet runs all along."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            gevent.sleep(0.01)

    ticking = gevent.spawn(ticker)
    try:
        ws = Recorder(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
        ws.handshake_timeout = 0.5
        with pytest.raises(TimeoutError):
            ws.connect()
        assert ticks >= 5  # a blocking connect() would have starved the ticker
        assert ws.events[-1][:2] == ("closed", 1006)
    finally:
        ticking.kill()
        listener.close()


def test_handshake_refused_by_the_server(echo_url: str) -> None:
    ws = Recorder(echo_url, headers=[("Sec-WebSocket-Version", "8")])  # answered 426
    with pytest.raises(HandshakeError):
        ws.connect()
    assert ws.events[-1][:2] == ("closed", 1006)


def test_server_drops_the_connection(echo_url: str) -> None:
    """The TCP connection ends without a close frame: closed(1006), receive() returns None."""
    ws = Recorder(echo_url)
    ws.connect()
    ws.send("hello")
    with gevent.Timeout(10):
        assert str(ws.receive()) == "hello"
    assert ws.sock is not None
    ws.sock.shutdown(socket.SHUT_RDWR)  # as a reset would
    assert drain(ws) == []
    assert ws.events[-1][:2] == ("closed", 1006)


def test_close_connection_drops_it(echo_url: str) -> None:
    ws = Recorder(echo_url)
    ws.connect()
    gevent.sleep(0)  # _th attaches it
    ws.close_connection()
    assert drain(ws) == []
    assert ws.events[-1][:2] == ("closed", 1006)


def test_heartbeat_pings_from_greenlets(echo_url: str) -> None:
    pongs: list[bytes] = []

    class Pinged(WebSocketClient):
        def ponged(self, pong: Message) -> None:
            pongs.append(pong.data)

    threads = os_threads()
    ws = Pinged(echo_url, heartbeat_freq=0.05)
    ws.connect()
    with gevent.Timeout(10):
        while len(pongs) < 3:
            gevent.sleep(0.02)
    assert os_threads() <= threads  # timers are greenlets, not a heartbeat thread
    ws.close()
    drain(ws)


def test_unanswered_heartbeat_closes_with_1011() -> None:
    """A server that reads and never answers: the keepalive timer (a greenlet) fails the
    connection while the reading greenlet waits for input, and wakes it to close."""
    listener = gevent.socket.socket()  # gevent's cooperative socket class, unpatched
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    ended = gevent.event.Event()

    def silent() -> None:
        conn, _ = listener.accept()
        data = b""
        while (parsed := parse_request(data)) is None:
            data += conn.recv(4096)
        conn.sendall(accept(parsed[0], None, None).response)
        while conn.recv(65536):  # until the client's FIN; never a pong
            pass
        conn.close()
        ended.set()

    serving = gevent.spawn(silent)
    try:
        ws = Recorder(f"ws://127.0.0.1:{listener.getsockname()[1]}/", heartbeat_freq=0.1)
        ws.connect()
        assert drain(ws) == []
        assert ws.events[-1] == ("closed", 1011, b"keepalive ping timeout")
        assert ended.wait(5)
    finally:
        serving.kill()
        listener.close()


def test_unix_socket(tmp_path: Path) -> None:
    """ws+unix:// against wsloop's asyncio server listening on a Unix socket (in a thread)."""
    path = str(tmp_path / "ws.sock")
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_unix_server(WebSocketProtocol, path))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        ws = Recorder(f"ws+unix://{path}")
        ws.connect()
        ws.send("over unix")
        with gevent.Timeout(10):
            assert str(ws.receive()) == "over unix"
        ws.close()
        assert drain(ws) == []
        assert ws.run_forever(5)
        assert ws.events[-1][:2] == ("closed", 1000)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_200_clients_in_one_thread(echo_url: str) -> None:
    """200 clients connect, exchange messages and close at once, in this one OS thread."""
    threads = os_threads()
    seen = set(threads)
    results: dict[int, list[str]] = {}

    def client(n: int) -> None:
        ws = WebSocketClient(echo_url)
        ws.connect()
        for i in range(5):
            ws.send(f"{n}:{i}")
        got = []
        while len(got) < 5:
            message = ws.receive()
            assert message is not None
            got.append(str(message))
        ws.close()
        assert ws.receive() is None
        results[n] = got

    def watch() -> None:
        while True:
            seen.update(os_threads())
            gevent.sleep(0.01)

    watcher = gevent.spawn(watch)
    greenlets = [gevent.spawn(client, n) for n in range(200)]
    try:
        gevent.joinall(greenlets, timeout=60, raise_error=True)
    finally:
        watcher.kill()
    assert len(results) == 200
    assert all(results[n] == [f"{n}:{i}" for i in range(5)] for n in range(200))
    assert seen == threads


PATCHED_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys, threading
import gevent
from wsloop.client.geventclient import WebSocketClient

def run(url, **options):
    ws = WebSocketClient(url, protocols=["http-only", "chat"], **options)
    ws.connect()
    ws.send("Hello world")
    got = []

    def incoming():
        while True:
            m = ws.receive()
            if m is None:
                break
            got.append(str(m))
            if len(got) == 9:
                ws.close()

    def outgoing():
        for i in range(0, 40, 5):
            ws.send("*" * i)

    gevent.joinall([gevent.spawn(incoming), gevent.spawn(outgoing)], timeout=15, raise_error=True)
    return got

print("ws", run(sys.argv[1]))
print("wss", run(sys.argv[2], ssl_options={"ca_certs": sys.argv[3]}))
print("threads", threading.active_count(), len(__import__("os").listdir("/proc/self/task")))
"""


def test_monkey_patched_program(
    echo_url: str, tls_url: str, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    script = tmp_path / "patched.py"
    script.write_text(PATCHED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, str(script), echo_url, tls_url, str(tls_files[0])],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    expected = str(["Hello world"] + ["*" * i for i in range(0, 40, 5)])
    lines = done.stdout.splitlines()
    assert lines[0] == f"ws {expected}"
    assert lines[1] == f"wss {expected}"
    assert lines[2] == "threads 1 1"


def test_no_thread_is_started_by_the_client(echo_url: str) -> None:
    before = set(threading.enumerate())
    ws = WebSocketClient(echo_url)
    ws.connect()
    ws.send("x")
    with gevent.Timeout(10):
        assert str(ws.receive()) == "x"
    ws.close()
    drain(ws)
    assert set(threading.enumerate()) <= before
