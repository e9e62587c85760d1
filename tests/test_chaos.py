"""CI's run of ``stress/chaos.py``: 20 s of well-behaved echo clients next to misbehaving peers
(slowloris, garbage, oversized frames, decompression bombs, never-readers, resets, ping floods,
10,000 connect/disconnect cycles) against ``python -m wsloop serve``; the script checks the
server survives, echoes stay intact and fast, descriptors come back and memory stays bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A wsloop bug the chaos run finds (see tests/test_properties.py, FAILURE_CYCLE): a failed
# connection's Protocol keeps its exception's traceback, a reference cycle that pins the inflated
# output of a decompression bomb (up to the 1 MiB limit) until a full GC, so the server's RSS
# climbs past the bound. While this is set, a run whose only failure is the RSS bound is an
# expected failure; a run that passes fails this test, so the tolerance is removed once fixed.
KNOWN_RSS_BUG: str | None = (
    "Protocol.failure keeps its traceback (a reference cycle pinning each failed connection's "
    "buffers): the server's peak RSS exceeds the bound under decompression bombs"
)


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
    lines = result.stdout.splitlines()
    failures = lines[lines.index("RESULT: FAIL") + 1 :] if "RESULT: FAIL" in lines else []
    if KNOWN_RSS_BUG is not None:
        if result.returncode == 0:
            pytest.fail(f"chaos passed: the known bug looks fixed; set KNOWN_RSS_BUG = None\n{output}")
        if failures and all(f.strip().startswith("- server peak RSS") for f in failures):
            pytest.xfail(KNOWN_RSS_BUG)
    assert result.returncode == 0, output
    assert "RESULT: PASS" in result.stdout, output
