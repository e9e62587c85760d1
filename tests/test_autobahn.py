"""The Autobahn TestSuite's cases (run by kosoku): every case run must end OK, NON-STRICT or
INFORMATIONAL, for its behaviour and its closing behaviour.

By default: all 517 cases (permessage-deflate's groups 12 and 13 included) on the standalone
server of ``python -m wsloop serve``; on the echo servers of ``examples/`` (standalone, wsgiref,
gevent, CherryPy, asyncio: the code users copy, each flavour's one run), on the CLI's threaded
poller and over ``wss://``, the 301 cases outside groups 12 and 13 plus 12.1.* and 13.7.* (337
cases). ``WSLOOP_AUTOBAHN_WHOLE=1`` runs all 517 on every one of them (about 50 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import pytest

from tests.support.autobahn import WHOLE, assert_all_passed, run_suite
from tests.support.examples import ECHO_SERVERS, RepoExample
from tests.support.serverproc import ServerProcess
from tests.support.tlsrelay import TLSRelay

#: Those, plus a sample of the compression groups: 12.1 (JSON, default offer) and 13.7 (three
#: offers with different parameters, the server picking one); the whole of groups 12 and 13
#: takes about 6 minutes and runs on the standalone server, whose protocol core every flavour
#: shares.
WITH_COMPRESSION_SAMPLE = tuple(
    arg
    for group in ("1", "2", "3", "4", "5", "6", "7", "9", "10", "12.1", "13.7")
    for arg in ("-i", f"{group}.*")
)
SAMPLE_CASES = 301 + 18 + 18
#: What the targets other than the CLI's standalone server run, and how many cases that is.
SELECTION, EXPECTED = ((), 517) if WHOLE else (WITH_COMPRESSION_SAMPLE, SAMPLE_CASES)


@pytest.mark.timeout(1200)
def test_autobahn_whole_suite_standalone(tmp_path: Path) -> None:
    """The whole suite, permessage-deflate (groups 12 and 13) included."""
    server = ServerProcess()
    try:
        cases = run_suite(server.url, tmp_path)
    finally:
        code = server.stop()
    assert_all_passed(cases, expected=517)
    assert not [c for c, r in cases.items() if r["behavior"] == "UNIMPLEMENTED"]
    assert code == 0, server.output
    keep_reports(tmp_path, "standalone-whole")


@pytest.mark.timeout(1800 if WHOLE else 900)
def test_autobahn_cases_pass_threaded_poller(tmp_path: Path) -> None:
    """The CLI's ``--poller threaded`` (a thread per connection; no example uses it)."""
    server = ServerProcess("--poller", "threaded")
    try:
        cases = run_suite(server.url, tmp_path, *SELECTION)
    finally:
        code = server.stop()
    assert_all_passed(cases, expected=EXPECTED)
    assert code == 0, server.output
    keep_reports(tmp_path, "threaded")


@pytest.mark.timeout(1800 if WHOLE else 900)
@pytest.mark.parametrize(
    "name", ECHO_SERVERS, ids=lambda name: name.removeprefix("echo_").removesuffix(".py")
)
def test_autobahn_cases_pass_on_the_examples(name: str, tmp_path: Path) -> None:
    """Each flavour's echo server of ``examples/``, run as a user runs it (``python
    examples/echo_<flavour>.py --port 0``); ``SIGTERM`` then stops it with exit status 0."""
    server = RepoExample(name)
    try:
        cases = run_suite(server.url, tmp_path, *SELECTION)
    finally:
        code = server.stop()
    assert_all_passed(cases, expected=EXPECTED)
    assert code == 0, server.output
    keep_reports(tmp_path, f"example-{name[:-3]}")


@pytest.mark.timeout(1800 if WHOLE else 900)
def test_autobahn_cases_pass_over_wss(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    """The standalone server's ``wss://``: kosoku speaks no TLS, so a relay (tests/support/tlsrelay.py)
    adds it; the server does real TLS on every case. The same selection as the other flavours
    (the whole suite over wss:// takes ~6 minutes, most of it in groups 12.2-12.5 and 13, whose
    compression runs in the protocol core that plain ws:// covers in full above)."""
    cert, key = tls_files
    server = ServerProcess("--certfile", str(cert), "--keyfile", str(key))
    relay = TLSRelay(("127.0.0.1", server.port), ssl.create_default_context(cafile=str(cert)))
    try:
        assert server.url.startswith("wss://")
        cases = run_suite(f"ws://127.0.0.1:{relay.port}/", tmp_path, *SELECTION)
    finally:
        relay.close()
        code = server.stop()
    assert_all_passed(cases, expected=EXPECTED)
    assert code == 0, server.output
    keep_reports(tmp_path, "standalone-wss")


@pytest.mark.timeout(900)
def test_autobahn_without_compression(tmp_path: Path) -> None:
    """--no-compression: the compression cases are then UNIMPLEMENTED, as they must be."""
    server = ServerProcess("--no-compression")
    try:
        cases = run_suite(server.url, tmp_path, "-i", "12.1.1", "-i", "13.1.1", "-i", "1.1.1", check=False)
    finally:
        server.stop()
    assert cases["1.1.1"]["behavior"] == "OK"
    assert cases["12.1.1"]["behavior"] == cases["13.1.1"]["behavior"] == "UNIMPLEMENTED"


def keep_reports(folder: Path, name: str) -> None:
    if os.environ.get("WSLOOP_KEEP_REPORTS"):
        shutil.copytree(folder, Path(os.environ["WSLOOP_KEEP_REPORTS"]) / name, dirs_exist_ok=True)
