"""The report of ``stress/bench.py``: every run's figures (:class:`Outcome`), the measurement
settings (:class:`Config`), the markdown tables of stress/RESULTS.md with each server's ratio to
wsloop, the issue's targets as a checklist, the machine's description and the scaling section.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchpeers import (
    ALL_CPUS,
    CONNECT_IN_FLIGHT,
    IDLE_SECONDS,
    RATES,
    REFERENCE,
    SCALING,
    WORKERS_RATES,
    Rate,
    Server,
)
from loadkit import REPO


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


# ---------------------------------------------------------------------------- tables

#: wsloop with its C extension turned off (``WSLOOP_NO_SPEEDUPS=1``): a table of its own, no target.
PURE = "wsloop-pure"


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
    Target("64 B, 100 conns x 8: wsloop >= 2.0x picows", "concurrent", "rate", "picows", 2.0, True),
    Target(
        "64 B, 100 conns x 8: wsloop >= 8x websockets (asyncio)",
        "concurrent",
        "rate",
        "websockets",
        8.0,
        True,
    ),
    Target("64 B, 1 conn x 64 pipelined: wsloop >= 1.5x picows", "pipelined", "rate", "picows", 1.5, True),
    Target("64 B, 1,000 conns x 1: wsloop >= 1.0x picows", "many", "rate", "picows", 1.0, True),
    Target(
        "64 B, 1,000 conns x 1: wsloop >= 3x websockets (asyncio)", "many", "rate", "websockets", 3.0, True
    ),
    Target("16 KiB binary, 10 conns: wsloop >= 1.0x picows", "bin16k", "mbps", "picows", 1.0, True),
    Target(
        "1 MiB binary, 1 conn: wsloop >= 0.7x the raw selectors TCP echo", "bin1m", "mbps", "raw", 0.7, True
    ),
    Target(
        "64 B, 1 conn, 1 in flight: p50 round trip <= 1.0x picows'", "latency", "p50_us", "picows", 1.0, False
    ),
    Target("open 10,000 connections in <= 0.33x picows' time", "idle", "open_s", "picows", 0.33, False),
    Target(
        "broadcast 64 B to 10,000: <= 0.5x websockets.broadcast's time",
        "broadcast",
        "broadcast_s",
        "websockets",
        0.5,
        False,
    ),
    Target(
        "broadcast 64 B to 10,000: <= 0.7x picows' time", "broadcast", "broadcast_s", "picows", 0.7, False
    ),
    Target("10,000 idle: RSS per connection <= 1.5 KiB", "idle", "rss_kib", "", 1.5, False),
]


# (scenario, key, what it is, digits)
PURE_ROWS = [
    ("latency", "p50_us", "64 B, 1 in flight: p50 round trip, µs", 1),
    ("pipelined", "rate", "64 B, 1 conn x 64 pipelined: msg/s", 0),
    ("concurrent", "rate", "64 B, 100 conns x 8: msg/s", 0),
    ("many", "rate", "64 B, 1,000 conns x 1: msg/s", 0),
    ("bin16k", "mbps", "16 KiB binary, 10 conns: MB/s", 1),
    ("bin1m", "mbps", "1 MiB binary, 1 conn: MB/s", 1),
    ("idle", "open_s", "open 10,000 connections: s", 2),
    ("idle", "rss_kib", "RSS per idle connection: KiB", 2),
    ("broadcast", "broadcast_s", "broadcast 64 B to 10,000: ms", 1),
]


def scaled(results: Results, server: str, scenario: str, key: str, scale: float) -> float | None:
    """A server's median of one figure, times ``scale`` (None where not measured)."""
    outcome = results.get(server, {}).get(scenario)
    value = outcome.median(key) if outcome else None
    return None if value is None else value * scale


def pure_table(results: Results, cfg: Config, scenarios: list[str]) -> list[str]:
    """wsloop without its C extension beside wsloop with it and the peers (no target)."""
    if PURE not in results:
        return []
    lines = [
        "## Pure Python: wsloop with `WSLOOP_NO_SPEEDUPS=1`",
        "",
        "The same server with its C extension turned off (what an install without a compiler runs);"
        " no target. pure / with C: its median / wsloop's with the extension (for rates higher is"
        " better, for times and memory lower); the picows and websockets columns repeat their medians"
        " from the tables above.",
        "",
        *header(
            "measure",
            ">pure Python",
            ">min–max",
            ">with C",
            ">pure / with C",
            ">picows",
            ">websockets",
            "notes",
        ),
    ]
    for scenario, key, text, digits in PURE_ROWS:
        if scenario not in scenarios:
            continue
        scale = 1e3 if key == "broadcast_s" else 1.0
        o = results[PURE][scenario]
        span = o.span(key)
        text = text.replace("10,000", f"{cfg.idle_conns:,}").replace("1,000", f"{cfg.many_conns:,}")
        row = [
            text,
            fmt(scaled(results, PURE, scenario, key, scale), digits),
            fmt_span(None if span is None else (span[0] * scale, span[1] * scale), digits),
            fmt(scaled(results, REFERENCE, scenario, key, scale), digits),
            fmt_ratio(ratio(results, PURE, scenario, key)),
            fmt(scaled(results, "picows", scenario, key, scale), digits),
            fmt(scaled(results, "websockets", scenario, key, scale), digits),
            notes(o, cfg.runs),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


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
        f"- wsloop: git {git_state()}; {speedups()}",
        f"- Load average at the start / end: {load[0]} / {load[1]} (see the 'other CPU' columns)",
        f"- Each figure: median of {cfg.runs} run(s), min–max beside it; rate windows of {cfg.duration:g} s"
        f" after {cfg.warmup:g} s of warm-up",
    ]


def speedups() -> str:
    """Whether the servers' wsloop masks with its C extension (``framing.SPEEDUPS``)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import wsloop.framing as f; print(f.SPEEDUPS)"],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if k != "WSLOOP_NO_SPEEDUPS"},
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out == "True":
        return "masking by its C extension (`framing.SPEEDUPS` is True)"
    if out == "False":
        return "masking in pure Python (`framing.SPEEDUPS` is False: the C extension is not built)"
    return "`framing.SPEEDUPS` unknown"


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
        "Written by `python stress/bench.py` (docs/ARCHITECTURE.md describes the method)."
        " Rerun it, do not edit.",
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
    tabled = [s for s in servers if s.name != PURE]
    for rate in RATES:
        if rate.name in scenarios:
            lines += rate_table(rate, cfg, tabled, results)
    lines += idle_tables(cfg, tabled, results, scenarios)
    check, passed = checklist(results, cfg)
    lines += check
    lines += pure_table(results, cfg, scenarios)
    path.write_text("\n".join(lines), encoding="utf-8")
    return passed


# ---------------------------------------------------------------------------- scaling out

SCALING_HEADING = "## Scaling out: worker processes and the Redis broker"
WORKERS_TARGET = 1.6  # --workers 2 / --workers 1, 64 B echo, 1,000 connections


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


def scaling_section(
    cfg: Config, results: Results, scaling: list[str], head: list[str], cores: float | None = None
) -> tuple[list[str], bool]:
    """The report's scaling section, and whether the workers target was met."""
    lines = [
        SCALING_HEADING,
        "",
        "Written by `python stress/bench.py --scenarios workers,broadcast-workers` (one or both;"
        " docs/ARCHITECTURE.md describes the method). Rerun it, do not edit.",
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
