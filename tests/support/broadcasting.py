"""The broadcasting handler and helpers that tests/test_broadcast_direct.py and
tests/test_broadcast_shared.py share: ``Fan`` (commands that broadcast numbered messages and
note what each broadcast left queued), numbered payloads and their check, a deflating client."""

from __future__ import annotations

import socket
from typing import Any

from tests.support.wsclient import Client
from wsloop.deflate import DeflateOptions, client_accept, client_offer
from wsloop.handshake import Response
from wsloop.messaging import Message
from wsloop.poller import Reactor
from wsloop.protocol import Protocol
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket


class Fan(WebSocket):
    """``go N``: broadcast N numbered messages, noting after each one every connection's queued
    output; ``mix N``: a message of its own, then a broadcast, N times; ``big N``: send N bytes;
    ``bigtext N``: N characters of text; ``sub``: join the channel "room"; ``pub N``: publish N
    numbered messages on it. Anything else is echoed. :func:`reset_fan` before each test."""

    compression: DeflateOptions | None = None
    instances: list[Fan] = []
    codes: list[int] = []
    queued_after: list[list[int]] = []  # per broadcast: len(wbuf) of every connection
    partial = 0  # broadcasts that left the rest of a partly written frame queued
    sndbuf = 0  # SO_SNDBUF for new connections (0: the system's)
    size = 64

    def opened(self) -> None:
        if Fan.sndbuf and self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, Fan.sndbuf)
        Fan.instances.append(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        Fan.codes.append(code)

    def received_message(self, message: Message) -> None:
        command, _, arg = message.data.partition(b" ")
        transport: Any = self.transport
        reactor: Reactor = transport.reactor
        if command == b"go":
            for i in range(int(arg)):
                reactor.broadcast(numbered(i, Fan.size), binary=True)
                conns = list(reactor._connections.values())
                Fan.queued_after.append([len(c.wbuf) for c in conns])
                Fan.partial += sum(1 for c in conns if c.wbuf and type(c.wbuf[-1]) is memoryview)
        elif command == b"sub":
            self.subscribe("room")
            self.send(b"joined", binary=True)
        elif command == b"pub":
            for i in range(int(arg)):
                self.publish("room", numbered(i, Fan.size), binary=True)
                Fan.queued_after.append([len(c.wbuf) for c in reactor._connections.values()])
        elif command == b"mix":
            for i in range(int(arg)):
                self.send(b"own %d" % i, binary=True)
                reactor.broadcast(b"all %d" % i, binary=True)
        elif command == b"big":
            self.send(pattern(int(arg)), binary=True)
        elif command == b"bigtext":
            self.send("é" * (int(arg) // 2))
        else:
            self.send(message.data, message.is_binary)


class Compressing(Fan):
    """A :class:`Fan` that negotiates permessage-deflate."""

    compression = DeflateOptions()


def reset_fan() -> None:
    Fan.instances, Fan.codes, Fan.queued_after = [], [], []
    Fan.partial, Fan.sndbuf, Fan.size = 0, 0, 64


def written_at_once() -> bool:
    """Whether every broadcast so far left no connection with output queued."""
    return all(n == 0 for after in Fan.queued_after for n in after)


def numbered(i: int, size: int) -> bytes:
    """``size`` bytes that say which message they are: the number, then a filler byte of it."""
    head = b"%08d:" % i
    return head + bytes([i % 251]) * (size - len(head))


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def check_numbered(messages: list[bytes], count: int, size: int) -> None:
    assert [m[:8] for m in messages] == [b"%08d" % i for i in range(count)], "all, in order"
    assert all(m == numbered(i, size) for i, m in enumerate(messages)), "intact"


def serve(handler: type[WebSocket] = Fan, reactor: Reactor | None = None, **options: Any) -> WebSocketServer:
    """A started standalone server of ``handler`` on 127.0.0.1 (port 0)."""
    server = WebSocketServer("127.0.0.1", 0, handler, manager=reactor, **options)
    server.start()
    return server


class DeflateClient(Client):
    """A test client that offers permessage-deflate and inflates what it receives."""

    def __init__(self, port: int) -> None:
        self.options = DeflateOptions()
        super().__init__(port, extensions=[client_offer(self.options)], timeout=30)

    def make_stream(self, response: Response) -> Protocol:
        header = response.headers.get("sec-websocket-extensions")
        assert header, "the server accepted permessage-deflate"
        return Protocol(client=True, max_message_size=None, deflate=client_accept(header, self.options))
