"""Benchmark wsloop against its peers: message rates, throughput, 10,000 idle connections, broadcast.

Usage::

    python stress/bench.py                        # everything, 3 runs each: ~12 minutes
    python stress/bench.py --quick                # a short smoke run (1 run, small counts)
    python stress/bench.py --servers wsloop,picows,raw --scenarios concurrent,idle --runs 5

Each server under test (``stress/peers/*.py``) runs in a child process pinned to the first CPU of
this process's affinity mask (core 0); the load generator, ``stress/loadgen.c`` (a C epoll
client, compiled with ``gcc -O2`` into ``~/.cache/wsloop-bench/`` on first use), runs pinned to
the second (core 1). It never parses messages: its frames are pre-built and masked once, and an
echo is counted by the bytes that come back. Every server listens on 127.0.0.1, compression is off
everywhere (the load generator offers no extension and fails a connection that negotiates one).

Scenarios (``--scenarios``, default all):

* ``latency``    64 B text echo, 1 connection, 1 message in flight: p50/p99 round trip (µs)
* ``pipelined``  64 B text echo, 1 connection, 64 in flight (msg/s)
* ``concurrent`` 64 B text echo, 100 connections x 8 in flight (msg/s)
* ``many``       64 B text echo, 1,000 connections x 1 in flight (msg/s)
* ``bin16k``     16 KiB binary echo, 10 connections x 1 in flight (MB/s of payload echoed)
* ``bin1m``      1 MiB binary echo, 1 connection x 1 in flight (MB/s of payload echoed)
* ``idle``       10,000 connections: time to open them (connect + handshake, at most 100 at a
  time), the server's RSS per connection and thread count (``/proc/PID/status``) after 1 s idle,
  then one 64 B message on each: time until every echo is back
* ``broadcast``  with 10,000 connections open, ``broadcast:`` + 64 B on one of them: time until
  every connection has the 64 B message (each server broadcasts with its own facility)

Scaling scenarios (wsloop only, whatever ``--servers`` says; ``python stress/bench.py --scenarios
workers,broadcast-workers`` runs them alone):

* ``workers``            64 B text echo over 1,000 connections, ``--workers 1`` (one process,
  today's server) against ``--workers 2`` (two worker processes on one SO_REUSEPORT port), at
  three depths: 32 in flight per connection (the target's measure: the load generator then needs
  ~0.2 of a core of the two, so the cores go to the server, as they would with the clients on
  other machines), 8 in flight (~0.4 of a core) and 1 in flight (~0.6 of a core). The load
  generator's share caps what two workers can show on 2 cores; each row prints that ceiling
* ``broadcast-workers``  broadcast of 64 B to 10,000 connections: one process without a broker,
  one with the Redis broker, two workers joined through Redis (time until the last connection of
  either worker has it). A ``redis-server`` (Debian's package) is started for it on a free port
  (``--save '' --appendonly no``, in a temporary folder).

Nothing is pinned in the scaling scenarios: with two workers on a 2-core machine, pinning the
server to one core would measure nothing, and pinning each worker to a core would leave the load
generator only what they leave free. So the servers (every process) and the load generator may
all run on any core, for the one-process row as for the two-worker row, and the table shows where
the CPU went: the server's processes together (``/proc/PID/stat`` of the supervisor and its
workers, over the whole load generator run), the load generator's, and other processes'. On a
2-core machine the load generator's share is taken from the same two cores the workers need, so
the ratio understates what two workers give where the clients are elsewhere.

A rate measurement counts the echoes of ``--duration`` seconds after ``--warmup`` seconds of load;
the server's CPU share (``/proc/PID/stat``) and the load generator's (``getrusage``) over that
window are printed and tabulated. ``idle`` and ``broadcast`` share one fresh server process per
run. Every figure is the median of ``--runs`` runs (min-max beside it); the runs are interleaved
(run 1 of every server, then run 2 of every server, ...) so that a busy stretch of a shared machine
does not fall on all the runs of one server. Every phase is bounded:
a server that does not start, dies, or runs out of time is recorded as ``failed (reason)`` or
``timeout`` and its remaining runs of that scenario are skipped.

The results go to ``--output`` (``stress/RESULTS.md``); a run of only the scaling scenarios
replaces (or appends) the ``## Scaling out`` section of that file and leaves the rest. The report
holds the machine, one table per scenario with
each server's ratio to wsloop standalone (selectors), and the issue's targets as a checklist.
Exit status: 0, or 1 if a wsloop standalone (selectors) measurement failed, 2 on a usage error or
when the load generator cannot be built.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
LOADGEN_SRC = HERE / "loadgen.c"
REFERENCE = "wsloop"

READY_SECONDS = 20.0
STOP_SECONDS = 5.0
OPEN_TIMEOUT = 45.0  # per connection-opening phase
PHASE_TIMEOUT = 30.0  # per echo / broadcast phase of the idle scenarios
SETTLE_SECONDS = 0.5  # after the server is ready, before its RSS is read
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


SERVERS = [
    Server(
        "wsloop",
        "wsloop standalone (selectors)",
        ("wsloop_server.py", "selectors"),
        broadcast="reactor.broadcast()",
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


@dataclass
class Outcome:
    """The runs of one server in one scenario: figures of each good run, or why it failed."""

    runs: list[dict[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: int = 0

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if key in r]
        return statistics.median(values) if values else None

    def span(self, key: str) -> tuple[float, float] | None:
        values = [r[key] for r in self.runs if key in r]
        return (min(values), max(values)) if values else None


Results = dict[str, dict[str, Outcome]]


# ---------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


STARTED = time.monotonic()


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


def placement(cfg: Config, server: Server) -> tuple[int | None, Callable[[], None] | None]:
    """(the server's core or None, the load generator's preexec_fn) for ``server``."""
    if server.unpinned:
        return None, anywhere
    return cfg.server_core, pinned(cfg.gen_core)


def server_pids(pid: int) -> list[int]:
    """A process and its children (a supervisor and its workers), at most 16."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            children = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        children = []
    return [pid, *children][:16]


def tree_ticks(pid: int) -> int:
    """CPU ticks of a process and of its children (a supervisor and its workers)."""
    return sum(proc_ticks(p) for p in server_pids(pid))


def all_cores_ticks() -> int:
    """User + nice + system jiffies of every CPU together (``/proc/stat``'s first line)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            user, nice, system = (int(x) for x in f.readline().split()[1:4])
        return user + nice + system
    except (OSError, ValueError):
        return 0


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    except OSError:
        return {}


TICK = os.sysconf("SC_CLK_TCK")


def core_ticks(core: int | None) -> int:
    """User + nice + system jiffies of one CPU (``/proc/stat``; interrupt time left out)."""
    if core is None:
        return 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"cpu{core} "):
                    user, nice, system = (int(x) for x in line.split()[1:4])
                    return user + nice + system
    except OSError:
        pass
    return 0


def proc_ticks(pid: int) -> int:
    """utime + stime of a process, every thread included (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class Foreign:
    """CPU time that other processes took on the two pinned cores while a measurement ran.

    The busy time of each core (``/proc/stat``) minus what the benchmark's own processes used
    there, as a share of the wall time: near 0% on a quiet machine. The larger of the two is kept.
    """

    def __init__(self, cfg: Config, server_pid: int, unpinned: bool = False) -> None:
        self.cfg = cfg
        self.server_pid = server_pid
        self.unpinned = unpinned  # nothing pinned: other processes' time on all cores together
        self.start = self._sample()

    def _sample(self, gen_pid: int | None = None) -> tuple[float, int, int, int, int, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        gen = proc_ticks(gen_pid) if gen_pid else 0
        if self.unpinned:
            return (time.monotonic(), all_cores_ticks(), 0, tree_ticks(self.server_pid), gen, ours)
        return (
            time.monotonic(),
            core_ticks(self.cfg.server_core),
            core_ticks(self.cfg.gen_core),
            proc_ticks(self.server_pid),
            gen,
            ours,
        )

    def share(self, gen_pid: int | None = None) -> float:
        """Since construction; ``gen_pid``: a load generator still running (else it has exited
        and is counted in RUSAGE_CHILDREN). Unpinned: in cores (1.0 = one core's time)."""
        if self.cfg.server_core is None and not self.unpinned:
            return -1.0
        t0, a0, b0, s0, g0, o0 = self.start
        t1, a1, b1, s1, g1, o1 = self._sample(gen_pid)
        wall = max(t1 - t0, 1e-6)
        if self.unpinned:
            busy = ((a1 - a0) - (s1 - s0) - (g1 - g0)) / TICK / wall - (o1 - o0) / wall
            return max(0.0, busy)
        on_server_core = ((a1 - a0) - (s1 - s0)) / TICK / wall
        on_gen_core = ((b1 - b0) - (g1 - g0)) / TICK / wall - (o1 - o0) / wall
        return max(0.0, on_server_core, on_gen_core)


def build_loadgen() -> Path:
    """Compile stress/loadgen.c with gcc -O2 into the cache directory (once per source version)."""
    gcc = os.environ.get("CC", "gcc")
    source = LOADGEN_SRC.read_bytes()
    digest = hashlib.sha256(source + gcc.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wsloop-bench"
    binary = cache / f"loadgen-{digest}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".loadgen-")
    os.close(fd)
    try:
        subprocess.run([gcc, "-O2", "-Wall", "-o", tmp, str(LOADGEN_SRC)], check=True, timeout=120)
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary


def parse_fields(line: str) -> dict[str, str]:
    """``key=value key=value ...``; the value of ``error`` runs to the end of the line."""
    fields: dict[str, str] = {}
    head, sep, error = line.partition("error=")
    for token in head.split():
        key, eq, value = token.partition("=")
        if eq:
            fields[key] = value
    if sep:
        fields["error"] = error.strip()
    return fields


# ---------------------------------------------------------------------------- server processes


class ServerProcess:
    """A server script in a child process pinned to the server core; ready once it prints PORT."""

    def __init__(self, server: Server, core: int | None, redis_url: str = "") -> None:
        self.server = server
        self.log: IO[bytes] = tempfile.TemporaryFile()
        args = [a.replace("{redis}", redis_url) for a in server.argv[1:]]
        self.proc = subprocess.Popen(
            [sys.executable, str(PEERS / server.argv[0]), *args],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=anywhere if server.unpinned else pinned(core),
            cwd=REPO,
        )
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self) -> str:
        """'' once the port is known, else why not."""
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            self.log.seek(0)
            found = re.search(rb"^PORT (\d+)$", self.log.read(), re.MULTILINE)
            if found:
                self.port = int(found.group(1))
                return ""
            if not self.alive():
                return f"failed (exited {self.proc.returncode} at start: {self.tail()})"
            time.sleep(0.05)
        return "failed (not ready in 20 s)"

    def tail(self) -> str:
        self.log.seek(0)
        lines = [x for x in self.log.read().decode("utf-8", "replace").splitlines() if x.strip()]
        return lines[-1].strip()[:120] if lines else "no output"

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self.log.close()


# ---------------------------------------------------------------------------- measurements


@dataclass
class Config:
    loadgen: Path
    gen_core: int | None
    server_core: int | None
    runs: int
    duration: float
    warmup: float
    idle_conns: int
    many_conns: int
    redis_url: str = ""  # the scaling scenarios' redis-server


def loadgen_argv(
    cfg: Config, mode: str, server: Server, proc: ServerProcess, conns: int, size: int, *extra: str
) -> list[str]:
    """The load generator's command line for ``mode`` (``rate`` or ``idle``) against ``proc``."""
    argv = [str(cfg.loadgen), mode, "--port", str(proc.port)]
    for pid in server_pids(proc.pid):  # a supervisor's workers too: their CPU is summed
        argv += ["--server-pid", str(pid)]
    argv += ["--conns", str(conns), "--size", str(size), *extra]
    argv += ["--timeout", str(OPEN_TIMEOUT), "--connect-inflight", str(CONNECT_IN_FLIGHT)]
    if server.raw:
        argv.append("--raw")
    return argv


def run_rate(cfg: Config, server: Server, proc: ServerProcess, rate: Rate) -> dict[str, float] | str:
    conns = cfg.many_conns if rate.name in ("many", *(r.name for r in WORKERS_RATES)) else rate.conns
    timing = ("--inflight", str(rate.in_flight), "--warmup", str(cfg.warmup), "--duration", str(cfg.duration))
    argv = loadgen_argv(cfg, "rate", server, proc, conns, rate.size, *timing)
    if rate.binary:
        argv.append("--binary")
    limit = OPEN_TIMEOUT + cfg.warmup + cfg.duration + 15
    foreign = Foreign(cfg, proc.pid, server.unpinned)
    gen_place = placement(cfg, server)[1]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, preexec_fn=gen_place)
    except subprocess.TimeoutExpired:
        return f"timeout (load generator still running after {limit:.0f} s)"
    other = foreign.share()
    fields = parse_fields(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
    if "error" in fields or "rate" not in fields:
        why = fields.get("error") or done.stderr.strip()[-120:] or f"load generator exit {done.returncode}"
        if not proc.alive():
            why = f"server exited: {proc.tail()}"
        return why if why.startswith("timeout") else f"failed ({why})"
    figures = {
        k: float(fields[k]) for k in ("rate", "mbps", "gen_cpu", "srv_cpu", "p50_us", "p99_us") if k in fields
    }
    if figures["rate"] <= 0:
        return "failed (no echo in the measurement window)"
    figures["other_cpu"] = other
    return figures


def run_idle(cfg: Config, server: Server, want: list[str]) -> tuple[dict[str, float], str]:
    """One run of the idle/broadcast scenarios on a fresh server: (figures, failure or '')."""
    proc = ServerProcess(server, cfg.server_core, cfg.redis_url)
    gen: subprocess.Popen[str] | None = None
    figures: dict[str, float] = {}
    try:
        failure = proc.wait_ready()
        if failure:
            return figures, failure
        time.sleep(SETTLE_SECONDS)
        before = proc_status(proc.pid)
        argv = loadgen_argv(cfg, "idle", server, proc, cfg.idle_conns, 64)
        foreign = Foreign(cfg, proc.pid, server.unpinned)
        gen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=placement(cfg, server)[1],
        )

        def answer(command: str | None, seconds: float) -> dict[str, str]:
            assert gen is not None and gen.stdin is not None and gen.stdout is not None
            if command:
                gen.stdin.write(command + "\n")
                gen.stdin.flush()
            ready, _, _ = select.select([gen.stdout], [], [], seconds)
            line = gen.stdout.readline() if ready else ""
            if not line:
                return {
                    "error": f"timeout (no answer in {seconds:.0f} s)" if not ready else "load generator died"
                }
            return parse_fields(line)

        opened = answer(None, OPEN_TIMEOUT + 10)
        if "error" in opened:
            return figures, describe_failure(opened["error"], proc, "opening")
        figures["open_s"] = float(opened["secs"])
        figures["open_gen_cpu"] = float(opened["gen_cpu"])
        figures["open_srv_cpu"] = float(opened["srv_cpu"])
        time.sleep(IDLE_SECONDS)
        after = proc_status(proc.pid)
        if "VmRSS" in before and "VmRSS" in after:
            rss = int(after["VmRSS"].split()[0]) - int(before["VmRSS"].split()[0])
            figures["rss_kib"] = rss / cfg.idle_conns
            figures["threads"] = float(after["Threads"])
        if "idle" in want:
            echoed = answer("echo", PHASE_TIMEOUT + 10)
            if "error" in echoed:
                return figures, describe_failure(echoed["error"], proc, "echoing")
            figures["echo_s"] = float(echoed["secs"])
            figures["echo_gen_cpu"] = float(echoed["gen_cpu"])
        if "broadcast" in want and not server.raw:
            sent = answer("broadcast", PHASE_TIMEOUT + 10)
            if "error" in sent:
                return figures, describe_failure(sent["error"], proc, "broadcasting")
            figures["broadcast_s"] = float(sent["secs"])
            figures["broadcast_gen_cpu"] = float(sent["gen_cpu"])
            figures["broadcast_srv_cpu"] = float(sent["srv_cpu"])
        figures["other_cpu"] = foreign.share(gen.pid)
        return figures, ""
    finally:
        if gen is not None:
            try:
                assert gen.stdin is not None
                gen.stdin.write("quit\n")
                gen.stdin.close()
            except OSError:
                pass
            try:
                gen.wait(10)
            except subprocess.TimeoutExpired:
                gen.kill()
                gen.wait()
            assert gen.stdout is not None
            gen.stdout.close()
        proc.stop()


def describe_failure(error: str, proc: ServerProcess, phase: str) -> str:
    if not proc.alive():
        return f"failed (server exited while {phase}: {proc.tail()})"
    if error.startswith("timeout"):
        return f"timeout while {phase}: {error[len('timeout') :].strip(' ()') or 'no answer'}"
    return f"failed while {phase} ({error})"


def cpu(figures: dict[str, float], gen: str = "gen_cpu", srv: str = "srv_cpu") -> str:
    parts = []
    if srv in figures and figures[srv] >= 0:
        parts.append(f"server CPU {figures[srv]:.0%}")
    if gen in figures:
        parts.append(f"loadgen CPU {figures[gen]:.0%}")
    if figures.get("other_cpu", -1) >= 0:
        parts.append(f"other CPU {figures['other_cpu']:.0%}")
    return ", ".join(parts)


def measure_rates(
    cfg: Config, server: Server, rates: list[Rate], results: Results, label: tuple[int, int] | None = None
) -> None:
    """``cfg.runs`` runs of each rate; ``label``: (run number, of how many) to log instead."""
    proc: ServerProcess | None = None
    try:
        for run in range(cfg.runs):
            for rate in rates:
                outcome = results[server.name][rate.name]
                if outcome.failures:  # failed before: not repeated
                    outcome.skipped += 1
                    continue
                if proc is None or not proc.alive():
                    if proc is not None:
                        outcome.failures.append(f"failed (server exited: {proc.tail()})")
                        proc.stop()
                        proc = None
                        continue
                    proc = ServerProcess(server, cfg.server_core, cfg.redis_url)
                    failure = proc.wait_ready()
                    if failure:
                        for r in rates:
                            results[server.name][r.name].failures.append(failure)
                        log(f"{server.name:16} {failure}")
                        return
                got = run_rate(cfg, server, proc, rate)
                number, total = label or (run + 1, cfg.runs)
                where = f"{server.name:16} {rate.name:10} run {number}/{total}"
                if isinstance(got, str):
                    outcome.failures.append(got)
                    log(f"{where}: {got}")
                    continue
                outcome.runs.append(got)
                if rate.latency:
                    shown = (
                        f"p50 {got['p50_us']:.1f} µs, p99 {got['p99_us']:.1f} µs, {got['rate']:,.0f} msg/s"
                    )
                elif rate.throughput:
                    shown = f"{got['mbps']:,.1f} MB/s"
                else:
                    shown = f"{got['rate']:,.0f} msg/s"
                log(f"{where}: {shown} ({cpu(got)})")
    finally:
        if proc is not None:
            proc.stop()


def measure_idle(
    cfg: Config, server: Server, want: list[str], results: Results, label: tuple[int, int] | None = None
) -> None:
    for run in range(cfg.runs):
        figures, failure = run_idle(cfg, server, want)
        number, total = label or (run + 1, cfg.runs)
        where = f"{server.name:16} {'+'.join(want):10} run {number}/{total}"
        shown = []
        if "open_s" in figures:
            shown.append(
                f"opened {cfg.idle_conns:,} in {figures['open_s']:.2f} s "
                f"({cpu(figures, 'open_gen_cpu', 'open_srv_cpu')})"
            )
        if "rss_kib" in figures:
            shown.append(f"{figures['rss_kib']:.2f} KiB/conn, {figures['threads']:.0f} threads")
        if "echo_s" in figures:
            shown.append(f"all echoed in {figures['echo_s'] * 1e3:.0f} ms")
        if "broadcast_s" in figures:
            shown.append(
                f"broadcast in {figures['broadcast_s'] * 1e3:.0f} ms "
                f"({cpu(figures, 'broadcast_gen_cpu', 'broadcast_srv_cpu')})"
            )
        log(f"{where}: " + "; ".join(shown + ([failure] if failure else [])))
        for name in want:
            outcome = results[server.name][name]
            keys = {"idle": ("open_s", "rss_kib", "echo_s"), "broadcast": ("broadcast_s",)}[name]
            if name == "broadcast" and server.raw:
                outcome.failures.append("n/a (no WebSocket)")
                continue
            if all(k in figures for k in keys):
                outcome.runs.append(figures)
            else:
                outcome.failures.append(failure or "failed")
        if failure:
            for name in want:
                results[server.name][name].skipped = cfg.runs - run - 1
            return
        if server.raw and want == ["broadcast"]:
            return


# ---------------------------------------------------------------------------- the report


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def fmt_span(span: tuple[float, float] | None, digits: int = 0) -> str:
    return "—" if span is None else f"{span[0]:,.{digits}f}–{span[1]:,.{digits}f}"


def ratio(results: Results, server: str, scenario: str, key: str) -> float | None:
    mine = results.get(server, {}).get(scenario)
    ref = results.get(REFERENCE, {}).get(scenario)
    if mine is None or ref is None:
        return None
    a, b = mine.median(key), ref.median(key)
    return a / b if a is not None and b else None


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def notes(outcome: Outcome, runs: int) -> str:
    parts = []
    if outcome.failures:
        parts.append("; ".join(dict.fromkeys(outcome.failures)))
    if outcome.runs and len(outcome.runs) < runs:
        parts.append(f"{len(outcome.runs)} of {runs} runs")
    elif outcome.skipped and not outcome.runs:
        parts.append("not repeated")
    return " — ".join(parts)


def cpu_cell(outcome: Outcome, key: str) -> str:
    value = outcome.median(key)
    return "—" if value is None or value < 0 else f"{value:.0%}"


def header(*columns: str) -> list[str]:
    """A markdown table's header and alignment rows; a column named with a leading ">" is right-aligned."""
    names = [c.lstrip(">") for c in columns]
    aligns = ["---:" if c.startswith(">") else "---" for c in columns]
    return ["| " + " | ".join(names) + " |", "| " + " | ".join(aligns) + " |"]


CPU_COLUMNS = (">server CPU", ">loadgen CPU", ">other CPU", "notes")


def rate_table(rate: Rate, cfg: Config, servers: list[Server], results: Results) -> list[str]:
    conns = cfg.many_conns if rate.name == "many" else rate.conns
    title = rate.title.replace("1,000 connections", f"{conns:,} connections")
    lines = [f"### {rate.name}: {title}", ""]
    if rate.latency:
        lines += header(
            "server", ">p50 µs", ">p50 min–max", ">p99 µs", ">msg/s", ">p50 vs wsloop", *CPU_COLUMNS
        )
    else:
        unit = "MB/s" if rate.throughput else "msg/s"
        lines += header("server", f">{unit}", ">min–max", ">vs wsloop", *CPU_COLUMNS)
    key = "mbps" if rate.throughput else "rate"
    digits = 1 if rate.throughput else 0
    for server in servers:
        o = results[server.name][rate.name]
        if rate.latency:
            row = [
                server.label,
                fmt(o.median("p50_us"), 1),
                fmt_span(o.span("p50_us"), 1),
                fmt(o.median("p99_us"), 1),
                fmt(o.median("rate")),
                fmt_ratio(ratio(results, server.name, rate.name, "p50_us")),
            ]
        else:
            row = [
                server.label,
                fmt(o.median(key), digits),
                fmt_span(o.span(key), digits),
                fmt_ratio(ratio(results, server.name, rate.name, key)),
            ]
        row += [cpu_cell(o, "srv_cpu"), cpu_cell(o, "gen_cpu"), cpu_cell(o, "other_cpu"), notes(o, cfg.runs)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def idle_tables(cfg: Config, servers: list[Server], results: Results, scenarios: list[str]) -> list[str]:
    n = f"{cfg.idle_conns:,}"
    lines: list[str] = []
    if "idle" in scenarios:
        lines += [
            f"### idle: {n} idle connections",
            "",
            f"Open: connect + handshake of all {n}, at most {CONNECT_IN_FLIGHT} at a time. RSS per"
            f" connection: (RSS {IDLE_SECONDS:g} s after the last opened − RSS before the first) / {n}."
            " Echo all: one 64 B message on each, until the last echo is back. CPU columns: while opening.",
            "",
            *header(
                "server",
                ">open s",
                ">min–max",
                ">vs wsloop",
                ">RSS KiB/conn",
                ">min–max",
                ">vs wsloop",
                ">threads",
                ">echo all ms",
                ">min–max",
                ">vs wsloop",
                *CPU_COLUMNS,
            ),
        ]
        for server in servers:
            o = results[server.name]["idle"]
            echo = o.median("echo_s")
            echo_span = o.span("echo_s")
            row = [
                server.label,
                fmt(o.median("open_s"), 2),
                fmt_span(o.span("open_s"), 2),
                fmt_ratio(ratio(results, server.name, "idle", "open_s")),
                fmt(o.median("rss_kib"), 2),
                fmt_span(o.span("rss_kib"), 2),
                fmt_ratio(ratio(results, server.name, "idle", "rss_kib")),
                fmt(o.median("threads")),
                fmt(None if echo is None else echo * 1e3),
                fmt_span(None if echo_span is None else (echo_span[0] * 1e3, echo_span[1] * 1e3)),
                fmt_ratio(ratio(results, server.name, "idle", "echo_s")),
                cpu_cell(o, "open_srv_cpu"),
                cpu_cell(o, "open_gen_cpu"),
                cpu_cell(o, "other_cpu"),
                notes(o, cfg.runs),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if "broadcast" in scenarios:
        lines += [
            f"### broadcast: one 64 B message to {n} connections",
            "",
            f"`broadcast:` + 64 B sent on one of {n} open connections; the time until every connection"
            " has the 64 B message.",
            "",
            *header("server", ">ms", ">min–max", ">vs wsloop", "broadcast with", *CPU_COLUMNS),
        ]
        for server in servers:
            vs = ratio(results, server.name, "broadcast", "broadcast_s")
            lines.append(broadcast_row(cfg, server, results[server.name]["broadcast"], vs))
        lines.append("")
    return lines


@dataclass(frozen=True)
class Target:
    text: str
    scenario: str
    key: str
    peer: str  # "" for an absolute bound on wsloop's own figure
    bound: float
    at_least: bool  # wsloop / peer >= bound (else <=)


TARGETS = [
    Target("100 conns x 8: wsloop >= 1.0x picows", "concurrent", "rate", "picows", 1.0, True),
    Target("100 conns x 8: wsloop >= 5x websockets (asyncio)", "concurrent", "rate", "websockets", 5.0, True),
    Target("1 conn x 64 pipelined: wsloop >= 1.0x picows", "pipelined", "rate", "picows", 1.0, True),
    Target(
        "1 conn x 64 pipelined: wsloop >= 5x websockets (asyncio)",
        "pipelined",
        "rate",
        "websockets",
        5.0,
        True,
    ),
    Target("1,000 conns x 1: wsloop >= 0.8x picows", "many", "rate", "picows", 0.8, True),
    Target("1,000 conns x 1: wsloop >= 3x websockets (asyncio)", "many", "rate", "websockets", 3.0, True),
    Target("1 conn, 1 in flight: p50 round trip <= 1.1x picows'", "latency", "p50_us", "picows", 1.1, False),
    Target("1 MiB binary: wsloop >= 0.7x the raw selectors TCP echo", "bin1m", "mbps", "raw", 0.7, True),
    Target("16 KiB x 10: wsloop >= 0.7x picows", "bin16k", "mbps", "picows", 0.7, True),
    Target("10,000 idle: RSS per connection <= 2.5 KiB", "idle", "rss_kib", "", 2.5, False),
    Target("10,000 idle: opened in <= 1/3 of picows' time", "idle", "open_s", "picows", 1 / 3, False),
    Target(
        "10,000 idle: one message on each echoed in <= picows' time", "idle", "echo_s", "picows", 1.0, False
    ),
    Target(
        "broadcast to 10,000: <= 0.7x websockets.broadcast's time",
        "broadcast",
        "broadcast_s",
        "websockets",
        0.7,
        False,
    ),
    Target("broadcast to 10,000: <= picows' time", "broadcast", "broadcast_s", "picows", 1.0, False),
]


def checklist(results: Results, cfg: Config) -> tuple[list[str], int]:
    lines = ["## Targets (from the issue)", ""]
    if cfg.idle_conns != 10000 or cfg.many_conns != 1000:
        lines += [
            f"(A reduced run: {cfg.idle_conns:,} idle connections, {cfg.many_conns:,} in `many`; "
            "the targets are stated for the full counts.)",
            "",
        ]
    passed = 0
    for t in TARGETS:
        ref = results.get(REFERENCE, {}).get(t.scenario)
        mine = ref.median(t.key) if ref else None
        if t.peer:
            other = results.get(t.peer, {}).get(t.scenario)
            theirs = other.median(t.key) if other else None
            value = mine / theirs if mine is not None and theirs else None
            shown = None if value is None else f"{value:.2f}x"
        else:
            value = mine
            shown = None if value is None else f"{value:.2f} KiB"
        if value is None:
            lines.append(f"- [ ] n/a — {t.text} (not measured)")
            continue
        ok = value >= t.bound if t.at_least else value <= t.bound
        passed += ok
        lines.append(f"- [{'x' if ok else ' '}] {'PASS' if ok else 'MISS'} — {t.text}: measured {shown}")
    lines.append("")
    return lines, passed


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "wsloop"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}" + (" + uncommitted changes under wsloop/" if dirty else "") if head else "unknown"


def machine(
    cfg: Config, command: str, started: datetime.datetime, wall: float, load: tuple[str, str]
) -> list[str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for dist in ("wsloop", "websockets", "aiohttp", "picows", "ws4py", "CherryPy", "gevent"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    try:
        gcc = subprocess.run(
            ["gcc", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        gcc = "unknown"
    pin = (
        "not pinned (fewer than 2 CPUs available)"
        if cfg.server_core is None
        else f"server on CPU {cfg.server_core}, load generator on CPU {cfg.gen_core} (sched_setaffinity)"
    )
    return [
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; the run took {wall / 60:.1f} min",
        f"- Command: `{command}`",
        f"- CPU: {model}; {os.cpu_count()} cores; {pin}",
        f"- Kernel: Linux {platform.release()}; Python {platform.python_version()}; {gcc}",
        f"- Packages: {', '.join(versions)}",
        f"- wsloop: git {git_state()}",
        f"- Load average at the start / end: {load[0]} / {load[1]} (see the 'other CPU' columns)",
        f"- Each figure: median of {cfg.runs} run(s), min–max beside it; rate windows of {cfg.duration:g} s"
        f" after {cfg.warmup:g} s of warm-up",
    ]


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def write_report(
    path: Path, cfg: Config, servers: list[Server], scenarios: list[str], results: Results, head: list[str]
) -> int:
    lines = [
        "# wsloop benchmark results",
        "",
        "Written by `python stress/bench.py` (its docstring describes the method). Rerun it, do not edit.",
        "",
        "## Machine",
        "",
        *head,
        "",
        "## Method",
        "",
        "- Servers: `stress/peers/*.py`, each on 127.0.0.1, compression off, one process on one core. The"
        " load generator (`stress/loadgen.c`, C, epoll, one thread) sends pre-built masked frames and counts"
        " echoed bytes; the raw TCP echo gets unframed bytes of the same sizes.",
        "- msg/s: echoes completed per second; MB/s: payload bytes echoed per second (10^6 bytes); a round"
        " trip is from queueing a message to the last byte of its echo.",
        "- vs wsloop: this server's median / wsloop standalone (selectors)'s. For msg/s and MB/s higher is"
        " better; for times, round trips and memory lower is better.",
        "- server CPU / loadgen CPU: CPU time / wall time over the measurement window (median of runs); a"
        " saturated server shows ~100%, a load generator well under 100% was not the bottleneck.",
        "- other CPU: CPU time other processes (not the server, the load generator or this script) took on"
        " the two pinned cores during the measurement, as a share of its wall time (the larger of the two"
        " cores; from /proc/stat). Near 0% on a quiet machine; where it is high, the figures of that row"
        " were taken on a shared, busy machine and understate the server.",
        "- ws4py 0.6.0 runs on Python 3.11 unmodified (no shim needed); its peer script only raises wsgiref's"
        " listen backlog from 5 to 1,024, as every other server here has, and silences request logging.",
        "",
        "## Results",
        "",
    ]
    for rate in RATES:
        if rate.name in scenarios:
            lines += rate_table(rate, cfg, servers, results)
    lines += idle_tables(cfg, servers, results, scenarios)
    check, passed = checklist(results, cfg)
    lines += check
    path.write_text("\n".join(lines), encoding="utf-8")
    return passed


# ---------------------------------------------------------------------------- scaling out

SCALING_HEADING = "## Scaling out: worker processes and the Redis broker"
WORKERS_TARGET = 1.6  # --workers 2 / --workers 1, 64 B echo, 1,000 connections


class RedisServer:
    """``redis-server`` for the ``broadcast-workers`` scenario: a free loopback port, a temporary
    folder, no persistence; unpinned like the servers it joins."""

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="wsloop-bench-redis-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.folder.name, "--daemonize", "no"]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=anywhere,
        )

    def wait_ready(self, seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.folder.cleanup()


def broadcast_row(cfg: Config, server: Server, o: Outcome, vs: float | None) -> str:
    """A broadcast table's row: the time until the last connection has it, and where CPU went."""
    value, span = o.median("broadcast_s"), o.span("broadcast_s")
    row = [
        server.label,
        fmt(None if value is None else value * 1e3, 1),
        fmt_span(None if span is None else (span[0] * 1e3, span[1] * 1e3), 1),
        fmt_ratio(vs),
        server.broadcast or "—",
        cpu_cell(o, "broadcast_srv_cpu"),
        cpu_cell(o, "broadcast_gen_cpu"),
        cpu_cell(o, "other_cpu"),
        notes(o, cfg.runs),
    ]
    return "| " + " | ".join(row) + " |"


def scaling_ratio(
    results: Results, scenario: str, key: str, name: str, outcome_key: str = "broadcast"
) -> float | None:
    """``name``'s median of ``key`` in ``outcome_key`` over the scenario's first configuration's."""
    reference = SCALING[scenario][0].name
    mine = results.get(name, {}).get(outcome_key)
    ref = results.get(reference, {}).get(outcome_key)
    if mine is None or ref is None:
        return None
    a, b = mine.median(key), ref.median(key)
    return a / b if a is not None and b else None


_BUSY_LOOP = "x = 0\nfor i in range(15_000_000):\n    x += i * i % 7\n"


def core_scaling(reps: int = 3) -> float:
    """How much two processes of pure Python work get through together, as a multiple of one
    alone (median of ``reps``): what this machine's second core adds, with no I/O at all."""
    argv = [sys.executable, "-c", _BUSY_LOOP]
    ratios = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(argv, check=True)
        one = time.perf_counter() - started
        started = time.perf_counter()
        pair = [subprocess.Popen(argv) for _ in range(2)]
        for proc in pair:
            proc.wait()
        two = time.perf_counter() - started
        ratios.append(2 * one / two)
    return statistics.median(ratios)


def scaling_section(
    cfg: Config, results: Results, scaling: list[str], head: list[str], cores: float | None = None
) -> tuple[list[str], bool]:
    """The report's scaling section, and whether the workers target was met."""
    lines = [
        SCALING_HEADING,
        "",
        "Written by `python stress/bench.py --scenarios workers,broadcast-workers` (one or both; the"
        " bench's docstring describes the method). Rerun it, do not edit.",
        "",
        *head,
        "",
        "- Nothing is pinned here: the server's processes and the load generator may all run on either"
        " core, in every row (two workers pinned one per core would leave the load generator nothing,"
        " and the one-process row would then not be comparable). On this 2-core machine the load"
        " generator runs on the cores the workers need, so `--workers 2` is measured against one"
        " process with less than 2 cores' worth for the server.",
        "- server CPU: every process of the server (supervisor and workers) together, CPU time / wall"
        " time over the measurement window (the broadcast, for `broadcast-workers`); 100% = one core."
        " msg/s per server core: msg/s / server CPU, what one core of server gets through. other CPU:"
        " what other processes took of both cores together over the run (100% = one core), from"
        " /proc/stat: the machine is shared, and where it is high the row's figure understates wsloop.",
        "",
    ]
    met = False
    for rate in WORKERS_RATES if "workers" in scaling else []:
        title = rate.title.replace("1,000", f"{cfg.many_conns:,}")
        lines += [
            f"### {rate.name}: {title}, `--workers 1` vs `--workers 2`",
            "",
            *header(
                "configuration",
                ">msg/s",
                ">min–max",
                ">vs --workers 1",
                ">msg/s per server core",
                *CPU_COLUMNS,
            ),
        ]
        for server in SCALING["workers"]:
            o = results[server.name][rate.name]
            per_core = [r["rate"] / r["srv_cpu"] for r in o.runs if r.get("srv_cpu", 0) > 0]
            row = [
                server.label,
                fmt(o.median("rate")),
                fmt_span(o.span("rate")),
                fmt_ratio(scaling_ratio(results, "workers", "rate", server.name, rate.name)),
                fmt(statistics.median(per_core) if per_core else None),
                cpu_cell(o, "srv_cpu"),
                cpu_cell(o, "gen_cpu"),
                cpu_cell(o, "other_cpu"),
                notes(o, cfg.runs),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines += ceiling(results, rate.name)
        lines.append("")
    if "broadcast-workers" in scaling:
        n = f"{cfg.idle_conns:,}"
        lines += [
            f"### broadcast-workers: one 64 B broadcast to {n} connections",
            "",
            f"`broadcast:` + 64 B sent on one of {n} open connections (on whichever worker the kernel gave"
            " it); the time until every connection has the 64 B message. With two workers about half of"
            " the connections get it from the other worker, through Redis.",
            "",
            *header("configuration", ">ms", ">min–max", ">vs no broker", "broadcast with", *CPU_COLUMNS),
        ]
        for server in SCALING["broadcast-workers"]:
            vs = scaling_ratio(results, "broadcast-workers", "broadcast_s", server.name)
            lines.append(broadcast_row(cfg, server, results[server.name]["broadcast"], vs))
        lines.append("")
    if "workers" in scaling:
        target = WORKERS_RATES[0]
        value = scaling_ratio(results, "workers", "rate", SCALING["workers"][1].name, target.name)
        lines.append("### Target")
        lines.append("")
        text = (
            f"64 B echo, {cfg.many_conns:,} connections x {target.in_flight} in flight:"
            f" `--workers 2` >= {WORKERS_TARGET}x `--workers 1`"
        )
        if value is None:
            lines.append(f"- [ ] n/a — {text} (not measured)")
        else:
            met = value >= WORKERS_TARGET
            lines.append(
                f"- [{'x' if met else ' '}] {'PASS' if met else 'MISS'} — {text}: measured {value:.2f}x"
            )
            for other in WORKERS_RATES[1:]:  # shown beside it, never instead of it
                got = scaling_ratio(results, "workers", "rate", SCALING["workers"][1].name, other.name)
                if got is not None:
                    lines.append(
                        f"  - at {other.in_flight} in flight (not the target's measure; ceiling in its"
                        f" table): {got:.2f}x"
                    )
        if cores is not None:
            lines += [
                "",
                f"This machine's second core: two processes of pure Python work (no I/O, no load"
                f" generator) got through {cores:.2f}x what one does alone (`core_scaling()`, median of 3,"
                " just after the runs). On this shared virtual machine that figure moves from one minute"
                " to the next (0.87x to 1.74x seen on the same day): two workers cannot show more than"
                " the host's second core gives at the time.",
            ]
        lines.append("")
    return lines, met


def ceiling(results: Results, key: str) -> list[str]:
    """What the cores could give with the load generator on them: a line for the report."""
    one, two = (results[s.name][key] for s in SCALING["workers"])
    costs = [
        (r["srv_cpu"] + r["gen_cpu"]) / r["rate"]
        for r in two.runs
        if r.get("srv_cpu", 0) > 0 and r["rate"] > 0
    ]
    base = one.median("rate")
    if not costs or not base:
        return []
    per_message = statistics.median(costs)  # CPU seconds per echo, server and load generator
    ncores = len(ALL_CPUS)
    bound = ncores / per_message
    return [
        "",
        f"Ceiling on this machine: with `--workers 2` one echo costs {per_message * 1e6:.1f} µs of CPU,"
        f" server and load generator together (median), so {ncores} fully busy cores give at most"
        f" {bound:,.0f} msg/s, {bound / base:.2f}x `--workers 1`: the load generator shares the cores the"
        " workers need. The msg/s per server core column shows what each worker process gets through.",
        "",
    ]


def splice_section(path: Path, section: list[str]) -> None:
    """Put ``section`` (its first line a ``## `` heading) in the report at ``path``: in place of
    the section with that heading, or at the end."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# wsloop benchmark results\n"
    body = "\n".join(section).rstrip("\n") + "\n"
    start = text.find("\n" + section[0] + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + body + ("\n" + text[end + 1 :] if end >= 0 else "")
    path.write_text(text, encoding="utf-8")


def measure_scaling(cfg: Config, scaling: list[str], results: Results, label: tuple[int, int]) -> None:
    """One run of each configuration of the scaling scenarios."""
    for name in scaling:
        for server in SCALING[name]:
            if name == "workers":
                measure_rates(cfg, server, WORKERS_RATES, results, label)
                continue
            outcome = results[server.name]["broadcast"]
            if outcome.failures:
                outcome.skipped += 1
                continue
            measure_idle(cfg, server, ["broadcast"], results, label)


# ---------------------------------------------------------------------------- main


def names(text: str, choices: Sequence[str], what: str) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in choices]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown) or '(none)'}; choose from {', '.join(choices)}"
        )
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark wsloop against its peers (see the module docstring)."
    )
    parser.add_argument(
        "--servers",
        type=lambda t: names(t, SERVER_NAMES, "server"),
        default=SERVER_NAMES,
        help=f"comma-separated, from {','.join(SERVER_NAMES)} (all)",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda t: names(t, SCENARIOS, "scenario"),
        default=SCENARIOS,
        help=f"comma-separated, from {','.join(SCENARIOS)} (all)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per measurement, the median reported (3)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per rate measurement window (1.0)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before each window (0.3)")
    parser.add_argument("--connections", type=int, default=None, help="idle/broadcast connections (10000)")
    parser.add_argument(
        "--output", type=Path, default=HERE / "RESULTS.md", help="the report (stress/RESULTS.md)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 1 run, 0.3 s windows, {QUICK_IDLE} idle and {QUICK_MANY} 'many' connections",
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.connections is not None and args.connections < 1:
        parser.error("--connections must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server being measured
    started = datetime.datetime.now(datetime.UTC)
    load_start = loadavg()
    server_core, gen_core = cores()
    if gen_core is not None:
        os.sched_setaffinity(0, {gen_core})  # keep this script off the server's core
    else:
        log("warning: fewer than 2 CPUs available; nothing is pinned")
    try:
        loadgen = build_loadgen()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"error: cannot build the load generator ({exc}); it needs gcc", file=sys.stderr)
        return 2
    quick = args.quick
    cfg = Config(
        loadgen=loadgen,
        gen_core=gen_core,
        server_core=server_core,
        runs=args.runs or (1 if quick else 3),
        duration=args.duration or (0.3 if quick else 1.0),
        warmup=args.warmup if args.warmup is not None else (0.1 if quick else 0.3),
        idle_conns=args.connections or (QUICK_IDLE if quick else 10000),
        many_conns=QUICK_MANY if quick else 1000,
    )
    limit = raise_nofile_limit()
    needed = max(cfg.idle_conns, cfg.many_conns) + 200
    if needed > limit:
        print(f"error: {needed} file descriptors needed, RLIMIT_NOFILE is {limit}", file=sys.stderr)
        return 2
    scenarios = [s for s in SCENARIOS if s in args.scenarios]
    scaling = [s for s in SCALING_SCENARIOS if s in scenarios]
    scenarios = [s for s in scenarios if s not in scaling]  # the classic ones, against the peers
    servers = [s for s in SERVERS if s.name in args.servers] if scenarios else []
    rates = [r for r in RATES if r.name in scenarios]
    idle = [s for s in IDLE_SCENARIOS if s in scenarios]
    results: Results = {s.name: {name: Outcome() for name in scenarios} for s in servers}
    for name in scaling:
        for config in SCALING[name]:
            keys = [r.name for r in WORKERS_RATES] if name == "workers" else ["broadcast"]
            results[config.name] = {key: Outcome() for key in keys}
    redis_server: RedisServer | None = None
    if "broadcast-workers" in scaling:
        why = ""
        if shutil.which("redis-server") is None:
            why = "redis-server not installed (Debian: apt-get install redis-server)"
        elif importlib.util.find_spec("redis") is None:
            why = "the redis package is not installed (pip install -e '.[bench]')"
        else:
            redis_server = RedisServer()
            if redis_server.wait_ready():
                cfg.redis_url = redis_server.url
                log(f"redis-server on {redis_server.url}")
            else:
                why = "redis-server did not start"
                redis_server.stop()
                redis_server = None
        if why:
            log(f"broadcast-workers through Redis skipped: {why}")
            for config in SCALING["broadcast-workers"]:
                if "{redis}" in config.argv:
                    results[config.name]["broadcast"].failures.append(f"failed ({why})")
    log(f"load generator {loadgen}; servers on CPU {server_core}, load generator on CPU {gen_core}")
    available = []
    for server in servers:
        missing = [m for m in server.requires if importlib.util.find_spec(m) is None]
        if missing:
            for name in scenarios:
                results[server.name][name].failures.append(f"failed (not installed: {', '.join(missing)})")
            log(f"{server.name:16} skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')")
            continue
        available.append(server)
    # Runs are interleaved: run 1 of every server, then run 2 of every server, ... so a busy
    # stretch of the machine falls on several servers' runs, not on all of one server's.
    one_run = dataclasses.replace(cfg, runs=1)
    for run in range(cfg.runs):
        log(f"-- run {run + 1} of {cfg.runs}")
        for server in available:
            if rates:
                measure_rates(one_run, server, rates, results, (run + 1, cfg.runs))
            todo = [name for name in idle if not results[server.name][name].failures]
            for name in idle:
                if name not in todo:
                    results[server.name][name].skipped += 1  # failed before: not repeated
            if todo:
                measure_idle(one_run, server, todo, results, (run + 1, cfg.runs))
        if scaling:
            measure_scaling(one_run, scaling, results, (run + 1, cfg.runs))
    if redis_server is not None:
        redis_server.stop()
    wall = time.monotonic() - STARTED
    command = (
        "python stress/bench.py"
        + ("" if argv is None and len(sys.argv) < 2 else " ")
        + shlex.join(sys.argv[1:] if argv is None else list(argv))
    )
    head = machine(cfg, command.strip(), started, wall, (load_start, loadavg()))
    if scenarios:
        passed = write_report(args.output, cfg, servers, scenarios, results, head)
        log(f"wrote {args.output} ({passed} of {len(TARGETS)} targets met); took {wall / 60:.1f} min")
    if scaling:
        pin = re.compile(
            r"; (server on CPU \d+, load generator on CPU \d+ \(sched_setaffinity\)|not pinned.*)$"
        )
        scaling_head = [pin.sub("; nothing pinned in this section", line) for line in head]
        second_core = core_scaling() if "workers" in scaling else None
        section, met = scaling_section(cfg, results, scaling, scaling_head, second_core)
        splice_section(args.output, section)
        log(f"wrote the scaling section of {args.output} (workers target {'met' if met else 'not met'})")
    if REFERENCE in results and any(o.failures for o in results[REFERENCE].values()):
        print("error: a wsloop standalone (selectors) measurement failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
