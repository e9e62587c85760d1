"""``python -m wsloop serve``: run a WebSocket server from the command line; ``python -m wsloop
client URL``: try one interactively; ``python -m wsloop --version``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import fields
from types import FrameType
from typing import Any

from . import __version__
from .health import DEFAULT_HEALTH_PATH, HealthCheck
from .servers.limits import DEFAULT_MAX_PENDING_HANDSHAKES
from .transport import DEFAULT_HIGH_WATER
from .upgrade import ServeOptions
from .websocket import EchoWebSocket, WebSocket

__all__ = ["main", "load_handler", "SERVERS"]

logger = logging.getLogger("wsloop.cli")

#: ``--server`` choices and the module whose ``serve(host, port, handler_cls, options, *, ready,
#: stop)`` runs each (:class:`~wsloop.upgrade.ServeOptions`: only the options given on the command
#: line are set, so the handler class's attributes apply to the others).
SERVERS = {
    "standalone": "wsloop.servers.standalone",
    "cherrypy": "wsloop.servers.cherrypyserver",
    "gevent": "wsloop.servers.geventserver",
    "wsgiref": "wsloop.servers.wsgirefserver",
    "asyncio": "wsloop.servers.asyncioserver",
}


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


def _byte_count(text: str) -> int:
    size = _size(text)
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a size in bytes is needed (suffix k/m)")
    return size


def _limit(text: str) -> int | None:
    if text.lower() in ("none", "unlimited"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a count of at least 1 (or 'none') is needed")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds over 0 is needed")
    return value


def _seconds_or_zero(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds (0 or more) is needed")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wsloop", description="wsloop WebSocket server")
    parser.add_argument("--version", action="version", version=f"wsloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a WebSocket server (an echo server by default)")
    serve.add_argument("--host", default="127.0.0.1", help="an IPv4 or IPv6 address (::1, ::) or a name")
    serve.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    serve.add_argument("--handler", type=load_handler, default=EchoWebSocket, help="module:Class")
    serve.add_argument(
        "--server",
        choices=list(SERVERS),
        default="standalone",
        help="standalone (no framework) or the framework that does the HTTP upgrade",
    )
    serve.add_argument(
        "--poller",
        choices=["selectors", "threaded"],
        default="selectors",
        help="standalone server: one reactor thread, or a thread per connection",
    )
    serve.add_argument(
        "--max-message-size",
        type=_size,
        default=argparse.SUPPRESS,
        help="largest message in bytes (suffix k/m/g; 'none' for no limit); default: the handler"
        " class's max_message_size (16m)",
    )
    serve.add_argument(
        "--heartbeat",
        type=float,
        dest="heartbeat_freq",
        default=argparse.SUPPRESS,
        help="seconds between keepalive pings",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=argparse.SUPPRESS,
        help="websockets served at once (per worker with --workers); upgrades beyond get 503"
        " (default: no limit)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help="close with 1001 a websocket that receives nothing for this many seconds (default: the"
        " handler class's idle_timeout, never)",
    )
    serve.add_argument(
        "--close-timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help="seconds to wait for the peer's close frame, and for all of them at shutdown; default:"
        " the handler class's close_timeout (5)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help="seconds a client has to send its upgrade request (the frameworks: for each read of"
        " it); default 10",
    )
    serve.add_argument(
        "--max-header-size",
        type=_byte_count,
        default=argparse.SUPPRESS,
        help="standalone and asyncio servers: largest request head (suffix k/m); larger ones get 431;"
        " default 16k",
    )
    serve.add_argument(
        "--max-buffered",
        type=_byte_count,
        default=argparse.SUPPRESS,
        help="unsent output a websocket whose peer has fallen behind may hold (suffix k/m), past"
        " which it is dropped and closed with 1008; default 16m",
    )
    serve.add_argument(
        "--max-pending-handshakes",
        type=_limit,
        default=argparse.SUPPRESS,
        help="standalone server: connections whose handshake is in progress, at most (and at most"
        " half the open-file limit); at the limit accepting pauses, new connections wait in the"
        f" listen backlog ('none': only that cap); default {DEFAULT_MAX_PENDING_HANDSHAKES}."
        " asyncio server: connections not upgraded, at most; more are answered 503 at once;"
        " default none",
    )
    serve.add_argument(
        "--no-compression",
        action="store_false",
        dest="compression",
        default=argparse.SUPPRESS,
        help="never negotiate permessage-deflate (by default the handler class's policy applies)",
    )
    serve.add_argument(
        "--certfile",
        default=None,
        help="standalone server: serve wss:// with this PEM certificate chain (the key in it, or --keyfile)",
    )
    serve.add_argument("--keyfile", default=None, help="the PEM private key for --certfile")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="standalone server: worker processes sharing the port, under a supervisor that restarts"
        " them (default 1: this process serves, no supervisor)",
    )
    serve.add_argument(
        "--worker-timeout",
        type=_seconds_or_zero,
        default=10.0,
        help="with --workers: a worker whose reactor sends no heartbeat for this many seconds (a"
        " handler blocking it) is killed and restarted; 0 never; default 10",
    )
    serve.add_argument(
        "--broker",
        type=_broker,
        default=None,
        help="standalone server: join broadcast() and channels across processes and hosts through"
        " redis://host:port/db (needs wsloop[redis]); default: in-process only",
    )
    serve.add_argument(
        "--max-publish-size",
        type=_size,
        default="1m",
        help="with --broker redis://...: largest message publish() and broadcast() send through"
        " Redis (suffix k/m; 'none' for no limit); a larger one raises PublishTooLarge and is not"
        " sent; default 1m",
    )
    _add_health_options(serve)
    serve.add_argument("--log-level", default="INFO")
    _metrics_option(serve)
    _add_client_command(sub)
    return parser


def _add_client_command(sub: Any) -> None:
    client = sub.add_parser("client", help="an interactive client: type messages, see the answers")
    client.add_argument("url", help="ws://host:port/path or wss://...")
    client.add_argument("--ca-file", default=None, help="wss://: trust the CAs in this PEM file")
    client.add_argument(
        "--insecure", action="store_true", help="wss://: do not check the server's certificate"
    )


def _add_health_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--health-path",
        default=DEFAULT_HEALTH_PATH,
        help="answer a plain GET of this path with 200, and with 503 once shutdown has begun"
        f" (SIGTERM), for load balancers; 'none': no health check; default {DEFAULT_HEALTH_PATH}",
    )
    serve.add_argument(
        "--drain-delay",
        type=_seconds_or_zero,
        default=0.0,
        help="seconds between SIGTERM and the websockets' 1001, health checks getting 503 (and the"
        " websockets served) meanwhile, so load balancers stop sending clients first; a second"
        " signal ends it; default 0",
    )


def _health(parser: argparse.ArgumentParser, args: argparse.Namespace) -> HealthCheck | None:
    """The ``--health-path`` and ``--drain-delay`` health check (None: 'none')."""
    if args.health_path.lower() == "none":
        if args.drain_delay:
            parser.error("--drain-delay needs a health check (--health-path)")
        return None
    if not args.health_path.startswith("/"):
        parser.error("--health-path: a path starting with '/' (or 'none')")
    if args.workers > 1 and args.drain_delay > 10:
        parser.error("--drain-delay: at most 10 s with --workers (killed 15 s after SIGTERM)")
    return HealthCheck(args.health_path, args.drain_delay)


def _metrics_option(serve: argparse.ArgumentParser) -> None:
    """``--metrics [HOST:]PORT`` (wsloop.metrics)."""
    serve.add_argument(
        "--metrics",
        default=None,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics (wsloop_*) on this port, on 127.0.0.1 unless HOST is given;"
        " with --workers, the supervisor serves the workers' sum (needs wsloop[metrics])",
    )


def _check_metrics(parser: argparse.ArgumentParser, spec: str | None) -> None:
    if spec is None:
        return
    if importlib.util.find_spec("prometheus_client") is None:
        parser.error("--metrics needs prometheus_client: pip install 'wsloop[metrics]'")
    from .metrics import parse_address

    try:
        parse_address(spec)
    except ValueError:
        parser.error(f"--metrics {spec!r}: PORT or HOST:PORT")


def _broker(text: str) -> str:
    from .brokers import check_broker_spec

    try:
        return check_broker_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "client":
        from .client.interactive import run_client

        return run_client(args.url, ca_file=args.ca_file, insecure=args.insecure)
    health = _health(parser, args)
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    if getattr(args, "max_buffered", None) is not None and args.max_buffered < DEFAULT_HIGH_WATER:
        parser.error(f"--max-buffered: at least the high-water mark ({DEFAULT_HIGH_WATER // 1024 // 1024}m)")
    if args.certfile and args.server != "standalone":
        parser.error("--certfile (wss://) is served by the standalone server only")
    ssl_context = None
    if args.certfile:
        from .servers.standalone import tls_context

        try:
            ssl_context = tls_context(args.certfile, args.keyfile)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            parser.error(f"cannot load the TLS certificate: {exc}")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    _check_metrics(parser, args.metrics)
    if (args.workers > 1 or args.broker) and args.server != "standalone":
        parser.error("--workers and --broker are implemented by the standalone server only (for now)")
    if args.broker and args.poller != "selectors":
        parser.error("--broker needs the selectors poller")
    if args.broker and args.broker.partition("://")[0] in ("redis", "rediss", "unix"):
        if importlib.util.find_spec("redis") is None:
            parser.error("--broker redis://... needs the redis package: pip install 'wsloop[redis]'")
    process = " [%(process)d]" if args.workers > 1 else ""
    logging.basicConfig(
        level=args.log_level.upper(), format=f"%(asctime)s{process} %(name)s %(levelname)s %(message)s"
    )
    module = importlib.import_module(SERVERS[args.server])
    from .poller.tuning import tune_malloc

    tune_malloc()  # process-wide, so the program's choice (workers inherit it through fork)
    stop = threading.Event()

    def _signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            logger.info("shutting down")
        elif health is not None:
            health.cut_short()  # a second signal: no more draining
        stop.set()

    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGTERM, _signal)
    detail = f"{args.poller} poller" if args.server == "standalone" else f"{args.server} server"
    if args.workers > 1:
        detail = f"{args.workers} workers, {detail}"
    if args.broker:
        detail += f", broker {args.broker}"

    listening = threading.Event()  # ready() was called: an OSError after it is no start-up failure

    def ready(url: str) -> None:
        listening.set()
        page = "http" + url[2:]  # ws:// -> http://, wss:// -> https://
        logger.info(
            "wsloop serving %s on %s (%s); open %s in a browser", args.handler.__name__, url, detail, page
        )

    # Each option flag's dest is its ServeOptions field; a flag not given is absent (SUPPRESS).
    given = {
        field.name: getattr(args, field.name) for field in fields(ServeOptions) if hasattr(args, field.name)
    }
    for flag, what in (
        ("max_pending_handshakes", "accepts connections"),
        ("max_header_size", "reads the request head"),
    ):
        if flag in given and args.server not in ("standalone", "asyncio"):
            parser.error(f"--{flag.replace('_', '-')}: the {args.server} server {what} itself")
    options: dict[str, object] = {"options": ServeOptions(**given, health=health)}
    if args.server == "standalone":
        options["poller"] = args.poller
        options["ssl_context"] = ssl_context
    broker_options = {"max_publish_size": args.max_publish_size}
    if args.broker:
        options["broker"] = args.broker
    if args.workers > 1:
        from .workers import run

        try:
            worker_options: dict[str, Any] = dict(options)
            return run(
                args.workers,
                args.host,
                args.port,
                args.handler,
                ready=ready,
                worker_timeout=args.worker_timeout,
                broker_options=broker_options,
                metrics=args.metrics,
                **worker_options,
            )
        except OSError as exc:
            logger.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
            return 1
    metrics = None
    if args.metrics is not None:
        from .metrics import serve_metrics

        try:
            metrics = serve_metrics(args.metrics)
        except OSError as exc:
            logger.error("cannot serve metrics on %s: %s", args.metrics, exc)
            return 1
        logger.info("metrics on %s", metrics.url)
    broker = None
    if args.broker:  # made here to take broker_options; serve() leaves it open
        from .brokers import make_broker

        options["broker"] = broker = make_broker(args.broker, **broker_options)
    try:
        module.serve(args.host, args.port, args.handler, ready=ready, stop=stop, **options)
    except OSError as exc:  # the host does not resolve, the port is taken, ...
        if listening.is_set():
            raise
        logger.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
        return 1
    finally:
        if broker is not None:
            broker.close()
        if metrics is not None:
            metrics.close()
    return 0
