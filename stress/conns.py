"""Open many concurrent WebSocket connections to one wsloop server and check an echo on each.

Usage::

    python stress/conns.py                                  # 10,000 connections, selectors poller
    python stress/conns.py --poller threaded --connections 2000
    python stress/conns.py --url ws://127.0.0.1:9000/ --server-pid 1234   # an already-running server

By default the script starts ``python -m wsloop serve`` (the echo server) on 127.0.0.1 in a child
process. It then:

1. raises its own ``RLIMIT_NOFILE`` soft limit to the hard limit (the server inherits it) and checks
   that ``--connections`` + 100 descriptors fit;
2. records the server's RSS and thread count (``/proc/PID/status``);
3. opens ``--connections`` WebSocket connections from this one process -- non-blocking sockets on a
   single ``selectors`` loop, at most ``--in-flight`` connects/handshakes at a time so the listen
   backlog never overflows -- and keeps them all open;
4. after ~1 s of idling reads the server's RSS and thread count again;
5. sends one masked text frame on every connection, each with a payload unique to it, and checks
   that every connection gets exactly its own payload back;
6. closes every connection with a closing handshake and stops the server (SIGTERM, then SIGKILL
   after 10 s).

It prints connections opened, echoes verified, the server's threads, RSS before/after and RSS per
connection (``(after - before) / connections``). The exit code is 0 only if every connection
opened, every echo matched and, with the selectors poller, the server ran at most 3 threads.
Every phase is bounded by ``--timeout`` seconds overall (closing and stopping the server add at
most ~20 s more); the script never waits without a bound.

With ``--url`` no server is started; server figures (threads, RSS) then need ``--server-pid`` of
that server, running on this machine, and ``--poller`` should name the poller it uses.
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import urlsplit

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
from wsloop.handshake import client_request, new_key, parse_response, validate_response

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
FD_HEADROOM = 100  # descriptors beyond one per connection (selector, pipes, server's listener...)
MAX_SELECTORS_THREADS = 3
READ_SIZE = 65536
IDLE_SECONDS = 1.0
CLOSE_SECONDS = 5.0
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz"
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Open many concurrent WebSocket connections to one wsloop server and check echoes.",
    )
    parser.add_argument("--connections", type=int, default=10000, help="connections to open (10000)")
    parser.add_argument("--poller", choices=["selectors", "threaded"], default="selectors")
    parser.add_argument("--port", type=int, default=0, help="server port (0: pick a free one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="overall bound in seconds (120)")
    parser.add_argument("--message-size", type=int, default=64, help="payload bytes per message (64)")
    parser.add_argument("--in-flight", type=int, default=256, help="connects/handshakes at once (256)")
    parser.add_argument("--url", help="ws://host:port/path of an already-running server (none started)")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server, for threads and RSS")
    args = parser.parse_args(argv)
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.in_flight < 1:
        parser.error("--in-flight must be at least 1")
    if args.message_size < len(str(args.connections - 1)):
        width = len(str(args.connections - 1))
        parser.error(f"--message-size must be at least {width} to tell the connections apart")
    if args.server_pid is not None and args.url is None:
        parser.error("--server-pid only goes with --url")
    return args


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


@dataclass
class ServerStats:
    threads: int
    rss_kib: int


def server_stats(pid: int | None) -> ServerStats | None:
    if pid is None:
        return None
    status = proc_status(pid)
    if "Threads" not in status or "VmRSS" not in status:
        return None
    return ServerStats(int(status["Threads"]), int(status["VmRSS"].split()[0]))


def proc_nofile_limit(pid: int) -> int | None:
    """The soft 'Max open files' limit of a process, from ``/proc/PID/limits``."""
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as f:
            for line in f:
                if line.startswith("Max open files"):
                    value = line.split()[3]
                    return None if value == "unlimited" else int(value)
    except (OSError, IndexError, ValueError):
        pass
    return None


def make_payload(index: int, size: int, width: int) -> bytes:
    """``size`` ASCII bytes unique to connection ``index``: its number, then letters shifted by it."""
    head = f"{index:0{width}d}".encode("ascii")
    shift = index % 26
    letters = _ALPHABET[shift:] + _ALPHABET[:shift]
    fill = letters * (max(0, size - len(head)) // 26 + 1)
    return (head + fill)[:size]


def parse_frame(buf: bytearray) -> tuple[int, bool, bytes, int] | None:
    """One unmasked server frame at the start of ``buf``: ``(opcode, fin, payload, length)``, or
    ``None`` while incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b1 & 0x80:
        raise ProtocolError("server frame is masked")
    if b0 & 0x70:
        raise ProtocolError("server frame has RSV bits set")
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
    return b0 & 0x0F, bool(b0 & 0x80), bytes(buf[pos : pos + length]), pos + length


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {os.strerror(exc.errno)}"
    return f"{type(exc).__name__}: {exc}"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# ---------------------------------------------------------------------------- the server


class ServerProcess:
    """``python -m wsloop serve`` in a child process, on 127.0.0.1."""

    def __init__(self, port: int, poller: str) -> None:
        self.port = port
        self.log: IO[bytes] = tempfile.TemporaryFile()
        # The child inherits our raised RLIMIT_NOFILE (checked afterwards from /proc/PID/limits).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsloop", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--poller", poller, "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.exit_code: int | None = None
        self.stop_seconds = 0.0
        self.killed = False
        self.died = False  # exited before we asked it to stop

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, seconds: float) -> bool:
        """Wait until the server accepts TCP connections on 127.0.0.1:port."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_SECONDS, then SIGKILL."""
        start = time.monotonic()
        self.died = not self.alive()
        if not self.died:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5.0)
        self.stop_seconds = time.monotonic() - start
        self.exit_code = self.proc.returncode

    def output_tail(self, lines: int = 15) -> list[str]:
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace").splitlines()
        return text[-lines:]

    def output_lines(self) -> int:
        self.log.seek(0)
        return len(self.log.read().splitlines())


# ---------------------------------------------------------------------------- the clients


@dataclass(slots=True, eq=False)
class Client:
    index: int
    sock: socket.socket
    key: str
    state: str = NEW
    events: int = 0
    out: bytes = b""
    inbuf: bytearray = field(default_factory=bytearray)
    fragments: list[bytes] = field(default_factory=list)
    expected: bytes = b""
    close_received: bool = False
    error: str = ""


class LoadGenerator:
    """Every client connection, driven by one ``selectors`` loop in this thread."""

    def __init__(self, address: tuple[str, int], family: int, host: str, path: str,
                 alive: Callable[[], bool]) -> None:
        self.address = address
        self.family = family
        self.host = host
        self.path = path
        self.alive = alive
        self.selector = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self.waiting: frozenset[str] = frozenset()
        self.pending = 0  # clients in a state of self.waiting
        self.errors: collections.Counter[str] = collections.Counter()
        self.abort_reason = ""

    # -- state bookkeeping
    def _set_state(self, c: Client, state: str) -> None:
        was, now = c.state in self.waiting, state in self.waiting
        self.pending += int(now) - int(was)
        c.state = state

    def _wait_for(self, states: Iterable[str]) -> None:
        self.waiting = frozenset(states)
        self.pending = sum(1 for c in self.clients if c.state in self.waiting)

    def count(self, *states: str) -> int:
        return sum(1 for c in self.clients if c.state in states)

    def _fail(self, c: Client, reason: str) -> None:
        self.errors[f"{reason} (while {c.state})"] += 1
        c.error = reason
        self._drop(c)
        self._set_state(c, FAILED)

    def _drop(self, c: Client) -> None:
        if c.events:
            try:
                self.selector.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.events = 0
        c.sock.close()

    def _watch(self, c: Client, events: int) -> None:
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

    def _handle(self, c: Client, mask: int) -> None:
        try:
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                self._set_state(c, HANDSHAKE)
                c.out = client_request(self.host, self.path, c.key)
                self._flush(c)
                return
            if mask & EVENT_WRITE:
                self._flush(c)
            if mask & EVENT_READ and c.state not in (FAILED, CLOSED):
                self._read(c)
        except (OSError, HandshakeError, ProtocolError) as exc:
            self._fail(c, describe(exc))

    def _flush(self, c: Client) -> None:
        if c.out:
            try:
                sent = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            c.out = c.out[sent:]
        self._watch(c, EVENT_READ | (EVENT_WRITE if c.out else 0))

    def _read(self, c: Client) -> None:
        try:
            data = c.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            if c.state == CLOSING:
                if not c.close_received:
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
            validate_response(response, c.key)
            del c.inbuf[:length]
            self._set_state(c, OPEN)
        while c.state not in (FAILED, CLOSED):
            frame = parse_frame(c.inbuf)
            if frame is None:
                return
            opcode, fin, payload, length = frame
            del c.inbuf[:length]
            self._on_frame(c, opcode, fin, payload)

    def _on_frame(self, c: Client, opcode: int, fin: bool, payload: bytes) -> None:
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
        c.fragments.append(payload)
        if not fin:
            return
        message = b"".join(c.fragments)
        c.fragments.clear()
        if c.state == ECHOING:
            if message != c.expected:
                raise ProtocolError("echo does not match the message sent")
            self._set_state(c, ECHOED)
        elif c.state != CLOSING:
            raise ProtocolError("unexpected message")

    # -- phases
    def open_all(self, n: int, in_flight: int, deadline: float) -> None:
        """Open ``n`` connections, at most ``in_flight`` connecting or handshaking at a time."""
        self._wait_for((CONNECTING, HANDSHAKE))
        self.abort_reason = ""
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
        c = Client(index, sock, new_key())
        self.clients.append(c)
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
        self._wait_for(())
        while time.monotonic() < end and self._pump(end):
            pass
        self.abort_reason = ""  # reaching the end of the idle time is not an error

    def echo_round(self, size: int, width: int, deadline: float) -> None:
        """Send one text message on every open connection and wait for every echo."""
        self._wait_for((ECHOING,))
        self.abort_reason = ""
        for c in self.clients:
            if c.state != OPEN:
                continue
            c.expected = make_payload(c.index, size, width)
            c.out += build_frame(OPCODE_TEXT, c.expected, masked=True)
            self._set_state(c, ECHOING)
            try:
                self._flush(c)
            except OSError as exc:
                self._fail(c, describe(exc))
        while self.pending and self._pump(deadline):
            pass

    def close_all(self, seconds: float) -> None:
        """Closing handshake on every live connection (bounded by ``seconds``), then close all."""
        self.abort_reason = ""
        self._wait_for((CLOSING,))
        frame = build_frame(OPCODE_CLOSE, encode_close_payload(1000), masked=True)
        for c in self.clients:
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
        for c in self.clients:
            if c.state not in (CLOSED, FAILED):
                self._drop(c)
                if c.state != CLOSING:
                    self._set_state(c, CLOSED)
        self.selector.close()


# ---------------------------------------------------------------------------- main


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through main()'s cleanup: sockets closed, server stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    n: int = args.connections
    started_at = time.monotonic()
    deadline = started_at + args.timeout

    limit = raise_nofile_limit()
    if n + FD_HEADROOM > limit:
        print(
            f"error: {n} connections need {n + FD_HEADROOM} file descriptors but RLIMIT_NOFILE is {limit} "
            f"(hard limit {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}); raise the hard limit "
            f"(ulimit -Hn) or use fewer --connections",
            file=sys.stderr,
        )
        return 2

    server: ServerProcess | None = None
    server_pid: int | None
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme != "ws" or not parts.hostname:
            print(f"error: --url must be ws://host:port/path, not {args.url!r}", file=sys.stderr)
            return 2
        port = parts.port or 80
        try:
            family, _, _, _, address = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)[0]
        except OSError as exc:
            print(f"error: cannot resolve {parts.hostname}: {describe(exc)}", file=sys.stderr)
            return 2
        host_header = parts.netloc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        server_pid = args.server_pid
        target = f"{args.url} (already running" + (f", pid {server_pid})" if server_pid else ")")
        alive: Callable[[], bool] = lambda: True
    else:
        port = args.port or free_port()
        family, address = socket.AF_INET, ("127.0.0.1", port)
        host_header, path = f"127.0.0.1:{port}", "/"
        server = ServerProcess(port, args.poller)
        server_pid = server.pid
        target = f"ws://127.0.0.1:{port}/ (spawned, pid {server_pid})"
        alive = server.alive

    failures: list[str] = []
    gen: LoadGenerator | None = None
    print(f"wsloop connection stress: {n} connections, {args.poller} poller, "
          f"{args.message_size}-byte messages")
    print(f"server:               {target}")
    try:
        if server is not None and not server.wait_ready(min(READY_SECONDS, args.timeout)):
            print("error: the server did not start accepting connections", file=sys.stderr)
            for line in server.output_tail():
                print(f"  server| {line}", file=sys.stderr)
            return 1
        server_limit = proc_nofile_limit(server_pid) if server_pid else None
        print(f"RLIMIT_NOFILE:        client {limit}, server {server_limit if server_limit else 'n/a'}")
        if server_limit is not None and server_limit < n + FD_HEADROOM:
            failures.append(f"the server's open-file limit {server_limit} is below {n + FD_HEADROOM}")
        time.sleep(0.3)  # let the readiness probe's connection go away before the baseline
        before = server_stats(server_pid)

        gen = LoadGenerator(address, family, host_header, path, alive)
        t0 = time.monotonic()
        gen.open_all(n, args.in_flight, deadline)
        open_seconds = time.monotonic() - t0
        opened = gen.count(OPEN)
        print(f"connections opened:   {opened}/{n} in {open_seconds:.2f} s "
              f"({opened / open_seconds if open_seconds else 0:.0f}/s)")
        if opened < n:
            failures.append(f"only {opened}/{n} connections opened" +
                            (f" ({gen.abort_reason})" if gen.abort_reason else ""))

        gen.idle(IDLE_SECONDS, deadline)
        after = server_stats(server_pid)
        still_open = gen.count(OPEN)
        if still_open < opened:
            failures.append(f"{opened - still_open} connections dropped while idle")

        t0 = time.monotonic()
        gen.echo_round(args.message_size, len(str(n - 1)), deadline)
        echo_seconds = time.monotonic() - t0
        echoed = gen.count(ECHOED)
        print(f"echoes verified:      {echoed}/{n} in {echo_seconds:.2f} s")
        if echoed < n:
            failures.append(f"only {echoed}/{n} echoes verified" +
                            (f" ({gen.abort_reason})" if gen.abort_reason else ""))
        after_echo = server_stats(server_pid)

        if before is not None and after is not None:
            limit_note = f"; at most {MAX_SELECTORS_THREADS} allowed" if args.poller == "selectors" else ""
            print(f"server threads:       {after.threads} with {still_open} connections open "
                  f"(before connecting: {before.threads}{limit_note})")
            grown = after.rss_kib - before.rss_kib
            print(f"server RSS:           before {mib(before.rss_kib)}, after {mib(after.rss_kib)} "
                  f"(+{mib(grown)}); after the echo round {mib(after_echo.rss_kib) if after_echo else 'n/a'}")
            per_conn = f"{grown / still_open:.2f} KiB" if still_open else "n/a"
            print(f"RSS per connection:   {per_conn} ((after - before) / {still_open})")
            if args.poller == "selectors" and after.threads > MAX_SELECTORS_THREADS:
                failures.append(f"the server ran {after.threads} threads (selectors: at most 3)")
        elif server_pid is None:
            print("server threads/RSS:   n/a (pass --server-pid with --url)")
        else:
            print(f"server threads/RSS:   n/a (cannot read /proc/{server_pid}/status)")
    finally:
        if gen is not None:
            t0 = time.monotonic()
            live = gen.count(OPEN, ECHOING, ECHOED)
            gen.close_all(CLOSE_SECONDS)
            clean = sum(1 for c in gen.clients if c.state == CLOSED and c.close_received)
            print(f"closing handshakes:   {clean}/{live} completed in {time.monotonic() - t0:.2f} s")
            if gen.errors:
                print("client-side errors:")
                for reason, count in gen.errors.most_common(8):
                    print(f"  {count:6d} x {reason}")
        if server is not None:
            server.stop()
            if server.died:
                print(f"server stopped:       it had already exited on its own, code {server.exit_code}")
                failures.append(f"the server exited on its own (code {server.exit_code})")
            else:
                how = "SIGKILL (did not exit within 10 s of SIGTERM)" if server.killed else "SIGTERM"
                print(f"server stopped:       exit code {server.exit_code} after {how} "
                      f"in {server.stop_seconds:.2f} s")
            if server.killed:
                failures.append("the server did not exit within 10 s of SIGTERM")
            if server.output_lines():
                print(f"server output ({server.output_lines()} lines, last 15):")
                for line in server.output_tail():
                    print(f"  server| {line}")
            server.log.close()

    print(f"total time:           {time.monotonic() - started_at:.2f} s")
    if failures:
        print("RESULT: FAIL")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("RESULT: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
