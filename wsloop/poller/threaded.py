"""The threaded fallback: each websocket driven by its own thread (``WebSocket.run()``).

For platforms without a usable selector, or by choice (``--poller threaded``). The driver
contract of :mod:`wsloop.poller` without channels; costs one thread per connection.
"""

from __future__ import annotations

import inspect
import logging
import socket
import threading
import time
from collections.abc import Iterator

from ..stats import Counters, Stats, track
from ..transport import BlockingTransport, refuse
from ..websocket import WebSocket

__all__ = ["ThreadedManager"]

logger = logging.getLogger("wsloop.poller")


class ThreadedManager:
    """ws4py's ``WebSocketManager`` interface over one thread per websocket."""

    #: Channels need the reactor: a threaded manager has no hub.
    hub: None = None

    def __init__(self, close_timeout: float = 5.0, **_ignored: object) -> None:
        self.close_timeout = close_timeout
        self._lock = threading.Lock()
        self._threads: dict[WebSocket, threading.Thread] = {}
        self._stopping = False
        self._finished = threading.Event()
        #: What :meth:`stats` reports; each connection's thread counts into it.
        self.counters = Counters()
        track(self)

    def stats(self) -> Stats:
        """The figures now (:class:`wsloop.stats.Stats`), as the reactor's: output is written
        synchronously (``buffered_bytes`` 0, no peer dropped for being slow) and there is no
        loop (``loop_lag`` 0)."""
        return self.counters.snapshot(len(self._threads))

    def add(self, websocket: WebSocket, *, preamble: bytes = b"", received: bytes = b"") -> None:
        """Serve ``websocket`` in a new thread (``preamble`` sent first, ``received`` fed first)."""
        if self._stopping:
            refuse(websocket)
            return
        thread = threading.Thread(
            target=self._serve, args=(websocket, preamble, received), name="wsloop-conn", daemon=True
        )
        with self._lock:
            self._threads[websocket] = thread
        thread.start()

    def _serve(self, websocket: WebSocket, preamble: bytes, received: bytes) -> None:
        websocket.stream.counters = self.counters
        self.counters.bytes_in += len(received)
        try:
            if preamble and websocket.sock is not None:
                websocket.sock.sendall(preamble)
            if inspect.iscoroutinefunction(websocket.run):  # async_websocket's run() awaits the end
                WebSocket.run(websocket, received)
            else:
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

    def use_broker(self, broker: object = None, **options: object) -> None:
        """Channels and cross-process broadcast need the reactor: always a ValueError."""
        raise ValueError("a broker needs the selectors poller")

    def get_hub(self) -> None:
        """Channels need the reactor: always a RuntimeError."""
        raise RuntimeError("channels need a websocket served by the reactor (selectors poller)")

    def start(self) -> None:
        """Nothing to start: each websocket gets its thread in :meth:`add`."""

    def run(self) -> None:
        """Block until :meth:`stop` (ws4py's manager is a thread that can be run)."""
        self._finished.wait()

    def stop(self, timeout: float | None = None) -> None:
        """Close all with 1001, wait up to ``timeout`` for their threads, drop the rest; returns
        within ``timeout`` whatever the peers do.

        A connection whose lock is busy (a handler running, or a send blocked on a peer that
        does not read) is asked again until the time is up, and a close frame that cannot be
        written in time drops its connection. The last quarter of the time (at most 0.25 s) is
        kept to drop what remains: its sockets are shut down, which ends a blocked send or read
        in any thread, and the threads are given until ``timeout`` to finish.
        """
        self._stopping = True
        wait = max(0.0, self.close_timeout if timeout is None else timeout)
        end = time.monotonic() + wait
        deadline = end - min(0.25, wait / 4)
        closing = {ws for ws, _ in self._items()}
        while True:
            for ws in list(closing):
                if self._start_close(ws, deadline):
                    closing.discard(ws)
            alive = [thread for _, thread in self._items() if thread.is_alive()]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                break
            alive[0].join(min(left, 0.05) if closing else left)
        for ws, thread in self._items():
            if thread.is_alive():
                _drop(ws)
        for _, thread in self._items():
            thread.join(max(0.0, end - time.monotonic()))
        stuck = sum(thread.is_alive() for _, thread in self._items())
        if stuck:
            logger.warning(
                "stop(): %d connection threads still running (a callback that does not return?)", stuck
            )
        self._finished.set()

    @staticmethod
    def _start_close(websocket: WebSocket, deadline: float) -> bool:
        """Start the closing handshake without waiting for the connection's lock; whether it
        was started (or is not needed)."""
        transport = websocket.transport
        if transport is None:
            return False  # its thread has not attached it yet
        if websocket.terminated:
            return True
        if isinstance(transport, BlockingTransport):
            return transport.call_nowait(websocket.close, 1001, "Server is shutting down", deadline=deadline)
        websocket.close(1001, "Server is shutting down")
        return True

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


def _drop(websocket: WebSocket) -> None:
    """Drop a connection from any thread: shut its socket down (a send or read blocked in
    another thread fails at once)."""
    transport = websocket.transport
    if transport is not None:
        transport.abort()
    elif websocket.sock is not None:
        try:
            websocket.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
