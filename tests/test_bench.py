"""Smoke test of ``stress/bench.py --quick``: wsloop standalone and the raw TCP echo (no extra packages)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.components import require

BENCH = Path(__file__).resolve().parent.parent / "stress" / "bench.py"


def test_quick_bench_writes_the_tables(tmp_path: Path) -> None:
    require("gcc", "the load generator stress/loadgen.c is compiled with it")
    output = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--servers",
            "wsloop,raw",
            "--scenarios",
            "concurrent,idle",
            "--connections",
            "200",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = output.read_text(encoding="utf-8")
    for heading in (
        "## Machine",
        "### concurrent: 64 B text echo, 100 connections x 8 in flight",
        "### idle: 200 idle connections",
        "## Targets (from the issue)",
    ):
        assert heading in report, report
    assert "### latency" not in report and "### broadcast" not in report
    rows = [line for line in report.splitlines() if line.startswith("| wsloop standalone (selectors) |")]
    assert len(rows) == 2 and all("1.00x" in row for row in rows), report
    raw = [line for line in report.splitlines() if line.startswith("| raw selectors TCP echo |")]
    assert len(raw) == 2 and not any("failed" in row or "timeout" in row for row in raw), report
    assert "msg/s" in done.stdout and "KiB/conn" in done.stdout
