"""``python -m wsloop client URL`` run in a real pseudo-terminal (and, for what the screen shows,
in tmux) against real servers; ``python -m wsloop --version``."""

from __future__ import annotations

import os
import pty
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import wsloop
from tests.support.serverproc import REPO, ServerProcess
from wsloop.messaging import Message
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket


class Terminal:
    """``python -m wsloop client ARGS`` with a pseudo-terminal as its controlling terminal:
    what it writes is read from the master side, keys are written to it (Ctrl-C there is a
    SIGINT from the terminal, as for a user)."""

    def __init__(self, *args: str) -> None:
        argv = [sys.executable, "-m", "wsloop", "client", *args]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal is its stdin, stdout, stderr
            try:
                os.chdir(REPO)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.output = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def _read(self, timeout: float) -> bool:
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child has exited and closed the terminal
            chunk = b""
        self.output += chunk
        return bool(chunk)

    def expect(self, pattern: str | bytes, timeout: float = 15.0) -> None:
        """Read until ``pattern`` (a regex) appears in the output."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while not regex.search(self.output):
            left = deadline - time.monotonic()
            assert left > 0 and self._read(min(left, 0.2)), f"no {pattern!r} in {self.output!r}"

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float = 15.0) -> int:
        """The exit code, reading the output meanwhile (at most ``timeout``; then SIGKILL)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.05):
                    pass
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            self._read(0.05)
        self.close()
        raise AssertionError(f"the client did not exit: {self.output!r}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.status = -9
        os.close(self.fd)


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def make(*args: str) -> Terminal:
        made.append(Terminal(*args))
        return made[-1]

    yield make
    for terminal in made:
        terminal.close()


class Recording(WebSocket):
    """Records what the client sends and how it closes; the test talks to the client through
    :attr:`connected`."""

    received: queue.Queue[Message]
    closes: queue.Queue[tuple[int, bytes | None]]
    connected: queue.Queue[Recording]

    def opened(self) -> None:
        self.connected.put(self)

    def received_message(self, message: Message) -> None:
        self.received.put(message)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.closes.put((code, reason))


@pytest.fixture
def recording(make_server: Callable[..., WebSocketServer]) -> tuple[type[Recording], WebSocketServer]:
    class Handler(Recording):
        received = queue.Queue()
        closes = queue.Queue()
        connected = queue.Queue()

    return Handler, make_server(handler_cls=Handler)


def test_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsloop", "--version"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wsloop {wsloop.__version__}\n"
    # The one source of the version: the package's metadata reads it from wsloop.__version__.
    assert "version = attr: wsloop.__version__" in (REPO / "setup.cfg").read_text()


def test_lines_come_back_and_a_server_close_is_shown(terminals: Callable[..., Terminal]) -> None:
    server = ServerProcess()  # python -m wsloop serve: an echo server
    try:
        term = terminals(server.url)
        term.expect(rf"Connected to {re.escape(server.url)}\.")
        term.type(b"hello there\n")
        term.expect(r"< hello there")
        term.type("caf\u00e9 \u2603\n".encode())
        term.expect("< caf\u00e9 \u2603")
        server.send_signal(signal.SIGTERM)
        term.expect(r"Connection closed: 1001 \(Server is shutting down\)\.")
        assert term.wait() == 0
    finally:
        assert server.stop() == 0, server.output


def test_ctrl_d_closes_with_1000(
    terminals: Callable[..., Terminal], recording: tuple[type[Recording], WebSocketServer]
) -> None:
    handler, server = recording
    term = terminals(server.url)
    term.expect(r"Connected to ")
    term.type(b"first\n")
    assert str(handler.received.get(timeout=10)) == "first"
    term.type(b"\x04")  # Ctrl-D at the start of a line: the end of the input
    assert handler.closes.get(timeout=10)[0] == 1000
    term.expect(r"Connection closed: 1000 \(OK\)\.")
    assert term.wait() == 0


def test_ctrl_c_closes_with_1000(
    terminals: Callable[..., Terminal], recording: tuple[type[Recording], WebSocketServer]
) -> None:
    handler, server = recording
    term = terminals(server.url)
    term.expect(r"Connected to ")
    handler.connected.get(timeout=10)
    term.type(b"half a li")
    term.type(b"\x03")  # the terminal sends SIGINT
    assert handler.closes.get(timeout=10)[0] == 1000
    term.expect(r"Connection closed: 1000 \(OK\)\.")
    assert term.wait() == 0
    assert b"Traceback" not in term.output
    assert handler.received.empty()  # the unfinished line was not sent


def test_incoming_messages_do_not_garble_the_line_being_typed(
    terminals: Callable[..., Terminal], recording: tuple[type[Recording], WebSocketServer]
) -> None:
    handler, server = recording
    term = terminals(server.url)
    term.expect(r"Connected to ")
    ws = handler.connected.get(timeout=10)
    term.expect(r"> ")
    term.type(b"par")
    term.expect(r"par")
    ws.send("news\x1b[2J")  # with an escape sequence that must not reach the terminal as one
    # Written in a line inserted above the one being typed (cursor saved, then restored).
    term.expect(rb"\x1b7\r?\n\x1b\[A\x1b\[L< news\\x1b\[2J\r?\n\x1b8\x1b\[B")
    ws.send(b"\x00\x01binary\xff", binary=True)
    term.expect(r"< \(binary, 9 bytes\) 00 01 62 69 6e 61 72 79 ff\r?\n")
    ws.send(bytes(range(100)), binary=True)
    term.expect(r"< \(binary, 100 bytes\) 00 01 .* 1e 1f\.\.\.\r?\n")
    term.type(b"tial\n")  # the terminal's line still holds "par"
    assert str(handler.received.get(timeout=10)) == "partial"
    term.type(b"\x04")
    assert handler.closes.get(timeout=10)[0] == 1000
    assert term.wait() == 0


def test_screen_in_tmux(recording: tuple[type[Recording], WebSocketServer], tmp_path: Path) -> None:
    """What a user sees: the message above the prompt, the half-typed line intact below it."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    handler, server = recording
    base = [tmux, "-S", str(tmp_path / "tmux.sock")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = f"{sys.executable} -m wsloop client {server.url}; sleep 60"
    session = [*base, "new-session", "-d", "-x", "80", "-y", "12", command]
    subprocess.run(session, check=True, env=env, cwd=REPO)

    def screen() -> list[str]:
        out = subprocess.run([*base, "capture-pane", "-p"], capture_output=True, text=True, check=True)
        return [line.rstrip() for line in out.stdout.splitlines() if line.strip()]

    def wait_screen(expected: list[str]) -> None:
        deadline = time.monotonic() + 15
        while screen() != expected:
            assert time.monotonic() < deadline, screen()
            time.sleep(0.05)

    try:
        ws = handler.connected.get(timeout=15)
        wait_screen([f"Connected to {server.url}.", ">"])
        subprocess.run([*base, "send-keys", "-l", "hello wor"], check=True)
        wait_screen([f"Connected to {server.url}.", "> hello wor"])
        ws.send("greetings")
        wait_screen([f"Connected to {server.url}.", "< greetings", "> hello wor"])
        subprocess.run([*base, "send-keys", "-l", "ld"], check=True)
        subprocess.run([*base, "send-keys", "Enter"], check=True)
        assert str(handler.received.get(timeout=10)) == "hello world"
        ws.send("hello world")
        wait_screen([f"Connected to {server.url}.", "< greetings", "> hello world", "< hello world", ">"])
        subprocess.run([*base, "send-keys", "C-d"], check=True)
        assert handler.closes.get(timeout=10)[0] == 1000
        wait_screen(
            [
                f"Connected to {server.url}.",
                "< greetings",
                "> hello world",
                "< hello world",
                "Connection closed: 1000 (OK).",
            ]
        )
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True)


def test_wss_with_a_ca_file_or_insecure(
    terminals: Callable[..., Terminal], tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server = ServerProcess("--certfile", str(cert), "--keyfile", str(key))
    try:
        assert server.url.startswith("wss://")
        for args in (["--ca-file", str(cert)], ["--insecure"]):
            term = terminals(server.url, *args)
            term.expect(r"Connected to wss://")
            term.type(b"over tls\n")
            term.expect(r"< over tls")
            term.type(b"\x04")
            term.expect(r"Connection closed: 1000 \(OK\)\.")
            assert term.wait() == 0
        term = terminals(server.url)  # the system's CAs: the self-signed certificate is refused
        term.expect(r"Failed to connect to wss://.*CERTIFICATE_VERIFY_FAILED")
        assert term.wait() == 1
    finally:
        assert server.stop() == 0, server.output


def test_connection_refused(terminals: Callable[..., Terminal]) -> None:
    with socket_port() as port:
        term = terminals(f"ws://127.0.0.1:{port}/")
        term.expect(r"Failed to connect to ws://127\.0\.0\.1:\d+/: .*\.")
        assert term.wait() == 1


class socket_port:
    """A port nothing listens on (bound, not listening, while in use)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
