"""Large binary frames read into a buffer of their size (Protocol.into), unmasked in place.

The parser (server and client side, C or pure-Python masking) and a real server echoing large
messages over loopback.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.support.serverproc import ServerProcess
from tests.support.wsclient import Client
from wsloop.framing import OPCODE_BINARY, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_TEXT, build_frame
from wsloop.messaging import BinaryMessage
from wsloop.protocol import Protocol


def fill_in_place(p: Protocol, rest: bytes, rng: random.Random) -> bytes:
    """Write ``rest`` into ``p.into`` in random steps, as a transport's recv_into would, feeding
    each filled part; returns what is left of ``rest`` once the frame is whole."""
    pos = 0
    while p.into is not None:
        n = min(rng.randrange(1, 200_000), len(p.into), len(rest) - pos)
        p.into[:n] = rest[pos : pos + n]
        p.feed(p.into[:n])
        pos += n
    return rest[pos:]


@pytest.mark.parametrize("size", [64 * 1024, 100_003, 1 << 20, 3_000_001])
def test_a_large_binary_frame_is_read_into_its_own_buffer(size: int) -> None:
    rng = random.Random(size)
    payload = rng.randbytes(size)
    data = build_frame(OPCODE_BINARY, payload, masked=True)
    first = len(data) // 3
    p = Protocol()
    p.feed(data[:first])
    assert p.into is not None and len(p.into) == len(data) - first
    assert fill_in_place(p, data[first:], rng) == b""
    assert p.into is None
    [message] = p.received
    assert type(message) is BinaryMessage and type(message.data) is bytes
    assert message.data == payload


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("chunk", [1000, 65536, 262144])
def test_a_large_frame_fed_in_copied_chunks_with_frames_after_it(client: bool, chunk: int) -> None:
    payload = os.urandom(300_007)
    masked = not client  # a client receives unmasked frames
    data = (
        build_frame(OPCODE_BINARY, payload, masked=masked)
        + build_frame(OPCODE_TEXT, b"after", masked=masked)
        + build_frame(OPCODE_BINARY, payload[:70_000], masked=masked)
    )
    p = Protocol(client=client)
    view = memoryview(data)
    for i in range(0, len(data), chunk):
        p.feed(view[i : i + chunk])
    assert [m.data for m in p.received] == [payload, b"after", payload[:70_000]]
    assert p.into is None


def test_a_fragmented_binary_message_of_large_fragments_with_a_ping_between() -> None:
    rng = random.Random(5)
    parts = [rng.randbytes(n) for n in (200_000, 150_001, 80_000)]
    data = (
        build_frame(OPCODE_BINARY, parts[0], fin=False, masked=True)
        + build_frame(OPCODE_PING, b"hi", masked=True)
        + build_frame(OPCODE_CONTINUATION, parts[1], fin=False, masked=True)
        + build_frame(OPCODE_CONTINUATION, parts[2], fin=True, masked=True)
    )
    p = Protocol()
    pos = 0
    while pos < len(data):
        step = 262_144
        p.feed(data[pos : pos + step])
        pos += step
        if p.into is not None:
            rest = fill_in_place(p, data[pos:], rng)
            pos = len(data) - len(rest)
    [message] = p.received
    assert message.data == b"".join(parts)
    assert p.data_to_send() == build_frame(0xA, b"hi")  # the pong


def test_a_trickled_large_frame_or_a_text_frame_is_streamed_as_before() -> None:
    payload = os.urandom(1 << 20)
    p = Protocol()
    # Less than an eighth of the payload with the header: no buffer of its size yet.
    data = build_frame(OPCODE_BINARY, payload, masked=True)
    p.feed(data[:65536])
    assert p.into is None
    p.feed(data[65536:])
    assert p.received.pop().data == payload
    text = build_frame(OPCODE_TEXT, b"a" * 300_000, masked=True)
    p.feed(text[:150_000])
    assert p.into is None  # text is checked as it arrives (UTF-8 fails at the bad byte)
    p.feed(text[150_000:])
    assert p.received.pop().data == b"a" * 300_000


def test_a_failure_or_abort_drops_the_buffer() -> None:
    data = build_frame(OPCODE_BINARY, os.urandom(500_000), masked=True)
    p = Protocol()
    p.feed(data[:200_000])
    assert p.into is not None
    p.abort()
    assert p.into is None
    p = Protocol(max_message_size=400_000)
    p.feed(data[:200_000])  # over the limit: failed at the header, nothing allocated
    assert p.into is None and p.failure is not None


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    server = ServerProcess()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.mark.parametrize("size", [1 << 16, 1 << 20, 5 * (1 << 20) + 3])
def test_the_server_echoes_large_messages(server: ServerProcess, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    with Client(server.port, timeout=30) as client:
        for _ in range(2):
            assert client.echo(payload).data == payload
        # Fragmented, a small message right behind: both echoed, in order.
        client.send_frame(OPCODE_BINARY, payload[: size // 2], fin=False)
        client.send_frame(OPCODE_CONTINUATION, payload[size // 2 :], fin=True)
        client.send(b"tail")
        assert client.recv(timeout=30).data == payload
        assert client.recv(timeout=30).data == b"tail"


def test_empty_bytearray_is_a_buffer_of_the_size_asked_either_way() -> None:
    # With the C extension its bytes are left uninitialised (no zero fill); pure Python: bytearray.
    from wsloop import framing

    for n in (0, 1, 7, 1 << 16, 1 << 20):
        buf = framing.empty_bytearray(n)
        assert type(buf) is bytearray and len(buf) == n
        buf[:] = b"\x5a" * n  # writable, resizable like any bytearray
        assert buf.count(0x5A) == n
    with pytest.raises((ValueError, OverflowError, MemoryError)):
        framing.empty_bytearray(-1)
    assert (framing.empty_bytearray is bytearray) is (not framing.SPEEDUPS)


@pytest.mark.parametrize("size", [64 * 1024, 1 << 20])
def test_a_large_frame_in_an_uninitialised_buffer_arrives_whole_after_garbage(size: int) -> None:
    # The buffer may hold old heap bytes: every one is overwritten before the message is handed on.
    garbage = [bytearray(b"\xee" * size) for _ in range(4)]
    del garbage
    rng = random.Random(size + 1)
    payload = rng.randbytes(size)
    data = build_frame(OPCODE_BINARY, payload, masked=True)
    p = Protocol()
    first = len(data) // 2
    p.feed(data[:first])
    assert p.into is not None and len(p.into) == len(data) - first
    rest = fill_in_place(p, data[first:], rng)
    assert rest == b""
    assert [m.data for m in p.received] == [payload]
    assert type(p.received[0].data) is bytes
