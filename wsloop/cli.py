"""``python -m wsloop serve``: run a WebSocket server from the command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from .websocket import EchoWebSocket, WebSocket

__all__ = ["main", "load_handler"]

logger = logging.getLogger("wsloop.cli")


def load_handler(spec: str) -> type[WebSocket]:
    """Import ``module:Class`` and check it is a :class:`WebSocket` subclass."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise argparse.ArgumentTypeError(f"{spec!r} is not module:Class")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot load {spec!r}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, WebSocket)):
        raise argparse.ArgumentTypeError(f"{spec!r} is not a wsloop.websocket.WebSocket subclass")
    return obj


def _size(text: str) -> int | None:
    if text.lower() in ("none", "unlimited", "0"):
        return None
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    factor = units.get(text[-1:].lower(), 1)
    return int(text[:-1] if factor != 1 else text) * factor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wsloop", description="wsloop WebSocket server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a WebSocket server (an echo server by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9000)
    serve.add_argument("--handler", type=load_handler, default=EchoWebSocket, help="module:Class")
    serve.add_argument("--server", choices=["standalone"], default="standalone")
    serve.add_argument("--poller", choices=["selectors", "threaded"], default="selectors")
    serve.add_argument(
        "--max-message-size",
        type=_size,
        default=16 * 1024 * 1024,
        help="largest message in bytes (suffix k/m/g; 'none' for no limit); default 16m",
    )
    serve.add_argument("--heartbeat", type=float, default=None, help="seconds between keepalive pings")
    serve.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .servers.standalone import WebSocketServer

    server = WebSocketServer(
        args.host,
        args.port,
        args.handler,
        poller=args.poller,
        heartbeat_freq=args.heartbeat,
        max_message_size=args.max_message_size,
    )
    stop = threading.Event()

    def _signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGTERM, _signal)
    server.start()
    logger.info(
        "wsloop serving %s on %s (%s poller); open http://%s:%d/ in a browser",
        args.handler.__name__,
        server.url,
        args.poller,
        *server.server_address,
    )
    while not stop.wait(1.0):
        pass
    logger.info("shutting down")
    server.stop()
    return 0
