"""A CherryPy application that mixes ordinary pages and websockets: a notice board.

    python examples/cherrypy_app.py [--host 127.0.0.1] [--port 9000]

- ``GET /``: a page with a form and a live feed (its script listens on ``/feed``);
- ``POST /notes`` (the form, field ``text``): adds a note, pushes it to every ``/feed`` websocket,
  and redirects to ``/`` (303); ``GET /notes``: the notes as JSON;
- ``GET /stats``: JSON, among it the number of websockets open;
- ``/feed`` (websocket): the notes posted while it is open, each as a JSON text message;
- ``/echo`` (websocket): echoes whatever it is sent.

The pages run on CherryPy's threads; the websockets, once upgraded, on wsloop's reactor (one
thread for all). A page handler reaches the websockets through the reactor: here by publishing
on the channel the ``/feed`` websockets subscribe to, so ``/echo`` clients get no notes.
"""

import argparse
import html
import json
import logging
import threading
import time

import cherrypy

from wsloop.servers.cherrypyserver import WebSocketPlugin, WebSocketTool
from wsloop.websocket import EchoWebSocket, WebSocket

logger = logging.getLogger("examples.cherrypy_app")

FEED = "board.notes"  # the channel of the live feed


class FeedWebSocket(WebSocket):
    """A live feed: subscribed to the notes channel from the moment it opens."""

    def opened(self) -> None:
        self.subscribe(FEED)

    def received_message(self, message: object) -> None:
        pass  # a feed only listens; it could take commands (filters, say) here


class Board:
    """The pages. ``plugin`` is the WebSocketPlugin, whose ``manager`` serves the websockets."""

    def __init__(self, plugin: WebSocketPlugin) -> None:
        self.plugin = plugin
        self.lock = threading.Lock()  # CherryPy serves pages on several threads
        self.posted: list[dict[str, object]] = []  # (not self.notes: that is the page below)

    @cherrypy.expose
    def index(self) -> str:
        with self.lock:
            items = "".join(f"<li>{html.escape(str(note['text']))}</li>" for note in self.posted)
        return PAGE.replace("{items}", items)

    @cherrypy.expose
    def notes(self, text: str | None = None) -> bytes:
        if cherrypy.request.method == "POST":
            text = (text or "").strip()
            if not text:
                raise cherrypy.HTTPError(400, "a note needs some text")
            note = {"text": text[:500], "time": time.time()}
            with self.lock:
                self.posted.append(note)
            # To every /feed websocket, from this page thread: the reactor frames it once for all.
            self.plugin.manager.get_hub().publish(FEED, json.dumps(note))
            raise cherrypy.HTTPRedirect("/", 303)
        cherrypy.response.headers["Content-Type"] = "application/json"
        with self.lock:
            return json.dumps(self.posted).encode("utf-8")

    @cherrypy.expose
    def stats(self) -> bytes:
        cherrypy.response.headers["Content-Type"] = "application/json"
        with self.lock:
            count = len(self.posted)
        return json.dumps({"notes": count, "websockets": len(self.plugin.manager)}).encode("utf-8")

    @cherrypy.expose
    def feed(self) -> None:
        pass  # upgraded by the tool (see the config in main()); the plugin takes it from here

    @cherrypy.expose
    def echo(self) -> None:
        pass


PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>notice board</title></head>
<body>
<h1>notice board</h1>
<form method="post" action="/notes">
  <input name="text" id="text" size="40" placeholder="a note"> <button id="post">post</button>
</form>
<p>Live feed (<span id="state">connecting</span>): notes posted from anywhere appear here.</p>
<ul id="feed">{items}</ul>
<script>
  const board = window.board = { state: "connecting", received: [] };  // read by the tests
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/feed`);
  const setState = (state) => { board.state = state; document.getElementById("state").textContent = state; };
  ws.onopen = () => setState("live");
  ws.onclose = () => setState("closed");
  ws.onmessage = (event) => {
    const note = JSON.parse(event.data);
    board.received.push(note.text);
    const item = document.createElement("li");
    item.textContent = note.text;
    document.getElementById("feed").appendChild(item);
  };
</script>
</body>
</html>
"""


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
            "engine.autoreload.on": False,
            "log.screen": False,
        }
    )
    plugin = WebSocketPlugin(cherrypy.engine)
    plugin.subscribe()
    cherrypy.tools.websocket = WebSocketTool()

    def log_url() -> None:
        host, port = cherrypy.server.bound_addr[:2]
        logger.info(
            "serving on http://%s:%d/ (websockets: ws://%s:%d/feed and /echo)", host, port, host, port
        )

    cherrypy.engine.subscribe("start", log_url, priority=80)
    # The tool is on for the websocket paths only; every other path is a plain page.
    config = {
        "/feed": {"tools.websocket.on": True, "tools.websocket.handler_cls": FeedWebSocket},
        "/echo": {"tools.websocket.on": True, "tools.websocket.handler_cls": EchoWebSocket},
    }
    cherrypy.quickstart(Board(plugin), "/", config=config)


if __name__ == "__main__":
    main()
