"""ws4py programs for the parity test, written once with ``ws4py`` imports and ported to wsloop by
their imports only; the scripted peers that talk to them; and the runs that record what each
program's callbacks saw (JSON lines: conversation, callback, argument types and values)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, close_payload, frame, parse_close
from .wsclient import upgrade

ROOT = Path(__file__).resolve().parents[2]
#: Bound on one program's whole run, and on each wait for a reply inside it.
PROGRAM_TIMEOUT = 30.0
STEP_TIMEOUT = 5.0


def port_to_wsloop(source: str) -> str:
    """A ws4py program's wsloop port: only its imports change."""
    return source.replace("ws4py.server.", "wsloop.servers.").replace("ws4py", "wsloop")


# What both programs record with; it imports nothing from ws4py or wsloop.
RECORDER = r'''
import json, sys, threading, os

_LOG = open(sys.argv[1], "a", encoding="utf-8")
_LOCK = threading.Lock()


def _safe(call):
    try:
        return describe(call())
    except Exception as exc:
        return {"raises": type(exc).__name__}


def describe(value):
    """A value as JSON: its type name and, where deterministic, its value."""
    if isinstance(value, bytes):
        return {"type": "bytes", "value": value.decode("latin-1")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"type": type(value).__name__, "value": value}
    if isinstance(value, (tuple, list)):
        return {"type": type(value).__name__, "items": [describe(v) for v in value]}
    kind = type(value).__name__
    if kind in ("TextMessage", "BinaryMessage"):
        return {
            "type": kind,
            "data": _safe(lambda: value.data),
            "is_binary": _safe(lambda: value.is_binary),
            "is_text": _safe(lambda: value.is_text),
            "len": _safe(lambda: len(value)),
            "str": _safe(lambda: str(value)) if kind == "TextMessage" else None,
        }
    if hasattr(value, "data") and hasattr(value, "opcode"):  # a control message
        return {"type": kind, "data": _safe(lambda: value.data), "len": _safe(lambda: len(value))}
    return {"type": kind}


def shape(value):
    """Types only, for values that change from run to run (ports, keys)."""
    if isinstance(value, (tuple, list)):
        return {"type": type(value).__name__, "items": [shape(v) for v in value]}
    return {"type": type(value).__name__}


def attributes(obj, exact, typed):
    """Named attributes of ``obj``: ``exact`` ones by value, ``typed`` ones by type."""
    seen = {}
    for name in exact + typed:
        try:
            value = getattr(obj, name)
        except Exception as exc:
            seen[name] = {"raises": type(exc).__name__}
            continue
        seen[name] = describe(value) if name in exact else shape(value)
    return seen


def record(conversation, event, *args, **extra):
    line = {"conversation": conversation, "event": event, "args": [describe(a) for a in args]}
    line.update(extra)
    with _LOCK:
        _LOG.write(json.dumps(line) + "\n")
        _LOG.flush()
'''

# ------------------------------------------------------------------- (a) ws4py server programs

SERVER_HANDLER = r'''
from ws4py.websocket import WebSocket


class Recorded(WebSocket):
    """Echoes, and obeys 'close <code> <reason>' and 'ping <data>'; records every callback."""

    def opened(self):
        self.conversation = (self.environ or {}).get("PATH_INFO", "?").strip("/")
        record(self.conversation, "opened", attributes=attributes(
            self,
            ["terminated", "client_terminated", "server_terminated", "protocols", "extensions"],
            ["environ", "peer_address", "local_address", "sock"],
        ))

    def received_message(self, message):
        record(self.conversation, "received_message", message)
        text = str(message) if message.is_text else ""
        if text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            self.close(int(code), reason)
        elif text.startswith("ping "):
            self.ping(text[5:])
        else:
            self.send(message.data, message.is_binary)

    def ponged(self, pong):
        record(self.conversation, "ponged", pong)

    def closed(self, code, reason=None):
        record(self.conversation, "closed", code, reason)
'''

WSGIREF_SERVER = r"""
from wsgiref.simple_server import make_server

from ws4py.server.wsgirefserver import WSGIServer, WebSocketWSGIRequestHandler
from ws4py.server.wsgiutils import WebSocketWSGIApplication

server = make_server(
    "127.0.0.1", 0, server_class=WSGIServer, handler_class=WebSocketWSGIRequestHandler,
    app=WebSocketWSGIApplication(handler_cls=Recorded),
)
server.initialize_websockets_manager()
thread = threading.Thread(target=server.serve_forever, daemon=True)
thread.start()
print(server.server_address[1], flush=True)
sys.stdin.readline()  # the driver closes stdin when it is done
server.shutdown()
server.server_close()
"""

CHERRYPY_SERVER = r"""
import cherrypy

from ws4py.server.cherrypyserver import WebSocketPlugin, WebSocketTool

cherrypy.config.update({
    "server.socket_host": "127.0.0.1", "server.socket_port": 0,
    "log.screen": False, "engine.autoreload.on": False, "checker.on": False,
})
WebSocketPlugin(cherrypy.engine).subscribe()
cherrypy.tools.websocket = WebSocketTool()


class Root:
    @cherrypy.expose
    def default(self, *args):
        pass


cherrypy.tree.mount(Root(), "/", config={
    "/": {"tools.websocket.on": True, "tools.websocket.handler_cls": Recorded},
})
cherrypy.engine.start()
print(cherrypy.server.bound_addr[1], flush=True)
sys.stdin.readline()  # the driver closes stdin when it is done
cherrypy.engine.exit()
"""

#: Each server program: the same handler, served by a ws4py server flavour.
SERVER_PROGRAMS: dict[str, str] = {
    "wsgiref": SERVER_HANDLER + WSGIREF_SERVER,
    "cherrypy": SERVER_HANDLER + CHERRYPY_SERVER,
}

# ------------------------------------------------------------------- (b) a ws4py client program

CLIENT_PROGRAM = r'''
import time

from ws4py.client.threadedclient import WebSocketClient


def fragments():
    yield "frag"
    yield "men"
    yield "ted"


class Recorded(WebSocketClient):
    """Plays one conversation (its url's last segment) against the reference server."""

    def handshake_ok(self):
        record(self.conversation, "handshake_ok")
        super().handshake_ok()

    def opened(self):
        c = self.conversation
        if c == "echo":  # the attributes, once (other conversations may close meanwhile)
            record(c, "opened", attributes=attributes(
                self,
                ["terminated", "client_terminated", "server_terminated", "host", "resource",
                 "scheme", "daemon", "protocols", "extensions"],
                ["key", "port", "bind_addr", "peer_address", "local_address", "sock"],
            ))
        else:
            record(c, "opened")
        if c == "echo":
            self.send("h\u00e9llo w\u00f6rld")
        elif c == "client-closes":
            self.close(4000, "client reason")
        elif c == "server-closes":
            self.send("close 4001 server reason")
        elif c == "ping":
            self.ping("cli")
        elif c == "fragments":
            self.send(fragments())
        elif c == "close-in-opened":
            self.close(1000, "at once")

    def received_message(self, message):
        record(self.conversation, "received_message", message)
        c = self.conversation
        if c == "echo":
            if message.is_text:
                self.send(b"\x00\x01\xfe\xff", binary=True)
            else:
                self.close()
        elif c == "ping" and str(message) == "pinged":
            self.close(1000, "pinged")
        elif c == "fragments" and not self.asked:
            self.asked = True
            self.send("fragments")
        elif c == "fragments":
            self.close(1000, "done")

    def ponged(self, pong):
        record(self.conversation, "ponged", pong)
        self.send("ping srv")

    def closed(self, code, reason=None):
        record(self.conversation, "closed", code, reason)


def watchdog():
    time.sleep(float(sys.argv[3]))
    record("-", "timeout")
    os._exit(3)


threading.Thread(target=watchdog, daemon=True).start()
for conversation in sys.argv[4:]:
    ws = Recorded(sys.argv[2] + conversation)
    ws.conversation, ws.asked = conversation, False
    ws.connect()
    if conversation == "close-after-connect":
        ws.close(1000, "at once")
    ws.run_forever()
    record(conversation, "terminated", ws.terminated)
'''

GEVENT_CLIENT_PROGRAM = r'''
import time

from ws4py.client.geventclient import WebSocketClient


def fragments():
    yield "frag"
    yield "men"
    yield "ted"


class Recorded(WebSocketClient):
    """ws4py's gevent client: what receive() returns is recorded with the callbacks."""

    def opened(self):
        record(self.conversation, "opened")

    def ponged(self, pong):
        record(self.conversation, "ponged", pong)

    def closed(self, code, reason=None):
        record(self.conversation, "closed", code, reason)
        super().closed(code, reason)


def receive(ws):
    record(ws.conversation, "receive", ws.receive())


def play(ws):
    c = ws.conversation
    if c == "echo":
        ws.send("h\u00e9llo w\u00f6rld")
        receive(ws)
        ws.send(b"\x00\x01\xfe\xff", binary=True)
        receive(ws)
        ws.close()
    elif c == "client-closes":
        ws.close(4000, "client reason")
    elif c == "server-closes":
        ws.send("close 4001 server reason")
    elif c == "ping":
        ws.ping("cli")
        ws.send("ping srv")
        receive(ws)
        ws.close(1000, "pinged")
    elif c == "fragments":
        ws.send(fragments())
        receive(ws)
        ws.send("fragments")
        receive(ws)
        ws.close(1000, "done")
    receive(ws)  # None: the connection is closed


def watchdog():
    time.sleep(float(sys.argv[3]))
    record("-", "timeout")
    os._exit(3)


threading.Thread(target=watchdog, daemon=True).start()
for conversation in sys.argv[4:]:
    ws = Recorded(sys.argv[2] + conversation)
    ws.conversation = conversation
    ws.connect()
    play(ws)
    record(conversation, "terminated", ws.terminated)
'''

#: Each client program: its source, the line it must start with, its conversations.
CLIENT_PROGRAMS: dict[str, tuple[str, str, list[str]]] = {
    "threaded": (
        CLIENT_PROGRAM,
        "",
        [
            "echo",
            "client-closes",
            "server-closes",
            "ping",
            "fragments",
            "close-in-opened",
            "close-after-connect",
        ],
    ),
    "gevent": (
        GEVENT_CLIENT_PROGRAM,
        "from gevent import monkey; monkey.patch_all()\n",
        ["echo", "client-closes", "server-closes", "ping", "fragments"],
    ),
}


# ------------------------------------------------------------------------- running a program


def program_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    return env


def write_program(directory: Path, name: str, source: str, first: str = "") -> Path:
    path = directory / f"{name}.py"
    path.write_text(first + RECORDER + source, encoding="utf-8")
    return path


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def by_conversation(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["conversation"], []).append(event)
    return grouped


@contextmanager
def server_program(directory: Path, name: str, source: str) -> Iterator[tuple[int, Path]]:
    """Start a server program; yield its port and its log; stop it (stdin closed, then killed)."""
    log = directory / f"{name}.jsonl"
    script = write_program(directory, name, source)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(directory / f"{name}.stderr", "wb"),
        env=program_env(),
        cwd=directory,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(STEP_TIMEOUT)
            raise RuntimeError(f"{name} did not start: {(directory / f'{name}.stderr').read_text()}")
        yield int(line), log
    finally:
        assert proc.stdin is not None
        try:
            proc.stdin.close()
            proc.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_client_program(
    directory: Path, name: str, source: str, first: str, url: str, conversations: list[str]
) -> Path:
    """Run a client program through its conversations; return its log."""
    log = directory / f"{name}.jsonl"
    script = write_program(directory, name, source, first)
    with open(directory / f"{name}.stderr", "wb") as stderr:
        try:
            returncode = subprocess.run(
                [sys.executable, str(script), str(log), url, str(PROGRAM_TIMEOUT - 5), *conversations],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=program_env(),
                cwd=directory,
                timeout=PROGRAM_TIMEOUT,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:  # killed: its watchdog did not fire
            returncode = -9
    if returncode:
        with open(log, "a", encoding="utf-8") as out:
            tail = (directory / f"{name}.stderr").read_text(errors="replace")[-2000:]
            out.write(
                json.dumps({"conversation": "-", "event": "exit", "args": [returncode], "stderr": tail})
                + "\n"
            )
    return log


# ------------------------------------------------------- (a) the scripted raw-socket client


class RawPeer:
    """A WebSocket client made of raw bytes (frames built by :mod:`tests.support.frames`): it
    sends exactly the frames a script names and records every frame the server sends."""

    def __init__(self, port: int, path: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
        self.sock.sendall(upgrade(request_line=f"GET {path} HTTP/1.1"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        self.seen: list[dict[str, Any]] = [
            {"event": "peer handshake", "status": head.split(b" ", 2)[1].decode()}
        ]
        self.sent_close = False
        self.stalled = False  # once a wait has timed out, the others do not wait (bounded runs)

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.sent_close |= opcode == CLOSE
        self.sock.sendall(frame(opcode, payload, fin=fin, key=os.urandom(4)))

    def note(self, event: str, **fields: Any) -> None:
        self.seen.append({"event": "peer " + event, **fields})

    def _frame(self) -> tuple[int, int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        length, pos = data[1] & 0x7F, 2
        if length == 126:
            length, pos = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, pos = int.from_bytes(data[2:10], "big"), 10
        if data[1] & 0x80:
            pos += 4  # a server must not mask; the test sees it in the opcode/payload anyway
        if len(data) < pos + length:
            return None
        self.buffer = data[pos + length :]
        return data[0] >> 7, data[0] & 0x0F, data[pos : pos + length]

    def expect(self) -> None:
        """Read one frame and record it (a timeout or EOF is recorded instead)."""
        deadline = time.monotonic() + (0 if self.stalled else STEP_TIMEOUT)
        while (got := self._frame()) is None:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(65536)
            except TimeoutError:
                self.stalled = True
                self.note("nothing")
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.note("eof")
                return
            self.buffer += chunk
        fin, opcode, payload = got
        if opcode == CLOSE:
            code, reason = parse_close(payload)
            self.note("close-reply" if self.sent_close else "close", fin=fin, code=code, reason=reason)
        else:
            names = {CONT: "continuation", TEXT: "text", BINARY: "binary", PING: "ping", PONG: "pong"}
            self.note(names.get(opcode, f"opcode {opcode}"), fin=fin, payload=payload.decode("latin-1"))

    def wait_eof(self) -> None:
        """Read until the server closes the connection; frames are recorded, then ``eof``."""
        deadline = time.monotonic() + (0 if self.stalled else STEP_TIMEOUT)
        while time.monotonic() < deadline:
            if self._frame() is not None:
                self.note("frame after the close")
            try:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.note("eof")
                return
            self.buffer += chunk
        self.note("connection left open")

    def close(self) -> None:
        self.sock.close()


def _echo(peer: RawPeer) -> None:
    peer.send(TEXT, "h\u00e9llo w\u00f6rld".encode())
    peer.expect()
    peer.send(BINARY, b"\x00\x01\xfe\xff")
    peer.expect()
    peer.send(CLOSE, close_payload(1000))
    peer.expect()
    peer.wait_eof()


def _client_closes(peer: RawPeer) -> None:
    peer.send(CLOSE, close_payload(4000, "client reason"))
    peer.expect()
    peer.wait_eof()


def _server_closes(peer: RawPeer) -> None:
    peer.send(TEXT, b"close 4001 server reason")
    peer.expect()
    peer.send(CLOSE, close_payload(4001, "server reason"))
    peer.wait_eof()


def _ping(peer: RawPeer) -> None:
    peer.send(PING, b"cli")
    peer.expect()  # our pong
    peer.send(TEXT, b"ping srv")
    peer.expect()  # the server's ping
    peer.send(PONG, b"srv")
    peer.send(TEXT, b"sync")
    peer.expect()
    peer.send(CLOSE, close_payload(1000, "bye"))
    peer.expect()
    peer.wait_eof()


def _fragments(peer: RawPeer) -> None:
    peer.send(TEXT, b"frag", fin=False)
    peer.send(CONT, b"men", fin=False)
    peer.send(PING, b"mid")  # a control frame between fragments
    peer.send(CONT, b"ted")
    peer.expect()  # pong "mid"
    peer.expect()  # "fragmented"
    peer.send(BINARY, b"\x01\x02", fin=False)
    peer.send(CONT, b"\x03")
    peer.expect()
    peer.send(CLOSE, close_payload(1000))
    peer.expect()
    peer.wait_eof()


def _close_at_once(peer: RawPeer) -> None:
    peer.send(CLOSE, close_payload(1000, "at once"))
    peer.expect()
    peer.wait_eof()


def _drop_at_once(peer: RawPeer) -> None:
    peer.sock.shutdown(socket.SHUT_RDWR)


SERVER_CONVERSATIONS: dict[str, Callable[[RawPeer], None]] = {
    "echo": _echo,
    "client-closes": _client_closes,
    "server-closes": _server_closes,
    "ping": _ping,
    "fragments": _fragments,
    "close-at-once": _close_at_once,
    "drop-at-once": _drop_at_once,
}


def wait_for_event(log: Path, conversation: str, event: str, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["conversation"] == conversation and e["event"] == event for e in read_log(log)):
            return
        time.sleep(0.02)


def drive_server(port: int, log: Path) -> dict[str, list[dict[str, Any]]]:
    """Play every conversation against a server program; return, by conversation, what the raw
    client saw (``peer`` events) followed by what the server's callbacks recorded."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for name, script in SERVER_CONVERSATIONS.items():
        try:
            peer = RawPeer(port, "/" + name)
        except OSError as exc:  # refused, or closed during the handshake
            seen[name] = [{"conversation": name, "event": f"peer handshake failed: {exc!r}"}]
            continue
        try:
            script(peer)
        except OSError as exc:
            peer.note(f"error {type(exc).__name__}")
        finally:
            peer.close()
        # the server closed the connection, or should have noticed it gone: closed() is due
        if peer.seen[-1]["event"] == "peer eof" or script is _drop_at_once:
            wait_for_event(log, name, "closed")
        seen[name] = [{"conversation": name, **event} for event in peer.seen]
    for name, events in by_conversation(read_log(log)).items():
        seen.setdefault(name, []).extend(events)
    return seen


# ------------------------------------------------------ (b) the reference echo server


class ReferenceServer:
    """The websockets library's threaded server: echoes, and obeys 'close <code> <reason>',
    'ping srv' (pings, waits for the pong, answers 'pinged') and 'fragments' (sends a message
    in three frames). It records, by path, what it received and how each connection closed."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.seen: dict[str, list[Any]] = {}
        self.lock = threading.Lock()
        self.server = serve(self.handle, "127.0.0.1", 0, compression=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def note(self, path: str, event: str, **fields: Any) -> None:
        with self.lock:
            self.seen.setdefault(path, []).append({"event": "reference " + event, **fields})

    def handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        path = ws.request.path
        closing = False
        try:
            for message in ws:
                kind = "text" if isinstance(message, str) else "binary"
                self.note(path, kind, data=message if isinstance(message, str) else message.decode("latin-1"))
                if isinstance(message, str) and message.startswith("close "):
                    _, code, reason = message.split(" ", 2)
                    closing = True
                    ws.close(int(code), reason)
                elif message == "ping srv":
                    self.note(path, "pong", received=ws.ping(b"srv").wait(STEP_TIMEOUT))
                    ws.send("pinged")
                elif message == "fragments":
                    ws.send(["frag", "men", "ted"])
                else:
                    ws.send(message)
        except ConnectionClosed:
            pass
        received = ws.protocol.close_rcvd
        if received is None:
            self.note(path, "no close")
        else:
            self.note(path, "close-reply" if closing else "close", code=received.code, reason=received.reason)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(STEP_TIMEOUT)
