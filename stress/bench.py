"""Benchmark wsloop against its peers: message rates, throughput, 10,000 idle connections, broadcast.

Usage::

    python stress/bench.py                        # everything, 3 runs each: ~12 minutes
    python stress/bench.py --quick                # a short smoke run (1 run, small counts)
    python stress/bench.py --servers wsloop,picows,raw --scenarios concurrent,idle --runs 5
    python stress/bench.py --scenarios workers,broadcast-workers   # wsloop's scaling out alone

Each peer server (``stress/peers/``) runs pinned to one core and the C load generator
(``stress/loadgen.c``, built with gcc on first use) to another; every figure is the median of
``--runs`` interleaved runs; the report goes to ``--output`` (stress/RESULTS.md). The scenarios
and the method are described in docs/ARCHITECTURE.md. This file is the harness (command line,
runs, measurements); ``benchpeers.py`` holds the servers and scenarios, ``benchreport.py`` the
report. Exit status: 0, 1 if a wsloop standalone (selectors) measurement failed, 2 on a usage
error or when the load generator cannot be built.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.util
import os
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchpeers import (
    CONNECT_IN_FLIGHT,
    HERE,
    IDLE_SCENARIOS,
    IDLE_SECONDS,
    QUICK_IDLE,
    QUICK_MANY,
    RATES,
    REFERENCE,
    SCALING,
    SCALING_SCENARIOS,
    SCENARIOS,
    SERVER_NAMES,
    SERVERS,
    WORKERS_RATES,
    Rate,
    Server,
    anywhere,
    cores,
    pinned,
    server_tail,
    start_server,
    wait_server,
)
from benchreport import (
    TARGETS,
    Config,
    Outcome,
    Results,
    loadavg,
    machine,
    scaling_section,
    splice_section,
    write_report,
)
from loadkit import ServerProcess, proc_status, raise_nofile_limit

from tests.support.redisproc import RedisServer

LOADGEN_SRC = HERE / "loadgen.c"
OPEN_TIMEOUT = 45.0  # per connection-opening phase
PHASE_TIMEOUT = 30.0  # per echo / broadcast phase of the idle scenarios
# Broadcasts per server process; the run's figure is their median. The first one after the
# 10,000 opens costs 10-20% more CPU than the ones after it (docs/ARCHITECTURE.md, "Broadcast").
BROADCASTS = 3
BROADCAST_PAUSE = 0.3
SETTLE_SECONDS = 0.5  # after the server is ready, before its RSS is read


# ---------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


STARTED = time.monotonic()


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


# ---------------------------------------------------------------------------- measurements


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
            why = f"server exited: {server_tail(proc)}"
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
    proc = start_server(server, cfg.server_core, cfg.redis_url)
    gen: subprocess.Popen[str] | None = None
    figures: dict[str, float] = {}
    try:
        failure = wait_server(proc)
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
            rounds = []
            for _ in range(BROADCASTS):
                sent = answer("broadcast", PHASE_TIMEOUT + 10)
                if "error" in sent:
                    return figures, describe_failure(sent["error"], proc, "broadcasting")
                rounds.append(sent)
                time.sleep(BROADCAST_PAUSE)
            sent = sorted(rounds, key=lambda r: float(r["secs"]))[len(rounds) // 2]
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
        return f"failed (server exited while {phase}: {server_tail(proc)})"
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
                        outcome.failures.append(f"failed (server exited: {server_tail(proc)})")
                        proc.stop()
                        proc = None
                        continue
                    proc = start_server(server, cfg.server_core, cfg.redis_url)
                    failure = wait_server(proc)
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


# ---------------------------------------------------------------------------- scaling out


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
    redis_folder = tempfile.TemporaryDirectory(prefix="wsloop-bench-redis-")  # unpinned like its servers
    if "broadcast-workers" in scaling:
        why = ""
        if shutil.which("redis-server") is None:
            why = "redis-server not installed (Debian: apt-get install redis-server)"
        elif importlib.util.find_spec("redis") is None:
            why = "the redis package is not installed (pip install -e '.[bench]')"
        else:
            try:
                redis_server = RedisServer(Path(redis_folder.name), preexec_fn=anywhere)
            except (OSError, RuntimeError) as exc:
                why = f"redis-server did not start ({exc})"
            else:
                cfg.redis_url = redis_server.url
                log(f"redis-server on {redis_server.url}")
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
    redis_folder.cleanup()
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
