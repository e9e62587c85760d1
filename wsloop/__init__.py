"""wsloop: ws4py's WebSocket API on one selectors reactor thread."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import Any

from . import messaging
from .exc import HandshakeError, HandshakeRejected, ProtocolException, WebSocketException
from .handshake import GUID
from .messaging import *  # noqa: F403 - the message classes, as messaging.__all__ names them
from .websocket import EchoWebSocket, WebSocket

__version__ = "0.1.0"
#: The WebSocket protocol versions spoken (ws4py 0.6.0 says ``(8, 13)``; version 8 was a draft
#: and wsloop answers it with 426 and ``Sec-WebSocket-Version: 13``, as RFC 6455 asks).
WS_VERSION = (13,)
#: The GUID of RFC 6455 §1.3 that the ``Sec-WebSocket-Accept`` value is made with (ws4py's name).
WS_KEY = GUID.encode("ascii")

__all__ = [
    "WebSocket",
    "EchoWebSocket",
    "WebSocketException",
    "ProtocolException",
    "HandshakeError",
    "HandshakeRejected",
    "WS_KEY",
    "WS_VERSION",
    "configure_logger",
    "format_addresses",
    "__version__",
]
__all__ += messaging.__all__


def configure_logger(
    stdout: bool = True, filepath: str | None = None, level: int = logging.INFO
) -> logging.Logger:
    """Log wsloop's records (the ``wsloop`` logger and those below it) at ``level`` to standard
    output and, given ``filepath``, to a file rotated at 10 MiB (three kept), as ws4py's function
    of that name does for ``ws4py``. The application calls it; the library never does."""
    logger = logging.getLogger("wsloop")
    logger.setLevel(level)
    formatter = logging.Formatter("[%(asctime)s] %(levelname)s %(message)s")
    handlers: list[logging.Handler] = []
    if filepath:
        handlers.append(logging.handlers.RotatingFileHandler(filepath, maxBytes=10485760, backupCount=3))
    if stdout:
        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setLevel(level)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def format_addresses(ws: Any) -> str:
    """``"[Local => ip:port | Remote => ip:port]"`` for a websocket over TCP (IPv4 or IPv6), else
    ``"[Bound to '<local address>']"`` (a Unix socket), as ws4py formats them."""
    me, peer = ws.local_address, ws.peer_address
    if isinstance(me, tuple) and isinstance(peer, tuple):
        return f"[Local => {me[0]}:{me[1]:d} | Remote => {peer[0]}:{peer[1]:d}]"
    return f"[Bound to '{me}']"
