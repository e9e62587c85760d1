"""The options of the README's limits table that every flavour has, on all six, through the CLI.

Each check is one test parametrized over the flavours (``test_idle_timeout_option[gevent]``); the
servers are real ``python -m wsloop serve`` processes on loopback, one per (flavour,
configuration), all of a flavour's started together before its first test and stopped after
its last.
Class attributes are set by the handlers of tests/support/flavour_handlers.py; CLI options are given
without them. Timing bounds are generous (the machine is shared) but exclude the defaults a
flavour would use if it ignored the option.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect

from tests.support.flavour_handlers import GOOD_ORIGIN, SUBPROTOCOL
from tests.support.serverproc import FLAVOURS, ServerProcess
from tests.support.wsclient import Client
from wsloop.exc import HandshakeError
from wsloop.framing import OPCODE_BINARY, OPCODE_TEXT, build_frame
from wsloop.handshake import Response, client_request, new_key, parse_response
from wsloop.messaging import CloseControlMessage

pytestmark = pytest.mark.timeout(60)

_HANDLERS = "tests.support.flavour_handlers:"

#: The server configurations the checks need, by name: CLI arguments besides the flavour's.
CONFIGS: dict[str, tuple[str, ...]] = {
    # message size, origins, compression policy and subprotocol hook from the handler class
    "class": ("--handler", _HANDLERS + "ClassPolicy"),
    # idle and close timeouts and compression None from the handler class; its message size
    # (1024) overridden by the option
    "class-timeouts": ("--handler", _HANDLERS + "ClassTimeouts", "--max-message-size", "4k"),
    # the same options (and the handshake timeout) from the command line; compression default
    "options": (
        "--handler",
        _HANDLERS + "Closer",
        "--max-message-size",
        "1k",
        "--close-timeout",
        "1",
        "--handshake-timeout",
        "1",
    ),
    "heartbeat": ("--heartbeat", "0.3"),
    "idle": ("--idle-timeout", "1", "--no-compression"),  # two options no other check minds
    "max-connections": ("--max-connections", "2"),
}

#: A permessage-deflate offer that lets the server choose both windows.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


class Servers:
    """The servers of one flavour, one per configuration, started together."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.running: dict[str, ServerProcess] = {}
        with ThreadPoolExecutor(len(CONFIGS)) as pool:
            starting = {
                # a generous start-up time: six at once on a loaded 2-core machine
                name: pool.submit(ServerProcess, *FLAVOURS[flavour], *args, timeout=60)
                for name, args in CONFIGS.items()
            }
        failed = []
        for name, future in starting.items():
            try:
                self.running[name] = future.result()
            except RuntimeError as exc:
                failed.append(f"{name}: {exc}")
        if failed:
            self.stop()
            raise RuntimeError("\n".join(failed))

    def port(self, config: str) -> int:
        return self.running[config].port

    def stop(self) -> None:
        for server in self.running.values():
            server.send_signal()
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="module", params=list(FLAVOURS))
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    running = Servers(request.param)
    yield running
    running.stop()


# ------------------------------------------------------------------------ helpers


def upgrade(
    port: int,
    origin: str | None = None,
    protocols: list[str] | None = None,
    extensions: list[str] | None = None,
) -> Response:
    """Send an upgrade request and return the response head (the connection is then dropped)."""
    headers = [("Origin", origin)] if origin is not None else []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(client_request(f"127.0.0.1:{port}", "/", new_key(), protocols, extensions, headers))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response head: {data!r}")
            data += chunk
            parsed = parse_response(data)
            if parsed is not None:
                return parsed[0]


def silent(client: Client) -> list[bytes]:
    """Make ``client`` answer nothing (no pongs, no close reply): what it would have sent is
    collected in the returned list instead."""
    unsent: list[bytes] = []
    client.stream.write = unsent.append
    return unsent


def read_until_close(client: Client, timeout: float) -> CloseControlMessage:
    """Read (without answering anything: see :func:`silent`) until the server's close frame."""
    deadline = time.monotonic() + timeout
    while True:
        for message in client.stream.received:
            if isinstance(message, CloseControlMessage):
                return message
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no close frame")
        client.sock.settimeout(remaining)
        data = client.sock.recv(65536)
        if not data:
            raise ConnectionError("TCP closed without a close frame")
        client.stream.feed(data)


def wait_dropped(sock: socket.socket, timeout: float) -> float:
    """Read and discard until the server ends the TCP connection; return how long it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"connection still open after {timeout} s")
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                break
        except ConnectionResetError:
            break
    return time.monotonic() - start


# ----------------------------------------------------------------- message size


def check_message_size(port: int, headers: list[tuple[str, str]], fits: int = 1000, over: int = 2000) -> None:
    with Client(port, headers=headers) as client:
        assert client.echo(b"a" * fits).data == b"a" * fits
        client.send_raw(build_frame(OPCODE_BINARY, b"b" * over, masked=True))
        answer = client.recv(timeout=10)
        assert isinstance(answer, CloseControlMessage), f"{over} bytes answered with {answer!r}"
        assert answer.code == 1009


def test_message_size_class_attribute(servers: Servers) -> None:
    # ClassPolicy.max_message_size = 1024, no --max-message-size: the class attribute applies.
    check_message_size(servers.port("class"), [("Origin", GOOD_ORIGIN)])


def test_message_size_option(servers: Servers) -> None:
    check_message_size(servers.port("options"), [])


def test_message_size_option_overrides_class_attribute(servers: Servers) -> None:
    # ClassTimeouts.max_message_size = 1024 with --max-message-size 4k: 2,000 bytes echo,
    # 5,000 get 1009.
    check_message_size(servers.port("class-timeouts"), [], fits=2000, over=5000)


# ------------------------------------------------------------------- timeouts


def check_close_timeout(port: int) -> None:
    """The server starts the closing handshake; the peer never answers it: the server drops
    the TCP connection after its close timeout (1 s here; 5 s by default)."""
    with Client(port) as client:
        assert client.echo("hello").data == b"hello"
        silent(client)
        client.send_raw(build_frame(OPCODE_TEXT, b"close", masked=True))
        close = read_until_close(client, timeout=10)
        assert (close.code, close.reason) == (1000, b"bye")
        elapsed = wait_dropped(client.sock, timeout=10)
    assert 0.6 <= elapsed <= 3.0, f"dropped {elapsed:.2f} s after the close frame"


def test_close_timeout_class_attribute(servers: Servers) -> None:
    check_close_timeout(servers.port("class-timeouts"))


def test_close_timeout_option(servers: Servers) -> None:
    check_close_timeout(servers.port("options"))


def test_handshake_timeout_option(servers: Servers) -> None:
    # Half a request, then nothing: the connection is dropped after --handshake-timeout (1 s;
    # 10 s by default). The standalone and asyncio servers time the whole request, the
    # frameworks each read of it (README); with nothing more sent, both give the same outcome.
    # CherryPy answers 408 before closing: whatever comes before the close is not checked.
    port = servers.port("options")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        elapsed = wait_dropped(sock, timeout=6)
    assert 0.6 <= elapsed <= 4.0, f"dropped after {elapsed:.2f} s"


def check_idle_timeout(port: int) -> None:
    """Silent after one message: closed with 1001 between 1x and 1.5x the idle timeout (1 s)."""
    with Client(port) as client:
        assert client.echo("once").data == b"once"
        start = time.monotonic()
        close = client.recv_close(timeout=5)
        elapsed = time.monotonic() - start
    assert close.code == 1001
    assert 0.9 <= elapsed <= 2.5, f"closed after {elapsed:.2f} s of silence"


def test_idle_timeout_class_attribute(servers: Servers) -> None:
    check_idle_timeout(servers.port("class-timeouts"))


def test_idle_timeout_option(servers: Servers) -> None:
    check_idle_timeout(servers.port("idle"))


def test_heartbeat_answered_keeps_the_connection(servers: Servers) -> None:
    # --heartbeat 0.3: pings keep coming; a peer that answers them stays connected.
    with Client(servers.port("heartbeat")) as client:
        pongs: list[bytes] = []
        answer = client.stream.write

        def count(data: bytes) -> None:
            pongs.append(data)
            answer(data)

        client.stream.write = count
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            with pytest.raises(TimeoutError):
                client.recv(timeout=deadline - time.monotonic())  # pongs go out as pings come
        assert len(pongs) >= 2, "fewer than 2 pings in 1.5 s with --heartbeat 0.3"
        assert client.echo("still here").data == b"still here"


def test_heartbeat_unanswered_closes_1011(servers: Servers) -> None:
    # A ping still unanswered at the next one: close 1011 (README): the first ping at 0.3 s,
    # the close instead of the second at 0.6 s (measured: 0.60-0.62 s on every flavour).
    with Client(servers.port("heartbeat")) as client:
        unsent = silent(client)
        start = time.monotonic()
        close = read_until_close(client, timeout=5)
        elapsed = time.monotonic() - start
    assert close.code == 1011
    assert unsent and unsent[0][0] == 0x8A, "closed without a ping first"  # our pong, unsent
    assert 0.45 <= elapsed <= 1.5, f"closed after {elapsed:.2f} s"


# ----------------------------------------------------------------- compression


def test_compression_on_by_default(servers: Servers) -> None:
    port = servers.port("options")
    extensions = upgrade(port, extensions=[DEFLATE_OFFER]).headers.get("sec-websocket-extensions", "")
    assert extensions.startswith("permessage-deflate"), extensions
    with connect(f"ws://127.0.0.1:{port}/", compression="deflate", open_timeout=10) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.send("compressible " * 50)
        assert ws.recv(timeout=10) == "compressible " * 50


def test_compression_off_option(servers: Servers) -> None:
    # --no-compression: an offer is declined.
    response = upgrade(servers.port("idle"), extensions=[DEFLATE_OFFER])
    assert response.status == 101
    assert "sec-websocket-extensions" not in response.headers


def test_compression_none_class_attribute(servers: Servers) -> None:
    response = upgrade(servers.port("class-timeouts"), extensions=[DEFLATE_OFFER])
    assert response.status == 101
    assert "sec-websocket-extensions" not in response.headers


def test_compression_policy_class_attribute(servers: Servers) -> None:
    # ClassPolicy.compression: a 10-bit server window, no context takeover; a real client
    # (websockets) accepts the agreement and messages go through compressed.
    port = servers.port("class")
    response = upgrade(port, origin=GOOD_ORIGIN, extensions=[DEFLATE_OFFER])
    params = [p.strip() for p in response.headers.get("sec-websocket-extensions", "").split(";")]
    assert params[0] == "permessage-deflate", response.headers
    assert "server_no_context_takeover" in params and "server_max_window_bits=10" in params, params
    with connect(f"ws://127.0.0.1:{port}/", origin=GOOD_ORIGIN, open_timeout=10) as ws:
        ws.send("compressible " * 50)
        assert ws.recv(timeout=10) == "compressible " * 50


# ----------------------------------------------------------- handshake decisions


def test_origins_class_attribute(servers: Servers) -> None:
    port = servers.port("class")
    assert upgrade(port, origin=GOOD_ORIGIN).status == 101
    assert upgrade(port, origin="http://bad.example").status == 403
    assert upgrade(port).status == 403  # None is not among the class's origins


def test_subprotocol_class_hook(servers: Servers) -> None:
    port = servers.port("class")
    offered = ["chat.v1", SUBPROTOCOL]
    with Client(port, protocols=offered, headers=[("Origin", GOOD_ORIGIN)]) as client:
        assert client.subprotocol == SUBPROTOCOL
        assert client.echo("?protocols").data == repr([SUBPROTOCOL]).encode()
    with Client(port, protocols=["chat.v1"], headers=[("Origin", GOOD_ORIGIN)]) as client:
        assert client.subprotocol is None
        assert "sec-websocket-protocol" not in client.response.headers


def test_max_connections_option(servers: Servers) -> None:
    # --max-connections 2: the third upgrade gets 503 with Retry-After: 1; once one of the two
    # has closed, a new one is accepted, and the limit holds again after it.
    port = servers.port("max-connections")
    first, second = Client(port), Client(port)
    third: Client | None = None
    try:
        assert first.echo("1").data == b"1" and second.echo("2").data == b"2"
        refused = upgrade(port)
        assert refused.status == 503
        assert refused.headers.get("retry-after") == "1"
        first.stream.close(1000)
        first.flush()
        assert first.recv_close().code == 1000
        assert first.wait_eof()
        deadline = time.monotonic() + 5
        while third is None:
            try:
                third = Client(port)
            except HandshakeError:  # a 503 while the server is still counting the closed one
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert third.echo("3").data == b"3"
        assert upgrade(port).status == 503
        assert second.echo("2").data == b"2"
    finally:
        for client in (first, second, third):
            if client is not None:
                client.close()
