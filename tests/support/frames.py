"""WebSocket frames built and parsed by hand, straight from RFC 6455 §5.2, so that the tests'
expectations do not depend on wsloop's own framing code (and broken frames can be made too)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KEY = b"\x37\xfa\x21\x3d"  # the RFC 6455 §5.7 example masking key; all four bytes differ


def xor_mask(data: bytes, key: bytes) -> bytes:
    """``data`` masked (or unmasked) with the 4-byte ``key``."""
    if not data:
        return b""
    n = len(data)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


def header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    width: int | None = None,
) -> bytes:
    """A frame header declaring ``length``; ``width`` (7, 16 or 64) forces the length's encoding,
    truncating ``length`` to it, so that non-minimal and bogus headers can be made too."""
    if width is None:
        width = 7 if length < 126 else 16 if length < 65536 else 64
    bit = 0x80 if key is not None else 0
    first = bytes([(0x80 if fin else 0) | rsv | opcode])
    if width == 7:
        head = first + bytes([bit | (length & 0x7F)])
    elif width == 16:
        head = first + struct.pack("!BH", bit | 126, length & 0xFFFF)
    else:
        head = first + struct.pack("!BQ", bit | 127, length & ((1 << 64) - 1))
    return head + (key or b"")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    length: int | None = None,
    width: int | None = None,
) -> bytes:
    """A whole frame, masked with ``key`` if given; ``length`` overrides the declared length."""
    declared = len(payload) if length is None else length
    body = payload if key is None else xor_mask(payload, key)
    return header(opcode, declared, fin=fin, rsv=rsv, key=key, width=width) + body


def close_payload(code: int, reason: str | bytes = b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes


def parse_frames(data: bytes) -> list[Frame]:
    """Split a byte stream into frames, RFC 6455 §5.2; fails on a truncated frame."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        pos += 2
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", data[pos : pos + 2])
            pos += 2
        elif length == 127:
            (length,) = struct.unpack("!Q", data[pos : pos + 8])
            pos += 8
        key = None
        if second & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + length]
        assert len(payload) == length, "truncated frame"
        pos += length
        if key is not None:
            payload = xor_mask(payload, key)
        frames.append(Frame(bool(first & 0x80), first & 0x70, first & 0x0F, key is not None, payload))
    return frames


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a close frame's payload; (None, "") when it is empty."""
    if not payload:
        return None, ""
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode("utf-8")
