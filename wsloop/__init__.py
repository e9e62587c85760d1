"""wsloop: ws4py's WebSocket API on one selectors reactor thread."""

from . import messaging
from .exc import HandshakeError, HandshakeRejected, ProtocolException, WebSocketException
from .messaging import *  # noqa: F403 - the message classes, as messaging.__all__ names them
from .websocket import EchoWebSocket, WebSocket

__version__ = "0.1.0"
WS_VERSION = (13,)

__all__ = [
    "WebSocket",
    "EchoWebSocket",
    "WebSocketException",
    "ProtocolException",
    "HandshakeError",
    "HandshakeRejected",
    "__version__",
]
__all__ += messaging.__all__
