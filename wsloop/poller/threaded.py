"""The threaded fallback: each websocket driven by its own thread (``WebSocket.run()``).

For platforms without a usable selector, or by choice (``--poller threaded``). Same interface
as :class:`wsloop.poller.Reactor`; costs one thread per connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from ..websocket import WebSocket

__all__ = ["ThreadedManager"]

logger = logging.getLogger("wsloop.poller")


class ThreadedManager:
    """ws4py's ``WebSocketManager`` interface over one thread per websocket."""

    def __init__(self, close_timeout: float = 5.0, **_ignored: object) -> None:
        self.close_timeout = close_timeout
        self._lock = threading.Lock()
        self._threads: dict[WebSocket, threading.Thread] = {}
        self._stopping = False
        self._finished = threading.Event()

    def add(self, websocket: WebSocket, *, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``websocket`` in a new thread (``preamble`` sent first, ``received`` fed first)."""
        if self._stopping:
            if websocket.sock is not None:
                websocket.sock.close()
            return
        thread = threading.Thread(
            target=self._serve, args=(websocket, preamble, received), name="wsloop-conn", daemon=True
        )
        with self._lock:
            self._threads[websocket] = thread
        thread.start()

    def _serve(self, websocket: WebSocket, preamble: bytes, received: bytes) -> None:
        try:
            if preamble and websocket.sock is not None:
                websocket.sock.sendall(preamble)
            websocket.run(received)
        except Exception:
            logger.exception("error serving %r", websocket)
        finally:
            with self._lock:
                self._threads.pop(websocket, None)

    def remove(self, websocket: WebSocket) -> None:
        with self._lock:
            self._threads.pop(websocket, None)

    def close_all(self, code: int = 1001, message: str = "Server is shutting down") -> None:
        for ws in self:
            ws.close(code, message)

    def broadcast(self, message: str | bytes, binary: bool = False) -> None:
        for ws in self:
            if not ws.terminated:
                try:
                    ws.send(message, binary)
                except Exception:
                    logger.debug("broadcast to %r failed", ws, exc_info=True)

    def start(self) -> None:
        """Nothing to start: each websocket gets its thread in :meth:`add`."""

    def run(self) -> None:
        """Block until :meth:`stop` (ws4py's manager is a thread that can be run)."""
        self._finished.wait()

    def stop(self, timeout: float | None = None) -> None:
        """Close all with 1001, wait up to ``timeout`` for their threads, drop the rest."""
        self._stopping = True
        self.close_all()
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        for ws, thread in self._items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                ws.terminate()
                thread.join(1.0)
        self._finished.set()

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def _items(self) -> list[tuple[WebSocket, threading.Thread]]:
        with self._lock:
            return list(self._threads.items())

    def __len__(self) -> int:
        return len(self._threads)

    def __iter__(self) -> Iterator[WebSocket]:
        return iter([ws for ws, _ in self._items()])

    def __contains__(self, websocket: object) -> bool:
        return websocket in self._threads

    @property
    def websockets(self) -> list[WebSocket]:
        return [ws for ws, _ in self._items()]
