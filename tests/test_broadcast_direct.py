"""Broadcast writes each socket at once (issue 16, item 4) and large sends go out without a
concatenation copy (item 2's write half), over real loopback sockets: ordering with queued
output, slow and non-reading peers, TLS, 16 MiB messages with and without compression, and
partial writes through a small send buffer."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sockets import raw_upgraded
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.deflate import DeflateOptions, client_accept, client_offer
from wsloop.handshake import Response, client_request, new_key
from wsloop.messaging import Message
from wsloop.poller import Reactor
from wsloop.protocol import Protocol
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


class Fan(WebSocket):
    """``go N``: broadcast N numbered messages, noting after each one every connection's queued
    output; ``mix N``: a message of its own, then a broadcast, N times; ``big N``: send N bytes;
    ``bigtext N``: N characters of text; ``sub``: join the channel "room"; ``pub N``: publish N
    numbered messages on it. Anything else is echoed."""

    compression = None
    instances: list[Fan] = []
    codes: list[int] = []
    queued_after: list[list[int]] = []  # per broadcast: len(wbuf) of every connection
    partial = 0  # broadcasts that left the rest of a partly written frame queued
    sndbuf = 0  # SO_SNDBUF for new connections (0: the system's)
    size = 64

    def opened(self) -> None:
        if Fan.sndbuf and self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, Fan.sndbuf)
        Fan.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Fan.codes.append(code)

    def received_message(self, message: Message) -> None:
        command, _, arg = message.data.partition(b" ")
        transport: Any = self.transport
        reactor: Reactor = transport.reactor
        if command == b"go":
            for i in range(int(arg)):
                reactor.broadcast(_numbered(i, Fan.size), binary=True)
                conns = list(reactor._connections.values())
                Fan.queued_after.append([len(c.wbuf) for c in conns])
                Fan.partial += sum(1 for c in conns if c.wbuf and type(c.wbuf[-1]) is memoryview)
        elif command == b"sub":
            self.subscribe("room")
            self.send(b"joined", binary=True)
        elif command == b"pub":
            for i in range(int(arg)):
                self.publish("room", _numbered(i, Fan.size), binary=True)
                Fan.queued_after.append([len(c.wbuf) for c in reactor._connections.values()])
        elif command == b"mix":
            for i in range(int(arg)):
                self.send(b"own %d" % i, binary=True)
                reactor.broadcast(b"all %d" % i, binary=True)
        elif command == b"big":
            self.send(_pattern(int(arg)), binary=True)
        elif command == b"bigtext":
            self.send("é" * (int(arg) // 2))
        else:
            self.send(message.data, message.is_binary)


@pytest.fixture
def fan() -> Iterator[type[Fan]]:
    Fan.instances, Fan.codes, Fan.queued_after = [], [], []
    Fan.partial, Fan.sndbuf, Fan.size = 0, 0, 64
    yield Fan
    Fan.sndbuf = 0


def _numbered(i: int, size: int) -> bytes:
    """``size`` bytes that say which message they are: the number, then a filler byte of it."""
    head = b"%08d:" % i
    return head + bytes([i % 251]) * (size - len(head))


def _pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def _serve(reactor: Reactor | None = None, **options: Any) -> WebSocketServer:
    server = WebSocketServer("127.0.0.1", 0, Fan, manager=reactor, **options)
    server.start()
    return server


def _check_numbered(messages: list[bytes], count: int, size: int) -> None:
    assert [m[:8] for m in messages] == [b"%08d" % i for i in range(count)], "all, in order"
    assert all(m == _numbered(i, size) for i, m in enumerate(messages)), "intact"


# ------------------------------------------------------------------------ broadcast


def test_a_broadcast_goes_out_at_once_to_every_idle_socket_in_order(fan: type[Fan]) -> None:
    """Nothing queued before it: each connection's frame is written by broadcast() itself, so
    right after it returns no connection holds it (before: every one did, until the turn's
    flush). Every client gets every message, in order."""
    server = _serve()
    clients = [Client(server.port) for _ in range(30)]
    try:
        wait_for(lambda: len(fan.instances) == 30, timeout=20.0)
        count = 200
        clients[0].send(b"go %d" % count)
        for client in clients:
            _check_numbered([client.recv().data for _ in range(count)], count, 64)
        assert len(fan.queued_after) == count
        assert all(n == 0 for after in fan.queued_after for n in after), "written at once"
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=1)


def test_a_channel_publish_goes_out_at_once_to_its_members(fan: type[Fan]) -> None:
    """The hub's fan-out shares the broadcast's code: members get it written at once, in order;
    a connection that did not join gets nothing."""
    server = _serve()
    members = [Client(server.port) for _ in range(5)]
    outsider = Client(server.port)
    try:
        for client in members:
            assert client.echo(b"sub").data == b"joined"
        count = 50
        members[0].send(b"pub %d" % count)
        for client in members:
            _check_numbered([client.recv().data for _ in range(count)], count, 64)
        assert all(n == 0 for after in fan.queued_after for n in after), "written at once"
        assert outsider.echo(b"ping").data == b"ping", "nothing published reached it"
    finally:
        for client in members + [outsider]:
            client.close()
        server.stop(timeout=1)


def test_output_queued_before_a_broadcast_goes_first(fan: type[Fan]) -> None:
    """A connection with output queued this turn gets the broadcast queued behind it: the
    sender sees its own message, then the broadcast, each time; the others the broadcasts."""
    server = _serve()
    sender, other = Client(server.port), Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        sender.send(b"mix 100")
        expected = [m for i in range(100) for m in (b"own %d" % i, b"all %d" % i)]
        assert [sender.recv().data for _ in range(200)] == expected
        assert [other.recv().data for _ in range(100)] == [b"all %d" % i for i in range(100)]
    finally:
        sender.close()
        other.close()
        server.stop(timeout=1)


def test_output_queued_by_another_thread_keeps_its_place(fan: type[Fan]) -> None:
    """Sends and broadcasts from a thread that is not the reactor's, interleaved: each client
    gets them in the order they were made."""
    server = _serve()
    reactor = server.manager
    assert isinstance(reactor, Reactor)
    a, b = Client(server.port), Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        first = fan.instances[0]
        for i in range(300):
            first.send(b"own %d" % i, binary=True)
            reactor.broadcast(b"all %d" % i, binary=True)
        firsts_client = a if a.sock.getsockname()[1] == first.peer_address[1] else b
        others_client = b if firsts_client is a else a
        expected = [m for i in range(300) for m in (b"own %d" % i, b"all %d" % i)]
        assert [firsts_client.recv().data for _ in range(600)] == expected
        assert [others_client.recv().data for _ in range(300)] == [b"all %d" % i for i in range(300)]
    finally:
        a.close()
        b.close()
        server.stop(timeout=1)


def test_a_slow_reader_gets_every_broadcast_in_order_through_partial_writes(fan: type[Fan]) -> None:
    """A small send buffer on the server's side and a client that reads a little at a time:
    broadcasts are partly written at once, the rest queued (a memoryview of the shared frame)
    and sent later; everything arrives, in order, and the readers that keep up get it all too."""
    fan.sndbuf, fan.size = 4096, 3000
    server = _serve()
    slow = raw_upgraded(server.port, 4096)
    fast = Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        count = 300
        got = bytearray()
        reader = Protocol(client=True, max_message_size=None)
        done = threading.Event()

        def read_slowly() -> None:
            deadline = time.monotonic() + 60
            while len(reader.received) < count and time.monotonic() < deadline:
                chunk = slow.recv(1500)
                if not chunk:
                    break
                got.extend(chunk)
                reader.feed(chunk)
                time.sleep(0.0005)
            done.set()

        thread = threading.Thread(target=read_slowly)
        thread.start()
        fast.send(b"go %d" % count)
        _check_numbered([fast.recv(timeout=30).data for _ in range(count)], count, fan.size)
        assert done.wait(60)
        thread.join(5)
        _check_numbered([m.data for m in reader.received], count, fan.size)
        assert fan.partial > 0, "some broadcast was written in part, the rest queued"
        assert fan.codes == []
    finally:
        slow.close()
        fast.close()
        server.stop(timeout=1)


def test_a_non_reader_among_direct_writes_still_hits_max_buffered(fan: type[Fan]) -> None:
    """Broadcasts to a peer that never reads fill its socket (written at once while it has
    room), then its buffer, until max_buffered: reset with 1008, as before; the others get
    every message in order."""
    fan.size = 16 << 10
    reactor = Reactor(high_water=256 << 10, low_water=64 << 10, max_buffered=1 << 20)
    server = _serve(reactor)
    stuck = raw_upgraded(server.port, 4096)
    good = Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        stuck_ws = next(ws for ws in fan.instances if ws.peer_address[1] == stuck.getsockname()[1])
        conn = reactor._connections[stuck_ws]
        count = 400  # 6.4 MiB to each: far past max_buffered plus what the sockets hold
        received: list[bytes] = []

        def read() -> None:
            while len(received) < count:
                received.append(good.recv(timeout=30).data)

        thread = threading.Thread(target=read)
        thread.start()
        for i in range(0, count, 20):  # from another thread, 20 at a time, the good one reading
            for j in range(i, i + 20):
                reactor.broadcast(_numbered(j, fan.size), binary=True)
            wait_for(lambda i=i: len(received) >= i + 20, timeout=20.0)
        thread.join(30)
        _check_numbered(received, count, fan.size)
        wait_for(lambda: fan.codes, timeout=20.0)
        assert fan.codes == [1008], "the non-reader is reset with 1008, the reader is not"
        assert conn.closed and conn.wbuf == [] and stuck_ws not in reactor
        assert good.echo(b"still here").data == b"still here"
    finally:
        stuck.close()
        good.close()
        server.stop(timeout=1)


def test_tls_clients_get_broadcasts_written_at_once_and_in_order(
    fan: type[Fan], tls_files: tuple[Path, Path], tls_contexts: Contexts
) -> None:
    """Over TLS the frame goes out at once too (an SSLSocket takes the whole frame or nothing),
    small and large broadcasts arrive whole and in order."""
    cert, key = tls_files
    server = _serve(certfile=str(cert), keyfile=str(key))
    clients = [Client(server.port, ssl_context=tls_contexts[1]) for _ in range(5)]
    try:
        wait_for(lambda: len(fan.instances) == 5, timeout=20.0)
        count = 100
        clients[0].send(b"go %d" % count)
        for client in clients:
            _check_numbered([client.recv().data for _ in range(count)], count, 64)
        assert all(n == 0 for after in fan.queued_after for n in after), "written at once"
        fan.size = 200_000  # larger than what one TLS write takes at once
        fan.queued_after.clear()
        clients[1].send(b"go 10")
        for client in clients:
            _check_numbered([client.recv(timeout=30).data for _ in range(10)], 10, fan.size)
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=1)


class DeflateClient(Client):
    """A test client that offers permessage-deflate and inflates what it receives."""

    def __init__(self, port: int) -> None:
        self.options = DeflateOptions()
        super().__init__(port, extensions=[client_offer(self.options)], timeout=30)

    def make_stream(self, response: Response) -> Protocol:
        header = response.headers.get("sec-websocket-extensions")
        assert header, "the server accepted permessage-deflate"
        return Protocol(client=True, max_message_size=None, deflate=client_accept(header, self.options))


class Compressing(Fan):
    compression = DeflateOptions()


def test_a_broadcast_reaches_compressing_and_plain_clients(fan: type[Fan]) -> None:
    """A connection with permessage-deflate does not take the shared frame: it is compressed
    for it (send_broadcast), while the others get it written at once."""
    server = WebSocketServer("127.0.0.1", 0, Compressing)
    server.start()
    plain, deflating = Client(server.port), DeflateClient(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        fan.size = 5000
        plain.send(b"go 50")
        _check_numbered([plain.recv().data for _ in range(50)], 50, 5000)
        _check_numbered([deflating.recv().data for _ in range(50)], 50, 5000)
    finally:
        plain.close()
        deflating.close()
        server.stop(timeout=1)


# --------------------------------------------------------------------- large sends

BIG = 16 << 20


@pytest.mark.parametrize("sndbuf", [0, 8192])
def test_a_16_mib_message_arrives_intact(fan: type[Fan], sndbuf: int) -> None:
    """Binary and text, with the system's send buffer and a small one (many partial writes of
    the header and payload buffers)."""
    fan.sndbuf = sndbuf
    server = _serve()
    client = Client(server.port, timeout=60)
    try:
        client.send(b"big %d" % BIG)
        data = client.recv(timeout=60).data
        assert len(data) == BIG and data == _pattern(BIG)
        client.send(b"bigtext %d" % BIG)
        message = client.recv(timeout=60)
        assert message.is_text and message.data == ("é" * (BIG // 2)).encode()
    finally:
        client.close()
        server.stop(timeout=1)


def test_a_16_mib_message_arrives_intact_compressed(fan: type[Fan]) -> None:
    server = WebSocketServer("127.0.0.1", 0, Compressing)
    server.start()
    client = DeflateClient(server.port)
    try:
        client.send(b"big %d" % BIG)
        data = client.recv(timeout=60).data
        assert len(data) == BIG and data == _pattern(BIG)
    finally:
        client.close()
        server.stop(timeout=1)


def test_a_large_send_is_queued_without_a_copy() -> None:
    """The server side writes a large bytes payload as its header and the caller's object;
    a str is encoded once: the memory a 16 MiB send takes is that one encoding at most."""
    written: list[bytes] = []
    stream = Protocol(write=written.append)
    payload = _pattern(BIG)
    text = "é" * (BIG // 2)
    tracemalloc.start()
    try:
        stream.send(payload, binary=True)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 64 << 10, peak
        assert written[-1] is payload and len(written[-2]) == 10
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        stream.send(text)
        _, peak = tracemalloc.get_traced_memory()
        assert BIG <= peak - before < BIG + (64 << 10), peak - before
        assert written[-1] == text.encode()
    finally:
        tracemalloc.stop()


def test_a_large_client_send_writes_its_header_and_masked_payload_apart() -> None:
    """A client masks into a new buffer (unavoidable) and does not copy it again to put its
    header in front."""
    written: list[bytes] = []
    stream = Protocol(client=True, write=written.append)
    payload = _pattern(BIG)
    stream.send(payload, binary=True)
    header, masked = written[-2:]
    assert len(header) == 14 and len(masked) == BIG
    server = Protocol(max_message_size=None)
    server.feed(header + masked)
    assert server.received[0].data == payload


def test_a_16_mib_send_through_the_reactor_copies_nothing(fan: type[Fan]) -> None:
    """Sent from another thread, read here into one reused buffer: the traced memory grows by
    far less than the payload while the reactor writes its header and the caller's bytes
    (sendmsg, then what is left of them as memoryviews)."""
    server = _serve()
    reader = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        reader.sendall(client_request(f"127.0.0.1:{server.port}", "/", new_key()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += reader.recv(1)
        wait_for(lambda: len(fan.instances) == 1, timeout=20.0)
        ws = fan.instances[0]
        payload = _pattern(BIG)
        buffer = bytearray(1 << 20)
        crc = 0
        total = 0
        tracemalloc.start()
        try:
            ws.send(payload, binary=True)
            while total < BIG + 10:
                n = reader.recv_into(buffer)
                assert n
                crc = zlib.crc32(memoryview(buffer)[:n], crc)
                total += n
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == BIG + 10
        expected = zlib.crc32(payload, zlib.crc32(b"\x82\x7f" + BIG.to_bytes(8, "big")))
        assert crc == expected, "header then payload, intact"
        assert peak < 4 << 20, peak
    finally:
        reader.close()
        server.stop(timeout=1)
