"""Unit tests for wsloop.messaging (ws4py's message classes)."""

from __future__ import annotations

import struct

import pytest

import wsloop
from wsloop.messaging import (
    BinaryMessage,
    CloseControlMessage,
    Message,
    PingControlMessage,
    PongControlMessage,
    TextMessage,
)
from wsloop.protocol import Protocol

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def receive(data: bytes, client: bool = False) -> Protocol:
    """A protocol that has been fed ``data`` and did not fail."""
    p = Protocol(client=client)
    p.feed(data)
    assert p.failure is None, p.failure
    return p


# ---------------------------------------------------------------------- exports


def test_classes_exported_from_package() -> None:
    assert wsloop.TextMessage is TextMessage
    assert wsloop.BinaryMessage is BinaryMessage
    assert wsloop.CloseControlMessage is CloseControlMessage
    assert wsloop.PingControlMessage is PingControlMessage
    assert wsloop.PongControlMessage is PongControlMessage
    assert wsloop.Message is Message


@pytest.mark.parametrize(
    "cls", [TextMessage, BinaryMessage, CloseControlMessage, PingControlMessage, PongControlMessage]
)
def test_messages_are_message_subclasses(cls: type) -> None:
    assert issubclass(cls, Message)


# ---------------------------------------------------------------------- TextMessage


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("Hello", b"Hello"),
        ("é☃😀", b"\xc3\xa9\xe2\x98\x83\xf0\x9f\x98\x80"),
        (b"Hello", b"Hello"),
        (bytearray(b"Hello"), b"Hello"),
        (memoryview(b"Hello"), b"Hello"),
        ("", b""),
        (None, b""),
    ],
    ids=["str", "str-non-ascii", "bytes", "bytearray", "memoryview", "empty", "none"],
)
def test_text_message_data_is_utf8_bytes(text: object, data: bytes) -> None:
    m = TextMessage(text)
    assert type(m.data) is bytes
    assert m.data == data


def test_text_message_attributes() -> None:
    m = TextMessage("Hello")
    assert m.opcode == TEXT
    assert m.is_text is True
    assert m.is_binary is False
    assert m.completed is True
    assert m.encoding == "utf-8"


def test_text_message_default_is_empty() -> None:
    m = TextMessage()
    assert m.data == b""
    assert len(m) == 0
    assert str(m) == ""


@pytest.mark.parametrize("text", ["Hello", "é", "☃☃", "😀", "aé☃😀", ""])
def test_text_message_len_counts_characters(text: str) -> None:
    assert len(TextMessage(text)) == len(text)
    assert len(TextMessage(text.encode())) == len(text)


@pytest.mark.parametrize("text", ["Hello", "é☃😀", ""])
def test_text_message_str_is_the_text(text: str) -> None:
    assert str(TextMessage(text)) == text
    assert str(TextMessage(text.encode())) == text


def test_text_message_bytes_is_data() -> None:
    assert bytes(TextMessage("é")) == "é".encode()


def test_text_message_extend() -> None:
    m = TextMessage("ab")
    m.extend("é")
    m.extend(b"c")
    m.extend(bytearray(b"d"))
    assert m.data == "abécd".encode()
    assert len(m) == 5


@pytest.mark.parametrize("value", [123, 1.5, ["a"], object()])
def test_text_message_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        TextMessage(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- BinaryMessage


@pytest.mark.parametrize(
    "value",
    [b"\x00\xff", bytearray(b"\x00\xff"), memoryview(b"\x00\xff")],
    ids=["bytes", "bytearray", "memoryview"],
)
def test_binary_message_data_is_bytes(value: object) -> None:
    m = BinaryMessage(value)
    assert type(m.data) is bytes
    assert m.data == b"\x00\xff"


def test_binary_message_from_str_is_utf8_encoded() -> None:
    assert BinaryMessage("é").data == b"\xc3\xa9"


def test_binary_message_attributes() -> None:
    m = BinaryMessage(b"\x00\x01")
    assert m.opcode == BINARY
    assert m.is_binary is True
    assert m.is_text is False
    assert m.completed is True


def test_binary_message_default_is_empty() -> None:
    assert BinaryMessage().data == b""
    assert len(BinaryMessage()) == 0


@pytest.mark.parametrize("data", [b"", b"\x00", "é".encode(), bytes(range(256))])
def test_binary_message_len_counts_bytes(data: bytes) -> None:
    assert len(BinaryMessage(data)) == len(data)


def test_binary_message_bytes_is_data() -> None:
    assert bytes(BinaryMessage(b"\x00\xff")) == b"\x00\xff"


def test_binary_message_extend() -> None:
    m = BinaryMessage(b"\x00")
    m.extend(b"\x01")
    m.extend(bytearray(b"\x02"))
    m.extend(memoryview(b"\x03"))
    assert m.data == b"\x00\x01\x02\x03"


def test_binary_message_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        BinaryMessage(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- Message (base)


def test_message_base_construction() -> None:
    m = Message(TEXT, "é")
    assert (m.opcode, m.data, m.encoding) == (TEXT, b"\xc3\xa9", "utf-8")


def test_message_base_custom_encoding() -> None:
    m = Message(TEXT, "é", encoding="latin-1")
    assert m.data == b"\xe9"
    assert str(m) == "é"


def test_message_base_len_is_bytes() -> None:
    assert len(Message(BINARY, "é")) == 2


# ---------------------------------------------------------------------- control messages


def test_close_message_code_reason_and_data() -> None:
    m = CloseControlMessage(1001, "going away")
    assert m.opcode == CLOSE
    assert m.code == 1001
    assert m.reason == b"going away"  # bytes, as ws4py's
    assert m.text == "going away"
    assert m.data == struct.pack("!H", 1001) + b"going away"
    assert str(m) == "going away"


def test_close_message_defaults_to_1000() -> None:
    m = CloseControlMessage()
    assert m.code == 1000
    assert m.reason == b""
    assert m.data == b"\x03\xe8"


def test_close_message_non_ascii_reason() -> None:
    m = CloseControlMessage(4000, "☃")
    assert m.data == b"\x0f\xa0" + "☃".encode()
    assert m.reason == "☃".encode()
    assert (m.text, str(m)) == ("☃", "☃")


def test_close_message_bytes_reason_is_kept() -> None:
    m = CloseControlMessage(1000, "bye ☃".encode())
    assert m.reason == "bye ☃".encode()
    assert m.text == "bye ☃"
    assert m.data == b"\x03\xe8" + "bye ☃".encode()


def test_close_message_without_code() -> None:
    m = CloseControlMessage(None)
    assert m.code is None
    assert m.data == b""


def test_close_message_data_fits_in_control_frame() -> None:
    m = CloseControlMessage(1000, "x" * 300)
    assert len(m.data) <= 125


@pytest.mark.parametrize(("cls", "opcode"), [(PingControlMessage, PING), (PongControlMessage, PONG)])
def test_ping_pong_messages(cls: type, opcode: int) -> None:
    m = cls(b"beat")
    assert m.opcode == opcode
    assert m.data == b"beat"
    assert cls("☃").data == "☃".encode()
    assert cls().data == b""


# ---------------------------------------------------------------------- single() / fragment()


def test_single_text_rfc_example() -> None:
    # RFC 6455 §5.7, "A single-frame unmasked text message".
    assert TextMessage("Hello").single() == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


def test_single_ping_rfc_example() -> None:
    assert PingControlMessage(b"Hello").single() == bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


@pytest.mark.parametrize(
    "message",
    [
        TextMessage("héllo ☃"),
        TextMessage(""),
        BinaryMessage(bytes(range(256))),
        BinaryMessage(b"\x00" * 70000),
    ],
    ids=["text", "empty-text", "binary-256", "binary-70000"],
)
def test_single_parsed_back_by_protocol(message: Message) -> None:
    masked = receive(message.single(mask=True))  # client -> server
    unmasked = receive(message.single(), client=True)  # server -> client
    for p in (masked, unmasked):
        assert len(p.received) == 1
        got = p.received[0]
        assert type(got) is type(message)
        assert got.data == message.data


def test_single_masked_sets_mask_bit() -> None:
    assert TextMessage("x").single(mask=True)[1] & 0x80
    assert not TextMessage("x").single()[1] & 0x80


def test_single_ping_answered_by_protocol() -> None:
    p = receive(PingControlMessage(b"are you there").single(mask=True))
    assert p.data_to_send() == PongControlMessage(b"are you there").single()


def test_single_pong_parsed_back_by_protocol() -> None:
    p = receive(PongControlMessage(b"beat").single(mask=True))
    assert [(type(m), m.data) for m in p.received] == [(PongControlMessage, b"beat")]


def test_single_close_parsed_back_by_protocol() -> None:
    p = receive(CloseControlMessage(1001, "bye").single(mask=True))
    (m,) = p.received
    assert isinstance(m, CloseControlMessage)
    assert (m.code, m.reason) == (1001, b"bye")


def test_fragment_flags() -> None:
    first = TextMessage("a").fragment(first=True)
    middle = TextMessage("b").fragment()
    last = TextMessage("c").fragment(last=True)
    assert first == b"\x01\x01a"  # text opcode, FIN clear
    assert middle == b"\x00\x01b"  # continuation, FIN clear
    assert last == b"\x80\x01c"  # continuation, FIN set


def test_fragment_first_and_last_is_single() -> None:
    assert TextMessage("Hello").fragment(first=True, last=True) == TextMessage("Hello").single()


@pytest.mark.parametrize("mask", [True, False])
def test_fragments_parsed_back_by_protocol_text(mask: bool) -> None:
    parts = ["frag", "mé", "nted ☃"]
    data = (
        TextMessage(parts[0]).fragment(first=True, mask=mask)
        + TextMessage(parts[1]).fragment(mask=mask)
        + TextMessage(parts[2]).fragment(last=True, mask=mask)
    )
    p = receive(data, client=not mask)
    (m,) = p.received
    assert isinstance(m, TextMessage)
    assert str(m) == "".join(parts)


@pytest.mark.parametrize("mask", [True, False])
def test_fragments_parsed_back_by_protocol_binary(mask: bool) -> None:
    data = (
        BinaryMessage(b"\x00\x01").fragment(first=True, mask=mask)
        + BinaryMessage(b"").fragment(mask=mask)
        + BinaryMessage(b"\x02").fragment(last=True, mask=mask)
    )
    p = receive(data, client=not mask)
    assert [(type(m), m.data) for m in p.received] == [(BinaryMessage, b"\x00\x01\x02")]


def test_fragment_splitting_a_character_parsed_back() -> None:
    encoded = "€".encode()
    data = (
        TextMessage(encoded[:1]).fragment(first=True, mask=True)
        + TextMessage(encoded[1:2]).fragment(mask=True)
        + TextMessage(encoded[2:]).fragment(last=True, mask=True)
    )
    p = receive(data)
    assert str(p.received[0]) == "€"
