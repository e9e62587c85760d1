"""CI's run of ``stress/chaos.py``: 20 s of well-behaved echo clients next to misbehaving peers
(slowloris, garbage, oversized frames, decompression bombs, never-readers, resets, ping floods,
10,000 connect/disconnect cycles, and issue 13's attacks: BFINAL-split deflate, floods of tiny
fragments, idle connects, a subscriber that never reads, unread pings, reset churn, malformed
request heads) against ``python -m wsloop serve``; the script checks the server survives, echoes
stay intact and fast, descriptors come back, memory stays bounded and each attacker gets the
answer expected (a close code, a 400, a drop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_chaos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "stress" / "chaos.py"), "--duration", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "RESULT: PASS" in result.stdout, output
