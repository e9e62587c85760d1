"""The limits of the README's "Limits and timeouts" table, on the server flavours they apply to,
over real sockets: ``python -m wsloop serve`` for the per-flavour ones, in-process servers for the
rest.

Here: the connection limit (503 with ``Retry-After``), the handshake timeout, the request head's
size and graceful shutdown on every ``--server`` flavour (one server each); the idle timeout on
every flavour; a thread sending to a peer that never reads; the handler class's
``max_message_size`` and ``close_timeout`` as the defaults of every flavour's ``serve()``, an
option overriding them.

Elsewhere, not repeated:

- message size (1009 from the frame header; a fragmented message):
  ``test_server.py::TestProtocolViolations::test_message_over_limit_gets_1009_from_the_header``
  and ``::test_fragmented_message_over_limit_gets_1009`` (both pollers),
  ``test_cli.py::test_max_message_size_option``, ``test_cherrypy.py::test_max_message_size_option``;
- the default 16 KiB head limit (431): ``test_server.py::TestHandshake`` (``header-too-large``,
  ``test_header_section_over_limit_without_end``), ``test_asyncio.py::TestHandshake``;
- closing-handshake timeout: ``test_reactor.py::test_close_timeout_drops_a_peer_that_never_answers``
  (both pollers), ``test_reactor.py::test_stop_drops_peers_that_never_answer_the_close``,
  ``test_asyncio.py::test_serve_shutdown_drops_peers_that_do_not_answer_after_the_timeout``;
- heartbeat: ``test_reactor.py::test_heartbeat_pings_and_drops_a_silent_peer`` (both pollers),
  ``test_asyncio.py::test_heartbeat_drops_a_silent_peer_and_keeps_a_live_one``,
  ``test_cherrypy.py::test_heartbeat_freq_option``;
- high/low water marks: ``test_reactor.py::test_peer_that_stops_reading_is_bounded_and_others_keep_echoing``
  and ``::test_reactor_thread_sends_are_buffered_and_reading_paused``,
  ``test_asyncio.py::test_peer_that_stops_reading_is_bounded``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.serverproc import FLAVOURS, ServerProcess
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.exc import StreamClosed
from wsloop.framing import OPCODE_CLOSE, OPCODE_TEXT, build_frame
from wsloop.messaging import Message, TextMessage
from wsloop.poller import Reactor, make_manager
from wsloop.protocol import Protocol
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket

#: The flavours that read the request head themselves (--max-header-size).
OWN_HEAD = {"standalone", "threaded", "asyncio"}
#: What each answers to a head of 110 header lines of 5,000 bytes (550 KB): over our limit (431);
#: over cheroot's 500 KiB (413); over http.client's 100 header lines (gevent: 400, wsgiref: 431).
OVERSIZED_HEAD_STATUS = {
    "standalone": 431,
    "threaded": 431,
    "asyncio": 431,
    "cherrypy": 413,
    "gevent": 400,
    "wsgiref": 431,
}

MAX_CONNECTIONS = 3
TIMEOUT = 0.5  # the handshake and close timeouts of the servers here
SLACK = 4.0  # a bound on "soon", for a loaded machine: never a speed assertion

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def upgrade(extra: bytes = b"") -> bytes:
    return UPGRADE + extra + b"\r\n"


def read_head(sock: socket.socket) -> bytes:
    """The response head (status line and headers); b"" if the server hung up first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n\r\n")[0]


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0


def raw_websocket(port: int) -> socket.socket:
    """A websocket whose peer is a bare socket: it reads and answers only what a test makes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(upgrade())
    head = read_head(sock)
    assert status_of(head) == 101, head
    return sock


def connect(port: int, timeout: float = SLACK) -> Client:
    """A client, retried while the server still counts connections that just closed (503)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(port)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read_close_without_answering(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """Read until the server's close frame, never answering it: (code, reason)."""
    stream = Protocol(client=True, max_message_size=None, write=lambda data: None)
    deadline = time.monotonic() + timeout
    while stream.close_received is None:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        assert data, "connection closed without a close frame"
        stream.feed(data)
    return stream.close_received.code, stream.close_received.reason


def wait_eof(sock: socket.socket, timeout: float = 10.0) -> None:
    """Read (and discard) until the server closes the connection."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return
        except ConnectionResetError:
            return


def recv_text(client: Client) -> Message:
    """The next text message (pongs skipped)."""
    while True:
        message = client.recv()
        if isinstance(message, TextMessage):
            return message


def echo_raw(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(build_frame(OPCODE_TEXT, payload, masked=True))
    expected = bytes((0x81, len(payload))) + payload
    data = b""
    while len(data) < len(expected):
        chunk = sock.recv(4096)
        assert chunk
        data += chunk
    assert data == expected


def close_raw(sock: socket.socket) -> None:
    """The closing handshake from a bare socket's side, then the end of the connection."""
    sock.sendall(build_frame(OPCODE_CLOSE, b"\x03\xe8", masked=True))
    wait_eof(sock)
    sock.close()


# ------------------------------------------------------------- every flavour


@pytest.fixture(scope="class", params=list(FLAVOURS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess]]:
    """One server per flavour for the tests of :class:`TestEveryFlavour` (the last one stops it)."""
    flavour: str = request.param
    args = [*FLAVOURS[flavour], "--max-connections", str(MAX_CONNECTIONS)]
    args += ["--handshake-timeout", str(TIMEOUT), "--close-timeout", str(TIMEOUT)]
    if flavour in OWN_HEAD:
        args += ["--max-header-size", "4k"]
    server = ServerProcess(*args)
    yield flavour, server
    if server.proc.returncode is None:  # not stopped by the shutdown test
        server.stop()


class TestEveryFlavour:
    """In this order: the burst of upgrades comes first, on a server that serves nobody yet;
    graceful shutdown comes last, it ends the flavour's server."""

    def test_upgrades_beyond_max_connections_get_503_with_retry_after(
        self, served: tuple[str, ServerProcess]
    ) -> None:
        flavour, server = served
        # First on a fresh server: a websocket another test just closed may still count for a
        # moment (until the server has read the end of its connection).
        # A burst: every request is sent before any answer is read, so the server takes them
        # together (on the frameworks' threads or greenlets too); exactly the limit get in.
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(6)]
        for sock in socks:
            sock.sendall(upgrade())
        heads = [read_head(sock) for sock in socks]
        statuses = sorted(status_of(head) for head in heads)
        assert statuses == [101] * MAX_CONNECTIONS + [503] * (6 - MAX_CONNECTIONS), heads
        accepted = [sock for sock, head in zip(socks, heads, strict=True) if status_of(head) == 101]
        for sock, head in zip(socks, heads, strict=True):
            if status_of(head) == 503:
                assert b"\r\nRetry-After: 1" in head, head
                sock.close()
        for sock in accepted:  # those served are undisturbed
            echo_raw(sock, b"still here")
        close_raw(accepted.pop())
        with connect(server.port) as client:  # room for one again
            assert client.echo("in").data == b"in"
        for sock in accepted:
            close_raw(sock)

    def test_half_request_is_dropped_after_the_handshake_timeout(
        self, served: tuple[str, ServerProcess]
    ) -> None:
        flavour, server = served
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            began = time.monotonic()
            # Others are served meanwhile (by wsgiref, single-threaded, once it gave up on this).
            with connect(server.port) as client:
                assert client.echo("meanwhile").data == b"meanwhile"
            head = read_head(sock)  # the framework servers answer 408 or nothing; ours nothing
            assert head == b"" or status_of(head) == 408, head
            wait_eof(sock)
            assert time.monotonic() - began < TIMEOUT + SLACK

    def test_oversized_request_head_is_refused(self, served: tuple[str, ServerProcess]) -> None:
        flavour, server = served
        padding = b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"a" * 5000) for i in range(110))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            try:
                sock.sendall(upgrade(padding))
            except OSError:
                pass  # answered and closed before it read it all
            head = read_head(sock)
        assert status_of(head) == OVERSIZED_HEAD_STATUS[flavour], head
        if flavour in OWN_HEAD:  # --max-header-size 4k: a 3 KiB header passes, a 5 KiB one not
            for size, status in ((3000, 101), (5000, 431)):
                deadline = time.monotonic() + SLACK
                while True:  # 503 while the server still counts the websockets just closed
                    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                        sock.sendall(upgrade(b"X-Pad: " + b"a" * size + b"\r\n"))
                        got = status_of(read_head(sock))
                    if got != 503 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert got == status

    def test_graceful_shutdown_closes_all_with_1001_and_drops_a_silent_peer(
        self, served: tuple[str, ServerProcess]
    ) -> None:
        flavour, server = served
        clients = [connect(server.port) for _ in range(MAX_CONNECTIONS - 1)]
        for i, client in enumerate(clients):
            assert client.echo(f"hello {i}").data == f"hello {i}".encode()
        silent = connect(server.port).sock  # will never answer the close
        server.send_signal()
        began = time.monotonic()
        for client in clients:
            assert client.recv_close().code == 1001  # recv() answers it
            assert client.wait_eof()
            client.sock.close()
        assert read_close_without_answering(silent)[0] == 1001
        wait_eof(silent)  # dropped once the close timeout has passed
        silent.close()
        assert time.monotonic() - began < TIMEOUT + SLACK
        assert server.stop() == 0, server.output


# ------------------------------------------------------------- max_buffered


@pytest.mark.parametrize("flavour", [name for name in FLAVOURS if name != "threaded"])
def test_max_buffered_drops_a_peer_that_does_not_read(flavour: str) -> None:
    """--max-buffered on every flavour whose sends from its own thread never wait (the threaded
    poller's block in sendall): a server ticking 256 KiB every 5 ms to a peer that does not read
    drops it once 6 MiB are held (and logs it), and the drop frees all of it, the kernel's send
    buffer included: the peer reads what its own small receive buffer held, then the reset, not
    megabytes of held output. Without the cap it reads as much as it cares to."""
    handler = "tests.support.handlers:TickerWebSocket"
    server = ServerProcess(*FLAVOURS[flavour], "--max-buffered", "6m", "--handler", handler)
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(upgrade())
        time.sleep(SLACK)  # not reading: the server's output backs up past the cap
        received, reset = 0, False
        try:
            while received < 64 * 1024 * 1024:
                data = sock.recv(1024 * 1024)
                if not data:
                    break
                received += len(data)
        except ConnectionResetError:
            reset = True
        finally:
            sock.close()
        assert received < 1024 * 1024, f"{received} bytes read: the held output was not dropped"
        assert reset, "the connection ended with a FIN after the held output, not a reset"
    finally:
        assert server.stop() == 0
    assert "output unsent (max_buffered 6291456)" in server.output


def test_max_buffered_below_the_high_water_mark_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", "--max-buffered", "1m"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--max-buffered" in result.stderr


# ------------------------------------------------------------- idle timeout


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_idle_timeout_closes_a_silent_websocket_with_1001(flavour: str) -> None:
    """The close comes between 1x and 1.5x the idle timeout (the README's promise), give or take
    ``lag`` for a loaded machine: a close at 2x or later fails."""
    idle, lag = 2.0, 0.9
    server = ServerProcess(*FLAVOURS[flavour], "--idle-timeout", str(idle), "--close-timeout", str(TIMEOUT))
    try:
        began = time.monotonic()  # before the upgrade: the server's clock cannot start earlier
        silent = raw_websocket(server.port)  # sends nothing, never answers the close
        active = connect(server.port)
        stream = Protocol(client=True, max_message_size=None, write=lambda data: None)
        closed_after = 0.0
        while True:  # until the silent one is closed, then dropped
            active.stream.ping(b"alive")  # a ping (any frame) keeps a connection from idling
            active.flush()
            silent.settimeout(0.1)
            try:
                data = silent.recv(65536)
            except TimeoutError:
                bound = idle * 1.5 + lag + TIMEOUT + SLACK
                assert time.monotonic() - began < bound, "not closed, or not dropped"
                continue
            if not data:
                break
            stream.feed(data)
            if stream.close_received is not None and not closed_after:
                closed_after = time.monotonic() - began
        assert stream.close_received is not None, "dropped without a close frame"
        assert (stream.close_received.code, stream.close_received.reason) == (1001, b"idle timeout")
        assert closed_after >= idle * 0.95, f"closed after {closed_after:.2f} s: before its time"
        assert closed_after <= idle * 1.5 + lag, f"closed after {closed_after:.2f} s: too late"
        silent.close()  # the close was not answered: the server dropped it after its close timeout
        active.send("still open")
        assert recv_text(active).data == b"still open"
        active.close()
    finally:
        assert server.stop() == 0, server.output


# ------------------------------------------------------------- backpressure


class Held(EchoWebSocket):
    instances: list[Held] = []

    def opened(self) -> None:
        Held.instances.append(self)


@pytest.mark.parametrize("poller", ["selectors", "threaded"])
def test_a_thread_sending_to_a_peer_that_never_reads_waits_until_the_peer_goes(poller: str) -> None:
    Held.instances = []
    if poller == "selectors":
        manager = Reactor(high_water=256 * 1024, low_water=64 * 1024)
    else:
        manager = make_manager("threaded")  # a blocking sendall under the connection's lock
    server = WebSocketServer("127.0.0.1", 0, Held, manager=manager)
    server.start()
    try:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(upgrade())
        assert status_of(read_head(stuck)) == 101
        wait_for(lambda: Held.instances)
        ws = Held.instances[0]
        sent = [0]
        ended: list[BaseException] = []

        def sender() -> None:
            chunk = b"x" * 65536
            try:
                while sent[0] < 2000:  # 125 MiB: far beyond any buffer if nothing waited
                    ws.send(chunk, binary=True)
                    sent[0] += 1
            except StreamClosed as exc:
                ended.append(exc)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        stalled_at = -1
        while stalled_at != sent[0]:  # until it has not moved for 0.3 s
            stalled_at = sent[0]
            time.sleep(0.3)
        assert stalled_at < 200, "the sending thread waits instead of buffering everything"
        if poller == "selectors":  # (reading pauses when the reactor's own sends pass the mark:
            # test_reactor.py::test_reactor_thread_sends_are_buffered_and_reading_paused)
            assert isinstance(manager, Reactor)
            assert manager._connections[ws].wsize <= manager.high_water + 65536, "output bounded"
        with Client(server.port) as other:  # everyone else is served meanwhile
            assert other.echo("unaffected").data == b"unaffected"
        assert thread.is_alive() and sent[0] == stalled_at, "still waiting"
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        stuck.close()  # a reset: the connection ends
        thread.join(SLACK)
        assert not thread.is_alive(), "the waiting send returned when the connection ended"
        if poller == "selectors":  # (the threaded driver drops sends to an ended connection)
            assert ended, "and sending on the ended connection raises StreamClosed"
    finally:
        server.stop(timeout=1)


# ---------------------------------------------------------------------- class attributes as defaults

#: Each flavour's serve(), in a process of its own: (module under wsloop.servers, extra kwargs).
SERVE_FUNCTIONS = {
    "standalone": ("standalone", "poller='selectors'"),
    "threaded": ("standalone", "poller='threaded'"),
    "asyncio": ("asyncioserver", ""),
    "wsgiref": ("wsgirefserver", ""),
    "gevent": ("geventserver", ""),
    "cherrypy": ("cherrypyserver", ""),
}

SERVE_SCRIPT = """
import importlib, signal, sys, threading
from wsloop.websocket import EchoWebSocket

class Small(EchoWebSocket):
    max_message_size = 1024

class Closer(EchoWebSocket):
    close_timeout = 0.5

    def received_message(self, message):
        self.close(1000, "bye")

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: stop.set())
module = importlib.import_module("wsloop.servers.{module}")
module.serve("127.0.0.1", 0, {handler}, ready=lambda url: print(url, flush=True), stop=stop, {kwargs})
"""


@pytest.mark.parametrize("explicit", [None, 4096, "None"], ids=["class", "option", "unlimited"])
@pytest.mark.parametrize("flavour", list(SERVE_FUNCTIONS))
def test_handler_class_max_message_size_is_the_default_and_an_option_overrides_it(
    flavour: str, explicit: int | str | None
) -> None:
    """A handler class with ``max_message_size = 1024``, served by each flavour's ``serve()``:
    with no option a 2,000-byte message gets 1009; ``max_message_size=4096`` (or None: no limit)
    given to ``serve()`` overrides the class, and the message is echoed."""
    kwargs = "" if explicit is None else f"max_message_size={explicit}"
    with serve_function(flavour, "Small", kwargs) as port, Client(port) as client:
        client.send("x" * 2000)
        if explicit is None:
            assert client.recv_close().code == 1009
        else:
            assert str(client.recv()) == "x" * 2000


@contextmanager
def serve_function(flavour: str, handler: str, kwargs: str = "") -> Iterator[int]:
    """``handler`` (a class of SERVE_SCRIPT) served by ``flavour``'s ``serve()`` in a child
    process, with ``kwargs`` (Python source) given to it: the port."""
    module, extra = SERVE_FUNCTIONS[flavour]
    kwargs = ", ".join(filter(None, [extra, kwargs]))
    script = SERVE_SCRIPT.format(module=module, handler=handler, kwargs=kwargs)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://"), url
        yield int(url.rsplit(":", 1)[1].strip("/"))
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("flavour", list(SERVE_FUNCTIONS))
def test_handler_class_close_timeout_is_the_default(flavour: str) -> None:
    """A handler class with ``close_timeout = 0.5`` that closes: a peer that never answers the
    close frame is dropped after the class's 0.5 s, not after the servers' former explicit 5 s
    (the bound here, 3 s, is far from both)."""
    with serve_function(flavour, "Closer") as port:
        sock = raw_websocket(port)
        try:
            sock.sendall(build_frame(OPCODE_TEXT, b"hi", masked=True))
            assert read_close_without_answering(sock) == (1000, b"bye")
            started = time.monotonic()
            wait_eof(sock, timeout=10.0)
            assert time.monotonic() - started < 3.0
        finally:
            sock.close()
