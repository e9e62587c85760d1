"""Run ws4py's documented examples (``../shared/examples``, imports changed to wsloop) unmodified."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(os.environ.get("WSLOOP_EXAMPLES", ROOT.parent / "shared" / "examples"))


def example_path(name: str) -> Path:
    path = EXAMPLES / name
    if not path.exists():
        message = f"{path} is not here (the examples live in the shared folder beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run ws4py's examples, not skip them
        pytest.skip(message)
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ExampleProcess:
    """An example script running as it is, with wsloop importable; waits until ``port`` accepts."""

    def __init__(self, name: str, port: int, timeout: float = 20.0) -> None:
        path = example_path(name)
        if not port_is_free(port):
            pytest.skip(f"port {port}, which the example {name} uses, is busy")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        # A file, not a pipe: an example that logs every request would fill a pipe nobody reads.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(path)], cwd=ROOT, env=env, stdout=self.log, stderr=self.log
        )
        self.port = port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} did not listen on {port}")

    def stop(self, sig: int = 15, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")
