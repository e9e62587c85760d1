"""ws4py's ``tulipserver`` (its asyncio server) under its own name: :class:`WebSocketProtocol`.

As in ws4py's docstring (only the imports change)::

    from wsloop.async_websocket import EchoWebSocket
    from wsloop.servers.tulipserver import WebSocketProtocol

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: WebSocketProtocol(EchoWebSocket), "", 9007))
    loop.run_forever()

The protocol is :class:`wsloop.servers.asyncioserver.WebSocketProtocol` with ws4py's
``close()`` and ``timeout()``.
"""

from __future__ import annotations

from . import asyncioserver

__all__ = ["WebSocketProtocol"]

# ws4py's module constants.
LF = b"\n"
CRLF = b"\r\n"
SPACE = b" "
EMPTY = b""


class WebSocketProtocol(asyncioserver.WebSocketProtocol):
    """One connection served on the running event loop: the opening handshake, then a
    ``handler_cls`` websocket (see :class:`wsloop.servers.asyncioserver.WebSocketProtocol` for
    the options); ``ws`` is that websocket once the connection has upgraded (None before)."""

    def close(self) -> None:
        """Start the websocket's closing handshake (1000), or drop a connection that has not
        upgraded yet."""
        self.shutdown(1000, "")

    def timeout(self) -> None:
        """Drop the connection at once, no closing handshake (the websocket's ``closed()``
        gets 1006)."""
        self.abort()
