"""Every example of the repository's ``examples/``, run from there as a user runs it (a child
process, ``--port 0``), bounded in time:

- the echo servers (standalone, wsgiref, gevent, asyncio, CherryPy plugin+tool): on SIGTERM
  they close their clients with 1001 and exit with status 0 (tests/test_autobahn.py runs the
  Autobahn cases on each of them);
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
from typing import Any

import pytest

from tests.support.components import require_module
from tests.support.examples import ECHO_SERVERS, REPO_EXAMPLES, RepoExample, chromium_pages, run_example
from tests.support.sockets import free_port
from tests.support.wsclient import Client


def test_every_example_is_tested() -> None:
    """A new example without a test fails this (the echo servers' Autobahn runs are in
    tests/test_autobahn.py)."""
    tested = {*ECHO_SERVERS, "client_threaded.py", "client_gevent.py", "client_tornado.py"}
    tested |= {"chat.py", "cherrypy_app.py"}
    assert {path.name for path in REPO_EXAMPLES.glob("*.py")} == tested


# ------------------------------------------------------------------------- the echo servers


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


# ------------------------------------------------------------------------------ the clients

#: What each client example prints, talking to an echo server with --count 3.
CLIENT_OUTPUT = [
    "text: message 0",
    "text: message 1",
    "text: message 2",
    "binary: 1024 bytes",
    "closed: 1000",
]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[RepoExample]:
    server = RepoExample("echo_standalone.py")
    yield server
    assert server.stop() == 0, server.output


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", ["client_threaded.py", "client_gevent.py", "client_tornado.py"])
def test_client_talks_to_the_echo_server(name: str, echo_server: RepoExample) -> None:
    if name == "client_tornado.py":
        require_module("tornado", "pip install -e '.[tornado]'")  # the optional extra, not wsloop's module
    done = run_example(name, "--url", echo_server.url, "--count", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == CLIENT_OUTPUT, done.stderr


@pytest.mark.timeout(90)
def test_asyncio_example_echoes_with_a_coroutine_callback() -> None:
    """``echo_asyncio.py --coroutines``: AsyncEcho's ``async def received_message`` awaits its
    sends; the threaded client example gets every echo, in order."""
    server = RepoExample("echo_asyncio.py", "--coroutines")
    try:
        done = run_example("client_threaded.py", "--url", server.url, "--count", "3")
    finally:
        code = server.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == CLIENT_OUTPUT, done.stderr
    assert code == 0, server.output


@pytest.mark.timeout(60)
def test_client_says_when_no_server_listens() -> None:
    done = run_example("client_threaded.py", "--url", f"ws://127.0.0.1:{free_port()}/")
    assert done.returncode == 2, done.stderr
    assert "cannot connect to ws://127.0.0.1:" in done.stderr
    assert "text:" not in done.stdout


# ------------------------------------------------------------------------------- the chat room


def lines_of(page: Any) -> list[str]:
    return page.evaluate("() => window.chat.lines")  # type: ignore[no-any-return]


def wait_for_line(page: Any, line: str) -> None:
    page.wait_for_function("(line) => window.chat.lines.includes(line)", arg=line)


@pytest.mark.timeout(120)
def test_chat_room_in_two_browser_pages(tmp_path: Path) -> None:
    server = RepoExample("chat.py")
    try:
        with chromium_pages(2) as (alice, bob):
            errors: list[str] = []
            for page in (alice, bob):
                page.on("pageerror", lambda exc: errors.append(str(exc)))
            # 1. the page, from the example itself; its websocket opens
            response = alice.goto(server.http("/?name=alice"))
            assert response is not None and response.status == 200
            assert alice.title() == "wsloop chat"
            alice.wait_for_function("() => window.chat.state === 'open'")
            bob.goto(server.http("/?name=bob"))
            bob.wait_for_function("() => window.chat.state === 'open'")
            wait_for_line(alice, "* bob joined")  # broadcast() from the server's opened()

            # 2. the room: what one says, both see (broadcast)
            alice.fill("#text", "hello bob")
            alice.click("#say")
            wait_for_line(bob, "alice: hello bob")
            wait_for_line(alice, "alice: hello bob")
            bob.fill("#text", "hi alice ✓")
            bob.press("#text", "Enter")
            wait_for_line(alice, "bob: hi alice ✓")

            # 3. a channel: only its subscribers get its posts
            alice.fill("#channel", "dev")
            alice.click("#join")
            wait_for_line(alice, "* subscribed to dev")
            alice.fill("#post-text", "secret plan")
            alice.click("#post")
            wait_for_line(alice, "[dev] alice: secret plan")
            # The server handles alice's messages in order and queues bob's output in order: once
            # bob has what alice said after the post, he would have had the post too.
            alice.fill("#text", "after the post")
            alice.click("#say")
            wait_for_line(bob, "alice: after the post")
            assert not [line for line in lines_of(bob) if line.startswith("[dev]")]

            # 4. bob subscribes: now both get the channel's posts; he leaves: only alice again
            bob.fill("#channel", "dev")
            bob.click("#join")
            wait_for_line(bob, "* subscribed to dev")
            alice.fill("#post-text", "now both")
            alice.click("#post")
            wait_for_line(bob, "[dev] alice: now both")
            wait_for_line(alice, "[dev] alice: now both")
            bob.click("#leave")
            wait_for_line(bob, "* unsubscribed from dev")
            alice.fill("#post-text", "only alice")
            alice.click("#post")
            alice.fill("#text", "the end")
            alice.click("#say")
            wait_for_line(bob, "alice: the end")
            wait_for_line(alice, "[dev] alice: only alice")
            assert "[dev] alice: only alice" not in lines_of(bob)

            alice.screenshot(path=str(tmp_path / "chat-alice.png"))
            # 5. bob closes his tab: the room is told
            bob.close()
            wait_for_line(alice, "* bob left")
            assert errors == []
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert "Traceback" not in server.output, server.output


# ------------------------------------------------------------- the CherryPy pages + websockets


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is raised as an HTTPError, to be looked at


def http(url: str, data: dict[str, str] | None = None, follow: bool = True) -> tuple[int, str, str]:
    """A real HTTP request: (status, Location header, body)."""
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(url, data=body, timeout=10) as response:
            return response.status, response.headers.get("Location", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", ""), error.read().decode()


@pytest.mark.timeout(120)
def test_cherrypy_app_mixes_pages_and_websockets(tmp_path: Path) -> None:
    websocket = require_module("websocket", "pip install websocket-client")  # a real third-party client
    server = RepoExample("cherrypy_app.py")
    try:
        # 1. the pages: the form, JSON, 404 elsewhere
        status, _, page = http(server.http("/"))
        assert status == 200
        assert '<form method="post" action="/notes">' in page
        assert http(server.http("/notes")) == (200, "", "[]")
        assert http(server.http("/nowhere"))[0] == 404

        # 2. the websockets, from a real client: a feed and an echo
        feed = websocket.create_connection(server.ws("/feed"), timeout=10)
        echo = websocket.create_connection(server.ws("/echo"), timeout=10)
        with chromium_pages(1) as (browser,):
            browser.goto(server.http("/"))
            browser.wait_for_function("() => window.board.state === 'live'")
            assert json.loads(http(server.http("/stats"))[2]) == {"notes": 0, "websockets": 3}

            # 3. a form post: 303 to the page; the feeds (the client's, the page's) get the note
            status, location, _ = http(server.http("/notes"), {"text": "hello <board>"}, follow=False)
            assert (status, location) == (303, server.http("/"))
            assert json.loads(feed.recv())["text"] == "hello <board>"
            browser.wait_for_function("() => window.board.received.includes('hello <board>')")
            assert browser.locator("#feed li").last.inner_text() == "hello <board>"

            # 4. /echo echoes, and got no note: the note went to the feed's channel only
            echo.send("ping")
            assert echo.recv() == "ping"

            # 5. the page handlers see the note; the page renders it, escaped
            status, _, page = http(server.http("/"))
            assert "<li>hello &lt;board&gt;</li>" in page
            notes = json.loads(http(server.http("/notes"))[2])
            assert [note["text"] for note in notes] == ["hello <board>"]
            assert http(server.http("/notes"), {"text": "  "})[0] == 400

            # 6. the form, submitted in the page as a person would: the 303 brings the page back
            # with the note rendered, and the feed client gets it live
            browser.fill("#text", "from the form")
            with browser.expect_navigation():
                browser.click("#post")
            assert browser.url == server.http("/")
            assert browser.locator("#feed li").all_inner_texts() == ["hello <board>", "from the form"]
            assert json.loads(feed.recv())["text"] == "from the form"
            browser.wait_for_function("() => window.board.state === 'live'")
            browser.screenshot(path=str(tmp_path / "board.png"))
        echo.close()
        feed.close()
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert "Traceback" not in server.output, server.output
