"""Interoperability: the standalone server against real third-party WebSocket clients.

Clients: python-websockets (asyncio and sync), websocket-client, aiohttp, and Node's ``ws`` 8
(installed with npm into the pytest cache, ``.pytest_cache/d/wsloop-interop-node``, on first
use and reused after; skipped when node is missing or npm fails or times out, e.g. offline).

Each matrix case opens one connection, sends one message of the given type and size, and checks:

* the echo is byte-identical and of the same type (text stays text, binary stays binary);
* both sides agree whether permessage-deflate was negotiated, and it was exactly when the server
  allows it and the client offers it (the server's side is recorded by the handler);
* the connection then closes cleanly: the server sees the client's 1000.

Compression modes (``MODES``): ``on`` (server allows, client offers: negotiated), ``client-off``
(server allows, client offers nothing), ``server-off`` (client offers, the server runs with
``compression=False`` and declines). In the two "off" modes a client would fail the connection on
any RSV1 frame, so they also check that the server never compresses to a client that did not
negotiate.

Payloads: text is repetitive UTF-8 with multi-byte characters (compressible), cut to the exact
byte size; binary is random (incompressible), so both directions of deflate see both extremes.
Sizes straddle the frame-length encodings (125/126, 65535/65536) and reach the server's default
``max_message_size`` (16 MiB, which must still pass).

The whole matrix runs on the default reactor (``selectors``); the threaded poller (the same
protocol code, a thread per connection) runs the first mode with sizes 0, 64 KiB and 1 MiB.

The conversation tests send many messages on one connection (context takeover), fragmented ones
both ways, and text fragments cut inside a UTF-8 character (see ``CONVERSATION``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wsloop.messaging import Message
from wsloop.protocol import DEFAULT_MAX_MESSAGE_SIZE
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket

MiB = 1 << 20
SIZES = [0, 125, 126, 65535, 65536, MiB, 16 * MiB]
KINDS = ["text", "binary"]
CLIENT_MAX_SIZE = 64 * MiB  # well above what the server sends back
TIMEOUT = 60.0

assert DEFAULT_MAX_MESSAGE_SIZE == 16 * MiB  # the largest case is exactly the server's limit

# Repeated to build text payloads; its UTF-8 form has 2- and 3-byte characters. Node's script
# builds the same text the same way.
TEXT_UNIT = "wsloop interop \u2713 h\u00e9llo w\u00f6rld \u2014 "


@dataclass(frozen=True)
class Mode:
    name: str
    server: bool  # WebSocketServer(compression=...)
    client: bool  # the client offers permessage-deflate

    @property
    def negotiated(self) -> bool:
        return self.server and self.client

    def __str__(self) -> str:
        return self.name


ON = Mode("on", server=True, client=True)
CLIENT_OFF = Mode("client-off", server=True, client=False)
SERVER_OFF = Mode("server-off", server=False, client=True)
MODES = [ON, CLIENT_OFF, SERVER_OFF]
# websocket-client has no permessage-deflate: it never offers it, so "on" is the same as
# "client-off" (the server allows compression, nothing is offered, nothing is negotiated) and
# "server-off" is a server that would decline it anyway.
PLAIN_MODES = [CLIENT_OFF, Mode("server-off", server=False, client=False)]


def size_id(size: int) -> str:
    if size >= MiB:
        return f"{size // MiB}MiB"
    return f"{size}B"


THREADED_SIZES = [0, 65536, MiB]


def cases(modes: list[Mode]) -> pytest.MarkDecorator:
    """``poller, mode, kind, size``: every combination on the selectors reactor, and on the
    threaded poller the first mode with a few sizes (same protocol code, another transport)."""
    params = [
        pytest.param("selectors", mode, kind, size, id=f"selectors-{mode}-{kind}-{size_id(size)}")
        for mode in modes
        for kind in KINDS
        for size in SIZES
    ]
    params += [
        pytest.param("threaded", modes[0], kind, size, id=f"threaded-{modes[0]}-{kind}-{size_id(size)}")
        for kind in KINDS
        for size in THREADED_SIZES
    ]
    # "poller" overrides conftest's parametrized fixture of that name, which make_server uses.
    return pytest.mark.parametrize("poller, mode, kind, size", params)


# ---------------------------------------------------------------- payloads


@functools.cache
def make_text(size: int) -> str:
    """Repetitive text whose UTF-8 encoding is exactly ``size`` bytes."""
    unit_bytes = len(TEXT_UNIT.encode("utf-8"))
    text = TEXT_UNIT * (size // unit_bytes) + "x" * (size % unit_bytes)
    assert len(text.encode("utf-8")) == size
    return text


@functools.cache
def make_binary(size: int) -> bytes:
    return os.urandom(size)


def make_payload(kind: str, size: int) -> str | bytes:
    return make_text(size) if kind == "text" else make_binary(size)


def describe(data: str | bytes | None) -> str:
    if data is None:
        return "None"
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return f"{type(data).__name__} of {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:16]}"


def check_echo(sent: str | bytes, received: Any) -> None:
    """The echo equals what was sent, type included; failures never diff megabytes."""
    if isinstance(received, (bytearray, memoryview)):
        received = bytes(received)
    if type(received) is not type(sent) or received != sent:
        detail = ""
        if type(received) is type(sent):
            limit = min(len(sent), len(received))
            first = next((i for i in range(limit) if sent[i] != received[i]), limit)
            detail = f"; first difference at index {first}"
        raise AssertionError(f"echo differs: sent {describe(sent)}, got {describe(received)}{detail}")


# ---------------------------------------------------------------- the server


@dataclass(frozen=True)
class Item:
    """One message of a conversation: the client sends it (in three fragments when
    ``fragmented`` and the client can) and expects it back."""

    kind: str
    size: int
    fragmented: bool = False

    @property
    def payload(self) -> str | bytes:
        return make_payload(self.kind, self.size)


def thirds(data: Any) -> list[Any]:
    cut1, cut2 = len(data) // 3, 2 * len(data) // 3
    return [data[:cut1], data[cut1:cut2], data[cut2:]]


class Recorder:
    """The server-side view of each connection: negotiated deflate, extensions, messages, close."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self.close_codes: list[int] = []
        self.messages: list[tuple[str, int]] = []

    def handler(self, fragment_echo: bool = False) -> type[EchoWebSocket]:
        """An echo handler that records; with ``fragment_echo`` it sends each echo as four
        fragments (three thirds split at byte offsets, so text may be cut inside a character,
        then an empty final one)."""
        recorder = self

        class RecordingEcho(EchoWebSocket):
            def opened(self) -> None:
                with recorder.lock:
                    recorder.opened.append(
                        {"deflate": self.stream.deflate is not None, "extensions": self.extensions}
                    )

            def received_message(self, message: Message) -> None:
                with recorder.lock:
                    recorder.messages.append(("binary" if message.is_binary else "text", len(message.data)))
                if fragment_echo:
                    self.send((piece for piece in [*thirds(message.data), b""]), message.is_binary)
                else:
                    super().received_message(message)

            def closed(self, code: int, reason: bytes | None = None) -> None:
                with recorder.lock:
                    recorder.close_codes.append(code)
                recorder.closed.set()

        return RecordingEcho

    def check(self, mode: Mode, items: list[Item], client_negotiated: bool) -> None:
        assert self.closed.wait(10), "the server never saw the connection end"
        with self.lock:
            assert len(self.opened) == 1, self.opened
            seen = self.opened[0]
            assert seen["deflate"] is mode.negotiated, f"server side: {seen}, expected {mode}"
            if mode.negotiated:
                assert seen["extensions"] and seen["extensions"][0].startswith("permessage-deflate"), seen
            else:
                assert not seen["extensions"], seen
            assert self.messages == [(item.kind, item.size) for item in items]
            assert self.close_codes == [1000]
        assert client_negotiated is mode.negotiated, f"client side negotiated={client_negotiated} in {mode}"


ServerFactory = Callable[..., WebSocketServer]


def start_server(
    make_server: ServerFactory, mode: Mode, fragment_echo: bool = False
) -> tuple[WebSocketServer, Recorder]:
    recorder = Recorder()
    server = make_server(handler_cls=recorder.handler(fragment_echo), compression=mode.server)
    return server, recorder


def url_of(server: WebSocketServer) -> str:
    return f"ws://127.0.0.1:{server.port}/"


# ---------------------------------------------------------------- the Python clients
#
# Each runs a conversation on one connection: (negotiated as the client sees it, the echoes).

Conversation = Callable[[str, Mode, list[Item]], tuple[bool, list[Any]]]


def websockets_asyncio(url: str, mode: Mode, items: list[Item]) -> tuple[bool, list[Any]]:
    from websockets.asyncio.client import connect

    async def run() -> tuple[bool, list[Any]]:
        echoes = []
        async with connect(
            url,
            compression="deflate" if mode.client else None,
            max_size=CLIENT_MAX_SIZE,
            ping_interval=None,
            open_timeout=10,
            close_timeout=10,
        ) as ws:
            negotiated = bool(ws.protocol.extensions)
            for item in items:
                payload = item.payload
                # an iterable is sent as the fragments of one message
                await ws.send(thirds(payload) if item.fragmented else payload)
                echoes.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return negotiated, echoes

    return asyncio.run(run())


def websockets_sync(url: str, mode: Mode, items: list[Item]) -> tuple[bool, list[Any]]:
    from websockets.sync.client import connect

    echoes = []
    with connect(
        url,
        compression="deflate" if mode.client else None,
        max_size=CLIENT_MAX_SIZE,
        open_timeout=10,
        close_timeout=10,
    ) as ws:
        negotiated = bool(ws.protocol.extensions)
        for item in items:
            payload = item.payload
            ws.send(thirds(payload) if item.fragmented else payload)
            echoes.append(ws.recv(timeout=TIMEOUT))
    return negotiated, echoes


def websocket_client(url: str, mode: Mode, items: list[Item]) -> tuple[bool, list[Any]]:
    """websocket-client, which has no permessage-deflate: it never offers it."""
    import websocket
    from websocket import ABNF

    assert not mode.client
    echoes: list[Any] = []
    ws = websocket.create_connection(url, timeout=TIMEOUT)
    try:
        headers = {name.lower(): value for name, value in (ws.getheaders() or {}).items()}
        negotiated = "sec-websocket-extensions" in headers
        for item in items:
            payload = item.payload
            opcode = ABNF.OPCODE_TEXT if item.kind == "text" else ABNF.OPCODE_BINARY
            if item.fragmented:
                # Thirds of the UTF-8 bytes: a text fragment may end inside a character.
                data = payload.encode("utf-8") if isinstance(payload, str) else payload
                for index, piece in enumerate(thirds(data)):
                    ws.send_frame(
                        ABNF.create_frame(piece, ABNF.OPCODE_CONT if index else opcode, int(index == 2))
                    )
            else:
                ws.send(payload, opcode)
            # Frame by frame, to see the reserved bits: nothing was negotiated, so every frame
            # must have RSV1-3 clear (websocket-client also refuses one: "rsv is not implemented").
            frames = []
            while True:
                frame = ws.recv_frame()  # type: ignore[no-untyped-call]
                assert (frame.rsv1, frame.rsv2, frame.rsv3) == (0, 0, 0), "RSV bit set without an extension"
                if frame.opcode in (ABNF.OPCODE_PING, ABNF.OPCODE_PONG):
                    continue
                assert frame.opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT), frame
                frames.append(frame)
                if frame.fin:
                    break
            data = b"".join(frame.data for frame in frames)
            if frames[0].opcode == ABNF.OPCODE_TEXT:
                echoes.append(data.decode("utf-8"))
            else:
                assert frames[0].opcode == ABNF.OPCODE_BINARY, frames[0]
                echoes.append(data)
    finally:
        ws.close()
    return negotiated, echoes


def aiohttp_client(url: str, mode: Mode, items: list[Item]) -> tuple[bool, list[Any]]:
    """aiohttp (whose client cannot send a fragmented message: it sends each whole)."""
    import aiohttp

    async def run() -> tuple[bool, list[Any]]:
        echoes = []
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.ws_connect(
                url, compress=15 if mode.client else 0, max_msg_size=CLIENT_MAX_SIZE
            ) as ws:
                negotiated = ws.compress != 0
                for item in items:
                    payload = item.payload
                    if isinstance(payload, str):
                        await ws.send_str(payload)
                    else:
                        await ws.send_bytes(payload)
                    message = await ws.receive(timeout=TIMEOUT)
                    if message.type != aiohttp.WSMsgType.TEXT:
                        assert message.type == aiohttp.WSMsgType.BINARY, (message.type, message.data)
                    echoes.append(message.data)
                await ws.close()
        return negotiated, echoes

    return asyncio.run(run())


def converse(
    make_server: ServerFactory, client: Conversation, mode: Mode, items: list[Item], **server: Any
) -> None:
    server_, recorder = start_server(make_server, mode, **server)
    negotiated, echoes = client(url_of(server_), mode, items)
    assert len(echoes) == len(items)
    for item, echo in zip(items, echoes, strict=True):
        check_echo(item.payload, echo)
    recorder.check(mode, items, negotiated)


@cases(MODES)
def test_websockets_asyncio(make_server: ServerFactory, mode: Mode, kind: str, size: int) -> None:
    converse(make_server, websockets_asyncio, mode, [Item(kind, size)])


@cases(MODES)
def test_websockets_sync(make_server: ServerFactory, mode: Mode, kind: str, size: int) -> None:
    converse(make_server, websockets_sync, mode, [Item(kind, size)])


@cases(PLAIN_MODES)
def test_websocket_client(make_server: ServerFactory, mode: Mode, kind: str, size: int) -> None:
    converse(make_server, websocket_client, mode, [Item(kind, size)])


@cases(MODES)
def test_aiohttp(make_server: ServerFactory, mode: Mode, kind: str, size: int) -> None:
    converse(make_server, aiohttp_client, mode, [Item(kind, size)])


# One connection, many messages: with context takeover (the default on both sides) each
# compressed message depends on the ones before it in both directions. Every size below 16 MiB of
# both types, the same text three times (it compresses to a few bytes once in the window), and a
# message the client sends in three fragments; the server echoes each in four fragments (split at
# byte offsets, so a text fragment may end inside a character).
CONVERSATION = [
    *(Item(kind, size) for size in SIZES if size < 16 * MiB for kind in KINDS),
    *(Item("text", 1000) for _ in range(3)),
    Item("text", 200_000, fragmented=True),
    Item("text", 50, fragmented=True),  # its first third ends inside the 3-byte "\u2713"
    Item("binary", 200_000, fragmented=True),
    Item("text", 0, fragmented=True),
]

PYTHON_CLIENTS: dict[str, tuple[Conversation, list[Mode]]] = {
    "websockets-asyncio": (websockets_asyncio, [ON, CLIENT_OFF]),
    "websockets-sync": (websockets_sync, [ON, CLIENT_OFF]),
    "websocket-client": (websocket_client, [CLIENT_OFF]),
    "aiohttp": (aiohttp_client, [ON, CLIENT_OFF]),
}


@pytest.mark.parametrize(
    "poller, client, mode",
    [
        pytest.param("selectors", name, mode, id=f"selectors-{name}-{mode}")
        for name, (_, modes) in PYTHON_CLIENTS.items()
        for mode in modes
    ],
)
def test_conversation(make_server: ServerFactory, client: str, mode: Mode) -> None:
    converse(make_server, PYTHON_CLIENTS[client][0], mode, CONVERSATION, fragment_echo=True)


# ---------------------------------------------------------------- Node's ws

NODE_WS_SPEC = "ws@8"
NPM_TIMEOUT = 120

# One node process serves the whole session: it reads one JSON conversation per line on stdin,
# runs it on a new connection and answers one JSON line (spawning node per case costs more than
# most cases). Node builds the payloads itself (text as make_text does, random binary) and checks
# every echo byte for byte.
NODE_DRIVER = r"""
'use strict';
// argv[2]: the ws package's directory.
// stdin lines: {url, deflate, unit, maxPayload, timeoutMs, messages: [{kind, size, fragmented}]}
const WebSocket = require(process.argv[2]);
const wsVersion = require(process.argv[2] + '/package.json').version;
const crypto = require('crypto');
const readline = require('readline');
const sha = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

function makePayload(cfg, item) {
  if (item.kind === 'text') {
    const unitBytes = Buffer.byteLength(cfg.unit, 'utf8');
    const text = cfg.unit.repeat(Math.floor(item.size / unitBytes)) + 'x'.repeat(item.size % unitBytes);
    return Buffer.from(text, 'utf8');
  }
  return crypto.randomBytes(item.size);
}

function runConversation(cfg) {
  return new Promise((resolve) => {
    const result = { wsVersion, extensions: null, error: null, closeCode: null, messages: [] };
    let finished = false;
    const finish = () => { if (!finished) { finished = true; clearTimeout(timer); resolve(result); } };
    const timer = setTimeout(() => { result.error = 'timeout'; ws.terminate(); finish(); }, cfg.timeoutMs);
    // threshold 0: compress every message once negotiated, even an empty one (by default ws
    // sends messages under 1024 bytes uncompressed).
    const ws = new WebSocket(cfg.url, {
      perMessageDeflate: cfg.deflate ? { threshold: 0 } : false,
      maxPayload: cfg.maxPayload,
    });
    let index = -1;
    let expected = null;
    const next = () => {
      index += 1;
      if (index === cfg.messages.length) { ws.close(1000); return; }
      const item = cfg.messages[index];
      expected = makePayload(cfg, item);
      const binary = item.kind === 'binary';
      if (item.fragmented) {  // thirds of the bytes: a text fragment may end inside a character
        const a = Math.floor(expected.length / 3), b = Math.floor(2 * expected.length / 3);
        ws.send(expected.subarray(0, a), { binary, fin: false });
        ws.send(expected.subarray(a, b), { binary, fin: false });
        ws.send(expected.subarray(b), { binary, fin: true });
      } else {
        ws.send(binary ? expected : expected.toString('utf8'), { binary });
      }
    };
    ws.on('open', () => { result.extensions = ws.extensions; next(); });
    ws.on('message', (data, isBinary) => {
      const item = cfg.messages[index];
      result.messages.push({
        kind: item.kind, size: item.size, sentSha256: sha(expected),
        receivedLength: data.length, receivedSha256: sha(data), isBinary,
        ok: isBinary === (item.kind === 'binary') && Buffer.compare(data, expected) === 0,
      });
      next();
    });
    ws.on('close', (code) => { result.closeCode = code; finish(); });
    ws.on('error', (err) => { result.error = String((err && err.message) || err); });
  });
}

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on('line', (line) => {
  queue = queue.then(async () => {
    const result = await runConversation(JSON.parse(line));
    process.stdout.write(JSON.stringify(result) + '\n');
  });
});
rl.on('close', () => { queue.then(() => process.exit(0)); });
"""


class NodeDriver:
    """The node process running :data:`NODE_DRIVER`: one case in, one JSON result out."""

    def __init__(self, node: str, package: Path, script: Path) -> None:
        self.proc = subprocess.Popen(
            [node, str(script), str(package)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def run(self, config: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node gave no result within {timeout} s") from None
        if line is None:
            raise AssertionError(f"node exited ({self.proc.wait()}): {''.join(self.stderr)[-2000:]}")
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def node_ws(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeDriver]:
    """A node process with Node's ws package, installed once into the pytest cache."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: Node's ws client not tested")
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        folder = Path(cache.mkdir("wsloop-interop-node"))
    else:  # -p no:cacheprovider
        folder = tmp_path_factory.mktemp("node")
    package = folder / "node_modules" / "ws"
    manifest = package / "package.json"

    def installed() -> bool:
        try:
            return bool(json.loads(manifest.read_text())["version"].startswith("8."))
        except (OSError, ValueError, KeyError):
            return False

    if not installed():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"npm is not installed: cannot install {NODE_WS_SPEC}")
        command = [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(folder)]
        # its own process group, so that a timeout ends npm and whatever it started
        proc = subprocess.Popen(
            [*command, NODE_WS_SPEC],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.skip(f"npm install {NODE_WS_SPEC} timed out after {NPM_TIMEOUT} s (offline?)")
        if proc.returncode != 0 or not installed():
            tail = (err or out).strip().splitlines()[-3:]
            pytest.skip(f"npm install {NODE_WS_SPEC} failed (offline?): {' | '.join(tail)}")
    script = folder / "echo_driver.js"
    script.write_text(NODE_DRIVER)
    driver = NodeDriver(node, package, script)
    yield driver
    driver.close()


def node_converse(
    make_server: ServerFactory, driver: NodeDriver, mode: Mode, items: list[Item], **server: Any
) -> None:
    server_, recorder = start_server(make_server, mode, **server)
    config = {
        "url": url_of(server_),
        "deflate": mode.client,
        "unit": TEXT_UNIT,
        "maxPayload": CLIENT_MAX_SIZE,
        "timeoutMs": int(TIMEOUT * 1000),
        "messages": [{"kind": i.kind, "size": i.size, "fragmented": i.fragmented} for i in items],
    }
    result = driver.run(config, TIMEOUT + 10)
    brief = {key: value for key, value in result.items() if key != "messages"}
    assert result["error"] is None, brief
    assert result["wsVersion"].startswith("8."), brief
    assert len(result["messages"]) == len(items), result
    for item, echo in zip(items, result["messages"], strict=True):
        assert echo["receivedLength"] == item.size, echo
        assert echo["ok"], f"echo differs: {echo}"
        if item.kind == "text":  # node built the same text as make_text
            assert echo["sentSha256"] == hashlib.sha256(make_text(item.size).encode("utf-8")).hexdigest()
    assert result["closeCode"] == 1000, brief
    extensions = result["extensions"] or ""
    negotiated = extensions.startswith("permessage-deflate")
    assert negotiated or extensions == "", extensions
    recorder.check(mode, items, negotiated)


@cases(MODES)
def test_node_ws(make_server: ServerFactory, node_ws: NodeDriver, mode: Mode, kind: str, size: int) -> None:
    node_converse(make_server, node_ws, mode, [Item(kind, size)])


@pytest.mark.parametrize(
    "poller, mode", [pytest.param("selectors", mode, id=f"selectors-{mode}") for mode in (ON, CLIENT_OFF)]
)
def test_node_ws_conversation(make_server: ServerFactory, node_ws: NodeDriver, mode: Mode) -> None:
    node_converse(make_server, node_ws, mode, CONVERSATION, fragment_echo=True)
