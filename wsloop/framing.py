"""RFC 6455 §5 framing: opcodes, close codes, frame headers and masking.

All of it works on whole payloads with C-level operations; nothing loops over bytes in Python.
"""

from __future__ import annotations

import functools
import importlib
import os
from struct import Struct
from typing import Any

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
    "frame_header",
    "build_frame",
    "encode_close_payload",
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


def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview) -> bytes:
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
    if _accelerator() is not None:
        return _mask_numpy(data, key)
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


def _mask_numpy(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """The optional accelerator (``pip install wsloop[speedups]``): numpy XORs the payload's
    8-byte words in place, faster than the byte lanes (about 30x at 64 KiB)."""
    numpy = _accelerator()
    assert numpy is not None
    out = bytearray(data)
    words = len(out) >> 3
    view = numpy.frombuffer(out, dtype=numpy.uint64, count=words)
    numpy.bitwise_xor(view, numpy.frombuffer(key + key, dtype=numpy.uint64)[0], out=view)
    del view  # release the buffer export before resizing or converting ``out``
    for i in range(words << 3, len(out)):  # at most 7 bytes; their key index restarts at 0
        out[i] ^= key[i & 3]
    return bytes(out)


_TRANSLATE_FROM = 4096


@functools.cache
def _accelerator() -> Any:
    """numpy, if installed and not disabled by ``WSLOOP_NO_SPEEDUPS``, else None.

    Imported on the first payload of ``_TRANSLATE_FROM`` bytes or more, not with wsloop: numpy
    costs ~13 MB and starts OpenBLAS's thread pool, which a server that only sees small
    messages should not pay for.
    """
    if os.environ.get("WSLOOP_NO_SPEEDUPS"):
        return None
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


_IDENTITY = int.from_bytes(bytes(range(256)), "big")
# _XOR_TABLES[k] maps each byte b to b ^ k (a bytes.translate table).
_XOR_TABLES = tuple(
    (_IDENTITY ^ int.from_bytes(bytes((k,)) * 256, "big")).to_bytes(256, "big") for k in range(256)
)


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
