"""Chaos: well-behaved echo clients next to misbehaving peers, all at once, against one server.

Usage::

    python stress/chaos.py                      # 60 s
    python stress/chaos.py --duration 20        # CI's version (tests/test_chaos.py)
    python stress/chaos.py --only echo,bombs    # some kinds of actor alone, for diagnosis

It serves ``chaoshandler.py``'s handler with ``python -m wsloop serve`` and, for ``--duration``
seconds, runs every kind of misbehaving peer (slowloris, garbage, oversized frames, decompression
bombs, never-readers, floods, churn, issue 13's attacks) beside timed echo clients, then checks
that the server lived, every echo was intact, the p99, descriptors and RSS stayed in bounds and
every peer got the answer expected. Exit code 0 only if all hold. The actors and the checks are
described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import math
import multiprocessing
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection

from loadkit import (
    READY_SECONDS,
    ServerProcess,
    describe,
    exit_on_sigterm,
    mib,
    open_fds,
    proc_status,
    raise_nofile_limit,
    rss_kib,
    verdict,
)

import wsloop
from wsloop.deflate import DEFAULT, client_accept, client_offer
from wsloop.exc import HandshakeError
from wsloop.framing import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_TEXT,
    build_frame,
    encode_close_payload,
    frame_header,
    mask,
)
from wsloop.handshake import client_request, new_key, parse_response, validate_response
from wsloop.messaging import BinaryMessage, PongControlMessage, TextMessage
from wsloop.protocol import Protocol

HOST = "127.0.0.1"
MAX_MESSAGE = 1024 * 1024  # the server's --max-message-size for the run
HANDSHAKE_TIMEOUT = 10.0  # the standalone server's default
CLOSE_TIMEOUT = 5.0  # the server's default closing-handshake bound
IO_SECONDS = 5.0  # bound on any single wait for the server in this script
SAMPLE_SECONDS = 0.05
KEY = b"\x11\x22\x33\x44"
CYCLER_THREADS = 16  # connect/disconnect cycles in flight (each thread waits on the server)
RSS_RISE_MIB = 24.0  # bound on the server's RSS growth during one of issue 13's floods
DEFLATE_SPLIT_SECONDS = 3.0  # bound on the answer to a 16 MiB BFINAL-split message (today: > 15 s)


# ---------------------------------------------------------------------------- bookkeeping


@dataclass
class Tally:
    """What the actors did, shared between threads (one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)
    rtts: list[float] = field(default_factory=list)
    drop_times: list[float] = field(default_factory=list)
    maxima: dict[str, float] = field(default_factory=dict)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    rounds: collections.Counter[str] = field(default_factory=collections.Counter)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def fail(self, what: str, detail: str = "") -> None:
        kind = actor_kind(threading.current_thread().name)
        with self.lock:
            self.failures[what] += 1
            self.by_kind[kind] += 1
            if detail and what not in self.examples:
                self.examples[what] = detail

    def round_done(self) -> None:
        """One round of the calling actor is over (whatever its outcome)."""
        kind = actor_kind(threading.current_thread().name)
        with self.lock:
            self.rounds[kind] += 1

    def note_max(self, what: str, value: float) -> None:
        """Keep the largest ``value`` seen for ``what`` (a figure for the report)."""
        with self.lock:
            self.maxima[what] = max(value, self.maxima.get(what, value))

    def note_min(self, what: str, value: float) -> None:
        """Keep the smallest ``value`` seen for ``what``."""
        with self.lock:
            self.maxima[what] = min(value, self.maxima.get(what, value))


def actor_kind(thread_name: str) -> str:
    """The kind of actor (``--only`` name) a thread named ``kind`` or ``kind-N`` plays."""
    kind = thread_name.rstrip("0123456789-")
    return kind if kind in KINDS else "other"


class Run:
    """The target and the end of the run (``deadline``: on the monotonic clock, which is the
    same in every process of the machine)."""

    def __init__(self, port: int, deadline: float, tally: Tally, pid: int | None = None) -> None:
        self.address = (HOST, port)
        self.pid = pid  # the server's, for its RSS
        self.heavy = threading.Lock()  # held by a flood whose RSS growth is measured
        self.server_env: dict[str, str] | None = None  # for a server of an actor's own
        self.host = f"{HOST}:{port}"
        self.start = time.monotonic()
        self.deadline = deadline
        self.tally = tally
        self.stop = threading.Event()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def over(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.deadline

    def pause(self, seconds: float) -> None:
        """Sleep (bounded by the end of the run)."""
        self.stop.wait(max(0.0, min(seconds, self.left())))


# ---------------------------------------------------------------------------- socket helpers


def connect(run: Run, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IO_SECONDS)
        sock.connect(run.address)
    except BaseException:
        sock.close()
        raise
    return sock


def reset(sock: socket.socket) -> None:
    """Vanish: close with SO_LINGER 0, so the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def handshake(run: Run, sock: socket.socket, extensions: list[str] | None = None) -> tuple[list[str], bytes]:
    """The opening handshake on a connected socket: (extensions agreed, bytes after the 101)."""
    key = new_key()
    sock.sendall(client_request(run.host, "/", key, extensions=extensions))
    return finish_handshake(sock, key, extensions)


def finish_handshake(
    sock: socket.socket, key: str, extensions: list[str] | None = None
) -> tuple[list[str], bytes]:
    """Read and check the server's answer to an upgrade request sent with ``key``."""
    data = b""
    deadline = time.monotonic() + IO_SECONDS
    while True:
        parsed = parse_response(data)
        if parsed is not None:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("no 101 within 5 s")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed during the handshake")
        data += chunk
    response, length = parsed
    _, agreed = validate_response(response, key, None, extensions)
    return agreed, data[length:]


def has_message(proto: Protocol, i: int) -> bool:
    """Message ``i`` has arrived, or the server's close frame."""
    return len(proto.received) > i or proto.close_received is not None


def has_pong(proto: Protocol, data: bytes) -> bool:
    """The last message in is a pong with ``data`` (or the server's close frame came)."""
    if proto.close_received is not None:
        return True
    last = proto.received[-1] if proto.received else None
    return isinstance(last, PongControlMessage) and last.data == data


def has_close(proto: Protocol) -> bool:
    return proto.close_received is not None


def client_protocol(agreed: list[str]) -> Protocol:
    deflate = client_accept(agreed[0], DEFAULT) if agreed else None
    return Protocol(client=True, max_message_size=None, deflate=deflate)


def read_until(sock: socket.socket, proto: Protocol, done: Callable[[], bool], seconds: float) -> bool:
    """Feed what the server sends to ``proto`` until ``done()`` (True), EOF or ``seconds`` (False)."""
    deadline = time.monotonic() + seconds
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            chunk = sock.recv(262144)
        except TimeoutError:
            return False
        finally:
            sock.settimeout(IO_SECONDS)
        if not chunk:
            return done()
        proto.feed(chunk)
    return True


def expect_close(run: Run, sock: socket.socket, leftover: bytes, expected: set[int], what: str) -> None:
    """Read the server's close frame (after ``leftover``) and check its code; then our FIN."""
    proto = Protocol(client=True, max_message_size=None)
    proto.feed(leftover)
    try:
        got = read_until(sock, proto, partial(has_close, proto), IO_SECONDS)
    except OSError as exc:
        run.tally.fail(f"{what}: connection error before the close frame", describe(exc))
        return
    if not got or proto.close_received is None:
        run.tally.fail(f"{what}: no close frame within {IO_SECONDS:g} s")
        return
    code = proto.close_received.code
    if code not in expected:
        run.tally.fail(f"{what}: close {code} (expected {sorted(expected)})", proto.close_received.text)
    else:
        run.tally.count(f"{what}: close {code}")


# ---------------------------------------------------------------------------- the actors


def make_message(client: int, seq: int, rng: random.Random) -> tuple[bool, bytes]:
    size = rng.choice([16, 16, 100, 125, 126, 1000, 4000, 20000, 65536, 98304])
    binary = rng.random() < 0.4
    head = f"{client}:{seq}:".encode("ascii")
    if binary:
        body = rng.randbytes(max(0, size - len(head)))
    else:
        word = rng.choice(["abc", "déjà vu ", "ωμέγα ", "🙂 ", "x"]).encode("utf-8")
        body = (word * (size // len(word) + 1))[: max(0, size - len(head))]
        body = body.decode("utf-8", "ignore").encode("utf-8")
    return binary, head + body


def echo_client(run: Run, index: int, compress: bool, max_messages: int) -> None:
    """Bursts of 1-4 messages; every echo checked in order; round trips recorded."""
    tally = run.tally
    what = "echo (deflate)" if compress else "echo"
    rng = random.Random(index)
    sock = connect(run)
    try:
        agreed, leftover = handshake(run, sock, [client_offer()] if compress else None)
        if compress and not agreed:
            tally.fail("echo (deflate): permessage-deflate not negotiated")
        proto = client_protocol(agreed)
        proto.feed(leftover)
        sent = 0
        while not run.over() and sent < max_messages:
            burst = [make_message(index, sent + i, rng) for i in range(rng.randint(1, 4))]
            times = []
            for binary, payload in burst:
                proto.send(payload, binary=binary)
                sock.sendall(proto.data_to_send())
                times.append(time.monotonic())
            sent += len(burst)
            # Each echo is timed as it completes: read until the next one is there.
            for i in range(len(burst)):
                if not read_until(sock, proto, partial(has_message, proto, i), IO_SECONDS):
                    raise TimeoutError(f"no echo within {IO_SECONDS:g} s (message {sent - len(burst) + i})")
                if len(proto.received) > i:
                    with tally.lock:
                        tally.rtts.append(time.monotonic() - times[i])
            got = proto.received[: len(burst)]
            del proto.received[: len(burst)]
            for (binary, payload), message in zip(burst, got, strict=False):
                kind = BinaryMessage if binary else TextMessage
                if type(message) is not kind or message.data != payload:
                    tally.fail(f"{what}: an echo differs from the message sent (or is out of order)")
                else:
                    tally.count(f"{what}: messages echoed intact")
            if len(got) < len(burst):
                tally.fail(f"{what}: the server closed the connection", repr(proto.close_received))
                return
            run.pause(rng.uniform(0.005, 0.03))
        proto.close(1000)
        sock.sendall(proto.data_to_send())
        if not read_until(sock, proto, partial(has_close, proto), IO_SECONDS):
            tally.fail(f"{what}: no close frame answering ours")
        else:
            tally.count(f"{what}: clients closed cleanly")
    finally:
        sock.close()


def slowloris(run: Run, wave_size: int) -> None:
    """Waves of half-open handshakes; each must be dropped by the server's handshake timeout."""
    tally = run.tally
    head = f"GET / HTTP/1.1\r\nHost: {run.host}\r\nUpgrade: websocket\r\n".encode("ascii")
    trickle = client_request(run.host, "/", new_key())
    # A wave needs the handshake timeout plus slack; waves start while that fits in the run.
    while run.left() > HANDSHAKE_TIMEOUT + 3 and not run.over():
        socks: list[tuple[socket.socket, bool]] = []
        started = time.monotonic()
        try:
            for i in range(wave_size):
                sock = connect(run)
                sock.setblocking(False)
                trickler = i % 5 == 0
                sock.send(trickle[:1] if trickler else head)
                socks.append((sock, trickler))
            tally.count("slowloris: half-open handshakes", len(socks))
            open_socks = {s.fileno(): (s, t) for s, t in socks}
            sent = 1
            bound = started + HANDSHAKE_TIMEOUT + 5
            while open_socks and time.monotonic() < bound and not run.stop.is_set():
                ready, _, _ = select.select(list(open_socks), [], [], 1.0)
                for fd in ready:
                    sock, _ = open_socks[fd]
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        answer = data[:60].decode("latin-1")
                        tally.fail("slowloris: the server answered a half-open handshake", answer)
                    del open_socks[fd]
                    with tally.lock:
                        tally.drop_times.append(time.monotonic() - started)
                if sent < len(trickle) - 5:  # one byte a second, never the end of the head
                    for sock, trickler in open_socks.values():
                        if trickler:
                            try:
                                sock.send(trickle[sent : sent + 1])
                            except OSError:
                                pass
                    sent += 1
            if open_socks and not run.stop.is_set():
                tally.fail(
                    f"slowloris: not dropped within {HANDSHAKE_TIMEOUT + 5:g} s",
                    f"{len(open_socks)} of {len(socks)} in a wave",
                )
            else:
                tally.count("slowloris: dropped by the server", len(socks) - len(open_socks))
        finally:
            for sock, _ in socks:
                sock.close()
        run.pause(1.0)


def garbage_handshakes(run: Run) -> None:
    tally = run.tally
    rng = random.Random(2)
    cases: list[tuple[str, Callable[[], bytes], tuple[str, ...]]] = [
        ("junk head", lambda: rng.randbytes(rng.randint(1, 300)).replace(b"\n", b"") + b"\r\n\r\n", ("400",)),
        ("17 KiB without an end", lambda: b"G" * (17 * 1024), ("431",)),
        (
            "version 8",
            lambda: client_request(run.host, "/", new_key()).replace(b"Version: 13", b"Version: 8"),
            ("426",),
        ),
        ("POST", lambda: client_request(run.host, "/", new_key()).replace(b"GET", b"POST", 1), ("400",)),
        ("plain GET", lambda: f"GET / HTTP/1.1\r\nHost: {run.host}\r\n\r\n".encode("ascii"), ("200",)),
    ]
    n = 0
    while not run.over() and n < 5000:
        name, make, statuses = cases[n % len(cases)]
        n += 1
        sock = connect(run)
        try:
            sock.sendall(make())
            data = read_status_line(sock)
            status = data.split(b" ", 2)[1].decode("latin-1") if data.startswith(b"HTTP/1.1 ") else ""
            if status in statuses:
                tally.count(f"garbage handshake ({name}): HTTP {status}")
            else:
                tally.fail(f"garbage handshake ({name}): answered {data[:40]!r}")
        except ConnectionResetError:
            if name == "17 KiB without an end":
                # The server closes with the rest of our junk unread: the kernel may reset the
                # connection before its 431 is read. That is the server refusing, as expected.
                tally.count(f"garbage handshake ({name}): reset")
            else:
                tally.fail(f"garbage handshake ({name}): connection reset")
        finally:
            sock.close()
        run.pause(0.02)


def read_status_line(sock: socket.socket) -> bytes:
    """What the server answers, up to its first line end (or EOF, or ``IO_SECONDS``)."""
    data = b""
    deadline = time.monotonic() + IO_SECONDS
    while b"\r\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def garbage_after_handshake(run: Run) -> None:
    tally = run.tally
    rng = random.Random(3)

    def junk() -> bytes:  # the mask key and whatever follows
        return rng.randbytes(rng.randrange(4, 2000))

    cases: list[tuple[str, Callable[[], bytes], set[int]]] = [
        ("RSV2 set", lambda: bytes([0xA1]) + build_frame(OPCODE_TEXT, b"hi", masked=True)[1:], {1002}),
        ("unmasked frame", lambda: build_frame(OPCODE_TEXT, b"hello", masked=False), {1002}),
        ("reserved opcode", lambda: build_frame(0x3, b"x", masked=True), {1002}),
        ("invalid UTF-8", lambda: build_frame(OPCODE_TEXT, b"ok\xc3\x28", masked=True), {1007}),
        ("stray continuation", lambda: build_frame(OPCODE_CONTINUATION, b"x", masked=True), {1002}),
        ("fragmented ping", lambda: build_frame(OPCODE_PING, b"x", fin=False, masked=True), {1002}),
        (
            "RSV bits, then random bytes",
            lambda: bytes([0xF0 | rng.randrange(16), 0x80 | rng.randrange(126)]) + junk(),
            {1002},
        ),
    ]
    n = 0
    while not run.over() and n < 5000:
        name, make, codes = cases[n % len(cases)]
        n += 1
        sock = connect(run)
        try:
            _, leftover = handshake(run, sock)
            sock.sendall(make())
            expect_close(run, sock, leftover, codes, f"garbage after handshake ({name})")
        except OSError as exc:
            tally.fail(f"garbage after handshake ({name}): {type(exc).__name__}", describe(exc))
        finally:
            sock.close()
        run.pause(0.02)


def oversized(run: Run) -> None:
    tally = run.tally
    big = b"a" * (400 * 1024)

    def header_only() -> bytes:
        return frame_header(OPCODE_BINARY, 2 * MAX_MESSAGE, True, False, KEY) + b"\x00" * 1000

    def fragments() -> bytes:
        masked = mask(big, KEY)
        return (
            frame_header(OPCODE_BINARY, len(big), False, False, KEY)
            + masked
            + frame_header(OPCODE_CONTINUATION, len(big), False, False, KEY)
            + masked
            + frame_header(OPCODE_CONTINUATION, len(big), True, False, KEY)
            + masked
        )

    def one_over() -> bytes:
        return build_frame(OPCODE_TEXT, b"a" * (MAX_MESSAGE + 1), masked=True)

    cases: list[tuple[str, Callable[[], bytes], set[int]]] = [
        ("2 MiB frame header", header_only, {1009}),
        ("3 x 400 KiB fragments", fragments, {1009}),
        ("1 MiB + 1 text", one_over, {1009}),
        ("64-bit length with the top bit", lambda: bytes([0x82, 0xFF]) + b"\xff" * 8 + KEY, {1002}),
    ]
    n = 0
    while not run.over() and n < 2000:
        name, make, codes = cases[n % len(cases)]
        n += 1
        sock = connect(run)
        try:
            _, leftover = handshake(run, sock)
            try:
                sock.sendall(make())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server failed us from the header and closed before the payload ended
            expect_close(run, sock, leftover, codes, f"oversized ({name})")
        except OSError as exc:
            tally.fail(f"oversized ({name}): {type(exc).__name__}", describe(exc))
        finally:
            sock.close()
        run.pause(0.1)


def bombs(run: Run) -> None:
    tally = run.tally
    zeros = b"\x00" * (64 * 1024 * 1024)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = c.compress(zeros) + c.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]
    del zeros
    third = len(bomb) // 3

    def whole() -> bytes:
        return build_frame(OPCODE_BINARY, bomb, rsv1=True, masked=True)

    def fragmented() -> bytes:
        return (
            build_frame(OPCODE_TEXT, bomb[:third], fin=False, rsv1=True, masked=True)
            + build_frame(OPCODE_CONTINUATION, bomb[third : 2 * third], fin=False, masked=True)
            + build_frame(OPCODE_CONTINUATION, bomb[2 * third :], masked=True)
        )

    cases = [("whole", whole), ("fragmented", fragmented)]
    n = 0
    while not run.over() and n < 2000:
        name, make = cases[n % len(cases)]
        n += 1
        sock = connect(run)
        try:
            agreed, leftover = handshake(run, sock, [client_offer()])
            if not agreed:
                tally.fail("bomb: permessage-deflate not negotiated")
                return
            try:
                sock.sendall(make())
            except (BrokenPipeError, ConnectionResetError):
                pass
            expect_close(run, sock, leftover, {1009}, f"decompression bomb ({name}, {len(bomb) // 1024} KiB)")
        except OSError as exc:
            tally.fail(f"bomb ({name}): {type(exc).__name__}", describe(exc))
        finally:
            sock.close()
        run.pause(0.05)


def never_reader(run: Run, index: int, hold: float) -> None:
    """Send echoable messages until our socket blocks, never read, hold, then reset."""
    tally = run.tally
    run.pause(index * 2.0)
    rounds = 0
    while not run.over() and rounds < 100:
        rounds += 1
        sock = connect(run, rcvbuf=4096)
        try:
            _, _ = handshake(run, sock)
            sock.setblocking(False)
            frame = build_frame(OPCODE_BINARY, b"n" * 65536, masked=True)
            pending = b""
            sent = 0
            blocked_since = None
            end = time.monotonic() + hold
            # Keep pushing until the server stops reading us (our sends block for a while).
            while time.monotonic() < end and sent < 64 * 1024 * 1024 and not run.over():
                if not pending:
                    pending = frame
                try:
                    k = sock.send(pending)
                    pending = pending[k:]
                    sent += k
                    blocked_since = None
                except BlockingIOError:
                    if blocked_since is None:
                        blocked_since = time.monotonic()
                    run.pause(0.05)
            tally.count("never-reader: connections held unread")
            tally.count("never-reader: MiB pushed", sent // (1024 * 1024))
            if blocked_since is not None:
                tally.count("never-reader: server stopped reading us (backpressure)")
            run.pause(max(0.0, end - time.monotonic()))
        except OSError as exc:
            tally.fail(f"never-reader: {type(exc).__name__}", describe(exc))
        finally:
            reset(sock)
        run.pause(0.5)


def vanishers(run: Run) -> None:
    tally = run.tally
    rng = random.Random(5)
    n = 0
    while not run.over() and n < 20000:
        n += 1
        kind = n % 4
        sock = connect(run)
        try:
            if kind == 0:
                sock.sendall(client_request(run.host, "/", new_key())[:30])
                what = "mid-handshake"
            else:
                _, _ = handshake(run, sock)
                if kind == 1:
                    head = frame_header(OPCODE_BINARY, 5000, True, False, KEY)
                    sock.sendall(head + b"x" * rng.randint(0, 4000))
                    what = "mid-frame"
                elif kind == 2:
                    what = "idle"
                else:
                    sock.sendall(build_frame(OPCODE_TEXT, b"y" * 50000, masked=True))
                    what = "with an echo pending"
            tally.count(f"vanished (RST) {what}")
        except OSError as exc:
            tally.fail(f"vanisher: {type(exc).__name__}", describe(exc))
        finally:
            reset(sock)
        run.pause(0.01)


def ping_flood(run: Run, pings: int) -> None:
    tally = run.tally
    rng = random.Random(6)
    n = 0
    while not run.over() and n < 500:
        n += 1
        sock = connect(run)
        try:
            agreed, leftover = handshake(run, sock)
            proto = client_protocol(agreed)
            proto.feed(leftover)
            # Numbered, so that each pong names its ping.
            bodies = [i.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 121)) for i in range(pings)]
            if n % 3 == 0:
                # A flood from a peer that never reads its pongs, then vanishes.
                sock.settimeout(2.0)
                try:
                    sock.sendall(b"".join(build_frame(OPCODE_PING, b, masked=True) for b in bodies))
                except (TimeoutError, OSError):
                    pass  # the server stopped reading us: its pongs are backed up
                tally.count("ping flood: unread floods, then reset")
                reset(sock)
                continue
            sock.sendall(b"".join(build_frame(OPCODE_PING, b, masked=True) for b in bodies))
            ok = read_until(sock, proto, partial(has_pong, proto, bodies[-1]), 3 * IO_SECONDS)
            pongs = [m.data for m in proto.received if isinstance(m, PongControlMessage)]
            # RFC 6455 5.5.3: a pong may answer only the most recent of several pings. So the
            # pongs must answer pings in order, each with its ping's data, the last one included.
            numbers = [int.from_bytes(p[:4], "big") for p in pongs]
            answered = all(i < pings and p == bodies[i] for p, i in zip(pongs, numbers, strict=True))
            in_order = all(a < b for a, b in itertools.pairwise(numbers))
            if not ok or not answered or not in_order or numbers[-1:] != [pings - 1]:
                tally.fail(
                    "ping flood: pongs out of order, differing or the last ping unanswered",
                    f"{len(pongs)} pongs to {pings} pings",
                )
            else:
                tally.count("ping flood: floods answered, the last ping's pong included")
                tally.count("ping flood: pings", pings)
                tally.count("ping flood: pongs", len(pongs))
            sock.sendall(build_frame(OPCODE_CLOSE, encode_close_payload(1000), masked=True))
        except OSError as exc:
            tally.fail(f"ping flood: {type(exc).__name__}", describe(exc))
        finally:
            sock.close()
        run.pause(0.3)


def cycler(run: Run, index: int, count: int, spread: float, until: float) -> None:
    """``count`` connect/handshake/disconnect cycles, paced over ``spread`` seconds; on a machine
    too busy to keep the pace, the last ones may run after the end of the run, up to ``until``."""
    tally = run.tally
    interval = spread / max(1, count)
    start = time.monotonic()
    for k in range(count):
        if run.stop.is_set() or time.monotonic() >= until:
            return
        due = start + k * interval
        now = time.monotonic()
        if due > now:
            run.stop.wait(due - now)
        if time.monotonic() > run.deadline:
            tally.count("cycles: of which after the end of the run (a slow machine)")
        try:
            sock = connect(run)
        except OSError as exc:
            tally.fail(f"cycle: connect: {type(exc).__name__}", describe(exc))
            continue
        try:
            _, leftover = handshake(run, sock)
            how = (k + index) % 3
            if how == 0:
                sock.sendall(build_frame(OPCODE_CLOSE, encode_close_payload(1000), masked=True))
                proto = Protocol(client=True, max_message_size=None)
                proto.feed(leftover)
                closed = read_until(sock, proto, partial(has_close, proto), IO_SECONDS)
                if not closed:
                    tally.fail("cycle: no close frame answering ours")
                # The server closes TCP first after the closing handshake.
                sock.settimeout(IO_SECONDS)
                if sock.recv(16) != b"":
                    tally.fail("cycle: data after the close frame")
                tally.count("cycles: closing handshake")
                sock.close()
            elif how == 1:
                sock.close()
                tally.count("cycles: FIN without a close frame")
            else:
                reset(sock)
                tally.count("cycles: RST")
        except (OSError, HandshakeError) as exc:
            tally.fail(f"cycle: {type(exc).__name__}", describe(exc))
            sock.close()


# ---------------------------------------------------------------------------- issue 13's attacks
#
# Each of these checks the outcome a server that bounds what one peer costs must give: a close
# code, a status, a drop, the server's RSS growth while it ran (``run.heavy`` serialises the
# floods that measure it, so one's growth is not another's), or how long the server took.


def server_rss(run: Run) -> int:
    """The server's VmRSS in KiB (0 if unknown)."""
    return (rss_kib(run.pid) or 0) if run.pid else 0


def server_unread(run: Run, sock: socket.socket) -> int | None:
    """Bytes we sent on ``sock`` that the server has not read yet (its socket's receive queue,
    from ``/proc/net/tcp``; None if not found)."""
    ours = sock.getsockname()[1]
    theirs = run.address[1]
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == theirs and int(fields[2].rsplit(":", 1)[1], 16) == ours:
            return int(fields[4].split(":")[1], 16)
    return None


def wait_read(run: Run, sock: socket.socket, seconds: float = 10.0) -> None:
    """Wait (at most ``seconds``) until the server has read all we sent on ``sock``, so that what
    it costs shows in its RSS (on a busy machine it lags behind our sends)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not run.stop.is_set():
        if not server_unread(run, sock):  # 0, or the connection is gone
            return
        time.sleep(0.05)


def check_rise(run: Run, what: str, rss0: int, budget_mib: float = RSS_RISE_MIB) -> None:
    """Fail ``what`` if the server's RSS grew more than ``budget_mib`` since ``rss0``."""
    if not rss0:
        return
    rise = (server_rss(run) - rss0) / 1024
    run.tally.note_max(f"{what}: server RSS rise, MiB", rise)
    if rise > budget_mib:
        run.tally.fail(f"{what}: server RSS grew over {budget_mib:g} MiB", f"{rise:.0f} MiB")


def poll_flood(
    run: Run, sock: socket.socket, proto: Protocol, chunk: bytes, max_bytes: int, seconds: float
) -> tuple[int, str]:
    """Send ``chunk`` over and over (non-blocking) while reading what the server sends into
    ``proto``, until ``max_bytes`` are sent, ``seconds`` pass, or the server closes (its close
    frame, EOF or a reset). Returns (bytes sent, how it ended: "close", "eof", "reset",
    "limit", "time", "blocked" -- our sends blocked for 3 s: the server stopped reading us)."""
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLOUT)
    view = memoryview(chunk)
    pos = sent = 0
    end = time.monotonic() + seconds
    blocked_since = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if sent >= max_bytes:
                return sent, "limit"
            if now >= end or run.stop.is_set():
                return sent, "time"
            if now - blocked_since > 3.0:
                return sent, "blocked"
            events = poller.poll(200)
            for _, ev in events:
                if ev & (select.POLLIN | select.POLLERR | select.POLLHUP):
                    try:
                        data = sock.recv(262144)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        return sent, "reset"
                    if data is not None:
                        if not data:
                            return sent, "eof"
                        proto.feed(data)
                        del proto.received[:]
                        if proto.close_received is not None:
                            return sent, "close"
                if ev & select.POLLOUT:
                    try:
                        k = sock.send(view[pos:])
                    except BlockingIOError:
                        continue
                    except OSError:
                        return sent, "reset"
                    sent += k
                    pos += k
                    if pos >= len(view):
                        pos = 0
                    blocked_since = time.monotonic()
    finally:
        sock.settimeout(IO_SECONDS)


def read_close_or_end(sock: socket.socket, proto: Protocol, seconds: float, limit: int) -> tuple[str, int]:
    """Read (discarding messages) until the server's close frame, EOF, a reset, ``limit`` bytes
    or ``seconds`` of silence: ("close CODE" | "eof" | "reset" | "open", bytes read)."""
    got = 0
    while got <= limit:
        sock.settimeout(seconds)
        try:
            data = sock.recv(262144)
        except TimeoutError:
            return "open", got
        except OSError:
            return "reset", got
        if not data:
            return "eof", got
        got += len(data)
        try:
            proto.feed(data)
        except Exception:  # a frame cut short where the server dropped its buffer: not ours to judge
            proto = Protocol(client=True, max_message_size=None)
        del proto.received[:]
        if proto.close_received is not None:
            return f"close {proto.close_received.code}", got
    return "open", got


def split_streams(size: int, count: int) -> bytes:
    """``count`` complete raw deflate streams (each ends with a BFINAL block) of ``size`` zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(b"\x00" * size) + c.flush()) * count


def send_split(
    run: Run, sock: socket.socket, payload: bytes, seconds: float
) -> tuple[Protocol | None, float]:
    """Handshake with permessage-deflate on ``sock``, send ``payload`` as one compressed binary
    frame and wait (at most ``seconds``) for the answer: (the client's protocol, holding it, or
    None if deflate was not agreed; seconds from the last byte sent to the answer, or inf)."""
    # A large send buffer: the frame goes in one write, so that the server reads it at once.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    agreed, leftover = handshake(run, sock, [client_offer()])
    if not agreed:
        return None, 0.0
    proto = client_protocol(agreed)
    proto.feed(leftover)
    try:
        sock.sendall(build_frame(OPCODE_BINARY, payload, rsv1=True, masked=True))
    except (BrokenPipeError, ConnectionResetError):
        pass
    sent_at = time.monotonic()
    answered = read_until(sock, proto, partial(has_message, proto, 0), seconds)
    return proto, (time.monotonic() - sent_at) if answered else math.inf


def judge_split(run: Run, what: str, proto: Protocol, size: int | None) -> None:
    """The answer to a BFINAL-split message of ``size`` bytes inflated (None: over the limit):
    its echo, or a close 1007/1008/1009 (a server that bounds the streams per message), or
    (over the limit) 1009."""
    echoes = [m for m in proto.received if isinstance(m, BinaryMessage)]
    if echoes:
        if size is not None and echoes[0].data == b"\x00" * size:
            run.tally.count(f"{what}: echoed intact")
        else:
            run.tally.fail(f"{what}: echo differs", f"{len(echoes[0].data)} bytes")
        return
    code = proto.close_received.code if proto.close_received else None
    if code == 1009 or (size is not None and code in (1007, 1008)):
        run.tally.count(f"{what}: close {code}")
    else:
        run.tally.fail(f"{what}: close {code} (expected {'echo, 1007, 1008 or ' if size else ''}1009)")


def deflate_split(run: Run) -> None:
    """Item 1 against the chaos server (1 MiB limit): one frame of 8,190 complete deflate streams
    of 128 zeros each, with BFINAL (48 KiB inflating to 1 MiB), must be echoed (or refused: 1007,
    1008 or 1009); 4,000 streams of 4 KiB (16 MiB, the issue's shape): 1009. The server's RSS
    must not grow by more than RSS_RISE_MIB. (Under a 1 MiB limit today's quadratic inflate
    costs ~0.2 s a message, too little to tell from a fix by time: :func:`deflate_split_16m`
    does that.)"""
    tally = run.tally
    cases = [
        ("48 KiB -> 1 MiB in 8,190 streams", split_streams(128, 8190), 8190 * 128),
        ("78 KiB -> 16 MiB in 4,000 streams", split_streams(4096, 4000), None),
    ]
    n = 0
    while not run.over() and n < 500:
        name, payload, size = cases[n % len(cases)]
        what = f"deflate BFINAL-split ({name})"
        n += 1
        run.heavy.acquire()  # before connecting: the server drops a handshake idle for 10 s
        try:
            sock = connect(run)
        except BaseException:
            run.heavy.release()
            raise
        try:
            try:
                rss0 = server_rss(run)
                proto, took = send_split(run, sock, payload, 6 * IO_SECONDS)
                check_rise(run, f"deflate BFINAL-split ({name})", rss0)
            finally:
                run.heavy.release()
            if proto is None:
                tally.fail("deflate BFINAL-split: permessage-deflate not negotiated")
                return
            if took == math.inf:
                tally.fail(f"{what}: no answer within {6 * IO_SECONDS:g} s")
                continue
            tally.note_max(f"{what}: slowest answer, s", took)
            judge_split(run, what, proto, size)
            if proto.close_received is None:
                proto.close(1000)
                sock.sendall(proto.data_to_send())
        except OSError as exc:
            tally.fail(f"deflate BFINAL-split: {type(exc).__name__}", describe(exc))
        finally:
            sock.close()
            tally.round_done()
        run.pause(0.5)


def deflate_split_16m(run: Run, p99_ms: float) -> None:
    """Item 1 as the issue saw it, on a server of its own with the CLI's default 16 MiB limit
    (``python -m wsloop serve``): one 78 KiB frame of 4,000 complete deflate streams of 4 KiB of
    zeros, each with BFINAL, inflating to 16 MiB. The server (``ChaosDigestWebSocket``: it
    answers with the message's length and CRC-32, so that the cost is the inflating, not an echo
    of 16 MiB) must answer right, or refuse it (1007/1008/1009), within DEFLATE_SPLIT_SECONDS (a
    linear inflate takes ~0.05 s; today's quadratic loop over 15 s here, 10.7 s in the issue),
    and a well-behaved client of that server, timing a small echo every 10 ms meanwhile, must
    keep its p99 under ``p99_ms``."""
    tally = run.tally
    server = ServerProcess(
        argv=[sys.executable, "-m", "wsloop", "serve", "--host", HOST, "--port", "0", "--log-level", "INFO",
         "--handler", "chaoshandler:ChaosDigestWebSocket"],
        env=run.server_env,
        timeout=None,
        stop_timeout=10.0,
    )  # fmt: skip
    own = Run(0, run.deadline, tally)
    rtts: list[float] = []
    done = threading.Event()

    def prober() -> None:
        """Small echoes every 10 ms on the same server, round trips recorded."""
        sock = connect(own)
        try:
            _, leftover = handshake(own, sock)
            proto = client_protocol([])
            proto.feed(leftover)
            while not done.is_set() and len(rtts) < 100_000:
                proto.send(b"probe", binary=True)
                sock.sendall(proto.data_to_send())
                start = time.monotonic()
                if not read_until(sock, proto, partial(has_message, proto, 0), 10.0) or not proto.received:
                    tally.fail("deflate BFINAL-split (16 MiB server): the other client got no echo in 10 s")
                    return
                rtts.append(time.monotonic() - start)
                del proto.received[:]
                done.wait(0.01)
        finally:
            sock.close()

    try:
        if not server.wait_ready(READY_SECONDS):
            tally.fail("deflate BFINAL-split (16 MiB server): the server did not start")
            return
        own.address = (HOST, server.port)
        own.host = f"{HOST}:{server.port}"
        probe = threading.Thread(
            target=guarded, args=(tally, "deflate-split-2", prober, ()), name="deflate-split-2", daemon=True
        )
        probe.start()
        payload = split_streams(4096, 4000)
        digest = f"{4000 * 4096} {zlib.crc32(bytes(4000 * 4096))}"
        what = "deflate BFINAL-split (16 MiB server, 78 KiB -> 16 MiB in 4,000 streams)"
        n = 0
        while run.left() > 3 and not run.over() and n < 100:
            n += 1
            sock = connect(own)
            try:
                proto, took = send_split(own, sock, payload, min(15.0, run.left() + 5))
                if proto is None:
                    tally.fail("deflate BFINAL-split (16 MiB server): permessage-deflate not negotiated")
                    return
                tally.note_max(f"{what}: slowest answer, s", took)
                if took > DEFLATE_SPLIT_SECONDS:
                    tally.fail(f"{what}: no answer within {DEFLATE_SPLIT_SECONDS:g} s", f"{took:.1f} s")
                if took != math.inf:
                    texts = [m for m in proto.received if isinstance(m, TextMessage)]
                    code = proto.close_received.code if proto.close_received else None
                    if texts and str(texts[0]) == digest:
                        tally.count(f"{what}: inflated right (length and CRC-32)")
                    elif texts:
                        tally.fail(f"{what}: inflated wrong", f"{texts[0]} (expected {digest})")
                    elif code in (1007, 1008, 1009):
                        tally.count(f"{what}: close {code}")
                    else:
                        tally.fail(f"{what}: close {code} (expected its length and CRC, 1007, 1008 or 1009)")
            except OSError as exc:
                tally.fail(f"deflate BFINAL-split (16 MiB server): {type(exc).__name__}", describe(exc))
            finally:
                sock.close()
                tally.round_done()
            run.pause(1.0)
        done.set()
        probe.join(15.0)
        p99 = percentile(rtts, 0.99)
        tally.note_max("deflate BFINAL-split (16 MiB server): the other client's p99, ms", p99 * 1e3)
        if not rtts:
            tally.fail("deflate BFINAL-split (16 MiB server): the other client timed no echo")
        elif p99 * 1e3 >= p99_ms:
            tally.fail(
                f"deflate BFINAL-split (16 MiB server): the other client's p99 over {p99_ms:g} ms",
                f"{p99 * 1e3:.0f} ms over {len(rtts)} echoes",
            )
    finally:
        done.set()
        server.stop()
        if server.exit_code != 0 or server.killed:
            tally.fail(
                "deflate BFINAL-split (16 MiB server): not stopped cleanly by SIGTERM",
                f"exit code {server.exit_code}{', killed' if server.killed else ''}",
            )
        server.log.close()


def tiny_fragments(run: Run, max_mib: int) -> None:
    """Item 2: a message that never ends, made of empty continuation frames (6 bytes on the
    wire each), or of 2-byte fragments (512 KiB of payload in 262,144 of them: under the 1 MiB
    limit, but each part costs tens of bytes). The server must bound a message's memory, not
    only its payload bytes: close 1009 or 1008 (either accepted, the fix decides) before the
    flood ends, with its RSS growing less than RSS_RISE_MIB."""
    tally = run.tally
    empty = build_frame(OPCODE_CONTINUATION, b"", fin=False, masked=True) * 10000
    two = build_frame(OPCODE_CONTINUATION, b"ab", fin=False, masked=True) * 8192
    cases = [
        ("empty continuations", empty, 6, max_mib * 1024 * 1024),
        ("2-byte fragments", two, 8, 32 * len(two)),  # 262,144 fragments, 512 KiB of payload
    ]
    n = 0
    while not run.over() and n < 500:
        name, chunk, frame_size, limit = cases[n % len(cases)]
        what = f"tiny fragments ({name})"
        n += 1
        sock = connect(run, rcvbuf=65536)
        try:
            _, leftover = handshake(run, sock)
            proto = Protocol(client=True, max_message_size=None)
            proto.feed(leftover)
            sock.sendall(build_frame(OPCODE_BINARY, b"x", fin=False, masked=True))
            with run.heavy:
                rss0 = server_rss(run)
                start = time.monotonic()
                sent, how = poll_flood(run, sock, proto, chunk, limit, max(2.0, min(10.0, run.left())))
                if how in ("limit", "time", "blocked"):
                    # Flood over and not closed: give the server a last moment to close.
                    wait_read(run, sock)
                    how, _ = read_close_or_end(sock, proto, 2.0, 1 << 20)
                took = time.monotonic() - start
                check_rise(run, "tiny fragments", rss0)
            if how == "close" and proto.close_received is not None:
                how = f"close {proto.close_received.code}"
            code = int(how[6:]) if how.startswith("close ") else None
            frames = sent // frame_size
            detail = f"after {frames} frames sent ({sent / 2**20:.1f} MiB) in {took:.1f} s"
            if code in (1008, 1009):
                tally.count(f"{what}: close {code}")
                tally.note_max(f"{what}: most frames sent before the close came", frames)
            elif code is not None:
                tally.fail(f"{what}: close {code} (expected 1008 or 1009)", detail)
            elif how == "open":
                tally.fail(f"{what}: not closed (expected 1008 or 1009)", detail)
            else:
                tally.fail(f"{what}: {how} without a close frame (expected 1008 or 1009)", detail)
        except OSError as exc:
            tally.fail(f"tiny fragments: {type(exc).__name__}", describe(exc))
        finally:
            reset(sock)
            tally.round_done()
        run.pause(0.5)


def idle_flood(run: Run, count: int) -> None:
    """Item 3: waves of ``count`` TCP connections that send nothing, held open. The server must
    keep serving (a fresh client gets its 101 and its echo, three times during the wave) and
    drop each idle one by its handshake timeout (plus 5 s). (chaos does not lower the server's
    descriptor limit: the EMFILE path itself is the server tests' business.)"""
    tally = run.tally
    waves = 0
    while run.left() > HANDSHAKE_TIMEOUT + 3 and not run.over() and waves < 20:
        waves += 1
        socks: list[socket.socket] = []
        started = time.monotonic()
        try:
            for _ in range(count):
                try:
                    socks.append(connect(run))
                except OSError as exc:
                    tally.fail(f"idle flood: connect: {type(exc).__name__}", describe(exc))
                    break
            tally.count("idle flood: idle connections", len(socks))
            poller = select.poll()
            for sock in socks:
                poller.register(sock, select.POLLIN)
            live = {sock.fileno(): sock for sock in socks}
            probes = [started + 0.5, started + HANDSHAKE_TIMEOUT / 2, started + HANDSHAKE_TIMEOUT - 1]
            bound = started + HANDSHAKE_TIMEOUT + 5
            while live and time.monotonic() < bound and not run.stop.is_set():
                if probes and time.monotonic() >= probes[0]:
                    probes.pop(0)
                    probe_client(run, "idle flood")
                for fd, _ in poller.poll(200):
                    if fd not in live:
                        continue
                    sock = live.pop(fd)
                    poller.unregister(fd)
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        tally.fail(
                            "idle flood: the server sent something to an idle connect", repr(data[:40])
                        )
                    tally.note_max("idle flood: last drop, s after the connects", time.monotonic() - started)
                    tally.note_min("idle flood: first drop, s after the connects", time.monotonic() - started)
            if live and not run.stop.is_set():
                tally.fail(
                    f"idle flood: not dropped within {HANDSHAKE_TIMEOUT + 5:g} s",
                    f"{len(live)} of {len(socks)} in a wave",
                )
            else:
                tally.count("idle flood: dropped by the server", len(socks) - len(live))
        finally:
            for sock in socks:
                sock.close()
            tally.round_done()
        run.pause(1.0)


def probe_client(run: Run, who: str) -> None:
    """A fresh well-behaved client: handshake, one echo, closing handshake (fails ``who``)."""
    try:
        sock = connect(run)
    except OSError as exc:
        run.tally.fail(f"{who}: a fresh client could not connect", describe(exc))
        return
    try:
        _, leftover = handshake(run, sock)
        proto = client_protocol([])
        proto.feed(leftover)
        proto.send(b"probe", binary=True)
        sock.sendall(proto.data_to_send())
        if not read_until(sock, proto, partial(has_message, proto, 0), IO_SECONDS) or not proto.received:
            run.tally.fail(f"{who}: a fresh client got no echo within {IO_SECONDS:g} s")
            return
        if proto.received[0].data != b"probe":
            run.tally.fail(f"{who}: a fresh client's echo differs")
            return
        proto.close(1000)
        sock.sendall(proto.data_to_send())
        read_until(sock, proto, partial(has_close, proto), IO_SECONDS)
        run.tally.count(f"{who}: fresh clients served meanwhile")
    except (OSError, HandshakeError) as exc:
        run.tally.fail(f"{who}: a fresh client failed: {type(exc).__name__}", describe(exc))
    finally:
        sock.close()


def slow_subscriber(run: Run, publish_mib: int) -> None:
    """Item 4: a subscriber that never reads (4 KiB receive buffer) next to one that does, while
    ``publish_mib`` MiB are published on their channel from the reactor's thread (64 KiB
    messages, 16 per command). The server must cap the never-reader's buffered output: close
    it (1008 or 1011 if its close frame gets through, or just the connection: 1006 -- all three
    accepted, the fix decides) and free its buffer, long before it has all of it; the reader
    must get every message, in order."""
    tally = run.tally
    size, per = 65536, 16
    rounds = 0
    while not run.over() and rounds < 50:
        rounds += 1
        channel = f"chaos.{rounds}"
        sub = build_frame(OPCODE_TEXT, f"chaos/sub {channel}".encode(), masked=True)
        slow = good = None
        try:
            slow = connect(run, rcvbuf=4096)
            _, leftover = handshake(run, slow)
            slow.sendall(sub)
            slow_proto = Protocol(client=True, max_message_size=None)
            slow_proto.feed(leftover)
            if not read_until(slow, slow_proto, partial(has_message, slow_proto, 0), IO_SECONDS):
                tally.fail("slow subscriber: no answer to subscribe")
                return
            good = connect(run)
            _, leftover = handshake(run, good)
            proto = client_protocol([])
            proto.feed(leftover)
            good.sendall(sub)
            if not read_until(good, proto, partial(has_message, proto, 0), IO_SECONDS):
                tally.fail("slow subscriber: the reader got no answer to subscribe")
                return
            del proto.received[:]
            # From here on the slow one never reads, until the end of the round.
            with run.heavy:
                rss0 = server_rss(run)
                seq = 0
                while seq * size < publish_mib * 1024 * 1024 and not run.stop.is_set():
                    command = f"chaos/pub {channel} {seq} {per} {size}".encode()
                    good.sendall(build_frame(OPCODE_TEXT, command, masked=True))
                    if not read_until(good, proto, partial(has_message, proto, per - 1), IO_SECONDS):
                        tally.fail(f"slow subscriber: the reader got {len(proto.received)}/{per} messages")
                        return
                    numbers = [int.from_bytes(m.data[:8], "big") for m in proto.received]
                    if numbers != list(range(seq, seq + per)) or any(
                        len(m.data) != size for m in proto.received
                    ):
                        tally.fail("slow subscriber: the reader's messages differ or are out of order")
                        return
                    del proto.received[:]
                    seq += per
                tally.count(
                    "slow subscriber: MiB published to the reader and the never-reader", seq * size >> 20
                )
                run.pause(0.5)
                rise = (server_rss(run) - rss0) / 1024 if rss0 else 0.0
                tally.note_max("slow subscriber: server RSS rise, MiB (reported, not checked)", rise)
            # Now read what the server kept for the never-reader: it must have been closed.
            how, got = read_close_or_end(slow, slow_proto, 2.0, (publish_mib + 8) << 20)
            tally.note_max("slow subscriber: MiB the never-reader could still read", got / 2**20)
            if how in ("close 1008", "close 1011", "eof", "reset"):
                tally.count(f"slow subscriber: never-reader closed by the server ({how})")
            else:
                tally.fail(
                    f"slow subscriber: never-reader {how} after {seq * size >> 20} MiB published"
                    " (expected close 1008/1011/1006)",
                    f"it could still read {got / 2**20:.1f} MiB",
                )
            tally.count("slow subscriber: reader got every message in order")
            proto.close(1000)
            good.sendall(proto.data_to_send())
        except (OSError, HandshakeError) as exc:
            tally.fail(f"slow subscriber: {type(exc).__name__}", describe(exc))
        finally:
            for sock in (slow, good):
                if sock is not None:
                    reset(sock)
            tally.round_done()
        run.pause(1.0)


def unread_pings(run: Run, pings: int, rate: float) -> None:
    """Item 5: ``pings`` empty pings (6 bytes each) from a peer that never reads (4 KiB receive
    buffer), at ``rate`` bytes a second (0: as fast as the server takes them), held until the
    server has read them all (its receive queue, in ``/proc/net/tcp``) and 0.5 s more, then
    reset. Whether the server coalesces its pongs or counts their memory and stops reading us,
    its RSS must grow less than RSS_RISE_MIB.

    Unpaced by default, as an attacker sends: each 256 KiB the server reads then holds ~43,690
    pings that the reactor handles in one go (~0.1 s of Python, more on a busy machine), and
    every other client's round trip can wait that long: the echo clients' p99 shows it. Paced
    (``--ping-rate 1.5``, a rate the server keeps up with, reading small pieces) the stalls
    go, and so does the memory today's server piles up (its RSS grows ~15 MiB, fixed or not,
    against ~50 MiB unpaced): the unpaced flood is the one that tells item 5 apart."""
    tally = run.tally
    frame = build_frame(OPCODE_PING, b"", masked=True)
    chunk = frame * 10000
    n = 0
    while not run.over() and n < 100:
        n += 1
        sock = connect(run, rcvbuf=4096)
        try:
            _, _ = handshake(run, sock)
            with run.heavy:
                rss0 = server_rss(run)
                sent, how = flood_unread(
                    run, sock, chunk, pings * len(frame), max(2.0, min(10.0, run.left())), rate
                )
                wait_read(run, sock)
                run.pause(0.5)
                check_rise(run, "unread pings", rss0)
            tally.count("unread pings: floods, then reset")
            tally.count("unread pings: pings sent", sent // len(frame))
            tally.count(f"unread pings: flood ended by {how}")
        except OSError as exc:
            tally.fail(f"unread pings: {type(exc).__name__}", describe(exc))
        finally:
            reset(sock)
            tally.round_done()
        run.pause(2.0)


def flood_unread(
    run: Run, sock: socket.socket, chunk: bytes, max_bytes: int, seconds: float, rate: float = 0.0
) -> tuple[int, str]:
    """Send ``chunk`` over and over without ever reading, at most ``rate`` bytes a second (0: no
    pacing): until ``max_bytes``, ``seconds``, our sends blocking for 3 s ("blocked": the server
    stopped reading us) or an error."""
    sock.setblocking(False)
    view = memoryview(chunk)
    pos = sent = 0
    start = time.monotonic()
    end = start + seconds
    blocked_since = start
    step = max(6, int(rate / 200)) if rate else len(view)  # pieces of 5 ms at that rate
    try:
        while sent < max_bytes:
            now = time.monotonic()
            if now >= end or run.stop.is_set():
                return sent, "time"
            if now - blocked_since > 3.0:
                return sent, "blocked"
            if rate and sent > rate * (now - start):
                run.stop.wait(0.005)
                blocked_since += time.monotonic() - now  # waiting on ourselves is not blocking
                continue
            try:
                k = sock.send(view[pos : pos + min(step, len(view) - pos, max_bytes - sent)])
            except BlockingIOError:
                select.poll().poll(50)
                continue
            except OSError:
                return sent, "reset"
            sent += k
            pos = (pos + k) % len(view)
            blocked_since = time.monotonic()
        return sent, "limit"
    finally:
        sock.settimeout(IO_SECONDS)


def churn(run: Run, batch: int) -> None:
    """Item 14's shape, as a peer can play it: ``batch`` websockets open, all reset at once
    (their fds free for reuse in the server), at once ``batch + 10`` fresh clients connect and
    send their upgrade requests; each fresh one must get its 101 and its echo. Between batches,
    single connect + reset + connect churn."""
    tally = run.tally
    rounds = 0
    while not run.over() and rounds < 500:
        rounds += 1
        victims: list[socket.socket] = []
        fresh: list[socket.socket] = []
        try:
            for _ in range(batch):
                sock = connect(run)
                victims.append(sock)
                handshake(run, sock)
            for i, sock in enumerate(victims):
                if i % 2:  # half of them mid-frame
                    try:
                        sock.send(frame_header(OPCODE_BINARY, 5000, True, False, KEY) + b"z" * 100)
                    except OSError:
                        pass
                reset(sock)
            tally.count("churn: websockets reset at once", len(victims))
            victims.clear()
            keys = []
            for _ in range(batch + 10):  # all at once: connect and send the upgrade request
                fresh.append(connect(run))
                keys.append(new_key())
                fresh[-1].sendall(client_request(run.host, "/", keys[-1]))
            served = 0
            for k, sock in enumerate(fresh):
                _, leftover = finish_handshake(sock, keys[k])
                proto = client_protocol([])
                proto.feed(leftover)
                payload = f"churn {rounds}.{k}".encode()
                proto.send(payload, binary=True)
                sock.sendall(proto.data_to_send())
                read_until(sock, proto, partial(has_message, proto, 0), IO_SECONDS)
                if proto.received and proto.received[0].data == payload:
                    served += 1
                else:
                    tally.fail(
                        "churn: a fresh client got no echo (or a wrong one)", repr(proto.close_received)
                    )
            tally.count("churn: fresh clients served after a reset batch", served)
        except (OSError, HandshakeError) as exc:
            tally.fail(f"churn: {type(exc).__name__}", describe(exc))
        finally:
            for sock in victims:
                reset(sock)
            for sock in fresh:
                sock.close()
            tally.round_done()
        # Single churn: connect, reset, connect again at once, and that one must be served.
        for _ in range(20):
            if run.over():
                break
            try:
                reset(connect(run))
            except OSError as exc:
                tally.fail(f"churn: connect: {type(exc).__name__}", describe(exc))
            probe_client(run, "churn")
        run.pause(0.2)


def bad_heads(run: Run) -> None:
    """Item 16: upgrade requests, valid but for one thing RFC 9112 makes a 400 -- a bare LF in
    a header value, NUL or a space in a header name, a space before the colon, a bare CR in the
    path, two Host headers, obs-fold (line folding) -- each must get 400 (not a 101)."""
    tally = run.tally

    def with_line(line: bytes) -> Callable[[], bytes]:
        def make() -> bytes:
            request = client_request(run.host, "/", new_key())
            first, _, rest = request.partition(b"\r\n")
            return first + b"\r\n" + line + b"\r\n" + rest

        return make

    def cr_in_path() -> bytes:
        return client_request(run.host, "/", new_key()).replace(b"GET / ", b"GET /a\rb ", 1)

    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("bare LF in a header value", with_line(b"X-A: 1\nHost: evil.example")),
        ("NUL in a header name", with_line(b"X-\x00A: 1")),
        ("space in a header name", with_line(b"X A: 1")),
        ("space before the colon", with_line(b"X-A : 1")),
        ("bare CR in the path", cr_in_path),
        ("two Host headers", with_line(b"Host: evil.example")),
        ("obs-fold", with_line(b"X-A: 1\r\n  folded")),
    ]
    n = 0
    while not run.over() and n < 5000:
        name, make = cases[n % len(cases)]
        n += 1
        sock = connect(run)
        try:
            sock.sendall(make())
            data = read_status_line(sock)
            status = (
                data.split(b" ", 2)[1].decode("latin-1") if data.startswith(b"HTTP/1.1 ") else repr(data[:20])
            )
            if status == "400":
                tally.count(f"malformed head ({name}): HTTP 400")
            else:
                tally.fail(f"malformed head ({name}): answered {status} (expected 400)")
        except OSError as exc:
            tally.fail(f"malformed head ({name}): {type(exc).__name__}", describe(exc))
        finally:
            sock.close()
            tally.round_done()
        run.pause(0.05)


# ---------------------------------------------------------------------------- the sampler


@dataclass
class Samples:
    rss_peak_kib: int = 0
    hwm_kib: int = 0
    fds_peak: int = 0
    n: int = 0


def sampler(pid: int, samples: Samples, stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_SECONDS):
        status = proc_status(pid)
        if not status:
            return
        samples.n += 1
        samples.rss_peak_kib = max(samples.rss_peak_kib, int(status["VmRSS"].split()[0]))
        samples.hwm_kib = max(samples.hwm_kib, int(status.get("VmHWM", "0 kB").split()[0]))
        fds = open_fds(pid)
        if fds is not None:
            samples.fds_peak = max(samples.fds_peak, fds)


# ---------------------------------------------------------------------------- main


KINDS = (
    "echo",
    "slowloris",
    "garbage-handshake",
    "garbage-frames",
    "oversized",
    "bombs",
    "never-reader",
    "vanishers",
    "ping-flood",
    "cycler",
    "deflate-split",
    "tiny-fragments",
    "idle-flood",
    "slow-subscriber",
    "unread-pings",
    "churn",
    "bad-heads",
)
# The kinds that count their rounds: one that completed none fails (it checked nothing).
ROUNDS_COUNTED = {
    "deflate-split",
    "tiny-fragments",
    "idle-flood",
    "slow-subscriber",
    "unread-pings",
    "churn",
    "bad-heads",
}


def guarded(tally: Tally, name: str, fn: Callable[..., None], fargs: tuple[object, ...]) -> None:
    """Run an actor; an exception out of it (a timeout, a reset where none was expected) fails."""
    try:
        fn(*fargs)
    except Exception as exc:
        tally.fail(f"{name.rstrip('0123456789-')}: stopped by {type(exc).__name__}", describe(exc))
        if os.environ.get("CHAOS_DEBUG"):
            traceback.print_exc()


def echo_worker(port: int, deadline: float, clients: int, results: Connection) -> None:
    """The echo clients, in a process of their own so that the round trips they time are the
    server's, not this script's threads waiting for the GIL; sends back what they saw."""
    tally = Tally()
    run = Run(port, deadline, tally)
    lateness: list[float] = []

    def probe() -> None:  # how late this process's threads wake: the machine's own noise
        while not run.over() and len(lateness) < 100_000:
            t = time.monotonic()
            run.stop.wait(0.01)
            lateness.append(time.monotonic() - t - 0.01)

    threads = [threading.Thread(target=probe, daemon=True)]
    threads[0].start()
    for i in range(clients):
        fargs = (run, i, i % 4 == 3, 1_000_000)
        t = threading.Thread(
            target=guarded, args=(tally, f"echo-{i}", echo_client, fargs), name=f"echo-{i}", daemon=True
        )
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.0, deadline + 3 * IO_SECONDS + 5 - time.monotonic()))
    run.stop.set()
    with tally.lock:
        results.send(
            {
                "counts": dict(tally.counts),
                "failures": dict(tally.failures),
                "by_kind": dict(tally.by_kind),
                "examples": dict(tally.examples),
                "rtts": list(tally.rtts),
                "lateness": lateness,
                "stuck": sum(t.is_alive() for t in threads),
            }
        )
    results.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Chaos against one wsloop server: see the module docstring.")
    add = parser.add_argument
    add("--duration", type=float, default=60.0, help="seconds of chaos (60)")
    add("--p99-ms", type=float, default=250.0, help="bound on the echo round trips' p99 (250)")
    add("--rss-mib", type=float, default=128.0, help="bound on the server's peak RSS (128)")
    add(
        "--settle",
        type=float,
        default=2 * CLOSE_TIMEOUT,
        help="seconds for the server's descriptors to settle (10: twice its close timeout)",
    )
    parser.add_argument("--cycles", type=int, default=10000, help="connect/disconnect cycles (10000)")
    parser.add_argument("--echo-clients", type=int, default=8, help="well-behaved echo clients (8)")
    parser.add_argument("--slowloris", type=int, default=40, help="half-open handshakes per wave (40)")
    parser.add_argument("--never-readers", type=int, default=3, help="peers that never read (3)")
    parser.add_argument("--pings", type=int, default=5000, help="pings per flood (5000)")
    add("--unread-pings", type=int, default=1_000_000, help="empty pings per unread flood (1,000,000)")
    add("--ping-rate", type=float, default=0.0, help="MB/s of the unread pings (default 0: unpaced)")
    add("--fragments-mib", type=int, default=24, help="MiB of empty continuations per flood at most (24)")
    add("--idle-connects", type=int, default=300, help="idle TCP connects per wave (300)")
    add("--publish-mib", type=int, default=48, help="MiB published past a never-reading subscriber (48)")
    add("--churn-batch", type=int, default=20, help="websockets reset at once by the churn actor (20)")
    parser.add_argument(
        "--only",
        help="comma-separated actor kinds to run (for diagnosis; the checks of the others are skipped): "
        + ", ".join(KINDS),
    )
    args = parser.parse_args(argv)
    args.kinds = set(KINDS) if args.only is None else set(args.only.split(","))
    if not args.kinds <= set(KINDS):
        parser.error(f"--only takes some of {', '.join(KINDS)}")
    if args.duration < 5:
        parser.error("--duration must be at least 5 s")
    counts = (args.cycles, args.slowloris, args.never_readers, args.idle_connects, args.churn_batch)
    if (
        min(counts) < 0
        or args.echo_clients < 1
        or min(args.unread_pings, args.fragments_mib, args.publish_mib) < 1
    ):
        parser.error("counts must not be negative (and at least one echo client)")
    if args.ping_rate < 0:
        parser.error("--ping-rate must not be negative")
    return args


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    raise_nofile_limit()
    began = time.monotonic()
    failures: list[str] = []
    # The server imports the wsloop this script imported (PYTHONSAFEPATH: not the one in its
    # working directory, which ``-m`` would put first) and chaoshandler from this folder.
    here = os.path.dirname(os.path.abspath(__file__))
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(wsloop.__file__)))
    pythonpath = os.pathsep.join(
        [here, package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    server_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONSAFEPATH="1", PYTHONPATH=pythonpath)
    server = ServerProcess(
        argv=[sys.executable, "-m", "wsloop", "serve", "--host", HOST, "--port", "0",
         "--max-message-size", str(MAX_MESSAGE), "--log-level", "INFO",
         "--handler", "chaoshandler:ChaosWebSocket"],
        env=server_env,
        timeout=None,
        stop_timeout=10.0,
    )  # fmt: skip
    tally = Tally()
    samples = Samples()
    sample_stop = threading.Event()
    threads: list[threading.Thread] = []
    limit = mib(MAX_MESSAGE // 1024)
    print(f"wsloop chaos: {args.duration:g} s against python -m wsloop serve (max message {limit}), "
          f"wsloop from {package_root}")  # fmt: skip
    try:
        if not server.wait_ready(READY_SECONDS):
            print("error: the server did not start", file=sys.stderr)
            for line in server.output_tail():
                print(f"  server| {line}", file=sys.stderr)
            return 1
        pid = server.pid
        time.sleep(0.3)
        baseline = open_fds(pid)
        rss0 = proc_status(pid).get("VmRSS", "n/a")
        print(f"server:               pid {pid}, ws://{HOST}:{server.port}/, {baseline} fds, RSS {rss0}")
        sample_thread = threading.Thread(target=sampler, args=(pid, samples, sample_stop), daemon=True)
        sample_thread.start()

        run = Run(server.port, time.monotonic() + args.duration, tally, pid)
        run.server_env = server_env
        spread = args.duration * 0.85
        cycles_until = run.deadline + max(10.0, args.duration / 2)
        echo: multiprocessing.process.BaseProcess | None = None
        lateness: list[float] = []
        if "echo" in args.kinds:
            ctx = multiprocessing.get_context("spawn")
            echo_results, echo_end = ctx.Pipe(duplex=False)
            echo = ctx.Process(
                target=echo_worker, args=(server.port, run.deadline, args.echo_clients, echo_end), daemon=True
            )
            echo.start()
            echo_end.close()
        k = CYCLER_THREADS
        per_cycler = [args.cycles // k + (1 if i < args.cycles % k else 0) for i in range(k)]
        actors: list[tuple[str, Callable[..., None], tuple[object, ...]]] = []
        if args.slowloris:
            actors.append(("slowloris", slowloris, (run, args.slowloris)))
        actors.append(("garbage-handshake", garbage_handshakes, (run,)))
        actors.append(("garbage-frames", garbage_after_handshake, (run,)))
        actors.append(("oversized", oversized, (run,)))
        actors.append(("bombs", bombs, (run,)))
        hold = min(15.0, args.duration / 3)
        for i in range(args.never_readers):
            actors.append((f"never-reader-{i}", never_reader, (run, i, hold)))
        actors.append(("vanishers", vanishers, (run,)))
        actors.append(("ping-flood", ping_flood, (run, args.pings)))
        for i, count in enumerate(per_cycler):
            if count:
                actors.append((f"cycler-{i}", cycler, (run, i, count, spread, cycles_until)))
        actors.append(("deflate-split", deflate_split, (run,)))
        actors.append(("deflate-split-1", deflate_split_16m, (run, args.p99_ms)))
        actors.append(("tiny-fragments", tiny_fragments, (run, args.fragments_mib)))
        if args.idle_connects:
            actors.append(("idle-flood", idle_flood, (run, args.idle_connects)))
        actors.append(("slow-subscriber", slow_subscriber, (run, args.publish_mib)))
        actors.append(("unread-pings", unread_pings, (run, args.unread_pings, args.ping_rate * 1e6)))
        if args.churn_batch:
            actors.append(("churn", churn, (run, args.churn_batch)))
        actors.append(("bad-heads", bad_heads, (run,)))

        actors = [a for a in actors if a[0].rstrip("0123456789-") in args.kinds]
        for name, fn, fargs in actors:
            t = threading.Thread(target=guarded, args=(tally, name, fn, fargs), name=name, daemon=True)
            t.start()
            threads.append(t)
        # Every actor ends by the deadline (plus its last bounded wait; the cyclers by theirs);
        # then we wait a bounded time.
        join_until = max(run.deadline + HANDSHAKE_TIMEOUT + 3 * IO_SECONDS + 5, cycles_until + 2 * IO_SECONDS)
        for t in threads:
            t.join(max(0.0, join_until - time.monotonic()))
        run.stop.set()
        stuck = [t.name for t in threads if t.is_alive()]
        if echo is not None:
            if echo_results.poll(max(0.0, join_until - time.monotonic()) + 1):
                got = echo_results.recv()
                tally.counts.update(got["counts"])
                tally.failures.update(got["failures"])
                tally.by_kind.update(got["by_kind"])
                tally.examples.update(got["examples"])
                tally.rtts.extend(got["rtts"])
                lateness = got["lateness"]
                if got["stuck"]:
                    stuck.append(f"{got['stuck']} echo clients")
            else:
                failures.append("the echo clients' process sent no results")
            echo.join(5.0)
            if echo.is_alive():
                echo.kill()
                echo.join(5.0)
        if stuck:
            failures.append(f"actors still running {join_until - run.deadline:.0f} s after the end: {stuck}")
        chaos_seconds = time.monotonic() - run.start
        server_cpu = cpu_seconds(pid)

        # The server's descriptors back to the baseline (bounded).
        settle_start = time.monotonic()
        fds = open_fds(pid)
        while fds is not None and baseline is not None and fds > baseline:
            if time.monotonic() - settle_start > args.settle:
                break
            time.sleep(0.1)
            fds = open_fds(pid)
        settle = time.monotonic() - settle_start
        sample_stop.set()
        sample_thread.join(1.0)
        alive = server.alive()

        # ---- report
        c = tally.counts
        print(f"chaos ran:            {chaos_seconds:.1f} s, {len(actors)} actors")
        print("actors:")
        for what in sorted(c):
            print(f"  {c[what]:8d}  {what}")
        if tally.maxima:
            print("figures (the largest seen; a first drop or a fastest answer: the smallest):")
            for what in sorted(tally.maxima):
                print(f"  {tally.maxima[what]:8.2f}  {what}")
        for kind in ROUNDS_COUNTED & {actor_kind(name) for name, _, _ in actors}:
            if not tally.rounds[kind]:
                failures.append(f"{kind}: no round completed (the run is too short or the machine too busy)")
                tally.by_kind[kind] += 1
        print("per actor:")
        started = {actor_kind(name) for name, _, _ in actors} | ({"echo"} if echo is not None else set())
        for kind in KINDS:
            n = tally.by_kind[kind]
            notes = [f"{n} failures"] if n else []
            if kind in ROUNDS_COUNTED:
                notes.append(f"{tally.rounds[kind]} rounds")
            if kind in started:
                print(f"  {'FAIL' if n else 'PASS'}  {kind}" + (f" ({', '.join(notes)})" if notes else ""))
            elif kind in args.kinds:
                print(f"  ----  {kind} (not run: its count is 0)")
        if tally.by_kind["other"]:
            print(f"  FAIL  (no actor) ({tally.by_kind['other']} failures)")
        rtts = tally.rtts
        p50, p99, worst = (percentile(rtts, 0.5), percentile(rtts, 0.99), max(rtts, default=0.0))
        print(f"echo round trips:     {len(rtts)} messages, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
              f"max {worst * 1e3:.1f} ms (bound: p99 < {args.p99_ms:g} ms)")  # fmt: skip
        if lateness:
            print(f"wake-up lateness:     p99 {percentile(lateness, 0.99) * 1e3:.1f} ms, "
                  f"max {max(lateness) * 1e3:.1f} ms (a 10 ms sleep in the echo clients' process: "
                  "the machine's scheduling noise, for reading the round trips)")  # fmt: skip
        if tally.drop_times:
            print(f"slowloris drops:      after {min(tally.drop_times):.1f}..{max(tally.drop_times):.1f} s "
                  f"(handshake timeout {HANDSHAKE_TIMEOUT:g} s)")  # fmt: skip
        if server_cpu is not None:
            mine = sum(os.times()[:2])
            print(f"CPU time:             server {server_cpu:.1f} s, this script {mine:.1f} s "
                  f"(without the echo clients' process) in {chaos_seconds:.1f} s")  # fmt: skip
        print(f"server fds:           baseline {baseline}, peak {samples.fds_peak}, at the end {fds} "
              f"({settle:.1f} s after the last client closed; bound {args.settle:g} s)")  # fmt: skip
        print(f"server RSS:           sampled peak {mib(samples.rss_peak_kib)} ({samples.n} samples), "
              f"VmHWM {mib(samples.hwm_kib)} (bound {args.rss_mib:g} MiB)")  # fmt: skip

        # ---- assertions
        if not alive:
            failures.append(f"the server process died (exit code {server.proc.returncode})")
        echoed = c["echo: messages echoed intact"] + c["echo (deflate): messages echoed intact"]
        if not echoed and "echo" in args.kinds:
            failures.append("no message was echoed")
        if rtts and p99 * 1e3 >= args.p99_ms:
            failures.append(f"echo p99 {p99 * 1e3:.1f} ms is over {args.p99_ms:g} ms")
        if fds is None or baseline is None or fds > baseline:
            failures.append(f"server fds {fds} not back to the baseline {baseline} within {args.settle:g} s")
        peak = max(samples.hwm_kib, samples.rss_peak_kib)
        if peak > args.rss_mib * 1024:
            failures.append(f"server peak RSS {mib(peak)} is over {args.rss_mib:g} MiB")
        cycles = sum(v for k, v in c.items() if k.startswith("cycles:"))
        if cycles < args.cycles and "cycler" in args.kinds:
            failures.append(f"only {cycles}/{args.cycles} connect/disconnect cycles completed")
        for what, n in sorted(tally.failures.items()):
            example = tally.examples.get(what)
            failures.append(f"{n} x {what}" + (f" ({example})" if example else ""))
    finally:
        sample_stop.set()
        server.stop()
        if server.died:
            failures.append(f"the server exited on its own (code {server.exit_code})")
        elif server.killed:
            failures.append("the server did not exit within 10 s of SIGTERM")
        elif server.exit_code != 0:
            failures.append(f"the server exited with {server.exit_code} on SIGTERM")
        log = server.output_tail(100000)
        bad = [line for line in log if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
        print(f"server stopped:       exit code {server.exit_code} in {server.stop_seconds:.2f} s; "
              f"{len(log)} log lines, {len(bad)} with errors")  # fmt: skip
        if bad:
            failures.append(f"the server logged {len(bad)} errors/tracebacks")
            for line in log[-30:]:
                print(f"  server| {line}")
        server.log.close()
    print(f"total time:           {time.monotonic() - began:.1f} s")
    return verdict(failures)


if __name__ == "__main__":
    sys.exit(main())
