"""``python -m wsloop serve --workers N``: worker processes on one port under a supervisor.

Real processes, real sockets, a real ``redis-server`` joining the workers' broadcasts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.handlers import ScaleWebSocket
from tests.support.redisproc import RedisServer, redis_fixture
from tests.support.serverproc import LoggedServer
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.messaging import CloseControlMessage, Message
from wsloop.workers import reuse_port_supported

HANDLER = "tests.support.handlers:ScaleWebSocket"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_fixture(tmp_path)


def worker_pids(server: LoggedServer, count: int) -> set[int]:
    """The pids of the first ``count`` workers that reported ready (waited for)."""
    pattern = r"wsloop\.workers INFO worker \d+ ready \(pid (\d+)\)"
    wait_for(lambda: len(server.matches(pattern)) >= count, f"{count} workers ready", timeout=30.0)
    return {int(m.group(1)) for m in server.matches(pattern)[:count]}


def pid_of(client: Client) -> int:
    return int(client.echo("pid").data)


def expect_text(client: Client, text: str) -> None:
    message = client.recv()
    assert not isinstance(message, CloseControlMessage), f"closed ({message.code}) instead of {text!r}"
    assert message.data == text.encode(), f"got {message.data!r}, expected {text!r}"


def broadcast_from(sender: Client, clients: list[Client], text: str) -> None:
    """``sender`` has its worker broadcast ``text``; every client's next message must be it."""
    sender.send(f"broadcast:{text}")
    for client in clients:
        expect_text(client, text)


@pytest.mark.timeout(120)
def test_two_workers_echo_broadcast_once_and_survive_a_killed_worker(redis_server: RedisServer) -> None:
    server = LoggedServer("--workers", "2", "--broker", redis_server.url, "--handler", HANDLER)
    clients: list[Client] = []
    try:
        pids = worker_pids(server, 2)
        assert len(pids) == 2, server.output
        # 200 clients, each echoed; the kernel spreads them over both workers.
        clients = [Client(server.port) for _ in range(200)]
        for i, client in enumerate(clients):
            assert client.echo(f"hello {i}").data == f"hello {i}".encode()
        served_by = {client: pid_of(client) for client in clients}
        assert set(served_by.values()) == pids, "both workers serve clients"
        x, y = sorted(pids)
        on_x = [c for c in clients if served_by[c] == x]
        on_y = [c for c in clients if served_by[c] == y]

        # Exactly once: broadcasts from one worker, then the other, then the first again. A copy
        # delivered twice (locally and again through Redis) would come before the next broadcast
        # of the other worker on the same channel, and break the expected sequence.
        broadcast_from(on_x[0], clients, "one")
        broadcast_from(on_y[0], clients, "two")
        broadcast_from(on_x[1], clients, "three")
        for client in clients:
            assert client.echo("after").data == b"after"

        # SIGKILL one worker: only its connections are lost.
        mark = len(server.lines)
        os.kill(x, signal.SIGKILL)
        for client in on_x:
            assert client.wait_eof(), "the killed worker's connections end"
            client.sock.close()
        for client in on_y:
            assert client.echo("still here").data == b"still here"
        server.wait_for_line(rf"worker \d+ \(pid {x}\) was killed by signal 9 \(SIGKILL\)", after=mark)
        new = int(server.wait_for_line(r"worker \d+ ready \(pid (\d+)\)", after=mark).group(1))
        assert new not in pids

        # New clients are served, by the surviving worker and the new one.
        fresh = [Client(server.port) for _ in range(40)]
        clients = on_y + fresh
        for i, client in enumerate(fresh):
            assert client.echo(f"new {i}").data == f"new {i}".encode()
        fresh_pids = {pid_of(client) for client in fresh}
        assert fresh_pids <= {y, new}
        assert new in fresh_pids, "the restarted worker accepts connections"
        on_new = next(c for c in fresh if pid_of(c) == new)
        # The restarted worker rejoined the broker: its broadcast reaches everyone, once.
        broadcast_from(on_new, clients, "four")
        broadcast_from(on_y[0], clients, "five")

        # A graceful stop of all: every client gets 1001, the supervisor exits 0.
        server.send_signal(signal.SIGTERM)
        for client in clients:
            assert client.recv_close().code == 1001
            client.flush()
    finally:
        code = server.stop()
        for client in clients:
            client.sock.close()
    assert code == 0, server.output
    assert "exited with status 0" in server.output


def test_one_worker_is_todays_server() -> None:
    """``--workers 1`` (the default): no supervisor, the process serves itself."""
    server = LoggedServer("--workers", "1", "--handler", HANDLER)
    try:
        with Client(server.port) as client:
            assert pid_of(client) == server.proc.pid
    finally:
        assert server.stop() == 0
    assert "wsloop.workers" not in server.output


@pytest.mark.parametrize("reuse_port", [False, True])
def test_workers_api_shared_socket_and_reuse_port(reuse_port: bool) -> None:
    """``wsloop.workers.run()``: one socket inherited by every worker, or SO_REUSEPORT."""
    if reuse_port and not reuse_port_supported():
        pytest.skip("SO_REUSEPORT does not balance connections on this platform")
    script = (
        "import logging, sys\n"
        "from wsloop.workers import run\n"
        "from tests.support.handlers import ScaleWebSocket\n"
        "logging.basicConfig(level='INFO', format='%(name)s %(levelname)s %(message)s')\n"
        "sys.exit(run(2, '127.0.0.1', 0, ScaleWebSocket, reuse_port=" + repr(reuse_port) + ",\n"
        "    ready=lambda url: logging.getLogger('wsloop.cli').info('serving on %s', url)))\n"
    )
    server = LoggedServer.command([sys.executable, "-c", script], cwd=REPO)
    try:
        port = int(server.wait_for_line(r"serving on ws://127\.0\.0\.1:(\d+)/").group(1))
        pids = worker_pids(server, 2)
        clients = [Client(port) for _ in range(40)]
        seen = {pid_of(client) for client in clients}
        assert seen <= pids
        if reuse_port:
            assert seen == pids, "SO_REUSEPORT spreads connections over both workers"
        server.send_signal(signal.SIGINT)
        for client in clients:
            assert client.recv_close().code == 1001
            client.close()
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2", "--server", "wsgiref"], "standalone server only"),
        (["--broker", "redis://127.0.0.1:1/0", "--poller", "threaded"], "selectors poller"),
        (["--broker", "mqtt://somewhere"], "--broker"),
        (["--workers", "0"], "at least 1"),
    ],
)
def test_worker_and_broker_usage_errors(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_supervisor_gives_up_on_workers_that_keep_dying() -> None:
    """A worker that fails at once is restarted with a growing delay; 5 in a row: exit 1."""
    script = (
        "import logging, sys\n"
        "from wsloop.workers import Supervisor\n"
        "logging.basicConfig(level='INFO', format='%(name)s %(levelname)s %(message)s')\n"
        "def target(sock, ready, stop):\n"
        "    raise RuntimeError('broken worker (test)')\n"
        "sys.exit(Supervisor(2, '127.0.0.1', 0, target).run())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 1, done.stderr
    assert "broken worker (test)" in done.stderr  # the worker's traceback is logged
    assert "exited with status 1" in done.stderr
    assert "starting a new one in 0.1 s" in done.stderr
    assert "giving up" in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_stop_when_the_supervisor_is_killed() -> None:
    server = LoggedServer("--workers", "2", "--handler", HANDLER)
    try:
        pids = worker_pids(server, 2)
        clients = [Client(server.port) for _ in range(10)]
        for client in clients:
            assert pid_of(client) in pids
        server.proc.kill()  # SIGKILL: no chance to stop the workers itself
        for client in clients:
            assert client.recv_close().code == 1001  # each worker got SIGTERM from the kernel
            client.close()

        def gone() -> bool:
            return not any(os.path.exists(f"/proc/{pid}") for pid in pids)

        wait_for(gone, "both workers exited", timeout=30.0)
    finally:
        server.stop()


class HangingWebSocket(ScaleWebSocket):
    """ScaleWebSocket, but ``hang`` blocks the reactor for good (a handler stuck in a call)."""

    def received_message(self, message: Message) -> None:
        if message.is_text and str(message) == "hang":
            while True:
                time.sleep(3600)
        super().received_message(message)


HANGING = "tests.test_workers:HangingWebSocket"


def one_client_per_worker(port: int, pids: set[int], clients: list[Client]) -> dict[int, Client]:
    """A client served by each worker (SO_REUSEPORT spreads new connections; bounded tries)."""
    by_pid: dict[int, Client] = {}
    for _ in range(200):
        client = Client(port)
        clients.append(client)
        by_pid.setdefault(pid_of(client), client)
        if set(by_pid) == pids:
            return by_pid
    raise AssertionError(f"not every worker got a client: {sorted(by_pid)} of {sorted(pids)}")


@pytest.mark.timeout(180)
def test_hung_workers_are_killed_and_replaced() -> None:
    """Both workers' reactors blocked by a handler: the supervisor notices the missing heartbeats
    (--worker-timeout 2), logs, kills and restarts them, and new upgrades are answered again."""
    server = LoggedServer("--workers", "2", "--worker-timeout", "2", "--handler", HANGING)
    clients: list[Client] = []
    try:
        pids = worker_pids(server, 2)
        by_pid = one_client_per_worker(server.port, pids, clients)
        time.sleep(3.0)  # longer than --worker-timeout: healthy idle workers keep beating
        assert "sent no heartbeat" not in server.output, server.output

        mark = len(server.lines)
        hung_at = time.monotonic()
        for client in by_pid.values():
            client.send("hang")
        for pid in pids:
            server.wait_for_line(rf"worker \d+ \(pid {pid}\) sent no heartbeat for \d", after=mark)
            server.wait_for_line(
                rf"worker \d+ \(pid {pid}\) (was killed by signal|exited with status).*starting a new one",
                after=mark,
            )
        ready = r"worker \d+ ready \(pid (\d+)\)"
        wait_for(lambda: len(server.matches(ready, after=mark)) >= 2, "two new workers ready", timeout=30.0)
        new_pids = {int(m.group(1)) for m in server.matches(ready, after=mark)}
        assert len(new_pids) == 2 and not new_pids & pids

        fresh = [Client(server.port) for _ in range(20)]
        clients += fresh
        for i, client in enumerate(fresh):
            assert client.echo(f"again {i}").data == f"again {i}".encode()
        answered_after = time.monotonic() - hung_at
        assert {pid_of(client) for client in fresh} <= new_pids
        # 2 s without heartbeats + 2 s of SIGTERM grace + a fork: far below this bound.
        assert answered_after < 60.0, answered_after
        print(f"hung at t=0; 20 of 20 new upgrades answered by t={answered_after:.1f} s")
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"hung worker {pid} still runs"
    finally:
        for client in clients:
            client.sock.close()
        code = server.stop()
    assert code == 0, server.output


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.timeout(120)
def test_worker_timeout_zero_never_kills_a_hung_worker() -> None:
    server = LoggedServer("--workers", "2", "--worker-timeout", "0", "--handler", HANGING)
    clients: list[Client] = []
    try:
        pids = worker_pids(server, 2)
        by_pid = one_client_per_worker(server.port, pids, clients)
        hung, healthy = sorted(pids)
        by_pid[hung].send("hang")
        time.sleep(4.0)
        assert "sent no heartbeat" not in server.output, server.output
        assert os.path.exists(f"/proc/{hung}") and not _is_zombie(hung)
        assert by_pid[healthy].echo("still here").data == b"still here"
    finally:
        for client in clients:
            client.sock.close()
        server.stop(timeout=30)


def test_worker_timeout_must_not_be_negative() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsloop", "serve", "--workers", "2", "--worker-timeout", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "--worker-timeout" in result.stderr
