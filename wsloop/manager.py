"""ws4py's ``ws4py.manager``: :class:`WebSocketManager` (a reactor, ws4py's constructor and
attributes) and the pollers ``SelectPoller``, ``EPollPoller`` and ``KQueuePoller``, each over
the ``selectors`` class of its system call; a manager given one runs its loop on that selector.
"""

from __future__ import annotations

import logging
import select
import selectors
import threading
import time
from collections.abc import Iterator
from typing import Any

from .poller import Reactor, ThreadedManager
from .websocket import WebSocket

__all__ = ["WebSocketManager", "ThreadedManager", "SelectPoller", "EPollPoller", "KQueuePoller"]

#: The module's logger (ws4py's ``logger``, there named ``ws4py``).
logger = logging.getLogger("wsloop.manager")


class _Registered:
    """The data of a file descriptor a program registered on a poller itself."""

    def __repr__(self) -> str:
        return "<fd registered on a poller>"


_REGISTERED = _Registered()


class _SelectorPoller:
    """ws4py's poller interface (``register``, ``unregister``, ``poll``, ``release``) over a
    ``selectors`` selector (:attr:`selector`), watching for readable file descriptors."""

    selector_class: type[selectors.BaseSelector] = selectors.DefaultSelector

    def __init__(self, timeout: float = 0.1) -> None:
        #: Seconds :meth:`poll` waits at most.
        self.timeout = timeout
        #: The selector; a :class:`WebSocketManager` given this poller runs its loop on it.
        self.selector: selectors.BaseSelector = self.selector_class()

    def register(self, fd: Any) -> None:
        """Watch ``fd`` (a file descriptor or an object with ``fileno()``) for reading; a second
        registration, or a closed ``fd``, is ignored (as ws4py's pollers do)."""
        try:
            self.selector.register(fd, selectors.EVENT_READ, _REGISTERED)
        except (KeyError, ValueError, OSError):
            pass

    def unregister(self, fd: Any) -> None:
        """Stop watching ``fd``; one not registered is ignored."""
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def poll(self) -> list[int]:
        """Wait at most :attr:`timeout` seconds; return the readable file descriptors."""
        if not self.selector.get_map():
            time.sleep(self.timeout)  # as ws4py's SelectPoller (select() of nothing fails on Windows)
            return []
        try:
            return [key.fd for key, _ in self.selector.select(self.timeout)]
        except OSError:
            return []

    def release(self) -> None:
        """Close the selector (a manager that runs on it closes it when it ends, too)."""
        try:
            self.selector.close()
        except (OSError, RuntimeError):
            pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {type(self.selector).__name__}>"


class SelectPoller(_SelectorPoller):
    """ws4py's poller over ``select()`` (:class:`selectors.SelectSelector`): every platform."""

    selector_class = selectors.SelectSelector


class EPollPoller(_SelectorPoller):
    """ws4py's poller over ``epoll`` (:class:`selectors.EpollSelector`); where ``select.epoll``
    is missing (not Linux) making one raises :class:`NotImplementedError`."""

    if hasattr(select, "epoll"):
        selector_class = selectors.EpollSelector

    def __init__(self, timeout: float = 0.1) -> None:
        if not hasattr(select, "epoll"):
            raise NotImplementedError("EPollPoller needs select.epoll, which this system lacks")
        super().__init__(timeout)


class KQueuePoller(_SelectorPoller):
    """A poller over ``kqueue`` (:class:`selectors.KqueueSelector`); where ``select.kqueue`` is
    missing (Linux) making one raises :class:`NotImplementedError` (ws4py's class of this name
    used epoll)."""

    if hasattr(select, "kqueue"):
        selector_class = selectors.KqueueSelector  # type: ignore[attr-defined,unused-ignore]

    def __init__(self, timeout: float = 0.1) -> None:
        if not hasattr(select, "kqueue"):
            raise NotImplementedError("KQueuePoller needs select.kqueue, which this system lacks")
        super().__init__(timeout)


def _default_poller() -> _SelectorPoller:
    """The poller over the system's best selector (epoll, kqueue, ... or select)."""
    if hasattr(select, "epoll"):
        return EPollPoller()
    if hasattr(select, "kqueue"):
        return KQueuePoller()
    return _SelectorPoller()


class WebSocketManager(Reactor, threading.Thread):
    """ws4py's ``WebSocketManager``: the reactor (one thread for all its websockets), made with
    ws4py's ``poller`` argument; as in ws4py, the manager is that thread (a
    :class:`threading.Thread`).

    :param poller: a :class:`SelectPoller`, ``EPollPoller`` or ``KQueuePoller`` (or any object
        with a ``selectors`` :attr:`~SelectPoller.selector`): the loop runs on its selector,
        which then belongs to the manager (closed when it ends). Default: the system's best.
    :param options: the :class:`~wsloop.poller.Reactor`'s keyword options (``high_water``,
        ``max_buffered``, ``close_timeout``, ...).

    As in ws4py, :meth:`add` (any thread) serves a websocket and calls its ``opened()`` (a
    client's ``handshake_ok()`` may do it); ``len()``, ``in``, iteration, :meth:`broadcast`,
    :meth:`close_all`, :meth:`remove`, :meth:`run`, :meth:`stop` are the reactor's;
    :attr:`websockets` is ws4py's dict (file descriptor -> websocket). The thread's
    :attr:`name` is ``"WebSocketManager"``; it is a daemon unless :attr:`daemon` is set False
    before :meth:`start` (ws4py's was not: a program that never stops its manager still exits).
    :meth:`start` returns once the loop runs and, called again, does nothing (a reactor's
    rule, where a thread raises); :meth:`join` before :meth:`start` returns at once.
    """

    def __init__(self, poller: Any = None, **options: Any) -> None:
        if poller is not None and "selector" in options:
            raise TypeError("give a poller or a selector, not both")
        if poller is None:
            poller = _default_poller()
        selector = getattr(poller, "selector", None)
        if not isinstance(selector, selectors.BaseSelector):
            raise TypeError(f"{poller!r} has no selectors selector to run on")
        threading.Thread.__init__(self, name="WebSocketManager", daemon=True)
        #: The poller whose selector the loop runs on (ws4py's attribute).
        self.poller = poller
        Reactor.__init__(self, selector=selector, **options)

    def start(self) -> None:
        """Start the manager's thread (the loop); returns once the loop runs. Called again, it
        does nothing."""
        if self._thread is not None:
            return
        self._thread = self
        threading.Thread.start(self)
        while self._tid is None and threading.Thread.is_alive(self):
            time.sleep(0.001)

    def _make_thread(self) -> threading.Thread:
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait for the manager's thread to end (at most ``timeout`` seconds); at once if it was
        never started."""
        if self._thread is self:
            threading.Thread.join(self, timeout)

    def add(self, websocket: WebSocket, *, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``websocket`` and call its ``opened()`` (see :meth:`Reactor.add`); one already
        served is left as it is (ws4py's behaviour)."""
        if websocket in self:
            return
        super().add(websocket, preamble=preamble, received=received)

    @property
    def websockets(self) -> dict[int, WebSocket]:  # type: ignore[override]
        """The websockets served, by their socket's file descriptor (ws4py's dict; a copy)."""
        return {conn.sock.fileno(): ws for ws, conn in list(self._connections.items())}

    def __iter__(self) -> Iterator[WebSocket]:
        return iter(list(self._connections))
