"""``python -m wsloop client URL``: an interactive client for trying a server, as
``python -m websockets URL`` is: each line typed is sent as a text message, each message
received is shown as ``< text`` above the line being typed, Ctrl-D or Ctrl-C closes with 1000.
"""

from __future__ import annotations

import itertools
import ssl
import sys
import threading
from typing import Any, TextIO

from ..exc import WebSocketException
from ..messaging import Message
from . import WebSocketClient

__all__ = ["run_client", "describe_close", "escape"]

# Control characters (0-31, 127-159) shown escaped, so a message cannot drive the terminal.
_CONTROLS = itertools.chain(range(32), range(127, 160))
_TERMINAL_ESCAPES = str.maketrans({i: repr(chr(i))[1:-1] for i in _CONTROLS})

#: Binary messages are shown as their length and at most this many bytes in hex.
BINARY_SHOWN = 32

_CLOSE_NAMES = {
    1000: "OK",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received",
    1006: "connection closed abnormally",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1010: "extension required",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS failure",
}


def escape(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``...)."""
    return text.translate(_TERMINAL_ESCAPES)


def describe_close(code: int, reason: bytes | str | None) -> str:
    """``"1001 (Server is shutting down)"``; without a reason, the code's name: ``"1000 (OK)"``."""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return f"{code} ({escape(reason) if reason else _CLOSE_NAMES.get(code, 'unknown')})"


def describe_message(message: Message) -> str:
    if not message.is_binary:
        return "< " + escape(str(message))
    data = bytes(message.data)
    more = "..." if len(data) > BINARY_SHOWN else ""
    return f"< (binary, {len(data)} bytes) {data[:BINARY_SHOWN].hex(' ')}{more}"


class _Console:
    """Writes to the terminal from the reactor's thread and the reading one without garbling
    the line being typed: on a terminal, a received message goes in a line inserted above it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self.lock:
            self.out.write(text)
            self.out.flush()

    def prompt(self) -> None:
        if self.tty:
            self._write("> ")

    def above_input(self, line: str) -> None:
        if not self.tty:
            self._write(line + "\n")
            return
        # Save the cursor, open a line above the one being typed, write there, restore.
        self._write(f"\0337\n\033[A\033[L{line}\n\0338\033[B")

    def over_input(self, line: str) -> None:
        """Replace the line being typed (the prompt) with ``line``."""
        self._write(f"\r\033[K{line}\n" if self.tty else line + "\n")


class _InteractiveClient(WebSocketClient):
    def __init__(self, url: str, console: _Console, wake: threading.Event, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.console = console
        self.wake = wake
        self.is_open = threading.Event()
        self.close_text = ""

    def opened(self) -> None:
        self.console.over_input(f"Connected to {self.url}.")
        self.is_open.set()

    def received_message(self, message: Message) -> None:
        self.console.above_input(describe_message(message))

    def closed(self, code: int, reason: bytes | None = None) -> None:
        self.close_text = describe_close(code, reason)
        self.is_open.set()
        self.wake.set()


def _read_lines(stdin: TextIO, ws: WebSocketClient, console: _Console, wake: threading.Event) -> None:
    """(A daemon thread: a blocking read must not keep Ctrl-C from the main thread.) Send each
    line read; at the end of the input, wake the main thread."""
    try:
        while not ws.terminated:
            console.prompt()
            line = stdin.readline()
            if not line:
                break
            ws.send(line.rstrip("\r\n"))
    except (OSError, ValueError, WebSocketException):  # closed meanwhile
        pass
    finally:
        wake.set()


def _ssl_options(url: str, ca_file: str | None, insecure: bool) -> dict[str, Any] | None:
    if not url.startswith("wss:"):
        return None
    if insecure:
        return {"cert_reqs": ssl.CERT_NONE}
    return {"ca_certs": ca_file} if ca_file else None


def run_client(
    url: str,
    *,
    ca_file: str | None = None,
    insecure: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Connect to ``url`` and run the session (see the module's docstring) until the input ends,
    Ctrl-C, or the server closes; 0, or 1 if the connection could not be made. ``wss://``:
    ``ca_file`` trusts these CAs; ``insecure`` checks no certificate (a self-signed test server)."""
    console = _Console(stdout if stdout is not None else sys.stdout)
    wake = threading.Event()
    ws = _InteractiveClient(url, console, wake, ssl_options=_ssl_options(url, ca_file, insecure))
    try:
        try:
            ws.connect()
        except (OSError, ValueError, WebSocketException) as exc:  # refused, TLS, a handshake error...
            console.over_input(f"Failed to connect to {url}: {exc}.")
            return 1
        ws.is_open.wait(ws.handshake_timeout)  # "Connected to" comes first
        reader = threading.Thread(
            target=_read_lines,
            args=(stdin if stdin is not None else sys.stdin, ws, console, wake),
            name="wsloop-client-input",
            daemon=True,
        )
        reader.start()
        while not wake.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    try:
        if not ws.terminated:
            ws.close(1000)
        ws.run_forever(ws.close_timeout + 1.0)
    except KeyboardInterrupt:  # a second Ctrl-C: leave without waiting for the server
        pass
    console.over_input(f"Connection closed: {ws.close_text or describe_close(1006, '')}.")
    return 0
