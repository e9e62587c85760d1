"""Unit tests for wsloop.protocol.Protocol, the sans-I/O RFC 6455 state machine.

Frames are built and parsed here with small helpers written straight from RFC 6455 §5.2, so the
expectations do not depend on wsloop's own framing code.
"""

from __future__ import annotations

import random
import tracemalloc
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.frames import (
    BINARY,
    CLOSE,
    CONT,
    KEY,
    PING,
    PONG,
    TEXT,
    Frame,
    close_payload,
    frame,
    header,
    parse_close,
    parse_frames,
    xor_mask,
)
from wsloop.exc import ProtocolException
from wsloop.messaging import BinaryMessage, CloseControlMessage, Message, PongControlMessage, TextMessage
from wsloop.protocol import DEFAULT_MAX_MESSAGE_SIZE, FRAGMENT_OVERHEAD, PONG_BURST, Protocol, State

# ---------------------------------------------------------------------- helpers


def summary(messages: list[Message]) -> list[tuple]:
    """Comparable description of delivered messages."""
    out: list[tuple] = []
    for m in messages:
        if isinstance(m, CloseControlMessage):
            out.append(("close", m.code, m.reason.decode("utf-8")))  # reason: bytes, as ws4py's
        elif isinstance(m, TextMessage):
            out.append(("text", m.data))
        elif isinstance(m, BinaryMessage):
            out.append(("binary", m.data))
        elif isinstance(m, PongControlMessage):
            out.append(("pong", m.data))
        else:  # pragma: no cover - would be a bug
            out.append(("?", type(m).__name__, m.data))
    return out


@dataclass(frozen=True)
class Side:
    """Which end the Protocol under test plays; builds frames as its peer would send them."""

    client: bool

    def protocol(self, **kwargs) -> Protocol:
        return Protocol(client=self.client, **kwargs)

    @property
    def peer_key(self) -> bytes | None:
        # Clients mask every frame (§5.3); servers never do.
        return None if self.client else KEY

    def incoming(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
        return frame(opcode, payload, fin=fin, rsv=rsv, key=self.peer_key)

    def incoming_header(self, opcode: int, length: int, *, fin: bool = True) -> bytes:
        return header(opcode, length, fin=fin, key=self.peer_key)

    def __str__(self) -> str:
        return "client" if self.client else "server"


SERVER = Side(client=False)
CLIENT = Side(client=True)


@pytest.fixture(params=[SERVER, CLIENT], ids=str)
def side(request: pytest.FixtureRequest) -> Side:
    return request.param


def written(p: Protocol) -> list[Frame]:
    """Frames the protocol wrote since the last call, checking their masking."""
    frames = parse_frames(p.data_to_send())
    for f in frames:
        assert f.masked is p.client
    return frames


def assert_failed(p: Protocol, code: int) -> None:
    """The connection failed with ``code``, and exactly one close frame carrying it was written."""
    assert p.failure is not None
    assert p.failure.code == code
    assert p.close_code == code
    assert p.state is State.CLOSING
    frames = written(p)
    assert [f.opcode for f in frames] == [CLOSE]
    assert parse_close(frames[0].payload)[0] == code


def chunks(data: bytes, sizes: Iterator[int]) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        n = next(sizes)
        yield data[pos : pos + n]
        pos += n


def random_sizes(seed: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.choice((rng.randint(1, 3), rng.randint(1, 20), rng.randint(1, 700), rng.randint(1, 20000)))


# ---------------------------------------------------------------------- defaults


def test_new_protocol_is_open() -> None:
    p = Protocol()
    assert p.state is State.OPEN
    assert p.received == []
    assert p.data_to_send() == b""
    assert p.failure is None
    assert p.close_received is None
    assert p.close_sent is None


def test_default_max_message_size_is_16_mib() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    assert Protocol().max_message_size == 16 * 1024 * 1024


def test_data_to_send_drains_outgoing() -> None:
    p = Protocol()
    p.send("a")
    p.send("b")
    assert p.data_to_send() == b"\x81\x01a\x81\x01b"
    assert p.data_to_send() == b""
    assert p.outgoing == []


def test_write_callback_receives_frames_instead_of_outgoing() -> None:
    chunks_written: list[bytes] = []
    p = Protocol(write=chunks_written.append)
    p.send("Hello")
    assert b"".join(chunks_written) == b"\x81\x05Hello"
    assert p.outgoing == []


def test_on_message_callback_receives_messages_instead_of_received(side: Side) -> None:
    got: list[Message] = []
    p = side.protocol(on_message=got.append)
    p.feed(side.incoming(TEXT, b"hi"))
    assert summary(got) == [("text", b"hi")]
    assert p.received == []


# ---------------------------------------------------------------------- RFC 6455 §5.7 examples


def test_rfc_single_frame_unmasked_text_to_client() -> None:
    p = Protocol(client=True)
    p.feed(bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]))
    assert summary(p.received) == [("text", b"Hello")]


def test_rfc_single_frame_masked_text_to_server() -> None:
    p = Protocol()
    p.feed(bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]))
    assert summary(p.received) == [("text", b"Hello")]


def test_rfc_fragmented_unmasked_text_to_client() -> None:
    p = Protocol(client=True)
    p.feed(bytes([0x01, 0x03, 0x48, 0x65, 0x6C]))
    assert p.received == []
    p.feed(bytes([0x80, 0x02, 0x6C, 0x6F]))
    assert summary(p.received) == [("text", b"Hello")]


def test_rfc_masked_pong_to_server() -> None:
    p = Protocol()
    p.feed(bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]))
    assert summary(p.received) == [("pong", b"Hello")]


def test_rfc_256_and_65536_byte_binary_to_client() -> None:
    small = random.Random(1).randbytes(256)
    big = random.Random(2).randbytes(65536)
    p = Protocol(client=True)
    p.feed(b"\x82\x7e\x01\x00" + small + b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + big)
    assert summary(p.received) == [("binary", small), ("binary", big)]


# ---------------------------------------------------------------------- incoming messages


@pytest.mark.parametrize("payload", [b"", b"Hello", "é☃😀".encode(), b"x" * 125, b"y" * 126, b"z" * 65536])
def test_receive_text(side: Side, payload: bytes) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, payload))
    assert summary(p.received) == [("text", payload)]
    assert isinstance(p.received[0], TextMessage)


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", bytes(range(256)), b"\x80" * 70000])
def test_receive_binary(side: Side, payload: bytes) -> None:
    p = side.protocol()
    p.feed(side.incoming(BINARY, payload))
    assert summary(p.received) == [("binary", payload)]
    assert isinstance(p.received[0], BinaryMessage)


def test_received_messages_are_completed(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"a") + side.incoming(BINARY, b"b", fin=False) + side.incoming(CONT, b"c"))
    assert [m.completed for m in p.received] == [True, True]


def test_receive_fragmented_binary(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(BINARY, b"\x01\x02", fin=False))
    p.feed(side.incoming(CONT, b"", fin=False))
    p.feed(side.incoming(CONT, b"\x03", fin=False))
    assert p.received == []
    p.feed(side.incoming(CONT, b"\x04"))
    assert summary(p.received) == [("binary", b"\x01\x02\x03\x04")]


def test_receive_pong_is_delivered(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(PONG, b"beat"))
    assert summary(p.received) == [("pong", b"beat")]
    assert written(p) == []


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_bytes_like(side: Side, kind: type) -> None:
    p = side.protocol()
    data = side.incoming(TEXT, b"abc") + side.incoming(BINARY, b"de", fin=False) + side.incoming(CONT, b"f")
    p.feed(kind(data[:5]))
    p.feed(kind(data[5:]))
    assert summary(p.received) == [("text", b"abc"), ("binary", b"def")]


def test_feed_empty_chunk_is_harmless(side: Side) -> None:
    p = side.protocol()
    data = side.incoming(TEXT, b"abc")
    p.feed(b"")
    p.feed(data[:1])
    p.feed(b"")
    p.feed(data[1:4])
    p.feed(b"")
    p.feed(data[4:])
    assert summary(p.received) == [("text", b"abc")]


# ---------------------------------------------------------------------- chunking of a mixed stream

BIG = random.Random(7).randbytes(65536 + 300)


def mixed_stream(s: Side) -> bytes:
    return b"".join(
        [
            s.incoming(TEXT, "héllo ☃".encode()),
            s.incoming(BINARY, bytes(range(256))),
            s.incoming(TEXT, b"fragm\xc3", fin=False),  # "é" split across fragments
            s.incoming(PING, b"are you there"),
            s.incoming(CONT, b"\xa9nt", fin=False),
            s.incoming(CONT, b"", fin=False),
            s.incoming(CONT, "ed ✓".encode()),
            s.incoming(PONG, b"pong data"),
            s.incoming(BINARY, BIG),
            s.incoming(TEXT, b""),
            s.incoming(CLOSE, close_payload(1000, "bye")),
        ]
    )


EXPECTED_MESSAGES = [
    ("text", "héllo ☃".encode()),
    ("binary", bytes(range(256))),
    ("text", "fragmént".encode() + "ed ✓".encode()),
    ("pong", b"pong data"),
    ("binary", BIG),
    ("text", b""),
    ("close", 1000, "bye"),
]


def check_mixed_stream_result(p: Protocol) -> None:
    assert summary(p.received) == EXPECTED_MESSAGES
    frames = written(p)
    assert [(f.opcode, f.fin, f.rsv) for f in frames] == [(PONG, True, 0), (CLOSE, True, 0)]
    assert frames[0].payload == b"are you there"
    assert parse_close(frames[1].payload)[0] == 1000
    assert p.state is State.CLOSED
    assert p.failure is None


def test_mixed_stream_all_at_once(side: Side) -> None:
    p = side.protocol()
    p.feed(mixed_stream(side))
    check_mixed_stream_result(p)


def test_mixed_stream_byte_by_byte(side: Side) -> None:
    p = side.protocol()
    data = mixed_stream(side)
    for i in range(len(data)):
        p.feed(data[i : i + 1])
    check_mixed_stream_result(p)


@pytest.mark.parametrize("seed", range(8))
def test_mixed_stream_random_chunks(side: Side, seed: int) -> None:
    p = side.protocol()
    for chunk in chunks(mixed_stream(side), random_sizes(seed)):
        p.feed(chunk)
    check_mixed_stream_result(p)


@pytest.mark.parametrize("seed", range(4))
def test_mixed_stream_random_chunks_as_memoryview(side: Side, seed: int) -> None:
    p = side.protocol()
    data = memoryview(bytearray(mixed_stream(side)))
    pos = 0
    for n in random_sizes(seed):
        if pos >= len(data):
            break
        p.feed(data[pos : pos + n])
        pos += n
    check_mixed_stream_result(p)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_large_read_of_whole_frames_of_every_size(side: Side, kind: type) -> None:
    # One read over 16 KiB is parsed in place, not copied to bytes: each whole frame's payload and
    # mask key are then slices of the caller's buffer, whatever the payload's size.
    rng = random.Random(3)
    payloads = [rng.randbytes(n) for n in (0, 1, 125, 126, 129, 1000, 4095, 4096, 5000, 20000)]
    texts = ["é" * 40, "✓" * 1500]
    data = b"".join(side.incoming(BINARY, p) for p in payloads)
    data += b"".join(side.incoming(TEXT, t.encode()) for t in texts)
    assert len(data) > 16 * 1024
    p = side.protocol()
    p.feed(kind(bytearray(data)))
    assert p.failure is None
    assert summary(p.received) == [("binary", p) for p in payloads] + [("text", t.encode()) for t in texts]


def test_mixed_stream_every_two_way_split_of_the_head(side: Side) -> None:
    # Splits landing in every header and at every payload offset of the first frames.
    data = mixed_stream(side)
    for cut in range(1, 400):
        p = side.protocol()
        p.feed(data[:cut])
        p.feed(data[cut:])
        check_mixed_stream_result(p)


# ---------------------------------------------------------------------- unmasking partial frames


PARTIAL_PAYLOAD = bytes(range(1, 40))  # every byte distinct, so a wrong key offset shows


@pytest.mark.parametrize("cut", range(len(PARTIAL_PAYLOAD)))
def test_partial_masked_frame_two_pieces(cut: int) -> None:
    data = frame(BINARY, PARTIAL_PAYLOAD, key=KEY)
    p = Protocol()
    p.feed(data[: 6 + cut])
    assert p.received == []
    p.feed(data[6 + cut :])
    assert summary(p.received) == [("binary", PARTIAL_PAYLOAD)]


@pytest.mark.parametrize("first", range(1, 9))
@pytest.mark.parametrize("second", range(1, 9))
def test_partial_masked_frame_three_pieces(first: int, second: int) -> None:
    data = frame(BINARY, PARTIAL_PAYLOAD, key=KEY)
    p = Protocol()
    p.feed(data[: 6 + first])
    p.feed(data[6 + first : 6 + first + second])
    p.feed(data[6 + first + second :])
    assert summary(p.received) == [("binary", PARTIAL_PAYLOAD)]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7])
def test_partial_masked_frames_in_fixed_steps(step: int) -> None:
    # A fragmented message and a control frame, each arriving in pieces.
    data = (
        frame(BINARY, PARTIAL_PAYLOAD, fin=False, key=KEY)
        + frame(PING, PARTIAL_PAYLOAD[:13], key=b"\x01\x02\x03\x04")
        + frame(CONT, PARTIAL_PAYLOAD[::-1], key=b"\xa0\xb1\xc2\xd3")
    )
    p = Protocol()
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
    assert summary(p.received) == [("binary", PARTIAL_PAYLOAD + PARTIAL_PAYLOAD[::-1])]
    assert [(f.opcode, f.payload) for f in written(p)] == [(PONG, PARTIAL_PAYLOAD[:13])]


def test_partial_frame_body_in_many_chunks_then_next_frame_in_same_chunk() -> None:
    payload = bytes(range(256)) * 4
    data = frame(BINARY, payload, key=KEY) + frame(TEXT, b"next", key=b"\x11\x22\x33\x44")
    p = Protocol()
    p.feed(data[:10])
    p.feed(data[10:700])
    p.feed(data[700:])
    assert summary(p.received) == [("binary", payload), ("text", b"next")]


# ---------------------------------------------------------------------- UTF-8 validation (valid input)


@pytest.mark.parametrize(
    "text",
    ["€", "é", "😀", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010ffff"],
    ids=lambda t: f"U+{ord(t):04X}",
)
def test_utf8_character_split_across_fragments(side: Side, text: str) -> None:
    encoded = ("a" + text + "b").encode()
    for cut in range(1, len(encoded)):
        p = side.protocol()
        p.feed(side.incoming(TEXT, encoded[:cut], fin=False))
        p.feed(side.incoming(CONT, encoded[cut:]))
        assert summary(p.received) == [("text", encoded)], cut
        assert p.failure is None


@pytest.mark.parametrize("text", ["😀", "\U0010ffff", "\ud7ff"], ids=lambda t: f"U+{ord(t):04X}")
def test_utf8_character_one_byte_per_fragment(side: Side, text: str) -> None:
    encoded = text.encode()
    p = side.protocol()
    p.feed(side.incoming(TEXT, encoded[:1], fin=False))
    for i in range(1, len(encoded) - 1):
        p.feed(side.incoming(CONT, encoded[i : i + 1], fin=False))
    p.feed(side.incoming(CONT, encoded[-1:]))
    assert summary(p.received) == [("text", encoded)]


@pytest.mark.parametrize(
    "text",
    ["€", "😀", "\ud7ff", "\ue000", "\U0010ffff", "mixed ascii é € 😀 end"],
)
def test_utf8_split_across_chunks_inside_one_frame(side: Side, text: str) -> None:
    encoded = text.encode()
    data = side.incoming(TEXT, encoded)
    header_length = len(data) - len(encoded)
    for cut in range(1, len(encoded)):
        p = side.protocol()
        p.feed(data[: header_length + cut])
        assert p.failure is None
        p.feed(data[header_length + cut :])
        assert summary(p.received) == [("text", encoded)]


def test_utf8_one_byte_per_chunk_inside_one_frame(side: Side) -> None:
    encoded = "aé€😀\U0010ffff\ud7ff\ue000z".encode()
    p = side.protocol()
    for i, byte in enumerate(side.incoming(TEXT, encoded)):
        p.feed(bytes([byte]))
        assert p.failure is None, i
    assert summary(p.received) == [("text", encoded)]


# ---------------------------------------------------------------------- UTF-8 validation (invalid input)

# (valid prefix, invalid sequence, index in the sequence of the first byte that makes it invalid)
INVALID_UTF8 = {
    "surrogate-d800": (b"ok ", b"\xed\xa0\x80", 1),
    "surrogate-dfff": (b"ok ", b"\xed\xbf\xbf", 1),
    "overlong-2-byte": (b"ok ", b"\xc0\xaf", 0),
    "overlong-c1": (b"ok ", b"\xc1\xbf", 0),
    "overlong-3-byte": (b"ok ", b"\xe0\x80\xaf", 1),
    "overlong-4-byte": (b"ok ", b"\xf0\x80\x80\xaf", 1),
    "above-u10ffff": (b"ok ", b"\xf4\x90\x80\x80", 1),
    "f5": (b"ok ", b"\xf5\x80\x80\x80", 0),
    "ff": (b"ok ", b"\xff", 0),
    "lone-continuation": (b"ok ", b"\x80", 0),
    "missing-continuation": (b"ok ", b"\xe2\x82A", 2),
    "after-multibyte": ("é€".encode(), b"\xed\xa0\x80", 1),
}


def invalid_cases():
    return [pytest.param(*v, id=k) for k, v in INVALID_UTF8.items()]


@pytest.mark.parametrize(("prefix", "bad", "index"), invalid_cases())
def test_invalid_utf8_detected_as_soon_as_bad_byte_arrives(
    side: Side, prefix: bytes, bad: bytes, index: int
) -> None:
    # One text frame whose payload goes on well past the invalid byte; feed it a byte at a time.
    payload = prefix + bad + b" and more text that never arrives"
    data = side.incoming(TEXT, payload)
    stop = len(data) - len(payload) + len(prefix) + index + 1
    p = side.protocol()
    for i in range(stop - 1):
        p.feed(data[i : i + 1])
        assert p.failure is None, f"failed early at byte {i}"
    p.feed(data[stop - 1 : stop])
    assert_failed(p, 1007)
    assert p.received == []


@pytest.mark.parametrize(("prefix", "bad", "index"), invalid_cases())
def test_invalid_utf8_detected_in_first_chunk_of_unfinished_frame(
    side: Side, prefix: bytes, bad: bytes, index: int
) -> None:
    payload = prefix + bad + b" and more text that never arrives"
    data = side.incoming(TEXT, payload)
    p = side.protocol()
    p.feed(data[: len(data) - len(payload) + len(prefix) + index + 1])
    assert_failed(p, 1007)


@pytest.mark.parametrize(("prefix", "bad", "index"), invalid_cases())
def test_invalid_utf8_detected_in_unfinished_fragmented_message(
    side: Side, prefix: bytes, bad: bytes, index: int
) -> None:
    # The first fragment ends right after the invalid byte; no more fragments arrive.
    p = side.protocol()
    p.feed(side.incoming(TEXT, prefix + bad[: index + 1], fin=False))
    assert_failed(p, 1007)


@pytest.mark.parametrize(("prefix", "bad", "index"), invalid_cases())
def test_invalid_utf8_in_complete_frame(side: Side, prefix: bytes, bad: bytes, index: int) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, prefix + bad + b"tail"))
    assert_failed(p, 1007)
    assert p.received == []


@pytest.mark.parametrize(("prefix", "bad", "index"), invalid_cases())
def test_invalid_utf8_in_continuation_frame(side: Side, prefix: bytes, bad: bytes, index: int) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, prefix, fin=False))
    p.feed(side.incoming(CONT, bad + b"tail"))
    assert_failed(p, 1007)
    assert p.received == []


@pytest.mark.parametrize("truncated", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"])
def test_text_message_ending_inside_a_character_is_invalid(side: Side, truncated: bytes) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"abc" + truncated))
    assert_failed(p, 1007)


@pytest.mark.parametrize("truncated", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"])
def test_fragmented_text_message_ending_inside_a_character_is_invalid(side: Side, truncated: bytes) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"abc", fin=False))
    p.feed(side.incoming(CONT, truncated, fin=False))
    assert p.failure is None
    p.feed(side.incoming(CONT, b""))
    assert_failed(p, 1007)


def test_binary_message_is_not_utf8_checked(side: Side) -> None:
    payload = b"\xed\xa0\x80\xc0\xaf\xff"
    p = side.protocol()
    p.feed(side.incoming(BINARY, payload[:2], fin=False) + side.incoming(CONT, payload[2:]))
    assert summary(p.received) == [("binary", payload)]


# ---------------------------------------------------------------------- RFC 6455 §5 violations


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70], ids=["rsv1", "rsv2", "rsv3", "all"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING])
def test_reserved_bits_fail_with_1002(side: Side, rsv: int, opcode: int) -> None:
    p = side.protocol()
    p.feed(side.incoming(opcode, b"x", rsv=rsv))
    assert_failed(p, 1002)
    assert p.received == []


def test_reserved_bits_on_continuation_fail_with_1002(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"a", fin=False))
    p.feed(side.incoming(CONT, b"b", rsv=0x40))
    assert_failed(p, 1002)
    assert p.received == []


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF], ids=hex)
def test_reserved_opcodes_fail_with_1002(side: Side, opcode: int) -> None:
    p = side.protocol()
    p.feed(side.incoming(opcode, b"data"))
    assert_failed(p, 1002)
    assert p.received == []


@pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
def test_fragmented_control_frame_fails_with_1002(side: Side, opcode: int) -> None:
    p = side.protocol()
    payload = close_payload(1000) if opcode == CLOSE else b"x"
    p.feed(side.incoming(opcode, payload, fin=False))
    assert_failed(p, 1002)
    assert p.received == []


@pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
def test_control_frame_over_125_bytes_fails_with_1002(side: Side, opcode: int) -> None:
    payload = close_payload(1000, "r" * 124) if opcode == CLOSE else b"p" * 126
    assert len(payload) == 126
    p = side.protocol()
    p.feed(side.incoming(opcode, payload))
    assert_failed(p, 1002)
    assert p.received == []


@pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
def test_control_frame_over_125_bytes_fails_from_header_alone(side: Side, opcode: int) -> None:
    p = side.protocol()
    p.feed(side.incoming_header(opcode, 126))
    assert_failed(p, 1002)


def test_control_frame_of_125_bytes_is_accepted(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(PING, b"p" * 125))
    assert p.failure is None
    assert [(f.opcode, f.payload) for f in written(p)] == [(PONG, b"p" * 125)]


def test_continuation_without_start_fails_with_1002(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CONT, b"orphan"))
    assert_failed(p, 1002)
    assert p.received == []


def test_continuation_after_finished_message_fails_with_1002(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"a", fin=False) + side.incoming(CONT, b"b"))
    p.feed(side.incoming(CONT, b"c"))
    assert summary(p.received) == [("text", b"ab")]
    assert_failed(p, 1002)


@pytest.mark.parametrize("first", [TEXT, BINARY])
@pytest.mark.parametrize("second", [TEXT, BINARY])
@pytest.mark.parametrize("second_fin", [True, False])
def test_new_data_frame_inside_fragmented_message_fails_with_1002(
    side: Side, first: int, second: int, second_fin: bool
) -> None:
    p = side.protocol()
    p.feed(side.incoming(first, b"part", fin=False))
    p.feed(side.incoming(second, b"intruder", fin=second_fin))
    assert_failed(p, 1002)
    assert p.received == []


def test_new_data_frame_after_partially_received_first_fragment_fails_with_1002(side: Side) -> None:
    p = side.protocol()
    data = side.incoming(TEXT, b"part one", fin=False)
    p.feed(data[:-3])
    p.feed(data[-3:] + side.incoming(TEXT, b"intruder"))
    assert_failed(p, 1002)


def test_unmasked_frame_to_server_fails_with_1002() -> None:
    p = Protocol()
    p.feed(frame(TEXT, b"Hello"))
    assert_failed(p, 1002)
    assert p.received == []


def test_unmasked_control_frame_to_server_fails_with_1002() -> None:
    p = Protocol()
    p.feed(frame(PING, b"Hello"))
    assert_failed(p, 1002)


def test_masked_frame_to_client_fails_with_1002() -> None:
    p = Protocol(client=True)
    p.feed(frame(TEXT, b"Hello", key=KEY))
    assert_failed(p, 1002)
    assert p.received == []


def test_masked_control_frame_to_client_fails_with_1002() -> None:
    p = Protocol(client=True)
    p.feed(frame(PING, b"Hello", key=KEY))
    assert_failed(p, 1002)


def test_close_with_one_byte_payload_fails_with_1002(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, b"\x03"))
    assert_failed(p, 1002)
    assert p.close_received is None
    assert p.received == []


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_close_with_invalid_code_fails_with_1002(side: Side, code: int) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(code, "why")))
    assert_failed(p, 1002)
    assert p.close_received is None
    assert p.received == []


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xed\xa0\x80", b"\xc0\xaf", b"cut\xe2\x82"])
def test_close_reason_invalid_utf8_fails_with_1007(side: Side, reason: bytes) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(1000, reason)))
    assert_failed(p, 1007)
    assert p.close_received is None
    assert p.received == []


def test_frame_length_with_most_significant_bit_set_fails_with_1002(side: Side) -> None:
    first = bytes([0x82, (0x00 if side.client else 0x80) | 127])
    data = first + (1 << 63).to_bytes(8, "big") + (b"" if side.client else KEY)
    p = side.protocol(max_message_size=None)
    p.feed(data)
    assert_failed(p, 1002)


# ---------------------------------------------------------------------- message size limit


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_message_over_limit_fails_with_1009_from_header_alone(side: Side, opcode: int) -> None:
    p = side.protocol(max_message_size=1000)
    p.feed(side.incoming_header(opcode, 1001))
    assert_failed(p, 1009)


def test_huge_frame_header_fails_with_1009_under_default_limit(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming_header(BINARY, 2**32))
    assert_failed(p, 1009)


def test_frame_just_over_default_limit_fails_with_1009(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming_header(BINARY, 16 * 1024 * 1024 + 1))
    assert_failed(p, 1009)


def test_message_at_limit_is_accepted(side: Side) -> None:
    p = side.protocol(max_message_size=1000)
    p.feed(side.incoming(BINARY, b"b" * 1000))
    assert summary(p.received) == [("binary", b"b" * 1000)]
    assert p.failure is None


def test_fragmented_message_at_limit_is_accepted(side: Side) -> None:
    p = side.protocol(max_message_size=1000 + FRAGMENT_OVERHEAD)  # one continuation
    p.feed(side.incoming(TEXT, b"a" * 600, fin=False))
    p.feed(side.incoming(CONT, b"b" * 400))
    assert summary(p.received) == [("text", b"a" * 600 + b"b" * 400)]


def test_fragmented_message_over_limit_fails_with_1009(side: Side) -> None:
    p = side.protocol(max_message_size=1000)
    p.feed(side.incoming(TEXT, b"a" * 600, fin=False))
    p.feed(side.incoming(CONT, b"b" * 300, fin=False))
    assert p.failure is None
    p.feed(side.incoming(CONT, b"c" * 101))
    assert_failed(p, 1009)
    assert p.received == []


def test_fragmented_message_over_limit_fails_from_continuation_header_alone(side: Side) -> None:
    p = side.protocol(max_message_size=1000)
    p.feed(side.incoming(BINARY, b"a" * 600, fin=False))
    p.feed(side.incoming_header(CONT, 401, fin=False))
    assert_failed(p, 1009)


def test_fragmented_message_over_limit_when_fragments_arrive_in_pieces(side: Side) -> None:
    data = side.incoming(BINARY, b"a" * 600, fin=False) + side.incoming(CONT, b"b" * 401)
    p = side.protocol(max_message_size=1000)
    for i in range(0, len(data), 7):
        p.feed(data[i : i + 7])
        if p.failure is not None:
            break
    assert_failed(p, 1009)


def test_limit_applies_per_message(side: Side) -> None:
    p = side.protocol(max_message_size=10 + FRAGMENT_OVERHEAD)
    p.feed(side.incoming(TEXT, b"a" * 6, fin=False) + side.incoming(CONT, b"b" * 4))
    p.feed(side.incoming(TEXT, b"c" * (10 + FRAGMENT_OVERHEAD)))
    assert summary(p.received) == [("text", b"a" * 6 + b"b" * 4), ("text", b"c" * (10 + FRAGMENT_OVERHEAD))]
    assert p.failure is None


def test_control_frames_do_not_count_toward_message_limit(side: Side) -> None:
    p = side.protocol(max_message_size=10 + FRAGMENT_OVERHEAD)
    p.feed(side.incoming(TEXT, b"a" * 5, fin=False))
    p.feed(side.incoming(PING, b"p" * 100))
    p.feed(side.incoming(CONT, b"b" * 5))
    assert summary(p.received) == [("text", b"a" * 5 + b"b" * 5)]


def test_unlimited_message_size_accepts_huge_header(side: Side) -> None:
    p = side.protocol(max_message_size=None)
    p.feed(side.incoming_header(BINARY, 2**40) + b"start")
    assert p.failure is None
    assert p.state is State.OPEN
    assert written(p) == []


def test_unlimited_message_size_accepts_message_over_default_limit() -> None:
    # Client side: incoming frames are unmasked, so building a 17 MiB frame is cheap.
    payload = b"\x01" * (DEFAULT_MAX_MESSAGE_SIZE + 1024 * 1024)
    p = Protocol(client=True, max_message_size=None)
    p.feed(frame(BINARY, payload[:1000], fin=False))
    p.feed(frame(CONT, payload[1000:]))
    assert len(p.received) == 1
    assert p.received[0].data == payload


# ---------------------------------------------------------------------- after a failure


LATE_INPUT = {
    "text": lambda s: s.incoming(TEXT, b"late"),
    "binary": lambda s: s.incoming(BINARY, b"late"),
    "fragment": lambda s: s.incoming(TEXT, b"la", fin=False) + s.incoming(CONT, b"te"),
    "ping": lambda s: s.incoming(PING, b"late"),
    "pong": lambda s: s.incoming(PONG, b"late"),
    "close": lambda s: s.incoming(CLOSE, close_payload(1000)),
    "invalid": lambda s: s.incoming(CONT, b"late"),
}


@pytest.mark.parametrize("late", list(LATE_INPUT.values()), ids=list(LATE_INPUT))
def test_input_after_failure_is_ignored(side: Side, late) -> None:
    p = side.protocol()
    p.feed(side.incoming(3, b"reserved"))
    assert_failed(p, 1002)
    p.feed(late(side))
    assert p.received == []
    assert written(p) == []
    assert p.close_received is None
    assert p.state is State.CLOSING
    assert p.close_code == 1002
    assert p.failure is not None and p.failure.code == 1002


@pytest.mark.parametrize("late", list(LATE_INPUT.values()), ids=list(LATE_INPUT))
def test_input_after_failure_by_application_is_ignored(side: Side, late) -> None:
    # The application fails the connection from on_message; the rest of the chunk is dropped.
    got: list[Message] = []

    def on_message(m: Message) -> None:
        got.append(m)
        p.fail(ProtocolException("application gave up", 1011))

    p = side.protocol(on_message=on_message)
    p.feed(side.incoming(TEXT, b"first") + late(side))
    assert summary(got) == [("text", b"first")]
    assert_failed(p, 1011)
    assert p.close_received is None


def test_frames_after_violation_in_same_chunk_are_ignored(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(3, b"reserved") + side.incoming(TEXT, b"late") + side.incoming(PING, b"late"))
    assert_failed(p, 1002)
    assert p.received == []


def test_input_after_failure_mid_frame_is_ignored(side: Side) -> None:
    p = side.protocol(max_message_size=10)
    data = side.incoming(BINARY, b"x" * 50)
    p.feed(data[:20])
    assert_failed(p, 1009)
    p.feed(data[20:] + side.incoming(TEXT, b"late"))
    assert p.received == []
    assert written(p) == []


def test_failure_exposes_reason(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CONT, b"orphan"))
    assert isinstance(p.failure, ProtocolException)
    assert p.close_reason == p.failure.reason
    assert p.close_reason  # a human-readable explanation
    frames = written(p)
    assert parse_close(frames[0].payload) == (1002, p.failure.reason)


def test_explicit_fail_sends_close_with_its_code(side: Side) -> None:
    p = side.protocol()
    p.fail(ProtocolException("going wrong", 1011))
    assert_failed(p, 1011)
    assert p.close_reason == "going wrong"


def test_failure_after_close_sent_writes_no_second_close_frame(side: Side) -> None:
    p = side.protocol()
    p.close(1000)
    written(p)
    p.feed(side.incoming(3, b"reserved"))
    assert p.failure is not None
    assert p.failure.code == 1002
    assert written(p) == []
    assert p.state is State.CLOSING


# ---------------------------------------------------------------------- delivery order


def test_messages_before_violation_in_same_chunk_are_delivered_before_failure(side: Side) -> None:
    events: list[tuple] = []
    p = side.protocol(
        on_message=lambda m: events.append(("message", *summary([m])[0])),
        write=lambda data: events.append(("write", *[(f.opcode, f.payload) for f in parse_frames(data)])),
    )
    p.feed(
        side.incoming(TEXT, b"one")
        + side.incoming(BINARY, b"two")
        + side.incoming(TEXT, b"thr", fin=False)
        + side.incoming(CONT, b"ee")
        + side.incoming(0xB, b"bad")
        + side.incoming(TEXT, b"never")
    )
    assert events == [
        ("message", "text", b"one"),
        ("message", "binary", b"two"),
        ("message", "text", b"three"),
        ("write", (CLOSE, close_payload(1002) + p.failure.reason.encode())),
    ]


def test_replies_to_messages_are_written_before_failure_close(side: Side) -> None:
    p = side.protocol()
    p.on_message = lambda m: p.send(b"echo " + m.data)
    p.feed(side.incoming(TEXT, b"a") + side.incoming(TEXT, b"b") + side.incoming(CONT, b"bad"))
    frames = written(p)
    assert [(f.opcode, f.payload) for f in frames[:2]] == [(TEXT, b"echo a"), (TEXT, b"echo b")]
    assert [f.opcode for f in frames[2:]] == [CLOSE]
    assert parse_close(frames[2].payload)[0] == 1002


def test_replies_to_messages_are_written_before_close_echo(side: Side) -> None:
    p = side.protocol()
    p.on_message = lambda m: p.send(b"echo " + m.data) if m.opcode == TEXT else None
    p.feed(side.incoming(TEXT, b"a") + side.incoming(CLOSE, close_payload(1001)))
    frames = written(p)
    assert [f.opcode for f in frames] == [TEXT, CLOSE]
    assert frames[0].payload == b"echo a"
    assert parse_close(frames[1].payload)[0] == 1001


def test_pong_written_in_stream_order(side: Side) -> None:
    p = side.protocol()
    p.on_message = lambda m: p.send(m.data)
    p.feed(side.incoming(TEXT, b"1") + side.incoming(PING, b"2") + side.incoming(TEXT, b"3"))
    assert [(f.opcode, f.payload) for f in written(p)] == [(TEXT, b"1"), (PONG, b"2"), (TEXT, b"3")]


def test_messages_delivered_in_order_with_pongs(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(PONG, b"1") + side.incoming(TEXT, b"2") + side.incoming(PONG, b"3"))
    assert summary(p.received) == [("pong", b"1"), ("text", b"2"), ("pong", b"3")]


# ---------------------------------------------------------------------- ping / pong


@pytest.mark.parametrize("payload", [b"", b"Hello", bytes(range(125))])
def test_ping_answered_with_pong_carrying_same_payload(side: Side, payload: bytes) -> None:
    p = side.protocol()
    p.feed(side.incoming(PING, payload))
    frames = written(p)
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [(PONG, True, payload)]
    assert p.received == []


def test_ping_inside_fragmented_message_answered_immediately(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"a", fin=False) + side.incoming(PING, b"now"))
    assert [(f.opcode, f.payload) for f in written(p)] == [(PONG, b"now")]
    assert p.received == []
    p.feed(side.incoming(CONT, b"b"))
    assert summary(p.received) == [("text", b"ab")]


def test_each_ping_gets_its_own_pong(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(PING, b"1") + side.incoming(PING, b"2"))
    assert [(f.opcode, f.payload) for f in written(p)] == [(PONG, b"1"), (PONG, b"2")]


@pytest.mark.parametrize(("data", "payload"), [(b"", b""), (b"beat", b"beat"), ("☃", "☃".encode())])
def test_send_ping(side: Side, data: str | bytes, payload: bytes) -> None:
    p = side.protocol()
    p.ping(data)
    assert [(f.opcode, f.fin, f.payload) for f in written(p)] == [(PING, True, payload)]


def test_send_unsolicited_pong(side: Side) -> None:
    p = side.protocol()
    p.pong(b"heartbeat")
    assert [(f.opcode, f.payload) for f in written(p)] == [(PONG, b"heartbeat")]


@pytest.mark.parametrize("method", ["ping", "pong"])
def test_control_payload_over_125_bytes_is_refused(side: Side, method: str) -> None:
    p = side.protocol()
    with pytest.raises(ValueError):
        getattr(p, method)(b"x" * 126)
    assert written(p) == []


# ---------------------------------------------------------------------- closing handshake


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_peer_close_echoed_with_same_code(side: Side, code: int) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(code, "peer reason")))
    frames = written(p)
    assert [f.opcode for f in frames] == [CLOSE]
    assert parse_close(frames[0].payload)[0] == code
    assert p.state is State.CLOSED
    assert p.close_code == code
    assert p.close_reason == "peer reason"


def test_peer_close_is_delivered_as_message(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(1001, "going ☃")))
    assert summary(p.received) == [("close", 1001, "going ☃")]
    assert isinstance(p.received[0], CloseControlMessage)
    assert p.close_received is p.received[0]


def test_empty_close_answered_with_empty_close(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, b""))
    frames = written(p)
    assert [(f.opcode, f.payload) for f in frames] == [(CLOSE, b"")]
    assert p.state is State.CLOSED
    assert p.close_code == 1005
    assert p.close_reason == ""
    assert summary(p.received) == [("close", None, "")]


def test_close_with_code_and_empty_reason(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(1000)))
    assert p.close_code == 1000
    assert p.close_reason == ""


def test_close_code_1006_when_no_close_received(side: Side) -> None:
    p = side.protocol()
    assert p.close_code == 1006
    assert p.close_reason == ""
    p.close(1000)
    assert p.close_code == 1006


def test_open_to_closed_on_peer_close(side: Side) -> None:
    p = side.protocol()
    assert p.state is State.OPEN
    p.feed(side.incoming(CLOSE, close_payload(1000)))
    assert p.state is State.CLOSED


def test_open_to_closing_to_closed_when_we_close_first(side: Side) -> None:
    p = side.protocol()
    assert p.close(1001, "bye") is True
    assert p.state is State.CLOSING
    frames = written(p)
    assert [f.opcode for f in frames] == [CLOSE]
    assert parse_close(frames[0].payload) == (1001, "bye")
    assert p.close_sent is not None
    assert (p.close_sent.code, p.close_sent.reason) == (1001, b"bye")

    p.feed(side.incoming(CLOSE, close_payload(1001)))
    assert p.state is State.CLOSED
    assert written(p) == []  # the peer's close is not echoed back
    assert p.close_code == 1001
    assert summary(p.received) == [("close", 1001, "")]


def test_peer_close_after_our_close_may_carry_other_code(side: Side) -> None:
    p = side.protocol()
    p.close(1000)
    p.feed(side.incoming(CLOSE, close_payload(4000, "different")))
    assert p.close_code == 4000
    assert p.close_reason == "different"


def test_close_twice_sends_one_close_frame(side: Side) -> None:
    p = side.protocol()
    assert p.close() is True
    assert p.close() is False
    assert [f.opcode for f in written(p)] == [CLOSE]


def test_close_after_peer_close_sends_nothing(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(1000)))
    written(p)
    assert p.close() is False
    assert written(p) == []


def test_close_default_code_is_1000(side: Side) -> None:
    p = side.protocol()
    p.close()
    assert parse_close(written(p)[0].payload) == (1000, "")


def test_close_without_code_sends_empty_close(side: Side) -> None:
    p = side.protocol()
    p.close(None)
    assert [(f.opcode, f.payload) for f in written(p)] == [(CLOSE, b"")]
    assert p.state is State.CLOSING


def test_close_with_long_reason_fits_in_control_frame(side: Side) -> None:
    p = side.protocol()
    p.close(1000, "☃" * 100)
    (f,) = written(p)
    assert len(f.payload) <= 125
    code, reason = parse_close(f.payload)  # decodes: still valid UTF-8
    assert code == 1000
    assert ("☃" * 100).startswith(reason)


def test_data_after_we_sent_close_delivered_until_peer_close(side: Side) -> None:
    # The peer may send until it has our close frame (RFC 6455 §5.5.1): delivered (issue 15).
    p = side.protocol()
    p.close(1000)
    written(p)
    p.feed(
        side.incoming(TEXT, b"late text")
        + side.incoming(BINARY, b"late", fin=False)
        + side.incoming(CONT, b" binary")
        + side.incoming(CLOSE, close_payload(1000, "ok"))
    )
    assert summary(p.received) == [("text", b"late text"), ("binary", b"late binary"), ("close", 1000, "ok")]
    assert p.state is State.CLOSED
    assert p.failure is None


def test_partial_data_frame_after_we_sent_close_delivered(side: Side) -> None:
    p = side.protocol()
    p.close(1000)
    data = side.incoming(TEXT, b"late text") + side.incoming(CLOSE, close_payload(1000))
    for i in range(len(data)):
        p.feed(data[i : i + 1])
    assert summary(p.received) == [("text", b"late text"), ("close", 1000, "")]


def test_invalid_data_after_we_sent_close_still_fails(side: Side) -> None:
    p = side.protocol()
    p.close(1000)
    p.feed(side.incoming(TEXT, b"\xff"))
    assert p.failure is not None
    assert p.failure.code == 1007


@pytest.mark.parametrize("late", list(LATE_INPUT.values()), ids=list(LATE_INPUT))
def test_input_after_peer_close_in_same_chunk_is_ignored(side: Side, late) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(1000)) + late(side))
    assert summary(p.received) == [("close", 1000, "")]
    assert [f.opcode for f in written(p)] == [CLOSE]
    assert p.failure is None
    assert p.state is State.CLOSED


@pytest.mark.parametrize("late", list(LATE_INPUT.values()), ids=list(LATE_INPUT))
def test_input_after_peer_close_in_later_chunk_is_ignored(side: Side, late) -> None:
    p = side.protocol()
    p.feed(side.incoming(CLOSE, close_payload(1000)))
    written(p)
    p.feed(late(side))
    assert summary(p.received) == [("close", 1000, "")]
    assert written(p) == []
    assert p.failure is None
    assert p.state is State.CLOSED


@pytest.mark.parametrize("late", list(LATE_INPUT.values()), ids=list(LATE_INPUT))
def test_input_after_partially_received_peer_close_is_ignored(side: Side, late) -> None:
    # The close frame completes in the middle of a chunk that carries more frames.
    close = side.incoming(CLOSE, close_payload(1000, "bye"))
    p = side.protocol()
    p.feed(close[:-2])
    p.feed(close[-2:] + late(side))
    assert summary(p.received) == [("close", 1000, "bye")]
    assert [f.opcode for f in written(p)] == [CLOSE]
    assert p.failure is None
    assert p.state is State.CLOSED


def test_close_frame_split_across_chunks(side: Side) -> None:
    data = side.incoming(CLOSE, close_payload(1001, "split reason é"))
    p = side.protocol()
    for i in range(len(data)):
        p.feed(data[i : i + 1])
    assert summary(p.received) == [("close", 1001, "split reason é")]
    assert p.state is State.CLOSED


def test_close_during_fragmented_message_drops_it(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(TEXT, b"unfinished", fin=False) + side.incoming(CLOSE, close_payload(1000)))
    assert summary(p.received) == [("close", 1000, "")]
    assert p.state is State.CLOSED


# ---------------------------------------------------------------------- outgoing frames


def test_server_frames_are_unmasked_rfc_example() -> None:
    p = Protocol()
    p.send("Hello")
    assert p.data_to_send() == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


@pytest.mark.parametrize("kind", [str, bytes, bytearray, memoryview])
def test_server_send_payload_types(kind: type) -> None:
    p = Protocol()
    payload = "Hello" if kind is str else kind(b"Hello")
    p.send(payload)
    assert p.data_to_send() == b"\x81\x05Hello"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_server_send_binary_payload_types(kind: type) -> None:
    p = Protocol()
    p.send(kind(b"\x00\x01\xff"), binary=True)
    assert p.data_to_send() == b"\x82\x03\x00\x01\xff"


def test_send_str_is_utf8_encoded(side: Side) -> None:
    p = side.protocol()
    p.send("é☃😀")
    assert [(f.opcode, f.payload) for f in written(p)] == [(TEXT, "é☃😀".encode())]


def test_send_str_as_binary(side: Side) -> None:
    p = side.protocol()
    p.send("é", binary=True)
    assert [(f.opcode, f.payload) for f in written(p)] == [(BINARY, "é".encode())]


def test_client_frames_are_masked() -> None:
    p = Protocol(client=True)
    p.send("Hello")
    data = p.data_to_send()
    assert data[0] == 0x81
    assert data[1] == 0x80 | 5
    assert xor_mask(data[6:], data[2:6]) == b"Hello"


@pytest.mark.parametrize("kind", [str, bytes, bytearray, memoryview])
@pytest.mark.parametrize("binary", [False, True])
def test_client_frames_decodable_by_server(kind: type, binary: bool) -> None:
    client, srv = Protocol(client=True), Protocol()
    text = "Hello é"
    client.send(text if kind is str else kind(text.encode()), binary=binary)
    srv.feed(client.data_to_send())
    assert summary(srv.received) == [("binary" if binary else "text", text.encode())]
    assert srv.failure is None


def test_server_frames_decodable_by_client() -> None:
    client, srv = Protocol(client=True), Protocol()
    srv.send("one")
    srv.send(b"two", binary=True)
    srv.ping(b"three")
    client.feed(srv.data_to_send())
    assert summary(client.received) == [("text", b"one"), ("binary", b"two")]
    assert [(f.opcode, f.payload) for f in written(client)] == [(PONG, b"three")]


def test_client_server_full_conversation() -> None:
    client, srv = Protocol(client=True), Protocol()
    client.send("hi")
    client.ping(b"p")
    srv.feed(client.data_to_send())
    client.feed(srv.data_to_send())  # the pong
    srv.send("hello")
    srv.close(1000, "done")
    client.feed(srv.data_to_send())
    srv.feed(client.data_to_send())  # the echoed close
    assert summary(srv.received) == [("text", b"hi"), ("close", 1000, "")]
    assert summary(client.received) == [("pong", b"p"), ("text", b"hello"), ("close", 1000, "done")]
    assert srv.state is State.CLOSED
    assert client.state is State.CLOSED


@pytest.mark.parametrize(
    ("length", "length_bytes"),
    [
        (125, b"\x7d"),
        (126, b"\x7e\x00\x7e"),
        (65535, b"\x7e\xff\xff"),
        (65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (1 << 20, b"\x7f\x00\x00\x00\x00\x00\x10\x00\x00"),
    ],
)
def test_server_send_large_payload_header(length: int, length_bytes: bytes) -> None:
    payload = random.Random(length).randbytes(length)
    p = Protocol()
    p.send(payload, binary=True)
    assert p.data_to_send() == b"\x82" + length_bytes + payload


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_server_send_one_mib_decodable_by_client(kind: type) -> None:
    payload = random.Random(3).randbytes(1 << 20)
    srv, client = Protocol(), Protocol(client=True)
    srv.send(kind(payload), binary=True)
    client.feed(srv.data_to_send())
    assert summary(client.received) == [("binary", payload)]


def test_client_send_one_mib_decodable_by_server() -> None:
    payload = random.Random(4).randbytes(1 << 20)
    srv, client = Protocol(), Protocol(client=True)
    client.send(payload, binary=True)
    data = client.data_to_send()
    assert data[:2] == b"\x82\xff"
    assert data[2:10] == (1 << 20).to_bytes(8, "big")
    srv.feed(data)
    assert summary(srv.received) == [("binary", payload)]


def test_send_frame_fragments(side: Side) -> None:
    p = side.protocol()
    p.send_frame(TEXT, b"frag", fin=False)
    p.send_frame(CONT, b"ment", fin=False)
    p.send_frame(CONT, b"ed")
    frames = written(p)
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (TEXT, False, b"frag"),
        (CONT, False, b"ment"),
        (CONT, True, b"ed"),
    ]


@pytest.mark.parametrize("how", ["close", "fail", "peer close"])
def test_send_after_close_is_ignored(side: Side, how: str) -> None:
    p = side.protocol()
    if how == "close":
        p.close()
    elif how == "fail":
        p.fail(ProtocolException("broken"))
    else:
        p.feed(side.incoming(CLOSE, close_payload(1000)))
    written(p)
    p.send("late")
    p.send(b"late", binary=True)
    p.send_frame(BINARY, b"late")
    p.ping(b"late")
    p.pong(b"late")
    assert written(p) == []


def test_ping_not_answered_after_we_sent_close(side: Side) -> None:
    p = side.protocol()
    p.close()
    written(p)
    p.feed(side.incoming(PING, b"late"))
    assert written(p) == []


# ------------------------------------------------ memoryviews with multi-byte items


@pytest.mark.parametrize("typecode", ["H", "I", "d"])
def test_send_memoryview_with_multibyte_items(side: Side, typecode: str) -> None:
    values = array(typecode, [1, 2, 3])
    expected = values.tobytes()
    p = side.protocol()
    p.send(memoryview(values), binary=True)
    peer = Protocol(client=not side.client)
    peer.feed(p.data_to_send())
    assert summary(peer.received) == [("binary", expected)]
    assert peer.failure is None


# ------------------------------------------ a message's memory, fragments included (issue 13, 2)


def test_flood_of_empty_continuations_fails_with_1009(side: Side) -> None:
    # 10,000 empty fragments in one read: each counts 64 bytes, so the 17th passes 1024.
    p = side.protocol(max_message_size=1024)
    p.feed(side.incoming(TEXT, b"", fin=False) + side.incoming(CONT, b"", fin=False) * 10000)
    assert_failed(p, 1009)
    assert p.received == []


def test_each_continuation_counts_64_bytes_toward_the_limit(side: Side) -> None:
    p = side.protocol(max_message_size=1000)
    p.feed(side.incoming(TEXT, b"a" * 600, fin=False) + side.incoming(CONT, b"b" * 336))
    assert summary(p.received) == [("text", b"a" * 600 + b"b" * 336)]
    p.feed(side.incoming(TEXT, b"a" * 600, fin=False) + side.incoming(CONT, b"b" * 337))
    assert_failed(p, 1009)


def traced_peak(fn: Callable[[], object]) -> int:
    """The most memory Python held at once while ``fn`` ran, over what it held before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_tiny_fragments_hold_no_more_memory_than_the_limit(side: Side) -> None:
    # 2-byte fragments were counted 2 bytes each but kept as a 35-byte bytes object and a list
    # slot each: 28 times their count. Now they fail once the limit is reached, counting 66 each.
    limit = 64 * 1024
    data = side.incoming(BINARY, b"ab", fin=False) + side.incoming(CONT, b"cd", fin=False) * 50000
    p = side.protocol(max_message_size=limit)
    peak = traced_peak(lambda: p.feed(data))
    assert_failed(p, 1009)
    assert peak < 2 * limit, peak


def test_frame_trickling_in_byte_by_byte_is_kept_in_its_size(side: Side) -> None:
    # Each read of a frame's payload was kept as its own bytes object: 60 KB arriving two bytes
    # at a time held 30,000 objects (~1.7 MB). Now small pieces are copied together.
    payload = bytes(random.Random(1).randrange(256) for _ in range(60000))
    data = side.incoming(BINARY, payload)
    p = side.protocol(max_message_size=64 * 1024)
    head = len(data) - len(payload)
    p.feed(data[:head])

    def trickle() -> None:
        for i in range(head, len(data) - 2, 2):
            p.feed(data[i : i + 2])

    peak = traced_peak(trickle)
    p.feed(data[-2:])
    assert summary(p.received) == [("binary", payload)]
    assert type(p.received[0].data) is bytes
    assert peak < 3 * len(payload), peak


def test_small_and_large_pieces_of_a_message_join_in_order(side: Side) -> None:
    rng = random.Random(7)
    pieces = [bytes([65 + i % 26]) * rng.choice((0, 1, 5, 900, 1023, 1024, 3000)) for i in range(60)]
    data = side.incoming(BINARY, pieces[0], fin=False)
    data += b"".join(side.incoming(CONT, piece, fin=False) for piece in pieces[1:-1])
    data += side.incoming(CONT, pieces[-1])
    for sizes in (iter(lambda: len(data), None), random_sizes(3), iter(lambda: 1, None)):
        p = side.protocol(max_message_size=None)
        for chunk in chunks(data, sizes):
            p.feed(chunk)
        assert summary(p.received) == [("binary", b"".join(pieces))]
        assert type(p.received[0].data) is bytes


# ------------------------------------------------ pongs to a ping flood (issue 13, 5)


def test_ping_flood_in_one_chunk_is_answered_in_one_write(side: Side) -> None:
    # RFC 6455 §5.5.3: an endpoint may answer only the most recent of several pings. A run of
    # pings in one chunk gets one write: the first PONG_BURST answered each, then the last one.
    writes: list[bytes] = []
    p = side.protocol(write=writes.append)
    p.feed(b"".join(side.incoming(PING, b"%d" % i) for i in range(1000)))
    assert len(writes) == 1
    pongs = [(f.opcode, f.payload) for f in parse_frames(writes[0])]
    assert pongs == [(PONG, b"%d" % i) for i in range(PONG_BURST)] + [(PONG, b"999")]


def test_a_burst_of_pings_is_answered_each(side: Side) -> None:
    # As Autobahn's case 2.10 expects (not the RFC): nine pings in one write, nine pongs.
    writes: list[bytes] = []
    p = side.protocol(write=writes.append)
    p.feed(b"".join(side.incoming(PING, b"payload-%d" % i) for i in range(1, 10)))
    assert len(writes) == 1
    assert [f.payload for f in parse_frames(writes[0])] == [b"payload-%d" % i for i in range(1, 10)]


def test_pongs_come_before_what_the_next_frames_cause(side: Side) -> None:
    p = side.protocol()
    p.on_message = lambda m: p.send(b"reply " + m.data)
    pings = b"".join(side.incoming(PING, b"%d" % i) for i in range(20))
    p.feed(pings + side.incoming(TEXT, b"a") + pings + side.incoming(BINARY, b"b" * 300) + pings)
    p.feed(pings + side.incoming(CLOSE, close_payload(1000)))
    run = [(PONG, b"%d" % i) for i in range(PONG_BURST)] + [(PONG, b"19")]
    assert [(f.opcode, f.payload) for f in written(p)] == [
        *run,
        (TEXT, b"reply a"),
        *run,
        (TEXT, b"reply " + b"b" * 300),
        *run,
        *run,
        (CLOSE, close_payload(1000)),
    ]


def test_pings_split_across_chunks_are_all_answered_in_order(side: Side) -> None:
    data = b"".join(side.incoming(PING, b"%d" % i) for i in range(40))
    for sizes in (random_sizes(5), iter(lambda: 7, None)):
        p = side.protocol()
        for chunk in chunks(data, sizes):
            p.feed(chunk)
        payloads = [f.payload for f in written(p)]
        # Every run (the pings whole in one chunk) is answered: its first pings, then its last.
        assert payloads[-1] == b"39"
        numbers = [int(x) for x in payloads]
        assert numbers == sorted(set(numbers))


def test_pending_pongs_are_written_before_a_failure_close(side: Side) -> None:
    p = side.protocol()
    p.feed(side.incoming(PING, b"1") + side.incoming(PING, b"2") + side.incoming(PING, b"x" * 126))
    frames = written(p)
    assert [(f.opcode, f.payload[:1]) for f in frames] == [(PONG, b"1"), (PONG, b"2"), (CLOSE, b"\x03")]


# ------------------------------------------------ callbacks that close or drop the connection


def test_nothing_after_a_callback_drops_the_connection(side: Side) -> None:
    # abort() from on_message (the transport is gone): the rest of the chunk is not parsed, not
    # even a frame that would fail the connection.
    got: list[Message] = []

    def on_message(message: Message) -> None:
        got.append(message)
        p.abort()

    p = side.protocol(on_message=on_message)
    p.feed(side.incoming(TEXT, b"one") + side.incoming(TEXT, b"two") + side.incoming(TEXT, b"\xff"))
    assert summary(got) == [("text", b"one")]
    assert p.failure is None
    assert p.state is State.CLOSED
    assert p.data_to_send() == b""


def test_nothing_after_the_pong_write_drops_the_connection(side: Side) -> None:
    # The transport may drop the connection while writing the pongs (its output over the limit):
    # the frames after the pings are not parsed.
    writes: list[bytes] = []

    def write(data: bytes) -> None:
        writes.append(data)
        p.abort()

    p = side.protocol(write=write)
    p.feed(side.incoming(PING, b"a") + side.incoming(TEXT, b"\xff") + side.incoming(BINARY, b"b"))
    assert len(writes) == 1  # the pong
    assert p.received == []
    assert p.failure is None
    assert p.state is State.CLOSED


def test_after_a_callback_closes_later_text_is_still_checked(side: Side) -> None:
    # close() from on_message: later data frames of the chunk are still handed on (the peer had
    # not seen our close), and a text frame that is not UTF-8 still fails the connection (1007).
    got: list[Message] = []

    def on_message(message: Message) -> None:
        got.append(message)
        if len(got) == 1:
            p.close(1000)

    p = side.protocol(on_message=on_message)
    p.feed(side.incoming(TEXT, b"one") + side.incoming(TEXT, b"two") + side.incoming(BINARY, b"3"))
    assert summary(got) == [("text", b"one"), ("text", b"two"), ("binary", b"3")]
    assert p.state is State.CLOSING and p.failure is None
    p.feed(side.incoming(TEXT, b"\xff"))
    assert p.failure is not None and p.failure.code == 1007
    assert summary(got) == [("text", b"one"), ("text", b"two"), ("binary", b"3")]
