"""The reactor's event loop on each poller it can run on: ``select.epoll`` driven directly (the
default where it exists) and a ``selectors`` selector (given explicitly, or where epoll is
missing), over real loopback sockets: echo, many connections, the registrations a connection
changes and drops, sockets closed behind the reactor's back, and a read's output sent before the
next connection of the same turn is served."""

from __future__ import annotations

import os
import select
import selectors
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.support.frames import TEXT, frame, parse_frames
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.messaging import Message
from wsloop.poller import Reactor
from wsloop.poller.reactor import EVENT_READ, EVENT_WRITE
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket

HAS_EPOLL = hasattr(select, "epoll")

# The selectors the fallback path is checked on (those this system has), by name; "epoll" is the
# default: no selector given, epoll driven directly.
SELECTORS: dict[str, Callable[[], selectors.BaseSelector]] = {"select": selectors.SelectSelector}
if hasattr(selectors, "PollSelector"):
    SELECTORS["poll"] = selectors.PollSelector
if hasattr(selectors, "EpollSelector"):
    SELECTORS["epoll-selector"] = selectors.EpollSelector
if hasattr(selectors, "KqueueSelector"):
    SELECTORS["kqueue"] = selectors.KqueueSelector
POLLERS = (["epoll"] if HAS_EPOLL else []) + list(SELECTORS)


def make_reactor(poller: str) -> Reactor:
    return Reactor() if poller == "epoll" else Reactor(selector=SELECTORS[poller]())


class Tracked(EchoWebSocket):
    """Echoes; remembers every open instance and the codes it was closed with."""

    instances: list[Tracked] = []

    def opened(self) -> None:
        self.codes: list[int] = []
        Tracked.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.codes.append(code)


@pytest.fixture(params=POLLERS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Reactor, WebSocketServer]]:
    """A standalone server of Tracked websockets on a reactor over each poller."""
    Tracked.instances = []
    reactor = make_reactor(request.param)
    server = WebSocketServer("127.0.0.1", 0, Tracked, manager=reactor)
    server.start()
    yield reactor, server
    server.stop(timeout=2)


def registered_events(reactor: Reactor, sock: socket.socket) -> int | None:
    """What the reactor watches ``sock`` for (None: not registered), read on its thread."""
    result: list[int | None] = []
    done = threading.Event()

    def look() -> None:
        entry = reactor._registry.files.get(sock.fileno())
        result.append(entry[1] if entry is not None and entry[0] is sock else None)
        done.set()

    reactor.call_soon_threadsafe(look)
    assert done.wait(5)
    return result[0]


def test_the_default_drives_epoll_and_a_given_selector_is_used() -> None:
    default = Reactor()
    try:
        if HAS_EPOLL:
            assert default._selector is None, "no selectors selector between the loop and epoll"
            assert isinstance(default._registry.epoll, select.epoll)
        else:
            assert isinstance(default._selector, selectors.BaseSelector)
    finally:
        default.stop()
    given = selectors.SelectSelector()
    reactor = Reactor(selector=given)
    try:
        assert reactor._selector is given and reactor._registry.epoll is None
    finally:
        reactor.stop()


@pytest.mark.skipif(not HAS_EPOLL, reason="no select.epoll here")
def test_without_epoll_the_default_selector_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(select, "epoll")
    reactor = Reactor()
    try:
        assert isinstance(reactor._selector, selectors.BaseSelector)
        assert reactor._registry.epoll is None
    finally:
        reactor.stop()


def test_echo(served: tuple[Reactor, WebSocketServer]) -> None:
    _, server = served
    with Client(server.port) as client:
        for i in range(20):
            assert client.echo(f"message {i}").data == f"message {i}".encode()
        client.send(b"\x00\xff" * 40_000, binary=True)  # more than one read and one send
        assert client.recv().data == b"\x00\xff" * 40_000


def test_many_connections_one_message_each(served: tuple[Reactor, WebSocketServer]) -> None:
    reactor, server = served
    clients = [Client(server.port) for _ in range(150)]
    try:
        for round_ in range(3):
            for i, client in enumerate(clients):
                client.send(f"{round_}:{i}")
            for i, client in enumerate(clients):
                assert client.recv().data == f"{round_}:{i}".encode()
        assert len(reactor) == 150
    finally:
        for client in clients:
            client.sock.close()


def test_write_interest_is_added_then_dropped_and_a_closed_connection_unregistered(
    served: tuple[Reactor, WebSocketServer],
) -> None:
    """A peer that does not read: the connection is watched for writing (modify; reading paused
    too, past the high-water mark); once the peer reads everything, for reading only again; once
    closed, its socket is not watched."""
    reactor, server = served
    client = Client(server.port)
    wait_for(lambda: Tracked.instances)
    ws = Tracked.instances[0]
    sock = ws.sock
    assert sock is not None
    assert registered_events(reactor, sock) == EVENT_READ
    big = b"x" * 32 * 1024 * 1024
    ws.send(big, binary=True)  # more than the kernel's buffers hold: the rest waits for writable
    wait_for(lambda: (registered_events(reactor, sock) or 0) & EVENT_WRITE)  # reading paused too
    assert client.recv(timeout=20).data == big
    wait_for(lambda: registered_events(reactor, sock) == EVENT_READ)
    assert client.echo("still served").data == b"still served"
    client.close()
    wait_for(lambda: ws.codes)
    assert ws.codes == [1000]
    wait_for(lambda: len(reactor) == 0)
    fds = [fd for fd, (s, _) in list(reactor._registry.files.items()) if s is sock]
    assert fds == [], "a closed connection's socket stays registered"


def test_sockets_closed_behind_the_reactors_back(served: tuple[Reactor, WebSocketServer]) -> None:
    """One closed with ``socket.close()`` (its number -1: found by the periodic look), one closed
    under the socket object by ``dup2()``, its number another socket's now, which is then
    served: both finished with 1006 (the new socket untouched); the new connections are served."""
    reactor, server = served
    first, second = Client(server.port), Client(server.port)
    wait_for(lambda: len(Tracked.instances) == 2)
    victims = list(Tracked.instances)
    socks = [ws.sock for ws in victims]
    assert socks[0] is not None and socks[1] is not None
    fd = socks[1].fileno()
    pair, theirs = socket.socketpair()
    os.dup2(pair.fileno(), fd)  # closes the victim's socket; its number is another's now
    ours = socket.socket(fileno=fd)
    pair.close()
    threading.Thread(target=socks[0].close).start()
    fresh = [Client(server.port) for _ in range(3)]
    try:
        reactor.add(Tracked(ours))
        wait_for(lambda: any(ws.sock is ours for ws in Tracked.instances))  # stale one dropped
        theirs.sendall(frame(TEXT, b"on a reused number", key=b"abcd"))
        theirs.settimeout(5)
        assert [f.payload for f in parse_frames(theirs.recv(100))] == [b"on a reused number"]
        for i, client in enumerate(fresh):
            assert client.echo(f"fresh {i}").data == f"fresh {i}".encode()
        wait_for(lambda: all(ws.codes for ws in victims), timeout=10)
        assert [ws.codes for ws in victims] == [[1006], [1006]]
        for i, client in enumerate(fresh):
            assert client.echo(f"again {i}").data == f"again {i}".encode()
        wait_for(lambda: len(reactor) == 4)  # the 3 fresh, ours
        theirs.sendall(frame(TEXT, b"still", key=b"abcd"))
        assert [f.payload for f in parse_frames(theirs.recv(100))] == [b"still"]
    finally:
        for client in [first, second, *fresh]:
            client.sock.close()
        theirs.close()


class Peeker(WebSocket):
    """Echoes, then records whether the other test client already has its echo waiting."""

    peers: dict[Peeker, socket.socket] = {}
    seen: list[bool] = []

    def received_message(self, message: Message) -> None:
        self.send(message.data)
        other = next(sock for ws, sock in Peeker.peers.items() if ws is not self)
        try:
            Peeker.seen.append(bool(other.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)))
        except BlockingIOError:
            Peeker.seen.append(False)


@pytest.mark.parametrize("poller", POLLERS)
def test_a_reads_output_is_sent_before_the_next_read_of_the_turn(poller: str) -> None:
    """Two connections readable in the same loop turn: the echo of the first is on its way
    before the second's callback runs (not held until the end of the turn)."""
    reactor = make_reactor(poller)
    reactor.start()
    pairs = [socket.socketpair() for _ in range(2)]  # delivery is synchronous on socketpairs
    Peeker.peers = {}
    Peeker.seen = []
    try:
        for server_side, client_side in pairs:
            ws = Peeker(server_side)
            Peeker.peers[ws] = client_side
            reactor.add(ws)
        wait_for(lambda: len(reactor) == 2)
        hold = threading.Event()
        held = threading.Event()

        def block() -> None:
            held.set()
            hold.wait(10)

        reactor.call_soon_threadsafe(block)  # both frames arrive while the loop is held
        assert held.wait(5)
        key = b"\x01\x02\x03\x04"
        for _, client_side in pairs:
            client_side.sendall(frame(TEXT, b"hello", key=key))
        hold.set()
        wait_for(lambda: len(Peeker.seen) == 2)
        assert Peeker.seen.count(True) == 1, Peeker.seen  # the second saw the first's echo
        for _, client_side in pairs:
            client_side.settimeout(5)
            assert [f.payload for f in parse_frames(client_side.recv(100))] == [b"hello"]
    finally:
        reactor.stop(timeout=1)
        for server_side, client_side in pairs:
            server_side.close()
            client_side.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_a_socket_closed_behind_its_back_does_not_stop_the_loop(poller: str) -> None:
    """Its number left free (select() then fails with EBADF on every call): it is dropped, the
    other connection is still served."""
    Tracked.instances = []
    reactor = make_reactor(poller)
    reactor.start()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        for server_side, _ in pairs:
            reactor.add(Tracked(server_side))
        wait_for(lambda: len(Tracked.instances) == 2)
        victim, survivor = Tracked.instances
        assert victim.sock is not None
        closer = threading.Thread(target=victim.sock.close)
        closer.start()
        closer.join()
        client_side = next(c for s, c in pairs if s is survivor.sock)
        client_side.settimeout(5)
        for i in range(3):  # wakes the loop at once: its next select() sees the closed number
            client_side.sendall(frame(TEXT, b"still served %d" % i, key=b"wxyz"))
            assert [f.payload for f in parse_frames(client_side.recv(100))] == [b"still served %d" % i]
        wait_for(lambda: victim.codes, timeout=10)
        assert victim.codes == [1006]
        assert reactor.running
    finally:
        reactor.stop(timeout=1)
        for server_side, client_side in pairs:
            server_side.close()
            client_side.close()
