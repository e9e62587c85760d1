"""A chat room in the browser: one page, a room everybody hears (``broadcast()``) and channels
only their subscribers hear (``subscribe()``/``publish()``).

    python examples/chat.py [--host 127.0.0.1] [--port 9000]

then open http://127.0.0.1:9000/?name=alice in one tab and http://127.0.0.1:9000/?name=bob in
another. Everything runs on the standard library's wsgiref plus wsloop: ``GET /`` is the page
(below, in PAGE), ``/ws`` the websocket. The page and the server speak JSON::

    page -> server  {"type": "say", "text": ...}               everybody gets it (broadcast)
                    {"type": "join" | "leave", "channel": ...}  subscribe / unsubscribe
                    {"type": "post", "channel": ..., "text": ...}  the channel's subscribers get it
    server -> page  {"type": "say" | "post" | "joined" | "left", "from": ..., ...}  to show
                    {"type": "subscribed" | "unsubscribed" | "error", ...}  to this tab only

Channels are in-process here; with ``reactor.use_broker(RedisBroker(url))`` the same code
reaches the clients of every process joined to Redis.
"""

import argparse
import json
import logging
import re
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

from wsloop.messaging import Message
from wsloop.poller import Reactor
from wsloop.servers.wsgirefserver import WebSocketWSGIRequestHandler, WSGIServer
from wsloop.servers.wsgiutils import WebSocketWSGIApplication
from wsloop.websocket import WebSocket

logger = logging.getLogger("examples.chat")

CHANNEL = re.compile(r"[a-z0-9-]{1,32}\Z")  # what the page may name a channel


class ChatWebSocket(WebSocket):
    """One browser tab in the room. Its callbacks run on the reactor's thread: keep them short."""

    manager: Reactor  # the reactor serving every tab: set by main() once the server exists
    name = ""  # who this tab is, from the page's URL

    def opened(self) -> None:
        # self.environ is the upgrade request's WSGI environ: the page passes the name in the URL.
        query = parse_qs((self.environ or {}).get("QUERY_STRING", ""))
        self.name = (query.get("name") or ["guest"])[0][:32]
        self.announce({"type": "joined", "from": self.name})

    def received_message(self, message: Message) -> None:
        try:
            event = json.loads(message.data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            self.tell({"type": "error", "text": "not a chat event"})
            return
        if kind == "say":
            self.announce({"type": "say", "from": self.name, "text": str(event.get("text", ""))})
            return
        channel = str(event.get("channel", ""))
        if kind in ("join", "leave", "post") and not CHANNEL.match(channel):
            self.tell({"type": "error", "text": f"bad channel name {channel!r}"})
        elif kind == "join":
            self.subscribe(f"chat.{channel}")  # a prefix keeps the room's channels apart from others
            self.tell({"type": "subscribed", "channel": channel})
        elif kind == "leave":
            self.unsubscribe(f"chat.{channel}")
            self.tell({"type": "unsubscribed", "channel": channel})
        elif kind == "post":
            # Every subscriber of the channel gets it (this tab too, if it is one), framed once.
            post = {"type": "post", "channel": channel, "from": self.name, "text": str(event.get("text", ""))}
            self.publish(f"chat.{channel}", json.dumps(post))
        else:
            self.tell({"type": "error", "text": f"unknown event type {kind!r}"})

    def closed(self, code: int, reason: object = None) -> None:
        # Channels are left by themselves when a websocket closes; the room is told.
        if self.name:
            self.announce({"type": "left", "from": self.name})

    def tell(self, event: dict[str, str]) -> None:
        self.send(json.dumps(event))

    def announce(self, event: dict[str, str]) -> None:
        # broadcast(): every open websocket of the reactor, the message framed once for all.
        self.manager.broadcast(json.dumps(event))


class ChatApp:
    """The WSGI application: the page at ``/``, the websocket at ``/ws``, 404 elsewhere."""

    def __init__(self) -> None:
        self.websockets = WebSocketWSGIApplication(handler_cls=ChatWebSocket)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/ws":
            return self.websockets(environ, start_response)
        if path == "/":
            body = PAGE.encode("utf-8")
            start_response(
                "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
            )
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]


PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>wsloop chat</title>
<style>
  body { font-family: sans-serif; margin: 2em; max-width: 40em; }
  #log { border: 1px solid #ccc; height: 18em; overflow-y: auto; padding: .5em; white-space: pre-wrap; }
  .post { color: #06c; } .info { color: #888; } .error { color: #c00; }
  fieldset { margin-top: 1em; }
</style>
</head>
<body>
<h1>wsloop chat</h1>
<p>You are <b id="me"></b> (<span id="state">connecting</span>).</p>
<div id="log"></div>
<fieldset><legend>the room (everybody)</legend>
  <input id="text" size="40" placeholder="say something"> <button id="say">say</button>
</fieldset>
<fieldset><legend>channels (subscribers only)</legend>
  <input id="channel" size="12" value="dev">
  <button id="join">join</button> <button id="leave">leave</button><br>
  <input id="post-text" size="40" placeholder="post to the channel"> <button id="post">post</button>
</fieldset>
<script>
  const name = new URLSearchParams(location.search).get("name") || "guest";
  const $ = (id) => document.getElementById(id);
  const chat = window.chat = { state: "connecting", lines: [] };  // read by the tests
  $("me").textContent = name;

  function show(text, cls) {
    chat.lines.push(text);
    const line = document.createElement("div");
    line.className = cls || "";
    line.textContent = text;
    $("log").appendChild(line);
    $("log").scrollTop = $("log").scrollHeight;
  }

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws?name=${encodeURIComponent(name)}`);
  const setState = (state) => { chat.state = state; $("state").textContent = state; };
  ws.onopen = () => setState("open");
  ws.onclose = (event) => setState("closed " + event.code);
  ws.onmessage = (event) => {
    const e = JSON.parse(event.data);
    if (e.type === "say") show(`${e.from}: ${e.text}`);
    else if (e.type === "post") show(`[${e.channel}] ${e.from}: ${e.text}`, "post");
    else if (e.type === "joined") show(`* ${e.from} joined`, "info");
    else if (e.type === "left") show(`* ${e.from} left`, "info");
    else if (e.type === "subscribed") show(`* subscribed to ${e.channel}`, "info");
    else if (e.type === "unsubscribed") show(`* unsubscribed from ${e.channel}`, "info");
    else show(`! ${e.text}`, "error");
  };
  const send = (event) => ws.send(JSON.stringify(event));

  $("say").onclick = () => { send({type: "say", text: $("text").value}); $("text").value = ""; };
  $("text").onkeydown = (event) => { if (event.key === "Enter") $("say").click(); };
  $("join").onclick = () => send({type: "join", channel: $("channel").value});
  $("leave").onclick = () => send({type: "leave", channel: $("channel").value});
  $("post").onclick = () => {
    send({type: "post", channel: $("channel").value, text: $("post-text").value});
    $("post-text").value = "";
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

    server = make_server(
        args.host, args.port, ChatApp(), server_class=WSGIServer, handler_class=WebSocketWSGIRequestHandler
    )
    reactor = Reactor()  # serves every websocket, on one thread
    server.initialize_websockets_manager(reactor)  # starts it
    ChatWebSocket.manager = reactor

    # SIGTERM (what service managers send) and Ctrl-C: shutdown() ends serve_forever() once the
    # request in progress is done. It waits for that, so it runs in a thread of its own; raising
    # from the handler instead could land inside wsgiref's request handling, which catches it.
    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info(
        "serving on http://%s:%d/ (the websocket: ws://%s:%d/ws)",
        args.host,
        server.server_port,
        args.host,
        server.server_port,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
