"""``wsloop.framing.Frame`` and ``wsloop.streaming.Stream`` against ws4py 0.6.0's: the same bytes
built, the same parse results and exceptions for the same input in random chunkings, the same
messages (and types) out of the same conversations, and the listed differences where ws4py breaks
RFC 6455 (the README's porting table lists them)."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ws4py.framing as w4_framing
import ws4py.streaming as w4_streaming
import ws4py.utf8validator as w4_utf8validator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsloop.framing import Frame
from wsloop.streaming import Stream
from wsloop.utf8validator import Utf8Validator

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODES = [CONT, TEXT, BINARY, CLOSE, PING, PONG]
# The close codes both accept (ws4py lacks 1012-1014 and takes no 1004-1006, 1015).
W4_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999]
# h1 turns CloseControlMessage.reason into bytes as ws4py has it; until that lands here it is str.

SCALE = max(1, int(os.environ.get("WSLOOP_PROPERTY_SCALE", "1")))
SETTINGS = settings(
    max_examples=200 * SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def w4_frame(opcode: int, body: bytes = b"", key: bytes | None = None, fin: int = 1, **rsv: int) -> bytes:
    """A frame built by ws4py (the input our parsers get comes from the other implementation)."""
    return bytes(w4_framing.Frame(opcode=opcode, body=body, masking_key=key, fin=fin, **rsv).build())


# ------------------------------------------------------------------------------------- Frame


@st.composite
def frame_fields(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.sampled_from([0, 1, 5, 125, 126, 127, 300, 65535, 65536, 70001]) | st.integers(0, 200))
    return {
        "opcode": draw(st.sampled_from(OPCODES)),
        "body": draw(st.binary(min_size=size, max_size=size)) if size < 300 else os.urandom(size),
        "masking_key": draw(st.none() | st.binary(min_size=4, max_size=4)),
        "fin": draw(st.integers(0, 1)),
        "rsv1": draw(st.integers(0, 1)),
        "rsv2": draw(st.integers(0, 1)),
        "rsv3": draw(st.integers(0, 1)),
    }


@SETTINGS
@given(frame_fields())
def test_build_gives_ws4pys_bytes(fields: dict[str, Any]) -> None:
    ours = Frame(**fields).build()
    assert type(ours) is bytes
    assert ours == bytes(w4_framing.Frame(**fields).build())


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"opcode": TEXT, "fin": 2}, ValueError),
        *[({"opcode": op, "fin": 1}, ValueError) for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xF]],
        ({"opcode": None, "fin": 1}, TypeError),
    ],
)
def test_build_refuses_what_ws4py_refuses(fields: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        w4_framing.Frame(**fields).build()
    with pytest.raises(error):
        Frame(**fields).build()


def test_build_of_a_length_over_63_bits_and_a_body_not_bytes() -> None:
    for cls in (Frame, w4_framing.Frame):
        frame = cls(opcode=TEXT, body=b"", fin=1)
        frame.payload_length = 1 << 63
        with pytest.raises(Exception) as info:
            frame.build()
        assert type(info.value).__name__ == "FrameTooLargeException"
        with pytest.raises(TypeError):
            cls(opcode=TEXT, body="text", fin=1)


@SETTINGS
@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_mask_and_unmask_as_ws4py(data: bytes, key: bytes) -> None:
    ours, theirs = Frame(masking_key=key), w4_framing.Frame(masking_key=key)
    assert type(ours.mask(data)) is type(theirs.mask(data)) is bytearray
    assert ours.mask(data) == theirs.mask(data)
    assert ours.unmask(ours.mask(data)) == data


def frame_snapshot(frame: Any) -> tuple[Any, ...]:
    fields = (frame.opcode, frame.fin, frame.rsv1, frame.rsv2, frame.rsv3, frame.payload_length)
    return fields + (frame.masking_key, type(frame.body).__name__, frame.body)


def parse_frame(cls: type, data: bytes, sizes: Iterator[int], whole_first: bool = False) -> list[Any]:
    """Feed ``data`` to a new ``cls()``'s parser, each send at most what it asked for (the first
    all of ``data`` if ``whole_first``); the log of what each send returned or raised and the
    frame's attributes after it."""
    frame = cls()
    parser = frame.parser
    log: list[Any] = []
    pos, want = 0, 1
    while pos < len(data):
        n = len(data) if whole_first and not pos else 1 + next(sizes) % want
        try:
            want = parser.send(data[pos : pos + n])
        except Exception as exc:  # the exception's class is compared by name, ws4py's vs ours
            log.append(("raised", type(exc).__name__, frame_snapshot(frame)))
            return log
        pos += n
        log.append((want, frame_snapshot(frame)))
        if want is None:
            with pytest.raises(StopIteration):
                parser.send(b"")
            break
    return log


def chunk_sizes(seed: int) -> Callable[[], Iterator[int]]:
    def sizes() -> Iterator[int]:
        rng = random.Random(seed)
        while True:
            yield rng.choice([0, 0, rng.randrange(1 << 20)])  # taken modulo what is asked: often all

    return sizes


@SETTINGS
@given(frame_fields(), st.integers(0, 1 << 30), st.booleans())
def test_parser_reads_built_frames_as_ws4py_does(fields: dict[str, Any], seed: int, whole: bool) -> None:
    data = w4_frame(fields["opcode"], fields["body"], fields["masking_key"], fields["fin"])
    sizes = chunk_sizes(seed)
    ours = parse_frame(Frame, data, sizes(), whole)
    assert ours == parse_frame(w4_framing.Frame, data, sizes(), whole)
    if fields["opcode"] < 8 or (fields["fin"] and len(fields["body"]) <= 125):
        want, attributes = ours[-1]
        assert want is None  # the frame is whole
        body = attributes[-1]
        frame = Frame(masking_key=fields["masking_key"])
        assert (frame.unmask(body) if fields["masking_key"] else body) == fields["body"]


@SETTINGS
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=12),
    st.binary(max_size=40),
    st.integers(0, 1 << 30),
    st.booleans(),
)
def test_parser_on_any_bytes_as_ws4py(
    b0: int, b1: int, ext: bytes, rest: bytes, seed: int, whole: bool
) -> None:
    """Any two header bytes (reserved bits and opcodes, fragmented or oversized control frames,
    lengths with the top bit set): the same wants, attributes and exception classes."""
    data = bytes((b0, b1)) + ext + rest
    sizes = chunk_sizes(seed)
    assert parse_frame(Frame, data, sizes(), whole) == parse_frame(w4_framing.Frame, data, sizes(), whole)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xc1\x00", "ProtocolException"),  # RSV1
        (b"\xa1\x00", "ProtocolException"),  # RSV2
        (b"\x91\x00", "ProtocolException"),  # RSV3
        *[(bytes((0x80 | op, 0)), "ProtocolException") for op in [3, 7, 0xB, 0xF]],
        (b"\x09\x00", "ProtocolException"),  # a fragmented ping
        (b"\x89\x7e\x00\x7e", "FrameTooLargeException"),  # a ping of 126 bytes
        (b"\x81\x7f" + struct.pack("!Q", 1 << 63), "FrameTooLargeException"),
    ],
)
def test_bad_frames_raise_ws4pys_exceptions(data: bytes, error: str) -> None:
    for cls in (Frame, w4_framing.Frame):
        log = parse_frame(cls, data, iter(lambda: 0, 1), whole_first=True)
        assert log[-1][:2] == ("raised", error)
    # Ours are wsloop.exc's, whose code is the close code to answer with: 1002 for all of these.
    with pytest.raises(Exception) as info:
        Frame().parser.send(data)
    assert info.value.code == 1002  # type: ignore[attr-defined]


def test_bytes_past_the_frame_are_not_its_body() -> None:
    data = w4_frame(TEXT, b"hello", b"abcd")
    for split in range(1, len(data)):
        frame = Frame()
        frame.parser.send(data[:split])
        assert frame.parser.send(data[split:] + b"more") is None
        assert (frame.masking_key, frame.unmask(frame.body)) == (b"abcd", b"hello")


# ------------------------------------------------------------------------------------- Stream


def reason_bytes(reason: str | bytes) -> bytes:
    return reason.encode() if isinstance(reason, str) else reason


def drive(stream: Any, data: bytes, sizes: Iterator[int]) -> tuple[list[Any], list[Any]]:
    """Feed ``data`` as ws4py's ``WebSocket.process`` does (each send at most what the parser
    asked for; a complete message taken and ``message`` reset) until a close or an error; the
    events seen, in order, and what the sends returned."""
    parser = stream.parser
    events: list[Any] = []
    wants: list[Any] = []
    pos, want, shown = 0, 1, None
    while pos < len(data):
        n = 1 + next(sizes) % want
        try:
            want = parser.send(data[pos : pos + n]) or 1
        except Exception as exc:  # ws4py's, on some input (test_where_ws4py_breaks_rfc_6455)
            events.append(("raised", type(exc).__name__))
            break
        pos += n
        wants.append(want)
        # In the order of ws4py's WebSocket.process: the peer's close, errors, then the rest.
        if stream.closing is not None:
            closing = stream.closing
            events.append(("closing", type(closing).__name__, closing.code, reason_bytes(closing.reason)))
            break
        if stream.errors:
            events.extend(("error", type(error).__name__, error.code) for error in stream.errors)
            break
        message = stream.message
        if stream.has_message:
            data_type = type(message.data).__name__
            events.append(("message", type(message).__name__, message.opcode, data_type, message.data))
            stream.message = None
        elif message is not None and message is not shown:
            # A fragmented message under way: shown once, incomplete (its data is not compared:
            # ws4py's grows with each fragment, ours comes whole at the end).
            events.append(("partial", type(message).__name__, message.opcode, message.completed))
            shown = message
        for ping in stream.pings:
            events.append(("ping", type(ping).__name__, type(ping.data).__name__, ping.data))
        stream.pings = []
        for pong in stream.pongs:
            events.append(("pong", type(pong).__name__, type(pong.data).__name__, pong.data))
        stream.pongs = []
    return events, wants


def both(data: bytes, expect_masking: bool = True, seed: int = 0) -> tuple[Any, Any]:
    ours = drive(Stream(expect_masking=expect_masking), data, chunk_sizes(seed)())
    theirs = drive(w4_streaming.Stream(expect_masking=expect_masking), data, chunk_sizes(seed)())
    return ours, theirs


@st.composite
def conversations(draw: st.DrawFn, masked: bool) -> tuple[bytes, int]:
    """Text and binary messages, some in fragments with pings and pongs between them, maybe a
    close at the end: the frames (masked when ``masked``) and how many messages they hold."""

    def key() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if masked else None

    out: list[bytes] = []
    messages = draw(st.integers(1, 5))
    for _ in range(messages):
        if draw(st.booleans()):
            opcode, payload = TEXT, draw(st.text(max_size=60)).encode()
        else:
            opcode, payload = BINARY, draw(st.binary(max_size=200))
        # Fragment boundaries may cut a character in two: only the message must be valid UTF-8.
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            out.append(w4_frame(opcode if i == 0 else CONT, piece, key(), int(i == len(pieces) - 1)))
            for control in draw(st.lists(st.sampled_from([PING, PONG]), max_size=2)):
                out.append(w4_frame(control, draw(st.binary(max_size=125)), key()))
    if draw(st.booleans()):
        code = draw(st.sampled_from([None, *W4_CLOSE_CODES]))
        body = b"" if code is None else struct.pack("!H", code) + draw(st.text(max_size=30)).encode()[:123]
        out.append(w4_frame(CLOSE, body, key()))
    return b"".join(out), messages


@SETTINGS
@given(st.data(), st.booleans(), st.integers(0, 1 << 30))
def test_conversations_read_as_ws4py_reads_them(data: st.DataObject, server: bool, seed: int) -> None:
    conversation, count = data.draw(conversations(masked=server))
    ours, theirs = both(conversation, expect_masking=server, seed=seed)
    assert ours == theirs  # the same events and the same wants after each send
    assert sum(1 for event in ours[0] if event[0] == "message") == count


def test_a_conversation_sent_whole_loses_no_message() -> None:
    """ws4py's Stream takes at most what it asked for (more mangles its frames); ours takes any
    chunk and hands on one message per send, keeping the rest (the send returns 0 then)."""
    rng = random.Random(5)
    frames = [w4_frame(TEXT, f"m{i}".encode(), os.urandom(4)) for i in range(5)]
    frames.insert(2, w4_frame(PING, b"p", os.urandom(4)))
    frames.insert(4, w4_frame(BINARY, b"fr", os.urandom(4), fin=0))
    frames.insert(5, w4_frame(CONT, b"ag", os.urandom(4)))
    frames.append(w4_frame(CLOSE, struct.pack("!H", 1000) + b"bye", os.urandom(4)))
    data = b"".join(frames)
    expected, _ = drive(Stream(), data, iter(lambda: rng.randrange(4), -1))
    stream = Stream()
    events: list[Any] = []
    want = stream.parser.send(data)
    while True:
        events.extend(("ping", ping.data) for ping in stream.pings or [])
        stream.pings = []
        if stream.has_message:
            assert stream.message is not None
            events.append(stream.message.data)
            stream.message = None
        if want != 0:
            break
        want = stream.parser.send(None)
    assert stream.closing is not None and stream.closing.code == 1000
    assert events == [b"m0", b"m1", ("ping", b"p"), b"m2", b"frag", b"m3", b"m4"]
    assert [e[-1] for e in expected if e[0] == "message"] == [e for e in events if type(e) is bytes]


def frames(*specs: tuple[Any, ...], masked: bool = True) -> bytes:
    return b"".join(w4_frame(op, body, os.urandom(4) if masked else None, *rest) for op, body, *rest in specs)


# Input that breaks RFC 6455: ws4py's Stream and ours report the same first error (its class and
# code), the messages before it alike.
VIOLATIONS = {
    "bad UTF-8": (frames((TEXT, b"ok"), (TEXT, b"h\xc3llo")), True, 1007),
    "bad UTF-8 in a continuation": (frames((TEXT, b"hello", 0), (CONT, b"h\xc3llo")), True, 1007),
    "text ending inside a character": (frames((TEXT, b"a\xe2", 0), (CONT, b"\x82")), True, 1007),
    "a surrogate": (frames((TEXT, b"\xed\xa0\x80")), True, 1007),
    "unmasked frame to a server": (frames((TEXT, b"hello"), masked=False), True, 1002),
    "masked frame to a client": (frames((BINARY, b"\x00\x01")), False, 1002),
    "ping over 125 bytes": (frames((PING, b"x" * 126)), True, 1002),
    **{f"opcode {op:#x}": (bytes((0x80 | op, 0x80)) + b"\0\0\0\0", True, 1002) for op in [3, 7, 0xB, 0xF]},
    **{f"RSV bit {bit:#x}": (bytes((0x81 | bit, 0x80)) + b"\0\0\0\0", True, 1002) for bit in [0x40, 0x20]},
    "RSV bit 0x10": (b"\x91\x80\0\0\0\0", True, 1002),
    "a fragmented ping": (frames((PING, b"x", 0)), True, 1002),
    "continuation without a message": (frames((BINARY, b"ok"), (CONT, b"x")), True, 1002),
    "text inside a fragmented text": (frames((TEXT, b"a", 0), (TEXT, b"b")), True, 1002),
    "binary inside a fragmented text": (frames((TEXT, b"a", 0), (PING, b""), (BINARY, b"b")), True, 1002),
    "close reason not UTF-8": (frames((CLOSE, struct.pack("!H", 1000) + b"h\xc3llo")), True, 1007),
    "a length with its top bit set": (b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"\0\0\0\0", True, 1002),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_violations_fail_as_in_ws4py(name: str) -> None:
    data, expect_masking, code = VIOLATIONS[name]
    for seed in range(20):
        (ours, _), (theirs, _) = both(data, expect_masking, seed)
        assert ours == theirs
        assert ours[-1] == ("error", "CloseControlMessage", code)


@st.composite
def frame_soups(draw: st.DrawFn, masked: bool) -> bytes:
    """Frames in any order, most of them valid alone: data frames of any opcode and FIN (text that
    may not be UTF-8), pings and pongs (some over 125 bytes or fragmented), reserved opcodes and
    bits, frames masked the wrong way, closes (codes valid for both, reasons maybe not UTF-8)."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["data", "data", "data", "control", "reserved", "close"]))
        rsv = {}
        if kind == "data":
            opcode = draw(st.sampled_from([TEXT, BINARY, CONT]))
            fin = draw(st.integers(0, 1))
            body = draw(st.text(max_size=20).map(str.encode) | st.binary(max_size=20))
            if not body and (opcode == CONT) == bool(fin):
                body = b"x"  # (an empty first or last fragment: see test_where_ws4py_breaks_rfc_6455)
        elif kind == "control":
            opcode, fin = draw(st.sampled_from([PING, PONG])), draw(st.sampled_from([1, 1, 1, 0]))
            body = draw(st.binary(max_size=130))
        elif kind == "reserved":
            opcode, fin = draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])), 1
            body = draw(st.binary(max_size=5))
        else:
            opcode, fin = CLOSE, 1
            code = draw(st.sampled_from([None, *W4_CLOSE_CODES]))
            reason = draw(st.text(max_size=10).map(str.encode) | st.binary(max_size=10))
            body = b"" if code is None else struct.pack("!H", code) + reason
        if draw(st.integers(0, 9)) == 0:
            rsv = {draw(st.sampled_from(["rsv1", "rsv2", "rsv3"])): 1}
        right = draw(st.integers(0, 19)) > 0 or not body  # (empty frames: see the fixes below)
        key = draw(st.binary(min_size=4, max_size=4)) if masked == right else None
        frame = w4_frame(BINARY if kind == "reserved" else opcode, body, key, fin, **rsv)
        out.append(bytes((frame[0] & 0xF0 | opcode,)) + frame[1:])  # (ws4py builds no reserved opcode)
    return b"".join(out)


@SETTINGS
@given(st.data(), st.booleans(), st.integers(0, 1 << 30))
def test_any_frames_read_as_ws4py_reads_them(data: st.DataObject, server: bool, seed: int) -> None:
    """Up to the first error or close: the same messages, pings, pongs, and the same error code."""
    soup = data.draw(frame_soups(masked=server))
    (ours, _), (theirs, _) = both(soup, expect_masking=server, seed=seed)
    if theirs[-1] == ("raised", "UnicodeDecodeError"):
        # ws4py's crash on a data frame while a text message stopped inside a character is on.
        assert (ours[:-1], ours[-1]) == (theirs[:-1], ("error", "CloseControlMessage", 1002))
    else:
        assert ours == theirs


# Where ws4py breaks RFC 6455 and we do not (each a line of README's "Porting from ws4py").
FIXES = {
    # name: (input, expect_masking, our last event, ws4py's last event)
    "close with a 1-byte payload": (
        frames((CLOSE, b"*")),
        ("error", "CloseControlMessage", 1002),
        ("closing", "CloseControlMessage", 1005, b"Payload has invalid length"),
    ),
    "close code 1500": (
        frames((CLOSE, struct.pack("!H", 1500) + b"x")),
        ("error", "CloseControlMessage", 1002),
        ("closing", "CloseControlMessage", 1005, b"Invalid Closing Frame Code: 1500"),
    ),
    "close code 1005 on the wire": (
        frames((CLOSE, struct.pack("!H", 1005))),
        ("error", "CloseControlMessage", 1002),
        ("closing", "CloseControlMessage", 1005, b"Invalid Closing Frame Code: 1005"),
    ),
    "close code 1012 (IANA: service restart)": (
        frames((CLOSE, struct.pack("!H", 1012))),
        ("closing", "CloseControlMessage", 1012, b""),
        ("closing", "CloseControlMessage", 1005, b"Invalid Closing Frame Code: 1012"),
    ),
    "a text ending inside a character, then an empty last fragment": (
        frames((TEXT, b"a\xe2", 0), (CONT, b"")),
        ("error", "CloseControlMessage", 1007),
        ("message", "TextMessage", TEXT, "bytes", b"a\xe2"),
    ),
    "a new message after an empty unfinished fragment": (
        frames((TEXT, b"", 0), (BINARY, b"b")),
        ("error", "CloseControlMessage", 1002),
        ("message", "BinaryMessage", BINARY, "bytes", b"b"),
    ),
    "a new message while a text stops inside a character": (
        frames((TEXT, b"a\xe2", 0), (TEXT, b"b")),
        ("error", "CloseControlMessage", 1002),
        ("raised", "UnicodeDecodeError"),
    ),
    "an empty unmasked frame to a server": (
        frames((TEXT, b""), masked=False),
        ("error", "CloseControlMessage", 1002),
        ("message", "TextMessage", TEXT, "bytes", b""),
    ),
}


@pytest.mark.parametrize("name", list(FIXES))
def test_where_ws4py_breaks_rfc_6455(name: str) -> None:
    data, ours_last, theirs_last = FIXES[name]
    (ours, _), (theirs, _) = both(data)
    assert (ours[-1], theirs[-1]) == (ours_last, theirs_last)


def test_input_after_an_error_or_a_close_is_ignored() -> None:
    """ws4py's Stream parses on after an error (its owner closes); ours fails the connection as
    RFC 6455 §7.1.7 says: nothing after the error is parsed, nor after the peer's close."""
    for first in (frames((CONT, b"x")), frames((CLOSE, struct.pack("!H", 1000)))):
        ours, theirs = Stream(), w4_streaming.Stream()
        for stream in (ours, theirs):
            for data in (first, frames((TEXT, b"later")), frames((PING, b"p"))):
                stream.parser.send(data)  # one frame a send: ws4py takes no more
        assert (theirs.pings[0].data, theirs.message.data) == (b"p", b"later")
        assert (ours.pings, ours.message) == ([], None)


def test_a_message_over_the_size_limit_is_an_error_1009() -> None:
    """ws4py has no limit; ours is Protocol's (16 MiB unless ``max_message_size`` says)."""
    stream = Stream(max_message_size=10)
    stream.parser.send(frames((BINARY, b"x" * 10)))
    assert stream.message is not None and stream.message.data == b"x" * 10
    stream.message = None
    stream.parser.send(frames((BINARY, b"x" * 6, 0)))
    stream.parser.send(frames((CONT, b"x" * 5)))
    assert stream.errors is not None
    assert [(type(e).__name__, e.code) for e in stream.errors] == [("CloseControlMessage", 1009)]


def test_close_reasons_are_bytes_as_in_ws4py() -> None:
    data = frames((CLOSE, struct.pack("!H", 1000) + b"bye"))
    error = frames((TEXT, b"\xff"))
    for cls in (Stream, w4_streaming.Stream):
        stream = cls()
        stream.parser.send(data)
        assert (stream.closing.code, stream.closing.reason) == (1000, b"bye")
        stream = cls()
        stream.parser.send(error)
        assert type(stream.errors[0].reason) is bytes
        assert type(stream.close(1000, "x").reason) is bytes


def test_helpers_build_what_ws4pys_build() -> None:
    ours, theirs = Stream(), w4_streaming.Stream()
    assert ours.ping("sos") == theirs.ping("sos") == w4_frame(PING, b"sos")
    assert ours.pong(b"sos") == theirs.pong(b"sos")
    for cls in (Stream, w4_streaming.Stream):
        masked = cls(always_mask=True).pong("sos")
        frame = Frame()
        frame.parser.send(masked)
        assert (len(masked), frame.opcode, frame.unmask(frame.body)) == (9, PONG, b"sos")
    for name, arg in [("text_message", "héllo"), ("binary_message", b"\x00\x01")]:
        a, b = getattr(ours, name)(arg), getattr(theirs, name)(arg)
        assert (type(a).__name__, a.opcode, a.data, a.is_text, a.is_binary) == (
            type(b).__name__,
            b.opcode,
            b.data,
            b.is_text,
            b.is_binary,
        )
    a, b = ours.close(1001, "away"), theirs.close(1001, "away")
    assert (type(a).__name__, a.code, a.data, reason_bytes(a.reason)) == (
        type(b).__name__,
        b.code,
        b.data,
        b.reason,
    )
    assert ours.close(1000, "").single(mask=False) == theirs.close(1000, "").single(mask=False)


def test_an_empty_close_is_code_1005_as_in_ws4py() -> None:
    for cls in (Stream, w4_streaming.Stream):
        stream = cls()
        stream.parser.send(frames((CLOSE, b"")))
        assert (type(stream.closing).__name__, stream.closing.code, stream.closing.data) == (
            "CloseControlMessage",
            1005,
            b"\x03\xed",
        )


def test_client_settings_made_after_construction_apply() -> None:
    """ws4py's client sets ``always_mask`` and ``expect_masking`` after making its stream."""
    for cls in (Stream, w4_streaming.Stream):
        stream = cls()
        stream.always_mask, stream.expect_masking = True, False
        stream.parser.send(frames((TEXT, b"hi"), masked=False))
        assert (stream.message.data, stream.errors) == (b"hi", [])
        assert len(stream.ping()) == 6


def test_closing_the_parser_releases_as_in_ws4py() -> None:
    for cls in (Stream, w4_streaming.Stream):
        stream = cls()
        stream.parser.send(frames((TEXT, b"hi"), (PING, b"")))
        stream.parser.close()
        seen = (stream.message, stream.pings, stream.pongs, stream.closing, stream.errors)
        assert seen == (None, None, None, None, None)
    stream = Stream()
    stream.parser.send(frames((TEXT, b"hi")))
    stream.release()
    assert (stream.message, stream.errors, stream._parser) == (None, None, None)


def test_the_parser_is_a_generator_that_wants_what_ws4pys_wants() -> None:
    data = frames((BINARY, b"x" * 300))
    for cls in (Stream, w4_streaming.Stream):
        parser = cls().parser
        assert [parser.send(data[a:b]) for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (6, 8)]] == [
            1,
            2,
            1,
            4,
            2,
            300,
        ]


# --------------------------------------------------------------------------- Utf8Validator


def test_the_dfa_table_is_ws4pys_and_validates_utf8() -> None:
    table = Utf8Validator.UTF8VALIDATOR_DFA
    assert table == w4_utf8validator.Utf8Validator.UTF8VALIDATOR_DFA
    rng = random.Random(7)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) for _ in range(20000)]
    samples += [chr(cp).encode("utf-8", "surrogatepass") for cp in range(0xD000, 0xE100)]
    for data in samples:
        state = 0
        for byte in data:
            state = table[256 + state * 16 + table[byte]]
            if state == 1:
                break
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        assert (state == 0) == valid, data


def test_held_bytes_are_the_callers_as_sent() -> None:
    """What follows a completed message waits for the next send: a bytearray the caller reuses
    once the send returns does not change it."""
    buffer = bytearray(frames((TEXT, b"one"), (TEXT, b"two")))
    stream = Stream()
    assert stream.parser.send(buffer) == 0  # a message is ready; more bytes are held
    buffer[:] = b"\0" * len(buffer)
    assert stream.message is not None and stream.message.data == b"one"
    stream.message = None
    assert stream.parser.send(None) == 1
    assert stream.message is not None and stream.message.data == b"two"


def test_valid_closing_codes_are_ws4pys_and_the_registered_ones() -> None:
    from wsloop.streaming import VALID_CLOSING_CODES

    assert set(VALID_CLOSING_CODES) == set(w4_streaming.VALID_CLOSING_CODES) | {1012, 1013, 1014}
