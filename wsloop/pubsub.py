"""Channels and cross-process broadcast: a small broker interface and the reactor's hub.

Two layers:

* A :class:`Broker` carries ``(channel, bytes)`` messages between the processes (and hosts)
  joined to it: :class:`InProcessBroker` (the default, no dependency; the reactors of one process
  only) and :class:`RedisBroker` (Redis pub/sub through the ``redis`` package, ``pip install
  wsloop[redis]``). A broker calls its listeners from any thread.
* A :class:`Hub` sits on one reactor (``reactor.pubsub``): it holds which of the reactor's
  websockets joined which channel, keeps **one** broker subscription per channel for all of them,
  and fans each message out inside the reactor, framing it once for every local member (the same
  path as ``Reactor.broadcast()``). ``Reactor.broadcast()`` with a hub also publishes on
  :data:`BROADCAST_CHANNEL`, so a broadcast started in any process reaches every process's
  clients.

Exactly once: a process delivers what it publishes to its own clients at once, and publishes it
with an envelope naming its hub (:attr:`Hub.origin`); when the broker hands the message back, that
hub drops it. So each client gets each message once, and a process's own clients keep getting
its broadcasts while the broker is unreachable. A message published by something else than wsloop
(``redis-cli PUBLISH room hello``, a back-end service) has no envelope and is delivered as it
is: text if it is valid UTF-8, else binary.

Handlers use it through ``WebSocket.subscribe(channel)``, ``unsubscribe(channel)`` and
``publish(channel, message)``; a websocket leaves all its channels when it closes. A message over
the broker's ``max_publish_size`` (Redis: 1 MiB by default) raises :class:`PublishTooLarge`. Redis pub/sub is
at-most-once: what is published while a subscriber is disconnected is lost for it.
"""

from __future__ import annotations

import abc
import collections
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .poller.reactor import Reactor
    from .websocket import WebSocket

__all__ = [
    "BROADCAST_CHANNEL",
    "Broker",
    "InProcessBroker",
    "RedisBroker",
    "Hub",
    "Listener",
    "PublishTooLarge",
    "DEFAULT_MAX_PUBLISH_SIZE",
    "attach",
    "hub_of",
    "make_broker",
]

logger = logging.getLogger("wsloop.pubsub")

#: The channel ``Reactor.broadcast()`` publishes on (reserved: handlers cannot join it).
BROADCAST_CHANNEL = "wsloop.broadcast"

#: A broker's listener: ``listener(channel, data)``, called from any thread.
Listener = Callable[[str, bytes], None]

#: :class:`RedisBroker`'s default ``max_publish_size``: well under Redis's default output buffer
#: limit for pub/sub clients (32 MB hard), past which Redis disconnects every subscriber.
DEFAULT_MAX_PUBLISH_SIZE = 1024 * 1024


class PublishTooLarge(ValueError):
    """Raised by ``publish()`` (and ``broadcast()`` with a broker attached) for a message over
    the broker's ``max_publish_size``: nothing was sent, to anyone."""


# Envelope of a message a hub publishes: magic, the hub's origin (16 hex digits), kind, payload.
_MAGIC = b"\x00wsl1"
_ORIGIN_LEN = 16
_HEADER_LEN = len(_MAGIC) + _ORIGIN_LEN + 1
_TEXT = b"t"
_BINARY = b"b"


# ---------------------------------------------------------------------------- brokers


class Broker(abc.ABC):
    """Carries messages published on a channel to every listener of that channel, in every
    process joined to the broker. Thread-safe; listeners are called from any thread and must
    not block (hand the message over to where it is used)."""

    #: Largest message :meth:`publish` takes, in bytes (a hub's 22-byte envelope included);
    #: larger ones raise :class:`PublishTooLarge`. None: no limit.
    max_publish_size: int | None = None

    def check_size(self, size: int) -> None:
        """Raise :class:`PublishTooLarge` if a message of ``size`` bytes is over
        :attr:`max_publish_size`."""
        limit = self.max_publish_size
        if limit is not None and size > limit:
            raise PublishTooLarge(
                f"a message of {size} bytes is over the broker's max_publish_size ({limit} bytes):"
                " not published"
            )

    @abc.abstractmethod
    def subscribe(self, channel: str, listener: Listener) -> None:
        """Call ``listener(channel, data)`` for each message published on ``channel`` from now on."""

    @abc.abstractmethod
    def unsubscribe(self, channel: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``channel`` (no error if it was not subscribed)."""

    @abc.abstractmethod
    def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to the listeners of ``channel`` everywhere; never blocks on the network."""

    def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the current subscriptions are in effect;
        False if they are not by then."""
        return True

    def close(self) -> None:  # noqa: B027 - optional: not every broker holds anything
        """Release connections and threads; the broker is unusable afterwards."""


class _Listeners:
    """channel -> listeners, copy-on-write so readers iterate without the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_channel: dict[str, tuple[Listener, ...]] = {}

    def add(self, channel: str, listener: Listener) -> bool:
        """Add; True if the channel had no listener before."""
        with self.lock:
            current = self.by_channel.get(channel, ())
            if listener in current:
                return False
            self.by_channel[channel] = (*current, listener)
            return not current

    def remove(self, channel: str, listener: Listener) -> bool:
        """Remove; True if the channel has no listener left."""
        with self.lock:
            current = self.by_channel.get(channel)
            if current is None or listener not in current:
                return False
            rest = tuple(x for x in current if x != listener)
            if rest:
                self.by_channel[channel] = rest
                return False
            del self.by_channel[channel]
            return True

    def get(self, channel: str) -> tuple[Listener, ...]:
        return self.by_channel.get(channel, ())

    def channels(self) -> set[str]:
        with self.lock:
            return set(self.by_channel)


def _call_listeners(listeners: Iterable[Listener], channel: str, data: bytes) -> None:
    for listener in listeners:
        try:
            listener(channel, data)
        except Exception:
            logger.exception("error in pub/sub listener %r", listener)


class InProcessBroker(Broker):
    """Delivers within this process only (the default): shared by several reactors of one
    process, it joins their channels and broadcasts. Listeners run in the publisher's thread."""

    def __init__(self, *, max_publish_size: int | None = None) -> None:
        self._listeners = _Listeners()
        self.max_publish_size = max_publish_size

    def subscribe(self, channel: str, listener: Listener) -> None:
        self._listeners.add(channel, listener)

    def unsubscribe(self, channel: str, listener: Listener) -> None:
        self._listeners.remove(channel, listener)

    def publish(self, channel: str, data: bytes) -> None:
        self.check_size(len(data))
        _call_listeners(self._listeners.get(channel), channel, data)

    def __repr__(self) -> str:
        return "<InProcessBroker>"


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
        self._listeners = _Listeners()
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
                        _call_listeners(self._listeners.get(channel), channel, message["data"])
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


def make_broker(spec: str | Broker | None, **options: Any) -> Broker | None:
    """A broker from ``--broker``'s value: ``None``/``"inprocess"``/``"memory"`` (None: the
    in-process default), ``redis://...``, ``rediss://...``, ``unix://...`` (a
    :class:`RedisBroker`, made with ``options``), or a Broker as is."""
    if spec is None or isinstance(spec, Broker):
        return spec
    if spec in ("inprocess", "memory", "none", ""):
        return None
    scheme = spec.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisBroker(spec, **options)
    raise ValueError(f"unknown broker {spec!r}: redis://host:port/db or inprocess")


def check_broker_spec(spec: str) -> str:
    """Validate ``--broker``'s value without connecting (argparse type)."""
    if spec in ("inprocess", "memory", "none", ""):
        return spec
    scheme = spec.partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix") or "://" not in spec:
        raise ValueError(f"{spec!r} is not redis://host:port/db or inprocess")
    return spec


# ---------------------------------------------------------------------------- the hub


class Hub:
    """One reactor's channels, joined to a broker; made by :func:`attach` (or on a websocket's
    first ``subscribe()``, with an :class:`InProcessBroker`).

    Membership changes and fan-out run on the reactor's thread; :meth:`publish` and
    :meth:`forward_broadcast` are safe from any thread.
    """

    def __init__(
        self, reactor: Reactor, broker: Broker, *, broadcast_channel: str = BROADCAST_CHANNEL
    ) -> None:
        self.reactor = reactor
        self.broker = broker
        self.broadcast_channel = broadcast_channel
        #: This hub's mark on what it publishes: the broker hands it back, and it is dropped.
        self.origin = os.urandom(_ORIGIN_LEN // 2).hex().encode("ascii")
        self._text_header = _MAGIC + self.origin + _TEXT
        self._binary_header = _MAGIC + self.origin + _BINARY
        self._members: dict[str, set[WebSocket]] = {}
        self._joined: dict[WebSocket, set[str]] = {}
        self._listener: Listener = self._received  # one bound method: the same for unsubscribe
        self._closed = False
        broker.subscribe(broadcast_channel, self._listener)

    def __repr__(self) -> str:
        return f"<Hub {self.broker!r} {len(self._members)} channel(s)>"

    # -- membership (the reactor's thread)

    def join(self, ws: WebSocket, channel: str) -> None:
        """Have ``ws`` receive what is published on ``channel``."""
        self.check_channel(channel)
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            self.broker.subscribe(channel, self._listener)
        if ws not in members:
            members.add(ws)
            self._joined.setdefault(ws, set()).add(channel)
            ws._hub = self

    def leave(self, ws: WebSocket, channel: str) -> None:
        """``ws`` stops receiving ``channel`` (no error if it had not joined)."""
        members = self._members.get(channel)
        if members is None or ws not in members:
            return
        members.discard(ws)
        joined = self._joined.get(ws)
        if joined is not None:
            joined.discard(channel)
            if not joined:
                del self._joined[ws]
        if not members:
            del self._members[channel]
            self.broker.unsubscribe(channel, self._listener)

    def leave_all(self, ws: WebSocket) -> None:
        """``ws`` leaves every channel (called when it closes)."""
        for channel in list(self._joined.get(ws, ())):
            self.leave(ws, channel)

    def channels(self, ws: WebSocket | None = None) -> set[str]:
        """The channels ``ws`` joined, or that any local websocket joined."""
        return set(self._joined.get(ws, ())) if ws is not None else set(self._members)

    def members(self, channel: str) -> int:
        """How many local websockets joined ``channel``."""
        return len(self._members.get(channel, ()))

    # -- publishing (any thread)

    def publish(self, channel: str, message: str | bytes, binary: bool = False) -> None:
        """Send ``message`` to every member of ``channel``: this process's at once (each framed
        once for all), the other processes' through the broker. Raises
        :class:`PublishTooLarge` (nothing sent) past the broker's ``max_publish_size``."""
        self.check_channel(channel)
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        self.broker.check_size(_HEADER_LEN + len(payload))  # before anyone gets it
        self.broker.publish(channel, (self._binary_header if binary else self._text_header) + payload)
        self._run(self._fan_out, channel, payload, binary)

    def forward_broadcast(self, message: str | bytes, binary: bool = False) -> None:
        """Publish a broadcast for the other processes (``Reactor.broadcast()`` calls it before
        delivering it locally). Raises :class:`PublishTooLarge` past the broker's
        ``max_publish_size``."""
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        self.broker.check_size(_HEADER_LEN + len(payload))
        header = self._binary_header if binary else self._text_header
        self.broker.publish(self.broadcast_channel, header + payload)

    def close(self) -> None:
        """Leave the broker; the reactor has no hub afterwards."""
        if self._closed:
            return
        self._closed = True
        self.broker.unsubscribe(self.broadcast_channel, self._listener)
        for channel in list(self._members):
            self.broker.unsubscribe(channel, self._listener)
        if getattr(self.reactor, "pubsub", None) is self:
            self.reactor.pubsub = None

    # -- delivery

    def _received(self, channel: str, data: bytes) -> None:
        """The broker's listener (its thread): drop our own, hand the rest to the reactor."""
        if data[:5] == _MAGIC and len(data) >= _HEADER_LEN:
            if data[5 : 5 + _ORIGIN_LEN] == self.origin:
                return  # published here, and delivered here already
            binary = data[_HEADER_LEN - 1 : _HEADER_LEN] == _BINARY
            payload = data[_HEADER_LEN:]
        else:  # from outside wsloop: text if it is UTF-8
            payload = data
            try:
                data.decode("utf-8")
                binary = False
            except UnicodeDecodeError:
                binary = True
        if self._closed:
            return
        if channel == self.broadcast_channel:
            self.reactor.local_broadcast(payload, binary)
        else:
            self.reactor.call_soon_threadsafe(self._fan_out, channel, payload, binary)

    def _fan_out(self, channel: str, payload: bytes, binary: bool) -> None:
        members = self._members.get(channel)
        if members:
            self.reactor.local_broadcast(payload, binary, members)

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        reactor = self.reactor
        if reactor.in_loop():
            fn(*args)
        else:
            reactor.call_soon_threadsafe(fn, *args)

    def check_channel(self, channel: str) -> None:
        """Raise ValueError unless ``channel`` is a channel handlers may use."""
        if not isinstance(channel, str) or not channel:
            raise ValueError("a channel is a non-empty string")
        if channel == self.broadcast_channel:
            raise ValueError(f"{channel!r} is reserved for broadcast()")


def attach(reactor: Reactor, broker: Broker | None = None, **options: Any) -> Hub:
    """Join ``reactor`` to ``broker`` (a new :class:`InProcessBroker` if None): its
    ``broadcast()`` then reaches every process joined to the broker, and its websockets'
    channels go through it. Returns the hub (``reactor.pubsub``); replaces an earlier one."""
    old = reactor.pubsub
    if old is not None:
        old.close()
    hub = Hub(reactor, broker if broker is not None else InProcessBroker(), **options)
    reactor.pubsub = hub
    return hub


def hub_of(ws: WebSocket) -> Hub:
    """The hub of the reactor serving ``ws`` (made with an in-process broker if it has none)."""
    reactor: Reactor | None = getattr(ws.transport, "reactor", None)
    if reactor is None or not hasattr(reactor, "pubsub"):
        raise RuntimeError("channels need a websocket served by the reactor (selectors poller)")
    hub = reactor.pubsub
    if hub is None:
        hub = attach(reactor)
    return hub
