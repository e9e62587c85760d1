"""``python -m wsloop serve --metrics``: the Prometheus exposition, scraped with prometheus_client's
own parser under load from real clients, checked against what the clients did; every server
flavour, ``--workers 2`` (the supervisor's one endpoint sums the workers), and a real Prometheus
server scraping it where Debian's ``prometheus`` is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.components import require_module
from tests.support.metrics_load import open_idle, run_load, scrape
from tests.support.serverproc import FLAVOURS, ServerProcess
from tests.support.sockets import free_port
from tests.support.waiting import eventually

require_module("prometheus_client")  # in the test extra: CI fails rather than skips without it

HANDLER = ("--handler", "tests.support.metrics_load:Guarded")
METRICS_LOGGED = re.compile(r"metrics on (http://\S+)")
# Where refusals are counted: all but CherryPy (its tool has no driver to count them in).
COUNTS_REFUSALS = {"standalone", "threaded", "asyncio", "gevent", "wsgiref"}


def _metrics_url(server: ServerProcess) -> str:
    assert eventually(lambda: METRICS_LOGGED.search(server.output) is not None, 10), server.output
    found = METRICS_LOGGED.search(server.output)
    assert found is not None
    return found.group(1)


def _load_and_check(server: ServerProcess, refusals: bool, clients: int = 6, idle: int = 3) -> None:
    url = _metrics_url(server)
    before = scrape(url)
    assert before["wsloop_connections"] == 0
    assert before["wsloop_messages_received_total"] == 0
    held = open_idle(server.port, idle)
    assert eventually(lambda: scrape(url)["wsloop_connections"] == idle, 15.0), scrape(url)
    expected = run_load(server.port, clients=clients, messages=100, size=50, code=4321)
    for ws in held:
        ws.close()  # 1000, no reason
    expected.bytes_in += idle * 8
    expected.bytes_out += idle * 4
    expected.closes[1000] = idle

    def settled() -> bool:
        samples = scrape(url)
        return samples["wsloop_connections"] == 0 and samples.get('wsloop_closes_total{code="1000"}') == idle

    assert eventually(settled, 15.0), scrape(url)
    samples = scrape(url)
    assert samples["wsloop_messages_received_total"] == expected.messages
    assert samples["wsloop_messages_sent_total"] == expected.messages
    assert samples["wsloop_received_bytes_total"] == expected.bytes_in
    assert samples["wsloop_sent_bytes_total"] == expected.bytes_out
    assert samples['wsloop_closes_total{code="4321"}'] == clients
    assert samples['wsloop_closes_total{code="1000"}'] == idle
    assert samples["wsloop_buffered_bytes"] == 0
    assert samples["wsloop_buffered_bytes_max"] == 0
    assert samples["wsloop_slow_consumers_dropped_total"] == 0
    assert samples["wsloop_pending_handshakes"] == 0
    assert samples["wsloop_loop_lag_seconds"] >= 0
    if refusals:
        assert samples['wsloop_handshakes_refused_total{status="400"}'] == expected.refused[400]
        assert samples['wsloop_handshakes_refused_total{status="403"}'] == expected.refused[403]


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_scrape_matches_the_clients(flavour: str) -> None:
    server = ServerProcess(*HANDLER, *FLAVOURS[flavour], "--metrics", "0")
    try:
        _load_and_check(server, refusals=flavour in COUNTS_REFUSALS)
    finally:
        server.stop()


def test_workers_sum_in_one_endpoint() -> None:
    server = ServerProcess(*HANDLER, "--workers", "2", "--worker-timeout", "0", "--metrics", "0")
    try:
        _load_and_check(server, refusals=True, clients=8, idle=4)
    finally:
        server.stop()
    assert server.exit_code == 0, server.output


def test_metrics_listens_on_loopback_by_default() -> None:
    server = ServerProcess("--metrics", "0")
    try:
        url = _metrics_url(server)
        assert url.startswith("http://127.0.0.1:")
        assert "wsloop_connections" in scrape(url)
    finally:
        server.stop()


def test_metrics_needs_an_address() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", "--metrics", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--metrics" in done.stderr


PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.mark.skipif(
    not os.path.exists(PROMETHEUS),
    reason="Debian's prometheus is not installed (apt-get install prometheus): no real Prometheus"
    " to scrape our endpoint",
)
def test_a_real_prometheus_scrapes_it() -> None:
    server = ServerProcess(*HANDLER, "--metrics", "0")
    prometheus: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            target = urllib.parse.urlsplit(_metrics_url(server)).netloc
            held = open_idle(server.port, 2)
            config = Path(tmp, "prometheus.yml")
            config.write_text(
                "global:\n  scrape_interval: 1s\n"
                f"scrape_configs:\n  - job_name: wsloop\n    static_configs:\n      - targets: ['{target}']\n"
            )
            web = f"127.0.0.1:{free_port()}"
            log = open(Path(tmp, "prometheus.log"), "wb")
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp}/data",
                    f"--web.listen-address={web}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            query = f"http://{web}/api/v1/query?query=wsloop_connections"

            def answered() -> bool:
                try:
                    with urllib.request.urlopen(query, timeout=5) as response:
                        result = json.load(response)["data"]["result"]
                except (OSError, ValueError, KeyError):
                    return False
                return bool(result) and result[0]["value"][1] == "2"

            ok = eventually(answered, 60)
            for ws in held:
                ws.close()
            assert ok, Path(tmp, "prometheus.log").read_text(errors="replace")[-3000:]
        finally:
            if prometheus is not None:
                prometheus.terminate()
                try:
                    prometheus.wait(15)
                except subprocess.TimeoutExpired:
                    prometheus.kill()
                    prometheus.wait()
            server.stop()
