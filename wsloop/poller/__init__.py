"""Drivers that move bytes between sockets and websockets.

:class:`Reactor` runs every connection in one thread over ``selectors``; :class:`ThreadedManager`
drives each connection in its own thread (the fallback where no usable selector exists, or when
asked for). Both have ws4py's ``WebSocketManager`` interface.
"""

from .reactor import Connection, Reactor
from .threaded import ThreadedManager

__all__ = ["Reactor", "Connection", "ThreadedManager", "make_manager"]


def make_manager(poller: str = "selectors", **options: object) -> Reactor | ThreadedManager:
    """The manager for a ``--poller`` name: ``selectors`` (the default) or ``threaded``."""
    if poller == "selectors":
        try:
            return Reactor(**options)  # type: ignore[arg-type]
        except OSError:
            import logging

            logging.getLogger("wsloop.poller").warning("no usable selector; using threads")
            return ThreadedManager(**options)  # type: ignore[arg-type]
    if poller == "threaded":
        return ThreadedManager(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown poller {poller!r} (selectors or threaded)")
