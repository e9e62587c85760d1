"""Property-based tests (hypothesis) of the I/O-free cores: the frame parser and the handshake.

Properties:

* the frame parser (:class:`wsloop.protocol.Protocol`, server and client side, with or without
  permessage-deflate, under various size limits) never lets an exception escape ``feed()``,
  whatever bytes arrive in whatever splits: a violation ends as :attr:`Protocol.failure` (a
  :class:`~wsloop.exc.ProtocolException`) with a close frame carrying its code (1002/1007/1009)
  written last, and every later input is ignored;
* valid traffic round-trips: random text/binary messages, fragmented at random (text cut
  mid-character too), pings and pongs between fragments, masked as a client masks, in random
  chunks, come out as exactly those messages in order, each ping answered, the close echoed;
  the same over permessage-deflate with wsloop's own sender on the other side, both directions;
* the size limit is exact: a message of ``L`` bytes (after inflation) in ``n`` frames is delivered
  iff ``L + 64 * (n - 1) <= max_message_size``, else the connection fails with 1009 (decompression
  bombs included);
* chunking invariance: a byte stream fed whole or in any split gives the same messages, the same
  output (close frames compared by code) and the same close code; chunks are handed over as
  views of one reused buffer that is overwritten after each ``feed()``, as the reactor does;
* the handshake: arbitrary bytes make ``parse_request`` / ``parse_response`` (and the validators
  on whatever they parse) return ``None`` or a result, or raise :class:`~wsloop.exc.HandshakeError`,
  nothing else; valid requests built from random header sets parse (whole or byte by byte) and
  validate, and the 101 :func:`~wsloop.handshake.accept` builds for them passes
  :func:`~wsloop.handshake.validate_response` (and :func:`~wsloop.deflate.client_accept`).

Frames are built here from RFC 6455 §5.2 directly, except for the compressed round trip, which
uses wsloop's sending side on purpose. The whole file runs in well under 30 s.
"""

from __future__ import annotations

import base64
import gc
import os
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.frames import close_payload, xor_mask
from tests.support.frames import frame as raw_frame
from wsloop.deflate import DeflateOptions, PerMessageDeflate, client_accept, client_offer
from wsloop.exc import HandshakeError, ProtocolException
from wsloop.handshake import (
    Request,
    accept,
    parse_request,
    parse_response,
    validate_request,
    validate_response,
)
from wsloop.messaging import BinaryMessage, CloseControlMessage, Message, PongControlMessage, TextMessage
from wsloop.protocol import FRAGMENT_OVERHEAD, Protocol, State

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FAILURE_CODES = {1002, 1007, 1009}
SENDABLE = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]

# Few examples each, no deadline (the machine is shared with benchmarks), no example database in
# the working tree. The file's total stays well under 30 s; WSLOOP_PROPERTY_SCALE=20 (say) runs
# twenty times as many examples for a longer hunt.
SCALE = max(1, int(os.environ.get("WSLOOP_PROPERTY_SCALE", "1")))
SETTINGS = settings(
    max_examples=150 * SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(SETTINGS, max_examples=40 * SCALE)

# ---------------------------------------------------------------------- frames, from the RFC


def parse_frames(data: bytes) -> list[tuple[int, bool, int, bytes]]:
    """Every whole frame of ``data`` (masked or not): ``(opcode, fin, rsv, payload)``."""
    frames = []
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        n, hlen = b1 & 0x7F, 2
        if n == 126:
            n, hlen = struct.unpack_from("!H", data, pos + 2)[0], 4
        elif n == 127:
            n, hlen = struct.unpack_from("!Q", data, pos + 2)[0], 10
        key = None
        if b1 & 0x80:
            key = data[pos + hlen : pos + hlen + 4]
            hlen += 4
        payload = data[pos + hlen : pos + hlen + n]
        assert len(payload) == n, "a frame written by wsloop is truncated"
        if key is not None:
            payload = xor_mask(payload, key)
        frames.append((b0 & 0x0F, bool(b0 & 0x80), b0 & 0x70, payload))
        pos += hlen + n
    assert pos == len(data), "trailing bytes after wsloop's frames"
    return frames


def deflate_raw(data: bytes, bits: int = 15) -> bytes:
    """``data`` compressed as one permessage-deflate message (sync flush, tail stripped)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


# ---------------------------------------------------------------------- feeding


def splits(n: int) -> st.SearchStrategy[list[int]]:
    """Sorted cut points in ``1..n-1`` (none: fed whole)."""
    if n < 2:
        return st.just([])
    return st.lists(st.integers(1, n - 1), max_size=min(n - 1, 40), unique=True).map(sorted)


def pieces(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class Feeder:
    """Feed chunks as the reactor does: a view of one reused buffer, scribbled over afterwards,
    so a parser that kept a reference to the caller's memory would see garbage."""

    def __init__(self, proto: Protocol) -> None:
        self.proto = proto
        self.buf = bytearray(70000)

    def feed(self, chunk: bytes) -> None:
        if len(chunk) > len(self.buf):
            self.buf = bytearray(len(chunk))
        n = len(chunk)
        self.buf[:n] = chunk
        view = memoryview(self.buf)
        try:
            self.proto.feed(view[:n])
        finally:
            view.release()
        self.buf[:n] = b"\xa5" * n


def feed_all(proto: Protocol, data: bytes, cuts: Sequence[int]) -> None:
    feeder = Feeder(proto)
    for piece in pieces(data, cuts):
        feeder.feed(piece)


def summary(messages: list[Message]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for m in messages:
        if isinstance(m, CloseControlMessage):
            out.append(("close", (m.code, m.reason.decode("utf-8"))))  # bytes, as ws4py's
        else:
            out.append((type(m).__name__, m.data))
    return out


# ---------------------------------------------------------------------- protocol configurations


@st.composite
def deflate_pair(draw: st.DrawFn) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A (server, client) pair of agreements as a negotiation could produce them."""
    server_bits = draw(st.integers(9, 15))
    client_bits = draw(st.integers(9, 15))
    server_nct = draw(st.booleans())
    client_nct = draw(st.booleans())
    level = draw(st.integers(0, 9))
    mem = draw(st.integers(1, 9))
    server = PerMessageDeflate(
        local_no_context_takeover=server_nct,
        remote_no_context_takeover=client_nct,
        local_max_window_bits=server_bits,
        remote_max_window_bits=client_bits,
        compress_level=level,
        mem_level=mem,
        skip_incompressible=draw(st.booleans()),
    )
    client = PerMessageDeflate(
        local_no_context_takeover=client_nct,
        remote_no_context_takeover=server_nct,
        local_max_window_bits=client_bits,
        remote_max_window_bits=server_bits,
        compress_level=level,
        mem_level=mem,
        skip_incompressible=draw(st.booleans()),
    )
    return server, client


@st.composite
def protocol_config(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for a Protocol: side, size limit, deflate (a factory, for fresh pairs)."""
    client = draw(st.booleans())
    limit = draw(st.sampled_from([None, 0, 1, 20, 125, 126, 1000, 70000]))
    bits = draw(st.integers(9, 15))
    nct = draw(st.booleans())
    use_deflate = draw(st.booleans())

    def make_deflate() -> PerMessageDeflate | None:
        if not use_deflate:
            return None
        return PerMessageDeflate(
            local_max_window_bits=bits,
            remote_max_window_bits=15,
            remote_no_context_takeover=nct,
        )

    return {"client": client, "max_message_size": limit, "make_deflate": make_deflate}


def make_protocol(config: dict[str, Any]) -> Protocol:
    return Protocol(
        client=config["client"],
        max_message_size=config["max_message_size"],
        deflate=config["make_deflate"](),
    )


# ---------------------------------------------------------------------- byte soups


_big_binary = st.tuples(st.binary(min_size=1, max_size=6), st.integers(0, 12000)).map(lambda t: t[0] * t[1])
_payloads = st.one_of(
    st.binary(max_size=130),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=6).map(lambda b: b + b"\xed\xa0\x80" + b),  # a UTF-16 surrogate
    st.tuples(
        st.sampled_from([*SENDABLE, 0, 999, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000]),
        st.text(max_size=10),
    ).map(lambda t: close_payload(t[0], t[1].encode("utf-8"))),
    st.binary(max_size=200).map(deflate_raw),
    st.integers(0, 5000).map(lambda n: deflate_raw(b"\x00" * n)),  # inflates far beyond its size
)


@st.composite
def good_frames(draw: st.DrawFn, key: Callable[[], bytes | None]) -> bytes:
    """A valid message (possibly fragmented, possibly compressed) or control frame."""
    kind = draw(st.sampled_from(["text", "binary", "fragmented", "compressed", "ping", "pong"]))
    if kind in ("ping", "pong"):
        return raw_frame(PING if kind == "ping" else PONG, draw(st.binary(max_size=125)), key=key())
    if kind == "compressed":
        plain = draw(
            st.one_of(
                st.text(max_size=60).map(lambda t: t.encode("utf-8")),
                st.integers(0, 3000).map(lambda n: b"a" * n),
            )
        )
        return raw_frame(TEXT, deflate_raw(plain), rsv=0x40, key=key())
    if kind == "fragmented":
        payload = draw(st.text(max_size=60)).encode("utf-8")
        cut = draw(st.integers(0, len(payload)))
        return raw_frame(TEXT, payload[:cut], fin=False, key=key()) + raw_frame(
            CONT, payload[cut:], key=key()
        )
    if kind == "text":
        return raw_frame(TEXT, draw(st.text(max_size=60)).encode("utf-8"), key=key())
    return raw_frame(BINARY, draw(st.one_of(st.binary(max_size=200), _big_binary)), key=key())


@st.composite
def frame_soup(draw: st.DrawFn, masked: bool) -> bytes:
    """A byte stream of valid frames, plausible frames broken in one way or another, and garbage."""
    parts = []

    def key() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if masked else None

    for _ in range(draw(st.integers(0, 7))):
        choice = draw(st.integers(0, 19))
        if choice < 11:
            parts.append(draw(good_frames(key)))
            continue
        if choice == 11:
            parts.append(draw(st.binary(min_size=1, max_size=24)))
            continue
        opcode = draw(st.sampled_from([CONT, TEXT, BINARY, TEXT, BINARY, CLOSE, PING, PONG, 3, 7, 11, 15]))
        payload = draw(_payloads)
        fin = draw(st.integers(0, 4)) > 0
        rsv = draw(st.sampled_from([0, 0, 0, 0x40, 0x40, 0x20, 0x10]))
        k = key() if draw(st.integers(0, 15)) else (None if masked else b"\x00\x01\x02\x03")
        length = None
        width = None
        odd = draw(st.integers(0, 9))
        if odd == 0:
            length = draw(
                st.sampled_from([len(payload) + 1, 126, 65535, 65536, 1 << 40, 1 << 63, (1 << 64) - 1])
            )
        elif odd == 1:
            width = draw(st.sampled_from([16, 64]))
        parts.append(raw_frame(opcode, payload, fin=fin, rsv=rsv, key=k, length=length, width=width))
    return b"".join(parts)


@st.composite
def soup_case(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    config = draw(protocol_config())
    return config, draw(frame_soup(masked=not config["client"]))


# ---------------------------------------------------------------------- 1. the parser never raises


def check_outcome(proto: Protocol) -> None:
    """The invariants of a Protocol after any input."""
    out = parse_frames(proto.data_to_send())
    for m in proto.received:
        assert isinstance(m, (TextMessage, BinaryMessage, PongControlMessage, CloseControlMessage))
        assert type(m.data) is bytes
        if isinstance(m, TextMessage):
            m.data.decode("utf-8")  # only valid UTF-8 is delivered as text
    if proto.failure is not None:
        assert isinstance(proto.failure, ProtocolException)
        assert proto.failure.code in FAILURE_CODES, proto.failure
        assert proto.close_code == proto.failure.code
        assert proto.state is State.CLOSING
        assert out, "a failure wrote no close frame"
        opcode, fin, rsv, payload = out[-1]
        assert (opcode, fin, rsv) == (CLOSE, True, 0)
        assert struct.unpack("!H", payload[:2])[0] == proto.failure.code
        payload[2:].decode("utf-8")
        assert len(payload) <= 125
    elif proto.state is State.CLOSED:
        assert proto.close_received is not None
        assert out and out[-1][0] == CLOSE  # the echo
    for opcode, _, _, _ in out[:-1]:
        assert opcode == PONG, "only pongs precede the last frame written"


@SETTINGS
@given(case=soup_case(), data=st.data())
def test_parser_never_raises(case: tuple[dict[str, Any], bytes], data: st.DataObject) -> None:
    config, stream = case
    proto = make_protocol(config)
    feed_all(proto, stream, data.draw(splits(len(stream))))
    check_outcome(proto)
    # Once failed (or closed by the peer), whatever follows is ignored.
    if proto.failure is not None or proto.state is State.CLOSED:
        before = (len(proto.received), proto.failure, proto.state, proto.close_code)
        more = data.draw(st.one_of(st.binary(max_size=64), frame_soup(masked=not config["client"])))
        feed_all(proto, more, data.draw(splits(len(more))))
        assert (len(proto.received), proto.failure, proto.state, proto.close_code) == before
        assert proto.data_to_send() == b""


@SETTINGS
@given(config=protocol_config(), stream=st.binary(max_size=300), data=st.data())
def test_parser_never_raises_on_noise(config: dict[str, Any], stream: bytes, data: st.DataObject) -> None:
    proto = make_protocol(config)
    feed_all(proto, stream, data.draw(splits(len(stream))))
    check_outcome(proto)


# ---------------------------------------------------------------------- 2. valid traffic round-trips


_text = st.text(max_size=60)


@st.composite
def message_script(draw: st.DrawFn) -> list[tuple[str, bytes, list[int], list[tuple[int, bytes]]]]:
    """Messages: (kind, payload, fragment cut points, [(after fragment i, ping/pong payload)])."""
    script = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary"]))
        if kind == "text":
            payload = draw(st.one_of(_text, _text.map(lambda s: s * 40))).encode("utf-8")
        else:
            payload = draw(st.one_of(st.binary(max_size=200), _big_binary))
        # Cut points may repeat (empty fragments) and fall inside a UTF-8 sequence.
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        controls = draw(st.lists(st.tuples(st.integers(0, len(cuts)), st.binary(max_size=125)), max_size=3))
        script.append((kind, payload, cuts, controls))
    return script


@st.composite
def close_frame_payload(draw: st.DrawFn) -> tuple[int | None, str]:
    if draw(st.integers(0, 5)) == 0:
        return None, ""
    code = draw(st.one_of(st.sampled_from(SENDABLE), st.integers(3000, 4999)))
    reason = draw(st.text(max_size=20).filter(lambda r: len(r.encode("utf-8")) <= 123))
    return code, reason


def expected_traffic(
    script: list[tuple[str, bytes, list[int], list[tuple[int, bytes]]]], ping_kinds: list[bool]
) -> tuple[list[tuple[str, Any]], list[bytes]]:
    """What the receiver should deliver and which pong payloads it should write."""
    delivered: list[tuple[str, Any]] = []
    pongs: list[bytes] = []
    k = 0
    for kind, payload, cuts, controls in script:
        for i in range(len(cuts) + 1):
            for after, body in controls:
                if after == i:
                    if ping_kinds[k]:
                        pongs.append(body)
                    else:
                        delivered.append(("PongControlMessage", body))
                    k += 1
        delivered.append(("TextMessage" if kind == "text" else "BinaryMessage", payload))
    return delivered, pongs


@SETTINGS
@given(
    script=message_script(),
    close=close_frame_payload(),
    keys=st.lists(st.binary(min_size=4, max_size=4), min_size=1, max_size=5),
    ping_kinds=st.lists(st.booleans(), min_size=20, max_size=20),
    data=st.data(),
)
def test_valid_frames_round_trip(
    script: list[tuple[str, bytes, list[int], list[tuple[int, bytes]]]],
    close: tuple[int | None, str],
    keys: list[bytes],
    ping_kinds: list[bool],
    data: st.DataObject,
) -> None:
    frames: list[bytes] = []
    n = 0
    k = 0

    def key() -> bytes:
        nonlocal n
        n += 1
        return keys[n % len(keys)]

    for kind, payload, cuts, controls in script:
        parts = pieces(payload, cuts)
        for i, part in enumerate(parts):
            # Controls placed "after fragment i" go before fragment i (so between fragments, or
            # before the first / after... the last one never: i <= len(cuts)).
            for after, body in controls:
                if after == i:
                    frames.append(raw_frame(PING if ping_kinds[k] else PONG, body, key=key()))
                    k += 1
            opcode = (TEXT if kind == "text" else BINARY) if i == 0 else CONT
            frames.append(raw_frame(opcode, part, fin=i == len(parts) - 1, key=key()))
    code, reason = close
    body = b"" if code is None else close_payload(code, reason.encode("utf-8"))
    frames.append(raw_frame(CLOSE, body, key=key()))
    stream = b"".join(frames)

    proto = Protocol(max_message_size=None)
    feed_all(proto, stream, data.draw(splits(len(stream))))

    delivered, pongs = expected_traffic(script, ping_kinds)
    assert proto.failure is None, proto.failure
    assert summary(proto.received) == [*delivered, ("close", (code, reason))]
    assert proto.state is State.CLOSED
    assert proto.close_code == (1005 if code is None else code)
    out = parse_frames(proto.data_to_send())
    assert [(op, p) for op, _, _, p in out[:-1]] == [(PONG, p) for p in pongs]
    assert out[-1][0] == CLOSE
    assert out[-1][3] == (b"" if code is None else struct.pack("!H", code))


def send_script(
    sender: Protocol,
    script: list[tuple[str, bytes, list[int], list[tuple[int, bytes]]]],
    ping_kinds: list[bool],
) -> None:
    k = 0
    for kind, payload, cuts, controls in script:
        parts = pieces(payload, cuts)
        for i, part in enumerate(parts):
            for after, body in controls:
                if after == i:
                    (sender.ping if ping_kinds[k] else sender.pong)(body)
                    k += 1
            opcode = (TEXT if kind == "text" else BINARY) if i == 0 else CONT
            if len(parts) == 1:
                sender.send(payload, binary=kind == "binary")
            else:
                sender.send_frame(opcode, part, fin=i == len(parts) - 1)


@SETTINGS
@given(
    script=message_script(),
    pair=deflate_pair(),
    ping_kinds=st.lists(st.booleans(), min_size=20, max_size=20),
    data=st.data(),
)
def test_compressed_round_trip(
    script: list[tuple[str, bytes, list[int], list[tuple[int, bytes]]]],
    pair: tuple[PerMessageDeflate, PerMessageDeflate],
    ping_kinds: list[bool],
    data: st.DataObject,
) -> None:
    server_deflate, client_deflate = pair
    client = Protocol(client=True, max_message_size=None, deflate=client_deflate)
    server = Protocol(max_message_size=None, deflate=server_deflate)
    delivered, pongs = expected_traffic(script, ping_kinds)

    # client -> server, then the same script server -> client
    send_script(client, script, ping_kinds)
    client.close(1000, "bye")
    stream = client.data_to_send()
    if script and not client_deflate.skip_incompressible:
        assert any(rsv == 0x40 for _, _, rsv, _ in parse_frames(stream))
    feed_all(server, stream, data.draw(splits(len(stream))))
    assert server.failure is None, server.failure
    assert summary(server.received) == [*delivered, ("close", (1000, "bye"))]
    out = parse_frames(server.data_to_send())
    assert [(op, p) for op, _, _, p in out[:-1]] == [(PONG, p) for p in pongs]

    server2 = Protocol(max_message_size=None, deflate=server_deflate)
    client2 = Protocol(client=True, max_message_size=None, deflate=client_deflate)
    send_script(server2, script, ping_kinds)
    server2.close(1001)
    stream = server2.data_to_send()
    feed_all(client2, stream, data.draw(splits(len(stream))))
    assert client2.failure is None, client2.failure
    assert summary(client2.received) == [*delivered, ("close", (1001, ""))]


@SETTINGS
@given(
    limit=st.integers(0, 3000),
    extra=st.integers(-50, 50),
    fragments=st.integers(1, 4),
    compressed=st.booleans(),
    text=st.booleans(),
    fill=st.sampled_from([b"\x00", b"ab", b"x\xffz"]),
    data=st.data(),
)
def test_size_limit_is_exact(
    limit: int,
    extra: int,
    fragments: int,
    compressed: bool,
    text: bool,
    fill: bytes,
    data: st.DataObject,
) -> None:
    """A message of L bytes, L near the limit, after inflation: delivered iff L <= limit, each
    continuation frame counting FRAGMENT_OVERHEAD bytes more."""
    size = max(0, limit + extra)
    if text:
        fill = b"a"
    payload = (fill * (size // len(fill) + 1))[:size]
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=fragments - 1)))
    parts = pieces(payload, cuts)
    key = b"\x01\x02\x03\x04"
    frames = []
    if compressed:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        for i, part in enumerate(parts):
            chunk = c.compress(part) + c.flush(zlib.Z_SYNC_FLUSH)
            if i == len(parts) - 1:
                chunk = chunk[:-4]
            opcode = (TEXT if text else BINARY) if i == 0 else CONT
            frames.append(
                raw_frame(opcode, chunk, fin=i == len(parts) - 1, rsv=0x40 if i == 0 else 0, key=key)
            )
    else:
        for i, part in enumerate(parts):
            opcode = (TEXT if text else BINARY) if i == 0 else CONT
            frames.append(raw_frame(opcode, part, fin=i == len(parts) - 1, key=key))
    stream = b"".join(frames)
    proto = Protocol(max_message_size=limit, deflate=PerMessageDeflate() if compressed else None)
    feed_all(proto, stream, data.draw(splits(len(stream))))
    if size + FRAGMENT_OVERHEAD * (len(parts) - 1) <= limit:
        assert proto.failure is None, proto.failure
        assert summary(proto.received) == [("TextMessage" if text else "BinaryMessage", payload)]
    else:
        assert proto.failure is not None and proto.failure.code == 1009, proto.failure
        assert proto.received == []
    check_outcome(proto)


# ---------------------------------------------------------------------- 2b. a failure pins no memory

# Protocol.fail() once kept the exception with its traceback and context, whose frames held the
# Protocol (a reference cycle) and the buffers being parsed: a failed connection's inflated bomb
# lived until a full cyclic GC (stress/chaos.py saw the server's RSS pass 200 MiB). Minimal
# example: Protocol().feed(b"\x83\x80\x00\x00\x00\x00") (reserved opcode 3).


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """What exists before the test moved out of the collector's sight (``gc.freeze``), after a
    full collection: each example's ``gc.collect()`` then scans only the objects made since, not
    the whole session's heap (two full collections per example cost ~2.7 s in the full suite)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# the fixture runs once for all examples, which is its point
@settings(FEW, suppress_health_check=[*SETTINGS.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(case=soup_case(), data=st.data())
def test_dropped_protocol_leaves_no_cyclic_garbage(
    frozen_heap: None, case: tuple[dict[str, Any], bytes], data: st.DataObject
) -> None:
    """Once dropped, a Protocol (failed or not) is freed by reference counting alone."""
    config, stream = case
    cuts = data.draw(splits(len(stream)))
    gc.collect()
    gc.disable()
    try:
        proto = make_protocol(config)
        feed_all(proto, stream, cuts)
        del proto
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0, f"{found} objects in reference cycles"


def test_failed_bombs_pin_no_memory() -> None:
    """Twenty connections failed by a decompression bomb (1 MiB limit), dropped: without a cyclic
    GC the memory they held must be back (under 2 MiB traced, not 20 x 1 MiB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = (c.compress(b"\x00" * (16 << 20)) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    stream = raw_frame(BINARY, bomb, rsv=0x40, key=b"\x01\x02\x03\x04")
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            proto = Protocol(max_message_size=1 << 20, deflate=PerMessageDeflate())
            proto.feed(stream)
            assert proto.failure is not None and proto.failure.code == 1009
            del proto
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < 2 << 20, f"{held / 2**20:.1f} MiB still held by 20 dropped connections"


# ---------------------------------------------------------------------- 3. chunking invariance


def outcome(proto: Protocol) -> tuple[Any, ...]:
    """What must not depend on how the input was split: the messages, the state, the close
    code, and the frames written (a close frame by its code only: when a chunk is wrong in two
    ways, say invalid compressed data that also inflates to invalid UTF-8, which is noticed first
    depends on the split, and so does the reason text, but not the code)."""
    frames = parse_frames(proto.data_to_send())
    written = [(op, fin, rsv, p[:2] if op == CLOSE else p) for op, fin, rsv, p in frames]
    return summary(proto.received), proto.state, proto.close_code, proto.failure is None, written


@SETTINGS
@given(case=soup_case(), data=st.data())
def test_chunking_invariance(case: tuple[dict[str, Any], bytes], data: st.DataObject) -> None:
    config, stream = case
    whole = make_protocol(config)
    Feeder(whole).feed(stream)
    split = make_protocol(config)
    feed_all(split, stream, data.draw(splits(len(stream))))
    bytewise = make_protocol(config)
    if len(stream) <= 400:
        feed_all(bytewise, stream, list(range(1, len(stream))))
    else:
        feed_all(bytewise, stream, data.draw(splits(len(stream))))
    expected = outcome(whole)
    assert outcome(split) == expected
    assert outcome(bytewise) == expected


@FEW
@given(script=message_script(), pair=deflate_pair(), data=st.data())
def test_chunking_invariance_compressed(
    script: list[tuple[str, bytes, list[int], list[tuple[int, bytes]]]],
    pair: tuple[PerMessageDeflate, PerMessageDeflate],
    data: st.DataObject,
) -> None:
    """Compressed traffic, possibly spoiled by one flipped byte, gives the same result however split."""
    server_deflate, client_deflate = pair
    sender = Protocol(client=True, max_message_size=None, deflate=client_deflate)
    send_script(sender, script, [True] * 20)
    sender.close(1000)
    stream = bytearray(sender.data_to_send())
    if stream and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] ^= data.draw(st.integers(1, 255))
    limit = data.draw(st.sampled_from([None, 100, 5000]))

    def receiver() -> Protocol:
        d = PerMessageDeflate(
            local_no_context_takeover=server_deflate.local_no_context_takeover,
            remote_no_context_takeover=server_deflate.remote_no_context_takeover,
            local_max_window_bits=server_deflate.local_max_window_bits,
            remote_max_window_bits=server_deflate.remote_max_window_bits,
        )
        return Protocol(max_message_size=limit, deflate=d)

    whole = receiver()
    Feeder(whole).feed(bytes(stream))
    split = receiver()
    feed_all(split, bytes(stream), data.draw(splits(len(stream))))
    assert outcome(split) == outcome(whole)


# ---------------------------------------------------------------------- 4. the handshake


def handshake_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; only HandshakeError may come out (returned, for the caller to look at)."""
    try:
        return fn(*args)
    except HandshakeError as exc:
        return exc


_head_lines = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")),
        st.sampled_from(
            [
                b"GET / HTTP/1.1",
                b"GET /chat?x=1 HTTP/1.1",
                b"HTTP/1.1 101 Switching Protocols",
                b"Host: a",
                b"Upgrade: websocket",
                b"Connection: Upgrade",
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                b"Sec-WebSocket-Version: 13",
                b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                b" folded",
                b": no name",
                b"\xff\xfe: latin",
                b"X: \xe9",
            ]
        ),
    ),
    max_size=8,
)


@SETTINGS
@given(
    lines=_head_lines,
    tail=st.sampled_from([b"\r\n\r\n", b"\r\n", b"", b"\r\n\r\nrest"]),
    noise=st.binary(max_size=40),
    max_size=st.sampled_from([16 * 1024, 64, 0]),
)
def test_handshake_parsers_raise_only_handshake_error(
    lines: list[bytes], tail: bytes, noise: bytes, max_size: int
) -> None:
    for data in (b"\r\n".join(lines) + tail, noise, noise + b"\r\n\r\n"):
        for key in ("dGhlIHNhbXBsZSBub25jZQ==", ""):
            parsed = handshake_call(parse_request, data, max_size)
            if isinstance(parsed, tuple):
                request, length = parsed
                assert isinstance(request, Request) and 0 < length <= len(data)
                handshake_call(validate_request, request)
                handshake_call(accept, request, ["chat"], DeflateOptions())
            else:
                assert parsed is None or isinstance(parsed, HandshakeError)
            parsed = handshake_call(parse_response, data, max_size)
            if isinstance(parsed, tuple):
                response, length = parsed
                assert 0 < length <= len(data)
                handshake_call(validate_response, response, key, ["chat"], ["permessage-deflate"])
                ext = response.headers.get("sec-websocket-extensions")
                if ext is not None:
                    handshake_call(client_accept, ext)
            else:
                assert parsed is None or isinstance(parsed, HandshakeError)


_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
    min_size=1,
    max_size=12,
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
)
_RESERVED = {"host", "upgrade", "connection"}


def random_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True))


@st.composite
def valid_request(draw: st.DrawFn) -> tuple[bytes, str, list[str], list[str], dict[str, str]]:
    key = base64.b64encode(draw(st.binary(min_size=16, max_size=16))).decode("ascii")
    path = "/" + draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/-._~%?=&", max_size=20))
    protocols = draw(
        st.lists(st.sampled_from(["chat", "superchat", "v2.json", "mqtt"]), unique=True, max_size=3)
    )
    deflate_offer = draw(
        st.sampled_from([None, client_offer(), "permessage-deflate", "x-webkit-deflate-frame"])
    )
    pad = st.sampled_from(["", " ", "  ", "\t"])
    headers: list[tuple[str, str]] = [
        (random_case(draw, "Host"), draw(st.sampled_from(["127.0.0.1:9000", "example.com", "[::1]:80"]))),
        (random_case(draw, "Upgrade"), random_case(draw, "websocket")),
        (
            random_case(draw, "Connection"),
            draw(st.sampled_from(["{}", "keep-alive, {}", "{}, keep-alive", "{},close"])).format(
                random_case(draw, "upgrade")
            ),
        ),
        (random_case(draw, "Sec-WebSocket-Key"), key),
        (random_case(draw, "Sec-WebSocket-Version"), "13"),
    ]
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    if deflate_offer:
        headers.append(("Sec-WebSocket-Extensions", deflate_offer))
    extra = draw(
        st.lists(
            st.tuples(_token, _value).filter(
                lambda h: h[0].lower() not in _RESERVED and not h[0].lower().startswith("sec-websocket")
            ),
            max_size=6,
        )
    )
    headers += extra
    order = draw(st.permutations(range(len(headers))))
    lines = [f"GET {path} HTTP/1.1"]
    for i in order:
        name, value = headers[i]
        lines.append(f"{name}:{draw(pad)}{value}{draw(pad)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    expected: dict[str, str] = {}
    for name, value in (headers[i] for i in order):
        low = name.lower()
        value = value.strip(" \t")  # OWS is SP and HTAB only (str.strip() also takes \xa0)
        expected[low] = f"{expected[low]}, {value}" if low in expected else value
    offers = [deflate_offer] if deflate_offer else []
    return raw, key, protocols, offers, expected


@SETTINGS
@given(
    case=valid_request(),
    rest=st.binary(max_size=20),
    supported=st.lists(st.sampled_from(["chat", "mqtt", "x"]), max_size=2),
)
def test_valid_requests_parse_validate_and_accept(
    case: tuple[bytes, str, list[str], list[str], dict[str, str]], rest: bytes, supported: list[str]
) -> None:
    raw, key, protocols, offers, expected = case
    parsed = parse_request(raw + rest)
    assert parsed is not None
    request, length = parsed
    assert length == len(raw)
    assert request.method == "GET" and request.version == "HTTP/1.1"
    assert request.key == key
    assert request.headers == expected
    assert request.protocols == protocols
    validate_request(request)
    # Arriving byte by byte: incomplete until the last byte of the head.
    for i in range(len(raw)):
        assert parse_request(raw[:i]) is None
    policy = DeflateOptions()
    accepted = accept(request, supported, policy)
    chosen = next((p for p in supported if p in protocols), None)
    assert accepted.subprotocol == chosen
    assert (accepted.deflate is not None) == (offers == [client_offer()] or offers == ["permessage-deflate"])
    response = parse_response(accepted.response + rest)
    assert response is not None
    head, rlen = response
    assert rlen == len(accepted.response)
    subprotocol, extensions = validate_response(head, key, protocols, offers)
    assert subprotocol == chosen
    assert extensions == accepted.extensions
    if accepted.deflate is not None:
        client_accept(
            extensions[0],
            DeflateOptions() if offers == [client_offer()] else DeflateOptions(server_max_window_bits=15),
        )
