"""The Message-less delivery (``WebSocket.received_data``) against the Message path
(``received_message``): which one a handler class gets, and that both deliver the same data and
end connections the same way, over real sockets with both pollers (tests/conftest.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.frames import BINARY, CLOSE, PONG, TEXT
from tests.support.frames import CONT as CONTINUATION
from tests.support.wsclient import Client
from wsloop.messaging import BinaryMessage, CloseControlMessage, Message, PongControlMessage, TextMessage
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket

MakeServer = Callable[..., WebSocketServer]


class Recorded:
    """What a handler class's connections saw: ("data"|"message", payload, binary) per message,
    the pongs, and each connection's ``closed()`` arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, bool]] = []
        self.pongs: list[bytes] = []
        self.closed: list[tuple[int, bytes | None]] = []
        self.done = threading.Event()


def handler_classes() -> dict[str, tuple[type[WebSocket], Recorded]]:
    """Fresh handler classes (each with its own record): both paths, and the class hierarchies
    whose rule decides between them."""
    made: dict[str, tuple[type[WebSocket], Recorded]] = {}

    def record(cls: type[WebSocket]) -> type[WebSocket]:
        made[cls.__name__] = (cls, cls.record)  # type: ignore[attr-defined]
        return cls

    class Common(WebSocket):
        record = Recorded()
        max_message_size = 1000

        def ponged(self, pong: PongControlMessage) -> None:
            self.record.pongs.append(pong.data)

        def closed(self, code: int, reason: bytes | None = None) -> None:
            self.record.closed.append((code, reason))
            self.record.done.set()

        def reply(self, data: bytes, binary: bool) -> None:
            if data == b"raise":
                raise RuntimeError("handler failure (test)")
            if data == b"close":
                self.close(4001, "asked")
                return
            self.send(data, binary)

    @record
    class DataPath(Common):
        record = Recorded()

        def received_data(self, data: bytes, binary: bool) -> None:
            self.record.calls.append(("data", data, binary))
            self.reply(data, binary)

    @record
    class MessagePath(Common):
        record = Recorded()

        def received_message(self, message: Message) -> None:
            assert isinstance(message, TextMessage if message.is_text else BinaryMessage)
            self.record.calls.append(("message", message.data, message.is_binary))
            self.reply(message.data, message.is_binary)

    @record
    class BothInOneClass(MessagePath):
        """Defines both: gets received_data."""

        record = Recorded()

        def received_data(self, data: bytes, binary: bool) -> None:
            self.record.calls.append(("data", data, binary))
            self.reply(data, binary)

        def received_message(self, message: Message) -> None:
            raise AssertionError("received_data is the one called")

    @record
    class MessageBelowData(DataPath):
        """received_message defined below a class with received_data: messages (ws4py's rule)."""

        record = Recorded()

        def received_message(self, message: Message) -> None:
            self.record.calls.append(("message", message.data, message.is_binary))
            self.reply(message.data, message.is_binary)

    @record
    class EchoSubclass(EchoWebSocket):
        """A ws4py-style subclass of EchoWebSocket that overrides received_message."""

        record = Recorded()

        def received_message(self, message: Message) -> None:
            self.record.calls.append(("message", message.data, message.is_binary))
            super().received_message(message)

    return made


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("DataPath", "data"),
        ("MessagePath", "message"),
        ("BothInOneClass", "data"),
        ("MessageBelowData", "message"),
        ("EchoSubclass", "message"),
    ],
)
def test_the_more_derived_callback_is_called(make_server: MakeServer, name: str, path: str) -> None:
    cls, record = handler_classes()[name]
    server = make_server(handler_cls=cls)
    with Client(server.port) as client:
        assert client.echo("héllo").data == "héllo".encode()
        assert client.echo(b"\x00\xff").data == b"\x00\xff"
    assert record.calls == [(path, "héllo".encode(), False), (path, b"\x00\xff", True)]
    assert all(type(data) is bytes for _, data, _ in record.calls)


def test_echo_websocket_takes_the_data_path_and_keeps_received_message() -> None:
    # EchoWebSocket defines both: the data path serves it; received_message stays for ws4py
    # code that calls it (a subclass's super().received_message(m)).
    from wsloop.websocket import _deliverer

    assert _deliverer(EchoWebSocket) is WebSocket._deliver_data
    assert EchoWebSocket._deliver is WebSocket._deliver_data
    sent: list[tuple[Any, bool]] = []

    class Capture(EchoWebSocket):
        def send(self, payload: Any, binary: bool = False) -> None:
            sent.append((payload, binary))

    Capture(None).received_message(TextMessage(b"abc"))
    assert sent == [(b"abc", False)]


def frames_of(client: Client) -> list[tuple[int, bytes]]:
    """(opcode, payload) of everything the server sent, up to its closing the connection."""
    seen: list[tuple[int, bytes]] = []
    client.wait_eof(10)
    for message in client.stream.received:
        seen.append((message.opcode, message.data))
    return seen


# Each conversation: a list of (opcode, payload, fin) frames the client sends; the server's
# replies, its close and its handler's records must be the same on both paths.
CONVERSATIONS: dict[str, list[tuple[int, bytes, bool]]] = {
    "text and binary": [
        (TEXT, b"one", True),
        (BINARY, b"\x00\x01", True),
        (TEXT, b"", True),
        (CLOSE, b"\x03\xe8", True),
    ],
    "unicode": [(TEXT, "ça va? ✓ 🎉".encode(), True), (CLOSE, b"\x03\xe8bye", True)],
    "fragments": [
        (TEXT, "zé".encode()[:2], False),
        (CONTINUATION, "zé".encode()[2:], False),
        (CONTINUATION, b"!", True),
        (BINARY, b"ab", False),
        (CONTINUATION, b"cd", True),
        (CLOSE, b"", True),
    ],
    "large-ish message": [
        (BINARY, os.urandom(900), True),
        (TEXT, b"x" * 200, True),
        (CLOSE, b"\x03\xe8", True),
    ],
    "invalid utf-8": [(TEXT, b"ok", True), (TEXT, b"\xff\xfe", True), (TEXT, b"never", True)],
    "invalid utf-8 across fragments": [(TEXT, b"\xe2\x82", False), (CONTINUATION, b"(", True)],
    "too large": [(TEXT, b"ok", True), (BINARY, bytes(1001), True)],
    "too large in fragments": [(BINARY, bytes(600), False), (CONTINUATION, bytes(600), True)],
    "bad close code": [(TEXT, b"ok", True), (CLOSE, b"\x03\xed", True)],
    "continuation without a message": [(CONTINUATION, b"x", True)],
    "handler raises": [(TEXT, b"before", True), (TEXT, b"raise", True), (TEXT, b"after", True)],
    "handler closes": [(TEXT, b"close", True), (TEXT, b"after our close", True), (CLOSE, b"\x0f\xa1", True)],
    "pong": [(PONG, b"p1", True), (TEXT, b"x", True), (CLOSE, b"\x03\xe8", True)],
}


def converse(make_server: MakeServer, name: str, conversation: list[tuple[int, bytes, bool]]) -> Any:
    cls, record = handler_classes()[name]
    server = make_server(handler_cls=cls)
    with Client(server.port) as client:
        for opcode, payload, fin in conversation:
            try:
                client.send_frame(opcode, payload, fin)
            except OSError:
                break  # the server already closed
        replies = frames_of(client)
    assert record.done.wait(10)
    return replies, [(data, binary) for _, data, binary in record.calls], record.pongs, record.closed


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_both_paths_deliver_and_close_alike(make_server: MakeServer, conversation: str) -> None:
    frames = CONVERSATIONS[conversation]
    data_path = converse(make_server, "DataPath", frames)
    message_path = converse(make_server, "MessagePath", frames)
    assert data_path == message_path
    replies, delivered, pongs, closed = data_path
    assert replies, "the server sent at least its close frame"
    close = replies[-1]
    assert close[0] == CLOSE
    code = int.from_bytes(close[1][:2], "big") if close[1] else 1005
    expected = {
        "invalid utf-8": 1007,
        "invalid utf-8 across fragments": 1007,
        "too large": 1009,
        "too large in fragments": 1009,
        "bad close code": 1002,
        "continuation without a message": 1002,
        "handler raises": 1011,
        "handler closes": 4001,
    }
    if conversation in expected:
        assert code == expected[conversation]
    if conversation == "fragments":
        assert delivered == [("zé!".encode(), False), (b"abcd", True)]
    if conversation == "pong":
        assert pongs == [b"p1"]
    assert len(closed) == 1


def test_close_message_objects_still_reach_on_message() -> None:
    # Protocol(on_data=...): data and pongs go to on_data, the peer's close to on_message.
    from tests.support.frames import frame
    from wsloop.protocol import Protocol

    data: list[tuple[bytes, int]] = []
    messages: list[Message] = []
    p = Protocol(on_message=messages.append, on_data=lambda payload, opcode: data.append((payload, opcode)))
    key = b"\x01\x02\x03\x04"
    p.feed(
        frame(TEXT, b"hi", key=key) + frame(PONG, b"pp", key=key) + frame(BINARY, b"b", fin=False, key=key)
    )
    p.feed(frame(CONTINUATION, b"c", key=key) + frame(CLOSE, b"\x03\xe8", key=key))
    assert data == [(b"hi", TEXT), (b"pp", PONG), (b"bc", BINARY)]
    assert len(messages) == 1 and isinstance(messages[0], CloseControlMessage) and messages[0].code == 1000
    assert p.received == []  # (no list collects messages when a callback takes them)
