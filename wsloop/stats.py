"""What a driver counts while it serves (:class:`Counters`) and the snapshot its ``stats()``
returns (:class:`Stats`).

Every driver (the reactor, the threaded manager, the asyncio driver) holds one
:class:`Counters` and counts into it on paths that already run: plain ``int`` attributes, no
allocation per message. ``stats()`` reads them (and the figures that are states, not counts: open
websockets, buffered output) into a frozen :class:`Stats`. :mod:`wsloop.metrics` turns snapshots
into Prometheus metrics.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["Counters", "Stats", "LagProbe", "combine", "track", "live_stats", "LAG_EVERY"]

#: Seconds between two samples of the loop lag (:class:`LagProbe`).
LAG_EVERY = 1.0


class Counters:
    """One driver's running counts; its websockets' protocols and connections add to them.

    Counts only grow (Prometheus counters) except ``handshakes_pending``. From the driver's
    thread, or from one thread per connection (the threaded manager): an ``x += 1`` on an
    attribute is not interrupted by a thread switch in CPython 3.11+ (no call in it)."""

    __slots__ = (
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "slow_dropped",
        "handshakes_pending",
        "refused",
        "closes",
        "loop_lag",
    )

    def __init__(self) -> None:
        #: Text and binary messages received whole (control frames not counted).
        self.messages_in = 0
        #: Text and binary messages sent (a broadcast counts one per connection it reaches).
        self.messages_out = 0
        #: Bytes read from the sockets (frames, their headers too; after TLS).
        self.bytes_in = 0
        #: Bytes the sockets took (frames, their headers too; before TLS).
        self.bytes_out = 0
        #: Connections reset because their peer did not read (``max_buffered``, close code 1008).
        self.slow_dropped = 0
        #: Opening handshakes in progress (accepted connections not upgraded or refused yet).
        self.handshakes_pending = 0
        #: Upgrade requests answered with an HTTP error, by status.
        self.refused: dict[int, int] = {}
        #: Websockets ended, by the close code their ``closed()`` got (1006: no close frame).
        self.closes: dict[int, int] = {}
        #: Seconds the last :class:`LagProbe` timer ran late.
        self.loop_lag = 0.0

    def refuse(self, status: int) -> None:
        """Count an upgrade refused with HTTP ``status``."""
        refused = self.refused
        refused[status] = refused.get(status, 0) + 1

    def close(self, code: int) -> None:
        """Count a websocket that ended with ``code``."""
        closes = self.closes
        closes[code] = closes.get(code, 0) + 1

    def snapshot(self, connections: int, buffered: int = 0, buffered_max: int = 0) -> Stats:
        """A :class:`Stats` of these counts and the states given (read by the driver)."""
        return Stats(
            connections=connections,
            pending_handshakes=self.handshakes_pending,
            handshakes_refused=dict(self.refused),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            buffered_bytes=buffered,
            buffered_bytes_max=buffered_max,
            closes=dict(self.closes),
            slow_consumers_dropped=self.slow_dropped,
            loop_lag=self.loop_lag,
        )


#: What every websocket counts into until a driver gives it its own (never read).
UNCOUNTED = Counters()


@dataclass(frozen=True)
class Stats:
    """A driver's figures at one moment (``Reactor.stats()`` and the other drivers').

    Counts are totals since the driver was made; ``connections``, ``pending_handshakes``,
    ``buffered_bytes``, ``buffered_bytes_max`` and ``loop_lag`` are states at the moment.
    """

    #: Open websockets.
    connections: int = 0
    #: Opening handshakes in progress (the standalone server's; 0 where a framework does them).
    pending_handshakes: int = 0
    #: Upgrades refused, by HTTP status (400, 403, 503, ...).
    handshakes_refused: Mapping[int, int] = field(default_factory=dict)
    #: Text and binary messages received.
    messages_in: int = 0
    #: Text and binary messages sent (a broadcast: one per websocket reached).
    messages_out: int = 0
    #: Bytes read from the connections' sockets.
    bytes_in: int = 0
    #: Bytes written to the connections' sockets.
    bytes_out: int = 0
    #: Output queued for the peers and not yet taken by the kernel, all connections together.
    buffered_bytes: int = 0
    #: The largest connection's queued output.
    buffered_bytes_max: int = 0
    #: Websockets ended, by close code.
    closes: Mapping[int, int] = field(default_factory=dict)
    #: Connections dropped because the peer did not read (output past ``max_buffered``).
    slow_consumers_dropped: int = 0
    #: Seconds the last lag probe (a timer every second) fired late: how busy the loop is.
    loop_lag: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (mapping keys as strings)."""
        data = asdict(self)
        data["handshakes_refused"] = {str(k): v for k, v in self.handshakes_refused.items()}
        data["closes"] = {str(k): v for k, v in self.closes.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """The inverse of :meth:`as_dict`."""
        values = dict(data)
        values["handshakes_refused"] = {int(k): int(v) for k, v in data.get("handshakes_refused", {}).items()}
        values["closes"] = {int(k): int(v) for k, v in data.get("closes", {}).items()}
        return cls(**values)


def _add(total: dict[int, int], more: Mapping[int, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def combine(snapshots: Iterable[Stats]) -> Stats:
    """Several drivers' (or workers') figures as one: sums, except ``buffered_bytes_max`` and
    ``loop_lag`` (the largest)."""
    refused: dict[int, int] = {}
    closes: dict[int, int] = {}
    sums = dict.fromkeys(
        (
            "connections",
            "pending_handshakes",
            "messages_in",
            "messages_out",
            "bytes_in",
            "bytes_out",
            "buffered_bytes",
            "slow_consumers_dropped",
        ),
        0,
    )
    largest = 0
    lag = 0.0
    for stats in snapshots:
        for name in sums:
            sums[name] += getattr(stats, name)
        largest = max(largest, stats.buffered_bytes_max)
        lag = max(lag, stats.loop_lag)
        _add(refused, stats.handshakes_refused)
        _add(closes, stats.closes)
    return Stats(handshakes_refused=refused, closes=closes, buffered_bytes_max=largest, loop_lag=lag, **sums)


class LagProbe:
    """A timer every :data:`LAG_EVERY` seconds on a driver's loop that stores how late it ran in
    ``counters.loop_lag``. ``call_later(delay, fn)`` schedules on the loop and returns a handle
    with ``cancel()``; ``clock``: the loop's clock."""

    __slots__ = ("counters", "call_later", "clock", "due", "handle")

    def __init__(
        self,
        counters: Counters,
        call_later: Callable[[float, Callable[[], None]], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = counters
        self.call_later = call_later
        self.clock = clock
        self.due = 0.0
        self.handle: Any = None

    def start(self) -> None:
        """Schedule the first sample (on the loop's thread, or before the loop runs)."""
        self.due = self.clock() + LAG_EVERY
        self.handle = self.call_later(LAG_EVERY, self._fire)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self) -> None:
        now = self.clock()
        self.counters.loop_lag = max(0.0, now - self.due)
        self.due = now + LAG_EVERY
        self.handle = self.call_later(LAG_EVERY, self._fire)


class _HasStats(Protocol):
    def stats(self) -> Stats: ...


_live: weakref.WeakSet[_HasStats] = weakref.WeakSet()
_live_lock = threading.Lock()


def track(driver: _HasStats) -> None:
    """Have :func:`live_stats` include ``driver`` while it exists (a weak reference: drivers
    call it when made, so ``--metrics`` finds whatever a server flavour made)."""
    with _live_lock:
        _live.add(driver)


def live_stats() -> Stats:
    """The figures of every driver of this process that exists, combined (:func:`combine`)."""
    with _live_lock:
        drivers = list(_live)
    return combine(driver.stats() for driver in drivers)
