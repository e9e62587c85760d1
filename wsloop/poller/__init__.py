"""The drivers floor: what moves bytes between sockets and websockets.

:class:`Reactor` (every connection in one ``selectors`` thread), :class:`ThreadedManager` (one
thread per connection, ``WebSocket.run()``) and :class:`~wsloop.poller.asyncio.AsyncioTransport`
(one connection on an asyncio loop) share one contract, written out in docs/ARCHITECTURE.md:

- a driver offers ``add(ws, preamble=, received=)``, ``remove``, ``broadcast``, ``close_all``,
  ``start``, ``stop``, ``join``, ``len()``/``iter()``/``in`` (ws4py's ``WebSocketManager``); the
  reactor also ``local_broadcast``, ``call_soon_threadsafe``, ``call_later``, ``in_loop``, and
  channels (``hub``, ``get_hub()``, ``use_broker()``, :mod:`wsloop.poller.hub`);
- it drives a websocket only through ``ws.attach(transport)``, ``ws.process(data)``,
  ``ws.takes_shared_frames()``, ``ws.send_broadcast(payload, binary)`` and
  ``ws.connection_lost(failure)``;
- the websocket calls only the transport's :class:`wsloop.transport.Transport` methods.

:func:`tune_malloc` is process-wide tuning a program asks for (the CLI does); no driver calls it.
"""

import logging

from .reactor import Connection, Reactor
from .threaded import ThreadedManager
from .tuning import tune_malloc

__all__ = ["Reactor", "Connection", "ThreadedManager", "make_manager", "tune_malloc"]


def make_manager(poller: str = "selectors", **options: object) -> Reactor | ThreadedManager:
    """The manager for a ``--poller`` name: ``selectors`` (the default) or ``threaded``."""
    if poller == "selectors":
        try:
            return Reactor(**options)  # type: ignore[arg-type]
        except OSError:
            logging.getLogger("wsloop.poller").warning("no usable selector; using threads")
            return ThreadedManager(**options)  # type: ignore[arg-type]
    if poller == "threaded":
        return ThreadedManager(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown poller {poller!r} (selectors or threaded)")
