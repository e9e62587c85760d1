"""Every example of the repository's ``examples/``, run from there as a user runs it (a child
process, ``--port 0``), bounded in time:

- the echo servers (standalone, wsgiref, gevent, asyncio, CherryPy plugin+tool) pass the
  Autobahn cases CI runs on the framework flavours (kosoku), and stop with exit status 0 on
  SIGTERM;
- the clients (threaded, gevent, tornado) talk to the standalone echo example and print every
  echo;
- the chat room is used by two real Chromium pages: the room's messages reach both, a channel's
  only its subscribers;
- the CherryPy application serves its pages to real HTTP requests and its websockets to real
  clients, the form's posts reaching the live feed.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.autobahn import WHOLE, assert_all_passed, run_suite
from tests.support.components import require_module
from tests.support.examples import REPO_EXAMPLES, RepoExample, chromium_pages, run_example
from tests.support.wsclient import Client

#: The selection tests/test_autobahn.py runs on the framework flavours: every group outside
#: permessage-deflate's 12 and 13, plus 12.1 and 13.7 (the whole suite with WSLOOP_AUTOBAHN_WHOLE).
SELECTION = (
    ()
    if WHOLE
    else tuple(
        arg
        for group in ("1", "2", "3", "4", "5", "6", "7", "9", "10", "12.1", "13.7")
        for arg in ("-i", f"{group}.*")
    )
)
EXPECTED = 517 if WHOLE else 301 + 18 + 18

ECHO_SERVERS = ["echo_standalone.py", "echo_wsgiref.py", "echo_gevent.py", "echo_asyncio.py", "echo_cherrypy.py"]


def test_every_example_is_tested() -> None:
    """A new example without a test here fails this."""
    tested = {*ECHO_SERVERS, "client_threaded.py", "client_gevent.py", "client_tornado.py"}
    tested |= {"chat.py", "cherrypy_app.py"}
    assert {path.name for path in REPO_EXAMPLES.glob("*.py")} == tested


# ------------------------------------------------------------------------- the echo servers


@pytest.mark.timeout(1800 if WHOLE else 600)
@pytest.mark.parametrize("name", ECHO_SERVERS, ids=lambda name: name[5:-3])
def test_echo_server_passes_autobahn(name: str, tmp_path: Path) -> None:
    server = RepoExample(name)
    try:
        cases = run_suite(server.url, tmp_path, *SELECTION)
    finally:
        code = server.stop()
    assert_all_passed(cases, expected=EXPECTED)
    assert code == 0, server.output
    assert not server.killed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ECHO_SERVERS, ids=lambda name: name[5:-3])
def test_echo_server_closes_its_clients_on_sigterm(name: str) -> None:
    """SIGTERM: the open websockets get a close frame (1001) before the process exits 0."""
    server = RepoExample(name)
    try:
        path = urllib.parse.urlsplit(server.url).path
        with Client(server.port, path) as client:
            assert str(client.echo("héllo")) == "héllo"
            server.send_signal(signal.SIGTERM)
            assert client.recv_close(timeout=15).code == 1001
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.output
