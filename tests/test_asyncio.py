"""The asyncio server (wsloop.servers.asyncioserver) and async websockets (wsloop.async_websocket),
over real loopback sockets: ws4py's asyncio example and serve() through the Autobahn cases, then
in-process behaviour with serve() running its own event loop in a thread."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.autobahn import assert_all_passed, run_suite
from tests.support.examples import EXAMPLES, example_path
from tests.support.wsclient import AMBIGUOUS_UPGRADES, Client, raw_request, upgrade
from wsloop import async_websocket
from wsloop.async_websocket import DONE, AsyncioTransport
from wsloop.framing import OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PONG, OPCODE_TEXT, build_frame
from wsloop.handshake import client_request, new_key
from wsloop.messaging import BinaryMessage, Message, PongControlMessage
from wsloop.protocol import Protocol
from wsloop.servers.asyncioserver import WebSocketProtocol, serve
from wsloop.websocket import EchoWebSocket as SyncEchoWebSocket
from wsloop.websocket import WebSocket as SyncWebSocket

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = EXAMPLES / "asyncio_echo.py"
EXAMPLE_PORT = 9007
HIGH_WATER = async_websocket.DEFAULT_HIGH_WATER


# ----------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


def _start(
    args: list[str], pattern: str, timeout: float = 15.0
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start a server process; return it with the match of ``pattern`` in its output."""
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return proc, match
    proc.kill()
    proc.wait()
    lines.extend(proc.stdout.readlines())
    raise RuntimeError("server did not start:\n" + "".join(lines))


def _finish(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    assert proc.stdout is not None
    output = proc.stdout.read()
    proc.stdout.close()
    return code, output


def _port_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", port))
    except OSError:
        return False
    return True


class Served:
    """serve() running in a thread, with its URL."""

    def __init__(self, thread: threading.Thread, stop: threading.Event, url: str) -> None:
        self.thread = thread
        self.stop = stop
        self.url = url
        self.port = int(url.rsplit(":", 1)[1].rstrip("/"))


@contextmanager
def serving(handler_cls: type[SyncWebSocket], **options: Any) -> Iterator[Served]:
    """Run serve() in a thread (its own loop); stop it and check it returned afterwards."""
    stop = threading.Event()
    urls: queue.Queue[str] = queue.Queue()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve("127.0.0.1", 0, handler_cls, ready=urls.put, stop=stop, **options)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            urls.put("")

    thread = threading.Thread(target=run, name="serve", daemon=True)
    thread.start()
    url = urls.get(timeout=10)
    assert not errors, errors
    served = Served(thread, stop, url)
    try:
        yield served
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "serve() did not return"
        assert not errors, errors


@contextmanager
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread, ws4py style (the test adds servers to it)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the loop's thread and return its result."""

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(10)


class RawPeer:
    """A client that does the handshake and then only what the test says (no automatic pongs)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(client_request(f"127.0.0.1:{port}", "/", new_key()))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "server closed during handshake"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        self.frames: list[tuple[int, bytes]] = []
        self.pings = 0
        self.stream = Protocol(
            client=True, max_message_size=None, write=self._write, on_message=self._message
        )
        self._stock = rest

    def _write(self, frame: bytes) -> None:
        """What the client would send: nothing goes out; a pong means a ping came."""
        if frame[0] & 0x0F == OPCODE_PONG:
            self.pings += 1

    def _message(self, message: Message) -> None:
        self.frames.append((message.opcode, message.data))

    def read_until_eof(self, timeout: float) -> float:
        """Read (counting pings) until the server closes; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        data = self._stock
        while True:
            if data:
                self.stream.feed(data)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server did not close")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return time.monotonic() - start


# ------------------------------------------------------------------ handlers for the tests


class Recording(async_websocket.EchoWebSocket):
    """Echoes; puts (event, ...) tuples in ``events``."""

    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def unhandled_error(self, error: BaseException) -> None:
        self.events.put(("error", repr(error)))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.events.put(("closed", code, reason))


class AsyncCallbacks(Recording):
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    async def opened(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.01)
        self.events.put(("opened", loop is self.loop, threading.current_thread().name))
        await self.send("welcome")

    async def received_message(self, message: Message) -> None:
        await asyncio.sleep(0.01)
        await self.send(b"re:" + message.data, message.is_binary)

    async def ponged(self, pong: PongControlMessage) -> None:
        self.events.put(("pong", pong.data))

    async def closed(self, code: int, reason: bytes | None = None) -> None:
        await asyncio.sleep(0)
        self.events.put(("closed", code, reason))


class Closer(Recording):
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    async def received_message(self, message: Message) -> None:
        await self.send(b"closing: " + message.data)
        await self.close(4001, "asked to")
        self.events.put(("close awaited", self.server_terminated, self.terminated))


class Boom(Recording):
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    async def received_message(self, message: Message) -> None:
        if message.data == b"boom":
            await asyncio.sleep(0.01)
            raise ValueError("boom in a coroutine")
        await self.send(message.data, message.is_binary)


class Flood(Recording):
    """On any message: 32 awaited 1 MiB sends; records the transport's buffer after each."""

    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    async def received_message(self, message: Message) -> None:
        driver = self.transport
        assert isinstance(driver, AsyncioTransport)
        waited = 0
        largest = 0
        for i in range(32):
            pending = self.send(bytes([i]) * (1024 * 1024), binary=True)
            if pending is not DONE:
                waited += 1
            await pending
            largest = max(largest, driver.transport.get_write_buffer_size())
        self.events.put(("flooded", waited, largest))


class LateSender(Recording):
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    async def received_message(self, message: Message) -> None:
        await asyncio.sleep(0.3)  # the peer closes meanwhile
        await self.send("too late")


class Registered(async_websocket.EchoWebSocket):
    instances: queue.Queue[SyncWebSocket] = queue.Queue()

    def opened(self) -> None:
        self.instances.put(self)


class SyncRegistered(SyncEchoWebSocket):
    instances: queue.Queue[SyncWebSocket] = queue.Queue()

    def opened(self) -> None:
        self.instances.put(self)


class Parked(Recording):
    """Each message's coroutine waits until the test releases them; at most 4 pending."""

    max_pending_tasks = 4
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    instances: queue.Queue[async_websocket.WebSocket] = queue.Queue()
    release: asyncio.Event | None = None

    def opened(self) -> None:
        type(self).release = asyncio.Event()
        self.instances.put(self)

    async def received_message(self, message: Message) -> None:
        assert self.release is not None
        await self.release.wait()
        await self.send(message.data, message.is_binary)


def drain_events(events: queue.Queue[tuple[Any, ...]]) -> None:
    while not events.empty():
        events.get_nowait()


def next_event(events: queue.Queue[tuple[Any, ...]], kind: str, timeout: float = 10.0) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if event[0] == kind:
            return event


# ------------------------------------------------------------------ Autobahn


@pytest.mark.timeout(900)
def test_ws4py_asyncio_example_passes_autobahn(tmp_path: Path) -> None:
    """../shared/examples/asyncio_echo.py, unmodified, on its fixed port 9007."""
    example_path(EXAMPLE.name)  # skips, saying why, where the shared examples are not here
    if not _port_free(EXAMPLE_PORT):
        pytest.skip(f"port {EXAMPLE_PORT} (fixed in the asyncio example) is busy")
    try:
        proc, _ = _start([sys.executable, str(EXAMPLE)], r"serving on")
    except RuntimeError as exc:
        if "Address already in use" in str(exc):
            pytest.skip(f"port {EXAMPLE_PORT} (fixed in the asyncio example) is busy")
        raise
    try:
        cases = run_suite(f"ws://127.0.0.1:{EXAMPLE_PORT}/", tmp_path, "-x", "12.*", "-x", "13.*")
    finally:
        _, output = _finish(proc)
    assert_all_passed(cases)
    assert "Traceback" not in output, output


SERVE_SCRIPT = """
import signal, sys, threading
from wsloop.servers.asyncioserver import serve
from {module} import {name} as handler
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: stop.set())
serve("127.0.0.1", 0, handler, ready=lambda url: print("ready", url, flush=True), stop=stop)
print("serve returned", flush=True)
"""


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "module, name", [("wsloop.async_websocket", "EchoWebSocket"), ("wsloop.websocket", "EchoWebSocket")]
)
def test_serve_passes_autobahn(module: str, name: str, tmp_path: Path) -> None:
    script = SERVE_SCRIPT.format(module=module, name=name)
    proc, match = _start([sys.executable, "-c", script], r"ready (ws://127\.0\.0\.1:\d+/)")
    try:
        cases = run_suite(match.group(1), tmp_path, "-x", "12.*", "-x", "13.*")
    finally:
        code, output = _finish(proc)
    assert_all_passed(cases)
    assert code == 0, output
    assert "serve returned" in output
    assert "Traceback" not in output, output


# ------------------------------------------------------------------ in-process


def test_ready_url_and_sync_handler() -> None:
    with serving(SyncEchoWebSocket) as served:
        assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/", served.url)
        assert served.port != 0
        with Client(served.port) as client:
            assert client.echo("sync on asyncio").data == b"sync on asyncio"
            reply = client.echo(b"\x00\xff" * 40000)
            assert reply.is_binary and reply.data == b"\x00\xff" * 40000
            client.stream.close(1000)
            client.flush()
            assert client.recv_close().code == 1000
            assert client.wait_eof()


def test_async_callbacks_run_as_tasks_on_the_loop() -> None:
    events = AsyncCallbacks.events
    drain_events(events)
    with serving(AsyncCallbacks) as served, Client(served.port) as client:
        welcome = client.recv()
        assert welcome.is_text and welcome.data == b"welcome"
        _, same_loop, thread_name = next_event(events, "opened")
        assert same_loop and thread_name == "serve"
        assert client.echo("one").data == b"re:one"
        reply = client.echo(b"\x01\x02")
        assert reply.is_binary and reply.data == b"re:\x01\x02"
        client.stream.ping(b"hb")
        client.flush()
        pong = client.recv()  # the server answers pings itself
        assert isinstance(pong, PongControlMessage) and pong.data == b"hb"
        client.stream.pong(b"beat")  # an unsolicited pong goes to ponged()
        client.flush()
        assert next_event(events, "pong") == ("pong", b"beat")
        client.stream.close(4000, "bye")
        client.flush()
        assert client.recv_close().code == 4000
        assert next_event(events, "closed") == ("closed", 4000, b"bye")
        assert not [e for e in list(events.queue) if e[0] == "error"]


def test_awaited_close_from_a_coroutine() -> None:
    events = Closer.events
    drain_events(events)
    with serving(Closer) as served, Client(served.port) as client:
        assert client.echo("please").data == b"closing: please"
        close = client.recv_close()
        assert (close.code, close.reason) == (4001, b"asked to")
        assert next_event(events, "close awaited") == ("close awaited", True, False)
        client.flush()  # our close reply completes the handshake
        assert client.wait_eof()
        assert next_event(events, "closed")[1:] == (4001, b"")  # the code our peer echoed


def test_coroutine_error_closes_1011_and_others_carry_on() -> None:
    events = Boom.events
    drain_events(events)
    with serving(Boom) as served, Client(served.port) as bystander, Client(served.port) as victim:
        assert bystander.echo("before").data == b"before"
        victim.send("boom")
        close = victim.recv_close()
        assert close.code == 1011
        victim.flush()
        assert victim.wait_eof()  # the server's FIN follows its close frame
        victim.sock.close()  # the server waits for ours before closed() (a lingering close)
        error = next_event(events, "error")
        assert "boom in a coroutine" in error[1]
        assert next_event(events, "closed")[1] == 1011
        assert bystander.echo("after").data == b"after"


def test_send_losing_the_race_with_close_is_not_an_error() -> None:
    events = LateSender.events
    drain_events(events)
    with serving(LateSender) as served, Client(served.port) as client:
        client.send("hello")
        client.stream.close(1000)
        client.flush()
        assert client.recv_close().code == 1000
        assert next_event(events, "closed")[1] == 1000
        time.sleep(0.5)  # the coroutine's send comes after the close
        assert [e for e in list(events.queue) if e[0] == "error"] == []


def test_awaited_send_waits_for_the_transport_to_drain() -> None:
    events = Flood.events
    drain_events(events)
    with serving(Flood) as served, Client(served.port, timeout=30) as client:
        client.send("go")
        time.sleep(0.5)  # not reading: the server's buffer fills up
        for i in range(32):
            message = client.recv(timeout=30)
            assert isinstance(message, BinaryMessage) and message.data == bytes([i]) * (1024 * 1024)
        _, waited, largest = next_event(events, "flooded")
        assert waited > 0, "some await send() had to wait for the transport to drain"
        assert largest <= HIGH_WATER, "each await returned with the buffer below the high-water mark"


def test_peer_that_stops_reading_is_bounded() -> None:
    """A peer that sends without reading: the server stops reading at the high-water mark, and
    its buffer stays bounded; once the peer reads, everything arrives."""
    drain_events(SyncRegistered.instances)  # type: ignore[arg-type]
    with serving(SyncRegistered) as served, Client(served.port, timeout=30) as client:
        ws = SyncRegistered.instances.get(timeout=5)
        driver = ws.transport
        assert isinstance(driver, AsyncioTransport)
        frame = memoryview(build_frame(OPCODE_BINARY, b"p" * 65536, masked=True))
        sock = client.sock
        sock.setblocking(False)
        frames = offset = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([], [sock], [], 1.0)[1]:  # our sends are stuck...
                if not driver.transport.is_reading():  # ...because the server stopped reading
                    break
                continue
            offset += sock.send(frame[offset:])
            if offset == len(frame):
                frames += 1
                offset = 0
        else:
            pytest.fail("the server never stopped reading")
        assert driver.transport.get_write_buffer_size() <= HIGH_WATER + 512 * 1024
        for _ in range(frames):
            assert client.recv(timeout=30).data == b"p" * 65536
        if offset:  # finish the frame we were in the middle of
            sock.settimeout(30)
            sock.sendall(frame[offset:])
            assert client.recv(timeout=30).data == b"p" * 65536
        assert client.echo("the end").data == b"the end"
        assert driver.transport.is_reading()


@pytest.mark.parametrize("handler", [Registered, SyncRegistered], ids=["async", "sync"])
def test_threads_sending_concurrently_produce_intact_frames(handler: type[SyncWebSocket]) -> None:
    instances: queue.Queue[SyncWebSocket] = handler.instances  # type: ignore[attr-defined]
    drain_events(instances)  # type: ignore[arg-type]
    sizes = [0, 10, 1000, 20000, 70000, 200000]
    per_thread = 120
    with serving(handler) as served, Client(served.port, timeout=30) as client:
        ws = instances.get(timeout=5)
        start = threading.Barrier(8)
        failures: list[BaseException] = []

        def sender(t: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    head = f"{t}:{i}:".encode()
                    body = head + bytes([65 + t]) * sizes[(i + t) % len(sizes)]
                    if i % 3 == 2:
                        ws.send(body, binary=True)
                    else:
                        ws.send(body.decode())
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        seen = [0] * 8
        for _ in range(8 * per_thread):
            message = client.recv(timeout=30)
            t_s, i_s, rest = message.data.split(b":", 2)
            t, i = int(t_s), int(i_s)
            assert i == seen[t], "each thread's messages arrive whole and in order"
            seen[t] += 1
            assert rest == bytes([65 + t]) * sizes[(i + t) % len(sizes)]
            assert message.is_binary == (i % 3 == 2)
        for thread in threads:
            thread.join(10)
        assert not failures, failures
        assert client.echo("still fine").data == b"still fine"


class TestHandshake:
    @pytest.mark.parametrize(
        "request_bytes, status",
        [
            (upgrade(request_line="POST / HTTP/1.1"), 400),
            (upgrade(Upgrade=None), 400),
            (upgrade(Sec_WebSocket_Key="c2hvcnQ="), 400),
            (upgrade(Sec_WebSocket_Version="8"), 426),
            (b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431),
        ],
        ids=["post", "no-upgrade", "short-key", "version-8", "plain-get", "header-too-large"],
    )
    def test_bad_request_gets_http_error(self, request_bytes: bytes, status: int) -> None:
        with serving(async_websocket.EchoWebSocket) as served:
            response = raw_request(served.port, request_bytes)
        assert int(response.split(b" ", 2)[1]) == status, response[:200]
        assert b"Connection: close" in response
        if status == 426:
            assert b"Sec-WebSocket-Version: 13" in response

    def test_plain_get_root_serves_demo_page(self) -> None:
        with serving(async_websocket.EchoWebSocket) as served:
            response = raw_request(served.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200 ")
        assert b"new WebSocket(" in response

    def test_ws4py_style_protocol_factory_and_handshake_timeout(self) -> None:
        with loop_in_thread() as loop:

            async def start() -> asyncio.Server:
                return await loop.create_server(
                    lambda: WebSocketProtocol(async_websocket.EchoWebSocket, handshake_timeout=0.3),
                    "127.0.0.1",
                    0,
                )

            server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
            port = server.sockets[0].getsockname()[1]
            with Client(port) as client:
                assert client.echo("ws4py style").data == b"ws4py style"
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                began = time.monotonic()
                assert sock.recv(100) == b""
                assert time.monotonic() - began < 3
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(upgrade() + build_frame(OPCODE_TEXT, b"early", masked=True))
                data = b""
                while b"early" not in data:
                    chunk = sock.recv(4096)
                    assert chunk
                    data += chunk
                assert data.endswith(b"\x81\x05early")
            on_loop(loop, server.close)


def test_serve_shutdown_closes_every_websocket_with_1001() -> None:
    events = Recording.events
    drain_events(events)
    with serving(Recording) as served:
        clients = [Client(served.port) for _ in range(3)]
        served.stop.set()
        began = time.monotonic()
        for client in clients:
            close = client.recv_close()
            assert close.code == 1001
            client.flush()  # our close reply lets the server finish at once
            assert client.wait_eof()
            client.sock.close()
        served.thread.join(10)
        assert not served.thread.is_alive()
        assert time.monotonic() - began < 3
    codes = sorted(next_event(events, "closed")[1] for _ in range(3))
    assert codes == [1001, 1001, 1001]


def test_serve_shutdown_drops_peers_that_do_not_answer_after_the_timeout() -> None:
    with serving(async_websocket.EchoWebSocket, close_timeout=0.5) as served:
        peer = RawPeer(served.port)
        half = socket.create_connection(("127.0.0.1", served.port), timeout=5)
        half.sendall(b"GET / HTTP/1.1\r\n")  # a handshake in progress
        time.sleep(0.1)
        served.stop.set()
        took = peer.read_until_eof(timeout=10)
        assert peer.frames and peer.frames[-1][0] == OPCODE_CLOSE
        assert 0.3 < took < 3
        try:
            assert half.recv(100) == b""
        except ConnectionResetError:
            pass
        half.close()
        served.thread.join(10)
        assert not served.thread.is_alive()


def test_heartbeat_drops_a_silent_peer_and_keeps_a_live_one() -> None:
    events = Recording.events
    drain_events(events)
    with serving(Recording, heartbeat_freq=0.3) as served, Client(served.port) as live:
        got: list[Message] = []
        done = threading.Event()

        def answer_pings() -> None:  # Client.recv answers pings as it reads
            while not done.is_set():
                try:
                    got.append(live.recv(timeout=0.05))
                except TimeoutError:
                    pass

        reader = threading.Thread(target=answer_pings)
        reader.start()
        try:
            silent = RawPeer(served.port)
            took = silent.read_until_eof(timeout=10)
            silent.sock.close()
            assert next_event(events, "closed")[1] == 1011
            time.sleep(0.5)
        finally:
            done.set()
            reader.join(5)
        assert silent.pings >= 1
        assert took < 3
        close = [data for opcode, data in silent.frames if opcode == OPCODE_CLOSE]
        assert close and int.from_bytes(close[0][:2], "big") == 1011
        assert got == [], "the live peer got nothing but pings"
        assert live.echo("alive").data == b"alive"


def test_too_many_pending_callback_tasks_pause_reading() -> None:
    drain_events(Parked.instances)  # type: ignore[arg-type]
    with serving(Parked) as served, Client(served.port) as client:
        ws = Parked.instances.get(timeout=5)
        driver = ws.transport
        assert isinstance(driver, AsyncioTransport)
        client.send_raw(b"".join(build_frame(OPCODE_TEXT, b"m%d" % i, masked=True) for i in range(10)))
        deadline = time.monotonic() + 5
        while driver.transport.is_reading() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not driver.transport.is_reading(), "reading pauses with more than 4 tasks pending"
        release = Parked.release
        assert release is not None
        driver.loop.call_soon_threadsafe(release.set)
        got = sorted(client.recv().data for _ in range(10))
        assert got == sorted(b"m%d" % i for i in range(10))
        assert driver.transport.is_reading()
        assert client.echo("more").data == b"more"


def test_coroutine_callback_outside_asyncio_fails_with_1011() -> None:
    """An async handler served by the reactor (no event loop) is told so, not left hanging."""
    from wsloop.servers.standalone import WebSocketServer

    events = AsyncCallbacks.events
    drain_events(events)
    server = WebSocketServer("127.0.0.1", 0, AsyncCallbacks)
    server.start()
    try:
        with Client(server.port) as client:
            assert client.recv_close().code == 1011
        assert "no asyncio loop" in next_event(events, "error")[1]
    finally:
        server.stop(timeout=2)


def test_ambiguous_request_heads_get_400() -> None:
    """RFC 9112: a head a proxy could read differently is refused (issue 13, item 16)."""
    cases = AMBIGUOUS_UPGRADES
    with serving(SyncEchoWebSocket) as served:
        statuses = {name: raw_request(served.port, data)[:12] for name, data in cases.items()}
        with Client(served.port) as client:  # still serving
            assert client.echo("after").data == b"after"
    assert statuses == dict.fromkeys(cases, b"HTTP/1.1 400"), statuses


def test_pending_handshakes_are_bounded() -> None:
    """max_pending_handshakes=4: of 10 connections that send nothing, 6 are answered 503 at
    once; once they go, a new client is served (issue 13, item 3, for the asyncio server)."""
    with serving(SyncEchoWebSocket, max_pending_handshakes=4) as served:
        idle = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(10)]
        try:
            answers = []
            deadline = time.monotonic() + 5
            while len(answers) < 6 and time.monotonic() < deadline:
                readable, _, _ = select.select([s for s in idle if s not in answers], [], [], 0.2)
                answers.extend(readable)
            time.sleep(0.2)
            extra, _, _ = select.select([s for s in idle if s not in answers], [], [], 0)
            assert len(answers) == 6 and not extra, (len(answers), len(extra))
            assert all(s.recv(100).startswith(b"HTTP/1.1 503 ") for s in answers)
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        with Client(served.port) as client:
            assert client.echo("after").data == b"after"


class Ticker(SyncWebSocket):
    """Sends 1 MiB every 5 ms from the loop's thread (as a broadcast or a timer would: such sends
    never wait); records the largest transport buffer seen and how it ended."""

    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def opened(self) -> None:
        self.largest = 0
        self.tick()

    def tick(self) -> None:
        if self.terminated:
            return
        driver = self.transport
        assert isinstance(driver, AsyncioTransport)
        self.send(b"t" * (1024 * 1024), binary=True)
        driver.flush()
        self.largest = max(self.largest, driver.transport.get_write_buffer_size())
        driver.loop.call_later(0.005, self.tick)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.events.put(("closed", code, reason, self.largest))


def test_output_to_a_peer_that_does_not_read_is_capped() -> None:
    """Output queued on the loop's thread for a peer that never reads stops at max_buffered: the
    connection is dropped and closed with 1008 (before: it grew without end)."""
    drain_events(Ticker.events)
    with serving(Ticker, max_buffered=8 * 1024 * 1024) as served:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", served.port))
        sock.sendall(client_request(f"127.0.0.1:{served.port}", "/", new_key()))
        try:
            event = next_event(Ticker.events, "closed", timeout=30)
        finally:
            sock.close()
        _, code, reason, largest = event
        assert (code, reason) == (1008, b"output buffer limit exceeded")
        assert largest <= 8 * 1024 * 1024 + 2 * 1024 * 1024
        with Client(served.port) as good:  # the server carries on
            assert good.recv(timeout=10).data == b"t" * (1024 * 1024)
