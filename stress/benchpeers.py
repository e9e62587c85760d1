"""The servers ``stress/bench.py`` measures and its scenarios: every peer script of
``stress/peers/`` with its label and broadcast facility, the rate and idle scenarios, the scaling
configurations, where each process runs (CPU placement) and how a peer server is started.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadkit import REPO, ServerProcess

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
REFERENCE = "wsloop"

READY_SECONDS = 20.0
STOP_SECONDS = 5.0
IDLE_SECONDS = 1.0  # connections left idle before the RSS is read again
CONNECT_IN_FLIGHT = 100


# ---------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Server:
    name: str
    label: str
    argv: tuple[str, ...]  # a script in stress/peers/ and its arguments
    requires: tuple[str, ...] = ()  # modules it imports
    raw: bool = False  # no WebSocket framing
    broadcast: str = ""
    unpinned: bool = False  # the server and its load generator may run on any core
    env: tuple[tuple[str, str], ...] = ()  # set in the server's environment


SERVERS = [
    Server(
        "wsloop",
        "wsloop standalone (selectors)",
        ("wsloop_server.py", "selectors"),
        broadcast="reactor.broadcast()",
    ),
    Server(
        "wsloop-pure",
        "wsloop standalone (selectors), pure Python",
        ("wsloop_server.py", "selectors"),
        broadcast="reactor.broadcast()",
        env=(("WSLOOP_NO_SPEEDUPS", "1"),),
    ),
    Server(
        "wsloop-threaded",
        "wsloop standalone (threaded)",
        ("wsloop_server.py", "threaded"),
        broadcast="ThreadedManager.broadcast()",
    ),
    Server(
        "wsloop-cherrypy",
        "wsloop + CherryPy",
        ("wsloop_server.py", "cherrypy"),
        ("cherrypy",),
        broadcast="reactor.broadcast()",
    ),
    Server(
        "wsloop-gevent",
        "wsloop + gevent (patched)",
        ("wsloop_server.py", "gevent"),
        ("gevent",),
        broadcast="reactor.broadcast()",
    ),
    Server(
        "wsloop-wsgiref", "wsloop + wsgiref", ("wsloop_server.py", "wsgiref"), broadcast="reactor.broadcast()"
    ),
    Server(
        "wsloop-asyncio",
        "wsloop + asyncio",
        ("wsloop_server.py", "asyncio"),
        broadcast="loop of send() (the adapter has no manager)",
    ),
    Server(
        "websockets",
        "websockets (asyncio)",
        ("websockets_server.py", "asyncio"),
        ("websockets",),
        broadcast="websockets.asyncio.server.broadcast()",
    ),
    Server(
        "websockets-sync",
        "websockets (threading)",
        ("websockets_server.py", "sync"),
        ("websockets",),
        broadcast="loop of send() (no helper)",
    ),
    Server("aiohttp", "aiohttp", ("aiohttp_server.py",), ("aiohttp",), broadcast="loop of send_str()"),
    Server("picows", "picows", ("picows_server.py",), ("picows",), broadcast="loop of transport.send()"),
    Server(
        "ws4py",
        "ws4py 0.6.0 (wsgiref)",
        ("ws4py_server.py",),
        ("ws4py",),
        broadcast="server.manager.broadcast()",
    ),
    Server("raw", "raw selectors TCP echo", ("raw_echo.py",), raw=True),
]
SERVER_NAMES = [s.name for s in SERVERS]


# ---------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Rate:
    """A message-rate or throughput measurement."""

    name: str
    title: str
    conns: int
    in_flight: int
    size: int
    binary: bool = False
    throughput: bool = False  # report MB/s instead of msg/s
    latency: bool = False  # report the round trip too


RATES = [
    Rate("latency", "64 B text echo, 1 connection, 1 in flight: round trip", 1, 1, 64, latency=True),
    Rate("pipelined", "64 B text echo, 1 connection, 64 pipelined", 1, 64, 64),
    Rate("concurrent", "64 B text echo, 100 connections x 8 in flight", 100, 8, 64),
    Rate("many", "64 B text echo, 1,000 connections x 1 in flight", 1000, 1, 64),
    Rate("bin16k", "16 KiB binary echo, 10 connections x 1 in flight", 10, 1, 16384, True, True),
    Rate("bin1m", "1 MiB binary echo, 1 connection x 1 in flight", 1, 1, 1 << 20, True, True),
]
IDLE_SCENARIOS = ["idle", "broadcast"]
SCALING_SCENARIOS = ["workers", "broadcast-workers"]
SCENARIOS = [r.name for r in RATES] + IDLE_SCENARIOS + SCALING_SCENARIOS
#: The ``workers`` scenario's measures: the first is the one the target applies to.
WORKERS_RATES = [
    Rate("workers", "64 B text echo, 1,000 connections x 32 in flight", 1000, 32, 64),
    Rate("workers-x8", "64 B text echo, 1,000 connections x 8 in flight", 1000, 8, 64),
    Rate("workers-x1", "64 B text echo, 1,000 connections x 1 in flight", 1000, 1, 64),
]
# The configurations of the scaling scenarios ("{redis}": the URL of the bench's redis-server).
SCALING: dict[str, list[Server]] = {
    "workers": [
        Server("workers-1", "--workers 1 (one process)", ("wsloop_server.py", "selectors"), unpinned=True),
        Server(
            "workers-2",
            "--workers 2 (SO_REUSEPORT)",
            ("wsloop_server.py", "selectors", "--workers", "2"),
            unpinned=True,
        ),
    ],
    "broadcast-workers": [
        Server(
            "bcast-1",
            "--workers 1, no broker",
            ("wsloop_server.py", "selectors"),
            broadcast="reactor.broadcast()",
            unpinned=True,
        ),
        Server(
            "bcast-1-redis",
            "--workers 1, Redis broker",
            ("wsloop_server.py", "selectors", "--broker", "{redis}"),
            broadcast="reactor.broadcast() + PUBLISH",
            unpinned=True,
        ),
        Server(
            "bcast-2-redis",
            "--workers 2, Redis broker",
            ("wsloop_server.py", "selectors", "--workers", "2", "--broker", "{redis}"),
            broadcast="local fan-out + PUBLISH; the other worker's subscription",
            unpinned=True,
        ),
    ],
}
QUICK_MANY = 200
QUICK_IDLE = 500


# ---------------------------------------------------------------------------- where processes run


def cores() -> tuple[int | None, int | None]:
    """(server core, load generator core): the first two CPUs of our affinity mask."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def pinned(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


ALL_CPUS = frozenset(os.sched_getaffinity(0))  # before main() pins this script


def anywhere() -> None:
    """preexec_fn of an unpinned child: every CPU this script could use when it started."""
    os.sched_setaffinity(0, ALL_CPUS)


# ---------------------------------------------------------------------------- server processes


def start_server(server: Server, core: int | None, redis_url: str = "") -> ServerProcess:
    """A peer script in a child process (pinned to ``core`` unless unpinned); :func:`wait_server`
    waits until it prints ``PORT n``."""
    args = [a.replace("{redis}", redis_url) for a in server.argv[1:]]
    return ServerProcess(
        argv=[sys.executable, str(PEERS / server.argv[0]), *args],
        ready=r"^PORT (\d+)$",
        timeout=None,
        cwd=REPO,
        env=dict(os.environ, **dict(server.env)) if server.env else None,
        preexec_fn=anywhere if server.unpinned else pinned(core),
        stop_timeout=STOP_SECONDS,
    )


def wait_server(proc: ServerProcess) -> str:
    """'' once the server's port is known, else why not."""
    if proc.wait_ready(READY_SECONDS):
        return ""
    if not proc.alive():
        return f"failed (exited {proc.proc.returncode} at start: {server_tail(proc)})"
    return f"failed (not ready in {READY_SECONDS:g} s)"


def server_tail(proc: ServerProcess) -> str:
    """The server's last line of output (120 characters at most)."""
    lines = [x for x in proc.output_tail(50) if x.strip()]
    return lines[-1].strip()[:120] if lines else "no output"
