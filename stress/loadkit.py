"""Shared pieces of the stress scripts (``conns.py``, ``memory.py``, ``chaos.py``, ``bench.py``).

Command-line options, ``RLIMIT_NOFILE`` raising and ``/proc/PID`` readers, a parser for server
frames, and :class:`LoadGenerator`: many non-blocking client connections on one ``selectors`` loop
(handshake, one echoed message each, closing handshake). Importing it puts the repository root on
``sys.path``, so the scripts (run as ``python stress/<script>.py``) also get ``tests.support``'s
:class:`ServerProcess` and :func:`free_port`, re-exported here.
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsloop.exc import HandshakeError
from wsloop.framing import (
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    build_frame,
    encode_close_payload,
)
from wsloop.handshake import Response, client_request, new_key, parse_response, validate_response

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))  # after this folder: the stress scripts import tests.support

from tests.support.serverproc import ServerProcess as ServerProcess  # noqa: E402
from tests.support.sockets import free_port as free_port  # noqa: E402

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
FD_HEADROOM = 100  # descriptors beyond one per connection (selector, pipes, server's listener...)
READ_SIZE = 65536
IDLE_SECONDS = 1.0
CLOSE_SECONDS = 5.0
STOP_SECONDS = 10.0
READY_SECONDS = 15.0

# Connection states.
NEW = "new"
CONNECTING = "connecting"
HANDSHAKE = "handshake"
OPEN = "open"
ECHOING = "echoing"
ECHOED = "echoed"
CLOSING = "closing"
CLOSED = "closed"
FAILED = "failed"


class ProtocolError(Exception):
    """The server sent something this client did not expect."""


# ---------------------------------------------------------------------------- helpers


def load_argument_parser(
    description: str,
    *,
    connections: int,
    connections_help: str,
    timeout: float,
    message_size: int,
    message_help: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """A parser with ``--connections``, then whatever ``extra`` adds, then ``--timeout``,
    ``--message-size`` and ``--in-flight``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--connections", type=int, default=connections, help=f"{connections_help} ({connections})"
    )
    if extra is not None:
        extra(parser)
    parser.add_argument(
        "--timeout", type=float, default=timeout, help=f"overall bound in seconds ({timeout:g})"
    )
    parser.add_argument(
        "--message-size", type=int, default=message_size, help=f"{message_help} ({message_size})"
    )
    parser.add_argument("--in-flight", type=int, default=256, help="connects/handshakes at once (256)")
    return parser


def check_load_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject (``parser.error``) out-of-range ``--connections``, ``--timeout``, ``--in-flight``."""
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.in_flight < 1:
        parser.error("--in-flight must be at least 1")


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict (empty if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    status = {}
    for line in lines:
        name, _, value = line.partition(":")
        status[name] = value.strip()
    return status


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of a process in KiB (None if it is gone)."""
    value = proc_status(pid).get("VmRSS")
    return int(value.split()[0]) if value else None


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {os.strerror(exc.errno)}"
    return f"{type(exc).__name__}: {exc}"


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the callers' cleanup: sockets closed, server stopped


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(128 + SIGTERM)`` so ``finally`` blocks still run."""
    signal.signal(signal.SIGTERM, _terminated)


def parse_frame(buf: bytearray, rsv1: bool = False) -> tuple[int, bool, bool, bytes, int] | None:
    """One unmasked server frame at the start of ``buf``: ``(opcode, fin, rsv1, payload, length)``,
    or ``None`` while incomplete. RSV1 is accepted only with ``rsv1`` (an extension was offered);
    RSV2/RSV3 never."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b1 & 0x80:
        raise ProtocolError("server frame is masked")
    if not rsv1 and b0 & 0x70:
        raise ProtocolError("server frame has RSV bits set")
    if b0 & 0x30:
        raise ProtocolError("server frame has RSV2/RSV3 set")
    length = b1 & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, pos = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, pos = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < pos + length:
        return None
    return b0 & 0x0F, bool(b0 & 0x80), bool(b0 & 0x40), bytes(buf[pos : pos + length]), pos + length


# ---------------------------------------------------------------------------- the server


def open_fds(pid: int) -> int | None:
    """How many file descriptors a process has open (None if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# ---------------------------------------------------------------------------- the clients


@dataclass(slots=True, eq=False)
class Conn:
    """One client connection; subclass it for per-connection extension state."""

    index: int
    sock: socket.socket
    key: str
    state: str = NEW
    events: int = 0
    out: bytes = b""
    inbuf: bytearray = field(default_factory=bytearray)
    fragments: list[bytes] = field(default_factory=list)
    expected: bytes = b""
    negotiated: bool = False  # an extension using RSV1 was agreed (set by on_handshake)
    compressed: bool = False  # the message being received has RSV1
    close_received: bool = False
    error: str = ""


class LoadGenerator:
    """Every client connection, driven by one ``selectors`` loop in this thread.

    ``extensions`` are offered in every handshake (and RSV1 is then accepted on a first frame of a
    connection whose :meth:`on_handshake` set ``negotiated``); ``conn_type`` is the :class:`Conn`
    class to make. With ``strict_close`` a server that closes TCP without a close frame during the
    closing handshake is counted in :attr:`errors`.
    """

    def __init__(
        self,
        address: tuple[Any, ...],
        family: int,
        host: str,
        path: str,
        alive: Callable[[], bool],
        *,
        extensions: Sequence[str] | None = None,
        conn_type: type[Conn] = Conn,
        strict_close: bool = True,
    ) -> None:
        self.address = address
        self.family = family
        self.host = host
        self.path = path
        self.alive = alive
        self.offer = list(extensions) if extensions else None
        self.conn_type = conn_type
        self.strict_close = strict_close
        self.selector = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.waiting: frozenset[str] = frozenset()
        self.pending = 0  # connections in a state of self.waiting
        self.errors: collections.Counter[str] = collections.Counter()
        self.abort_reason = ""

    # -- hooks
    def on_handshake(self, c: Conn, response: Response) -> None:
        """Called once the 101 is validated; set ``c.negotiated`` if RSV1 may follow."""

    def message_frame(self, c: Conn, payload: bytes) -> bytes:
        """The masked frame that sends ``payload`` on ``c``."""
        return build_frame(OPCODE_TEXT, payload, masked=True)

    def received_message(self, c: Conn, message: bytes) -> bytes:
        """A whole received message (``c.compressed``: its first frame had RSV1), decoded."""
        return message

    # -- state bookkeeping
    def _set_state(self, c: Conn, state: str) -> None:
        was, now = c.state in self.waiting, state in self.waiting
        self.pending += int(now) - int(was)
        c.state = state

    def _wait_for(self, *states: str) -> None:
        self.waiting = frozenset(states)
        self.pending = sum(1 for c in self.conns if c.state in self.waiting)
        self.abort_reason = ""

    def count(self, *states: str) -> int:
        return sum(1 for c in self.conns if c.state in states)

    def _fail(self, c: Conn, reason: str) -> None:
        self.errors[f"{reason} (while {c.state})"] += 1
        c.error = reason
        self._drop(c)
        self._set_state(c, FAILED)

    def _drop(self, c: Conn) -> None:
        if c.events:
            try:
                self.selector.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.events = 0
        c.sock.close()

    def _watch(self, c: Conn, events: int) -> None:
        if events == c.events:
            return
        if not c.events:
            self.selector.register(c.sock, events, c)
        elif not events:
            self.selector.unregister(c.sock)
        else:
            self.selector.modify(c.sock, events, c)
        c.events = events

    # -- the loop
    def _pump(self, deadline: float) -> bool:
        """One select() turn (at most 0.2 s); False if the deadline passed or the server died."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.abort_reason = "timed out"
            return False
        if not self.alive():
            self.abort_reason = "the server process exited"
            return False
        for key, mask in self.selector.select(min(0.2, remaining)):
            self._handle(key.data, mask)
        return True

    def _handle(self, c: Conn, mask: int) -> None:
        try:
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                self._set_state(c, HANDSHAKE)
                c.out = client_request(self.host, self.path, c.key, extensions=self.offer)
                self._flush(c)
                return
            if mask & EVENT_WRITE:
                self._flush(c)
            if mask & EVENT_READ and c.state not in (FAILED, CLOSED):
                self._read(c)
        except (OSError, HandshakeError, ProtocolError) as exc:
            self._fail(c, describe(exc))

    def _flush(self, c: Conn) -> None:
        if c.out:
            try:
                sent = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            c.out = c.out[sent:]
        self._watch(c, EVENT_READ | (EVENT_WRITE if c.out else 0))

    def _read(self, c: Conn) -> None:
        try:
            data = c.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            if c.state == CLOSING:
                if self.strict_close and not c.close_received:
                    self.errors["server closed TCP without a close frame (while closing)"] += 1
                self._drop(c)
                self._set_state(c, CLOSED)
            else:
                self._fail(c, "server closed the connection")
            return
        c.inbuf += data
        if c.state == HANDSHAKE:
            parsed = parse_response(bytes(c.inbuf))
            if parsed is None:
                return
            response, length = parsed
            validate_response(response, c.key, None, self.offer)
            self.on_handshake(c, response)
            del c.inbuf[:length]
            self._set_state(c, OPEN)
        while c.state not in (FAILED, CLOSED):
            frame = parse_frame(c.inbuf, rsv1=self.offer is not None)
            if frame is None:
                return
            opcode, fin, rsv1, payload, length = frame
            del c.inbuf[:length]
            self._on_frame(c, opcode, fin, rsv1, payload)

    def _on_frame(self, c: Conn, opcode: int, fin: bool, rsv1: bool, payload: bytes) -> None:
        if opcode in (OPCODE_PING, OPCODE_PONG):
            return  # no heartbeat is configured; ignore one anyway
        if opcode == OPCODE_CLOSE:
            if c.state == CLOSING:
                c.close_received = True
                return
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            raise ProtocolError(f"server sent close {code} {payload[2:].decode('utf-8', 'replace')!r}")
        if opcode not in (OPCODE_TEXT, OPCODE_CONTINUATION):
            raise ProtocolError(f"unexpected opcode {opcode:#x}")
        if rsv1 and (opcode == OPCODE_CONTINUATION or not c.negotiated):
            raise ProtocolError("RSV1 on a continuation frame or without permessage-deflate")
        if opcode == OPCODE_TEXT:
            c.compressed = rsv1
        c.fragments.append(payload)
        if not fin:
            return
        message = b"".join(c.fragments)
        c.fragments.clear()
        message = self.received_message(c, message)
        if c.state == ECHOING:
            if message != c.expected:
                raise ProtocolError("echo does not match the message sent")
            self._set_state(c, ECHOED)
        elif c.state != CLOSING:
            raise ProtocolError("unexpected message")

    # -- phases
    def open_all(self, n: int, in_flight: int, deadline: float) -> None:
        """Open ``n`` connections, at most ``in_flight`` connecting or handshaking at a time."""
        self._wait_for(CONNECTING, HANDSHAKE)
        started = 0
        while True:
            while started < n and self.pending < in_flight:
                self._start(started)
                started += 1
            if started >= n and self.pending == 0:
                return
            if not self._pump(deadline):
                return

    def _start(self, index: int) -> None:
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:
            self.errors[f"socket(): {describe(exc)}"] += 1
            return
        c = self.conn_type(index, sock, new_key())
        self.conns.append(c)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(self.address)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            self._set_state(c, CONNECTING)
            self._watch(c, EVENT_WRITE)
        except OSError as exc:
            self._fail(c, describe(exc))

    def idle(self, seconds: float, deadline: float) -> None:
        """Keep serving events (none expected) for ``seconds``."""
        end = min(time.monotonic() + seconds, deadline)
        self._wait_for()
        while time.monotonic() < end and self._pump(end):
            pass
        self.abort_reason = ""  # reaching the end of the idle time is not an error

    def echo_round(self, payload: Callable[[int], bytes], deadline: float) -> None:
        """Send one message (``payload(index)``) on every open connection and wait for every echo."""
        self._wait_for(ECHOING)
        for c in self.conns:
            if c.state != OPEN:
                continue
            c.expected = payload(c.index)
            c.out += self.message_frame(c, c.expected)
            self._set_state(c, ECHOING)
            try:
                self._flush(c)
            except OSError as exc:
                self._fail(c, describe(exc))
        while self.pending and self._pump(deadline):
            pass

    def close_all(self, seconds: float) -> None:
        """Closing handshake on every live connection (bounded by ``seconds``), then close all."""
        self._wait_for(CLOSING)
        frame = build_frame(OPCODE_CLOSE, encode_close_payload(1000), masked=True)
        for c in self.conns:
            if c.state in (OPEN, ECHOING, ECHOED):
                c.out += frame
                self._set_state(c, CLOSING)
                try:
                    self._flush(c)
                except OSError as exc:
                    self._fail(c, describe(exc))
        deadline = time.monotonic() + seconds
        while self.pending and self._pump(deadline):
            pass
        for c in self.conns:
            if c.state not in (CLOSED, FAILED):
                self._drop(c)
                if c.state != CLOSING:
                    self._set_state(c, CLOSED)
        self.selector.close()


def verdict(failures: list[str]) -> int:
    """Print ``RESULT: PASS``, or ``RESULT: FAIL`` and each failure; the exit status to return."""
    if failures:
        print("RESULT: FAIL")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("RESULT: PASS")
    return 0
