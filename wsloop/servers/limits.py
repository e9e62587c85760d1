"""The connection limit every server flavour applies the same way (README, "Limits and timeouts").

Each adapter calls :func:`check_capacity` where it accepts an upgrade, with what serves its
websockets: the standalone server's manager, the framework adapters' reactor (``len()`` of a
:class:`~wsloop.poller.Reactor` counts the websockets other threads handed over and the loop has
not added yet, so a burst of upgrades on a framework's threads or greenlets is counted as it
happens), or the asyncio server's set of upgraded connections.
"""

from __future__ import annotations

from collections.abc import Sized

from ..exc import HandshakeError

__all__ = [
    "check_capacity",
    "pending_limit",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "ACCEPT_BACKOFF_MIN",
    "ACCEPT_BACKOFF_MAX",
]

#: Seconds a client has to send its upgrade request (the standalone and asyncio servers: in all;
#: the gevent and wsgiref adapters: between two reads).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: Connections whose opening handshake is in progress, at most (the standalone server's
#: ``max_pending_handshakes``); at the limit it stops accepting until an eighth are done.
DEFAULT_MAX_PENDING_HANDSHAKES = 1024

#: Seconds the standalone server stops accepting after ``accept()`` failed for want of resources
#: (EMFILE, ENFILE, ENOBUFS, ENOMEM): the first pause, doubled while it keeps failing, up to the
#: second.
ACCEPT_BACKOFF_MIN = 0.1
ACCEPT_BACKOFF_MAX = 1.0

_RETRY_AFTER = [("Retry-After", "1")]


def pending_limit(max_pending_handshakes: int | None) -> int | None:
    """The handshakes in progress a server allows: ``max_pending_handshakes`` (None: no limit of
    its own), and never more than half the process's open-file limit (``RLIMIT_NOFILE``, soft;
    at least 1), so that a flood of connections that never send a request cannot take every file
    descriptor (the websockets already open, a broker's sockets and the handlers' files keep
    the rest)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        soft = -1
    if soft > 0:  # RLIM_INFINITY is -1
        cap = max(1, soft // 2)
        if max_pending_handshakes is None or max_pending_handshakes > cap:
            return cap
    return max_pending_handshakes


def check_capacity(served: Sized, max_connections: int | None, upcoming: int = 0) -> None:
    """Refuse an upgrade when ``served`` (plus ``upcoming``: upgrades accepted and not yet handed
    over) already holds ``max_connections`` websockets: :class:`~wsloop.exc.HandshakeError` 503
    with ``Retry-After: 1``. No limit when ``max_connections`` is None."""
    if max_connections is not None and len(served) + upcoming >= max_connections:
        raise HandshakeError("server at its connection limit", 503, list(_RETRY_AFTER))
