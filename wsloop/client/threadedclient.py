"""ws4py's ``ws4py.client.threadedclient`` name for the client: ``from
wsloop.client.threadedclient import WebSocketClient`` ports a ws4py program unchanged. The
client is driven by a reactor (see :mod:`wsloop.client`), not by a thread of its own."""

from . import WebSocketClient

__all__ = ["WebSocketClient"]
