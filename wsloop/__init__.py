"""wsloop: ws4py's WebSocket API on one selectors reactor thread."""

from .exc import HandshakeError, HandshakeRejected, ProtocolException, WebSocketException
from .messaging import (
    BinaryMessage,
    CloseControlMessage,
    Message,
    PingControlMessage,
    PongControlMessage,
    TextMessage,
)
from .websocket import EchoWebSocket, WebSocket

__version__ = "0.1.0"
WS_VERSION = (13,)

__all__ = [
    "WebSocket",
    "EchoWebSocket",
    "Message",
    "TextMessage",
    "BinaryMessage",
    "CloseControlMessage",
    "PingControlMessage",
    "PongControlMessage",
    "WebSocketException",
    "ProtocolException",
    "HandshakeError",
    "HandshakeRejected",
    "__version__",
]
