"""Exceptions raised by wsloop, with ws4py's names kept where ws4py had them."""

from __future__ import annotations

__all__ = [
    "WebSocketException",
    "ProtocolException",
    "FrameTooLargeException",
    "UnsupportedFrameTypeException",
    "TextFrameEncodingException",
    "InvalidBytesError",
    "HandshakeError",
    "StreamClosed",
]


class WebSocketException(Exception):
    """Base class of every wsloop error."""


class ProtocolException(WebSocketException):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    code = 1002

    def __init__(self, reason: str = "protocol error", code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class FrameTooLargeException(ProtocolException):
    """A message or frame exceeds the configured maximum size (close code 1009)."""

    code = 1009


class UnsupportedFrameTypeException(ProtocolException):
    """A frame carries an opcode RFC 6455 reserves (close code 1002)."""


class TextFrameEncodingException(ProtocolException):
    """A text message or close reason is not valid UTF-8 (close code 1007)."""

    code = 1007


InvalidBytesError = TextFrameEncodingException


class HandshakeError(WebSocketException):
    """The opening handshake failed.

    On the server side ``status`` is the HTTP status to answer with and ``headers`` any extra
    response headers (``Sec-WebSocket-Version`` on a 426, for instance).
    """

    def __init__(self, reason: str, status: int = 400, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers or []


class StreamClosed(WebSocketException):
    """An operation needs an open connection and the connection is closed or closing."""
