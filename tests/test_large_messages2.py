"""Messages around the large-message thresholds: the frame read into its own buffer
(``protocol._DIRECT_FROM``, the eighth in hand), the output joined or written with ``sendmsg``
(``reactor._JOIN_UNDER``, ``_JOIN_SMALL_UNDER``, ``_IOV_FROM``), the frame header's length forms.

Exactly at, one below and one above each, on real loopback sockets: the parser in process, the
reactor's write path on a real TCP pair, and a real server (with the C extension and with
``WSLOOP_NO_SPEEDUPS=1``) echoing masked client frames, whole, split and fragmented, text and binary.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.serverproc import ServerProcess
from tests.support.wsclient import Client
from wsloop import protocol as protocol_module
from wsloop.framing import OPCODE_BINARY, OPCODE_CONTINUATION, OPCODE_TEXT, build_frame, frame_header
from wsloop.messaging import BinaryMessage, TextMessage
from wsloop.poller import reactor as reactor_module
from wsloop.poller.reactor import Connection, Reactor
from wsloop.protocol import Protocol
from wsloop.websocket import WebSocket

DIRECT = protocol_module._DIRECT_FROM
JOIN = reactor_module._JOIN_UNDER
JOIN_SMALL = reactor_module._JOIN_SMALL_UNDER
IOV_FROM = reactor_module._IOV_FROM


def header_len(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


# ----------------------------------------------------------------- the parser, in process


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("size", [DIRECT - 1, DIRECT, DIRECT + 1])
def test_a_binary_frame_gets_its_own_buffer_from_the_threshold_on(client: bool, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    data = build_frame(OPCODE_BINARY, payload, masked=not client)
    hlen = len(data) - size
    p = Protocol(client=client)
    p.feed(data[: hlen + size // 2])
    assert (p.into is not None) is (size >= DIRECT)
    if p.into is not None:
        rest = data[hlen + size // 2 :]
        assert len(p.into) == len(rest)
        p.into[: len(rest)] = rest  # as recv_into would
        p.feed(p.into[: len(rest)])
        assert p.into is None
    else:
        p.feed(data[hlen + size // 2 :])
    [message] = p.received
    assert type(message) is BinaryMessage and type(message.data) is bytes
    assert message.data == payload


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_the_eighth_in_hand_rule_at_its_edge(extra: int) -> None:
    size = 80_000  # an eighth is 10,000 bytes
    payload = os.urandom(size)
    data = build_frame(OPCODE_BINARY, payload, masked=True)
    hlen = len(data) - size
    p = Protocol()
    p.feed(data[: hlen + size // 8 + extra])
    assert (p.into is not None) is (extra >= 0)
    p.feed(data[hlen + size // 8 + extra :])  # copied in when the transport did not use into
    assert p.received.pop().data == payload and p.into is None


@pytest.mark.parametrize("size", [DIRECT - 1, DIRECT, DIRECT + 1])
def test_text_around_the_threshold_is_streamed_and_checked(size: int) -> None:
    payload = ("é" * size).encode("utf-8")[:size]
    if len(payload) < size or payload[-1] >= 0xC0 or (payload[-1] >= 0x80 and size % 2):
        payload = b"a" + payload[: size - 1]  # whole characters only
    data = build_frame(OPCODE_TEXT, payload, masked=True)
    p = Protocol()
    p.feed(data[: len(data) // 2])
    assert p.into is None
    p.feed(data[len(data) // 2 :])
    [message] = p.received
    assert type(message) is TextMessage and message.data == payload
    # An invalid byte in the first half fails before the second half comes (1007).
    bad = bytearray(payload)
    bad[10] = 0xFF
    p = Protocol()
    p.feed(build_frame(OPCODE_TEXT, bytes(bad), masked=True)[: len(data) // 2])
    assert p.failure is not None and p.failure.code == 1007


def test_the_limit_is_enforced_before_a_buffer_is_allocated() -> None:
    size = DIRECT
    data = build_frame(OPCODE_BINARY, os.urandom(size), masked=True)
    p = Protocol(max_message_size=size - 1)
    p.feed(data[: len(data) // 2])
    assert p.into is None and p.failure is not None and p.failure.code == 1009
    p = Protocol(max_message_size=size)
    p.feed(data[: len(data) // 2])
    assert p.into is not None
    p.feed(data[len(data) // 2 :])
    assert len(p.received.pop().data) == size


@pytest.mark.parametrize("size", [DIRECT - 1, DIRECT, DIRECT + 1])
def test_fragments_around_the_threshold_make_one_message(size: int) -> None:
    rng = random.Random(size)
    parts = [rng.randbytes(size), rng.randbytes(size + 7)]
    data = build_frame(OPCODE_BINARY, parts[0], fin=False, masked=True) + build_frame(
        OPCODE_CONTINUATION, parts[1], fin=True, masked=True
    )
    p = Protocol()
    view = memoryview(data)
    step = size // 3
    for i in range(0, len(data), step):
        p.feed(view[i : i + step])
    [message] = p.received
    assert message.data == b"".join(parts)


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_frame_begun_short_of_an_eighth_gets_its_buffer_once_an_eighth_is_in(
    client: bool, extra: int
) -> None:
    size = 80_000  # an eighth is 10,000 bytes
    payload = random.Random(extra).randbytes(size)
    data = build_frame(OPCODE_BINARY, payload, masked=not client)
    hlen = len(data) - size
    p = Protocol(client=client)
    p.feed(data[: hlen + 4_000])  # streamed: less than an eighth
    assert p.into is None
    p.feed(data[hlen + 4_000 : hlen + size // 8 + extra])
    assert (p.into is not None) is (extra >= 0)
    rest = data[hlen + size // 8 + extra :]
    if p.into is not None:
        assert len(p.into) == len(rest)
        p.into[: len(rest) - 5] = rest[:-5]  # as recv_into would, then the last 5 bytes copied in
        p.feed(p.into[: len(rest) - 5])
        p.feed(rest[-5:])
    else:
        p.feed(rest)
    [message] = p.received
    assert type(message.data) is bytes and message.data == payload and p.into is None


def test_a_continuation_frame_begun_short_of_an_eighth_stays_streamed() -> None:
    first, second = os.urandom(1000), os.urandom(DIRECT * 2)
    data = build_frame(OPCODE_BINARY, first, fin=False, masked=True) + build_frame(
        OPCODE_CONTINUATION, second, masked=True
    )
    p = Protocol()
    p.feed(data[:3000])
    p.feed(data[3000 : len(data) // 2])
    assert p.into is None  # its message holds the first frame's bytes: not this frame's alone
    p.feed(data[len(data) // 2 :])
    assert p.received.pop().data == first + second


# ------------------------------------------------- the reactor's write path, real TCP sockets


class Sink(WebSocket):
    """A websocket that only holds its connection (nothing is read in these tests)."""


@pytest.fixture()
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    reactor = Reactor()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    server.setblocking(False)
    conn = Connection(reactor, server, Sink(server))
    try:
        yield conn, client
    finally:
        client.close()
        server.close()
        reactor._registry.close()


def receive(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(10)
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk
        data += chunk
    return bytes(data)


def send_all(conn: Connection, client: socket.socket, buffers: list[bytes]) -> tuple[int, bytes]:
    """Queue ``buffers``, make one _send() of them; returns how many buffers were left queued
    after it (1: they were joined) and everything the peer receives once the rest is flushed."""
    for b in buffers:
        conn.write(b)
    expected = b"".join(buffers)
    sent = conn._send(conn.wbuf)
    left = len(conn.wbuf)
    got = receive(client, sent)
    conn.wsize -= sent
    while conn.wsize:  # the rest, through flush() as the loop would (a partial write's remainder)
        deadline = time.monotonic() + 10
        conn.flush()
        got += receive(client, len(expected) - len(got) - conn.wsize)
        assert time.monotonic() < deadline
    assert got == expected
    return left, got


@pytest.mark.parametrize("total", [JOIN - 1, JOIN, JOIN + 1])
def test_a_header_and_payload_are_joined_up_to_the_threshold_then_sent_as_two(
    pair: tuple[Connection, socket.socket], total: int
) -> None:
    conn, client = pair
    payload = os.urandom(total - 4)
    left, _ = send_all(conn, client, [frame_header(OPCODE_BINARY, len(payload)), payload])
    assert left == (1 if total <= JOIN else 2)


@pytest.mark.parametrize("total", [JOIN_SMALL - 1, JOIN_SMALL, JOIN_SMALL + 1])
def test_small_buffers_are_joined_up_to_the_upper_threshold(
    pair: tuple[Connection, socket.socket], total: int
) -> None:
    conn, client = pair
    count = 512  # an average of 128 bytes: joined while the total is within _JOIN_SMALL_UNDER
    sizes = [total // count] * count
    sizes[-1] += total - sum(sizes)
    rng = random.Random(total)
    left, _ = send_all(conn, client, [rng.randbytes(n) for n in sizes])
    assert left == (1 if total <= JOIN_SMALL else count)


@pytest.mark.parametrize("average", [IOV_FROM - 1, IOV_FROM])
def test_between_the_thresholds_the_average_buffer_decides(
    pair: tuple[Connection, socket.socket], average: int
) -> None:
    conn, client = pair
    count = 8  # 8 x 4 KiB: 32 KiB, between _JOIN_UNDER and _JOIN_SMALL_UNDER
    rng = random.Random(average)
    buffers = [rng.randbytes(average) for _ in range(count - 1)]
    buffers.append(rng.randbytes(average + 1 if average < IOV_FROM else average))
    left, _ = send_all(conn, client, buffers)
    # wsize < count * _IOV_FROM: joined; an average of _IOV_FROM or more: one sendmsg.
    assert left == (1 if sum(map(len, buffers)) < count * IOV_FROM else count)


# ------------------------------------------- a real server, with and without the extension


@pytest.fixture(scope="module", params=["c", "pure"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = dict(os.environ)
    env.pop("WSLOOP_NO_SPEEDUPS", None)
    if request.param == "pure":
        env["WSLOOP_NO_SPEEDUPS"] = "1"
    proc = ServerProcess(env=env)
    try:
        yield proc
    finally:
        proc.stop()


SIZES = sorted(
    {
        125,
        126,
        JOIN - 5,  # header (4 bytes) + payload: one below, at and one above _JOIN_UNDER
        JOIN - 4,
        JOIN - 3,
        JOIN,
        JOIN + 1,
        JOIN_SMALL - 5,
        JOIN_SMALL - 4,
        JOIN_SMALL - 3,
        DIRECT - 1,  # also the largest 2-byte extended length
        DIRECT,
        DIRECT + 1,
        300_001,
    }
)


@pytest.mark.parametrize("size", SIZES)
def test_the_server_echoes_around_every_threshold(server: ServerProcess, size: int) -> None:
    rng = random.Random(size)
    payload = rng.randbytes(size)
    text = ("añb" * size).encode("utf-8")[:size]
    text = text[: len(text.decode("utf-8", "ignore").encode("utf-8"))]  # whole characters
    with Client(server.port, timeout=30) as client:
        echo = client.echo(payload)
        assert echo.is_binary and echo.data == payload
        echo = client.echo(text.decode("utf-8"))
        assert echo.is_text and echo.data == text
        # The frame split: its header and a part (an eighth or more: into a buffer of its size
        # when large enough), then, after a pause, the rest.
        frame = build_frame(OPCODE_BINARY, payload, masked=True)
        cut = header_len(size) + 4 + size // 4
        client.send_raw(frame[:cut])
        time.sleep(0.05)
        client.send_raw(frame[cut:])
        assert client.recv(timeout=30).data == payload
        # Fragmented: two large fragments, then a small message right behind it.
        client.send_frame(OPCODE_BINARY, payload[: size // 2], fin=False)
        client.send_frame(OPCODE_CONTINUATION, payload[size // 2 :], fin=True)
        client.send(b"tail")
        assert client.recv(timeout=30).data == payload
        assert client.recv(timeout=30).data == b"tail"


@pytest.mark.parametrize("size", [DIRECT, 1 << 20])
def test_a_large_frame_trickled_in_steps_is_echoed_and_small_messages_follow(
    server: ServerProcess, size: int
) -> None:
    """Less than an eighth first (streamed), then more (its own buffer, the socket's receive low
    mark set to the rest), then the rest in two writes: a low mark above what comes would hang."""
    payload = random.Random(size).randbytes(size)
    frame = build_frame(OPCODE_BINARY, payload, masked=True)
    cuts = [header_len(size) + 4 + size // 20, len(frame) // 3, len(frame) - 3, len(frame)]
    with Client(server.port, timeout=30) as client:
        for _ in range(2):
            start = 0
            for cut in cuts:
                client.send_raw(frame[start:cut])
                start = cut
                time.sleep(0.05)
            assert client.recv(timeout=30).data == payload
            assert client.echo(b"small").data == b"small"  # the low mark is back to 1 byte


def test_invalid_utf8_in_a_large_text_frame_fails_the_connection(server: ServerProcess) -> None:
    payload = bytearray(b"a" * (DIRECT + 1))
    payload[DIRECT // 2] = 0xFF
    with Client(server.port, timeout=30) as client:
        client.send_frame(OPCODE_TEXT, bytes(payload))
        assert client.recv_close(timeout=30).code == 1007
