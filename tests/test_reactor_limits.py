"""Reactor bounds against hostile peers and careless callers (issue 13): output caps, stale
sockets, timers, adds after stop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from wsloop.poller import Reactor
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket

from .wsclient import Client


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


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

    def closed(self, code: int, reason: str | None = None) -> None:
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
