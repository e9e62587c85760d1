"""ws4py's ``ws4py.client.threadedclient``: ``from wsloop.client.threadedclient import
WebSocketClient`` ports a ws4py program unchanged. The client is driven by a reactor (see
:mod:`wsloop.client`), not by a thread of its own; its ``daemon`` flag keeps ws4py's meaning for
the interpreter's exit."""

from . import WebSocketClient

__all__ = ["WebSocketClient"]
