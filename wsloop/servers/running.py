"""What every server flavour's ``serve()`` shares: its signature (:class:`ServeFunction`), the
run-until-stopped part (:func:`run_until_stopped`), and the address family and URL of a listening
address (:func:`host_family`, :func:`listen_url`)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..health import HealthCheck
from ..upgrade import ServeOptions
from ..websocket import WebSocket

__all__ = ["ServeFunction", "host_family", "listen_url", "run_until_stopped"]


class ServeFunction(Protocol):
    """``wsloop.servers.<flavour>.serve``, as the command line calls it: serve ``handler_cls``
    on ``host:port`` under ``options`` (the keyword arguments override them, under
    :class:`~wsloop.upgrade.ServeOptions`'s names; the standalone server takes a few more),
    call ``ready(url)`` once listening, return once ``stop`` is set and everything is closed."""

    def __call__(
        self,
        host: str,
        port: int,
        handler_cls: type[WebSocket],
        options: ServeOptions | None = None,
        *,
        ready: Callable[[str], None],
        stop: threading.Event,
        **option_kwargs: Any,
    ) -> None: ...


def run_until_stopped(
    stop: threading.Event,
    ready: Callable[[str], None],
    url: str,
    shutdown: Callable[[], None],
    sleep: Callable[[float], object] | None = None,
    health: HealthCheck | None = None,
) -> None:
    """Call ``ready(url)``, wait until ``stop`` is set, then ``shutdown()`` (whatever happens in
    between). ``sleep``: poll ``stop`` with this (a framework's own sleep, where a blocking wait
    would stall its loop) instead of waiting on it. ``health``: once ``stop`` is set, make it
    answer 503 and wait its ``drain_delay`` (:meth:`~wsloop.health.HealthCheck.drain`) first."""
    try:
        ready(url)
        if sleep is None:
            while not stop.wait(0.5):
                pass
        else:
            while not stop.is_set():
                sleep(0.2)
        if health is not None:
            health.drain(sleep)
    finally:
        shutdown()


def host_family(host: str) -> socket.AddressFamily:
    """The address family to listen on ``host`` with: that of the first address it resolves to
    (as :mod:`http.server`'s command line does), IPv6 for ``"::1"`` or ``"::"``; ``""`` (every
    address) is IPv4, as for ``bind()``."""
    if not host:
        return socket.AF_INET
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]


def listen_url(address: Any, scheme: str = "ws") -> str:
    """The URL a client reaches a server listening at ``address`` with (a socket's
    ``getsockname()``): an IPv6 address in brackets, a wildcard address as the loopback one of
    its family, ``ws+unix:///path`` for a Unix socket's path."""
    if isinstance(address, (str, bytes)):
        path = address.decode() if isinstance(address, bytes) else address
        return f"{scheme}+unix://{path}"
    host, port = address[0], address[1]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"
