"""Server RSS per idle WebSocket connection with permessage-deflate, by compression policy.

Usage::

    python stress/memory.py                                   # default, frugal and off; 5,000 each
    python stress/memory.py --policy frugal --connections 2000

For each policy: a fresh server, ``--connections`` connections from this process, the server's RSS
before, after the handshakes and after one message each way, printed as KiB per connection. Exit
code 0 only if every connection opened, negotiated as expected and echoed its message. The method
is described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from loadkit import (
    CLOSE_SECONDS,
    ECHOED,
    FD_HEADROOM,
    IDLE_SECONDS,
    OPEN,
    READY_SECONDS,
    Conn,
    LoadGenerator,
    ProtocolError,
    ServerProcess,
    check_load_arguments,
    exit_on_sigterm,
    load_argument_parser,
    mib,
    raise_nofile_limit,
    rss_kib,
)

from wsloop.deflate import client_accept, client_offer
from wsloop.framing import OPCODE_TEXT, build_frame
from wsloop.handshake import Response

POLICIES = ("default", "frugal", "off")
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


# ---------------------------------------------------------------------------- helpers


def _policy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="policy to measure (repeatable; default: all three)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_argument_parser(
        "Server RSS per idle connection, by deflate policy.",
        connections=5000,
        connections_help="connections per policy",
        timeout=300.0,
        message_size=256,
        message_help="bytes per message",
        extra=_policy_argument,
    )
    args = parser.parse_args(argv)
    check_load_arguments(parser, args)
    if args.message_size < 16:
        parser.error("--message-size must be at least 16")
    args.policy = args.policy or list(POLICIES)
    return args


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


# ---------------------------------------------------------------------------- the server


def start_server(policy: str) -> ServerProcess:
    """The inline echo server for one policy, in a child process (it prints its port)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-c", SERVER_SCRIPT, policy]
    return ServerProcess(argv=argv, ready=r"^(?P<port>\d+)$", timeout=None, env=env, stop_timeout=10.0)


# ---------------------------------------------------------------------------- the clients


@dataclass(slots=True, eq=False)
class DeflateConn(Conn):
    client_bits: int = 15  # the window we compress with
    server_bits: int = 15  # the window the server compresses with


class Clients(LoadGenerator):
    """Every client connection of one policy, each offering ``client_offer()``, compressing its
    message when permessage-deflate was agreed and inflating compressed echoes."""

    def __init__(self, port: int, alive: Callable[[], bool]) -> None:
        super().__init__(
            ("127.0.0.1", port),
            socket.AF_INET,
            f"127.0.0.1:{port}",
            "/",
            alive,
            extensions=[client_offer()],
            conn_type=DeflateConn,
            strict_close=False,
        )
        self.extensions: collections.Counter[str] = collections.Counter()
        self.echoes_compressed = 0

    def on_handshake(self, c: Conn, response: Response) -> None:
        assert isinstance(c, DeflateConn)
        header = response.headers.get("sec-websocket-extensions")
        self.extensions[header or "(none)"] += 1
        if header:
            agreement = client_accept(header)  # checks it; no zlib context is made
            c.negotiated = True
            c.client_bits = agreement.local_max_window_bits
            c.server_bits = agreement.remote_max_window_bits

    def message_frame(self, c: Conn, payload: bytes) -> bytes:
        assert isinstance(c, DeflateConn)
        if c.negotiated:
            return build_frame(OPCODE_TEXT, deflate_message(payload, c.client_bits), rsv1=True, masked=True)
        return build_frame(OPCODE_TEXT, payload, masked=True)

    def received_message(self, c: Conn, message: bytes) -> bytes:
        assert isinstance(c, DeflateConn)
        if c.compressed:
            message = inflate_message(message, c.server_bits, len(c.expected))
            self.echoes_compressed += 1
        return message


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


def measure(policy: str, args: argparse.Namespace, deadline: float) -> Result:
    result = Result(policy)
    n = args.connections
    server = start_server(policy)
    clients: Clients | None = None
    try:
        if not server.wait_ready(max(0.1, min(READY_SECONDS, deadline - time.monotonic()))):
            result.failures.append("the server did not start: " + " | ".join(server.output_tail(10)))
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
        clients.echo_round(partial(make_payload, size=args.message_size), deadline)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()  # SIGTERM unwinds through measure()'s cleanup
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
