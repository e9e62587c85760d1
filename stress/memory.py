"""Server RSS per idle WebSocket connection with permessage-deflate, by compression policy.

Usage::

    python stress/memory.py                                   # default, frugal and off; 5,000 each
    python stress/memory.py --policy frugal --connections 2000
    python stress/memory.py --policy default --policy off --timeout 120

For each policy (``default``: :data:`wsloop.deflate.DEFAULT`, ``frugal``:
:data:`wsloop.deflate.FRUGAL`, ``off``: ``compression=False``, for reference) the script:

1. starts a fresh echo server in a child process -- a small inline script running
   ``WebSocketServer("127.0.0.1", 0, compression=<policy>)`` with the selectors poller -- that
   inherits this process's raised ``RLIMIT_NOFILE`` (and raises its own);
2. reads the server's RSS (``VmRSS`` of ``/proc/PID/status``): "before";
3. opens ``--connections`` connections from this one process (non-blocking sockets on one
   ``selectors`` loop, at most ``--in-flight`` connecting or handshaking at a time), each offering
   ``client_offer()`` (``permessage-deflate; client_max_window_bits; server_max_window_bits=12``),
   and checks the 101's ``Sec-WebSocket-Extensions`` against the policy;
4. idles 1 s and reads the RSS: "handshake" -- the agreement exists but no zlib context yet
   (they are made lazily);
5. sends ONE message on every connection, compressed (RSV1) when deflate was negotiated, so the
   server makes its decompressor, and reads the echo, which the server compresses with its
   compressor; every echo is inflated and checked. With context takeover (default) both contexts
   stay; without (frugal) they are dropped after each message;
6. idles 1 s and reads the RSS: "1 msg";
7. closes every connection with a closing handshake and stops the server (SIGTERM, then SIGKILL).

It prints one table: per policy, the connections, the server's RSS before / after the handshakes /
after one message each way, and KiB per connection ``(RSS - before) / connections`` at each point.
The client side keeps no zlib context: each message is compressed and each echo inflated with a
fresh ``zlib`` object that is dropped at once. The whole run is bounded by ``--timeout`` seconds
(closing and stopping each server add at most ~20 s); everything is on 127.0.0.1.
Exit code 0 only if every connection opened, negotiated as expected and echoed its message.
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from wsloop.deflate import client_accept, client_offer
from wsloop.exc import HandshakeError
from wsloop.framing import OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_TEXT, build_frame, encode_close_payload
from wsloop.handshake import client_request, new_key, parse_response, validate_response

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
POLICIES = ("default", "frugal", "off")
FD_HEADROOM = 100
READ_SIZE = 65536
IDLE_SECONDS = 1.0
CLOSE_SECONDS = 5.0
STOP_SECONDS = 10.0
READY_SECONDS = 15.0
TAIL = b"\x00\x00\xff\xff"

# The server: EchoWebSocket on 127.0.0.1, an ephemeral port printed on stdout once listening.
SERVER_SCRIPT = r"""
import resource, signal, sys, threading
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard == resource.RLIM_INFINITY or hard > soft:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
from wsloop.deflate import DEFAULT, FRUGAL
from wsloop.servers.standalone import WebSocketServer
policy = {"default": DEFAULT, "frugal": FRUGAL, "off": False}[sys.argv[1]]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
server = WebSocketServer("127.0.0.1", 0, poller="selectors", compression=policy, backlog=4096)
server.start()
print(server.port, flush=True)
while not stop.wait(0.2):
    pass
server.stop(timeout=5)
"""

# Connection states.
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
    parser = argparse.ArgumentParser(description="Server RSS per idle connection, by deflate policy.")
    parser.add_argument("--connections", type=int, default=5000, help="connections per policy (5000)")
    parser.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="policy to measure (repeatable; default: all three)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="overall bound in seconds (300)")
    parser.add_argument("--message-size", type=int, default=256, help="bytes per message (256)")
    parser.add_argument("--in-flight", type=int, default=256, help="connects/handshakes at once (256)")
    args = parser.parse_args(argv)
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.in_flight < 1:
        parser.error("--in-flight must be at least 1")
    if args.message_size < 16:
        parser.error("--message-size must be at least 16")
    args.policy = args.policy or list(POLICIES)
    return args


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of a process in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {os.strerror(exc.errno)}"
    return f"{type(exc).__name__}: {exc}"


def make_payload(index: int, size: int) -> bytes:
    """``size`` bytes of JSON-like text unique to connection ``index`` (compressible)."""
    record = b'{"conn": %d, "kind": "update", "values": [1, 2, 3, 5, 8], "ok": true}\n' % index
    return (record * (size // len(record) + 1))[:size]


def deflate_message(payload: bytes, window_bits: int) -> bytes:
    """One message's permessage-deflate payload, from a context used once (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(TAIL) else data


def inflate_message(payload: bytes, window_bits: int, limit: int) -> bytes:
    decompressor = zlib.decompressobj(-window_bits)
    try:
        data = decompressor.decompress(payload + TAIL, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"invalid compressed echo: {exc}") from None
    if len(data) > limit:
        raise ProtocolError("compressed echo inflates past the message sent")
    return data


def parse_frame(buf: bytearray) -> tuple[int, bool, bool, bytes, int] | None:
    """One unmasked server frame at the start of ``buf``: ``(opcode, fin, rsv1, payload, length)``,
    or ``None`` while incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b1 & 0x80:
        raise ProtocolError("server frame is masked")
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


class ServerProcess:
    """The inline echo server for one policy, in a child process."""

    def __init__(self, policy: str) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, policy],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        self.port = 0
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, seconds: float) -> bool:
        """Read the port the server printed (bounded by ``seconds``)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], seconds)
        if not ready:
            return False
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            return False
        self.port = int(line)
        return True

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def output_tail(self, lines: int = 10) -> list[str]:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace").splitlines()[-lines:]


# ---------------------------------------------------------------------------- the clients


@dataclass(slots=True, eq=False)
class Conn:
    index: int
    sock: socket.socket
    key: str
    state: str = CONNECTING
    events: int = 0
    out: bytes = b""
    inbuf: bytearray = field(default_factory=bytearray)
    negotiated: bool = False
    client_bits: int = 15  # the window we compress with
    server_bits: int = 15  # the window the server compresses with
    expected: bytes = b""
    fragments: list[bytes] = field(default_factory=list)
    compressed: bool = False  # the echo being received has RSV1
    close_received: bool = False


class Clients:
    """Every client connection of one policy, driven by one ``selectors`` loop in this thread."""

    def __init__(self, port: int, alive: Callable[[], bool]) -> None:
        self.address = ("127.0.0.1", port)
        self.host = f"127.0.0.1:{port}"
        self.offer = client_offer()
        self.alive = alive
        self.selector = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.pending = 0  # connections in a state of self.waiting
        self.waiting: frozenset[str] = frozenset()
        self.errors: collections.Counter[str] = collections.Counter()
        self.extensions: collections.Counter[str] = collections.Counter()
        self.echoes_compressed = 0
        self.abort_reason = ""

    def _set_state(self, c: Conn, state: str) -> None:
        self.pending += int(state in self.waiting) - int(c.state in self.waiting)
        c.state = state

    def _wait_for(self, *states: str) -> None:
        self.waiting = frozenset(states)
        self.pending = sum(1 for c in self.conns if c.state in self.waiting)
        self.abort_reason = ""

    def count(self, *states: str) -> int:
        return sum(1 for c in self.conns if c.state in states)

    def _fail(self, c: Conn, reason: str) -> None:
        self.errors[f"{reason} (while {c.state})"] += 1
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

    def _pump(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.abort_reason = "timed out"
            return False
        if not self.alive():
            self.abort_reason = "the server process exited"
            return False
        for key, mask in self.selector.select(min(0.2, remaining)):
            c: Conn = key.data
            try:
                if c.state == CONNECTING:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    self._set_state(c, HANDSHAKE)
                    c.out = client_request(self.host, "/", c.key, extensions=[self.offer])
                    self._flush(c)
                    continue
                if mask & EVENT_WRITE:
                    self._flush(c)
                if mask & EVENT_READ and c.state not in (FAILED, CLOSED):
                    self._read(c)
            except (OSError, HandshakeError, ProtocolError) as exc:
                self._fail(c, describe(exc))
        return True

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
            _, chosen = validate_response(response, c.key, None, [self.offer])
            header = response.headers.get("sec-websocket-extensions")
            self.extensions[header or "(none)"] += 1
            if header:
                agreement = client_accept(header)  # checks it; no zlib context is made
                c.negotiated = True
                c.client_bits = agreement.local_max_window_bits
                c.server_bits = agreement.remote_max_window_bits
            del c.inbuf[:length]
            self._set_state(c, OPEN)
        while c.state not in (FAILED, CLOSED):
            frame = parse_frame(c.inbuf)
            if frame is None:
                return
            opcode, fin, rsv1, payload, length = frame
            del c.inbuf[:length]
            self._on_frame(c, opcode, fin, rsv1, payload)

    def _on_frame(self, c: Conn, opcode: int, fin: bool, rsv1: bool, payload: bytes) -> None:
        if opcode == OPCODE_CLOSE:
            if c.state == CLOSING:
                c.close_received = True
                return
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            raise ProtocolError(f"server sent close {code} {payload[2:].decode('utf-8', 'replace')!r}")
        if opcode >= 8:
            return  # no heartbeat is configured; ignore a ping or pong anyway
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
        if c.compressed:
            message = inflate_message(message, c.server_bits, len(c.expected))
            self.echoes_compressed += 1
        if c.state == ECHOING:
            if message != c.expected:
                raise ProtocolError("echo does not match the message sent")
            self._set_state(c, ECHOED)
        elif c.state != CLOSING:
            raise ProtocolError("unexpected message")

    # -- phases
    def open_all(self, n: int, in_flight: int, deadline: float) -> None:
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
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.errors[f"socket(): {describe(exc)}"] += 1
            return
        c = Conn(index, sock, new_key(), state="new")
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
        end = min(time.monotonic() + seconds, deadline)
        self._wait_for()
        while time.monotonic() < end and self._pump(end):
            pass
        self.abort_reason = ""

    def echo_round(self, size: int, deadline: float) -> None:
        """One message on every open connection (compressed when negotiated); wait for every echo."""
        self._wait_for(ECHOING)
        for c in self.conns:
            if c.state != OPEN:
                continue
            c.expected = make_payload(c.index, size)
            if c.negotiated:
                frame = build_frame(
                    OPCODE_TEXT, deflate_message(c.expected, c.client_bits), rsv1=True, masked=True
                )
            else:
                frame = build_frame(OPCODE_TEXT, c.expected, masked=True)
            c.out += frame
            self._set_state(c, ECHOING)
            try:
                self._flush(c)
            except OSError as exc:
                self._fail(c, describe(exc))
        while self.pending and self._pump(deadline):
            pass

    def close_all(self, seconds: float) -> None:
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
                self._set_state(c, CLOSED)
        self.selector.close()


# ---------------------------------------------------------------------------- one policy


@dataclass
class Result:
    policy: str
    connections: int = 0
    echoed: int = 0
    echoes_compressed: int = 0
    extensions: str = ""
    before: int | None = None
    handshake: int | None = None
    message: int | None = None
    failures: list[str] = field(default_factory=list)

    def per_conn(self, rss: int | None) -> str:
        if rss is None or self.before is None or not self.connections:
            return "n/a"
        return f"{(rss - self.before) / self.connections:.2f}"


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def measure(policy: str, args: argparse.Namespace, deadline: float) -> Result:
    result = Result(policy)
    n = args.connections
    server = ServerProcess(policy)
    clients: Clients | None = None
    try:
        if not server.wait_ready(max(0.1, min(READY_SECONDS, deadline - time.monotonic()))):
            result.failures.append("the server did not start: " + " | ".join(server.output_tail()))
            return result
        time.sleep(0.3)
        result.before = rss_kib(server.pid)

        clients = Clients(server.port, server.alive)
        t0 = time.monotonic()
        clients.open_all(n, args.in_flight, deadline)
        opened = clients.count(OPEN)
        print(f"  [{policy}] {opened}/{n} connections opened in {time.monotonic() - t0:.2f} s", flush=True)
        if opened < n:
            result.failures.append(
                f"only {opened}/{n} connections opened ({clients.abort_reason or 'errors'})"
            )
        result.extensions = "; ".join(f"{ext!r} x{count}" for ext, count in clients.extensions.items())
        want_deflate = policy != "off"
        negotiated = sum(1 for c in clients.conns if c.state == OPEN and c.negotiated)
        if negotiated != (opened if want_deflate else 0):
            result.failures.append(f"permessage-deflate negotiated on {negotiated}/{opened} connections")

        clients.idle(IDLE_SECONDS, deadline)
        result.handshake = rss_kib(server.pid)
        result.connections = clients.count(OPEN)

        t0 = time.monotonic()
        clients.echo_round(args.message_size, deadline)
        result.echoed = clients.count(ECHOED)
        result.echoes_compressed = clients.echoes_compressed
        print(
            f"  [{policy}] {result.echoed}/{result.connections} echoes verified in "
            f"{time.monotonic() - t0:.2f} s ({result.echoes_compressed} compressed by the server)",
            flush=True,
        )
        if result.echoed < result.connections:
            result.failures.append(
                f"only {result.echoed}/{result.connections} echoes verified"
                + (f" ({clients.abort_reason})" if clients.abort_reason else "")
            )
        clients.idle(IDLE_SECONDS, deadline)
        result.message = rss_kib(server.pid)
        if clients.count(ECHOED) < result.echoed:
            result.failures.append("connections dropped while idle after the echo round")
    finally:
        if clients is not None:
            clients.close_all(CLOSE_SECONDS)
            if clients.errors:
                for reason, count in clients.errors.most_common(5):
                    result.failures.append(f"{count} x {reason}")
        server.stop()
        if server.killed:
            result.failures.append("the server did not exit within 10 s of SIGTERM")
        server.log.close()
    return result


def print_table(results: list[Result]) -> None:
    header = (
        f"{'policy':<8} {'conns':>6} {'RSS before':>11} {'handshake':>11} {'KiB/conn':>9} "
        f"{'1 msg each way':>15} {'KiB/conn':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.policy:<8} {r.connections:>6} {mib(r.before):>11} {mib(r.handshake):>11} "
            f"{r.per_conn(r.handshake):>9} {mib(r.message):>15} {r.per_conn(r.message):>9}"
        )


# ---------------------------------------------------------------------------- main


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through measure()'s cleanup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    deadline = started + args.timeout
    limit = raise_nofile_limit()
    if args.connections + FD_HEADROOM > limit:
        print(
            f"error: {args.connections} connections need {args.connections + FD_HEADROOM} descriptors "
            f"but RLIMIT_NOFILE is {limit}; raise the hard limit (ulimit -Hn) or use fewer --connections",
            file=sys.stderr,
        )
        return 2
    print(
        f"wsloop memory per connection: {args.connections} connections per policy, "
        f"{args.message_size}-byte messages, selectors poller, offer {client_offer()!r}",
        flush=True,
    )
    results = []
    for policy in args.policy:
        if time.monotonic() >= deadline:
            results.append(Result(policy, failures=["not run: --timeout reached"]))
            continue
        results.append(measure(policy, args, deadline))
    print()
    print_table(results)
    print()
    print("handshake: RSS after the handshakes + 1 s idle (agreements made, zlib contexts not yet);")
    print("1 msg each way: RSS after one message in and its echo out on every connection + 1 s idle;")
    print("KiB/conn: (RSS - RSS before) / connections.")
    for r in results:
        print(f"{r.policy}: negotiated {r.extensions or '(nothing)'}")
    failed = False
    for r in results:
        for failure in r.failures:
            failed = True
            print(f"FAIL [{r.policy}] {failure}")
    print(f"total time: {time.monotonic() - started:.1f} s")
    print("RESULT: FAIL" if failed else "RESULT: PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
