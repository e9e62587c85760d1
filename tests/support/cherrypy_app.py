"""A CherryPy application for tests/test_cherrypy.py, run in a child process.

``python -m tests.support.cherrypy_app [PORT]`` listens on PORT or a free one (10 worker threads; HTTPS
with ``CHERRYPY_APP_TLS=CERTFILE:KEYFILE`` in the environment), prints
``ws://127.0.0.1:PORT/`` each time the engine has started and the bus's state changes ("Bus
STOPPED"...), and exits on SIGTERM (CherryPy's own handler: engine.exit).

- ``/``: plain text; ``/stop``: stops the engine (not exits) a moment after answering;
  ``/restart``: stops and starts it again (the URL is printed again);
- ``/forbidden``, ``/broken``: websocket paths whose page handler raises HTTPError(403), RuntimeError;
- ``/echo``: EchoWebSocket; ``/upper``: UpperWebSocket, subprotocol ``upper``;
- ``/greet``: the page handler sends a message through ``cherrypy.request.ws_handler``;
- ``/small``: messages up to 10 bytes; ``/heartbeat``: a ping every 0.2 s, each pong reported.
"""

from __future__ import annotations

import os
import sys
import threading

import cherrypy  # type: ignore[import-untyped]

from wsloop.messaging import PongControlMessage
from wsloop.servers.cherrypyserver import WebSocketPlugin, WebSocketTool
from wsloop.websocket import EchoWebSocket

from .handlers import UpperWebSocket


class PongReporter(EchoWebSocket):
    def ponged(self, pong: PongControlMessage) -> None:
        self.send("ponged")


class Root:
    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def index(self) -> str:
        return "plain HTTP"

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def stop(self) -> str:
        threading.Timer(0.2, cherrypy.engine.stop).start()
        return "stopping"

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def restart(self) -> str:
        def restart() -> None:
            cherrypy.engine.stop()
            cherrypy.engine.start()

        threading.Timer(0.2, restart).start()
        return "restarting"

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def echo(self) -> None:
        pass

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def forbidden(self) -> None:
        raise cherrypy.HTTPError(403, "not you")

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def broken(self) -> None:
        raise RuntimeError("page handler bug")

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def upper(self) -> None:
        pass

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def greet(self) -> str:
        handler = cherrypy.request.ws_handler
        handler.send(f"greetings from the page handler of a {type(handler).__name__}")
        return "a body CherryPy must not send after a 101"

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def small(self) -> None:
        pass

    @cherrypy.expose  # type: ignore[misc, untyped-decorator]
    def heartbeat(self) -> None:
        pass


def main() -> None:
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": int(sys.argv[1]) if len(sys.argv) > 1 else 0,
            "server.thread_pool": 10,
            "server.socket_queue_size": 128,
            "engine.autoreload.on": False,
            "log.screen": bool(os.environ.get("CHERRYPY_APP_LOG")),  # set it to debug
            "checker.on": False,
        }
    )
    tls = os.environ.get("CHERRYPY_APP_TLS")  # "CERTFILE:KEYFILE": HTTPS, websockets over TLS
    if tls:
        certfile, _, keyfile = tls.partition(":")
        cherrypy.config.update(
            {
                "server.ssl_module": "builtin",
                "server.ssl_certificate": certfile,
                "server.ssl_private_key": keyfile,
            }
        )
    engine = cherrypy.engine
    engine.autoreload.unsubscribe()
    WebSocketPlugin(engine).subscribe()
    cherrypy.tools.websocket = WebSocketTool()
    ws = "tools.websocket."
    cherrypy.tree.mount(
        Root(),
        "/",
        config={
            "/echo": {ws + "on": True, ws + "handler_cls": EchoWebSocket},
            "/upper": {ws + "on": True, ws + "handler_cls": UpperWebSocket, ws + "protocols": ["upper"]},
            "/greet": {ws + "on": True, ws + "handler_cls": EchoWebSocket},
            "/small": {ws + "on": True, ws + "handler_cls": EchoWebSocket, ws + "max_message_size": 10},
            "/heartbeat": {ws + "on": True, ws + "handler_cls": PongReporter, ws + "heartbeat_freq": 0.2},
            "/forbidden": {ws + "on": True, ws + "handler_cls": EchoWebSocket},
            "/broken": {ws + "on": True, ws + "handler_cls": EchoWebSocket},
        },
    )
    engine.signals.subscribe()
    engine.subscribe("start", announce, priority=80)
    engine.subscribe("log", bus_state)
    engine.start()
    engine.block()


def announce() -> None:
    """The URL, each time the engine starts (once the HTTP server listens)."""
    print(f"ws://127.0.0.1:{cherrypy.server.bound_addr[1]}/", flush=True)


def bus_state(message: str, level: int = 20) -> None:
    """Print the bus's "Bus STARTED", "Bus STOPPED"... (logged right after its state changes).

    A test waits for a stop (or start) to be over before it signals: CherryPy's bus takes no
    lock, so a stop ending after exit() began would overwrite EXITING with STOPPED, and
    engine.block() would then wait forever."""
    if message.startswith("Bus "):
        print(message, flush=True)


if __name__ == "__main__":
    main()
