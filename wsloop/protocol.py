"""One WebSocket connection's RFC 6455 state machine, free of I/O (ws4py's ``Stream`` role).

Bytes in: :meth:`Protocol.feed`, which hands each message to ``on_message`` as it completes. Calls
in: :meth:`Protocol.send`, :meth:`Protocol.ping`, :meth:`Protocol.close`. Bytes out: every frame,
the automatic pong and close replies included, goes to ``write``. The transport owns the socket.
"""

from __future__ import annotations

import codecs
import enum
import os
from collections.abc import Callable
from typing import Any

from .deflate import PerMessageDeflate
from .exc import (
    FrameTooLargeException,
    ProtocolException,
    TextFrameEncodingException,
    UnsupportedFrameTypeException,
)
from .framing import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    REPEAT,
    SPEEDUPS,
    build_frame,
    empty_bytearray,
    encode_close_payload,
    frame_header,
    is_valid_close_code,
    mask,
    mask_into,
)
from .framing import small_frame as _small_frame
from .messaging import BinaryMessage, CloseControlMessage, Message, PongControlMessage, TextMessage
from .stats import UNCOUNTED, Counters

__all__ = [
    "State",
    "Protocol",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FRAGMENT_OVERHEAD",
    "PONG_BURST",
    "SMALL_HEADERS",
]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: What each continuation frame of a fragmented message counts toward ``max_message_size``
#: besides its payload: a message's memory, not only its payload bytes, stays within the limit,
#: and a message of endless empty fragments fails (1009) after ``max_message_size / 64`` of them.
FRAGMENT_OVERHEAD = 64
_UNLIMITED = 1 << 63
# Payloads up to this size are concatenated with their header into one write; larger ones are
# written as two buffers so the payload is never copied just to prepend a few bytes.
_COALESCE = 16 * 1024
# feed() copies a chunk of up to this many bytes (not yet parsed) to bytes before parsing it;
# larger chunks are parsed through the caller's buffer (a memoryview) without copying.
_COPY_UNDER = 16 * 1024
#: Of a run of pings parsed from one chunk, how many are each answered (in one write) before
#: only the last one is (RFC 6455 §5.5.3 lets an endpoint answer only the most recent ping).
PONG_BURST = 16
# Pieces of a message in progress smaller than this are copied together into one bytearray
# instead of each being kept (a bytes object and a list slot, ~60 bytes, whatever its size),
# once the message has _LOOSE_PARTS pieces (the common message of a few fragments copies none).
_OWN_PART = 1024
_LOOSE_PARTS = 8
# A binary frame of at least _DIRECT_FROM payload bytes that is not all in the chunk parsed, but
# at least an eighth of it is (so a peer that announces a large frame and trickles it in cannot
# make us hold more than 8x what it sent), is read into a buffer of its size: see Protocol.into.
_DIRECT_FROM = 64 * 1024
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
# The key of an unmasked frame: XOR with it leaves a small payload as is (see Protocol.feed).
_NO_KEY = b"\0\0\0\0"
# The header of an unmasked, unfragmented text or binary frame of 0..125 payload bytes, by length.
_TEXT_HEADERS = tuple(bytes((0x81, n)) for n in range(126))
_BINARY_HEADERS = tuple(bytes((0x82, n)) for n in range(126))
#: Those two tables, by ``binary``: ``SMALL_HEADERS[binary][len(payload)] + payload`` is the
#: whole frame of a small message sent by a server without compression.
SMALL_HEADERS = (_TEXT_HEADERS, _BINARY_HEADERS)


_NOTHING_OUT: list[bytes] = []  # Protocol.outgoing when a write was given: always empty
_NOTHING_IN: list[Message] = []  # Protocol.received when a callback was given: always empty


def _ignore(message: Message) -> None:
    pass


class State(enum.Enum):
    """A connection's state.

    OPEN ──close() or a protocol error──▶ CLOSING ──peer's close──▶ CLOSED;
    OPEN ──peer's close (we reply)──▶ CLOSED.
    """

    OPEN = 1
    CLOSING = 2  # we sent a close frame (or failed the connection); waiting for the peer's close
    CLOSED = 3  # the closing handshake is complete (or abort()): the transport should close


OPEN = State.OPEN
CLOSING = State.CLOSING
CLOSED = State.CLOSED


class Protocol:
    """The RFC 6455 state machine of one connection (server side unless ``client=True``).

    :param client: act as the client: mask outgoing frames, expect unmasked incoming ones.
    :param max_message_size: largest message accepted, in bytes (``None``: no limit); a larger one
        fails the connection with 1009. Each continuation frame of a fragmented message counts
        :data:`FRAGMENT_OVERHEAD` (64) bytes besides its payload.
    :param write: called with each chunk of bytes to send, in order. Pings are answered as they
        come, except that a run of pings parsed from one chunk gets one write: a pong for each of
        the first :data:`PONG_BURST` (16), then one for the last only.
    :param on_message: called with each message as it completes (by default messages collect
        in :attr:`received`).
    :param on_data: if given, called as ``on_data(payload, opcode)`` (``payload`` bytes) for each
        text and binary message and each pong instead of ``on_message``, so no
        :class:`~wsloop.messaging.Message` is made for them; the peer's close still goes to
        ``on_message`` (as a :class:`~wsloop.messaging.CloseControlMessage`).
    :param deflate: the negotiated permessage-deflate agreement, if any: RSV1 is accepted on the
        first frame of a data message, such messages are inflated in bounded steps (the size limit
        applies to the inflated size), and every data message sent is compressed.
    """

    __slots__ = (
        "client",
        "into",
        "write",
        "outgoing",
        "received",
        "on_message",
        "on_data",
        "deflate",
        "state",
        "close_received",
        "close_sent",
        "failure",
        "_limit",
        "_hdr",
        "_remaining",
        "_f_op",
        "_f_fin",
        "_f_key",
        "_f_len",
        "_f_rsv1",
        "_big",
        "_compressed",
        "_out_compressed",
        "_f_ctrl",
        "_msg_op",
        "_parts",
        "_size",
        "_decoder",
        "counters",
    )

    def __init__(
        self,
        client: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        write: Callable[[bytes], Any] | None = None,
        on_message: Callable[[Message], Any] | None = None,
        deflate: PerMessageDeflate | None = None,
        on_data: Callable[[bytes, int], Any] | None = None,
    ) -> None:
        self.client = client
        self._limit = _UNLIMITED if max_message_size is None else max_message_size
        # The lists are made only when they collect (no write, no callback): else a shared empty
        # one, never appended to (two lists are 112 bytes a connection).
        self.outgoing: list[bytes] = _NOTHING_OUT
        if write is None:
            self.outgoing = []
            write = self.outgoing.append
        self.write: Callable[[bytes], Any] = write
        self.received: list[Message] = _NOTHING_IN
        if on_message is None:
            if on_data is None:
                self.received = []
                on_message = self.received.append
            else:
                on_message = _ignore
        self.on_message: Callable[[Message], Any] = on_message
        self.on_data = on_data
        self.state = OPEN
        self.close_received: CloseControlMessage | None = None
        self.close_sent: CloseControlMessage | None = None
        self.failure: ProtocolException | None = None
        self._hdr = b""  # an incomplete frame header carried over to the next feed()
        self._remaining = 0  # payload bytes of the current frame still to come
        self._f_op = 0
        self._f_fin = 0
        self._f_key: bytes | None = None
        self._f_len = 0
        self._f_rsv1 = 0
        #: The part still to come of a large binary frame's payload buffer, else None: a transport
        #: may ``recv_into`` it and :meth:`feed` the filled part (``into[:n]``), which is then
        #: taken in place, without a copy. The frame is unmasked in place once whole.
        self.into: memoryview | None = None
        self._big: bytearray | None = None  # that buffer, whole
        self.deflate = deflate
        self._compressed = 0  # the message being received is compressed
        self._out_compressed = False  # the (fragmented) message being sent is compressed
        self._f_ctrl = b""  # the part of a control frame's payload received so far (<= 125 bytes)
        self._msg_op = 0  # opcode of the fragmented message in progress, 0 when none
        # The data message in progress (None: none): its pieces, small ones copied together.
        self._parts: list[bytes | bytearray] | None = None
        self._size = 0  # its size so far, as counted against the limit
        self._decoder: codecs.IncrementalDecoder | None = None
        #: Its driver's counts (:mod:`wsloop.stats`): the driver sets it; messages in and out.
        self.counters: Counters = UNCOUNTED

    @property
    def max_message_size(self) -> int | None:
        """Largest message accepted, in bytes (``None``: no limit)."""
        return None if self._limit == _UNLIMITED else self._limit

    @max_message_size.setter
    def max_message_size(self, value: int | None) -> None:
        self._limit = _UNLIMITED if value is None else value

    def redirect(self, write: Callable[[bytes], Any]) -> None:
        """From now on write to ``write``, after writing there what :attr:`outgoing` collected
        (a Protocol made without ``write`` collects until it has somewhere to write)."""
        pending = self.outgoing
        self.write = write
        self.outgoing = _NOTHING_OUT
        for chunk in pending:
            write(chunk)
        if pending is not _NOTHING_OUT:
            pending.clear()

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse ``data`` (any chunk of the byte stream), handing completed messages to
        ``on_message``.

        Each message is handed on as soon as its last frame is parsed, so what the application
        sends in reply is written before anything a later frame of the same chunk causes (a
        close, a failure). Text and binary messages are handed on until the peer's close frame,
        also after our own close frame was sent (CLOSING: the peer may send until it has our
        close, RFC 6455 §5.5.1); pongs, and the peer's :class:`CloseControlMessage`, always.
        Pings are answered only while OPEN (nothing follows our close frame). A protocol
        violation fails the connection: the close frame with the right code is written,
        :attr:`failure` is set, and all further input is ignored (so is input after the peer's
        close frame).
        A frame's payload is checked as it arrives: invalid UTF-8 fails (1007) at the byte that
        makes it invalid, an oversized message (1009) as soon as its header is read.
        """
        if self.failure is not None or self.state is CLOSED:
            return
        received = 0  # whole single-frame messages handed on, counted once when this read is done
        try:
            pos = 0
            if self._remaining:
                pos = self._consume(data, 0, len(data))
                if self._remaining or self.failure is not None or self.state is CLOSED:
                    return
            limit = self._limit
            if self._hdr:
                data = self._hdr + bytes(data[pos:])
                self._hdr = b""
                pos = 0
            else:
                on_data = self.on_data
                if (
                    _small_frame is not None
                    and on_data is not None
                    and not self._msg_op
                    and limit >= 125
                    and not self.client
                ):
                    # The C fast path (framing.small_frame): whole small masked text and binary
                    # frames, one call each, parsed from the caller's buffer as it is; the first
                    # frame it does not take goes to the parser below. (_msg_op stays 0: no
                    # callback can start a fragmented message in this direction.)
                    end = len(data)
                    while True:
                        payload = _small_frame(data, pos)
                        if payload is None:
                            break
                        opcode = data[pos] & 0x0F
                        pos += 6 + len(payload)
                        received += 1
                        on_data(payload, opcode)
                        if self.state is not OPEN and (self.failure is not None or self.state is CLOSED):
                            return
                        if pos == end:
                            return
                if type(data) is not bytes and len(data) - pos <= _COPY_UNDER:
                    # Small reads are parsed from bytes: slicing bytes and int.from_bytes() on bytes
                    # cost a third of what they cost on a memoryview (no view object, no conversion).
                    data = bytes(data[pos:]) if pos else bytes(data)
                    pos = 0
            # The frames, one after another (the parser, inline: one call less per read).
            end = len(data)
            mask_bit = 0 if self.client else 0x80
            on_message = self.on_message
            on_data = self.on_data
            speedups = SPEEDUPS  # (a local: read for every frame)
            # A run of pings being answered (see PONG_BURST): pending only while the next frame is a
            # whole valid ping, so the pongs are written before anything else can be.
            pongs: list[bytes] | None = None
            while True:
                avail = end - pos
                if avail < 2:
                    if avail:
                        self._hdr = bytes(data[pos:end])
                    return
                b0 = data[pos]
                b1 = data[pos + 1]
                length = b1 & 0x7F
                # The common case's header first: a whole masked text or binary message of at most
                # 125 bytes in one frame (FIN, no RSV bit), no fragmented message in progress (the
                # state is OPEN or CLOSING: every callback below returns on CLOSED). Its payload is
                # unmasked and handed on below, by the code that does it for the general path (which
                # alone sets ``opcode`` and ``fin``: only it reaches their use).
                if (
                    (b0 == 0x81 or b0 == 0x82)
                    and mask_bit
                    and 0x80 <= b1 <= 0xFD
                    and pos + 6 + length <= end
                    and not self._msg_op
                    and length <= limit
                ):
                    start = pos + 6
                    pos = start + length
                    key: bytes | bytearray | memoryview = data[start - 4 : start]
                else:
                    if self.state is CLOSED:
                        return  # (a guard: the returns after each callback below already stop on CLOSED)
                    if (b1 & 0x80) != mask_bit:
                        raise ProtocolException(
                            "unmasked frame from a client" if mask_bit else "masked frame from a server"
                        )
                    # The header's size: 2 bytes, 2 or 8 more of extended length, 4 more of mask key.
                    hlen = (2 if length < 126 else 4 if length == 126 else 10) + (4 if mask_bit else 0)
                    if avail < hlen:
                        self._hdr = bytes(data[pos:end])
                        return
                    if length == 126:
                        length = (data[pos + 2] << 8) | data[pos + 3]
                    elif length == 127:
                        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                        if length >> 63:
                            raise ProtocolException("frame length has the most significant bit set")
                    key = data[pos + hlen - 4 : pos + hlen] if mask_bit else _NO_KEY
                    opcode = b0 & 0x0F
                    if b0 & 0x70 and ((b0 & 0x70) != 0x40 or self.deflate is None or not 1 <= opcode <= 2):
                        raise ProtocolException("reserved bits set without a negotiated extension")
                    fin = b0 & 0x80
                    if opcode > 2:
                        if opcode < 8 or opcode > 10:
                            raise UnsupportedFrameTypeException(f"reserved opcode {opcode:#x}")
                        if not fin:
                            raise ProtocolException("fragmented control frame")
                        if length > 125:
                            raise ProtocolException("control frame payload over 125 bytes")
                    else:
                        if opcode:
                            if self._msg_op:
                                raise ProtocolException("new data frame before the fragmented message ended")
                        elif not self._msg_op:
                            raise ProtocolException("continuation frame without a message to continue")
                        else:
                            self._size += FRAGMENT_OVERHEAD
                            if self._size > limit:
                                raise FrameTooLargeException(
                                    f"message over {limit} bytes (with its fragments)"
                                )
                        if self._size + length > limit and not (b0 & 0x40 or self._compressed):
                            # (a compressed message is held to the limit as it is inflated)
                            raise FrameTooLargeException(f"message over {limit} bytes")
                    start = pos + hlen
                    pos = start + length
                    if pos > end:
                        # The payload is not all here: consume what there is, the rest in later feeds.
                        self._f_op = opcode
                        self._f_fin = fin
                        self._f_key = bytes(key) if mask_bit else None
                        self._f_rsv1 = b0 & 0x40
                        self._f_len = self._remaining = length
                        if (
                            length >= _DIRECT_FROM
                            and (end - start) << 3 >= length
                            and (b0 & 0x7F == OPCODE_BINARY or (not opcode and self._msg_op == OPCODE_BINARY))
                            and not self._compressed
                        ):
                            # A large binary frame (not compressed): into a buffer of its size.
                            self._big = big = empty_bytearray(length)
                            self.into = memoryview(big)
                        self._consume(data, start, end)
                        return
                # One frame whole: the fast path's and the general path's payloads are unmasked here.
                if length <= 125 and not speedups:
                    # Pure Python: framing.mask's small-payload case, inline (a call costs more than
                    # it does): the key repeated over the payload (an unmasked frame's is zeros).
                    keys = int.from_bytes(key, "big") * REPEAT[(length + 3) >> 2] >> (((-length) & 3) << 3)
                    payload = (int.from_bytes(data[start:pos], "big") ^ keys).to_bytes(length, "big")
                elif mask_bit:
                    payload = mask(data[start:pos], key)  # in C: cheaper than the inline XOR at any size
                else:
                    payload = bytes(data[start:pos])
                if b0 == 0x81:  # a whole text message: FIN, no RSV bit (so not compressed)
                    if not payload.isascii():
                        try:
                            payload.decode("utf-8")
                        except UnicodeDecodeError:
                            raise TextFrameEncodingException("text message is not valid UTF-8") from None
                    # (Not CLOSED: checked before the frame's header, and nothing since calls out.)
                    received += 1
                    if on_data is None:
                        on_message(TextMessage(payload))
                    else:
                        on_data(payload, OPCODE_TEXT)
                    if self.state is not OPEN and (self.failure is not None or self.state is CLOSED):
                        return  # failed, or dropped by the callback (a close() leaves it CLOSING)
                elif b0 == 0x82:  # a whole binary message
                    received += 1
                    if on_data is None:
                        on_message(BinaryMessage(payload))
                    else:
                        on_data(payload, OPCODE_BINARY)
                    if self.state is not OPEN and (self.failure is not None or self.state is CLOSED):
                        return
                elif opcode == OPCODE_PING:
                    if self.state is OPEN:
                        # Pings in a row are answered together, in one write: the first
                        # PONG_BURST each, then only the last (RFC 6455 §5.5.3 allows that).
                        if pongs is None:
                            pongs = [payload]
                        elif len(pongs) <= PONG_BURST:
                            pongs.append(payload)
                        else:
                            pongs[-1] = payload
                        if (
                            end - pos >= 2
                            and data[pos] == 0x89
                            and (data[pos + 1] & 0x80) == mask_bit
                            and (data[pos + 1] & 0x7F) <= 125
                            and pos + (6 if mask_bit else 2) + (data[pos + 1] & 0x7F) <= end
                        ):
                            continue  # the next frame is a whole valid ping: it joins the run
                        self._answer_pings(pongs)
                        pongs = None
                        if self.state is CLOSED:
                            return  # dropped while writing the pongs (see abort())
                    continue
                else:  # a pong, a close, a fragment or a compressed message
                    self._frame(opcode, fin, payload, b0 & 0x40)
                    if self.failure is not None or self.state is CLOSED:
                        return
        except ProtocolException as exc:
            self.fail(exc)
        finally:
            if received:
                self.counters.messages_in += received

    def _consume(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Take up to the rest of the current frame's payload from ``data[pos:end]``."""
        remaining = self._remaining
        stop = pos + remaining if end - pos > remaining else end
        into = self.into
        if into is None and remaining >= _DIRECT_FROM >> 1 and self._msg_op == OPCODE_BINARY:
            into = self._late_buffer(stop - pos)
        if into is not None:
            return self._fill(into, data, pos, stop)
        chunk = data[pos:stop]
        key = self._f_key
        if key is not None:
            # The mask continues where the previous chunk of this frame left off.
            shift = (self._f_len - remaining) & 3
            if shift:
                key = key[shift:] + key[:shift]
            chunk = mask(chunk, key)
        else:
            chunk = bytes(chunk)
        self._remaining = remaining - (stop - pos)
        op = self._f_op
        if op >= 8:
            self._f_ctrl += chunk
            if not self._remaining:
                payload = self._f_ctrl
                self._f_ctrl = b""
                self._frame(op, self._f_fin, payload)
        else:
            if op:
                self._start_message(op, self._f_rsv1)
            self._data(chunk, not self._remaining and bool(self._f_fin))
        return stop

    def _late_buffer(self, more: int) -> memoryview | None:
        """A large binary frame begun with less than an eighth of it in hand (so streamed): its
        own buffer (:attr:`into`) once an eighth has come, the part taken so far copied into it.
        Only for the first frame of an uncompressed message (its pieces are this frame's alone)."""
        length = self._f_len
        got = length - self._remaining
        if length < _DIRECT_FROM or self._compressed or self._size != got or (got + more) << 3 < length:
            return None
        parts = self._parts
        assert parts is not None
        self._big = big = empty_bytearray(length)
        view = memoryview(big)
        view[:got] = parts[0] if len(parts) == 1 else b"".join(parts)
        key = self._f_key
        if key is not None:
            mask_into(view[:got], key)  # masked again: the whole frame is unmasked once, at its end
        parts.clear()
        self._size = 0
        self.into = into = view[got:]
        return into

    def _fill(self, into: memoryview, data: bytes | bytearray | memoryview, pos: int, stop: int) -> int:
        """:meth:`_consume` for a frame read into its own buffer (see :attr:`into`)."""
        n = stop - pos
        if not (type(data) is memoryview and data.obj is self._big):
            into[:n] = data[pos:stop]  # else the transport received it in place, into ``into``
        self._remaining -= n
        if self._remaining:
            self.into = into[n:]
            return stop
        big = self._big
        assert big is not None
        self.into = self._big = None
        key = self._f_key
        op = self._f_op
        if op:
            self._start_message(op, 0)
        # A message's data is bytes: unmasked from the buffer into a new bytes in one pass (not
        # in place and then copied), the buffer freed; the payload was never joined from pieces.
        self._data(mask(big, key) if key is not None else bytes(big), bool(self._f_fin))
        return stop

    def _answer_pings(self, payloads: list[bytes]) -> None:
        masked = self.client
        self.write(b"".join([build_frame(OPCODE_PONG, payload, masked=masked) for payload in payloads]))

    def _start_message(self, opcode: int, compressed: int) -> None:
        self._msg_op = opcode
        self._f_op = OPCODE_CONTINUATION
        self._parts = []
        self._size = 0
        self._compressed = compressed
        self._decoder = _Utf8Decoder() if opcode == OPCODE_TEXT else None

    def _data(self, chunk: bytes, last: bool) -> None:
        """A piece of the data message in progress (``last``: it ends the message)."""
        if self._compressed:
            assert self.deflate is not None
            chunk = self.deflate.decompress(chunk, self._limit - self._size, last)
        parts = self._parts
        assert parts is not None
        n = len(chunk)
        if n >= _OWN_PART or len(parts) < _LOOSE_PARTS:
            parts.append(chunk)
        elif n:
            # One more small piece (tiny fragments, a frame trickling in, TLS records): copied
            # onto the previous small piece, so pieces cost their bytes, not an object each.
            tail = parts[-1]
            if type(tail) is bytearray:
                tail += chunk
            elif len(tail) < _OWN_PART:
                tail = parts[-1] = bytearray(tail)
                tail += chunk
            else:
                parts.append(bytearray(chunk))
        self._size += n
        if self._msg_op == OPCODE_TEXT:
            self._check_text(chunk, last)
        if last:
            self._finish_message()

    def _frame(self, opcode: int, fin: int, payload: bytes, rsv1: int = 0) -> None:
        """Handle one complete frame other than a single-frame data message."""
        if opcode == OPCODE_PING:
            if self.state is OPEN:
                self._answer_pings([payload])
        elif opcode == OPCODE_PONG:
            if self.on_data is None:
                self.on_message(PongControlMessage(payload))
            else:
                self.on_data(payload, OPCODE_PONG)
        elif opcode == OPCODE_CLOSE:
            self._receive_close(payload)
        else:
            if opcode:
                self._start_message(opcode, rsv1)
            self._data(payload, bool(fin))

    def _check_text(self, chunk: bytes, final: bool) -> None:
        decoder = self._decoder
        assert decoder is not None
        if chunk.isascii() and not final and not decoder.getstate()[0]:
            return
        try:
            decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise TextFrameEncodingException("text message is not valid UTF-8") from None
        if not final:
            # CPython's decoder waits for a third byte before refusing a UTF-16 surrogate
            # (ED A0..BF); refuse it as soon as its second byte is here.
            pending = decoder.getstate()[0]
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise TextFrameEncodingException("text message is not valid UTF-8")

    def _finish_message(self) -> None:
        parts = self._parts
        assert parts is not None
        payload = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        op = self._msg_op
        self._msg_op = 0
        self._parts = None
        self._size = 0
        self._compressed = 0
        self._decoder = None
        if self.state is not CLOSED:
            self.counters.messages_in += 1
            if self.on_data is None:
                self.on_message(TextMessage(payload) if op == OPCODE_TEXT else BinaryMessage(payload))
            else:
                self.on_data(payload, op)

    def _receive_close(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise ProtocolException("close frame with a 1-byte payload")
        if payload:
            code: int | None = int.from_bytes(payload[:2], "big")
            assert code is not None
            if not is_valid_close_code(code):
                raise ProtocolException(f"invalid close code {code}")
            reason = payload[2:]
            try:
                reason.decode("utf-8")
            except UnicodeDecodeError:
                raise TextFrameEncodingException("close reason is not valid UTF-8") from None
        else:
            code, reason = None, b""
        message = CloseControlMessage(code, reason)
        self.close_received = message
        if self.state is OPEN:
            # Echo the peer's code (RFC 6455 §5.5.1); an empty close is answered with an empty one.
            self._send_close(code, "")
        self.state = CLOSED
        self.on_message(message)

    # ----------------------------------------------------------------- output

    def send(self, payload: str | bytes | bytearray | memoryview, binary: bool = False) -> None:
        """Write one whole message: text unless ``binary`` (a ``str`` is UTF-8 encoded).

        As in ws4py, bytes sent as text are not re-validated. Ignored once closing.
        """
        if self.state is not OPEN:
            return
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if type(payload) is bytes and len(payload) < 126 and self.deflate is None and not self.client:
            # The common case: a small message, one frame, nothing to mask or compress.
            self.counters.messages_out += 1
            self.write((_BINARY_HEADERS if binary else _TEXT_HEADERS)[len(payload)] + payload)
            return
        self.send_frame(OPCODE_BINARY if binary else OPCODE_TEXT, payload, True)

    def send_frame(self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool = True) -> None:
        """Write one frame (a fragment when ``fin`` is false; opcode 0 continues a message)."""
        if self.state is not OPEN:
            return
        if type(payload) is memoryview and payload.itemsize != 1:
            payload = payload.tobytes()  # its len() counts items, not bytes
        rsv1 = False
        if self.deflate is not None and opcode < 8:
            if opcode:
                self._out_compressed = self.deflate.wants()
            if self._out_compressed:
                payload = self.deflate.compress(payload, fin)
                rsv1 = opcode != OPCODE_CONTINUATION
                self._out_compressed = not fin
        if fin and opcode < 8:
            self.counters.messages_out += 1
        write = self.write
        if len(payload) <= _COALESCE:
            if self.client:
                write(build_frame(opcode, payload, fin, rsv1, True))
            else:
                write(frame_header(opcode, len(payload), fin, rsv1) + payload)
        elif self.client:
            key = os.urandom(4)  # masked into a new buffer; not copied again behind its header
            write(frame_header(opcode, len(payload), fin, rsv1, key))
            write(mask(payload, key))
        else:
            write(frame_header(opcode, len(payload), fin, rsv1))
            # bytes go as they are; a bytearray or memoryview is copied once (the caller may
            # change it while it waits in the output buffer).
            write(payload if isinstance(payload, bytes) else bytes(payload))

    def ping(self, data: str | bytes = b"") -> None:
        """Write a ping frame (its payload at most 125 bytes)."""
        self._control(OPCODE_PING, data)

    def pong(self, data: str | bytes = b"") -> None:
        """Write an unsolicited pong frame (a heartbeat that expects no answer)."""
        self._control(OPCODE_PONG, data)

    def _control(self, opcode: int, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > 125:
            raise ValueError("a control frame's payload is at most 125 bytes")
        if self.state is OPEN:
            self.write(build_frame(opcode, data, masked=self.client))

    def close(self, code: int | None = 1000, reason: str | bytes = "") -> bool:
        """Start the closing handshake; False if a close frame was already sent.

        ``code`` must be one a close frame may carry (1000-1003, 1007-1014, 3000-4999), or None
        for a close frame without a payload.
        """
        if code is not None and not is_valid_close_code(code):
            raise ValueError(f"{code} is not a close code that may be sent")
        if self.state is not OPEN:
            return False
        self._send_close(code, reason)
        self.state = CLOSING
        return True

    def fail(self, exc: ProtocolException) -> None:
        """Fail the connection: send a close frame with ``exc.code`` and ignore further input."""
        # Kept without its traceback and chained exceptions: their frames hold this protocol and
        # the buffers being parsed (an inflated bomb, a whole invalid payload), a reference cycle
        # that would pin them until a full garbage collection.
        exc.__context__ = exc.__cause__ = None
        self.failure = exc.with_traceback(None)
        if self.state is OPEN:
            self._send_close(exc.code, exc.reason)
            self.state = CLOSING
        self._hdr = b""
        self._remaining = 0
        self._parts = None
        self.into = self._big = None

    def abort(self) -> None:
        """The connection is gone (dropped, reset, terminated): parse nothing more, not even
        the rest of a chunk being fed, and send nothing more. :attr:`close_code` is unchanged
        (1006 when no close frame was exchanged)."""
        self.state = CLOSED
        self._hdr = b""
        self._remaining = 0
        self._parts = None
        self.into = self._big = None

    def _send_close(self, code: int | None, reason: str | bytes) -> None:
        message = CloseControlMessage(code, reason)
        self.close_sent = message
        self.write(build_frame(OPCODE_CLOSE, encode_close_payload(code, reason), masked=self.client))

    # ---------------------------------------------------------------- queries

    @property
    def close_code(self) -> int:
        """The code to report for this connection's end (ws4py's ``closed(code, ...)``).

        Our failure code if we failed the connection; else the peer's close code (1005 when its
        close frame had none); 1006 when no close frame was received.
        """
        if self.failure is not None:
            return self.failure.code
        received = self.close_received
        if received is not None:
            return 1005 if received.code is None else received.code
        return 1006

    @property
    def close_reason(self) -> str:
        """The reason that goes with :attr:`close_code`, as ``str``."""
        if self.failure is not None:
            return self.failure.reason
        received = self.close_received
        return received.text if received is not None else ""

    def data_to_send(self) -> bytes:
        """Take the bytes collected in :attr:`outgoing` (when no ``write`` was given)."""
        data = b"".join(self.outgoing)
        self.outgoing.clear()
        return data
