"""A real ``redis-server`` for the tests (and ``stress/bench.py``).

``redis-server`` runs on a free loopback port in a temporary folder, with persistence off
(``--save '' --appendonly no``); it can be stopped and started again on the same port, as a Redis
restart. The tests that need it skip, saying why, only when ``redis-server`` or the ``redis``
package is missing (in CI they fail: tests/support/components.py).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .components import require, require_module
from .sockets import free_port

SKIP_HOW = "apt-get install redis-server; .ci/run installs it: the Redis broker tests need a real server"


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``; :meth:`stop` and :meth:`start` restart it."""

    def __init__(self, folder: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError(f"redis-server is not installed ({SKIP_HOW})")
        self.executable = executable
        self.folder = Path(folder)
        self.preexec_fn = preexec_fn
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 15.0) -> None:
        argv = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )
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
    require("redis-server", SKIP_HOW)
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
