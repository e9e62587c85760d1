"""Exceptions raised by wsloop, with ws4py's names kept where ws4py had them."""

from __future__ import annotations

from collections.abc import Iterable

from .headers import status_phrase

__all__ = [
    "WebSocketException",
    "ProtocolException",
    "FrameTooLargeException",
    "UnsupportedFrameTypeException",
    "TextFrameEncodingException",
    "InvalidBytesError",
    "HandshakeError",
    "HandshakeRejected",
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

    The first parameter is ws4py's ``msg`` (kept as :attr:`msg`); wsloop's name for it,
    ``reason``, is accepted by keyword too (both name the same text).
    """

    def __init__(
        self,
        msg: str | None = None,
        status: int = 400,
        headers: list[tuple[str, str]] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        if reason is None:
            if msg is None:
                raise TypeError("HandshakeError() needs its message (msg)")
            reason = msg
        elif msg is not None and msg != reason:
            raise TypeError("give HandshakeError's message as msg or reason, not both")
        super().__init__(reason)
        self.reason = reason
        #: ws4py's name for :attr:`reason`.
        self.msg = reason
        self.status = status
        self.headers = headers or []


class HandshakeRejected(HandshakeError):
    """Raised by a handler's ``process_request`` hook to refuse an upgrade.

    ``status`` is the HTTP status to answer (3xx to 5xx: 401, 403, ...), ``reason`` the one-line
    body (default: the status's phrase) and ``headers`` extra response headers, such as
    ``WWW-Authenticate`` or ``Location``.
    """

    def __init__(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        if not 300 <= status <= 599:
            raise ValueError(f"a refused handshake needs a 3xx, 4xx or 5xx status, not {status}")
        pairs = [(str(name), str(value)) for name, value in headers]
        for name, value in pairs:
            if not name or any(c in name for c in ":\r\n") or "\r" in value or "\n" in value:
                raise ValueError(f"invalid response header {name!r}: {value!r}")
        if reason is None:
            reason = status_phrase(status)
        super().__init__(reason, status, pairs)


class StreamClosed(WebSocketException):
    """An operation needs an open connection and the connection is closed or closing."""
