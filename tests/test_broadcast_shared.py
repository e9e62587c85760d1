"""A broadcast's frame written to many plain sockets from C (``wsloop._speedups.send_shared``,
the reactor's ``_send_shared``) and by the pure-Python loop it falls back to: every test of the
reactor runs both ways, over real loopback sockets: more sockets than one C call takes, a slow
reader (partial writes), a peer that never reads (bounded, counted, reset), TLS and compressing
connections (never given to C), closing and closed connections, a websocket listed twice, and
the counters."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broadcasting import (
    Compressing,
    DeflateClient,
    Fan,
    check_numbered,
    numbered,
    serve,
    written_at_once,
)
from tests.support.sockets import raw_upgraded
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop import framing
from wsloop.poller import Reactor
from wsloop.poller import reactor as reactor_module
from wsloop.protocol import Protocol

SendShared = Callable[[bytes, list[socket.socket]], list[tuple[int, int]]]
C_SEND_SHARED: SendShared | None = getattr(framing._speedups, "send_shared", None)
needs_c = pytest.mark.skipif(framing._speedups is None, reason="the C extension is not built (or disabled)")


class Calls:
    """What the reactor gave send_shared: the sockets of each call."""

    def __init__(self) -> None:
        self.batches: list[list[socket.socket]] = []

    def count(self) -> int:
        return sum(len(b) for b in self.batches)


@pytest.fixture(params=["C", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls | None]:
    """The broadcast path under test: "C" (send_shared, watched: a wrapper records the sockets
    it is given) or "python" (no send_shared: each socket's send() from Python). Yields the
    record, or None for the Python path."""
    if request.param == "python":
        monkeypatch.setattr(reactor_module, "_send_shared", None)
        yield None
        return
    if framing._speedups is None:
        pytest.skip("the C extension is not built (or WSLOOP_NO_SPEEDUPS is set)")
    assert C_SEND_SHARED is not None, "the extension is built from a source without send_shared"
    calls = Calls()
    real = C_SEND_SHARED

    def watched(frame: bytes, socks: list[socket.socket]) -> list[tuple[int, int]]:
        calls.batches.append(list(socks))
        return real(frame, socks)

    monkeypatch.setattr(reactor_module, "_send_shared", watched)
    yield calls


# --------------------------------------------------------------- send_shared itself


def _fill(sock: socket.socket) -> None:
    """Write to ``sock`` until its buffers are full (its peer never reads)."""
    sock.setblocking(False)
    while True:
        try:
            sock.send(b"x" * 65536)
        except BlockingIOError:
            try:
                sock.send(b"x")  # small writes until even one byte does not fit
            except BlockingIOError:
                return


@needs_c
def test_send_shared_writes_each_socket_and_reports_the_ones_that_took_less() -> None:
    """Real socket pairs: the ones with room get the whole frame; a full one took nothing, a
    nearly full one part of it, a closed one nothing: each reported with what it took."""
    assert C_SEND_SHARED is not None, "the extension is built from a source without send_shared"
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        frame = bytes(range(256)) * 4096  # 1 MiB: more than a socket pair holds
        small = b"\x82\x05hello"
        ok, full, part, gone = (a for a, _ in pairs)
        _fill(full)
        gone.close()
        ok.setblocking(False)
        part.setblocking(False)
        assert C_SEND_SHARED(small, [ok, full, gone]) == [(1, 0), (2, 0)]
        assert pairs[0][1].recv(100) == small
        missed = C_SEND_SHARED(frame, [part])
        assert len(missed) == 1 and missed[0][0] == 0 and 0 < missed[0][1] < len(frame), missed
        took = missed[0][1]
        got = bytearray()
        while len(got) < took:
            got += pairs[2][1].recv(took - len(got))
        assert bytes(got) == frame[:took], "the part it took is the frame's start"
        assert C_SEND_SHARED(small, []) == []
        with pytest.raises(TypeError):
            C_SEND_SHARED(small, (ok,))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            C_SEND_SHARED("text", [ok])  # type: ignore[arg-type]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# ------------------------------------------------------------ through the reactor


def test_a_broadcast_to_more_sockets_than_one_call_takes(fan: type[Fan], path: Calls | None) -> None:
    """More connections than _SHARED_BATCH: each gets every message once, in order, written at
    once; in C, in calls of at most _SHARED_BATCH sockets, every connection in one of them per
    broadcast. The counters are exact: one message and its frame's bytes per connection."""
    server = serve()
    n = reactor_module._SHARED_BATCH + 44
    clients = [Client(server.port) for _ in range(n)]
    try:
        wait_for(lambda: len(fan.instances) == n, timeout=30.0)
        reactor: Any = server.manager
        before = reactor.stats()
        count = 5
        clients[0].send(b"go %d" % count)
        for client in clients:
            check_numbered([client.recv(timeout=30).data for _ in range(count)], count, 64)
        assert len(fan.queued_after) == count and written_at_once(), "written at once"
        expected_bytes = n * count * (2 + 64)
        wait_for(lambda: reactor.stats().bytes_out - before.bytes_out == expected_bytes, timeout=10.0)
        after = reactor.stats()
        assert after.messages_out - before.messages_out == n * count
        assert after.bytes_out - before.bytes_out == expected_bytes
        if path is not None:
            assert path.count() == n * count, "every plain socket went through send_shared"
            assert max(len(b) for b in path.batches) == reactor_module._SHARED_BATCH
            assert len(path.batches) == 2 * count
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=1)


def test_a_slow_reader_gets_every_broadcast_through_partial_writes(
    fan: type[Fan], path: Calls | None
) -> None:
    """A small send buffer and a reader that reads a little at a time: frames are partly
    written at once and the rest (a memoryview of the shared frame) queued and sent later:
    everything arrives in order, on the fast connection too."""
    fan.sndbuf, fan.size = 4096, 3000
    server = serve()
    slow = raw_upgraded(server.port, 4096)
    fast = Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        count = 300
        reader = Protocol(client=True, max_message_size=None)
        done = threading.Event()

        def read_slowly() -> None:
            deadline = time.monotonic() + 60
            while len(reader.received) < count and time.monotonic() < deadline:
                chunk = slow.recv(1500)
                if not chunk:
                    break
                reader.feed(chunk)
                time.sleep(0.0005)
            done.set()

        thread = threading.Thread(target=read_slowly)
        thread.start()
        fast.send(b"go %d" % count)
        check_numbered([fast.recv(timeout=30).data for _ in range(count)], count, fan.size)
        assert done.wait(60)
        thread.join(5)
        check_numbered([m.data for m in reader.received], count, fan.size)
        assert fan.partial > 0, "some frame was written in part, the rest queued"
        assert fan.codes == []
        if path is not None:
            assert path.count() > 0
    finally:
        slow.close()
        fast.close()
        server.stop(timeout=1)


def test_a_peer_that_never_reads_is_bounded_counted_and_reset(fan: type[Fan], path: Calls | None) -> None:
    """Broadcasts to a peer that never reads fill its socket, then its buffer (counted in
    buffered_bytes_max), until max_buffered: it is reset with 1008 and its buffer freed; the reader
    gets every message in order."""
    fan.size = 16 << 10
    limit = 1 << 20
    reactor = Reactor(high_water=256 << 10, low_water=64 << 10, max_buffered=limit)
    server = serve(reactor=reactor)
    stuck = raw_upgraded(server.port, 4096)
    good = Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        stuck_ws = next(ws for ws in fan.instances if ws.peer_address[1] == stuck.getsockname()[1])
        conn = reactor._connections[stuck_ws]
        count = 400  # 6.4 MiB to each: far past max_buffered plus what the sockets hold
        received: list[bytes] = []
        held: list[int] = []

        def read() -> None:
            while len(received) < count:
                received.append(good.recv(timeout=30).data)

        thread = threading.Thread(target=read)
        thread.start()
        for i in range(0, count, 20):
            for j in range(i, i + 20):
                reactor.broadcast(numbered(j, fan.size), binary=True)
            wait_for(lambda: len(received) >= i + 20, timeout=20.0)  # noqa: B023 (waited for here)
            held.append(reactor.stats().buffered_bytes_max)
        thread.join(30)
        check_numbered(received, count, fan.size)
        wait_for(lambda: fan.codes, timeout=20.0)
        assert fan.codes == [1008], "the non-reader is reset with 1008, the reader is not"
        assert conn.closed and conn.wbuf == [] and stuck_ws not in reactor
        assert max(held) > 0, "its backlog was counted"
        assert max(held) <= limit + 21 * (fan.size + 128), "and bounded by max_buffered"
        assert reactor.stats().slow_consumers_dropped == 1
        assert good.echo(b"still here").data == b"still here"
        if path is not None:
            assert path.count() > 0, "the frames went through send_shared while it had room"
    finally:
        stuck.close()
        good.close()
        server.stop(timeout=1)


def test_tls_connections_never_take_the_raw_path(
    fan: type[Fan],
    path: Calls | None,
    tls_files: tuple[Path, Path],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """TLS connections get the frame through their SSLSocket (never a raw write to its file
    descriptor, which would bypass the encryption): intact and in order."""
    cert, key = tls_files
    server = serve(certfile=str(cert), keyfile=str(key))
    clients = [Client(server.port, ssl_context=tls_contexts[1]) for _ in range(4)]
    try:
        wait_for(lambda: len(fan.instances) == 4, timeout=20.0)
        clients[0].send(b"go 50")
        for client in clients:
            check_numbered([client.recv(timeout=30).data for _ in range(50)], 50, 64)
        if path is not None:
            assert path.batches == [], "no TLS socket was given to send_shared"
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=1)


def test_compressing_connections_frame_it_themselves(fan: type[Fan], path: Calls | None) -> None:
    """A permessage-deflate connection cannot share the frame: it compresses its own (and is
    never given to send_shared); the plain ones share it."""
    server = serve(Compressing)
    plain = [Client(server.port) for _ in range(3)]
    deflating = [DeflateClient(server.port) for _ in range(2)]
    try:
        wait_for(lambda: len(fan.instances) == 5, timeout=20.0)
        fan.size = 5000
        plain[0].send(b"go 30")
        for client in plain + deflating:
            check_numbered([client.recv(timeout=30).data for _ in range(30)], 30, 5000)
        if path is not None:
            assert path.count() == 3 * 30, "the plain ones only"
            compressing = {id(ws.sock) for ws in fan.instances if ws.stream.deflate is not None}
            assert len(compressing) == 2
            assert not any(id(s) in compressing for b in path.batches for s in b)
    finally:
        for client in plain + deflating:
            client.close()
        server.stop(timeout=1)


def test_closing_and_closed_connections(fan: type[Fan], path: Calls | None) -> None:
    """A connection whose close the server started (the peer has not answered) gets nothing
    after its Close frame; one whose socket was closed behind the reactor's back is dropped
    (no write to its old descriptor); the others get every message."""
    server = serve()
    reactor: Any = server.manager
    closing = raw_upgraded(server.port)
    gone = Client(server.port)
    good = [Client(server.port) for _ in range(3)]
    try:
        wait_for(lambda: len(fan.instances) == 5, timeout=20.0)
        by_port = {ws.peer_address[1]: ws for ws in fan.instances}
        closing_ws = by_port[closing.getsockname()[1]]
        gone_ws = by_port[gone.sock.getsockname()[1]]
        closing_ws.close(1000, "bye")
        gone_sock = gone_ws.sock
        assert gone_sock is not None
        reactor.call_soon_threadsafe(gone_sock.close)
        wait_for(lambda: gone_sock.fileno() == -1, timeout=10.0)
        good[0].send(b"go 20")
        for client in good:
            check_numbered([client.recv(timeout=30).data for _ in range(20)], 20, 64)
        # the closing peer: its Close frame, then nothing
        closing.settimeout(0.5)
        data = b""
        try:
            while True:
                chunk = closing.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        assert data[:1] == b"\x88", "the Close frame first"
        assert len(data) == 2 + data[1], "and nothing after it"
        wait_for(lambda: gone_ws not in reactor, timeout=20.0)
        if path is not None:
            given = [s for b in path.batches for s in b]
            assert closing_ws.sock not in given
    finally:
        for client in [*good, gone]:
            try:
                client.close()
            except OSError:
                pass
        closing.close()
        server.stop(timeout=1)


def test_a_websocket_listed_twice_gets_the_message_twice_in_order(fan: type[Fan], path: Calls | None) -> None:
    """local_broadcast() to a list naming one websocket twice: it gets two messages (the
    second one waits behind the first's rest; not given to send_shared in one call)."""
    server = serve()
    reactor: Any = server.manager
    a, b = Client(server.port), Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        by_port = {ws.peer_address[1]: ws for ws in fan.instances}
        first, second = by_port[a.sock.getsockname()[1]], by_port[b.sock.getsockname()[1]]
        for i in range(10):
            reactor.local_broadcast(numbered(i, 64), binary=True, websockets=[first, first, second])
        assert [a.recv(timeout=30).data for _ in range(20)] == [
            numbered(i, 64) for i in range(10) for _ in range(2)
        ]
        check_numbered([b.recv(timeout=30).data for _ in range(10)], 10, 64)
        if path is not None:
            assert path.batches == []
    finally:
        a.close()
        b.close()
        server.stop(timeout=1)
