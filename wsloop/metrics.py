"""Prometheus exposition of the drivers' figures (``wsloop[metrics]``, ``prometheus_client``).

:class:`StatsCollector` turns a :class:`~wsloop.stats.Stats` source, read at scrape time, into
the ``wsloop_*`` metrics; :func:`serve_metrics` serves them on an HTTP port of their own from a
registry of its own (``python -m wsloop serve --metrics PORT``). Nothing is registered in
``prometheus_client``'s global registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .stats import Stats, live_stats

__all__ = ["StatsCollector", "MetricsServer", "serve_metrics", "parse_address", "METRICS"]

#: Every metric's name (as exposed) and help text.
METRICS = {
    "wsloop_connections": "Open websockets.",
    "wsloop_pending_handshakes": "Opening handshakes in progress.",
    "wsloop_handshakes_refused_total": "Upgrade requests refused, by HTTP status.",
    "wsloop_messages_received_total": "Text and binary messages received.",
    "wsloop_messages_sent_total": "Text and binary messages sent (a broadcast: one per websocket).",
    "wsloop_received_bytes_total": "Bytes read from the websockets' connections.",
    "wsloop_sent_bytes_total": "Bytes written to the websockets' connections.",
    "wsloop_buffered_bytes": "Output queued for the peers, not yet taken by the kernel.",
    "wsloop_buffered_bytes_max": "The largest output queued for one connection.",
    "wsloop_closes_total": "Websockets ended, by close code (1006: without a close frame).",
    "wsloop_slow_consumers_dropped_total": "Connections reset because the peer did not read.",
    "wsloop_loop_lag_seconds": "How late the last one-second timer of the loop fired.",
}


def _counter(name: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name.removesuffix("_total"), METRICS[name], value=value)


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRICS[name], value=value)


class StatsCollector(Collector):
    """A collector that calls ``source()`` at each scrape (default: every driver of the
    process, :func:`wsloop.stats.live_stats`); no metric is updated per message."""

    def __init__(self, source: Callable[[], Stats] = live_stats) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        stats = self.source()
        yield _gauge("wsloop_connections", stats.connections)
        yield _gauge("wsloop_pending_handshakes", stats.pending_handshakes)
        refused = CounterMetricFamily(
            "wsloop_handshakes_refused", METRICS["wsloop_handshakes_refused_total"], labels=["status"]
        )
        for status, count in sorted(stats.handshakes_refused.items()):
            refused.add_metric([str(status)], count)
        yield refused
        yield _counter("wsloop_messages_received_total", stats.messages_in)
        yield _counter("wsloop_messages_sent_total", stats.messages_out)
        yield _counter("wsloop_received_bytes_total", stats.bytes_in)
        yield _counter("wsloop_sent_bytes_total", stats.bytes_out)
        yield _gauge("wsloop_buffered_bytes", stats.buffered_bytes)
        yield _gauge("wsloop_buffered_bytes_max", stats.buffered_bytes_max)
        closes = CounterMetricFamily("wsloop_closes", METRICS["wsloop_closes_total"], labels=["code"])
        for code, count in sorted(stats.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        yield _counter("wsloop_slow_consumers_dropped_total", stats.slow_consumers_dropped)
        yield _gauge("wsloop_loop_lag_seconds", stats.loop_lag)


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``; ``ValueError`` if not."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.removeprefix("[").removesuffix("]") or default_host
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range")
    return host, number


class MetricsServer:
    """The HTTP server :func:`serve_metrics` started (a daemon thread): ``GET /metrics`` (any
    path) answers the exposition."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread, registry: CollectorRegistry) -> None:
        self.httpd = httpd
        self.thread = thread
        self.registry = registry

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


def serve_metrics(address: str | tuple[str, int], source: Callable[[], Stats] = live_stats) -> MetricsServer:
    """Serve ``source``'s figures (default: every driver of the process) as Prometheus metrics on
    ``address`` (``"PORT"``, ``"HOST:PORT"`` or a tuple; the host defaults to 127.0.0.1, port 0
    picks a free one), from a registry of its own."""
    host, port = parse_address(address) if isinstance(address, str) else address
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(source))
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(httpd, thread, registry)
