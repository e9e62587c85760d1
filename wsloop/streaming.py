"""ws4py's ``Stream``: the byte stream of one connection parsed into messages, fed through a
generator (``stream.parser.send(data)``), on wsloop's :class:`~wsloop.protocol.Protocol`
(fragments, UTF-8 validation, control-frame rules and the message size limit are its own)."""

from __future__ import annotations

import inspect
from collections.abc import Generator

from .framing import OPCODE_TEXT, is_valid_close_code
from .messaging import (
    BinaryMessage,
    CloseControlMessage,
    Message,
    PingControlMessage,
    PongControlMessage,
    TextMessage,
)
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, Protocol, State

__all__ = ["Stream", "VALID_CLOSING_CODES"]

#: ws4py's list of the close codes under 3000 a close frame may carry (with 1012-1014, which
#: IANA registered and ws4py 0.6.0 refuses); 3000-4999 are valid too.
VALID_CLOSING_CODES = [code for code in range(1000, 3000) if is_valid_close_code(code)]

StreamInput = bytes | bytearray | memoryview | None


def _discard(data: bytes) -> None:
    """The protocol's writes (its pongs and close replies): a Stream's owner writes its own."""


class _StreamProtocol(Protocol):
    """The Protocol a Stream parses with: it lists the pings it receives instead of answering."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream, client: bool, max_message_size: int | None) -> None:
        super().__init__(client, max_message_size, _discard, stream._on_message)
        self.stream = stream

    def _answer_pings(self, payloads: list[bytes]) -> None:
        pings = self.stream.pings
        if pings is not None:
            pings.extend([PingControlMessage(payload) for payload in payloads])


class Stream:
    """The RFC 6455 parser of ws4py's ``WebSocket``: send bytes to :attr:`parser`, then read what
    they completed.

    :attr:`message` is the last text or binary message received (``completed`` is False while a
    fragmented one is still arriving); :attr:`pings` and :attr:`pongs` list the control messages
    received; :attr:`closing` is the peer's :class:`~wsloop.messaging.CloseControlMessage`
    (code 1005 when its close frame had no payload); :attr:`errors` lists a
    :class:`~wsloop.messaging.CloseControlMessage` with the code to close with when the input
    broke RFC 6455 (after which further input is ignored). Nothing is written: the owner answers
    pings (:meth:`pong`) and closes.

    :param always_mask: :meth:`ping` and :meth:`pong` build masked frames (a client's).
    :param expect_masking: incoming frames must be masked (a server's); else they must not be.
        Read when :attr:`parser` is first used.
    :param max_message_size: largest message accepted, in bytes (``None``: no limit); a larger
        one is an error with code 1009.
    """

    def __init__(
        self,
        always_mask: bool = False,
        expect_masking: bool = True,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.message: Message | None = None
        self.pings: list[PingControlMessage] | None = []
        self.pongs: list[PongControlMessage] | None = []
        self.closing: CloseControlMessage | None = None
        self.errors: list[CloseControlMessage] | None = []
        self.always_mask = always_mask
        self.expect_masking = expect_masking
        self.max_message_size = max_message_size
        self._parser: Generator[int, StreamInput, None] | None = None
        self._protocol: _StreamProtocol | None = None
        self._partial: Message | None = None  # what ``message`` shows of a message in progress
        self._completed = False  # a text or binary message completed during the current feed

    # ------------------------------------------------------------------ parsing

    @property
    def parser(self) -> Generator[int, StreamInput, None]:
        """The parsing generator (started): ``send()`` it bytes; it returns how many it wants next."""
        if self._parser is None:
            self._parser = self.receiver()
            next(self._parser)
        return self._parser

    def receiver(self) -> Generator[int, StreamInput, None]:
        """The generator behind :attr:`parser`.

        Each ``send`` takes any amount of bytes and returns how many the current frame still
        needs (as ws4py: 1 for each of the first two header bytes, then the extended length,
        the masking key, the payload). At most one text or binary message completes per
        ``send``, since :attr:`message` holds one: bytes after it are kept and parsed by the
        next ``send`` (``send(None)`` or ``next()`` will do), and the ``send`` returns 0 then.
        """
        protocol = self._protocol = _StreamProtocol(self, not self.expect_masking, self.max_message_size)
        held: memoryview | None = None  # bytes after a completed message, parsed next time
        try:
            while True:
                data = yield (0 if held is not None else self._wanted(protocol))
                if held is not None:
                    view = memoryview(held.tobytes() + bytes(data)) if data else held
                    held = None
                elif not data:
                    continue
                else:
                    # Bytes are parsed through a view (held bytes are not copied); anything else
                    # is copied once, as the caller may change it once this send returns.
                    view = memoryview(data if type(data) is bytes else bytes(data))
                held = self._feed(protocol, view)
        finally:
            self._protocol = self._parser = None
            self._release()

    def _wanted(self, protocol: Protocol) -> int:
        """How many bytes complete the current stage of the frame being parsed (ws4py's stages)."""
        # Read from the protocol's parsing state: the incomplete header it holds, or the payload
        # bytes still to come.
        remaining = protocol._remaining
        if remaining:
            return remaining
        header = protocol._hdr
        have = len(header)
        if have < 2:
            return 1
        length = header[1] & 0x7F
        end = 4 if length == 126 else 10 if length == 127 else 2
        return end - have if have < end else end + 4 - have

    def _feed(self, protocol: Protocol, view: memoryview) -> memoryview | None:
        """Parse ``view`` (of bytes), one frame stage at a time; return what follows a completed
        message."""
        end = len(view)
        pos = 0
        self._completed = False
        while pos < end:
            if protocol.failure is not None or protocol.state is State.CLOSED:
                return None  # the rest is ignored: the connection is failed or closed
            stop = min(pos + self._wanted(protocol), end)
            protocol.feed(view[pos:stop])
            pos = stop
            failure = protocol.failure
            if failure is not None:
                if self.errors is not None:
                    self.errors.append(CloseControlMessage(failure.code, failure.reason))
                return None
            if self._completed:
                return view[pos:] if pos < end else None
            opcode = protocol._msg_op
            if opcode and self._partial is None and not protocol._remaining:
                # A fragmented message is under way (its first frame is in): shown as ws4py does,
                # incomplete; its data comes whole when its last frame does.
                partial = TextMessage(b"") if opcode == OPCODE_TEXT else BinaryMessage(b"")
                partial.completed = False
                self._partial = self.message = partial
        return None

    def _on_message(self, message: Message) -> None:
        if type(message) is PongControlMessage:
            if self.pongs is not None:
                self.pongs.append(message)
        elif type(message) is CloseControlMessage:
            self.closing = message if message.code is not None else CloseControlMessage(1005)
        else:
            self._partial = None
            self._completed = True
            self.message = message

    @property
    def has_message(self) -> bool:
        """Whether :attr:`message` is a whole message (not one still arriving)."""
        return self.message is not None and self.message.completed

    # ------------------------------------------------------------------ building

    def text_message(self, text: str | bytes) -> TextMessage:
        """A :class:`~wsloop.messaging.TextMessage` of ``text``."""
        return TextMessage(text=text)

    def binary_message(self, bytes: bytes) -> BinaryMessage:  # noqa: A002 - ws4py's name
        """A :class:`~wsloop.messaging.BinaryMessage` of ``bytes``."""
        return BinaryMessage(bytes)

    def close(self, code: int | None = 1000, reason: str | bytes = "") -> CloseControlMessage:
        """A :class:`~wsloop.messaging.CloseControlMessage` (nothing is sent)."""
        return CloseControlMessage(code=code, reason=reason)

    def ping(self, data: str | bytes = "") -> bytes:
        """A ping frame's bytes (masked if :attr:`always_mask`)."""
        return PingControlMessage(data).single(mask=self.always_mask)

    def pong(self, data: str | bytes = "") -> bytes:
        """A pong frame's bytes (masked if :attr:`always_mask`)."""
        return PongControlMessage(data).single(mask=self.always_mask)

    # ------------------------------------------------------------------ release

    def release(self) -> None:
        """Stop parsing and drop what the stream holds (ws4py's ``_cleanup``): :attr:`message`
        and :attr:`closing` become None, and so do the lists."""
        parser = self._parser
        self._parser = None
        if parser is not None and inspect.getgeneratorstate(parser) != inspect.GEN_RUNNING:
            parser.close()
        self._release()

    _cleanup = release

    def _release(self) -> None:
        self.message = None
        self._partial = None
        self.pings = None
        self.pongs = None
        self.closing = None
        self.errors = None
