"""``stats()`` of each driver, in-process, with real sockets and real clients: the reactor and the
threaded manager (through the standalone server), the asyncio driver (through the asyncio
server); a slow reader dropped (``slow_consumers_dropped``, buffered output), the loop lag, and
the snapshot's dict form and sums."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.metrics_load import Guarded, open_idle, run_load
from tests.support.waiting import eventually
from tests.support.wsclient import upgrade
from wsloop.poller import Reactor
from wsloop.poller.asyncio import SHARED
from wsloop.servers import asyncioserver
from wsloop.servers.standalone import WebSocketServer
from wsloop.stats import Counters, Stats, combine, live_stats
from wsloop.websocket import WebSocket


@pytest.mark.parametrize("poller", ["selectors", "threaded"])
def test_standalone_drivers_count_what_the_clients_did(poller: str) -> None:
    server = WebSocketServer("127.0.0.1", 0, Guarded, poller=poller)
    server.start()
    try:
        driver = server.manager
        assert driver.stats() == Stats(loop_lag=driver.stats().loop_lag)  # nothing yet
        held = open_idle(server.port, 2)
        assert eventually(lambda: driver.stats().connections == 2, 15.0)
        expected = run_load(server.port, clients=5, messages=100, size=40, code=4000)
        for ws in held:
            ws.close()
        assert eventually(
            lambda: driver.stats().closes.get(1000) == 2 and driver.stats().connections == 0, 15.0
        )
        stats = driver.stats()
        assert stats.messages_in == stats.messages_out == expected.messages
        assert stats.bytes_in == expected.bytes_in + 2 * 8
        assert stats.bytes_out == expected.bytes_out + 2 * 4
        assert dict(stats.closes) == {4000: 5, 1000: 2}
        assert dict(stats.handshakes_refused) == expected.refused
        assert stats.pending_handshakes == 0
        assert stats.buffered_bytes == stats.buffered_bytes_max == 0
        assert stats.slow_consumers_dropped == 0
    finally:
        server.stop(timeout=2)


def test_pending_handshakes_count_requests_not_complete() -> None:
    server = WebSocketServer("127.0.0.1", 0, Guarded)
    server.start()
    socks = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(upgrade()[:20])  # the start of a request
            socks.append(sock)
        assert eventually(lambda: server.manager.stats().pending_handshakes == 3, 15.0), (
            server.manager.stats()
        )
        for sock in socks:
            sock.close()
        assert eventually(lambda: server.manager.stats().pending_handshakes == 0, 15.0), (
            server.manager.stats()
        )
    finally:
        for sock in socks:
            sock.close()
        server.stop(timeout=2)


@pytest.fixture
def asyncio_server() -> Iterator[int]:
    stop = threading.Event()
    ready = threading.Event()
    url: list[str] = []

    def on_ready(u: str) -> None:
        url.append(u)
        ready.set()

    thread = threading.Thread(
        target=asyncioserver.serve,
        args=("127.0.0.1", 0, Guarded),
        kwargs={"ready": on_ready, "stop": stop},
        daemon=True,
    )
    thread.start()
    assert ready.wait(10)
    yield int(url[0].rsplit(":", 1)[1].strip("/"))
    stop.set()
    thread.join(10)


def test_asyncio_driver_counts_what_the_clients_did(asyncio_server: int) -> None:
    before = SHARED.stats()
    held = open_idle(asyncio_server, 2)
    assert eventually(lambda: SHARED.stats().connections == before.connections + 2, 15.0)
    expected = run_load(asyncio_server, clients=4, messages=100, size=30, code=4001)
    for ws in held:
        ws.close()
    assert eventually(lambda: SHARED.stats().closes.get(1000, 0) - before.closes.get(1000, 0) == 2, 15.0)
    assert eventually(lambda: SHARED.stats().connections == before.connections, 15.0)
    stats = SHARED.stats()
    assert stats.messages_in - before.messages_in == expected.messages
    assert stats.messages_out - before.messages_out == expected.messages
    assert stats.bytes_in - before.bytes_in == expected.bytes_in + 2 * 8
    assert stats.bytes_out - before.bytes_out == expected.bytes_out + 2 * 4
    assert stats.closes[4001] - before.closes.get(4001, 0) == 4
    for status, count in expected.refused.items():
        assert stats.handshakes_refused[status] - before.handshakes_refused.get(status, 0) == count


class Flooder(WebSocket):
    """On any message: sends 64 KiB every 20 ms until the connection ends."""

    def received_message(self, message: object) -> None:
        self._tick()

    def _tick(self) -> None:
        if self.terminated or self.transport is None:
            return
        self.send(b"x" * 65536, binary=True)
        self.transport.call_later(0.02, self._tick)


def test_a_slow_reader_is_buffered_then_dropped() -> None:
    reactor = Reactor(high_water=128 * 1024, low_water=64 * 1024, max_buffered=2 * 1024 * 1024)
    server = WebSocketServer("127.0.0.1", 0, Flooder, manager=reactor)
    server.start()
    try:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.port))
        client.sendall(upgrade())
        assert b" 101 " in client.recv(4096)
        client.sendall(bytes([0x81, 0x80, 0, 0, 0, 0]))  # an empty masked text frame: go
        largest = 0

        def dropped() -> bool:
            nonlocal largest
            stats = reactor.stats()
            largest = max(largest, stats.buffered_bytes_max)
            assert stats.buffered_bytes >= stats.buffered_bytes_max
            return stats.slow_consumers_dropped == 1

        assert eventually(dropped, 30), reactor.stats()
        assert largest > 128 * 1024  # seen above the high-water mark before the drop
        assert eventually(lambda: reactor.stats().closes.get(1008) == 1, 15.0)
        assert reactor.stats().buffered_bytes == 0
        client.close()
    finally:
        server.stop(timeout=2)


class Sleeper(WebSocket):
    """Blocks the loop for the seconds a message says."""

    def received_message(self, message: object) -> None:
        time.sleep(float(str(message)))


def test_loop_lag_shows_a_blocked_loop() -> None:
    server = WebSocketServer("127.0.0.1", 0, Sleeper)
    server.start()
    try:
        [ws] = open_idle(server.port, 1)
        assert server.manager.stats().loop_lag < 1.0
        ws.send("2.5")  # the reactor sleeps 2.5 s: a probe timer due then fires at least 1.5 s late
        seen = 0.0
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline and seen < 1.0:
            seen = max(seen, server.manager.stats().loop_lag)
            time.sleep(0.05)
        assert seen >= 1.0
        ws.close()
    finally:
        server.stop(timeout=2)


def test_snapshot_dict_form_and_sums() -> None:
    a = Counters()
    a.messages_in, a.bytes_out, a.slow_dropped = 3, 100, 1
    a.refuse(403)
    a.close(1000)
    a.loop_lag = 0.25
    b = Counters()
    b.messages_in = 4
    b.refuse(403)
    b.refuse(400)
    b.close(1006)
    one = a.snapshot(2, buffered=10, buffered_max=7)
    two = b.snapshot(1, buffered=30, buffered_max=30)
    assert Stats.from_dict(one.as_dict()) == one
    assert one.as_dict()["closes"] == {"1000": 1}
    total = combine([one, two])
    assert total.connections == 3
    assert total.messages_in == 7
    assert dict(total.handshakes_refused) == {403: 2, 400: 1}
    assert dict(total.closes) == {1000: 1, 1006: 1}
    assert total.buffered_bytes == 40 and total.buffered_bytes_max == 30
    assert total.loop_lag == 0.25
    with pytest.raises(AttributeError):
        one.connections = 5  # type: ignore[misc]


def test_live_stats_includes_a_new_reactor() -> None:
    mark = 10**12  # more than every other driver of this process has counted
    reactor = Reactor()
    reactor.counters.messages_in += mark
    assert live_stats().messages_in >= mark
    reactor.stop()
    del reactor
    gc.collect()
    assert live_stats().messages_in < mark  # gone with the reactor


def test_broadcast_counts_each_websocket_reached() -> None:
    server = WebSocketServer("127.0.0.1", 0, Guarded)
    server.start()
    try:
        reactor = server.manager
        assert isinstance(reactor, Reactor)
        clients = open_idle(server.port, 3)
        assert eventually(lambda: reactor.stats().connections == 3, 15.0)
        small, large = b"s" * 1000, b"L" * 200_000  # large: more than a socket takes at once
        for _ in range(10):
            reactor.broadcast(small, binary=True)
            reactor.broadcast(large, binary=True)
        for ws in clients:
            for _ in range(10):
                assert ws.recv() == small
                assert ws.recv() == large
        # Headers: 4 bytes for 1000 (16-bit length), 10 for 200,000 (64-bit length).
        sent = 3 * 10 * ((1000 + 4) + (200_000 + 10))
        assert eventually(lambda: reactor.stats().bytes_out == sent, 15.0), (reactor.stats(), sent)
        stats = reactor.stats()
        assert stats.messages_out == 3 * 20
        assert stats.buffered_bytes == 0
        for ws in clients:
            ws.close()
    finally:
        server.stop(timeout=2)
