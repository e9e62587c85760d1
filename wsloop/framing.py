"""RFC 6455 §5 framing: opcodes, close codes, frame headers and masking, and ws4py's ``Frame``.

All of it works on whole payloads with C-level operations; nothing loops over bytes in Python.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Generator
from struct import Struct
from types import ModuleType

from .exc import FrameTooLargeException, ProtocolException

__all__ = [
    "OPCODE_CONTINUATION",
    "OPCODE_TEXT",
    "OPCODE_BINARY",
    "OPCODE_CLOSE",
    "OPCODE_PING",
    "OPCODE_PONG",
    "DATA_OPCODES",
    "CONTROL_OPCODES",
    "is_valid_close_code",
    "mask",
    "mask_into",
    "empty_bytearray",
    "SPEEDUPS",
    "frame_header",
    "build_frame",
    "encode_close_payload",
    "Frame",
]

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

DATA_OPCODES = frozenset((OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY))
CONTROL_OPCODES = frozenset((OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG))

FIN = 0x80
RSV1 = 0x40
MASK_BIT = 0x80

_H16 = Struct("!BBH")
_H64 = Struct("!BBQ")
_CODE = Struct("!H")

# Close codes a peer may put on the wire (RFC 6455 §7.4, IANA registry). 1005, 1006 and 1015 are
# reserved for local use and never sent; 1004 is reserved.
_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire."""
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


# The 4-byte key repeated ``m`` times, as an integer, is the key times REPEAT[m] (big-endian):
# one multiplication instead of building and converting the repeated key, for small payloads.
REPEAT = tuple(int.from_bytes(b"\x00\x00\x00\x01" * m, "big") for m in range(33))
_SMALL = 4 * (len(REPEAT) - 1)
_TRANSLATE_FROM = 4096


def _mask_pure(data: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview) -> bytes:
    """XOR ``data`` with the 4-byte masking ``key`` (masking and unmasking are the same)."""
    if type(data) is memoryview and data.itemsize != 1:
        data = data.tobytes()  # its len() counts items, not bytes
    n = len(data)
    if n <= _SMALL:
        # The key repeated over ceil(n/4) words, its extra trailing bytes shifted out.
        repeated = int.from_bytes(key, "big") * REPEAT[(n + 3) >> 2] >> (((-n) & 3) << 3)
        return (int.from_bytes(data, "big") ^ repeated).to_bytes(n, "big")
    key = bytes(key)
    if n < _TRANSLATE_FROM:
        keys = key * ((n >> 2) + 1)
        return (int.from_bytes(data, "little") ^ int.from_bytes(keys[:n], "little")).to_bytes(n, "little")
    return _mask_lanes(data, key)


def _mask_lanes(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    # Large payloads: each of the 4 byte lanes goes through a 256-byte XOR table (bytes.translate),
    # faster than the integer XOR from _TRANSLATE_FROM bytes on.
    out = bytearray(data)
    out[0::4] = out[0::4].translate(_XOR_TABLES[key[0]])
    out[1::4] = out[1::4].translate(_XOR_TABLES[key[1]])
    out[2::4] = out[2::4].translate(_XOR_TABLES[key[2]])
    out[3::4] = out[3::4].translate(_XOR_TABLES[key[3]])
    return bytes(out)


def _mask_into_pure(buffer: bytearray | memoryview, key: bytes | bytearray | memoryview) -> None:
    """XOR the writable ``buffer`` with the 4-byte ``key`` in place."""
    if len(key) != 4:
        raise ValueError(f"a mask key has 4 bytes, not {len(key)}")
    with memoryview(buffer) as view:
        if view.readonly or not view.c_contiguous:
            raise TypeError(f"mask_into() needs a writable, C-contiguous buffer, not {type(buffer).__name__}")
        with view.cast("B") as flat:
            flat[:] = _mask_pure(flat, key)


_IDENTITY = int.from_bytes(bytes(range(256)), "big")
# _XOR_TABLES[k] maps each byte b to b ^ k (a bytes.translate table).
_XOR_TABLES = tuple(
    (_IDENTITY ^ int.from_bytes(bytes((k,)) * 256, "big")).to_bytes(256, "big") for k in range(256)
)

# The C extension (wsloop/speedups.c, built by setup.py when a compiler is there) unless it is
# missing or WSLOOP_NO_SPEEDUPS is set (read once, here): it is faster at every size, also than
# the integer XOR above for a few bytes (docs/ARCHITECTURE.md has the figures).
_speedups: ModuleType | None
if os.environ.get("WSLOOP_NO_SPEEDUPS"):
    _speedups = None
else:
    try:
        _speedups = importlib.import_module("wsloop._speedups")
    except ImportError:
        _speedups = None

#: Whether masking runs in C (the ``wsloop._speedups`` extension) rather than in pure Python.
SPEEDUPS = _speedups is not None

mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray | memoryview], bytes]
mask_into: Callable[[bytearray | memoryview, bytes | bytearray | memoryview], None]
if _speedups is not None:
    # ``mask(data, key) -> bytes``: ``data`` (any bytes-like object) XORed with the 4-byte
    # masking ``key`` (masking and unmasking are the same).
    mask = _speedups.apply_mask
    # ``mask_into(buffer, key) -> None``: the same, in place, on a writable buffer.
    mask_into = _speedups.mask_into
else:
    mask = _mask_pure
    mask_into = _mask_into_pure

#: ``small_frame(data, pos) -> bytes | None``, in C (None without the extension, or with one
#: built before it had it): the unmasked payload of the frame at ``data[pos:]`` if that is a whole
#: masked, final, uncompressed text or binary frame of at most 125 bytes (so its header is 6
#: bytes) and a text frame's payload is valid UTF-8; else None. The protocol's fast path for a
#: client's small messages (Protocol.feed); the Python parser takes every other frame.
small_frame: Callable[[bytes | bytearray | memoryview, int], bytes | None] | None = getattr(
    _speedups, "small_frame", None
)
#: ``empty_bytearray(n) -> bytearray``: a buffer of ``n`` bytes to read into; with the C
#: extension its bytes are left uninitialised (``bytearray(n)`` zero-fills them, a pass over a
#: large frame's buffer that ``recv_into`` then overwrites).
empty_bytearray: Callable[[int], bytearray] = getattr(_speedups, "empty_bytearray", bytearray)


def frame_header(
    opcode: int, length: int, fin: bool = True, rsv1: bool = False, mask_key: bytes | None = None
) -> bytes:
    """The header of one frame carrying ``length`` payload bytes (with ``mask_key`` if given)."""
    b0 = opcode | (FIN if fin else 0) | (RSV1 if rsv1 else 0)
    m = MASK_BIT if mask_key is not None else 0
    if length < 126:
        header = bytes((b0, m | length))
    elif length < 65536:
        header = _H16.pack(b0, m | 126, length)
    else:
        header = _H64.pack(b0, m | 127, length)
    return header + mask_key if mask_key is not None else header


def build_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview = b"",
    fin: bool = True,
    rsv1: bool = False,
    masked: bool = False,
) -> bytes:
    """One whole frame as bytes; a client (``masked=True``) masks with a fresh random key."""
    if type(payload) is memoryview and payload.itemsize != 1:
        payload = payload.tobytes()
    if masked:
        key = os.urandom(4)
        return frame_header(opcode, len(payload), fin, rsv1, key) + mask(payload, key)
    return frame_header(opcode, len(payload), fin, rsv1) + payload


def encode_close_payload(code: int | None = 1000, reason: str | bytes = b"") -> bytes:
    """The payload of a close frame: the 2-byte code then the UTF-8 reason (≤ 123 bytes)."""
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    if len(reason) > 123:
        # Cut on a character boundary so the reason stays valid UTF-8.
        reason = reason[:123].decode("utf-8", "ignore").encode("utf-8")
    return _CODE.pack(code) + reason


FrameInput = bytes | bytearray | memoryview | None


def _input(data: FrameInput) -> bytes:
    if data is None:
        return b""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a frame is parsed from bytes, not {type(data).__name__}")


class Frame:
    """ws4py's ``Frame``: one RFC 6455 frame, built with :meth:`build` or parsed through :attr:`parser`.

    :attr:`parser` is a generator to ``send()`` the frame's bytes to: each ``send`` returns how
    many more bytes it wants, and ``None`` once the frame is whole (a further ``send`` raises
    ``StopIteration``). After parsing, :attr:`body` is the payload as received (still masked when
    :attr:`masking_key` is set: :meth:`unmask` it). A reserved bit, a reserved opcode or a
    fragmented control frame raise :class:`~wsloop.exc.ProtocolException`; a control frame over
    125 bytes, or a length with its top bit set, :class:`~wsloop.exc.FrameTooLargeException`.
    """

    def __init__(
        self,
        opcode: int | None = None,
        body: bytes = b"",
        masking_key: bytes | None = None,
        fin: int = 0,
        rsv1: int = 0,
        rsv2: int = 0,
        rsv3: int = 0,
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError("The body must be properly encoded")
        self.opcode = opcode
        self.body = body
        self.masking_key = masking_key
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        self.payload_length = len(body)
        self._parser: Generator[int | None, FrameInput, None] | None = None

    @property
    def parser(self) -> Generator[int | None, FrameInput, None]:
        """The parsing generator (started: its first ``send`` takes bytes)."""
        if self._parser is None:
            self._parser = self._parsing()
            next(self._parser)
        return self._parser

    def _cleanup(self) -> None:
        if self._parser is not None:
            self._parser.close()
            self._parser = None

    def build(self) -> bytes:
        """The frame as bytes, from its attributes (masked with :attr:`masking_key` if set).

        The header carries :attr:`payload_length` (``len(body)`` unless changed since).
        """
        if self.fin > 1:
            raise ValueError("FIN bit parameter must be 0 or 1")
        opcode = self.opcode
        if opcode is None:
            raise TypeError("a frame needs an opcode to be built")
        if 0x3 <= opcode <= 0x7 or opcode >= 0xB:
            raise ValueError("Opcode cannot be a reserved opcode")
        length = self.payload_length
        if length >> 63:
            raise FrameTooLargeException("a frame's length has at most 63 bits")
        # frame_header ORs its opcode into the first byte: RSV2 and RSV3 ride along with it.
        bits = opcode | (0x20 if self.rsv2 else 0) | (0x10 if self.rsv3 else 0)
        body = self.body
        key = self.masking_key
        if not key:
            return frame_header(bits, length, bool(self.fin), bool(self.rsv1)) + body
        key = bytes(key)
        return frame_header(bits, length, bool(self.fin), bool(self.rsv1), key) + bytes(self.mask(body))

    def mask(self, data: bytes | bytearray | memoryview) -> bytearray:
        """``data`` XORed with :attr:`masking_key` (its first 4 bytes): masks and unmasks."""
        key = self.masking_key
        if key is None:
            raise TypeError("the frame has no masking key")
        if len(key) < 4:
            raise ValueError("a masking key has 4 bytes")
        return bytearray(mask(data, key[:4]))

    unmask = mask

    def _parsing(self) -> Generator[int | None, FrameInput, None]:
        # Each stage asks for what it lacks (as ws4py does: the first byte, the second, the
        # extended length, the masking key, the payload); bytes sent beyond a stage's need are
        # carried to the next stage, and any beyond the frame's end are ignored.
        buf = b""
        while not buf:
            buf = _input((yield 1))
        b0 = buf[0]
        self.fin = b0 >> 7
        self.rsv1 = (b0 >> 6) & 1
        self.rsv2 = (b0 >> 5) & 1
        self.rsv3 = (b0 >> 4) & 1
        self.opcode = opcode = b0 & 0x0F
        if b0 & 0x70:
            raise ProtocolException("reserved bits set")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise ProtocolException(f"reserved opcode {opcode:#x}")
        if opcode >= 8 and not b0 & FIN:
            raise ProtocolException("fragmented control frame")
        buf = buf[1:]
        while not buf:
            buf = _input((yield 1))
        b1 = buf[0]
        buf = buf[1:]
        self.payload_length = length = b1 & 0x7F
        if opcode >= 8 and length > 125:
            raise FrameTooLargeException("control frame payload over 125 bytes", code=1002)
        extra = 2 if length == 126 else 8 if length == 127 else 0
        if extra:
            while len(buf) < extra:
                buf += _input((yield extra - len(buf)))
            self.payload_length = length = int.from_bytes(buf[:extra], "big")
            buf = buf[extra:]
            if length >> 63:
                raise FrameTooLargeException("frame length has the most significant bit set", code=1002)
        if b1 & MASK_BIT:
            while len(buf) < 4:
                buf += _input((yield 4 - len(buf)))
            self.masking_key = buf[:4]
            buf = buf[4:]
        if len(buf) < length:
            # The payload, in as many sends as it takes: the pieces are joined once, at the end.
            parts = [buf]
            have = len(buf)
            while have < length:
                piece = _input((yield length - have))
                parts.append(piece)
                have += len(piece)
            buf = b"".join(parts)
        self.body = buf if len(buf) == length else buf[:length]
        yield None
