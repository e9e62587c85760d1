"""Reactor bounds against hostile peers and careless callers (issue 13): output caps, stale
sockets, timers, adds after stop."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.sockets import raw_upgraded
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.framing import OPCODE_PING, build_frame
from wsloop.poller import Connection, Reactor, ThreadedManager
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket

# ------------------------------------------------------------------ timers (item 13)


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    reactor = Reactor()
    try:
        live = [reactor.call_later(600 + i, lambda: None) for i in range(100)]
        for i in range(20_000):
            reactor.call_later(600, lambda: None).cancel()
            assert len(reactor._timers.heap) <= 2 * len(live) + 512, i
        # The live ones are all still there, in order.
        assert all(not h.cancelled for h in live)
        heap = reactor._timers.heap
        assert {h for _, _, h in heap if not h.cancelled} == set(live)
        assert reactor._timers.timeout(None) is not None
    finally:
        reactor.stop(0)


class Idle(EchoWebSocket):
    idle_timeout = 600.0


def test_closed_connections_leave_no_idle_timers_behind() -> None:
    """The issue's case: every connection with a long idle timeout cancels its timer when it
    closes; the heap must not keep one entry per connection ever served (one connection stays
    open: its timer, due first, keeps the cancelled ones from being popped)."""
    reactor = Reactor()
    server = WebSocketServer("127.0.0.1", 0, Idle, manager=reactor)
    server.start()
    try:
        stays = Client(server.port)
        assert stays.echo("first").data == b"first"
        for _ in range(40):
            clients = [Client(server.port) for _ in range(20)]
            for c in clients:
                assert c.echo("x").data == b"x"
                c.close()
        wait_for(lambda: len(reactor) == 1)
        heap = reactor._timers.heap
        live = [h for _, _, h in heap if not h.cancelled]
        assert len(heap) <= 2 * len(live) + 512, (len(heap), len(live))
        assert stays.echo("still served").data == b"still served"
        stays.close()
    finally:
        server.stop(timeout=1)


# ------------------------------------------------------------ add() after stop() (item 11)


class Recorder(WebSocket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.codes: list[int] = []
        self.was_opened = False

    def opened(self) -> None:
        self.was_opened = True

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.codes.append(code)


def _refused(reactor: Reactor, from_thread: bool) -> None:
    server_side, client_side = socket.socketpair()
    ws = Recorder(server_side)
    try:
        if from_thread:
            thread = threading.Thread(target=reactor.add, args=(ws,))
            thread.start()
            thread.join()
        else:
            reactor.add(ws)
        wait_for(lambda: ws.codes)
        assert ws.codes == [1001], "closed(1001) called once"
        assert not ws.was_opened
        assert ws.terminated
        assert server_side.fileno() == -1, "the socket is closed"
        client_side.settimeout(5)
        assert client_side.recv(10) == b"", "the peer sees EOF"
        assert len(reactor) == 0 and reactor.websockets == []
    finally:
        client_side.close()


def test_add_after_stop_is_refused_with_1001() -> None:
    reactor = Reactor()
    reactor.start()
    reactor.stop(0.5)
    _refused(reactor, from_thread=False)
    _refused(reactor, from_thread=True)


def test_add_to_a_reactor_stopped_without_being_started_is_refused() -> None:
    reactor = Reactor()
    reactor.stop(0)
    _refused(reactor, from_thread=False)


def test_add_while_stopping_is_refused_with_1001() -> None:
    """While stop() waits for closing handshakes, a websocket handed over is refused at once."""
    reactor = Reactor()
    reactor.start()
    silent_server, silent_client = socket.socketpair()  # never answers the close: keeps it stopping
    reactor.add(WebSocket(silent_server))
    wait_for(lambda: len(reactor.websockets) == 1)
    stopper = threading.Thread(target=reactor.stop, args=(3.0,))
    stopper.start()
    try:
        wait_for(lambda: reactor._stopping)
        _refused_while = Recorder(socket.socketpair()[0])
        reactor.add(_refused_while)
        wait_for(lambda: _refused_while.codes)
        assert _refused_while.codes == [1001]
        assert len(reactor) == 1
    finally:
        silent_client.close()
        stopper.join()


# ------------------------------------------ output cap and memory accounting (items 4, 5)


class Codes(EchoWebSocket):
    instances: list[Codes] = []
    codes: list[int] = []

    def opened(self) -> None:
        Codes.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Codes.codes.append(code)


def test_broadcast_to_a_peer_that_never_reads_is_capped_and_others_get_everything() -> None:
    Codes.instances, Codes.codes = [], []
    server = WebSocketServer("127.0.0.1", 0, Codes, max_buffered=16 << 20)
    server.start()
    reactor = server.manager
    assert isinstance(reactor, Reactor) and reactor.max_buffered == 16 << 20
    slow = raw_upgraded(server.port, 4096)
    good = Client(server.port)
    try:
        wait_for(lambda: len(Codes.instances) == 2)
        slow_ws = next(ws for ws in Codes.instances if ws.peer_address[1] == slow.getsockname()[1])
        conn = reactor._connections[slow_ws]
        count, size = 48, 1 << 20  # 48 MiB to each
        received: list[bytes] = []

        def read() -> None:
            while len(received) < count:
                received.append(good.recv(timeout=30).data)

        reader = threading.Thread(target=read)
        reader.start()
        for i in range(count):
            reactor.broadcast(bytes([i]) * size, binary=True)
            # A good reader keeps up: at most 8 MiB in flight to it.
            wait_for(lambda i=i: len(received) >= i - 8, timeout=30)
        reader.join(30)
        assert [m[:1] for m in received] == [bytes([i]) for i in range(count)], "all, in order"
        assert all(len(m) == size and m.count(m[:1]) == size for m in received), "intact"
        wait_for(lambda: Codes.codes)
        assert Codes.codes == [1008], "the non-reader is closed with 1008, the good one is not"
        assert conn.closed and conn.wbuf == [] and conn.wsize == 0, "its buffer is freed"
        assert slow_ws not in reactor and len(reactor) == 1
        # The non-reader's connection was reset: what it reads ends in a reset or EOF, never
        # in the 48 MiB.
        total = 0
        slow.settimeout(10)
        try:
            while chunk := slow.recv(1 << 20):
                total += len(chunk)
        except ConnectionResetError:
            pass
        assert total < 24 << 20
        assert good.echo("still here").data == b"still here"
    finally:
        slow.close()
        good.close()
        server.stop(timeout=1)


def test_a_burst_of_broadcasts_from_a_thread_is_flushed_in_steps() -> None:
    """Broadcasts queued by another thread faster than the loop runs reach the sockets of those
    who read, a high-water mark's worth at a time, instead of piling up past max_buffered (the
    reader is another process: no GIL shared with the reactor)."""
    Codes.instances, Codes.codes = [], []
    reactor = Reactor(high_water=1 << 20, low_water=256 << 10, max_buffered=4 << 20)
    server = WebSocketServer("127.0.0.1", 0, Codes, manager=reactor)
    server.start()
    count, size = 24, 256 << 10  # 6 MiB queued at once: more than max_buffered
    reader = subprocess.Popen(
        [sys.executable, "-c", _BURST_READER, str(server.port), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "ready\n"
        wait_for(lambda: len(Codes.instances) == 1)
        reactor.call_soon_threadsafe(time.sleep, 0.3)  # the loop is busy: the burst queues up
        for i in range(count):
            reactor.broadcast(bytes([i % 256]) * size, binary=True)
        out, _ = reader.communicate(timeout=60)
        assert out.split() == [str(i % 256) for i in range(count)], Codes.codes
        assert reader.returncode == 0
        assert 1008 not in Codes.codes
    finally:
        if reader.poll() is None:
            reader.kill()
        server.stop(timeout=1)


_BURST_READER = """
import sys
from tests.support.wsclient import Client
port, count = int(sys.argv[1]), int(sys.argv[2])
client = Client(port)
print("ready", flush=True)
for _ in range(count):
    data = client.recv(timeout=30).data
    assert data.count(data[:1]) == len(data) == 256 << 10
    print(data[0], flush=True)
client.close()
"""


def test_callbacks_relaying_to_a_non_reader_are_capped() -> None:
    """send() from callbacks (the reactor's thread never waits) to a peer that does not read:
    here another client's messages are relayed to it, 2 MiB each, 48 MiB in all."""

    class Relay(Codes):
        def received_message(self, message: Any) -> None:
            if message.data == b"relay":
                for ws in Codes.instances:
                    if ws is not self and not ws.terminated:
                        ws.send(b"r" * (2 << 20), binary=True)
            else:
                super().received_message(message)

    Codes.instances, Codes.codes = [], []
    reactor = Reactor(max_buffered=16 << 20)
    server = WebSocketServer("127.0.0.1", 0, Relay, manager=reactor)
    server.start()
    slow = raw_upgraded(server.port, 4096)
    try:
        wait_for(lambda: len(Codes.instances) == 1)
        driver = Client(server.port)
        wait_for(lambda: len(Codes.instances) == 2)
        conn = reactor._connections[Codes.instances[0]]
        for i in range(24):
            driver.send("relay")
            assert driver.echo(f"sync {i}").data == f"sync {i}".encode()  # one relay per turn
            if Codes.codes:
                break
        wait_for(lambda: Codes.codes, timeout=20)
        assert Codes.codes == [1008]
        assert i < 12, "closed near max_buffered, not after 48 MiB"
        assert conn.wbuf == [] and conn.wsize == 0
        assert driver.echo("driver unaffected").data == b"driver unaffected"
        driver.close()
    finally:
        slow.close()
        server.stop(timeout=1)


def test_messages_larger_than_max_buffered_reach_a_peer_that_reads() -> None:
    """The cap bounds what piles up for a peer that does not keep up, not one message: 24 MiB
    sent from a callback, then from another thread, with max_buffered 8 MiB."""

    class Big(Codes):
        def received_message(self, message: Any) -> None:
            if message.data == b"big":
                self.send(b"b" * (24 << 20), binary=True)
            else:
                super().received_message(message)

    Codes.instances, Codes.codes = [], []
    reactor = Reactor(high_water=1 << 20, low_water=256 << 10, max_buffered=8 << 20)
    server = WebSocketServer("127.0.0.1", 0, Big, manager=reactor, max_message_size=None)
    server.start()
    client = Client(server.port, timeout=30)
    try:
        wait_for(lambda: len(Codes.instances) == 1)
        client.send("big")
        time.sleep(0.5)  # the reader is late: the message waits in the buffer meanwhile
        assert len(client.recv(timeout=30).data) == 24 << 20
        sender = threading.Thread(target=Codes.instances[0].send, args=(b"t" * (24 << 20), True))
        sender.start()
        time.sleep(0.5)
        assert len(client.recv(timeout=30).data) == 24 << 20
        sender.join(10)
        assert Codes.codes == []
        assert client.echo("after").data == b"after"
    finally:
        client.close()
        server.stop(timeout=1)


@contextmanager
def slow_connection() -> Iterator[tuple[Reactor, Connection, socket.socket]]:
    """A server, its connection to a peer that does not read, and that peer's socket. The
    connection's send buffer is 4 KiB, as over a slow path: the kernel holds little of its
    output, the reactor the rest."""
    Codes.instances, Codes.codes = [], []
    reactor = Reactor()
    server = WebSocketServer("127.0.0.1", 0, Codes, manager=reactor)
    server.start()
    slow = raw_upgraded(server.port, 4096)
    try:
        wait_for(lambda: len(Codes.instances) == 1)
        conn = reactor._connections[Codes.instances[0]]
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        yield reactor, conn, slow
    finally:
        slow.close()
        server.stop(timeout=1)


def test_a_ping_flood_to_a_non_reader_is_bounded_as_memory() -> None:
    """17 MB of pings from a peer that never reads its pongs: the pongs it is owed stay within
    the high-water mark of memory, not millions of 2-byte buffers."""
    with slow_connection() as (reactor, conn, slow):
        ping = build_frame(OPCODE_PING, b"", masked=True)
        block = ping * 10_000
        slow.setblocking(False)
        sent = 0
        stalled_since = time.monotonic()
        deadline = time.monotonic() + 30
        peak = 0
        while sent < 17_000_000 and time.monotonic() < deadline:
            try:
                n = slow.send(block)
            except BlockingIOError:
                if time.monotonic() - stalled_since > 2.0:
                    break  # the server stopped reading
                time.sleep(0.01)
                continue
            sent += n
            if n < len(block):
                block = block[n:] + ping * (n // len(ping))  # keep frames whole
            stalled_since = time.monotonic()
            peak = max(peak, len(conn.wbuf))
        time.sleep(0.5)
        peak = max(peak, len(conn.wbuf))
        held = conn.wsize + 64 * len(conn.wbuf)
        # The pings of one read are answered in one write (the protocol coalesces them), so the
        # flood costs a buffer per read at most, and never more than the high-water mark.
        assert held <= reactor.high_water + (4 << 20), (held, len(conn.wbuf))
        assert peak < 150_000, f"{peak} pong buffers held"


def test_many_small_buffers_count_as_memory() -> None:
    """100,000 two-byte writes queued for a peer that does not read hold 6.6 MB, not 200 KB:
    counted with their per-buffer overhead, they pause reading at the high-water mark."""
    with slow_connection() as (reactor, conn, _):

        def queue_small_writes() -> None:
            for _ in range(100_000):
                conn.write(b"\x8a\x00")  # an empty pong each

        reactor.call_soon_threadsafe(queue_small_writes)
        wait_for(lambda: not conn.dirty and len(conn.wbuf) > 1)
        assert conn.wsize < reactor.high_water, "in bytes alone it is under the high-water mark"
        wait_for(lambda: conn.paused)  # reading paused: counted as memory it is over


# ------------------------------------- sockets closed behind the reactor's back (item 14)


class Tracked(EchoWebSocket):
    instances: list[Tracked] = []

    def opened(self) -> None:
        self.codes: list[int] = []
        Tracked.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.codes.append(code)


def _victims_then_fresh_clients(port: int, reactor: Reactor) -> None:
    """The issue's scenario: a thread closes 20 live websockets' sockets; 30 fresh clients, whose
    sockets reuse those file descriptor numbers, must all be served, and the 20 be finished."""
    victims_clients = [Client(port) for _ in range(20)]
    for c in victims_clients:
        assert c.echo("v").data == b"v"
    wait_for(lambda: len(Tracked.instances) == 20)
    victims = list(Tracked.instances)
    closer = threading.Thread(target=lambda: [ws.sock.close() for ws in victims if ws.sock])
    closer.start()
    closer.join()
    fresh = []
    try:
        for i in range(30):
            client = Client(port, timeout=5)  # the 101 must come
            fresh.append(client)
            assert client.echo(f"fresh {i}").data == f"fresh {i}".encode()
        for i, client in enumerate(fresh):
            assert client.echo(f"again {i}").data == f"again {i}".encode()
        wait_for(lambda: all(ws.codes for ws in victims), timeout=10)
        assert [ws.codes for ws in victims] == [[1006]] * 20
        assert all(not ws.codes for ws in Tracked.instances[20:])
        assert len(reactor) == 30
    finally:
        for c in fresh + victims_clients:
            c.sock.close()


def test_sockets_closed_behind_the_reactors_back_standalone() -> None:
    Tracked.instances = []
    reactor = Reactor()
    server = WebSocketServer("127.0.0.1", 0, Tracked, manager=reactor)
    server.start()
    try:
        _victims_then_fresh_clients(server.port, reactor)
    finally:
        server.stop(timeout=1)


def test_sockets_closed_behind_the_reactors_back_wsgiref() -> None:
    from wsgiref.simple_server import make_server

    from wsloop.servers.wsgirefserver import WebSocketWSGIRequestHandler, WSGIServer
    from wsloop.servers.wsgiutils import WebSocketWSGIApplication

    class Quiet(WebSocketWSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    Tracked.instances = []
    server = make_server(
        "127.0.0.1",
        0,
        server_class=WSGIServer,
        handler_class=Quiet,
        app=WebSocketWSGIApplication(handler_cls=Tracked),
    )
    reactor = Reactor()
    server.initialize_websockets_manager(reactor)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        _victims_then_fresh_clients(server.server_port, reactor)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_a_socket_closed_behind_the_reactors_back_is_finished_without_fd_reuse() -> None:
    """No new socket takes its number: the periodic look finds it (within about a second)."""
    Tracked.instances = []
    reactor = Reactor()
    server = WebSocketServer("127.0.0.1", 0, Tracked, manager=reactor)
    server.start()
    client = Client(server.port)
    try:
        wait_for(lambda: Tracked.instances)
        victim = Tracked.instances[0]
        assert victim.sock is not None
        threading.Thread(target=victim.sock.close).start()
        wait_for(lambda: victim.codes, timeout=5)
        assert victim.codes == [1006]
        assert len(reactor) == 0
    finally:
        client.sock.close()
        server.stop(timeout=1)


def test_threaded_manager_refuses_with_1001_while_stopping() -> None:
    """The threaded poller, once stopped: a websocket handed over is refused as the reactor
    refuses it (before: its socket closed, closed() never called)."""
    manager = ThreadedManager()
    manager.stop(0)
    server_side, client_side = socket.socketpair()
    ws = Recorder(server_side)
    try:
        manager.add(ws)
        assert ws.codes == [1001]
        assert not ws.was_opened
        assert server_side.fileno() == -1
        assert len(manager) == 0
    finally:
        client_side.close()
