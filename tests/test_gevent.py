"""The gevent adapter: ws4py's example unmodified, one OS thread for 1,000 websockets, stop().

gevent's monkey-patching must never happen in the pytest process, so every gevent server here
runs in a child process (a small script written to the test's temporary folder), patched or not.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.autobahn import NO_COMPRESSION, assert_all_passed, run_suite
from tests.support.examples import ROOT, example_path
from tests.support.sockets import port_is_free
from tests.support.wsclient import Client, raw_request, upgrade_with_early_frame
from wsloop.messaging import BinaryMessage, TextMessage

pytest.importorskip("gevent")

MODES = ["patched", "unpatched"]

# A WSGIServer with ws4py's constructor; SIGTERM calls server.stop() (in a greenlet, as gevent
# wants). When serve_forever() returns, it reports the sockets the process still holds.
SERVER_SCRIPT = """
import sys
if sys.argv[1] == "patched":
    from gevent import monkey; monkey.patch_all()
import os, signal, threading, time
import gevent
from wsloop.websocket import EchoWebSocket
from wsloop.servers.geventserver import WSGIServer
from wsloop.servers.wsgiutils import WebSocketWSGIApplication


class Producer(EchoWebSocket):
    # At /produce: another thread (a greenlet once patched) sends 10 MiB to a client that
    # reads late; its send() must wait for the output to drain, then resume.
    def opened(self):
        if self.environ.get("PATH_INFO") == "/produce":
            threading.Thread(target=self.produce, daemon=True).start()

    def produce(self):
        start = time.monotonic()
        for i in range(40):
            self.send(bytes([i]) * 262144, binary=True)
        self.send("done %.3f" % (time.monotonic() - start))


server = WSGIServer(("127.0.0.1", 0), WebSocketWSGIApplication(handler_cls=Producer), log=None)
server.start()
print("PORT", server.server_port, flush=True)
gevent.signal_handler(signal.SIGTERM, server.stop)
server.serve_forever()
sockets = 0
for fd in os.listdir("/proc/self/fd"):
    try:
        sockets += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
    except OSError:
        pass
print("STOPPED sockets=%d websockets=%d" % (sockets, len(server.manager)), flush=True)
"""

# The CLI's way: serve() with a threading.Event set by a signal handler.
SERVE_SCRIPT = """
import sys
if sys.argv[1] == "patched":
    from gevent import monkey; monkey.patch_all()
import signal, threading
from wsloop.servers.geventserver import serve
from wsloop.websocket import EchoWebSocket

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
serve("127.0.0.1", 0, EchoWebSocket, ready=lambda url: print("READY", url, flush=True), stop=stop)
print("STOPPED", flush=True)
"""


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port``."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # exited
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A" and fields[9] in inodes:
                return True
    return False


class Script:
    """A Python script in a child process, wsloop importable; output goes to a file."""

    def __init__(self, path: Path, *args: str, log: Path, port: int | None = None, timeout: float = 20.0):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(path), *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port is not None:
                if listens_on(self.proc.pid, port):  # this process, not another one on the port
                    self.port = port
                    return
            else:
                match = re.search(r"(?:PORT |READY ws://127\.0\.0\.1:)(\d+)", self.output)
                if match:
                    self.port = int(match.group(1))
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{path.name} exited:\n{self.output}")
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{path.name} did not start:\n{self.output}")

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start(tmp_path: Path, source: str, mode: str) -> Script:
    path = tmp_path / "gevent_server.py"
    path.write_text(source)
    return Script(path, mode, log=tmp_path / f"server-{mode}.log")


def one_response(port: int, request: bytes) -> bytes:
    """Send ``request``; return the response head and its Content-Length body (keep-alive)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, data
            body += chunk
        return head + b"\r\n\r\n" + body


def more_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {count}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))  # the child inherits it


@pytest.mark.xdist_group("port-9000")  # ws4py's examples listen on the fixed port 9000
@pytest.mark.timeout(300)
def test_ws4py_example_passes_autobahn(tmp_path: Path) -> None:
    """ws4py's gevent example, unmodified (monkey-patched, 'localhost', port 9000)."""
    path = example_path("gevent_echo.py")
    if not port_is_free(9000):
        pytest.skip("port 9000, which ws4py's gevent example listens on, is busy")
    example = Script(path, log=tmp_path / "example.log", port=9000)
    try:
        cases = run_suite("ws://127.0.0.1:9000/", tmp_path / "report", *NO_COMPRESSION)
    finally:
        example.stop()
    assert_all_passed(cases)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", MODES)
def test_serve_passes_autobahn(mode: str, tmp_path: Path) -> None:
    """The CLI's entry point, with gevent's monkey-patching (as the CLI does) and without."""
    server = start(tmp_path, SERVE_SCRIPT, mode)
    try:
        cases = run_suite(f"ws://127.0.0.1:{server.port}/", tmp_path / "report", *NO_COMPRESSION)
    finally:
        code = server.stop()
    assert_all_passed(cases)
    assert code == 0, server.output
    assert "STOPPED" in server.output


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_thousand_websockets_without_a_thread_each(mode: str, tmp_path: Path) -> None:
    more_files(4096)
    server = start(tmp_path, SERVER_SCRIPT, mode)
    clients: list[Client] = []
    try:
        clients.append(Client(server.port))
        before = server.threads
        clients.extend(Client(server.port) for _ in range(999))
        for i, client in enumerate(clients):
            client.send(f"m{i}")
        for i, client in enumerate(clients):
            assert client.recv().data == f"m{i}".encode()
        after = server.threads
        # Patched: the reactor is a greenlet (the one other thread is gevent's resolver pool);
        # unpatched: the reactor is one thread beside gevent's. None per connection either way.
        assert after <= 5, f"{after} threads with 1,000 websockets"
        assert after == before, f"{before} threads with 1 websocket, {after} with 1,000"
        # gevent still answers HTTP meanwhile.
        assert raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    finally:
        for client in clients:
            client.close()
        code = server.stop()
    assert code == 0, server.output


@pytest.mark.parametrize("mode", MODES)
def test_stop_sends_1001_to_every_websocket_and_releases_every_socket(mode: str, tmp_path: Path) -> None:
    server = start(tmp_path, SERVER_SCRIPT, mode)
    try:
        clients = [Client(server.port) for _ in range(50)]
        for i, client in enumerate(clients):
            assert client.echo(f"x{i}").data == f"x{i}".encode()
        server.proc.send_signal(signal.SIGTERM)  # -> server.stop()
        for client in clients:
            assert client.recv_close().code == 1001
            client.flush()  # our close reply: the server ends the connection at once
        for client in clients:
            assert client.wait_eof()
            client.sock.close()
        assert server.proc.wait(15) == 0, server.output
    finally:
        server.stop(signal.SIGKILL)
    assert "STOPPED sockets=0 websockets=0" in server.output, server.output


@pytest.mark.parametrize("mode", MODES)
def test_exactly_one_101_then_the_frames(mode: str, tmp_path: Path) -> None:
    """The 101 the application built goes out once, as it is (no Content-Length, no chunking),
    and a frame the client pipelined with its request (already in gevent's buffer) is served."""
    server = start(tmp_path, SERVER_SCRIPT, mode)
    try:
        data = upgrade_with_early_frame(server.port, "/chat?x=1")
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        assert data.count(b"HTTP/1.1") == 1
        assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
        assert rest == b"\x81\x05early"
    finally:
        assert server.stop() == 0, server.output


@pytest.mark.parametrize("mode", MODES)
def test_backpressure_wait_from_another_thread(mode: str, tmp_path: Path) -> None:
    """A thread (a greenlet once patched) sending to a slow reader waits on the reactor's
    condition, while the reactor serves everyone else; it resumes when the reader catches up."""
    server = start(tmp_path, SERVER_SCRIPT, mode)
    try:
        slow = Client(server.port, "/produce", timeout=30)
        time.sleep(1.0)  # not reading: the producer is held near the high-water mark
        with Client(server.port) as other:
            assert other.echo("still served").data == b"still served"
        for i in range(40):
            message = slow.recv(30)
            assert isinstance(message, BinaryMessage)
            assert message.data == bytes([i]) * 262144
        done = slow.recv(30)
        assert isinstance(done, TextMessage)
        blocked = float(str(done).split()[1])
        assert blocked >= 0.5, f"the producer sent 10 MiB in {blocked} s without waiting"
        slow.close()
    finally:
        assert server.stop() == 0, server.output


@pytest.mark.parametrize("mode", MODES)
def test_serve_page_errors_and_shutdown(mode: str, tmp_path: Path) -> None:
    server = start(tmp_path, SERVE_SCRIPT, mode)
    try:
        page = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert page.startswith(b"HTTP/1.1 200") and b"<html" in page
        refused = one_response(
            server.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        assert refused.split(b" ")[1] == b"426" and b"Sec-WebSocket-Version: 13" in refused
        clients = [Client(server.port) for _ in range(5)]
        for client in clients:
            assert client.echo("hi").data == b"hi"
        server.proc.send_signal(signal.SIGTERM)  # -> stop.set()
        for client in clients:
            assert client.recv_close().code == 1001
            client.flush()
            assert client.wait_eof()
            client.close()
        assert server.proc.wait(15) == 0, server.output
    finally:
        server.stop(signal.SIGKILL)
    assert "STOPPED" in server.output


def test_patching_after_importing_wsloop_still_works(tmp_path: Path) -> None:
    """A reactor made after a late monkey-patch compares greenlet identities, not thread ones."""
    source = (
        "import wsloop.servers.geventserver as geventserver\n"
        "from gevent import monkey; monkey.patch_all()\n"
        "from wsloop.servers.wsgiutils import WebSocketWSGIApplication\n"
        "from wsloop.websocket import EchoWebSocket\n"
        "import sys\n"
        "app = WebSocketWSGIApplication(handler_cls=EchoWebSocket)\n"
        "server = geventserver.WSGIServer(('127.0.0.1', 0), app, log=None)\n"
        "server.start()\n"
        "print('PORT', server.server_port, flush=True)\n"
        "server.serve_forever()\n"
    )
    server = start(tmp_path, source, "late")
    try:
        with Client(server.port, timeout=5) as client:
            assert client.echo("late patch").data == b"late patch"
    finally:
        server.stop(signal.SIGKILL)
