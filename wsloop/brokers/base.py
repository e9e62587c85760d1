"""The broker interface: :class:`Broker` carries ``(channel, bytes)`` messages between the
processes joined to it and calls its listeners from any thread; shared pieces of the brokers."""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Iterable

__all__ = ["Broker", "Listener", "Listeners", "PublishTooLarge", "DEFAULT_MAX_PUBLISH_SIZE", "call_listeners"]

logger = logging.getLogger("wsloop.pubsub")

#: A broker's listener: ``listener(channel, data)``, called from any thread.
Listener = Callable[[str, bytes], None]

#: :class:`~wsloop.brokers.RedisBroker`'s default ``max_publish_size``: well under Redis's
#: default output buffer limit for pub/sub clients (32 MB hard), past which Redis disconnects
#: every subscriber.
DEFAULT_MAX_PUBLISH_SIZE = 1024 * 1024


class PublishTooLarge(ValueError):
    """Raised by ``publish()`` (and ``broadcast()`` with a broker attached) for a message over
    the broker's ``max_publish_size``: nothing was sent, to anyone."""


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


class Listeners:
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


def call_listeners(listeners: Iterable[Listener], channel: str, data: bytes) -> None:
    for listener in listeners:
        try:
            listener(channel, data)
        except Exception:
            logger.exception("error in pub/sub listener %r", listener)
