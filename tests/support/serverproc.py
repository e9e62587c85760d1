"""A server in a child process, for the tests and the stress scripts alike.

:class:`ServerProcess` runs ``python -m wsloop serve --port 0 ARGS`` (or any command line), sends
its output to a temporary file, knows its port once a pattern appears in that output (or once a
given port accepts TCP) and stops it with SIGTERM, then SIGKILL. :data:`FLAVOURS` names the CLI
arguments of every server flavour.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

#: Every server flavour, by name: the CLI arguments that select it.
FLAVOURS = {
    "standalone": ("--server", "standalone"),
    "threaded": ("--server", "standalone", "--poller", "threaded"),
    "cherrypy": ("--server", "cherrypy"),
    "gevent": ("--server", "gevent"),
    "wsgiref": ("--server", "wsgiref"),
    "asyncio": ("--server", "asyncio"),
}

#: The repository (the children's working directory).
REPO = Path(__file__).resolve().parents[2]

#: What ``python -m wsloop serve`` logs once it listens (``port``, and ``scheme`` for :attr:`url`).
URL_PATTERN = r"(?P<scheme>wss?)://127\.0\.0\.1:(?P<port>\d+)/"


class ServerProcess:
    """A server in a child process; its stdout and stderr go to :attr:`log` (a file: a pipe
    nobody reads would stall a chatty server).

    ``ServerProcess(*args)`` runs ``python -m wsloop serve --port 0 --log-level INFO *args``;
    ``argv=`` runs any command instead. The server is ready once ``ready`` (a regex, multi-line
    if given as a string, whose group
    ``port``, or else group 1, is the port) appears in its output or, with ``ready=None`` and a
    ``port``, once 127.0.0.1:port accepts TCP. With ``timeout`` the constructor waits that long
    and raises RuntimeError if the server does not become ready; with ``timeout=None`` the caller
    calls :meth:`wait_ready`.
    """

    signalled = False

    def __init__(
        self,
        *args: str,
        argv: Sequence[str] | None = None,
        ready: str | re.Pattern[str] | None = URL_PATTERN,
        port: int = 0,
        timeout: float | None = 15.0,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        if argv is None:
            argv = [sys.executable, "-m", "wsloop", "serve", "--port", "0", "--log-level", "INFO", *args]
        self.argv = list(argv)
        self.ready = re.compile(ready, re.MULTILINE) if isinstance(ready, str) else ready
        self.port = port
        self.url = ""
        self.stop_timeout = stop_timeout
        self.log: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"),
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
        self.exit_code: int | None = None
        self.stop_seconds = 0.0
        self.killed = False
        self.died = False  # exited before it was asked to stop
        if timeout is not None and not self.wait_ready(timeout):
            how = "exited during start-up" if not self.alive() else "did not start"
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server {how}:\n{self.output}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, seconds: float) -> bool:
        """Wait (at most ``seconds``) until the server is ready; False if it is not, or exited."""
        deadline = time.monotonic() + seconds
        while True:
            if self.ready is not None:
                found = self.ready.search(self.output)
                if found:
                    groups = found.groupdict()
                    self.port = int(groups.get("port") or found.group(1))
                    if groups.get("scheme"):
                        self.url = f"{groups['scheme']}://127.0.0.1:{self.port}/"
                    return True
            elif not self.port:
                return True  # nothing to wait for
            else:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return True
                except OSError:
                    pass
            if not self.alive() or time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        """Ask the server to stop (once: a second signal is a user insisting)."""
        if not self.signalled and self.alive():
            self.signalled = True
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Signal (unless done already), wait up to ``timeout`` (:attr:`stop_timeout`), then
        SIGKILL; the exit code. :attr:`died`, :attr:`killed`, :attr:`stop_seconds` say how."""
        start = time.monotonic()
        self.died = not self.alive() and not self.signalled
        self.send_signal(sig)
        try:
            code = self.proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.proc.kill()
            code = self.proc.wait()
        self.stop_seconds = time.monotonic() - start
        self.exit_code = code
        return code

    # -- the output
    def log_bytes(self) -> bytes:
        """The output so far, read without moving the file offset the child writes at."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0)

    @property
    def output(self) -> str:
        return self.log_bytes().decode("utf-8", "replace")

    @property
    def lines(self) -> list[str]:
        """The output so far, line by line (each with its newline)."""
        return self.output.splitlines(keepends=True)

    def output_tail(self, lines: int = 15) -> list[str]:
        return self.output.splitlines()[-lines:]

    def output_lines(self) -> int:
        return len(self.log_bytes().splitlines())

    def matches(self, pattern: str, after: int = 0) -> list[re.Match[str]]:
        """Every match of ``pattern`` in the lines from index ``after`` on (so far)."""
        regex = re.compile(pattern)
        return [m for m in (regex.search(line) for line in self.lines[after:]) if m]

    def wait_for_line(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` on matching ``pattern`` (waited for, bounded)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            exited = not self.alive()  # before reading: a line written just before exiting counts
            for line in self.lines[after:]:
                found = regex.search(line)
                if found:
                    return found
            if exited or time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}:\n{self.output}")
            time.sleep(0.02)

    # -- the process
    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def settled_fds(self) -> int:
        """The fewest open fds over 0.3 s: without the connection CherryPy's start-up makes to
        check its port is open, which the server may not have noticed closing yet."""
        counts = []
        for _ in range(10):
            counts.append(self.fds())
            time.sleep(0.03)
        return min(counts)


class LoggedServer(ServerProcess):
    """A :class:`ServerProcess` with the longer waits of multi-process servers (workers, a
    broker): 30 s to start, 20 s to stop."""

    def __init__(self, *args: str, timeout: float | None = 30.0, **options: object) -> None:
        options.setdefault("stop_timeout", 20.0)
        super().__init__(*args, timeout=timeout, **options)  # type: ignore[arg-type]

    @classmethod
    def command(cls, argv: list[str], cwd: str | os.PathLike[str] | None = None) -> LoggedServer:
        """Any command, its output kept from the start (no URL is waited for)."""
        return cls(argv=argv, ready=None, cwd=cwd)


class Child(ServerProcess):
    """``python ARGV`` (a script or ``-m module``) run from the repository with ``env`` added to
    this process's environment; ready once ``pattern`` (group 1: the port) appears in its output."""

    def __init__(
        self,
        *argv: str,
        pattern: str | re.Pattern[str] = URL_PATTERN,
        timeout: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            argv=[sys.executable, *argv],
            ready=pattern,
            timeout=timeout,
            env=dict(os.environ, **(env or {})),
            cwd=REPO,
            stop_timeout=20.0,
        )

    def wait_for(self, line: str, count: int = 1, timeout: float = 15.0) -> None:
        """Wait until the child has printed ``line`` ``count`` times."""
        deadline = time.monotonic() + timeout
        while sum(x.strip() == line for x in self.lines) < count:
            assert time.monotonic() < deadline, f"no {line!r} (x{count}) in:\n{self.output}"
            time.sleep(0.02)

    def threads(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
