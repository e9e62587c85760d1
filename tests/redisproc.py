"""A real ``redis-server`` for the tests, and a server process whose log is read as it comes.

``redis-server`` runs on a free loopback port in a temporary folder, with persistence off
(``--save '' --appendonly no``); it can be stopped and started again on the same port, as a Redis
restart. The tests that need it skip, saying why, only when ``redis-server`` or the ``redis``
package is missing (in CI they fail: tests/components.py).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .components import require, require_module
from .serverproc import ServerProcess

SKIP_HOW = "apt-get install redis-server; .ci/run installs it: the Redis broker tests need a real server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``; :meth:`stop` and :meth:`start` restart it."""

    def __init__(self, folder: Path) -> None:
        self.executable = require("redis-server", SKIP_HOW)
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 15.0) -> None:
        argv = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.folder / 'redis.log').read_text()[-500:]}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def redis_fixture(tmp_path: Path) -> Iterator[RedisServer]:
    """The body of a ``redis_server`` fixture: a server for one test, stopped after it."""
    require_module("redis")
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def numsub(redis_url: str, channel: str) -> int:
    """How many connections are subscribed to ``channel`` (PUBSUB NUMSUB)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return int(client.pubsub_numsub(channel)[0][1])
    finally:
        client.close()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.02)


class LoggedServer(ServerProcess):
    """A :class:`ServerProcess` whose output keeps being read (by a thread) into ``lines``."""

    def __init__(self, *args: str, timeout: float = 30.0) -> None:
        super().__init__(*args, timeout=timeout)
        self._start_reader()

    @classmethod
    def command(cls, argv: list[str], cwd: Path | None = None) -> LoggedServer:
        """Any command, its output read from the start (no URL is waited for)."""
        self = cls.__new__(cls)
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines = []
        self._start_reader()
        return self

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def matches(self, pattern: str, after: int = 0) -> list[re.Match[str]]:
        """Every match of ``pattern`` in the lines from index ``after`` on (so far)."""
        regex = re.compile(pattern)
        return [m for m in (regex.search(line) for line in self.lines[after:]) if m]

    def wait_for_line(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` on matching ``pattern`` (waited for, bounded)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[after:]:
                found = regex.search(line)
                if found:
                    return found
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"no log line matching {pattern!r}:\n{self.output}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        return super().stop(sig, timeout)

    def _collect_output(self) -> None:
        self._reader.join(5.0)  # the reader thread has read the rest into lines
        assert self.proc.stdout is not None
        self.proc.stdout.close()
