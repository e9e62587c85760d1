"""Issue 15's leftovers: ws4py's ``async_websocket.WebSocket(proto)`` and its coroutine ``run()``,
``HandshakeError(msg)``, ``manager.logger`` and the manager as a ``threading.Thread``, the client's
``ssl_options`` dict, and messages that arrive after our close frame (delivered, as RFC 6455
allows and ws4py did) on real sockets, server and client side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.frames import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    TEXT,
    close_payload,
    frame,
    parse_close,
    parse_frames,
)
from tests.support.waiting import eventually
from tests.support.wsclient import Client
from wsloop import async_websocket
from wsloop.client import WebSocketBaseClient
from wsloop.client.threadedclient import WebSocketClient
from wsloop.exc import HandshakeError, HandshakeRejected
from wsloop.handshake import accept_value
from wsloop.manager import WebSocketManager
from wsloop.messaging import Message
from wsloop.protocol import CLOSED, CLOSING, Protocol
from wsloop.servers.asyncioserver import WebSocketProtocol
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket

# ------------------------------------------------------------------ exc.HandshakeError(msg)


def test_handshake_error_takes_ws4py_msg() -> None:
    error = HandshakeError(msg="bad upgrade")
    assert str(error) == "bad upgrade"
    assert error.msg == error.reason == "bad upgrade"
    assert error.status == 400 and error.headers == []
    positional = HandshakeError("full", 503, [("Retry-After", "1")])
    assert (positional.msg, positional.status, positional.headers) == ("full", 503, [("Retry-After", "1")])
    by_reason = HandshakeError(reason="r", status=426)
    assert (by_reason.msg, by_reason.reason, by_reason.status) == ("r", "r", 426)
    assert HandshakeRejected(403).msg == "Forbidden"
    with pytest.raises(TypeError):
        HandshakeError()
    with pytest.raises(TypeError):
        HandshakeError("a", reason="b")


# ------------------------------------------------------------------ manager


def test_manager_logger_is_wsloops() -> None:
    from wsloop import manager

    assert isinstance(manager.logger, logging.Logger)
    assert manager.logger.name.startswith("wsloop.")


class _Opened(WebSocket):
    threads: queue.Queue[threading.Thread] = queue.Queue()

    def opened(self) -> None:
        _Opened.threads.put(threading.current_thread())


def test_manager_is_the_thread_it_runs_on() -> None:
    manager = WebSocketManager()
    assert isinstance(manager, threading.Thread)
    assert manager.name == "WebSocketManager" and manager.daemon
    assert not manager.is_alive() and manager.ident is None
    manager.join(0.01)  # never started: returns at once (a Thread would raise)
    manager.daemon = False  # settable before start(), as a thread's
    server = WebSocketServer("127.0.0.1", 0, handler_cls=_Opened, manager=manager)
    server.start()
    try:
        assert manager.is_alive() and manager.ident is not None
        manager.start()  # a second start does nothing (a reactor's rule)
        with Client(server.port) as client:
            client.send("x")
            assert _Opened.threads.get(timeout=10) is manager
            assert len(manager) == 1
    finally:
        server.stop(timeout=2)
    manager.join(5)
    assert not manager.is_alive()


def test_manager_run_in_the_calling_thread_and_stop() -> None:
    manager = WebSocketManager()
    runner = threading.Thread(target=manager.run, daemon=True)
    runner.start()
    assert eventually(lambda: manager._tid is not None)
    manager.stop(timeout=1)
    runner.join(5)
    assert not runner.is_alive() and manager.finished
    manager.join(0.01)  # run() is not start(): no thread of its own to join


# ------------------------------------------------------------------ client ssl_options


class _Ws4pyStyleClient(WebSocketBaseClient):
    def certfile(self) -> Any:
        return self.ssl_options.get("certfile")  # type: ignore[union-attr]


def test_client_ssl_options_default_is_ws4pys_dict() -> None:
    client = _Ws4pyStyleClient("wss://localhost:9/")
    assert client.ssl_options == {}
    assert client.certfile() is None
    given = {"certfile": "/c.pem"}
    assert _Ws4pyStyleClient("wss://localhost:9/", ssl_options=given).certfile() == "/c.pem"
    import ssl

    context = ssl.create_default_context()
    assert WebSocketBaseClient("wss://localhost:9/", ssl_options=context).ssl_options is context


# ------------------------------------------------------------------ messages after our close


def test_protocol_delivers_data_after_our_close_until_the_peers() -> None:
    got: list[Message] = []
    p = Protocol(on_message=got.append)
    p.close(4000, "bye")
    p.data_to_send()
    key = b"abcd"
    p.feed(
        frame(TEXT, "late é".encode(), key=key)
        + frame(BINARY, b"part 1 ", fin=False, key=key)
        + frame(PING, b"p", key=key)
        + frame(CONT, b"part 2", key=key)
    )
    assert p.state is CLOSING and p.failure is None
    assert p.data_to_send() == b""  # no pong after our close frame
    p.feed(frame(CLOSE, close_payload(4000), key=key) + frame(TEXT, b"after the peer's close", key=key))
    assert [(type(m).__name__, m.data) for m in got] == [
        ("TextMessage", "late é".encode()),
        ("BinaryMessage", b"part 1 part 2"),
        ("CloseControlMessage", close_payload(4000)),
    ]
    assert p.state is CLOSED


class ClosesOnCommand(WebSocket):
    """Echoes; ``close please`` makes it close with 4000. Records what it gets."""

    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def received_message(self, message: Message) -> None:
        ClosesOnCommand.events.put(("message", message.is_binary, message.data))
        if message.data == b"close please":
            self.close(4000, "bye")
        else:
            self.send(message.data, message.is_binary)  # after our close: StreamClosed, harmless

    def unhandled_error(self, error: BaseException) -> None:
        ClosesOnCommand.events.put(("error", repr(error)))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        ClosesOnCommand.events.put(("closed", code, reason))


def _read_frames_until_close(sock: socket.socket, timeout: float = 10.0) -> list[Any]:
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "EOF before the close frame"
        data += chunk
        try:
            frames = parse_frames(data)
        except (AssertionError, IndexError):
            continue  # a frame still incomplete
        if frames and frames[-1].opcode == CLOSE:
            return frames


def _drain(events: queue.Queue[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out = []
    while True:
        event = events.get(timeout=10)
        out.append(event)
        if event[0] == "closed":
            return out


def _late_peer(sock: socket.socket, masked: bool) -> None:
    """Send what a peer mid-message sends after our close: text, a fragmented binary with a ping
    between its fragments, then its close (4000), then a text that must stay unread."""

    def key() -> bytes | None:
        return os.urandom(4) if masked else None

    sock.sendall(
        frame(TEXT, "late é".encode(), key=key())
        + frame(BINARY, b"frag 1 ", fin=False, key=key())
        + frame(PING, b"p", key=key())
        + frame(CONT, b"frag 2", key=key())
    )
    time.sleep(0.05)  # a second read on the other side too
    sock.sendall(frame(CLOSE, close_payload(4000), key=key()) + frame(TEXT, b"after close", key=key()))


def _server_side_late_messages(port: int) -> None:
    ClosesOnCommand.events = queue.Queue()
    with Client(port) as client:
        client.send("close please")
        frames = _read_frames_until_close(client.sock)
        assert parse_close(frames[-1].payload) == (4000, "bye")
        assert [f.opcode for f in frames] == [CLOSE]
        _late_peer(client.sock, masked=True)
        assert client.wait_eof(10)
    events = _drain(ClosesOnCommand.events)
    assert events == [
        ("message", False, b"close please"),
        ("message", False, "late é".encode()),
        ("message", True, b"frag 1 frag 2"),
        ("closed", 4000, b""),
    ]


def test_server_delivers_messages_sent_after_our_close(make_server: Callable[..., WebSocketServer]) -> None:
    server = make_server(handler_cls=ClosesOnCommand)
    _server_side_late_messages(server.port)


class AsyncClosesOnCommand(async_websocket.WebSocket):
    async def received_message(self, message: Message) -> None:
        ClosesOnCommand.events.put(("message", message.is_binary, message.data))
        if message.data == b"close please":
            self.close(4000, "bye")
        else:
            await self.send(message.data, message.is_binary)

    def unhandled_error(self, error: BaseException) -> None:
        ClosesOnCommand.events.put(("error", repr(error)))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        ClosesOnCommand.events.put(("closed", code, reason))


@contextmanager
def asyncio_server(handler_cls: type[WebSocket]) -> Iterator[tuple[asyncio.AbstractEventLoop, int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncio.base_events.Server:
        return await loop.create_server(lambda: WebSocketProtocol(handler_cls), "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield loop, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_asyncio_server_delivers_messages_sent_after_our_close() -> None:
    with asyncio_server(AsyncClosesOnCommand) as (_, port):
        _server_side_late_messages(port)


class _LateRecorder(WebSocketClient):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def received_message(self, message: Message) -> None:
        self.events.put(("message", message.is_binary, message.data))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.events.put(("closed", code, reason))


def test_client_delivers_messages_the_server_sends_after_the_clients_close() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, Any] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept_value(key).encode() + b"\r\n\r\n"
            )
            frames = _read_frames_until_close(conn)
            result["client_close"] = parse_close(frames[-1].payload)
            _late_peer(conn, masked=False)
            try:
                conn.recv(100)  # the client closes its end
            except OSError:
                pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        client = _LateRecorder(f"ws://127.0.0.1:{port}/")
        client.connect()
        client.close(1000, "done")
        events = _drain(client.events)
    finally:
        server.join(10)
        listener.close()
    assert result["client_close"] == (1000, "done")
    assert events == [
        ("message", False, "late é".encode()),
        ("message", True, b"frag 1 frag 2"),
        ("closed", 4000, b""),
    ]


def test_send_after_our_close_is_not_a_handler_error(make_server: Callable[..., WebSocketServer]) -> None:
    # received_message of a late message that tries to answer: StreamClosed, which does not
    # fail the connection (no 1011, no unhandled_error): closed() gets the peer's code.
    ClosesOnCommand.events = queue.Queue()
    server = make_server(handler_cls=ClosesOnCommand)
    with Client(server.port) as client:
        client.send("close please")
        _read_frames_until_close(client.sock)
        client.send_raw(frame(TEXT, b"echo me", key=os.urandom(4)))
        client.send_raw(frame(CLOSE, close_payload(4002, "late"), key=os.urandom(4)))
        assert client.wait_eof(10)
    events = _drain(ClosesOnCommand.events)
    assert events == [
        ("message", False, b"close please"),
        ("message", False, b"echo me"),
        ("closed", 4002, b"late"),
    ]


# ------------------------------------------------------------------ async_websocket.WebSocket(proto)


class _Watched(async_websocket.EchoWebSocket):
    """Records ws4py's attributes in opened(), and when a task awaiting run() returns."""

    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    instances: queue.Queue[_Watched] = queue.Queue()

    def opened(self) -> None:
        proto = type(self.proto).__name__
        _Watched.events.put(("opened", self.started, proto, self.peer_address is not None))
        _Watched.instances.put(self)
        assert self.loop is not None
        self.loop.create_task(self._watch())

    async def _watch(self) -> None:
        await self.run()
        _Watched.events.put(("run returned", self.terminated))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        _Watched.events.put(("closed", code, reason))


def _events_until(events: queue.Queue[tuple[Any, ...]], last: str) -> list[tuple[Any, ...]]:
    out = []
    while True:
        event = events.get(timeout=10)
        out.append(event)
        if event[0] == last:
            return out


def test_async_websocket_proto_started_and_run_awaits_the_end() -> None:
    _Watched.events = queue.Queue()
    _Watched.instances = queue.Queue()
    with asyncio_server(_Watched) as (_, port):
        with Client(port) as client:
            assert client.echo("hi").data == b"hi"
            client.stream.close(1000)
            client.flush()
            assert client.wait_eof(10)
        events = _events_until(_Watched.events, "run returned")
    assert events == [
        ("opened", True, "WebSocketProtocol", True),
        ("closed", 1000, b""),
        ("run returned", True),
    ]


def test_async_websocket_run_awaited_on_another_loop() -> None:
    _Watched.events = queue.Queue()
    _Watched.instances = queue.Queue()
    with asyncio_server(_Watched) as (_, port):
        with Client(port) as client:
            ws = _Watched.instances.get(timeout=10)
            result: queue.Queue[str] = queue.Queue()

            def wait_in_a_thread() -> None:
                asyncio.run(ws.run())
                result.put("returned")

            waiter = threading.Thread(target=wait_in_a_thread, daemon=True)
            waiter.start()
            time.sleep(0.1)
            assert result.empty()  # still open: run() waits
            client.stream.close(1000)
            client.flush()
            assert result.get(timeout=10) == "returned"
            waiter.join(5)
        assert ws.terminated
        # Once ended, run() returns at once.
        asyncio.run(asyncio.wait_for(ws.run(), 5))


def test_async_websocket_run_drives_ws4py_streams() -> None:
    # ws4py's tulipserver flow: the handshake read from the streams, then WebSocket(proto) and
    # ``await ws.run()``, which serves the connection until it ends.
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    class Echo(async_websocket.EchoWebSocket):
        def opened(self) -> None:
            events.put(("opened", self.started, self.peer_address is not None))

        def closed(self, code: int, reason: bytes | None = None) -> None:
            events.put(("closed", code, reason))

    class Proto:  # what run() uses of ws4py's StreamReaderProtocol
        def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.reader, self.writer = reader, writer

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_value(key).encode() + b"\r\n\r\n"
        )
        ws = Echo(Proto(reader, writer))
        assert not ws.started
        await ws.run()
        events.put(("run returned", ws.terminated))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncio.base_events.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        with Client(server.sockets[0].getsockname()[1]) as client:
            assert client.echo("é").data == "é".encode()
            assert client.echo(b"\x00\x01").data == b"\x00\x01"
            client.stream.close(4000)
            client.flush()
            assert client.recv_close().code == 4000
            assert client.wait_eof(10)
        got = _events_until(events, "run returned")
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert got == [("opened", True, True), ("closed", 4000, b""), ("run returned", True)]


def test_async_websocket_once_raises_and_run_needs_a_driver() -> None:
    ws = async_websocket.EchoWebSocket(None)
    assert ws.proto is None and ws.started is False
    with pytest.raises(NotImplementedError):
        ws.once()
    with pytest.raises(RuntimeError):
        asyncio.run(ws.run())


class _SyncCallbacks(async_websocket.WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message.data, message.is_binary)


def test_async_websocket_with_plain_callbacks_on_the_threaded_poller() -> None:
    # The threaded poller drives each websocket with the blocking run(): async_websocket's
    # run() is a coroutine now, so the poller uses the blocking one for it.
    server = WebSocketServer("127.0.0.1", 0, handler_cls=_SyncCallbacks, poller="threaded")
    server.start()
    try:
        with Client(server.port) as client:
            assert client.echo("x").data == b"x"
    finally:
        server.stop(timeout=2)
