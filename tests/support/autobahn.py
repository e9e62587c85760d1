"""Run the Autobahn TestSuite's fuzzing client (kosoku) against a server URL and judge its report:
which results count as passed, and the case selections the tests use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The results a case may end with, for its behaviour and for its closing behaviour.
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
#: WSLOOP_AUTOBAHN_WHOLE=1: the whole suite on every flavour (CI runs it whole on the standalone
#: server only; see tests/test_autobahn.py).
WHOLE = os.environ.get("WSLOOP_AUTOBAHN_WHOLE", "").strip() not in ("", "0")


def kosoku() -> str:
    here = Path(sys.executable).parent
    found = shutil.which("kosoku", path=str(here)) or shutil.which("kosoku")
    if found is None:
        pytest.fail("kosoku is not installed: pip install -e '.[test]'")
    return found


def run_suite(url: str, outdir: Path, *selection: str, check: bool = True) -> dict[str, dict[str, str]]:
    """Run kosoku against ``url``; ``check``: fail unless kosoku counts every case passed."""
    subprocess.run(
        [kosoku(), "-p", "2", "-o", str(outdir), *selection, url],
        check=check,
        # the whole suite (no selection: test_autobahn_whole_suite_standalone, whose pytest
        # timeout is 1200 s) passed 600 s on a loaded machine; a selection is a third of it
        timeout=1500 if WHOLE else 1100 if not selection else 600,
        stdout=subprocess.DEVNULL,
    )
    report = json.loads((outdir / "index.json").read_text())
    (cases,) = report.values()
    return cases  # type: ignore[no-any-return]


def assert_all_passed(cases: dict[str, dict[str, str]], expected: int = 301) -> None:
    """Every selected case ran (group 9 included), and none failed."""
    bad = {
        case: (result["behavior"], result["behaviorClose"])
        for case, result in cases.items()
        if result["behavior"] not in ACCEPTED or result["behaviorClose"] not in ACCEPTED
    }
    assert len(cases) == expected, f"{len(cases)} cases ran, {expected} expected"
    assert not bad, f"cases not passed: {bad}"
    assert any(case.startswith("9.") for case in cases), "group 9 (16 MiB messages) included"


#: Every case outside the compression groups.
NO_COMPRESSION = ("-x", "12.*", "-x", "13.*")
