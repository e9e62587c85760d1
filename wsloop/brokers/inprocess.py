"""The in-process broker (the default): delivers within this process only."""

from __future__ import annotations

from .base import Broker, Listener, Listeners, call_listeners

__all__ = ["InProcessBroker"]


class InProcessBroker(Broker):
    """Delivers within this process only (the default): shared by several reactors of one
    process, it joins their channels and broadcasts. Listeners run in the publisher's thread."""

    def __init__(self, *, max_publish_size: int | None = None) -> None:
        self._listeners = Listeners()
        self.max_publish_size = max_publish_size

    def subscribe(self, channel: str, listener: Listener) -> None:
        self._listeners.add(channel, listener)

    def unsubscribe(self, channel: str, listener: Listener) -> None:
        self._listeners.remove(channel, listener)

    def publish(self, channel: str, data: bytes) -> None:
        self.check_size(len(data))
        call_listeners(self._listeners.get(channel), channel, data)

    def __repr__(self) -> str:
        return "<InProcessBroker>"
