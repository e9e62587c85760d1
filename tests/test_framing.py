"""Unit tests for wsloop.framing (RFC 6455 §5 framing helpers)."""

from __future__ import annotations

import random
from array import array

import pytest

from wsloop import framing
from wsloop.framing import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    build_frame,
    encode_close_payload,
    frame_header,
    is_valid_close_code,
    mask,
)

# The masking key of the RFC 6455 §5.7 examples.
RFC_KEY = b"\x37\xfa\x21\x3d"


def naive_mask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3 literally: octet i of the result is octet i of the data XOR key[i % 4]."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def payload_of(length: int, seed: int = 0) -> bytes:
    return random.Random(f"{seed}-{length}").randbytes(length)


# ---------------------------------------------------------------------- opcodes


@pytest.mark.parametrize(
    ("opcode", "value"),
    [
        (OPCODE_CONTINUATION, 0x0),
        (OPCODE_TEXT, 0x1),
        (OPCODE_BINARY, 0x2),
        (OPCODE_CLOSE, 0x8),
        (OPCODE_PING, 0x9),
        (OPCODE_PONG, 0xA),
    ],
)
def test_opcode_values_match_rfc(opcode: int, value: int) -> None:
    assert opcode == value


def test_data_and_control_opcode_sets() -> None:
    assert DATA_OPCODES == {0x0, 0x1, 0x2}
    assert CONTROL_OPCODES == {0x8, 0x9, 0xA}


# ---------------------------------------------------------------------- masking

# Up to 128 bytes a multiplied key is used, below 4096 an integer XOR, from 4096 on translate tables.
MASK_LENGTHS = [*range(71), 125, 126, 127, 128, 129, 130, 131, 4095, 4096, 4097, 4099, 65535, 65536]
MASK_KEYS = [
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    RFC_KEY,
    b"\x01\x02\x03\x04",
    b"\x80\x00\x00\x01",
]


@pytest.mark.parametrize("key", MASK_KEYS, ids=lambda k: k.hex())
@pytest.mark.parametrize("length", MASK_LENGTHS)
def test_mask_matches_naive_reference(length: int, key: bytes) -> None:
    data = payload_of(length)
    assert mask(data, key) == naive_mask(data, key)


@pytest.mark.parametrize("key", MASK_KEYS, ids=lambda k: k.hex())
@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 17, 125, 126, 65535, 65536])
def test_mask_round_trip(length: int, key: bytes) -> None:
    data = payload_of(length, seed=1)
    assert mask(mask(data, key), key) == data


def test_mask_rfc_example() -> None:
    # RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58.
    assert mask(b"Hello", RFC_KEY) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])


def test_mask_empty_payload_returns_empty_bytes() -> None:
    assert mask(b"", RFC_KEY) == b""


@pytest.mark.parametrize("length", [37, 5000])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_mask_accepts_bytes_like(kind: type, length: int) -> None:
    data = payload_of(length, seed=2)
    result = mask(kind(data), RFC_KEY)
    assert type(result) is bytes
    assert result == naive_mask(data, RFC_KEY)


@pytest.mark.parametrize("length", [0, 37, 129, 5000, 70000])
@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mask_key_may_be_bytes_like(kind: type, length: int) -> None:
    # The parser passes the key as a slice of the buffer it parses (a memoryview for large reads).
    data = payload_of(length, seed=3)
    result = mask(memoryview(data), kind(RFC_KEY))
    assert type(result) is bytes
    assert result == naive_mask(data, RFC_KEY)


@pytest.mark.parametrize("typecode", ["H", "I", "d"])
def test_mask_memoryview_with_multibyte_items(typecode: str) -> None:
    values = array(typecode, [1, 2, 3])
    assert mask(memoryview(values), RFC_KEY) == naive_mask(values.tobytes(), RFC_KEY)


def test_mask_preserves_leading_and_trailing_zero_bytes() -> None:
    # An int-based XOR must not drop zero bytes at either end of the payload.
    data = b"\x00\x00abc\x00\x00"
    key = b"\x00\x00\x00\x00"
    assert mask(data, key) == data
    assert mask(RFC_KEY * 2, RFC_KEY) == b"\x00" * 8


# ---------------------------------------------------------------------- frame headers


@pytest.mark.parametrize(
    ("length", "encoded_length"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (125, b"\x7d"),
        (126, b"\x7e\x00\x7e"),
        (127, b"\x7e\x00\x7f"),
        (256, b"\x7e\x01\x00"),
        (65535, b"\x7e\xff\xff"),
        (65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**32, b"\x7f\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**63 - 1, b"\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ],
)
def test_frame_header_length_encoding(length: int, encoded_length: bytes) -> None:
    assert frame_header(OPCODE_BINARY, length) == b"\x82" + encoded_length


@pytest.mark.parametrize(
    ("length", "encoded_length"),
    [
        (0, b"\x80"),
        (125, b"\xfd"),
        (126, b"\xfe\x00\x7e"),
        (65535, b"\xfe\xff\xff"),
        (65536, b"\xff\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**32, b"\xff\x00\x00\x00\x01\x00\x00\x00\x00"),
    ],
)
def test_frame_header_with_mask_key_sets_mask_bit_and_appends_key(length: int, encoded_length: bytes) -> None:
    assert frame_header(OPCODE_TEXT, length, mask_key=RFC_KEY) == b"\x81" + encoded_length + RFC_KEY


@pytest.mark.parametrize(
    ("opcode", "first_byte"),
    [
        (OPCODE_CONTINUATION, 0x80),
        (OPCODE_TEXT, 0x81),
        (OPCODE_BINARY, 0x82),
        (OPCODE_CLOSE, 0x88),
        (OPCODE_PING, 0x89),
        (OPCODE_PONG, 0x8A),
    ],
)
def test_frame_header_first_byte_carries_fin_and_opcode(opcode: int, first_byte: int) -> None:
    assert frame_header(opcode, 0)[0] == first_byte


def test_frame_header_without_fin() -> None:
    assert frame_header(OPCODE_TEXT, 3, fin=False) == b"\x01\x03"


def test_frame_header_rsv1() -> None:
    assert frame_header(OPCODE_TEXT, 3, rsv1=True) == b"\xc1\x03"


# ---------------------------------------------------------------------- whole frames (RFC 6455 §5.7)


def test_build_frame_rfc_single_unmasked_text() -> None:
    assert build_frame(OPCODE_TEXT, b"Hello") == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


def test_build_frame_rfc_fragmented_unmasked_text() -> None:
    first = build_frame(OPCODE_TEXT, b"Hel", fin=False)
    second = build_frame(OPCODE_CONTINUATION, b"lo", fin=True)
    assert first == bytes([0x01, 0x03, 0x48, 0x65, 0x6C])
    assert second == bytes([0x80, 0x02, 0x6C, 0x6F])


def test_build_frame_rfc_unmasked_ping() -> None:
    assert build_frame(OPCODE_PING, b"Hello") == bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


def test_build_frame_rfc_256_bytes_binary() -> None:
    payload = payload_of(256)
    assert build_frame(OPCODE_BINARY, payload) == b"\x82\x7e\x01\x00" + payload


def test_build_frame_rfc_64k_binary() -> None:
    payload = payload_of(65536)
    assert build_frame(OPCODE_BINARY, payload) == b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + payload


@pytest.mark.parametrize(
    ("opcode", "first_byte"),
    [(OPCODE_TEXT, 0x81), (OPCODE_PONG, 0x8A)],
)
def test_build_frame_rfc_masked_example(
    monkeypatch: pytest.MonkeyPatch, opcode: int, first_byte: int
) -> None:
    # RFC 6455 §5.7: masked "Hello" (text, and the masked pong) with key 37 fa 21 3d.
    monkeypatch.setattr(framing.os, "urandom", lambda n: RFC_KEY[:n])
    expected = bytes([first_byte, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert build_frame(opcode, b"Hello", masked=True) == expected


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65536])
def test_build_frame_masked_is_unmaskable_with_its_own_key(length: int) -> None:
    payload = payload_of(length, seed=3)
    frame = build_frame(OPCODE_BINARY, payload, masked=True)
    header_length = 2 if length < 126 else 4 if length < 65536 else 10
    assert frame[1] & 0x80
    key = frame[header_length : header_length + 4]
    assert naive_mask(frame[header_length + 4 :], key) == payload


def test_build_frame_masked_uses_a_fresh_key_each_time() -> None:
    keys = {build_frame(OPCODE_TEXT, b"x", masked=True)[2:6] for _ in range(8)}
    assert len(keys) > 1


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_build_frame_accepts_bytes_like(kind: type) -> None:
    frame = build_frame(OPCODE_BINARY, kind(b"abc"))
    assert type(frame) is bytes
    assert frame == b"\x82\x03abc"


# ---------------------------------------------------------------------- close codes

# RFC 6455 §7.4.1 and the IANA "WebSocket Close Code Number Registry": 1004 is reserved, 1005,
# 1006 and 1015 must never be sent on the wire; 1012-1014 are registered; 1016-2999 are unassigned
# (reserved for the RFC and its extensions); 3000-4999 are for libraries, frameworks and apps.
VALID_IN_1000_RANGE = {
    1000: True,  # normal closure
    1001: True,  # going away
    1002: True,  # protocol error
    1003: True,  # unsupported data
    1004: False,  # reserved
    1005: False,  # no status received (local only)
    1006: False,  # abnormal closure (local only)
    1007: True,  # invalid frame payload data
    1008: True,  # policy violation
    1009: True,  # message too big
    1010: True,  # mandatory extension
    1011: True,  # internal error
    1012: True,  # service restart
    1013: True,  # try again later
    1014: True,  # bad gateway
    1015: False,  # TLS handshake (local only)
}


@pytest.mark.parametrize(("code", "valid"), sorted(VALID_IN_1000_RANGE.items()))
def test_is_valid_close_code_registered_range(code: int, valid: bool) -> None:
    assert is_valid_close_code(code) is valid


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        (0, False),
        (999, False),
        (1016, False),
        (1100, False),
        (2000, False),
        (2999, False),
        (3000, True),
        (3999, True),
        (4000, True),
        (4999, True),
        (5000, False),
        (65535, False),
    ],
)
def test_is_valid_close_code_boundaries(code: int, valid: bool) -> None:
    assert is_valid_close_code(code) is valid


# ---------------------------------------------------------------------- close payloads


def test_encode_close_payload_code_only() -> None:
    assert encode_close_payload(1000) == b"\x03\xe8"


def test_encode_close_payload_default_is_normal_closure() -> None:
    assert encode_close_payload() == b"\x03\xe8"


def test_encode_close_payload_code_and_str_reason() -> None:
    assert encode_close_payload(1001, "bye ☃") == b"\x03\xe9" + "bye ☃".encode()


def test_encode_close_payload_bytes_reason_kept_as_is() -> None:
    assert encode_close_payload(4999, b"done") == b"\x13\x87done"


def test_encode_close_payload_none_code_is_empty() -> None:
    assert encode_close_payload(None) == b""
    assert encode_close_payload(None, "ignored") == b""


def test_encode_close_payload_keeps_reason_of_exactly_123_bytes() -> None:
    reason = "r" * 123
    assert encode_close_payload(1000, reason) == b"\x03\xe8" + reason.encode()


@pytest.mark.parametrize("length", [124, 125, 126, 500])
def test_encode_close_payload_truncates_long_ascii_reason_to_125_bytes(length: int) -> None:
    payload = encode_close_payload(1000, "x" * length)
    assert len(payload) == 125
    assert payload == b"\x03\xe8" + b"x" * 123


# Multi-byte characters padded so that byte 123 falls at every position inside a character.
@pytest.mark.parametrize("char", ["é", "€", "☃", "😀"])
@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_encode_close_payload_truncation_keeps_valid_utf8(char: str, padding: int) -> None:
    reason = "a" * padding + char * 100
    payload = encode_close_payload(1000, reason)
    assert len(payload) <= 125
    assert payload[:2] == b"\x03\xe8"
    text = payload[2:].decode("utf-8")  # must not raise
    assert reason.startswith(text)
    # Nothing more was dropped than the partial character at the cut.
    assert len(payload) > 125 - len(char.encode())


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_encode_close_payload_truncation_of_bytes_reason_keeps_valid_utf8(padding: int) -> None:
    reason = (b"a" * padding) + "😀".encode() * 40
    payload = encode_close_payload(1000, reason)
    assert len(payload) <= 125
    text = payload[2:].decode("utf-8")
    assert reason.decode().startswith(text)
    assert len(payload) > 125 - 4


# Large payloads go through the C extension when it is built (tests/test_speedups.py), else byte
# lanes: both must agree with the reference, whatever the length modulo 8 and the input type.
LARGE_LENGTHS = [4096, 4097, 4099, 4101, 4103, 65535, 65536, 262151]
MASKERS = [framing._mask_lanes, framing.mask]


@pytest.mark.parametrize("masker", MASKERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("key", MASK_KEYS, ids=lambda k: k.hex())
@pytest.mark.parametrize("length", LARGE_LENGTHS)
def test_large_payload_maskers(masker: object, key: bytes, length: int) -> None:
    data = payload_of(length, seed=3)
    for given in (data, bytearray(data), memoryview(b"\x00" + data)[1:]):
        result = masker(given, key)  # type: ignore[operator]
        assert type(result) is bytes
        assert result == naive_mask(data, key)
