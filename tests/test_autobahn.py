"""The Autobahn TestSuite's cases (run by kosoku) against ``python -m wsloop serve``.

Every case outside groups 12 and 13 (compression, not implemented yet) must end OK,
NON-STRICT or INFORMATIONAL, for its behaviour and for its closing behaviour.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .serverproc import ServerProcess

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def kosoku() -> str:
    here = Path(sys.executable).parent
    found = shutil.which("kosoku", path=str(here)) or shutil.which("kosoku")
    if found is None:
        pytest.fail("kosoku is not installed: pip install -e '.[test]'")
    return found


def run_suite(url: str, outdir: Path, *selection: str) -> dict[str, dict[str, str]]:
    subprocess.run(
        [kosoku(), "-p", "2", "-o", str(outdir), *selection, url],
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    report = json.loads((outdir / "index.json").read_text())
    (cases,) = report.values()
    return cases  # type: ignore[no-any-return]


def assert_all_passed(cases: dict[str, dict[str, str]]) -> None:
    """Every case outside groups 12 and 13 ran, group 9 included, and none failed."""
    bad = {
        case: (result["behavior"], result["behaviorClose"])
        for case, result in cases.items()
        if result["behavior"] not in ACCEPTED or result["behaviorClose"] not in ACCEPTED
    }
    assert len(cases) == 301, "every case outside groups 12 and 13 ran"
    assert not bad, f"cases not passed: {bad}"
    assert any(case.startswith("9.") for case in cases), "group 9 (16 MiB messages) included"


NO_COMPRESSION = ("-x", "12.*", "-x", "13.*")


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "cli_args",
    [
        ("--poller", "selectors"),
        ("--poller", "threaded"),
        ("--server", "wsgiref"),
        ("--server", "gevent"),
        ("--server", "cherrypy"),
        ("--server", "asyncio"),
    ],
    ids=lambda args: "-".join(args[1:]),
)
def test_autobahn_cases_pass(cli_args: tuple[str, ...], tmp_path: Path) -> None:
    server = ServerProcess(*cli_args)
    try:
        cases = run_suite(server.url, tmp_path, *NO_COMPRESSION)
    finally:
        code = server.stop()
    assert_all_passed(cases)
    assert code == 0, server.output
    if os.environ.get("WSLOOP_KEEP_REPORTS"):
        name = "-".join(cli_args[1:])
        shutil.copytree(tmp_path, Path(os.environ["WSLOOP_KEEP_REPORTS"]) / name, dirs_exist_ok=True)
