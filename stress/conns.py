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
opened, every echo matched, the server ran at most the threads the README promises (selectors: 2,
its main thread and the reactor's; threaded: one more per connection) and, from 1,000 connections
on, its RSS grew by at most ``--max-kib-per-connection`` per open connection (default: 2.5 KiB for
selectors, 26 KiB for threaded; the README says about 2 KiB and about 20 KiB).
Every phase is bounded by ``--timeout`` seconds overall (closing and stopping the server add at
most ~20 s more); the script never waits without a bound.

With ``--url`` no server is started; server figures (threads, RSS) then need ``--server-pid`` of
that server, running on this machine, and ``--poller`` should name the poller it uses.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from loadkit import (
    CLOSE_SECONDS,
    CLOSED,
    ECHOED,
    ECHOING,
    FD_HEADROOM,
    IDLE_SECONDS,
    OPEN,
    READY_SECONDS,
    LoadGenerator,
    ServerProcess,
    check_load_arguments,
    describe,
    exit_on_sigterm,
    free_port,
    load_argument_parser,
    mib,
    proc_status,
    raise_nofile_limit,
    verdict,
)

#: The server's threads besides one per connection (threaded poller): the main thread and the
#: reactor's (selectors) or the accepting one (threaded).
BASE_THREADS = 2
#: The default bound on RSS growth per open connection, by poller (the README: about 2 KiB and
#: about 20 KiB; measured with 10,000 and 2,000 connections: 1.9 and 21.5 KiB).
MAX_KIB_PER_CONNECTION = {"selectors": 2.5, "threaded": 26.0}
#: Below this many connections the RSS growth is mostly fixed costs: per-connection memory is
#: printed but not checked.
MEMORY_CHECK_FROM = 1000
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------- helpers


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poller", choices=["selectors", "threaded"], default="selectors")
    parser.add_argument("--port", type=int, default=0, help="server port (0: pick a free one)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = load_argument_parser(
        "Open many concurrent WebSocket connections to one wsloop server and check echoes.",
        connections=10000,
        connections_help="connections to open",
        timeout=120.0,
        message_size=64,
        message_help="payload bytes per message",
        extra=_server_arguments,
    )
    parser.add_argument("--url", help="ws://host:port/path of an already-running server (none started)")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server, for threads and RSS")
    parser.add_argument(
        "--max-kib-per-connection",
        type=float,
        help="fail if the server's RSS grows by more than this per open connection (checked from "
        f"{MEMORY_CHECK_FROM} connections on; default: selectors 2.5, threaded 26)",
    )
    args = parser.parse_args(argv)
    check_load_arguments(parser, args)
    if args.message_size < len(str(args.connections - 1)):
        width = len(str(args.connections - 1))
        parser.error(f"--message-size must be at least {width} to tell the connections apart")
    if args.server_pid is not None and args.url is None:
        parser.error("--server-pid only goes with --url")
    return args


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


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
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
        server = ServerProcess(
            argv=[
                sys.executable,
                "-m",
                "wsloop",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--poller",
                args.poller,
                "--log-level",
                "WARNING",
            ],
            ready=None,
            port=port,
            timeout=None,
            stop_timeout=10.0,
        )
        server_pid = server.pid
        target = f"ws://127.0.0.1:{port}/ (spawned, pid {server_pid})"
        alive = server.alive

    failures: list[str] = []
    gen: LoadGenerator | None = None
    print(
        f"wsloop connection stress: {n} connections, {args.poller} poller, {args.message_size}-byte messages"
    )
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
        print(
            f"connections opened:   {opened}/{n} in {open_seconds:.2f} s "
            f"({opened / open_seconds if open_seconds else 0:.0f}/s)"
        )
        if opened < n:
            failures.append(
                f"only {opened}/{n} connections opened"
                + (f" ({gen.abort_reason})" if gen.abort_reason else "")
            )

        gen.idle(IDLE_SECONDS, deadline)
        after = server_stats(server_pid)
        still_open = gen.count(OPEN)
        if still_open < opened:
            failures.append(f"{opened - still_open} connections dropped while idle")

        t0 = time.monotonic()
        gen.echo_round(partial(make_payload, size=args.message_size, width=len(str(n - 1))), deadline)
        echo_seconds = time.monotonic() - t0
        echoed = gen.count(ECHOED)
        print(f"echoes verified:      {echoed}/{n} in {echo_seconds:.2f} s")
        if echoed < n:
            failures.append(
                f"only {echoed}/{n} echoes verified" + (f" ({gen.abort_reason})" if gen.abort_reason else "")
            )
        after_echo = server_stats(server_pid)

        if before is not None and after is not None:
            max_threads = BASE_THREADS + (still_open if args.poller == "threaded" else 0)
            limit_note = f"; at most {max_threads} allowed"
            print(
                f"server threads:       {after.threads} with {still_open} connections open "
                f"(before connecting: {before.threads}{limit_note})"
            )
            grown = after.rss_kib - before.rss_kib
            print(
                f"server RSS:           before {mib(before.rss_kib)}, after {mib(after.rss_kib)} "
                f"(+{mib(grown)}); after the echo round {mib(after_echo.rss_kib) if after_echo else 'n/a'}"
            )
            per_conn = f"{grown / still_open:.2f} KiB" if still_open else "n/a"
            max_kib = args.max_kib_per_connection or MAX_KIB_PER_CONNECTION[args.poller]
            checked = still_open >= MEMORY_CHECK_FROM
            bound_note = f"; at most {max_kib:g} KiB allowed" if checked else ""
            print(f"RSS per connection:   {per_conn} ((after - before) / {still_open}{bound_note})")
            if after.threads > max_threads:
                failures.append(
                    f"the server ran {after.threads} threads ({args.poller}: at most {max_threads})"
                )
            if checked and grown / still_open > max_kib:
                failures.append(
                    f"the server's RSS grew by {grown / still_open:.2f} KiB per connection "
                    f"(at most {max_kib:g} KiB allowed)"
                )
        elif server_pid is None:
            print("server threads/RSS:   n/a (pass --server-pid with --url)")
        else:
            print(f"server threads/RSS:   n/a (cannot read /proc/{server_pid}/status)")
    finally:
        if gen is not None:
            t0 = time.monotonic()
            live = gen.count(OPEN, ECHOING, ECHOED)
            gen.close_all(CLOSE_SECONDS)
            clean = sum(1 for c in gen.conns if c.state == CLOSED and c.close_received)
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
                print(
                    f"server stopped:       exit code {server.exit_code} after {how} "
                    f"in {server.stop_seconds:.2f} s"
                )
            if server.killed:
                failures.append("the server did not exit within 10 s of SIGTERM")
            if server.output_lines():
                print(f"server output ({server.output_lines()} lines, last 15):")
                for line in server.output_tail():
                    print(f"  server| {line}")
            server.log.close()

    print(f"total time:           {time.monotonic() - started_at:.2f} s")
    return verdict(failures)


if __name__ == "__main__":
    sys.exit(main())
