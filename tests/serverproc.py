"""Run ``python -m wsloop serve`` as a child process for the tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

#: Every server flavour, by name: the CLI arguments that select it.
FLAVOURS = {
    "standalone": ("--server", "standalone"),
    "threaded": ("--server", "standalone", "--poller", "threaded"),
    "cherrypy": ("--server", "cherrypy"),
    "gevent": ("--server", "gevent"),
    "wsgiref": ("--server", "wsgiref"),
    "asyncio": ("--server", "asyncio"),
}


class ServerProcess:
    """``python -m wsloop serve --port 0 ARGS``; ``port`` is read from its start-up log line."""

    def __init__(self, *args: str, timeout: float = 15.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsloop", "serve", "--port", "0", "--log-level", "INFO", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited during start-up:\n" + "".join(self.lines))
            self.lines.append(line)
            match = re.search(r"(wss?)://127\.0\.0\.1:(\d+)/", line)
            if match:
                self.port = int(match.group(2))
                self.url = f"{match.group(1)}://127.0.0.1:{self.port}/"
                return
        self.proc.kill()
        raise RuntimeError("server did not start:\n" + "".join(self.lines))

    signalled = False

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        """Ask the server to stop (once: a second signal is a user insisting)."""
        if not self.signalled and self.proc.poll() is None:
            self.signalled = True
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal (unless done already) and return the exit code (killed past ``timeout``)."""
        self.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._collect_output()
        return code

    def _collect_output(self) -> None:
        """Once the process has ended: the rest of its output into ``lines``."""
        assert self.proc.stdout is not None
        self.lines.extend(self.proc.stdout.readlines())
        self.proc.stdout.close()

    @property
    def output(self) -> str:
        return "".join(self.lines)
