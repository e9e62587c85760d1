"""ws4py's tornado client (``wsloop.client.tornadoclient.TornadoWebSocketClient``) on tornado 6's
IOLoop against real wsloop servers in child processes: ws4py's ``__main__`` example as is, the
callbacks' thread, sends and closes from another thread, wss, a refused or rejected connection,
a server that closes, ``close_connection()``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.serverproc import REPO
from tests.support.sockets import free_port
from wsloop.handshake import accept, parse_request
from wsloop.messaging import Message
from wsloop.servers.asyncioserver import WebSocketProtocol

pytest.importorskip("tornado")

from tornado.ioloop import IOLoop  # noqa: E402

from wsloop.client.tornadoclient import TornadoWebSocketClient  # noqa: E402


class Recorder(TornadoWebSocketClient):
    """Records its callbacks with the thread each ran in; ``done`` resolves at closed()."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()
        self.done = threading.Event()
        self.received = threading.Event()
        self.expect = 0  # received_message() sets `received` after this many messages

    def opened(self) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(("opened",))

    def received_message(self, message: Message) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(("message", str(message) if message.is_text else message.data))
        if len(self.messages()) >= self.expect:
            self.received.set()

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(("closed", code, reason))
        self.done.set()

    def messages(self) -> list[Any]:
        return [event[1] for event in self.events if event[0] == "message"]


async def until(event: threading.Event, timeout: float = 10.0) -> None:
    """Wait (on the running loop) until ``event`` is set."""
    async with asyncio.timeout(timeout):
        while not event.is_set():
            await asyncio.sleep(0.005)


@pytest.fixture
def loop_thread() -> Iterator[tuple[IOLoop, int]]:
    """An IOLoop running in a thread of its own: (the loop, its thread's id)."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        box["loop"] = IOLoop.current()
        box["thread"] = threading.get_ident()
        ready.set()
        box["loop"].start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["loop"], box["thread"]
    box["loop"].add_callback(box["loop"].stop)
    thread.join(10)
    box["loop"].close(all_fds=True)


def test_signature_is_ws4pys() -> None:
    ws4py_client = pytest.importorskip("ws4py.client.tornadoclient").TornadoWebSocketClient
    assert list(inspect.signature(TornadoWebSocketClient).parameters) == list(
        inspect.signature(ws4py_client).parameters
    )


# ws4py's tornadoclient.py ``__main__`` block, with wsloop's import and the server's URL.
MAIN_EXAMPLE = """
import sys
from wsloop.client.tornadoclient import TornadoWebSocketClient

if __name__ == '__main__':
    from tornado import ioloop

    class MyClient(TornadoWebSocketClient):
        def opened(self):
            def data_provider():
                for i in range(0, 200, 25):
                    yield "#" * i

            self.send(data_provider())

            for i in range(0, 200, 25):
                self.send("*" * i)

        def received_message(self, m):
            print("#%d" % len(m))
            if len(m) == 175:
                self.close()

        def closed(self, code, reason=None):
            ioloop.IOLoop.instance().stop()
            print(("Closed down", code, reason))

    ws = MyClient(sys.argv[1], protocols=['http-only', 'chat'])
    ws.connect()

    ioloop.IOLoop.instance().start()
"""


def test_ws4py_main_example(echo_url: str, tmp_path: Path) -> None:
    script = tmp_path / "tornado_example.py"
    script.write_text(MAIN_EXAMPLE)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(script), echo_url + "ws"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # The generator's fragments make one message of 700 characters; then the eight messages.
    assert done.stdout.splitlines() == ["#700"] + [f"#{i}" for i in range(0, 200, 25)] + [
        "('Closed down', 1000, b'')"
    ]


def test_callbacks_run_on_the_ioloop_and_other_threads_may_send(
    echo_url: str, loop_thread: tuple[IOLoop, int]
) -> None:
    io_loop, loop_ident = loop_thread
    ws = Recorder(echo_url, io_loop=io_loop)
    ws.expect = 3
    ws.connect()  # returns at once; the IOLoop's thread connects
    ws.send("queued before the connection is open")  # from this thread
    assert ws.run_forever(0.0) is False
    ws.send(b"\x01\x02", binary=True)
    ws.send(["frag", "ments"])
    assert ws.received.wait(10)
    assert ws.messages() == ["queued before the connection is open", b"\x01\x02", "fragments"]
    ws.close(4000, "from another thread")
    assert ws.done.wait(10)
    assert ws.events[0] == ("opened",)
    assert ws.events[-1] == ("closed", 4000, b"")  # the server's answer: our code
    assert ws.threads == {loop_ident}
    assert ws.run_forever(1.0)


def test_wss(tls_url: str, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files

    async def scenario() -> Recorder:
        ws = Recorder(tls_url, ssl_options={"ca_certs": str(cert)}, io_loop=IOLoop.current())
        ws.expect = 2
        ws.connect()
        ws.send("x" * 300_000)  # more than one TLS record each way
        ws.send("small")
        await until(ws.received)
        assert ws.peer_address[0] == "127.0.0.1" and ws.local_address[0] == "127.0.0.1"
        ws.close(1000, "tls bye")
        await until(ws.done)
        return ws

    ws = asyncio.run(scenario())
    assert ws.messages() == ["x" * 300_000, "small"]
    assert ws.events[-1] == ("closed", 1000, b"")


def test_wss_verifies_the_certificate_by_default(tls_url: str) -> None:
    async def scenario() -> Recorder:
        ws = Recorder(tls_url)
        ws.connect()
        await until(ws.done)
        return ws

    ws = asyncio.run(scenario())
    assert ws.events == [("closed", 1006, ws.events[0][2])]
    assert b"CERTIFICATE_VERIFY_FAILED" in ws.events[0][2]

    async def unverified() -> Recorder:
        ws = Recorder(tls_url, ssl_options={"cert_reqs": ssl.CERT_NONE})
        ws.expect = 1
        ws.connect()
        ws.send("unverified")
        await until(ws.received)
        ws.close()
        await until(ws.done)
        return ws

    assert asyncio.run(unverified()).messages() == ["unverified"]


def test_refused_connection_calls_closed_on_the_ioloop() -> None:
    async def scenario() -> Recorder:
        ws = Recorder(f"ws://127.0.0.1:{free_port()}/")
        ws.connect()  # does not raise: the failure comes as closed()
        assert ws.events == []
        await until(ws.done)
        return ws

    ws = asyncio.run(scenario())
    # ws4py: closed(1005, 'Connection refused'); 1006 is the code for a connection that ended
    # without a close frame (RFC 6455 7.4.1).
    assert ws.events == [("closed", 1006, b"Connection refused")]
    assert ws.terminated


def test_handshake_rejected_by_the_server(echo_url: str) -> None:
    async def scenario() -> Recorder:
        ws = Recorder(echo_url, headers=[("Sec-WebSocket-Version", "8")])  # answered 426
        ws.connect()
        await until(ws.done)
        return ws

    ws = asyncio.run(scenario())
    assert len(ws.events) == 1
    assert ws.events[0][:2] == ("closed", 1006) and ws.events[0][2].startswith(b"handshake failed")


class RawServer(asyncio.Protocol):
    """Reads a request; with ``answer``, sends the 101 and closes at once (no close frame)."""

    answer = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data
        parsed = parse_request(self.data)
        if parsed is not None and self.answer:
            self.transport.write(accept(parsed[0], None, None).response)  # type: ignore[attr-defined]
            self.transport.close()


def test_handshake_timeout() -> None:
    async def scenario() -> Recorder:
        server = await asyncio.get_running_loop().create_server(RawServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ws = Recorder(f"ws://127.0.0.1:{port}/")
        ws.handshake_timeout = 0.3
        ws.connect()
        await until(ws.done)
        server.close()
        return ws

    ws = asyncio.run(scenario())
    assert ws.events == [("closed", 1006, b"handshake failed: no WebSocket connection within 0.3s")]


def test_server_drops_the_connection() -> None:
    class Dropper(RawServer):
        answer = True

    async def scenario() -> Recorder:
        server = await asyncio.get_running_loop().create_server(Dropper, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ws = Recorder(f"ws://127.0.0.1:{port}/")
        ws.connect()
        await until(ws.done)
        server.close()
        return ws

    ws = asyncio.run(scenario())
    assert ws.events == [("opened",), ("closed", 1006, b"")]


def test_server_closes(closer_url: str) -> None:
    async def scenario() -> Recorder:
        ws = Recorder(closer_url)
        ws.connect()
        ws.send("one")
        ws.send("close")
        await until(ws.done)
        return ws

    ws = asyncio.run(scenario())
    assert ws.events == [("opened",), ("message", "one"), ("closed", 1000, b"bye")]


def test_close_connection(echo_url: str) -> None:
    async def scenario() -> Recorder:
        ws = Recorder(echo_url)
        ws.expect = 1
        ws.connect()
        ws.send("ping")
        await until(ws.received)
        with pytest.raises(RuntimeError):
            ws.run_forever(1)  # on the IOLoop's thread: it would never return
        ws.close_connection()
        await until(ws.done)
        return ws

    ws = asyncio.run(scenario())
    assert ws.events == [("opened",), ("message", "ping"), ("closed", 1006, b"")]


def test_close_connection_before_the_connection_is_made(echo_url: str) -> None:
    async def scenario() -> Recorder:
        ws = Recorder(echo_url)
        ws.connect()
        ws.close_connection()  # before the IOLoop even started connecting
        await until(ws.done)
        await asyncio.sleep(0.2)  # nothing follows
        return ws

    ws = asyncio.run(scenario())
    assert [event[:2] for event in ws.events] == [("closed", 1006)]


def test_unix_socket(tmp_path: Path) -> None:
    """ws+unix:// against wsloop's asyncio server on a Unix socket, on the same loop."""
    path = str(tmp_path / "ws.sock")

    async def scenario() -> Recorder:
        server = await asyncio.get_running_loop().create_unix_server(WebSocketProtocol, path)
        ws = Recorder(f"ws+unix://{path}")
        ws.expect = 1
        ws.connect()
        ws.send("over unix")
        await until(ws.received)
        ws.close()
        await until(ws.done)
        server.close()
        return ws

    ws = asyncio.run(scenario())
    assert ws.events == [("opened",), ("message", "over unix"), ("closed", 1000, b"")]


def test_connect_twice_is_an_error(echo_url: str) -> None:
    async def scenario() -> None:
        ws = Recorder(echo_url)
        ws.connect()
        with pytest.raises(RuntimeError):
            ws.connect()
        ws.close_connection()
        await until(ws.done)

    asyncio.run(scenario())
