"""Driver behaviour over real sockets: threads, backpressure, failures, timers, shutdown."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from tests.support.sockets import open_fds
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.exc import StreamClosed
from wsloop.messaging import Message, PongControlMessage
from wsloop.poller import Reactor
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket


class Registry(EchoWebSocket):
    """Echoes, and remembers every open instance so tests can act on them."""

    instances: list[Registry] = []
    closed_codes: list[int] = []

    def opened(self) -> None:
        Registry.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Registry.closed_codes.append(code)


@pytest.fixture
def registry() -> type[Registry]:
    Registry.instances = []
    Registry.closed_codes = []
    return Registry


def test_send_from_eight_threads_never_interleaves_frames(make_server, registry) -> None:  # type: ignore[no-untyped-def]
    server = make_server(handler_cls=registry)
    client = Client(server.port)
    wait_for(lambda: registry.instances)
    ws = registry.instances[0]
    per_thread = 150
    sizes = [10, 200, 70_000]  # small, 16-bit length, and big enough to need several writes

    def sender(tid: int) -> None:
        for seq in range(per_thread):
            header = b"%d:%d:" % (tid, seq)
            ws.send(header + bytes([65 + tid]) * sizes[seq % 3], binary=True)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    seen: dict[int, list[int]] = {t: [] for t in range(8)}
    for _ in range(8 * per_thread):
        data = client.recv(timeout=20).data
        tid_s, seq_s, body = data.split(b":", 2)
        tid, seq = int(tid_s), int(seq_s)
        assert body == bytes([65 + tid]) * sizes[seq % 3], "a frame was corrupted or interleaved"
        seen[tid].append(seq)
    for t in threads:
        t.join()
    assert all(seqs == list(range(per_thread)) for seqs in seen.values()), "per-thread order kept"
    client.close()


class Raising(EchoWebSocket):
    def received_message(self, message: Message) -> None:
        if message.data == b"boom":
            raise RuntimeError("handler bug (expected by the test)")
        super().received_message(message)


def test_handler_that_raises_gets_1011_and_others_carry_on(make_server, caplog) -> None:  # type: ignore[no-untyped-def]
    server = make_server(handler_cls=Raising)
    with Client(server.port) as good, Client(server.port) as bad:
        assert good.echo("hi").data == b"hi"
        bad.send("boom")
        assert bad.recv_close().code == 1011
        assert good.echo("still fine").data == b"still fine"
    assert any("handler bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


class OpenRaises(EchoWebSocket):
    def opened(self) -> None:
        raise ValueError("opened failed (expected by the test)")


def test_opened_that_raises_gets_1011(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(handler_cls=OpenRaises)
    with Client(server.port) as client:
        assert client.recv_close().code == 1011


class Flooder(EchoWebSocket):
    """On "flood", sends 64 KiB messages; from the reactor thread or from a thread."""

    instances: list[Flooder] = []
    chunk = b"z" * 65536

    def opened(self) -> None:
        Flooder.instances.append(self)

    def received_message(self, message: Message) -> None:
        if message.data == b"flood-here":
            for _ in range(200):  # 12.5 MiB from the reactor thread: buffered
                self.send(self.chunk, binary=True)
        elif message.data == b"flood-thread":
            threading.Thread(target=self._flood, daemon=True).start()
        else:
            super().received_message(message)

    def _flood(self) -> None:
        self.sent_by_thread = 0
        try:
            for _ in range(2000):  # 125 MiB if nothing held it back
                self.send(self.chunk, binary=True)
                self.sent_by_thread += 1
        except StreamClosed:
            pass


def test_peer_that_stops_reading_is_bounded_and_others_keep_echoing() -> None:
    Flooder.instances = []
    high, low = 1 << 20, 256 << 10
    reactor = Reactor(high_water=high, low_water=low)
    server = WebSocketServer("127.0.0.1", 0, Flooder, manager=reactor)
    server.start()
    try:
        slow = Client(server.port)
        good = Client(server.port)
        wait_for(lambda: len(Flooder.instances) == 2)
        flooder = Flooder.instances[0]
        slow.send("flood-thread")  # and then never read
        wait_for(lambda: getattr(flooder, "sent_by_thread", 0) > 0)
        time.sleep(1.0)
        conn = reactor._connections[flooder]
        stalled_at = flooder.sent_by_thread
        assert conn.wsize <= high + 2 * len(Flooder.chunk), "output buffer stays bounded"
        assert stalled_at < 200, "the sending thread waits instead of buffering 125 MiB"
        for i in range(20):
            assert good.echo(f"ping {i}").data == f"ping {i}".encode()
        time.sleep(0.3)
        assert flooder.sent_by_thread == stalled_at, "still blocked while the peer does not read"
        # The peer reads again: the sender makes progress.
        for _ in range(40):
            slow.recv()
        wait_for(lambda: flooder.sent_by_thread > stalled_at)
        slow.sock.close()
        good.close()
    finally:
        server.stop(timeout=1)


def test_reactor_thread_sends_are_buffered_and_reading_paused() -> None:
    Flooder.instances = []
    reactor = Reactor(high_water=1 << 20, low_water=256 << 10)
    server = WebSocketServer("127.0.0.1", 0, Flooder, manager=reactor)
    server.start()
    try:
        slow = Client(server.port)
        good = Client(server.port)
        wait_for(lambda: len(Flooder.instances) == 2)
        slow.send("flood-here")
        conn = reactor._connections[Flooder.instances[0]]
        wait_for(lambda: conn.paused)
        assert good.echo("unaffected").data == b"unaffected"
        total = 0
        while total < 200 * 65536:
            total += len(slow.recv().data)
        assert total == 200 * 65536, "every buffered byte arrives once the peer reads"
        wait_for(lambda: not conn.paused)
        assert slow.echo("after").data == b"after"
    finally:
        server.stop(timeout=1)


def test_stop_closes_all_with_1001_and_releases_every_fd(poller: str, registry) -> None:  # type: ignore[no-untyped-def]
    before = open_fds()
    server = WebSocketServer("127.0.0.1", 0, registry, poller=poller)
    server.start()
    clients = [Client(server.port) for _ in range(20)]
    for c in clients:
        assert c.echo("x").data == b"x"
    wait_for(lambda: len(registry.instances) == 20)
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 5})
    stopper.start()
    for c in clients:
        assert c.recv_close().code == 1001
        c.flush()
    stopper.join(10)
    assert not stopper.is_alive()
    for c in clients:
        c.sock.close()
    wait_for(lambda: len(registry.closed_codes) == 20)
    assert set(registry.closed_codes) == {1001}
    wait_for(lambda: open_fds() <= before, timeout=5)
    assert open_fds() <= before


def test_stop_drops_peers_that_never_answer_the_close(poller: str) -> None:
    before = open_fds()
    server = WebSocketServer("127.0.0.1", 0, EchoWebSocket, poller=poller)
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    for s in silent:
        s.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        s.recv(4096)
    start = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - start < 3
    for s in silent:
        s.close()
    wait_for(lambda: open_fds() <= before, timeout=5)


class Closer(EchoWebSocket):
    close_timeout = 0.3

    def received_message(self, message: Message) -> None:
        self.close(1000, "bye")


def test_close_timeout_drops_a_peer_that_never_answers(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(handler_cls=Closer, close_timeout=0.3)
    with Client(server.port) as client:
        client.send("close please")
        message = client.recv()
        assert message.opcode == 8
        client.stream.received.clear()
        start = time.monotonic()
        # Do not answer the close: the server drops the connection after its close timeout.
        client.stream = type(client.stream)(client=True)
        assert client.wait_eof(timeout=5)
        assert time.monotonic() - start < 3


class Pinged(EchoWebSocket):
    pongs: list[bytes] = []
    codes: list[int] = []

    def ponged(self, pong: PongControlMessage) -> None:
        Pinged.pongs.append(pong.data)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Pinged.codes.append(code)


def test_heartbeat_pings_and_drops_a_silent_peer(make_server) -> None:  # type: ignore[no-untyped-def]
    Pinged.pongs, Pinged.codes = [], []
    server = make_server(handler_cls=Pinged, heartbeat_freq=0.2, close_timeout=0.5)
    with Client(server.port) as live:
        deadline = time.monotonic() + 15  # a bound for a loaded machine, not a speed check
        while len(Pinged.pongs) < 2 and time.monotonic() < deadline:
            live.echo("tick")  # the client's protocol answers each ping while it reads
            time.sleep(0.15)
        assert len(Pinged.pongs) >= 2
    silent = socket.create_connection(("127.0.0.1", server.port))
    silent.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    wait_for(lambda: 1011 in Pinged.codes, timeout=5)
    silent.close()


def test_ws4py_blocking_run_in_a_thread() -> None:
    """ws4py's style: a WebSocket over an already-upgraded socket, driven by run()."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()
    codes: list[int] = []

    class Echo(EchoWebSocket):
        def closed(self, code: int, reason: bytes | None = None) -> None:
            codes.append(code)
            done.set()

    def serve() -> None:
        from wsloop.handshake import accept, parse_request

        sock, _ = listener.accept()
        data = b""
        while (parsed := parse_request(data)) is None:
            data += sock.recv(4096)
        response, *_ = accept(parsed[0])
        sock.sendall(response)
        Echo(sock).run(data[parsed[1] :])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with Client(port) as client:
        assert client.echo("blocking").data == b"blocking"
        client.stream.close(1000)
        client.flush()
        assert client.recv_close().code == 1000
    assert done.wait(5) and codes == [1000]
    listener.close()


def test_broadcast_reaches_every_open_websocket(poller: str, registry) -> None:  # type: ignore[no-untyped-def]
    server = WebSocketServer("127.0.0.1", 0, registry, poller=poller)
    server.start()
    try:
        clients = [Client(server.port) for _ in range(30)]
        wait_for(lambda: len(registry.instances) == 30)
        assert len(server.manager) == 30
        server.manager.broadcast("to all")
        server.manager.broadcast(b"\x00\x01", binary=True)
        for c in clients:
            assert c.recv().data == b"to all"
            message = c.recv()
            assert message.is_binary and message.data == b"\x00\x01"
            c.close()
    finally:
        server.stop(timeout=1)


def test_send_after_close_raises_like_ws4py(make_server, registry) -> None:  # type: ignore[no-untyped-def]
    server = make_server(handler_cls=registry)
    client = Client(server.port)
    wait_for(lambda: registry.instances)
    ws: WebSocket = registry.instances[0]
    client.close()
    wait_for(lambda: ws.terminated)
    with pytest.raises(StreamClosed):
        ws.send("too late")


def test_ws4py_once_loop_without_a_driver() -> None:
    """ws4py's manual style: ``while ws.once(): pass`` over an upgraded socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: list[object] = []

    class Echo(EchoWebSocket):
        def closed(self, code: int, reason: bytes | None = None) -> None:
            result.append(code)

    def serve() -> None:
        from wsloop.handshake import accept, parse_request

        sock, _ = listener.accept()
        data = b""
        while (parsed := parse_request(data)) is None:
            data += sock.recv(4096)
        sock.sendall(accept(parsed[0])[0])
        ws = Echo(sock)
        turns = 0
        while ws.once():
            turns += 1
        result.append(turns)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with Client(port) as client:
        assert client.echo("one").data == b"one"
        assert client.echo(b"two").data == b"two"
        client.stream.close(1000)
        client.flush()
        assert client.recv_close().code == 1000
    thread.join(5)
    assert result[0] == 1000 and isinstance(result[1], int) and result[1] >= 2
    listener.close()


def test_broadcast_compresses_for_connections_that_negotiated_it(make_server, registry) -> None:  # type: ignore[no-untyped-def]
    """A connection with permessage-deflate gets the broadcast compressed, others plain."""
    import socket as socket_module

    from wsloop.deflate import client_accept, client_offer
    from wsloop.handshake import client_request, new_key, parse_response
    from wsloop.protocol import Protocol

    server = make_server(handler_cls=registry)
    plain = Client(server.port)
    sock = socket_module.create_connection(("127.0.0.1", server.port), timeout=5)
    key = new_key()
    sock.sendall(client_request("127.0.0.1", "/", key, extensions=[client_offer()]))
    head = b""
    while (parsed := parse_response(head)) is None:
        head += sock.recv(4096)
    stream = Protocol(client=True, deflate=client_accept(parsed[0].headers["sec-websocket-extensions"]))
    wait_for(lambda: len(registry.instances) == 2)
    message = "broadcast " * 200
    server.manager.broadcast(message)
    assert plain.recv().data == message.encode()
    data = head[parsed[1] :]
    while not stream.received:
        if data:
            assert data[0] & 0x40, "the frame to the compressing connection has RSV1 set"
            stream.feed(data)
            data = b""
        else:
            data = sock.recv(65536)
    assert stream.received[0].data == message.encode()
    sock.close()
    plain.close()


def test_a_cancelled_timer_lets_go_of_its_callback() -> None:
    import gc
    import weakref

    class Owner:
        def fire(self) -> None:
            raise AssertionError("cancelled")

    reactor = Reactor()
    try:
        owner = Owner()
        ref = weakref.ref(owner)
        handle = reactor.call_later(60, owner.fire)
        handle.cancel()
        del owner
        gc.collect()
        assert ref() is None  # freed though the handle is still in the timer heap
        assert handle.cancelled
    finally:
        reactor.stop(0)


_MALLOC_PROBE = """
import ctypes, sys
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
from wsloop.poller import Reactor, tune_malloc
reactor = Reactor()
reactor.start()
reactor.stop(timeout=0)
if sys.argv[1] == "tune":
    tune_malloc()
before = libc.mallinfo2().hblks
libc.malloc(1 << 20)
print("mmap" if libc.mallinfo2().hblks > before else "heap")
"""


def test_a_reactor_leaves_malloc_alone_and_tune_malloc_is_the_programs_choice() -> None:
    """Starting a reactor changes nothing process-wide: a fresh process's 1 MiB malloc() is still
    served by mmap (glibc's default) after a reactor ran; after tune_malloc() it comes from the
    heap."""
    import ctypes
    import os
    import platform
    import subprocess

    if platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("needs glibc 2.33+ (mallinfo2)")
    env = {**os.environ, "WSLOOP_MALLOC_TUNING": "1"}

    def probe(mode: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", _MALLOC_PROBE, mode], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert probe("reactor only") == "mmap"
    assert probe("tune") == "heap"


def test_tune_malloc_on_glibc_and_its_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from wsloop.poller import tune_malloc

    if platform.libc_ver()[0] != "glibc":
        assert tune_malloc() is False
    else:
        assert tune_malloc() is True
    monkeypatch.setenv("WSLOOP_MALLOC_TUNING", "0")
    assert tune_malloc() is False


def test_len_counts_websockets_handed_over_from_other_threads_once() -> None:
    """``len(reactor)`` (what ``max_connections`` is checked against) counts a websocket another
    thread hands over from ``add()`` on, and never twice nor not at all while the loop moves it
    from "handed over" to "served": while websockets are only added, it never goes down."""
    reactor = Reactor()
    reactor.start()
    total = 300
    pairs = [socket.socketpair() for _ in range(total)]
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(len(reactor))

    def hand_over(half: list[tuple[socket.socket, socket.socket]]) -> None:
        for server_side, _ in half:
            reactor.add(WebSocket(server_side))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: any window shows
    try:
        watcher = threading.Thread(target=watch)
        watcher.start()
        adders = [threading.Thread(target=hand_over, args=(pairs[i::2],)) for i in range(2)]
        for thread in adders:
            thread.start()
        for thread in adders:
            thread.join()
        deadline = time.monotonic() + 10
        while len(reactor.websockets) < total and time.monotonic() < deadline:
            time.sleep(0.01)
        done.set()
        watcher.join()
    finally:
        sys.setswitchinterval(switch)
    try:
        assert len(reactor.websockets) == len(reactor) == total
        drops = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b < a]
        assert not drops, drops[:5]
        assert max(seen) <= total
    finally:
        reactor.stop(0.1)
        for _, client_side in pairs:
            client_side.close()
