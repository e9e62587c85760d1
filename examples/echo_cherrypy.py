"""Echo server in a CherryPy application: ws4py's plugin and tool.

    python examples/echo_cherrypy.py [--host 127.0.0.1] [--port 9000]

``WebSocketPlugin`` runs wsloop's reactor with CherryPy's engine; ``WebSocketTool`` upgrades the
requests of the paths where it is on (here ``/ws``) and hands their sockets to the plugin. The
other paths are ordinary CherryPy pages: ``/`` is a page whose script talks to ``/ws``.
"""

import argparse
import logging

import cherrypy

from wsloop.servers.cherrypyserver import WebSocketPlugin, WebSocketTool
from wsloop.websocket import EchoWebSocket

logger = logging.getLogger("examples.echo_cherrypy")

PAGE = """<!doctype html>
<title>echo</title>
<input id="text" value="hello"> <button id="send">send</button>
<pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => log("open");
  ws.onmessage = (event) => log("echo: " + event.data);
  ws.onclose = (event) => log("closed " + event.code);
  document.getElementById("send").onclick = () => ws.send(document.getElementById("text").value);
</script>
"""


class Root:
    @cherrypy.expose
    def index(self) -> str:
        return PAGE

    @cherrypy.expose
    def ws(self) -> None:
        # The tool has upgraded the request by now: the websocket (an EchoWebSocket, not open
        # yet) is cherrypy.request.ws_handler; the plugin serves it once this returns.
        handler = cherrypy.request.ws_handler
        logger.debug("upgraded: %r", handler)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    cherrypy.config.update(
        {
            "server.socket_host": args.host,
            "server.socket_port": args.port,
            "engine.autoreload.on": False,  # an example run from anywhere: no file watching
            "log.screen": False,  # CherryPy's own messages go to logging instead (its "cherrypy.error")
        }
    )
    WebSocketPlugin(cherrypy.engine).subscribe()
    cherrypy.tools.websocket = WebSocketTool()

    def log_url() -> None:  # once the HTTP server listens (port 0: the port it picked)
        host, port = cherrypy.server.bound_addr[:2]
        logger.info("serving on ws://%s:%d/ws (the page: http://%s:%d/)", host, port, host, port)

    cherrypy.engine.subscribe("start", log_url, priority=80)  # the HTTP server starts at 75

    # quickstart() mounts the application, starts the engine, and blocks until SIGTERM or Ctrl-C,
    # on which the plugin closes every websocket with 1001.
    cherrypy.quickstart(
        Root(),
        "/",
        config={"/ws": {"tools.websocket.on": True, "tools.websocket.handler_cls": EchoWebSocket}},
    )


if __name__ == "__main__":
    main()
