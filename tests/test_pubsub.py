"""Channels (``WebSocket.subscribe/unsubscribe/publish``) and broadcast across processes.

In one process with the default in-process broker, and across two server processes (two hosts'
stand-ins) joined through one real ``redis-server``, which is restarted mid-test.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.handlers import ScaleWebSocket
from tests.support.redisproc import RedisServer, numsub, redis_fixture
from tests.support.serverproc import LoggedServer
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.brokers import InProcessBroker, PublishTooLarge, RedisBroker
from wsloop.messaging import CloseControlMessage, Message
from wsloop.poller import Reactor
from wsloop.poller.hub import BROADCAST_CHANNEL
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket

HANDLER = "tests.support.handlers:ScaleWebSocket"


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
        hub = server.manager.hub  # type: ignore[union-attr]
        assert hub is not None and hub.members("room") == 1
        a.close()
        wait_for(lambda: hub.members("room") == 0, "a closed websocket leaves its channels", timeout=30.0)
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


def test_channels_need_the_reactor_and_say_so_on_the_threaded_poller() -> None:
    class Asker(WebSocket):
        def received_message(self, message: Message) -> None:
            try:
                self.subscribe("room")
            except RuntimeError as exc:
                self.send(f"refused: {exc}")

    server = WebSocketServer("127.0.0.1", 0, Asker, poller="threaded")
    server.start()
    try:
        with Client(server.port) as client:
            assert client.echo("go").data.startswith(b"refused: channels need")
        assert server.manager.hub is None
        with pytest.raises(ValueError, match="selectors"):
            server.manager.use_broker(InProcessBroker())
    finally:
        server.stop(timeout=2)


def test_use_broker_replaces_a_hub_and_broadcast_stays_local_without_one() -> None:
    reactor = Reactor()
    heard: list[tuple[str, bytes]] = []

    def listen(broker: InProcessBroker) -> InProcessBroker:
        broker.subscribe(BROADCAST_CHANNEL, lambda channel, data: heard.append((channel, data)))
        return broker

    try:
        assert reactor.hub is None
        reactor.broadcast("alone")  # no hub: nothing reaches any broker
        first = reactor.use_broker(listen(InProcessBroker()))
        reactor.broadcast("one")
        assert len(heard) == 1 and heard[0][1].endswith(b"one")
        second = reactor.use_broker(listen(InProcessBroker()))
        assert reactor.hub is second and first.broker is not second.broker
        reactor.broadcast("two")  # the first hub left its broker: only the second hears it
        assert [data[-3:] for _, data in heard] == [b"one", b"two"]
        reactor.drop_broker()
        assert reactor.hub is None
        reactor.broadcast("three")
        assert len(heard) == 2
    finally:
        reactor.stop(timeout=0)

    # Two server processes without a broker: a broadcast reaches every client of the server
    # that makes it, and no client of the other.
    a, b = LoggedServer("--handler", HANDLER), LoggedServer("--handler", HANDLER)
    clients: list[Client] = []
    try:
        a1, a2, b1, b2 = clients = [Client(a.port), Client(a.port), Client(b.port), Client(b.port)]
        a1.send("broadcast:from A")
        expect_text(a1, "from A")
        expect_text(a2, "from A")
        b1.send("broadcast:from B")
        expect_text(b1, "from B")
        expect_text(b2, "from B")
        time.sleep(0.5)  # time for a stray copy to cross over, if one were sent
        for client in clients:
            nothing_pending(client)
    finally:
        for client in clients:
            client.close()
        assert a.stop() == 0, a.output
        assert b.stop() == 0, b.output


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
        wait_for(
            lambda: numsub(url, "room") == 2, "one Redis subscription per server for 'room'", timeout=30.0
        )

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
        wait_for(lambda: numsub(url, "room") == 2, "both servers resubscribed", timeout=30.0)
        wait_for(
            lambda: numsub(url, BROADCAST_CHANNEL) == 2,
            "both servers resubscribed to broadcasts",
            timeout=30.0,
        )
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


# ---------------------------------------------------------------------------- broker faults


class Inbox:
    """A broker listener that keeps what it gets, for waiting on it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()

    def __call__(self, channel: str, data: bytes) -> None:
        with self.cond:
            self.got.append((channel, data))
            self.cond.notify_all()

    def expect(self, channel: str, data: bytes, timeout: float = 15.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: (channel, data) in self.got, timeout):
                raise AssertionError(f"{data!r} on {channel!r} not received; got {self.got[-5:]!r}")


def open_many_fds(count: int) -> list[int]:
    """``count`` more open fds (pipes), the soft RLIMIT_NOFILE raised for them if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = len(os.listdir("/proc/self/fd")) + count + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    fds: list[int] = []
    for _ in range(count // 2):
        fds.extend(os.pipe())
    return fds


def publish_until(url: str, channel: str, data: bytes, inbox: Inbox, timeout: float = 15.0) -> None:
    """Publish ``data`` from a plain Redis client until ``inbox`` has it (a subscription being
    (re)made in the meantime misses some: Redis pub/sub is at-most-once)."""
    import redis

    with redis.Redis.from_url(url, socket_timeout=5) as client:
        deadline = time.monotonic() + timeout
        while True:
            client.publish(channel, data)
            with inbox.cond:
                if inbox.cond.wait_for(lambda: (channel, data) in inbox.got, 0.2):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{data!r} on {channel!r} never received")


@pytest.mark.timeout(120)
def test_redis_broker_with_its_sockets_above_fd_1023(redis_server: RedisServer) -> None:
    """select() cannot watch an fd >= FD_SETSIZE (1024): the subscriber must use poll/epoll."""
    fds = open_many_fds(1100)
    broker = other = None
    try:
        broker = RedisBroker(redis_server.url)
        inbox = Inbox()
        broker.subscribe("room", inbox)
        assert broker.wait_ready(15.0), "subscribed"
        # Its sockets were made after the 1,100 pipes (its Redis connection after this one).
        assert broker._wake_r.fileno() > 1023, broker._wake_r.fileno()
        publish_until(redis_server.url, "room", b"to the high fds", inbox)
        # Both directions, between two brokers: the high-fd one publishes too.
        other = RedisBroker(redis_server.url)
        other_inbox = Inbox()
        other.subscribe("room", other_inbox)
        assert other.wait_ready(15.0)
        broker.publish("room", b"from the high fds")
        other_inbox.expect("room", b"from the high fds")
        inbox.expect("room", b"from the high fds")
        assert broker.wait_ready(0), "still subscribed"
        assert broker._subscriber.is_alive()
    finally:
        for b in (broker, other):
            if b is not None:
                b.close()
        for fd in fds:
            os.close(fd)


def wait_not_ready(broker: RedisBroker, what: str) -> None:
    wait_for(lambda: not broker.wait_ready(0), what, timeout=15.0)


def fds_connected_to(port: int) -> list[int]:
    """This process's socket fds connected to 127.0.0.1:``port``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a dup
                peer = sock.getpeername()
            if isinstance(peer, tuple) and peer[1] == port:
                found.append(fd)
        except OSError:
            continue
    return found


def fill_fds_below(limit: int, fds: list[int]) -> None:
    """Open /dev/null until an fd at or above ``limit`` is returned: no fd below is free."""
    while True:
        fd = os.open(os.devnull, os.O_RDONLY)
        fds.append(fd)
        if fd >= limit:
            return


@pytest.mark.timeout(120)
def test_redis_subscriber_killed_and_reconnected_above_fd_1023(redis_server: RedisServer) -> None:
    """The subscriber's connection is killed (CLIENT KILL): not ready while it is down, then
    ready, and messages cross. Then Redis restarts while every fd below 1024 is taken: the
    subscriber reconnects on a higher fd, and messages still cross."""
    import redis

    broker = RedisBroker(redis_server.url, backoff=(0.5, 1.0))
    fds: list[int] = []
    try:
        inbox = Inbox()
        broker.subscribe("room", inbox)
        assert broker.wait_ready(15.0)
        publish_until(redis_server.url, "room", b"before", inbox)
        with redis.Redis.from_url(redis_server.url, socket_timeout=5) as admin:
            assert admin.client_kill_filter(_type="pubsub") == 1
        wait_not_ready(broker, "not ready once its connection is killed")
        assert broker.wait_ready(15.0), "ready again"
        publish_until(redis_server.url, "room", b"after the kill", inbox)

        fds = open_many_fds(1100)
        redis_server.stop()
        wait_not_ready(broker, "not ready while Redis is down")
        time.sleep(1.0)  # past the first back-off: its old connection is closed by then
        fill_fds_below(1024, fds)  # so its next connection's fd is above 1023
        redis_server.start()
        assert broker.wait_ready(15.0), "ready again after the Redis restart"
        assert any(fd > 1023 for fd in fds_connected_to(redis_server.port)), "reconnected above 1023"
        publish_until(redis_server.url, "room", b"after the restart", inbox)
        assert broker.wait_ready(0) and broker._subscriber.is_alive()
        assert broker.outages == 2, (broker.outages, broker.failures)
    finally:
        broker.close()
        for fd in fds:
            os.close(fd)
    assert not broker.wait_ready(0), "not ready once closed"


class FailingOnceBroker(RedisBroker):
    """A RedisBroker whose subscriber hits an unexpected error (a bug's stand-in) the first time
    it serves its subscriptions: everything else (Redis, its sockets) is real."""

    failed = False

    def _serve_subscriptions(self, *args: Any) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected failure (test)")
        super()._serve_subscriptions(*args)


@pytest.mark.timeout(120)
def test_a_failed_redis_subscriber_is_logged_and_restarted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsloop.pubsub")
    broker = FailingOnceBroker(redis_server.url, backoff=(1.0, 2.0))
    try:
        inbox = Inbox()
        broker.subscribe("room", inbox)
        wait_for(lambda: broker.failed, "the subscriber failed", timeout=30.0)
        assert not broker.wait_ready(0.2), "not ready while the subscriber is down"
        assert broker.wait_ready(15.0), "the subscriber is restarted"
        publish_until(redis_server.url, "room", b"after the restart", inbox)
        assert broker.failures == 1
        failed = [r for r in caplog.records if "the subscriber failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].exc_info is not None, "logged once, with the traceback"
        assert "restarting it in 1.0 s" in failed[0].getMessage()
    finally:
        broker.close()


class RefusalReportingWebSocket(ScaleWebSocket):
    """ScaleWebSocket's commands; a PublishTooLarge is answered with ``refused: ...``."""

    def received_message(self, message: Message) -> None:
        try:
            super().received_message(message)
        except PublishTooLarge as exc:
            self.send(f"refused: {exc}")


@pytest.mark.timeout(120)
def test_max_publish_size_refuses_a_huge_publish_and_sends_nothing(redis_server: RedisServer) -> None:
    """Over ``max_publish_size`` (1 MiB by default) publish() and broadcast() raise in the
    caller's thread and nothing reaches anyone; 512 KiB crosses."""
    broker = RedisBroker(redis_server.url)
    assert broker.max_publish_size == 1024 * 1024
    server = WebSocketServer("127.0.0.1", 0, RefusalReportingWebSocket, broker=broker)
    server.start()
    observer = RedisBroker(redis_server.url)  # another process's stand-in
    inbox = Inbox()
    clients: list[Client] = []
    try:
        observer.subscribe("room", inbox)
        observer.subscribe(BROADCAST_CHANNEL, inbox)
        assert observer.wait_ready(15.0)
        sender, member = Client(server.port), Client(server.port)
        clients = [sender, member]
        member.send("sub:room")
        nothing_pending(member)
        wait_for(
            lambda: numsub(redis_server.url, "room") == 2, "both brokers subscribed to 'room'", timeout=30.0
        )

        huge = "x" * (2 * 1024 * 1024)
        sender.send("pub:room:" + huge)
        refusal = sender.recv()
        assert refusal.data.startswith(b"refused: a message of 2097174 bytes is over"), refusal.data[:100]
        sender.send("broadcast:" + huge)
        assert sender.recv().data.startswith(b"refused: "), "broadcast() is refused too"
        with pytest.raises(PublishTooLarge):
            broker.publish("room", huge.encode())  # the broker itself, directly
        # Nothing was sent: the next message anyone gets is the marker published after.
        sender.send("pub:room:marker")
        expect_text(member, "marker")
        broker_payload(inbox, "room", b"marker")
        assert all(len(data) < 1024 for _, data in inbox.got), "nothing huge reached Redis"
        nothing_pending(sender)

        half = "y" * (512 * 1024)
        sender.send("pub:room:" + half)
        expect_text(member, half)
        broker_payload(inbox, "room", half.encode())
        sender.send("broadcast:" + half)
        expect_text(member, half)
        expect_text(sender, half)
        broker_payload(inbox, BROADCAST_CHANNEL, half.encode())
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=2)
        broker.close()
        observer.close()


def broker_payload(inbox: Inbox, channel: str, payload: bytes, timeout: float = 15.0) -> bytes:
    """The enveloped message on ``channel`` whose payload is ``payload`` (waited for)."""

    def found() -> bytes | None:
        for got_channel, data in inbox.got:
            if got_channel == channel and data.endswith(payload) and len(data) == len(payload) + 22:
                return data
        return None

    wait_for(lambda: found() is not None, f"{payload[:20]!r}... on {channel!r}", timeout=timeout)
    data = found()
    assert data is not None
    return data


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_max_publish_size_flag(redis_server: RedisServer, workers: str) -> None:
    """``--max-publish-size 4k`` reaches the Redis broker (of each worker with --workers)."""
    server = LoggedServer(
        "--broker",
        redis_server.url,
        "--max-publish-size",
        "4k",
        "--workers",
        workers,
        "--handler",
        "tests.test_pubsub:RefusalReportingWebSocket",
    )
    clients: list[Client] = []
    try:
        sender, member = Client(server.port), Client(server.port)
        clients = [sender, member]
        member.send("sub:room")
        nothing_pending(member)
        wait_for(
            lambda: numsub(redis_server.url, "room") == 1, "the member's worker subscribed", timeout=30.0
        )
        sender.send("pub:room:" + "x" * 5000)
        assert sender.recv().data.startswith(b"refused: a message of 5022 bytes is over"), server.output
        sender.send("pub:room:" + "y" * 3000)
        expect_text(member, "y" * 3000)
    finally:
        for client in clients:
            client.close()
        code = server.stop()
    assert code == 0, server.output


class PublisherFailingOnceBroker(RedisBroker):
    """A RedisBroker whose publisher thread hits an unexpected error (a bug's stand-in) when it
    first makes its connection; Redis and the sockets are real."""

    failed = False

    def _client(self, retries: int) -> Any:
        if retries == 1 and not self.failed:  # the publisher's (the subscriber's has 0)
            self.failed = True
            raise RuntimeError("unexpected publisher failure (test)")
        return super()._client(retries)


@pytest.mark.timeout(120)
def test_a_failed_redis_publisher_is_logged_and_restarted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsloop.pubsub")
    broker = PublisherFailingOnceBroker(redis_server.url, backoff=(0.5, 1.0))
    observer = RedisBroker(redis_server.url)
    inbox = Inbox()
    try:
        observer.subscribe("room", inbox)
        assert observer.wait_ready(15.0)
        broker.publish("room", b"lost with the failure")
        wait_for(lambda: broker.failed, "the publisher failed", timeout=30.0)

        def crossed() -> bool:
            broker.publish("room", b"after the restart")
            with inbox.cond:
                return inbox.cond.wait_for(lambda: ("room", b"after the restart") in inbox.got, 0.2)

        wait_for(crossed, "a message published after the restart crosses", timeout=15.0)
        assert broker.failures == 1
        failed = [r for r in caplog.records if "the publisher failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].exc_info is not None, "logged once, with the traceback"
    finally:
        broker.close()
        observer.close()
