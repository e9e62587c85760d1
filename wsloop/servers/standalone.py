"""A WebSocket server with no framework: ``wss://`` or ``ws://``, either poller, the demo page at ``/``.

:class:`WebSocketServer` listens; its acceptor (:mod:`wsloop.servers.acceptor`) reads each
opening handshake and asks the server's :class:`~wsloop.upgrade.ServerPolicy` for the answer.
:func:`serve` is the command line's entry.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from ..brokers import Broker, make_broker
from ..poller import Reactor, ThreadedManager, make_manager
from ..upgrade import ServeOptions, ServerPolicy, demo_page, request_environ
from ..websocket import EchoWebSocket, WebSocket
from .acceptor import acceptor_for
from .limits import DEFAULT_MAX_PENDING_HANDSHAKES
from .running import host_family, listen_url, run_until_stopped

__all__ = ["WebSocketServer", "demo_page", "request_environ", "serve", "tls_context"]

logger = logging.getLogger("wsloop.server")


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server TLS context for a PEM certificate chain and its key (in ``certfile`` when
    ``keyfile`` is None): TLS 1.2 or later, renegotiation off (it would make a non-blocking
    write wait for a read), ALPN ``http/1.1``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile, keyfile)
    return context


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` in :func:`~wsloop.servers.running.host_family`'s
    family for ``host``."""
    return socket.create_server((host, port), family=host_family(host), backlog=backlog)


class WebSocketServer:
    """Serve ``handler_cls`` websockets on ``host:port``.

    ``options`` (:class:`~wsloop.upgrade.ServeOptions`; the keyword arguments ``option_kwargs``
    override them, under the same names) set the limits of docs/limits.md's table; an option not
    given takes the handler class's attribute. ``max_pending_handshakes`` is 1,024 by default
    (and at most half the open-file limit, see :func:`~wsloop.servers.limits.pending_limit`): at
    the limit accepting pauses until an eighth of them are done; with the threaded poller it also
    bounds the handshake threads.

    :param poller: ``"selectors"`` (one reactor thread) or ``"threaded"`` (a thread each).
    :param manager: the driver to serve with instead of a new one of ``poller``.
    :param ssl_context: serve ``wss://`` with this server-side context.
    :param certfile: serve ``wss://`` with this PEM certificate chain (and ``keyfile``, unless
        the key is in ``certfile``), through :func:`tls_context`.
    :param host: the address or name to listen on, IPv4 or IPv6 (its first address).
    :param sock: a listening socket to serve on instead of binding ``host:port`` (a worker of
        :mod:`wsloop.workers` gets one), TCP or Unix (``AF_UNIX``, for ``ws+unix://`` clients);
        the server closes it when it stops.
    :param backlog: the listen backlog, where connections wait while accepting pauses.
    :param broker: join the reactor to this :class:`~wsloop.brokers.Broker` (selectors poller
        only): ``broadcast()`` and channels then reach every process joined to it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        handler_cls: type[WebSocket] = EchoWebSocket,
        options: ServeOptions | None = None,
        *,
        poller: str = "selectors",
        manager: Reactor | ThreadedManager | None = None,
        ssl_context: ssl.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        sock: socket.socket | None = None,
        backlog: int = 1024,
        broker: Broker | None = None,
        **option_kwargs: Any,
    ) -> None:
        if ssl_context is None and certfile is not None:
            ssl_context = tls_context(certfile, keyfile)
        self.ssl_context = ssl_context
        self.options = options = ServeOptions.of(options, **option_kwargs)
        self.policy = ServerPolicy(handler_cls, options)
        self.handler_cls = handler_cls
        self.handshake_timeout = options.handshake_timeout
        self.max_pending_handshakes = options.pending_handshakes(DEFAULT_MAX_PENDING_HANDSHAKES)
        self.manager = (
            manager
            if manager is not None
            else make_manager(
                poller, close_timeout=self.policy.close_timeout, max_buffered=options.max_buffered
            )
        )
        self.sock = sock if sock is not None else _listen(host, port, backlog)
        self.sock.setblocking(False)
        self._stopped = threading.Event()
        self._started = False
        self.acceptor = acceptor_for(self, self.manager)
        if broker is not None:
            self.manager.use_broker(broker)

    @property
    def server_address(self) -> tuple[str, int]:
        """The address and port listened on; for a Unix socket its path and 0."""
        name = self.sock.getsockname()
        if isinstance(name, tuple):
            return name[:2]  # type: ignore[return-value]
        return os.fsdecode(name), 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        """``ws://host:port/`` (``wss://`` with TLS; see :func:`~wsloop.servers.running.listen_url`),
        or ``ws+unix:///path`` for a Unix socket."""
        return listen_url(self.sock.getsockname(), "wss" if self.ssl_context else "ws")

    @property
    def pending_handshakes(self) -> int:
        """Connections accepted whose opening handshake is not done yet."""
        return self.acceptor.pending

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait_stopped(self, timeout: float) -> bool:
        return self._stopped.wait(timeout)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start serving in the background."""
        if self._started:
            return
        self._started = True
        self.acceptor.start()

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called (from another thread or a signal handler)."""
        self.start()
        while not self._stopped.wait(0.5):
            pass

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, close every websocket with 1001 (waiting up to ``timeout`` for the
        closing handshakes), and release every socket."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._started:
            self.acceptor.stop()
        self.manager.stop(timeout)
        self.acceptor.join()
        self.sock.close()

    def __enter__(self) -> WebSocketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str,
    port: int,
    handler_cls: type[WebSocket],
    options: ServeOptions | None = None,
    *,
    ready: Callable[[str], None],
    stop: threading.Event,
    poller: str = "selectors",
    ssl_context: ssl.SSLContext | None = None,
    sock: socket.socket | None = None,
    broker: str | Broker | None = None,
    started: Callable[[WebSocketServer], None] | None = None,
    **option_kwargs: Any,
) -> None:
    """Serve ``handler_cls`` until ``stop`` is set, then close all with 1001 (the CLI's entry).

    ``options`` and ``option_kwargs``: as :class:`WebSocketServer` takes them. ``sock``: a
    listening socket to use instead of binding ``host:port``. ``broker``: a
    :class:`~wsloop.brokers.Broker` or a URL (``redis://host:port/db``; such a broker is made
    here and closed at the end); ``ready`` is called once its subscriptions are in effect, or
    after 5 s without them (logged; local clients are served meanwhile). ``started(server)``,
    if given, is called once the server has started, before ``ready``.
    """
    joined = make_broker(broker)
    server = WebSocketServer(
        host,
        port,
        handler_cls,
        ServeOptions.of(options, **option_kwargs),
        sock=sock,
        broker=joined,
        poller=poller,
        ssl_context=ssl_context,
    )

    def shutdown() -> None:
        server.stop()
        if joined is not None and joined is not broker:
            joined.close()

    try:
        server.start()
        if started is not None:
            started(server)
        if joined is not None and not joined.wait_ready(5.0):
            logger.warning(
                "%r: subscriptions not in effect after 5 s; serving local clients meanwhile", joined
            )
    except BaseException:
        shutdown()
        raise
    run_until_stopped(stop, ready, server.url, shutdown, health=server.options.health)
