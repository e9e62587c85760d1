"""Run ws4py's documented examples (``../shared/examples``, imports changed to wsloop) unmodified,
and the repository's own ``examples/`` as a user would (a child process each, on port 0), with a
headless Chromium for the ones that serve a page."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .components import missing, require, require_module
from .serverproc import REPO, ServerProcess
from .sockets import port_is_free

ROOT = REPO
EXAMPLES = Path(os.environ.get("WSLOOP_EXAMPLES", ROOT.parent / "shared" / "examples"))


def example_path(name: str) -> Path:
    path = EXAMPLES / name
    if not path.exists():
        missing(f"{path} is not here (the examples live in the shared folder beside the repo)")
    return path


class ExampleProcess(ServerProcess):
    """An example script running as it is, with wsloop importable; ready once ``port`` accepts."""

    def __init__(self, name: str, port: int, timeout: float = 20.0) -> None:
        path = example_path(name)
        if not port_is_free(port):
            pytest.skip(f"port {port}, which the example {name} uses, is busy")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, str(path)]
        super().__init__(argv=argv, ready=None, port=port, timeout=timeout, env=env, cwd=ROOT)


# ---------------------------------------------------------------- the repository's examples/

#: The repository's own examples, written for wsloop (tests/test_examples.py runs each one).
REPO_EXAMPLES = ROOT / "examples"
#: The echo server of each flavour (tests/test_autobahn.py runs the Autobahn cases on each).
ECHO_SERVERS = [
    "echo_standalone.py",
    "echo_wsgiref.py",
    "echo_gevent.py",
    "echo_asyncio.py",
    "echo_cherrypy.py",
]
#: What every server example of examples/ logs once it listens: its URL, with the port it picked.
SERVING = r"serving on (?P<scheme>https?|wss?)://127\.0\.0\.1:(?P<port>\d+)(?P<path>/\S*)"


class RepoExample(ServerProcess):
    """``python examples/NAME --port 0 ARGS`` from the repository, as a user runs it; ready once
    it logs ``serving on URL``. :attr:`url` is that URL (path included)."""

    def __init__(self, name: str, *args: str, timeout: float = 30.0) -> None:
        path = REPO_EXAMPLES / name
        assert path.exists(), f"{path} is missing"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, str(path), "--port", "0", *args]
        super().__init__(argv=argv, ready=SERVING, timeout=timeout, env=env, cwd=ROOT, stop_timeout=20.0)
        found = re.search(SERVING, self.output)
        assert found is not None
        self.url = f"{found['scheme']}://127.0.0.1:{self.port}{found['path']}"

    def http(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def run_example(name: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/NAME ARGS`` to its end (at most ``timeout`` seconds); its output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(REPO_EXAMPLES / name), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


#: Debian's Chromium, never a browser Playwright downloads (tests/test_browser.py uses the same).
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


@contextlib.contextmanager
def chromium_pages(count: int, timeout_ms: int = 20_000) -> Iterator[list[Any]]:
    """``count`` pages of a headless Chromium, each in a context of its own (no shared cookies
    or storage: separate users); skips (fails in CI) without Chromium or Playwright."""
    require(CHROMIUM, "Debian's chromium package: apt-get install chromium")
    sync_api = require_module("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(count):
                page = browser.new_context(viewport={"width": 900, "height": 700}).new_page()
                page.set_default_timeout(timeout_ms)
                pages.append(page)
            yield pages
        finally:
            browser.close()
