"""ws4py 0.6.0's server-side names and signatures (``ws4py.server.*`` -> ``wsloop.servers.*``):
ws4py's calls work unchanged, and a subclass overriding one of ws4py's hooks is honoured where
ws4py calls it. On real sockets with the real frameworks (CherryPy and gevent in child
processes, wsgiref and asyncio in threads)."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect as websockets_connect

from tests.support.serverproc import REPO
from tests.support.wsclient import Client, raw_request, upgrade
from wsloop import WS_VERSION
from wsloop.async_websocket import EchoWebSocket as AsyncEchoWebSocket
from wsloop.messaging import CloseControlMessage, Message
from wsloop.servers import tulipserver, wsgirefserver, wsgiutils
from wsloop.servers.cherrypyserver import WebSocketTool
from wsloop.servers.wsgiutils import WebSocketWSGIApplication
from wsloop.websocket import EchoWebSocket, WebSocket

ws4py = pytest.importorskip("ws4py")
ws4py_cherrypy = pytest.importorskip("ws4py.server.cherrypyserver")
ws4py_gevent = pytest.importorskip("ws4py.server.geventserver")
ws4py_wsgiref = pytest.importorskip("ws4py.server.wsgirefserver")
ws4py_wsgiutils = pytest.importorskip("ws4py.server.wsgiutils")


# ---------------------------------------------------------------------- signatures


def positional(fn: Any) -> list[tuple[str, Any]]:
    """The parameters a positional call can fill, with their defaults, in order."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def takes_varargs(fn: Any) -> bool:
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
    return inspect.Parameter.VAR_POSITIONAL in kinds and inspect.Parameter.VAR_KEYWORD in kinds


def assert_compatible(ours: Any, theirs: Any) -> None:
    """A call written for ws4py's ``theirs`` binds the same way to ``ours``: ws4py's positional
    parameters come first, in order, with equal defaults (extra ones of ours follow)."""
    if takes_varargs(theirs):
        assert takes_varargs(ours), ours
        return
    expected = positional(theirs)
    got = positional(ours)[: len(expected)]
    assert [name for name, _ in got] == [name for name, _ in expected], ours
    for (name, default), (_, their_default) in zip(got, expected, strict=True):
        if their_default is not inspect.Parameter.empty:  # else ours may have a default or not
            assert default == counterpart(their_default), (ours, name)


def counterpart(value: Any) -> Any:
    """wsloop's value for a default of ws4py's: its class of the same name, its WS_VERSION
    (ws4py's is (8, 13); wsloop speaks version 13 only, its WS_VERSION is (13,))."""
    if value == ws4py.WS_VERSION:
        return WS_VERSION
    if isinstance(value, type) and value.__module__.startswith("ws4py."):
        module = value.__module__.replace("ws4py.server.", "wsloop.servers.").replace("ws4py.", "wsloop.")
        return getattr(sys.modules[module], value.__name__)
    return value


def compatible_pairs() -> list[tuple[Any, Any]]:
    from wsloop.servers import geventserver

    pairs: list[tuple[Any, Any]] = []
    modules = [
        (ws4py_cherrypy, sys.modules["wsloop.servers.cherrypyserver"]),
        (ws4py_gevent, geventserver),
        (ws4py_wsgiref, wsgirefserver),
        (ws4py_wsgiutils, wsgiutils),
    ]
    for theirs_module, ours_module in modules:
        for name in theirs_module.__all__:
            theirs, ours = getattr(theirs_module, name), getattr(ours_module, name, None)
            for attr, member in vars(theirs).items():
                if inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__"):
                    pairs.append((getattr(ours, attr, None), member))
    return pairs


@pytest.mark.parametrize(
    "ours, theirs", compatible_pairs(), ids=[theirs.__qualname__ for _, theirs in compatible_pairs()]
)
def test_every_ws4py_server_method_exists_with_a_compatible_signature(ours: Any, theirs: Any) -> None:
    assert ours is not None, f"no {theirs.__qualname__}"
    assert_compatible(ours, theirs)


def test_tool_upgrade_takes_ws4pys_arguments_in_ws4pys_order() -> None:
    names = [name for name, _ in positional(WebSocketTool.upgrade)]
    assert names == ["self", "protocols", "extensions", "version", "handler_cls", "heartbeat_freq"]
    assert_compatible(WebSocketTool.upgrade, ws4py_cherrypy.WebSocketTool.upgrade)


def test_tulipserver_has_ws4pys_public_names() -> None:
    assert tulipserver.__all__ == ["WebSocketProtocol"]  # ws4py's __all__ (its module fails on 3.11)
    protocol = tulipserver.WebSocketProtocol(AsyncEchoWebSocket)  # ws4py's WebSocketProtocol(handler_cls)
    assert isinstance(protocol, asyncio.BaseProtocol)
    assert callable(protocol.close) and callable(protocol.timeout)


# ---------------------------------------------------------------------- CherryPy

CHERRYPY_APP = """
import sys
import cherrypy
from wsloop import WS_VERSION
from wsloop.servers.cherrypyserver import WebSocketPlugin, WebSocketTool
from wsloop.upgrade import ServeOptions
from wsloop.websocket import EchoWebSocket, WebSocket


def record(call):
    calls = getattr(getattr(cherrypy.serving.request, "ws_handler", None), "calls", None)
    if calls is not None:
        calls.append(call)


class Recorder(EchoWebSocket):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def opened(self):
        self.send(" ".join(self.calls))


class Settings(WebSocket):
    def opened(self):
        self.send(repr((self.protocols, self.heartbeat_freq, self.max_message_size, self.idle_timeout,
                        self.close_timeout, self.stream.deflate is None)))


class Types(WebSocket):
    def opened(self):
        self.send(repr((self.protocols, self.extensions)))


class Tool(WebSocketTool):
    # ws4py's signature (and wsloop's options), calling ours positionally, in ws4py's order
    def upgrade(self, protocols=None, extensions=None, version=WS_VERSION, handler_cls=WebSocket,
                heartbeat_freq=None, **options):
        super().upgrade(protocols, extensions, version, handler_cls, heartbeat_freq, **options)
        record("upgrade:%s:%s" % (",".join(protocols or []), heartbeat_freq))

    def complete(self):
        record("complete")
        super().complete()

    def cleanup_headers(self):
        record("cleanup_headers")
        super().cleanup_headers()

    def start_handler(self):
        record("start_handler")
        super().start_handler()


class Plugin(WebSocketPlugin):
    def handle(self, ws_handler, peer_addr):  # ws4py's signature
        if isinstance(ws_handler, Recorder):
            ws_handler.calls.append("handle:%s" % peer_addr[0])
        super().handle(ws_handler, peer_addr)

    def cleanup(self):
        print("CLEANUP", len(self.manager), flush=True)
        super().cleanup()


class Root:
    @cherrypy.expose
    def hooks(self):
        pass

    @cherrypy.expose
    def v12(self):
        pass

    @cherrypy.expose
    def types(self):
        pass

    @cherrypy.expose
    def keys(self):
        return "plain page" if cherrypy.request.ws_handler is None else None

    @cherrypy.expose
    def stop(self):
        import threading
        threading.Timer(0.2, cherrypy.engine.stop).start()
        return "stopping"


cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": 0,
                        "engine.autoreload.on": False, "log.screen": False, "checker.on": False})
Plugin(cherrypy.engine).subscribe()
cherrypy.tools.websocket = Tool()
ws = "tools.websocket."
cherrypy.tree.mount(Root(), "/", config={
    "/hooks": {ws + "on": True, ws + "handler_cls": Recorder, ws + "protocols": ["chat"],
               ws + "heartbeat_freq": 30.0},
    "/v12": {ws + "on": True, ws + "handler_cls": Recorder, ws + "version": (12,)},
    "/types": {ws + "on": True, ws + "handler_cls": Types, ws + "protocols": ["chat"],
               ws + "compression": False},
    # every key the tool takes: ws4py's, then wsloop's options
    "/keys": {ws + "on": True, ws + "protocols": ["a", "b"], ws + "extensions": ["x-ignored"],
              ws + "version": (8, 13), ws + "handler_cls": Settings, ws + "heartbeat_freq": 40.0,
              ws + "passthrough": True, ws + "options": ServeOptions(idle_timeout=50.0),
              ws + "max_message_size": 1000, ws + "close_timeout": 3.0, ws + "compression": False,
              ws + "serve_page": False, ws + "priority": 60},
})
cherrypy.engine.signals.subscribe()
cherrypy.engine.start()
print("PORT", cherrypy.server.bound_addr[1], flush=True)
cherrypy.engine.block()
print("EXITED", flush=True)
"""


class Child:
    """A Python script in a child process; reads its stdout line by line."""

    def __init__(self, path: Path, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(path), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.startswith(prefix):
                    result.append(line.strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        assert result, f"no {prefix!r} line; output:\n{''.join(self.lines)}"
        return result[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def cherrypy_app(tmp_path: Path) -> Iterator[tuple[Child, int]]:
    pytest.importorskip("cherrypy")
    script = tmp_path / "cherrypy_app.py"
    script.write_text(CHERRYPY_APP)
    child = Child(script)
    try:
        port = int(child.wait_for("PORT").split()[1])
        yield child, port
    finally:
        child.stop()


def test_cherrypy_hooks_overridden_with_ws4pys_signatures_are_called_where_ws4py_calls_them(
    cherrypy_app: tuple[Child, int],
) -> None:
    _, port = cherrypy_app
    with Client(port, "/hooks", protocols=["chat"]) as client:
        assert client.subprotocol == "chat"
        calls = str(client.recv())
        assert calls == "upgrade:chat:30.0 complete cleanup_headers start_handler handle:127.0.0.1"
        assert str(client.echo("still served by the plugin")) == "still served by the plugin"


def test_cherrypy_every_tools_websocket_config_key_still_works(cherrypy_app: tuple[Child, int]) -> None:
    _, port = cherrypy_app
    assert raw_request(port, b"GET /keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(
        b"plain page"
    )  # passthrough
    offer = ["permessage-deflate"]
    with Client(port, "/keys", protocols=["b"], extensions=offer) as client:
        assert (client.subprotocol, client.extensions) == ("b", [])  # compression False
        assert str(client.recv()) == repr((["b"], 40.0, 1000, 50.0, 3.0, True))
        client.send("x" * 1001)
        assert client.recv_close().code == 1009


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(None, (None, [])), (["other"], ([], [])), (["chat"], (["chat"], []))],
)
def test_cherrypy_handler_gets_ws4pys_types(
    cherrypy_app: tuple[Child, int], offered: list[str] | None, expected: tuple[Any, Any]
) -> None:
    """ws4py's CherryPy handlers get ``extensions`` as a list, ``protocols`` None unless the
    client offered some."""
    _, port = cherrypy_app
    with Client(port, "/types", protocols=offered) as client:
        assert str(client.recv()) == repr(expected)


def test_cherrypy_tool_version_outside_13_refuses_the_upgrade(cherrypy_app: tuple[Child, int]) -> None:
    _, port = cherrypy_app
    answer = raw_request(port, upgrade().replace(b"GET / ", b"GET /v12 "))
    assert answer.startswith(b"HTTP/1.1 426 "), answer[:200]
    assert b"Sec-WebSocket-Version: 12\r\n" in answer


def test_cherrypy_plugin_cleanup_runs_at_engine_stop_and_closes_with_1001(
    cherrypy_app: tuple[Child, int],
) -> None:
    child, port = cherrypy_app
    with Client(port, "/hooks", protocols=["chat"]) as client:
        client.recv()
        raw_request(port, b"GET /stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert child.wait_for("CLEANUP") == "CLEANUP 1"
        close = client.recv_close()
        assert close.code == 1001


# ---------------------------------------------------------------------- gevent

GEVENT_APP = """
from gevent import monkey; monkey.patch_all()
import signal, socket
import gevent
from wsloop.handshake import accept_value, parse_request
from wsloop.servers.geventserver import GEventWebSocketPool, WSGIServer
from wsloop.servers.wsgiutils import WebSocketWSGIApplication
from wsloop.websocket import EchoWebSocket


class Reporter(EchoWebSocket):
    def closed(self, code, reason=None):
        print("CLOSED", type(self).__name__, code, flush=True)


class Pooled(Reporter):
    pass


# gevent's own keyword arguments pass through ws4py's WSGIServer(*args, **kwargs)
server = WSGIServer(("127.0.0.1", 0), WebSocketWSGIApplication(handler_cls=Reporter), log=None,
                    spawn=100)
assert isinstance(server.pool, GEventWebSocketPool)
server.start()

# A websocket the application runs itself in the server's pool, as ws4py's server does.
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()


def accept_one():
    conn, _ = listener.accept()
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        data += conn.recv(4096)
    request, _ = parse_request(data)
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                 b"Sec-WebSocket-Accept: " + accept_value(request.headers["sec-websocket-key"]).encode()
                 + b"\\r\\n\\r\\n")
    greenlet = server.pool.track(Pooled(conn))
    print("TRACKED", greenlet in server.pool, flush=True)


gevent.spawn(accept_one)
print("PORTS", server.server_port, listener.getsockname()[1], flush=True)
gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop, 5))  # ws4py's stop(*args)
server.serve_forever()
print("STOPPED pool=%d" % len(server.pool), flush=True)
"""


def test_gevent_pool_tracks_websockets_and_server_stop_clears_it(tmp_path: Path) -> None:
    pytest.importorskip("gevent")
    script = tmp_path / "gevent_app.py"
    script.write_text(GEVENT_APP)
    child = Child(script)
    try:
        _, wsgi_port, pool_port = child.wait_for("PORTS").split()
        with Client(int(wsgi_port)) as served, Client(int(pool_port)) as pooled:
            assert child.wait_for("TRACKED") == "TRACKED True"
            assert str(pooled.echo("run by a pool greenlet")) == "run by a pool greenlet"
            assert str(served.echo("run by the reactor")) == "run by the reactor"
            child.proc.send_signal(signal.SIGTERM)
            assert pooled.recv_close().code == 1001  # GEventWebSocketPool.clear()
            assert served.recv_close().code == 1001
            assert child.wait_for("STOPPED") == "STOPPED pool=0"
        closed = [line.split()[1:] for line in child.lines if line.startswith("CLOSED")]
        assert sorted(closed) == [["Pooled", "1001"], ["Reporter", "1001"]]
    finally:
        child.stop()


GEVENT_SPAWN_APP = """
from gevent import monkey; monkey.patch_all()
import signal
import gevent
from wsloop.servers.geventserver import GEventWebSocketPool, WSGIServer
from wsloop.servers.wsgiutils import WebSocketWSGIApplication
from wsloop.websocket import EchoWebSocket

# gevent's spawn=2, positionally (listener, application, backlog, spawn): at most 2 handlers
server = WSGIServer(("127.0.0.1", 0), WebSocketWSGIApplication(handler_cls=EchoWebSocket), None, 2, None)
assert isinstance(server.pool, GEventWebSocketPool) and server.pool.size == 2
server.start()
print("PORT", server.server_port, flush=True)
gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop, timeout=5))
server.serve_forever()
print("STOPPED", flush=True)
"""


def test_gevent_spawn_limit_pool_is_the_websocket_pool_and_accepting_resumes(tmp_path: Path) -> None:
    """With ``spawn=N`` the server's pool is gevent's pool of handlers too: when it is full,
    accepting pauses, and resumes once a handler ends (ws4py replaced gevent's pool, so the
    resumption listened to the wrong pool)."""
    pytest.importorskip("gevent")
    script = tmp_path / "gevent_spawn.py"
    script.write_text(GEVENT_SPAWN_APP)
    child = Child(script)
    try:
        port = int(child.wait_for("PORT").split()[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # both handlers wait
        try:
            time.sleep(0.3)  # let the server accept both and pause accepting
            waiting: list[str] = []

            def third() -> None:
                with Client(port, timeout=20) as client:
                    waiting.append(str(client.echo("third")))

            thread = threading.Thread(target=third)
            thread.start()
            thread.join(1.0)
            assert not waiting, "the pool of 2 should be full"
            idle[0].close()  # its handler ends: a slot frees, accepting resumes
            thread.join(20)
            assert waiting == ["third"]
        finally:
            for sock in idle:
                sock.close()
        child.proc.send_signal(signal.SIGTERM)
        child.wait_for("STOPPED")
    finally:
        child.stop()


# ---------------------------------------------------------------------- wsgiref


class Running:
    """A wsgiref server built as ws4py's docs show, serving in a thread."""

    def __init__(
        self,
        app: WebSocketWSGIApplication,
        server_class: type[wsgirefserver.WSGIServer] = wsgirefserver.WSGIServer,
    ) -> None:
        from wsgiref.simple_server import make_server

        self.server = make_server(
            "127.0.0.1",
            0,
            server_class=server_class,
            handler_class=wsgirefserver.WebSocketWSGIRequestHandler,
            app=app,
        )
        self.server.initialize_websockets_manager()
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    servers: list[Running] = []
    yield servers
    for server in servers:
        server.close()


def test_wsgiref_ws4pys_documented_usage_echoes_and_closes_with_1001(running: list[Running]) -> None:
    server = Running(WebSocketWSGIApplication(handler_cls=EchoWebSocket))
    running.append(server)
    with Client(server.port) as client:
        assert str(client.echo("hello")) == "hello"
        running.remove(server)
        closer = threading.Thread(target=server.close)
        closer.start()
        assert client.recv_close().code == 1001
        client.close()
        closer.join(10)


def test_wsgiref_link_websocket_to_server_override_with_ws4pys_signature_is_honoured(
    running: list[Running],
) -> None:
    linked: list[WebSocket] = []

    class Server(wsgirefserver.WSGIServer):
        def link_websocket_to_server(self, ws: WebSocket) -> None:  # ws4py's signature
            linked.append(ws)
            super().link_websocket_to_server(ws)

    server = Running(WebSocketWSGIApplication(handler_cls=EchoWebSocket), Server)
    running.append(server)
    with Client(server.port) as client:
        assert str(client.echo("linked")) == "linked"
        assert len(linked) == 1 and isinstance(linked[0], EchoWebSocket)


class Upper(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(str(message).upper())


class Greeter(EchoWebSocket):
    def opened(self) -> None:
        deflate = "deflate" if self.stream.deflate is not None else "plain"
        self.send(f"{self.environ['greeting']} {deflate} {self.heartbeat_freq} {self.protocols}")


def test_wsgi_make_websocket_override_builds_the_handler(running: list[Running]) -> None:
    """ws4py's override, building another class itself: it serves, and the permessage-deflate
    the 101 agreed to (the websockets client offers it, then compresses) still works."""
    made: list[tuple[list[str], list[str]]] = []

    class App(WebSocketWSGIApplication):
        def make_websocket(
            self, sock: socket.socket, protocols: list[str], extensions: list[str], environ: dict[str, Any]
        ) -> WebSocket:
            made.append((protocols, extensions))
            websocket = Upper(sock, protocols, extensions, environ.copy())
            environ["ws4py.websocket"] = websocket
            return websocket

    server = Running(App(handler_cls=EchoWebSocket))
    running.append(server)
    with websockets_connect(f"ws://127.0.0.1:{server.port}/") as client:
        assert client.protocol.extensions, "the client should have agreed to permessage-deflate"
        client.send("compressed " * 100)
        assert client.recv(timeout=10) == "COMPRESSED " * 100
    assert len(made) == 1 and made[0][0] == []
    assert [extension.split(";")[0] for extension in made[0][1]] == ["permessage-deflate"]


def test_wsgi_make_websocket_override_calling_super_keeps_the_options(running: list[Running]) -> None:
    class App(WebSocketWSGIApplication):
        def make_websocket(
            self, sock: socket.socket, protocols: list[str], extensions: list[str], environ: dict[str, Any]
        ) -> WebSocket:
            environ["greeting"] = "hello"
            return super().make_websocket(sock, protocols, extensions, environ)

    # ws4py's positional arguments (protocols, extensions, handler_cls), then our options
    server = Running(App(["chat"], None, Greeter, heartbeat_freq=30.0))
    running.append(server)
    with websockets_connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["chat"]) as client:
        assert client.subprotocol == "chat"
        assert client.recv(timeout=10) == "hello deflate 30.0 ['chat']"


class Types(WebSocket):
    def opened(self) -> None:
        self.send(repr((self.protocols, self.extensions)))


@pytest.mark.parametrize(("offered", "expected"), [(None, ([], [])), (["chat"], (["chat"], []))])
def test_wsgi_handler_gets_ws4pys_types(
    running: list[Running], offered: list[str] | None, expected: tuple[Any, Any]
) -> None:
    """ws4py's WSGI handlers get ``protocols`` and ``extensions`` as lists, empty when none."""
    server = Running(WebSocketWSGIApplication(["chat"], None, Types, compression=False))
    running.append(server)
    with Client(server.port, protocols=offered) as client:
        assert str(client.recv()) == repr(expected)


def test_wsgi_application_keeps_ws4pys_attributes() -> None:
    app = WebSocketWSGIApplication(["chat"], ["x-ext"], EchoWebSocket)
    assert (app.protocols, app.extensions, app.handler_cls) == (["chat"], ["x-ext"], EchoWebSocket)


# ---------------------------------------------------------------------- asyncio (tulipserver)


@pytest.fixture
def tulip() -> Iterator[tuple[asyncio.AbstractEventLoop, int, list[tulipserver.WebSocketProtocol]]]:
    loop = asyncio.new_event_loop()
    protocols: list[tulipserver.WebSocketProtocol] = []

    def factory() -> tulipserver.WebSocketProtocol:  # ws4py's lambda: WebSocketProtocol(EchoWebSocket)
        protocol = tulipserver.WebSocketProtocol(AsyncEchoWebSocket)
        protocols.append(protocol)
        return protocol

    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop, port, protocols
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        for protocol in protocols:
            protocol.abort()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_tulipserver_ws4pys_docstring_usage_echoes_and_close_starts_the_closing_handshake(
    tulip: tuple[asyncio.AbstractEventLoop, int, list[tulipserver.WebSocketProtocol]],
) -> None:
    loop, port, protocols = tulip
    with Client(port) as client:
        assert str(client.echo("tulip")) == "tulip"
        loop.call_soon_threadsafe(protocols[0].close)
        close = client.recv_close()
        assert isinstance(close, CloseControlMessage) and close.code == 1000


def test_tulipserver_timeout_drops_the_connection(
    tulip: tuple[asyncio.AbstractEventLoop, int, list[tulipserver.WebSocketProtocol]],
) -> None:
    loop, port, protocols = tulip
    with Client(port) as client:
        assert str(client.echo("tulip")) == "tulip"
        started = time.monotonic()
        loop.call_soon_threadsafe(protocols[0].timeout)
        assert client.wait_eof(10)
        assert not client.stream.received  # no close frame came first
        assert time.monotonic() - started < 10
