"""ws4py's ``ws4py.manager`` names: ``WebSocketManager`` is the reactor."""

from .poller import Reactor as WebSocketManager
from .poller import ThreadedManager

__all__ = ["WebSocketManager", "ThreadedManager"]
