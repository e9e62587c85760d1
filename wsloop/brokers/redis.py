"""Redis pub/sub as a broker, for several processes and hosts (``pip install wsloop[redis]``)."""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .base import DEFAULT_MAX_PUBLISH_SIZE, Broker, Listener, Listeners, call_listeners

__all__ = ["RedisBroker"]

logger = logging.getLogger("wsloop.pubsub")


class RedisBroker(Broker):
    """Redis pub/sub, for several processes and hosts (``pip install wsloop[redis]``).

    One subscriber connection per broker (so per process), owned by a thread of its own that
    subscribes to each channel some listener wants and calls the listeners; one publisher thread
    with its own connection, which sends what :meth:`publish` queued (pipelined), so publishing
    never blocks the caller. When Redis goes away both log it once and retry with exponential
    backoff (``backoff`` = first and longest delay); meanwhile local delivery goes on, published
    messages are dropped (Redis pub/sub is at-most-once: nothing published during an outage is
    delivered to the processes that were cut off). A subscriber or publisher that fails otherwise
    (a bug) is logged with its traceback and restarted after the same backoff. :meth:`wait_ready` is False
    whenever the subscriptions are not in effect. The sockets are watched with epoll/kqueue/poll
    (``selectors``), so any fd number works.

    :param url: ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS,
        ``unix:///path``), as ``redis.Redis.from_url`` takes. Note that pub/sub channels are
        global to a Redis server whatever the db number: use ``prefix`` to keep applications apart.
    :param prefix: prepended to every channel name in Redis.
    :param max_pending: bytes of published messages queued for the publisher thread at most;
        beyond, messages are dropped (logged).
    :param max_publish_size: largest message :meth:`publish` takes (default 1 MiB, a hub's
        22-byte envelope included); a larger one raises :class:`PublishTooLarge` in the caller's
        thread and nothing is sent. Redis disconnects a subscriber whose output buffer passes
        its ``client-output-buffer-limit pubsub`` (32 MB by default): one huge message would
        cut every subscriber off and lose it and the next ones. None: no limit.
    :param health_interval: seconds of silence on the subscriber connection after which it is
        pinged (a dead connection is then noticed).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        max_pending: int = 64 * 1024 * 1024,
        max_publish_size: int | None = DEFAULT_MAX_PUBLISH_SIZE,
        backoff: tuple[float, float] = (0.1, 5.0),
        connect_timeout: float = 2.0,
        health_interval: float = 15.0,
    ) -> None:
        try:
            import redis
            import redis.backoff
            import redis.retry
        except ImportError:
            raise RuntimeError(
                "the Redis broker needs the redis package: pip install 'wsloop[redis]'"
            ) from None
        self._redis: Any = redis
        self.url = url
        self.prefix = prefix
        self.max_pending = max_pending
        self.max_publish_size = max_publish_size
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.where = _redacted(url)
        self._listeners = Listeners()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._outbox_bytes = 0
        self._outbox_cond = threading.Condition()
        self._overflowed = False
        #: Messages dropped because Redis could not be reached or the queue was full.
        self.dropped = 0
        #: Times the subscriber connection was lost.
        self.outages = 0
        self._down_since: float | None = None  # since when the subscriber has been cut off
        #: Times the subscriber or publisher thread failed unexpectedly (logged with the
        #: traceback) and was restarted.
        self.failures = 0
        self._subscriber = threading.Thread(
            target=self._subscriber_main, name="wsloop-redis-sub", daemon=True
        )
        self._publisher = threading.Thread(target=self._publisher_main, name="wsloop-redis-pub", daemon=True)
        self._subscriber.start()
        self._publisher.start()

    def __repr__(self) -> str:
        return f"<RedisBroker {self.where}>"

    # -- the Broker interface

    def subscribe(self, channel: str, listener: Listener) -> None:
        if self._listeners.add(channel, listener):
            self._ready.clear()
            self._wake()

    def unsubscribe(self, channel: str, listener: Listener) -> None:
        if self._listeners.remove(channel, listener):
            self._wake()

    def publish(self, channel: str, data: bytes) -> None:
        size = len(data)
        self.check_size(size)
        with self._outbox_cond:
            if self._outbox_bytes + size > self.max_pending:
                self.dropped += 1
                if not self._overflowed:
                    self._overflowed = True
                    logger.warning(
                        "redis at %s: more than %d bytes waiting to be published; dropping messages",
                        self.where,
                        self.max_pending,
                    )
                return
            self._outbox.append((self.prefix + channel, data))
            self._outbox_bytes += size
            self._outbox_cond.notify()

    def wait_ready(self, timeout: float) -> bool:
        """True once every channel wanted is subscribed on a live connection; False while the
        subscriber is disconnected, reconnecting or restarting (and after :meth:`close`)."""
        return self._ready.wait(timeout) and self._subscriber.is_alive() and not self._closing.is_set()

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake()
        with self._outbox_cond:
            self._outbox_cond.notify()
        for thread in (self._subscriber, self._publisher):
            if thread is not threading.current_thread():
                thread.join(self.connect_timeout + 3.0)
        self._wake_r.close()
        self._wake_w.close()

    # -- plumbing

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (the thread is awake anyway) or closed

    def _client(self, retries: int) -> Any:
        redis = self._redis
        return redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_keepalive=True,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), retries),
        )

    def _subscriber_main(self) -> None:
        self._restarting(self._subscribe_loop, "subscriber", self._subscriber_failed)
        self._ready.clear()

    def _subscriber_failed(self) -> None:
        self._ready.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()  # its recovery is logged

    def _publisher_main(self) -> None:
        self._restarting(self._publish_loop, "publisher", None)

    def _restarting(self, loop: Callable[[], None], what: str, failed: Callable[[], None] | None) -> None:
        """Run ``loop`` (a thread's body) until it returns; if it fails unexpectedly (a bug),
        log that with the traceback and run it again after a back-off that doubles from
        ``backoff[0]`` to ``backoff[1]`` (from ``backoff[0]`` again after a minute's run)."""
        delay = self.backoff[0]
        while not self._closing.is_set():
            started = time.monotonic()
            try:
                loop()
                return
            except Exception:
                if failed is not None:
                    failed()
                self.failures += 1
                if time.monotonic() - started > 60.0:
                    delay = self.backoff[0]
                logger.exception(
                    "redis at %s: the %s failed; messages to or from other processes are not"
                    " delivered until it is back; restarting it in %.1f s",
                    self.where,
                    what,
                    delay,
                )
                self._closing.wait(delay)
                delay = min(delay * 2, self.backoff[1])

    def _subscribe_loop(self) -> None:
        # epoll/kqueue/poll, never select(): that fails on an fd above FD_SETSIZE (1024).
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            self._connect_loop(selector)

    def _connect_loop(self, selector: selectors.BaseSelector) -> None:
        redis = self._redis
        delay = self.backoff[0]
        while not self._closing.is_set():
            wanted = self._listeners.channels()
            if not wanted:
                self._ready.set()
                selector.select(None)
                self._drain_wake()
                continue
            pubsub = None
            try:
                pubsub = self._client(0).pubsub()
                self._serve_subscriptions(pubsub, selector)
            except (redis.RedisError, OSError) as exc:
                self._ready.clear()
                if self._down_since is None:  # a new outage (it was subscribed, or starting)
                    self._down_since = time.monotonic()
                    delay = self.backoff[0]
                    self.outages += 1
                    logger.warning(
                        "redis at %s unreachable (%s): messages from other processes are not delivered"
                        " until it is back; local delivery goes on; reconnecting with backoff",
                        self.where,
                        exc or type(exc).__name__,
                    )
                else:
                    logger.debug(
                        "redis at %s still unreachable (%s); next try in %.1f s", self.where, exc, delay
                    )
                self._closing.wait(delay)
                delay = min(delay * 2, self.backoff[1])
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def _serve_subscriptions(self, pubsub: Any, selector: selectors.BaseSelector) -> None:
        """Subscribe to the channels listeners want and pass messages on until closing (or until
        no channel is wanted); raises on a connection error. ``selector`` watches the wake-up
        socket; the connection's socket is added to it for the time of the call."""
        prefix = self.prefix
        subscribed: set[str] = set()
        pending: set[str] = set()  # subscribed, confirmation not seen yet
        announced = False
        last_heard = time.monotonic()
        watched = -1  # the connection's fd, once registered
        try:
            while not self._closing.is_set():
                wanted = self._listeners.channels()
                add, drop = wanted - subscribed, subscribed - wanted
                if add:
                    pubsub.subscribe(*[prefix + c for c in add])
                    subscribed |= add
                    pending |= add
                if drop:
                    pubsub.unsubscribe(*[prefix + c for c in drop])
                    subscribed -= drop
                    pending -= drop
                if not subscribed:
                    return  # nothing wanted: drop the connection until something is
                while True:
                    message = pubsub.get_message(timeout=0)
                    if message is None:
                        break
                    last_heard = time.monotonic()
                    kind = message["type"]
                    channel = _text(message["channel"])
                    if channel is not None and channel.startswith(prefix):
                        channel = channel[len(prefix) :]
                    if kind == "message" and channel is not None:
                        call_listeners(self._listeners.get(channel), channel, message["data"])
                    elif kind == "subscribe" and channel is not None:
                        pending.discard(channel)
                if not pending and not announced:
                    announced = True
                    down_since, self._down_since = self._down_since, None
                    if down_since is not None:
                        logger.warning(
                            "redis at %s reachable again after %.1f s; resubscribed to %d channel(s)"
                            " (messages published meanwhile are lost)",
                            self.where,
                            time.monotonic() - down_since,
                            len(subscribed),
                        )
                    else:
                        logger.info("redis at %s: subscribed to %d channel(s)", self.where, len(subscribed))
                if not pending and self._listeners.channels() == subscribed:
                    self._ready.set()
                sock = getattr(pubsub.connection, "_sock", None)
                if sock is None:  # not the redis-py we know: poll
                    pubsub.connection.can_read(timeout=0.05)
                    continue
                if sock.fileno() != watched:
                    if watched >= 0:
                        selector.unregister(watched)
                    watched = sock.fileno()
                    selector.register(watched, selectors.EVENT_READ)
                ready = selector.select(self.health_interval)
                if any(key.fd != watched for key, _ in ready):
                    self._drain_wake()
                if not ready and time.monotonic() - last_heard >= self.health_interval:
                    if time.monotonic() - last_heard >= 3 * self.health_interval:
                        raise self._redis.ConnectionError("no answer to pings")
                    pubsub.ping()
        finally:
            if watched >= 0:
                selector.unregister(watched)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass

    def _publish_loop(self) -> None:
        redis = self._redis
        client: Any = None
        delay = self.backoff[0]
        down_since: float | None = None
        cond = self._outbox_cond
        while True:
            with cond:
                while not self._outbox and not self._closing.is_set():
                    cond.wait()
                if self._closing.is_set():
                    return
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 1000))]
                self._outbox_bytes -= sum(len(data) for _, data in batch)
                self._overflowed = False
            try:
                if client is None:
                    client = self._client(1)  # one retry: a pooled connection that Redis closed
                pipe = client.pipeline(transaction=False)
                for channel, data in batch:
                    pipe.publish(channel, data)
                pipe.execute()
                if down_since is not None:
                    logger.info(
                        "redis at %s: publishing again after %.1f s (%d message(s) dropped in all)",
                        self.where,
                        time.monotonic() - down_since,
                        self.dropped,
                    )
                    down_since = None
                    delay = self.backoff[0]
            except (redis.RedisError, OSError) as exc:
                self.dropped += len(batch)
                if down_since is None:
                    down_since = time.monotonic()
                    logger.warning(
                        "redis at %s: publishing failed (%s); dropping messages until it is back",
                        self.where,
                        exc or type(exc).__name__,
                    )
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        pass
                    client = None
                self._closing.wait(delay)
                delay = min(delay * 2, self.backoff[1])
        # not reached


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _redacted(url: str) -> str:
    """``url`` without a password, for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid url)"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
