"""ws4py's message classes: what ``received_message`` gets and what ``send`` accepts.

``data`` is always ``bytes``; a text message's ``str()`` decodes it. A close frame's ``reason`` is
``bytes`` too, as ws4py's (``text`` gives it as ``str``). The classes use ``__slots__`` because one
is made for every message received.
"""

from __future__ import annotations

from .framing import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    build_frame,
    encode_close_payload,
)

__all__ = [
    "Message",
    "TextMessage",
    "BinaryMessage",
    "CloseControlMessage",
    "PingControlMessage",
    "PongControlMessage",
]

Payload = str | bytes | bytearray | memoryview
_BYTES = bytes  # BinaryMessage's parameter shadows the builtin (ws4py's name for it)


def _to_bytes(data: Payload | None, encoding: str | None = "utf-8") -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode(encoding or "utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{type(data).__name__} is not valid message data")


class Message:
    """A WebSocket message: an ``opcode`` and its payload ``data`` (bytes); ``encoding`` is the
    text's (None for a :class:`BinaryMessage`, as in ws4py)."""

    __slots__ = ("opcode", "data", "encoding", "completed")
    is_text = False
    is_binary = False

    def __init__(self, opcode: int, data: Payload | None = b"", encoding: str | None = "utf-8") -> None:
        self.opcode = opcode
        self.data = data if type(data) is bytes else _to_bytes(data, encoding)
        self.encoding = encoding
        self.completed = True

    def single(self, mask: bool = False) -> bytes:
        """This message as one whole frame."""
        return build_frame(self.opcode, self.data, True, False, mask)

    def fragment(self, first: bool = False, last: bool = False, mask: bool = False) -> bytes:
        """This message's data as one fragment of a larger message (ws4py's API)."""
        return build_frame(self.opcode if first else OPCODE_CONTINUATION, self.data, last, False, mask)

    def extend(self, data: Payload) -> None:
        """Append ``data`` to the payload."""
        self.data += _to_bytes(data, self.encoding)

    def __len__(self) -> int:
        return len(self.data)

    def __str__(self) -> str:
        return self.data.decode(self.encoding or "utf-8", "replace")

    def __bytes__(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.data)} bytes>"


class TextMessage(Message):
    """A text message; ``str(m)`` is the text, ``len(m)`` its length in characters."""

    __slots__ = ()
    is_text = True

    def __init__(self, text: Payload | None = None) -> None:
        self.opcode = OPCODE_TEXT
        self.data = text if type(text) is bytes else _to_bytes(text)
        self.encoding = "utf-8"
        self.completed = True

    def __len__(self) -> int:
        data = self.data
        return len(data) if data.isascii() else len(data.decode("utf-8"))

    def __str__(self) -> str:
        return self.data.decode("utf-8")


class BinaryMessage(Message):
    """A binary message; ``len(m)`` is its length in bytes, its ``encoding`` None (ws4py's)."""

    __slots__ = ()
    is_binary = True

    def __init__(self, bytes: Payload | None = None) -> None:  # noqa: A002 - ws4py's name
        self.opcode = OPCODE_BINARY
        self.data = bytes if type(bytes) is _BYTES else _to_bytes(bytes)
        self.encoding = None
        self.completed = True


class CloseControlMessage(Message):
    """A close frame: ``code`` (None when the frame had no payload) and ``reason``, ``bytes``
    (UTF-8) as in ws4py, whether given as ``str`` or ``bytes``; :attr:`text` (and ``str()``) is
    the reason as ``str``."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int | None = 1000, reason: str | bytes | bytearray | None = b"") -> None:
        if isinstance(reason, str):
            reason = reason.encode("utf-8")
        elif reason is None:
            reason = b""  # (ws4py keeps None, and its str() then fails)
        elif type(reason) is not bytes:
            reason = bytes(reason)
        Message.__init__(self, OPCODE_CLOSE, encode_close_payload(code, reason))
        self.code = code
        self.reason: bytes = reason

    @property
    def text(self) -> str:
        """The reason as ``str`` (wsloop's name; undecodable bytes are replaced)."""
        return self.reason.decode("utf-8", "replace")

    def __str__(self) -> str:
        return self.text


class PingControlMessage(Message):
    """A ping frame (payload of at most 125 bytes)."""

    __slots__ = ()

    def __init__(self, data: Payload | None = None) -> None:
        Message.__init__(self, OPCODE_PING, data)


class PongControlMessage(Message):
    """A pong frame; ``ponged(pong)`` receives one."""

    __slots__ = ()

    def __init__(self, data: Payload | None = None) -> None:
        Message.__init__(self, OPCODE_PONG, data)
