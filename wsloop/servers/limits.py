"""Bounds on accepting that the servers share: the connection limit, pending handshakes, and
the back-off after ``accept()`` failed for want of resources."""

from __future__ import annotations

from ..upgrade import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES, check_capacity

__all__ = [
    "check_capacity",
    "pending_limit",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "ACCEPT_BACKOFF_MIN",
    "ACCEPT_BACKOFF_MAX",
]

#: Seconds the standalone server stops accepting after ``accept()`` failed for want of resources
#: (EMFILE, ENFILE, ENOBUFS, ENOMEM): the first pause, doubled while it keeps failing, up to the
#: second.
ACCEPT_BACKOFF_MIN = 0.1
ACCEPT_BACKOFF_MAX = 1.0


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
