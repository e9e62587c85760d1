"""Hostile peers against the protocol core, end to end through a real server (issue 13).

Each test starts a :class:`~wsloop.servers.standalone.WebSocketServer` on a loopback port (both
pollers where it applies) and attacks it with a raw client from ``tests.support.wsclient``: callbacks
after ``closed()`` (item 9), cross-thread sends of fragment lists (item 10), floods of empty
continuation frames (item 2), ping floods (item 5) and BFINAL-split compressed messages (item 1).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.waiting import eventually
from tests.support.wsclient import Client
from wsloop.framing import OPCODE_CONTINUATION, OPCODE_PING, OPCODE_TEXT, build_frame
from wsloop.messaging import Message
from wsloop.poller.reactor import Reactor
from wsloop.protocol import PONG_BURST
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket

# ------------------------------------------------ item 9: no callback after closed()


class TerminatesOnFirst(WebSocket):
    """Records its callbacks; drops the connection from inside the first received_message."""

    events: list[tuple[str, Any]] = []

    def received_message(self, message: Message) -> None:
        TerminatesOnFirst.events.append(("message", message.data))
        if len([e for e in TerminatesOnFirst.events if e[0] == "message"]) == 1:
            self.terminate()

    def ponged(self, pong: Any) -> None:
        TerminatesOnFirst.events.append(("pong", pong.data))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        TerminatesOnFirst.events.append(("closed", code))


def test_no_callback_after_closed_when_terminated_inside_a_callback(
    make_server: Callable[..., WebSocketServer], poller: str
) -> None:
    TerminatesOnFirst.events = []
    server = make_server(handler_cls=TerminatesOnFirst)
    with Client(server.port) as client:
        # Five messages (and a pong) in one TCP write: one read on the server's side.
        frames = b"".join(build_frame(OPCODE_TEXT, b"msg %d" % i, masked=True) for i in range(1, 6))
        client.send_raw(frames + build_frame(0xA, b"pong", masked=True) + frames)
        assert client.wait_eof(5)
    assert eventually(lambda: any(e[0] == "closed" for e in TerminatesOnFirst.events))
    time.sleep(0.2)  # anything late would show up by now
    events = TerminatesOnFirst.events
    closed_at = [i for i, e in enumerate(events) if e[0] == "closed"]
    assert closed_at == [len(events) - 1], events  # closed() once, and nothing after it
    assert events[-1] == ("closed", 1006)
    assert events[0] == ("message", b"msg 1")
    if poller == "selectors":
        # The reactor drops the connection at once: the rest of the read is not delivered.
        assert events == [("message", b"msg 1"), ("closed", 1006)]


# ------------------------------------------------ item 10: cross-thread sends are back-pressured


class SendsFromAThread(WebSocket):
    """On open, a thread sends ``count`` messages of 64 KiB in the form ``form`` names."""

    form = "list"
    count = 300
    instances: list[SendsFromAThread] = []

    def opened(self) -> None:
        self.returned = 0  # send() calls that returned
        self.error: BaseException | None = None
        SendsFromAThread.instances.append(self)
        threading.Thread(target=self._produce, daemon=True).start()

    def _produce(self) -> None:
        chunk = b"x" * 16384
        try:
            for _ in range(self.count):
                if self.form == "list":
                    self.send([chunk, chunk, chunk, chunk], binary=True)
                elif self.form == "tuple":
                    self.send((chunk, chunk, chunk, chunk), binary=True)
                elif self.form == "generator":
                    self.send((chunk for _ in range(4)), binary=True)
                elif self.form == "str list":
                    self.send(["é" * 8192] * 4)  # 16 KiB of UTF-8 each, 8192 characters
                else:
                    self.send(chunk * 4, binary=True)
                self.returned += 1
        except Exception as exc:  # StreamClosed once the test ends
            self.error = exc


@pytest.mark.parametrize("form", ["list", "tuple", "generator", "str list", "bytes"])
def test_cross_thread_send_of_fragments_waits_above_high_water(form: str) -> None:
    reactor = Reactor(high_water=256 * 1024, low_water=64 * 1024)
    SendsFromAThread.instances = []
    SendsFromAThread.form = form
    server = WebSocketServer("127.0.0.1", 0, handler_cls=SendsFromAThread, manager=reactor)
    server.start()
    try:
        with Client(server.port) as client:  # it never reads
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert eventually(lambda: SendsFromAThread.instances)
            ws = SendsFromAThread.instances[0]
            conn = reactor._connections[ws]
            # The sender either finishes (no backpressure) or waits for the client to read.
            assert eventually(lambda: ws.returned == ws.count or conn.waiters, timeout=20)
            time.sleep(0.3)
            unsent = conn.wsize + conn.queued
            assert ws.returned < ws.count and ws.error is None
            assert unsent <= reactor.high_water + 2 * 65536, (ws.returned, unsent)
    finally:
        server.stop(timeout=2)


# ------------------------------------------------ item 2: floods of empty continuation frames


def test_flood_of_empty_continuations_gets_1009_promptly(
    make_server: Callable[..., WebSocketServer],
) -> None:
    server = make_server(max_message_size=1024)
    with Client(server.port) as client, Client(server.port) as good:
        empty = build_frame(OPCODE_CONTINUATION, b"", fin=False, masked=True)
        client.send_raw(build_frame(OPCODE_TEXT, b"", fin=False, masked=True))
        for _ in range(20):  # 20 x 1,000 empty fragments (6 bytes each), as fast as it can
            try:
                client.send_raw(empty * 1000)
            except OSError:  # the server closed on us: what we want
                break
        assert client.recv_close(timeout=5).code == 1009
        assert good.echo("still served").data == b"still served"


# ------------------------------------------------ item 5: a ping flood to a client that never reads


class CountsWrites(WebSocket):
    """Counts the buffers its protocol hands to the transport (pongs, here)."""

    instances: list[CountsWrites] = []

    def opened(self) -> None:
        self.writes = 0
        self.written = 0
        self.done = False
        write = self.stream.write

        def counting(data: bytes) -> None:
            self.writes += 1
            self.written += len(data)
            write(data)

        self.stream.write = counting
        CountsWrites.instances.append(self)

    def received_message(self, message: Message) -> None:
        self.done = True


def test_ping_flood_makes_one_pong_buffer_per_read_not_per_ping() -> None:
    # 17 MB of empty pings to a client that never reads made 1.25 M pong buffers (+83 MB): the
    # protocol now answers a run of pings in one buffer (PONG_BURST pongs, then only the last).
    CountsWrites.instances = []
    server = WebSocketServer("127.0.0.1", 0, handler_cls=CountsWrites)
    server.start()
    try:
        with Client(server.port) as client:  # it never reads
            ping = build_frame(OPCODE_PING, b"", masked=True)
            for _ in range(100):
                client.send_raw(ping * 1000)
            client.send_raw(build_frame(OPCODE_TEXT, b"done", masked=True))
            assert eventually(lambda: CountsWrites.instances and CountsWrites.instances[0].done)
            ws = CountsWrites.instances[0]
            assert ws.writes <= 100_000 // PONG_BURST, ws.writes
            assert ws.written <= ws.writes * (PONG_BURST + 1) * 2
    finally:
        server.stop(timeout=2)
