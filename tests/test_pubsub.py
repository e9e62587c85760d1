"""Channels (``WebSocket.subscribe/unsubscribe/publish``) and broadcast across processes.

In one process with the default in-process broker, and across two server processes (two hosts'
stand-ins) joined through one real ``redis-server``, which is restarted mid-test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wsloop.messaging import CloseControlMessage, Message
from wsloop.pubsub import BROADCAST_CHANNEL, InProcessBroker, attach
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket

from .handlers import ScaleWebSocket
from .redisproc import LoggedServer, RedisServer, numsub, redis_fixture, wait_for
from .wsclient import Client

HANDLER = "tests.handlers:ScaleWebSocket"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_fixture(tmp_path)


def expect_text(client: Client, text: str) -> None:
    message = client.recv()
    assert not isinstance(message, CloseControlMessage), f"closed ({message.code}) instead of {text!r}"
    assert message.data == text.encode(), f"got {message.data!r}, expected {text!r}"


def nothing_pending(client: Client) -> None:
    """The next message is the echo of a marker: nothing else was delivered before it."""
    assert client.echo("marker").data == b"marker"


# ---------------------------------------------------------------------------- in-process


def test_channels_in_one_process() -> None:
    server = WebSocketServer("127.0.0.1", 0, ScaleWebSocket)
    server.start()
    try:
        a, b, c = (Client(server.port) for _ in range(3))
        a.send("sub:room")
        b.send("sub:room")
        nothing_pending(a)  # the subscription is made by then (same reactor, in order)
        nothing_pending(b)
        c.send("pub:room:hello")  # c did not join: it does not get it
        expect_text(a, "hello")
        expect_text(b, "hello")
        nothing_pending(c)
        a.send("pub:room:from a")  # a member gets its own message, once
        expect_text(a, "from a")
        expect_text(b, "from a")
        nothing_pending(a)
        b.send("unsub:room")
        nothing_pending(b)
        c.send("pub:room:again")
        expect_text(a, "again")
        nothing_pending(b)
        hub = server.manager.pubsub  # type: ignore[union-attr]
        assert hub is not None and hub.members("room") == 1
        a.close()
        wait_for(lambda: hub.members("room") == 0, "a closed websocket leaves its channels")
        assert hub.channels() == set()
        for client in (b, c):
            client.close()
    finally:
        server.stop(timeout=2)


def test_two_reactors_share_an_in_process_broker() -> None:
    """Broadcast and channels through an InProcessBroker shared by two servers: once each."""
    broker = InProcessBroker()
    one = WebSocketServer("127.0.0.1", 0, ScaleWebSocket, broker=broker)
    two = WebSocketServer("127.0.0.1", 0, ScaleWebSocket, broker=broker)
    one.start()
    two.start()
    try:
        x, y = Client(one.port), Client(two.port)
        x.send("broadcast:to all")
        expect_text(x, "to all")
        expect_text(y, "to all")
        x.send("sub:news")
        y.send("sub:news")
        nothing_pending(x)
        nothing_pending(y)
        y.send("pub:news:headline")
        expect_text(x, "headline")
        expect_text(y, "headline")
        nothing_pending(x)
        nothing_pending(y)
        x.close()
        y.close()
    finally:
        one.stop(timeout=2)
        two.stop(timeout=2)


def test_channel_names_are_checked() -> None:
    errors: list[BaseException] = []

    class Checker(WebSocket):
        def received_message(self, message: Message) -> None:
            for name in ("", BROADCAST_CHANNEL):
                try:
                    self.subscribe(name)
                except ValueError as exc:
                    errors.append(exc)
            self.send("checked")

    server = WebSocketServer("127.0.0.1", 0, Checker)
    server.start()
    try:
        with Client(server.port) as client:
            assert client.echo("go").data == b"checked"
        assert len(errors) == 2
    finally:
        server.stop(timeout=2)


def test_attach_replaces_a_hub_and_broadcast_stays_local_without_one() -> None:
    server = WebSocketServer("127.0.0.1", 0, ScaleWebSocket)
    assert server.manager.pubsub is None  # type: ignore[union-attr]
    first = attach(server.manager)  # type: ignore[arg-type]
    second = attach(server.manager)  # type: ignore[arg-type]
    assert server.manager.pubsub is second  # type: ignore[union-attr]
    assert first.broker is not second.broker
    server.stop(timeout=1)


# ---------------------------------------------------------------------------- through Redis


@pytest.mark.timeout(120)
def test_channels_across_two_servers_through_redis_and_a_redis_restart(redis_server: RedisServer) -> None:
    url = redis_server.url
    a = LoggedServer("--broker", url, "--handler", HANDLER)
    b = LoggedServer("--broker", url, "--handler", HANDLER)
    clients: list[Client] = []
    try:
        a1, a2 = Client(a.port), Client(a.port)
        b1, b2 = Client(b.port), Client(b.port)
        clients = [a1, a2, b1, b2]
        for client in (a1, b1, b2):
            client.send("sub:room")
            nothing_pending(client)
        wait_for(lambda: numsub(url, "room") == 2, "one Redis subscription per server for 'room'")

        # Published on server A, it reaches the subscribers on B, and A's own subscriber once.
        a2.send("pub:room:hello")
        for client in (a1, b1, b2):
            expect_text(client, "hello")
        nothing_pending(a2)
        b1.send("pub:room:reply")  # after 'hello' on the channel: a copy of 'hello' would precede it
        for client in (a1, b1, b2):
            expect_text(client, "reply")
        # Something outside wsloop publishing on the channel (a back-end service).
        import redis

        with redis.Redis.from_url(url) as backend:
            backend.publish("room", "from the back end")
        for client in (a1, b1, b2):
            expect_text(client, "from the back end")
        # broadcast() from A reaches B's clients too.
        a2.send("broadcast:everyone")
        for client in clients:
            expect_text(client, "everyone")

        # Redis goes away: both servers log it and keep serving their own clients.
        marks = (len(a.lines), len(b.lines))
        redis_server.stop()
        for server, mark in zip((a, b), marks, strict=True):
            server.wait_for_line(r"redis at .* unreachable", after=mark)
        for client in clients:
            nothing_pending(client)
        b1.send("pub:room:local only")  # B's own subscribers still get B's messages
        expect_text(b1, "local only")
        expect_text(b2, "local only")
        nothing_pending(a1)

        # Redis is back: both resubscribe (logged), and messages cross again.
        redis_server.start()
        for server, mark in zip((a, b), marks, strict=True):
            server.wait_for_line(r"redis at .* reachable again after", after=mark)
        wait_for(lambda: numsub(url, "room") == 2, "both servers resubscribed")
        wait_for(lambda: numsub(url, BROADCAST_CHANNEL) == 2, "both servers resubscribed to broadcasts")
        a2.send("pub:room:after the restart")
        for client in (a1, b1, b2):
            expect_text(client, "after the restart")
        b2.send("unsub:room")
        nothing_pending(b2)
        a2.send("pub:room:last")
        expect_text(a1, "last")
        expect_text(b1, "last")
        nothing_pending(b2)
    finally:
        for client in clients:
            client.close()
        codes = (a.stop(), b.stop())
    assert codes == (0, 0), a.output + b.output
