"""The demo page in a real browser: Debian's headless Chromium, driven by Playwright.

Chromium loads the page the standalone server serves at ``GET /``, opens its WebSocket (which must
negotiate permessage-deflate), echoes a non-ASCII text message and a 1 MiB binary message, and
the page is saved as a screenshot. Only the system's ``/usr/bin/chromium`` is used, never a
browser downloaded by Playwright; without it the test skips (fails in CI).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import require, require_module
from wsloop.messaging import Message
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEXT = "héllo wörld ✓"
MIB = 1048576
TIMEOUT_MS = 20_000

require(CHROMIUM, "Debian's chromium package: apt-get install chromium")
sync_api = require_module("playwright.sync_api")


class Recorder:
    """What the server saw, written on the server's thread and read by the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened = threading.Event()
        self.deflate: list[bool] = []
        self.received: list[tuple[str, int]] = []

    def received_sizes(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.received)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def demo_server(recorder: Recorder, poller: str) -> Iterator[WebSocketServer]:
    class RecordingEcho(EchoWebSocket):
        def opened(self) -> None:
            with recorder.lock:
                recorder.deflate.append(self.stream.deflate is not None)
            recorder.opened.set()

        def received_message(self, message: Message) -> None:
            with recorder.lock:
                recorder.received.append(("binary" if message.is_binary else "text", len(message.data)))
            super().received_message(message)

    server = WebSocketServer("127.0.0.1", 0, RecordingEcho, poller=poller)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=2)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": 640},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def test_demo_page_in_chromium(
    demo_server: WebSocketServer, recorder: Recorder, page: Any, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    port = demo_server.port

    # 1. the page loads and its WebSocket opens
    response = page.goto(f"http://127.0.0.1:{port}/")
    assert response is not None and response.status == 200
    assert page.title() == "wsloop echo"
    page.wait_for_function("() => window.wsloopDemo && window.wsloopDemo.state === 'open'")

    # 2. the browser's connection negotiated permessage-deflate, on both ends
    assert recorder.opened.wait(5), "the server never saw the browser's connection open"
    with recorder.lock:
        assert recorder.deflate == [True]
    assert "permessage-deflate" in page.evaluate("() => window.wsloopDemo.extensions")
    assert "permessage-deflate" in page.locator("#ext").inner_text()

    # 3. a non-ASCII text message is typed, sent and echoed
    page.locator("#text").press_sequentially(TEXT)
    page.locator("#text").press("Enter")
    page.wait_for_function("() => window.wsloopDemo.received.length >= 1")
    first = page.evaluate("() => window.wsloopDemo.received[0]")
    assert first["type"] == "text"
    assert first["data"] == TEXT
    assert first["size"] == len(TEXT.encode()) == 17
    echoed = page.locator("#log li.in").first
    assert echoed.locator(".text").inner_text() == TEXT
    assert "17 B" in echoed.locator(".meta").inner_text()
    assert " ms" in echoed.locator(".meta").inner_text()  # the round-trip time
    assert page.locator("#text").input_value() == ""
    assert recorder.received_sizes() == [("text", 17)]

    # 4. 1 MiB of random bytes goes out and comes back unchanged
    page.get_by_role("button", name="Send 1 MiB binary").click()
    page.wait_for_function("() => window.wsloopDemo.received.length >= 2")
    second = page.evaluate("() => window.wsloopDemo.received[1]")
    assert second["type"] == "binary"
    assert second["size"] == MIB
    assert second["same"] is True, "the echoed 1 MiB differs from what the page sent"
    big = page.locator("#log li.in").nth(1)
    assert "1.00 MiB" in big.locator(".meta").inner_text()
    assert recorder.received_sizes() == [("text", 17), ("binary", MIB)]

    # 5. a screenshot of the page
    page.locator("#text").fill("")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")

    assert not errors, errors
    # the connection is still open and healthy after all that
    assert page.evaluate("() => window.wsloopDemo.state") == "open"
