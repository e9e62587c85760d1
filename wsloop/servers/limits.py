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

__all__ = ["check_capacity", "DEFAULT_HANDSHAKE_TIMEOUT"]

#: Seconds a client has to send its upgrade request (the standalone and asyncio servers: in all;
#: the gevent and wsgiref adapters: between two reads).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

_RETRY_AFTER = [("Retry-After", "1")]


def check_capacity(served: Sized, max_connections: int | None, upcoming: int = 0) -> None:
    """Refuse an upgrade when ``served`` (plus ``upcoming``: upgrades accepted and not yet handed
    over) already holds ``max_connections`` websockets: :class:`~wsloop.exc.HandshakeError` 503
    with ``Retry-After: 1``. No limit when ``max_connections`` is None."""
    if max_connections is not None and len(served) + upcoming >= max_connections:
        raise HandshakeError("server at its connection limit", 503, list(_RETRY_AFTER))
