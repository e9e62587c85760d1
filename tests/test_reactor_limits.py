"""Reactor bounds against hostile peers and careless callers (issue 13): output caps, stale
sockets, timers, adds after stop."""

from __future__ import annotations

import time
from collections.abc import Callable

from wsloop.poller import Reactor
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket

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
