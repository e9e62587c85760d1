"""Fixtures shared by every test module: standalone servers on both pollers (in this process, or
CLI servers in child processes) and TLS files; and which tests pytest-xdist keeps on one worker."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broadcasting import Fan, reset_fan
from tests.support.serverproc import ServerProcess
from wsloop.servers.standalone import WebSocketServer

POLLERS = ["selectors", "threaded"]

#: Modules whose tests share an expensive module- or session-scoped fixture (a Sphinx build, npm
#: install of Node's ws, every ws4py program run at once, a server per flavour): under
#: ``pytest -n N --dist loadgroup`` each is one group, so one worker builds the fixture once. The
#: other modules' tests are spread one by one (their fixtures are cheap: a server start).
ONE_WORKER_MODULES = {
    "test_docs_site.py",
    "test_interop.py",
    "test_ws4py_parity.py",
    "test_flavours.py",
    "test_hooks.py",
    "test_large_messages2.py",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in ONE_WORKER_MODULES and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.fixture(params=POLLERS)
def poller(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_server(poller: str) -> Iterator[Callable[..., WebSocketServer]]:
    """Start a standalone server on a free loopback port; stopped after the test."""
    servers: list[WebSocketServer] = []

    def make(**options: Any) -> WebSocketServer:
        options.setdefault("poller", poller)
        server = WebSocketServer("127.0.0.1", 0, **options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(timeout=2)


@pytest.fixture
def server(make_server: Callable[..., WebSocketServer]) -> WebSocketServer:
    return make_server()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key): a self-signed certificate for localhost and 127.0.0.1, made here."""
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="session")
def tls_contexts(tls_files: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for :func:`tls_files`' certificate."""
    cert, key = tls_files
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    """A ``python -m wsloop serve`` echo server in a child process, for one test module."""
    server = ServerProcess()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def closer_url() -> Iterator[str]:
    """A server whose handler closes each connection (``flavour_handlers.Closer``)."""
    server = ServerProcess("--handler", "tests.support.flavour_handlers:Closer")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def tls_url(tls_files: tuple[Path, Path]) -> Iterator[str]:
    """A wss:// echo server with :func:`tls_files`' certificate."""
    cert, key = tls_files
    server = ServerProcess("--certfile", str(cert), "--keyfile", str(key))
    assert server.url.startswith("wss://")
    yield server.url
    server.stop()


@pytest.fixture
def fan() -> Iterator[type[Fan]]:
    """The broadcasting handler of tests/support/broadcasting.py, its records cleared."""
    reset_fan()
    yield Fan
    Fan.sndbuf = 0
