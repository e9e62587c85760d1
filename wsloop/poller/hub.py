"""The channels hub of one reactor: which of its websockets joined which channel, one broker
subscription per channel for all of them, and the fan-out of each message inside the reactor."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from ..brokers.base import Broker, Listener

__all__ = ["Hub", "BROADCAST_CHANNEL", "FanOut"]

#: The channel ``Reactor.broadcast()`` publishes on (reserved: handlers cannot join it).
BROADCAST_CHANNEL = "wsloop.broadcast"

# Envelope of a message a hub publishes: magic, the hub's origin (16 hex digits), kind, payload.
_MAGIC = b"\x00wsl1"
_ORIGIN_LEN = 16
_HEADER_LEN = len(_MAGIC) + _ORIGIN_LEN + 1
_TEXT = b"t"
_BINARY = b"b"


class FanOut(Protocol):
    """What a hub needs from the driver that owns it (:class:`wsloop.poller.Reactor`)."""

    def local_broadcast(
        self, message: str | bytes, binary: bool = False, websockets: Iterable[Any] | None = None
    ) -> None: ...

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def in_loop(self) -> bool: ...


class Hub:
    """One reactor's channels, joined to a broker; made by ``Reactor.use_broker()`` (or on a
    websocket's first ``subscribe()``, with an in-process broker).

    Membership changes and fan-out run on the reactor's thread; :meth:`publish` and
    :meth:`forward_broadcast` are safe from any thread. What it publishes carries an envelope
    naming it (:attr:`origin`), so the copy the broker hands back is dropped: each client gets
    each message once. A message without one (``redis-cli PUBLISH``) is text if valid UTF-8.
    """

    def __init__(
        self, reactor: FanOut, broker: Broker, *, broadcast_channel: str = BROADCAST_CHANNEL
    ) -> None:
        self.reactor = reactor
        self.broker = broker
        self.broadcast_channel = broadcast_channel
        #: This hub's mark on what it publishes: the broker hands it back, and it is dropped.
        self.origin = os.urandom(_ORIGIN_LEN // 2).hex().encode("ascii")
        self._text_header = _MAGIC + self.origin + _TEXT
        self._binary_header = _MAGIC + self.origin + _BINARY
        self._members: dict[str, set[Hashable]] = {}
        self._joined: dict[Hashable, set[str]] = {}
        self._listener: Listener = self._received  # one bound method: the same for unsubscribe
        self._closed = False
        broker.subscribe(broadcast_channel, self._listener)

    def __repr__(self) -> str:
        return f"<Hub {self.broker!r} {len(self._members)} channel(s)>"

    # -- membership (the reactor's thread)

    def join(self, ws: Hashable, channel: str) -> None:
        """Have ``ws`` receive what is published on ``channel``."""
        self.check_channel(channel)
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            self.broker.subscribe(channel, self._listener)
        if ws not in members:
            members.add(ws)
            self._joined.setdefault(ws, set()).add(channel)

    def leave(self, ws: Hashable, channel: str) -> None:
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

    def leave_all(self, ws: Hashable) -> None:
        """``ws`` leaves every channel (called when it closes)."""
        for channel in list(self._joined.get(ws, ())):
            self.leave(ws, channel)

    def channels(self, ws: Hashable | None = None) -> set[str]:
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
        """Leave the broker (the reactor calls it when it replaces or drops its hub)."""
        if self._closed:
            return
        self._closed = True
        self.broker.unsubscribe(self.broadcast_channel, self._listener)
        for channel in list(self._members):
            self.broker.unsubscribe(channel, self._listener)

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
