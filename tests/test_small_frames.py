"""The C fast path for a client's small frames (``wsloop._speedups.small_frame``, used by
``Protocol.feed``) against an RFC 6455 reading of its contract, and the protocol with it against
the protocol without it (the pure-Python parser alone, as with ``WSLOOP_NO_SPEEDUPS=1``): the
same messages, replies, failures and counts for every stream and every way of cutting it up."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.support.components import require_module
from tests.support.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, frame, xor_mask
from wsloop import protocol as protocol_module
from wsloop.exc import ProtocolException
from wsloop.protocol import Protocol
from wsloop.stats import Counters

KEYS = (b"\x37\xfa\x21\x3d", b"\x00\x00\x00\x00", b"\xff\x01\x80\x7f")

# Text payloads: valid UTF-8 of every width, and the invalid kinds a decoder must refuse.
VALID_TEXT = [b"", b"a", b"x" * 125, "héllo".encode(), "€".encode() * 41, "𝄞".encode() * 31, b"\x7f"]
INVALID_TEXT = [
    b"\xff",
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"ok\xe2\x82",  # truncated at the end
    b"\x80abc",  # a lone continuation byte
    b"a" * 100 + b"\xc3",
]


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return require_module("wsloop._speedups", "needs a C compiler when installing: pip install -e .")


def reference(data: bytes, pos: int) -> bytes | None:
    """What small_frame promises, read straight from RFC 6455 §5.2."""
    if pos < 0 or len(data) - pos < 6:
        return None
    b0, b1 = data[pos], data[pos + 1]
    if b0 not in (0x81, 0x82) or not b1 & 0x80:
        return None
    length = b1 & 0x7F
    if length > 125 or pos + 6 + length > len(data):
        return None
    payload = xor_mask(data[pos + 6 : pos + 6 + length], data[pos + 2 : pos + 6])
    if b0 == 0x81:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return payload


def candidates() -> Iterator[bytes]:
    """Frames small_frame takes and frames it must leave to the parser."""
    for key in KEYS:
        for payload in VALID_TEXT + INVALID_TEXT:
            yield frame(TEXT, payload, key=key)
        for n in (0, 1, 7, 8, 9, 64, 124, 125):
            yield frame(BINARY, bytes(range(n)), key=key)
        yield frame(BINARY, b"x" * 126, key=key)  # 16-bit length: not small
        yield frame(TEXT, b"x" * 200, key=key)
        yield frame(TEXT, b"frag", fin=False, key=key)
        yield frame(CONT, b"frag", key=key)
        yield frame(TEXT, b"rsv", rsv=0x40, key=key)
        yield frame(BINARY, b"rsv", rsv=0x10, key=key)
        yield frame(PING, b"ping", key=key)
        yield frame(PONG, b"pong", key=key)
        yield frame(CLOSE, b"\x03\xe8", key=key)
        yield frame(0x3, b"reserved", key=key)
    yield frame(TEXT, b"unmasked")
    yield frame(BINARY, b"unmasked")


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_small_frame_matches_the_rfc_reading(c: ModuleType, kind: Callable[[bytes], Any]) -> None:
    taken = left = 0
    for one in candidates():
        for prefix in (b"", b"\x81", b"junk!!!"):
            data = prefix + one
            for cut in (len(data), len(data) - 1, len(prefix) + 5, len(prefix) + 1):
                chunk = data[:cut]
                expected = reference(chunk, len(prefix))
                got = c.small_frame(kind(chunk), len(prefix))
                assert got == expected, (chunk, len(prefix))
                assert got is None or type(got) is bytes
                taken += got is not None
                left += got is None
    assert taken > 100 and left > 100


def test_small_frame_positions_past_the_end_or_negative_give_none(c: ModuleType) -> None:
    one = frame(TEXT, b"hi", key=KEYS[0])
    assert c.small_frame(one, 0) == b"hi"
    for pos in (-1, -len(one), len(one), len(one) + 100, 1 << 40):
        assert c.small_frame(one, pos) is None
    with pytest.raises(TypeError):
        c.small_frame(one)
    with pytest.raises(TypeError):
        c.small_frame("text", 0)
    with pytest.raises(TypeError):
        c.small_frame(one, "0")


def test_every_first_and_second_byte(c: ModuleType) -> None:
    """All 65,536 header starts, each with a mask key and 125 payload bytes behind it."""
    body = KEYS[0] + b"a" * 125
    for b0 in range(256):
        for b1 in range(256):
            data = bytes((b0, b1)) + body
            assert c.small_frame(data, 0) == reference(data, 0), (b0, b1)


# ------------------------------------------------------------ the protocol with and without it


class Run:
    """One server-side Protocol fed a stream, recording everything it does. Payloads steer the
    callback: b"close" closes, b"fail" fails the connection, b"abort" aborts, b"echo..." replies,
    b"limit" lowers max_message_size to 10."""

    def __init__(self, max_message_size: int | None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.counters = Counters()
        self.p = Protocol(
            max_message_size=max_message_size, write=self.write, on_message=self.message, on_data=self.data
        )
        self.p.counters = self.counters

    def write(self, data: bytes) -> None:
        self.events.append(("write", bytes(data)))

    def message(self, message: Any) -> None:
        self.events.append(("message", type(message).__name__, bytes(message.data)))

    def data(self, payload: bytes, opcode: int) -> None:
        assert type(payload) is bytes
        self.events.append(("data", payload, opcode))
        p = self.p
        if payload == b"close":
            p.close(4000, "asked")
        elif payload == b"fail":
            p.fail(ProtocolException("failed by the handler", 1011))
        elif payload == b"abort":
            p.abort()
        elif payload == b"limit":
            p.max_message_size = 10
        elif payload.startswith(b"echo"):
            p.send(payload, opcode == BINARY)

    def feed(self, data: bytes | memoryview) -> None:
        self.p.feed(data)

    def outcome(self) -> tuple[Any, ...]:
        p = self.p
        failure = None if p.failure is None else (p.failure.code, p.failure.reason)
        return (
            self.events,
            failure,
            p.state,
            p.close_code,
            self.counters.messages_in,
            self.counters.messages_out,
        )


def random_stream(rng: random.Random) -> bytes:
    key = rng.choice(KEYS)
    parts = []
    for _ in range(rng.randrange(1, 40)):
        roll = rng.random()
        if roll < 0.45:
            parts.append(frame(TEXT, rng.choice(VALID_TEXT + [b"echo me", "échö".encode()]), key=key))
        elif roll < 0.65:
            parts.append(frame(BINARY, rng.randbytes(rng.randrange(0, 130)), key=key))
        elif roll < 0.7:
            parts.append(frame(TEXT, rng.choice([b"close", b"fail", b"abort", b"limit", b"echo"]), key=key))
        elif roll < 0.75:
            parts.append(frame(TEXT, rng.choice(INVALID_TEXT), key=key))
        elif roll < 0.8:
            parts.append(frame(PING, rng.randbytes(rng.randrange(0, 20)), key=key))
        elif roll < 0.83:
            parts.append(frame(PONG, b"p", key=key))
        elif roll < 0.88:
            first = rng.randbytes(rng.randrange(0, 50))
            parts.append(frame(BINARY, first, fin=False, key=key))
            if rng.random() < 0.5:
                parts.append(frame(PING, b"mid", key=key))
            parts.append(frame(CONT, b"end", key=key))
        elif roll < 0.92:
            parts.append(frame(BINARY, rng.randbytes(rng.randrange(126, 3000)), key=key))
        elif roll < 0.94:
            parts.append(frame(TEXT, b"rsv", rsv=0x40, key=key))
        elif roll < 0.96:
            parts.append(frame(TEXT, b"unmasked"))
        elif roll < 0.98:
            parts.append(frame(CLOSE, b"\x03\xe8bye", key=key))
        else:
            parts.append(frame(CONT, b"stray", key=key))
    return b"".join(parts)


def cuts(rng: random.Random, data: bytes) -> list[bytes]:
    style = rng.randrange(4)
    if style == 0:
        return [data]
    if style == 1:
        return [data[i : i + 1] for i in range(len(data))]
    out, pos = [], 0
    while pos < len(data):
        n = rng.randrange(1, 200 if style == 2 else 20000)
        out.append(data[pos : pos + n])
        pos += n
    return out


def run(
    stream_chunks: list[bytes],
    max_message_size: int | None,
    as_view: bool,
    fast: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, ...]:
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(protocol_module, "_small_frame", None)
        r = Run(max_message_size)
        shared = bytearray(65536)
        for chunk in stream_chunks:
            if as_view:
                # As the reactor hands reads over: a view of a shared buffer, reused next read.
                shared[: len(chunk)] = chunk
                r.feed(memoryview(shared)[: len(chunk)])
            else:
                r.feed(chunk)
        return r.outcome()


@pytest.mark.parametrize("seed", range(100))
def test_the_protocol_does_the_same_with_and_without_the_fast_path(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if protocol_module._small_frame is None:
        pytest.skip("the C extension is not built (or WSLOOP_NO_SPEEDUPS is set)")
    rng = random.Random(seed)
    stream = random_stream(rng)
    chunks = cuts(rng, stream)
    limit = rng.choice([None, 5, 64, 124, 125, 126, 1000])
    as_view = rng.random() < 0.5
    slow = run(chunks, limit, as_view, False, monkeypatch)
    fast = run(chunks, limit, as_view, True, monkeypatch)
    assert fast == slow


def test_the_fast_path_is_taken_for_small_client_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three small frames in one read: three calls of small_frame that take them (and a fourth,
    a ping, left to the parser); under the same calls and replies as without it."""
    real = protocol_module._small_frame
    if real is None:
        pytest.skip("the C extension is not built (or WSLOOP_NO_SPEEDUPS is set)")
    taken: list[bytes | None] = []

    def spy(data: Any, pos: int) -> bytes | None:
        result = real(data, pos)
        taken.append(result)
        return result

    monkeypatch.setattr(protocol_module, "_small_frame", spy)
    r = Run(None)
    key = KEYS[0]
    r.feed(
        frame(TEXT, b"echo 1", key=key)
        + frame(BINARY, b"\x00\x01", key=key)
        + frame(TEXT, "é".encode(), key=key)
        + frame(PING, b"!", key=key)
    )
    assert taken == [b"echo 1", b"\x00\x01", "é".encode(), None]
    assert r.events == [
        ("data", b"echo 1", TEXT),
        ("write", b"\x81\x06echo 1"),
        ("data", b"\x00\x01", BINARY),
        ("data", "é".encode(), TEXT),
        ("write", b"\x8a\x01!"),
    ]
    assert r.counters.messages_in == 3 and r.counters.messages_out == 1


def test_a_client_protocol_never_takes_masked_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """A masked frame to a client is a protocol error (1002), fast path or not."""
    p = Protocol(client=True, on_data=lambda payload, opcode: None, write=lambda data: None)
    p.feed(frame(TEXT, b"masked", key=KEYS[0]))
    assert p.failure is not None and p.failure.code == 1002
