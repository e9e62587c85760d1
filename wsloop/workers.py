"""Several worker processes on one port, each with its own reactor, under a supervisor.

:class:`Supervisor` forks ``count`` workers serving the same port (``SO_REUSEPORT`` where there
is one), restarts those that die or stop sending heartbeats, and stops them all on SIGTERM or
SIGINT; :func:`run` is the command line's ``--workers``. Needs ``os.fork`` (POSIX). With
``metrics``, the supervisor serves one Prometheus endpoint summing the workers' figures, which it
asks each worker for at scrape time (:meth:`Supervisor.stats`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import MetricsServer
from .servers.running import host_family, listen_url
from .stats import Stats, combine, live_stats
from .websocket import WebSocket

if TYPE_CHECKING:
    from .poller.reactor import Reactor

__all__ = ["Supervisor", "WorkerLink", "WorkerTarget", "reuse_port_supported", "run"]

logger = logging.getLogger("wsloop.workers")

#: What a worker runs: ``target(sock, ready, stop)`` serves on the listening socket ``sock``,
#: calls ``ready(url)`` once it is accepting, and returns once ``stop`` is set. ``ready`` is a
#: :class:`WorkerLink`: ``ready.beat_from(reactor)`` has the worker watched for hangs.
WorkerTarget = Callable[[socket.socket, Callable[[str], None], threading.Event], None]

#: Default seconds without a heartbeat after which a worker is deemed hung (``worker_timeout``).
DEFAULT_WORKER_TIMEOUT = 10.0

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def reuse_port_supported() -> bool:
    """Whether ``SO_REUSEPORT`` spreads connections over the sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


@dataclass
class _Worker:
    slot: int
    pid: int
    started: float
    ready: bool = False
    beat_fd: int = -1  # the read end of its heartbeat pipe (-1: not watched)
    last_beat: float | None = None  # when its last heartbeat came (None: none yet)
    killed_at: float | None = None  # when it was sent SIGTERM for being hung
    sigkilled: bool = False
    stats_sock: socket.socket | None = None  # the supervisor's end of its stats line
    last_stats: Stats | None = None  # what it answered last


class WorkerLink:
    """A worker's line to its supervisor, given to its target as ``ready``: call it with the URL
    once accepting; :meth:`beat_from` a reactor to send heartbeats from its loop."""

    def __init__(self, pid: int, ready_fd: int, beat_fd: int, interval: float) -> None:
        self.pid = pid
        self._ready_fd = ready_fd
        self._beat_fd = beat_fd
        #: Seconds between heartbeats.
        self.interval = interval

    def __call__(self, url: str) -> None:
        os.write(self._ready_fd, f"{self.pid} {url}\n".encode())

    def beat(self) -> None:
        """Send one heartbeat (never blocks: dropped if the pipe is full)."""
        if self._beat_fd < 0:
            return
        try:
            os.write(self._beat_fd, b".")
        except (BlockingIOError, InterruptedError):
            pass  # the supervisor has not read the earlier ones yet: it knows we are alive
        except OSError:
            self._beat_fd = -1  # the supervisor is gone

    def beat_from(self, reactor: Reactor) -> None:
        """Send a heartbeat every :attr:`interval` seconds from a timer of ``reactor``'s loop: a
        handler that blocks the loop stops them, and the supervisor replaces the worker."""
        if self._beat_fd < 0:
            return  # not watched (worker_timeout 0)

        def tick() -> None:
            self.beat()
            reactor.call_later(self.interval, tick)

        reactor.call_soon_threadsafe(tick)


class Supervisor:
    """Run ``count`` worker processes serving ``host:port``; see the module docstring.

    :param target: what each worker runs (:data:`WorkerTarget`), in the forked child.
    :param reuse_port: one ``SO_REUSEPORT`` socket per worker (True), one socket shared by all
        (False), or whichever the platform supports best (None).
    :param startup_timeout: seconds every worker has to report ready at start.
    :param stop_timeout: seconds workers have to finish after SIGTERM before being killed.
    :param min_uptime: a worker that dies sooner after its start is restarted only after a
        delay that doubles each time (from 0.1 s); after ``max_quick_deaths`` such deaths in a
        row the supervisor gives up.
    :param worker_timeout: seconds without a heartbeat after which a worker that has sent
        heartbeats (its target called ``ready.beat_from(reactor)``, as :func:`run`'s does) is
        deemed hung: logged, sent SIGTERM, SIGKILL ``kill_grace`` seconds later, restarted.
        0 disables the watch (no heartbeat pipe is made).
    :param kill_grace: seconds a hung worker has between SIGTERM and SIGKILL.
    :param metrics: serve the workers' figures summed (:meth:`stats`) as Prometheus metrics on
        this address (``"PORT"`` or ``"HOST:PORT"``, host 127.0.0.1 by default; needs
        ``wsloop[metrics]``) while :meth:`run` runs.
    """

    def __init__(
        self,
        count: int,
        host: str,
        port: int,
        target: WorkerTarget,
        *,
        reuse_port: bool | None = None,
        backlog: int = 1024,
        startup_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        min_uptime: float = 2.0,
        max_quick_deaths: int = 5,
        worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
        kill_grace: float = 2.0,
        metrics: str | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        if worker_timeout < 0:
            raise ValueError("worker_timeout is 0 (no watch) or a number of seconds")
        if not hasattr(os, "fork"):
            raise RuntimeError("worker processes need os.fork (POSIX)")
        self.count = count
        self.host = host
        self.target = target
        self.reuse_port = reuse_port_supported() if reuse_port is None else reuse_port
        self.backlog = backlog
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.min_uptime = min_uptime
        self.max_quick_deaths = max_quick_deaths
        self.worker_timeout = worker_timeout
        self.kill_grace = kill_grace
        self.metrics = metrics
        #: The metrics server while :meth:`run` runs with ``metrics``.
        self.metrics_server: MetricsServer | None = None
        self._stats_lock = threading.Lock()
        self._retired = Stats()  # the counts of workers that have ended, as last seen
        #: Seconds between a worker's heartbeats.
        self.beat_interval = min(1.0, worker_timeout / 4)
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self._beats: dict[int, _Worker] = {}  # heartbeat pipe's read end -> worker
        self._poll: Any = None  # select.poll(): no fd of its own to leak into the workers
        self._pending: dict[int, float] = {}  # slot -> when to start it
        self._quick_deaths = 0
        self._stop_signal: int | None = None
        self._stopping = False  # stopping the workers: their exits are expected
        self._ready_r = self._ready_w = -1
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._ready_buffer = b""
        #: The URL the workers report (``wss://`` when they serve TLS).
        self.worker_url = ""
        # The supervisor's socket: with SO_REUSEPORT it is bound but never listens (it reserves
        # the port, and the workers' sockets join it); otherwise it is the listening socket itself.
        self.sock = self._bind(port)
        self.port: int = self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        return listen_url((self.host, self.port))

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids, by slot."""
        return [w.pid for w in sorted(self.workers.values(), key=lambda w: w.slot)]

    # ------------------------------------------------------------ sockets

    def _family(self) -> socket.AddressFamily:
        return host_family(self.host)

    def _bind(self, port: int) -> socket.socket:
        if not self.reuse_port:
            return socket.create_server((self.host, port), family=self._family(), backlog=self.backlog)
        sock = socket.socket(self._family(), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _worker_socket(self) -> socket.socket:
        if not self.reuse_port:
            return self.sock
        return socket.create_server(
            (self.host, self.port), family=self._family(), backlog=self.backlog, reuse_port=True
        )

    # ------------------------------------------------------------ running

    def run(self, ready: Callable[[str], None] | None = None) -> int:
        """Start the workers, call ``ready(url)`` once all of them are accepting, supervise until
        SIGTERM/SIGINT (or :meth:`stop`), stop them; 0, or 1 if the workers could not be kept
        running. From the main thread (it installs signal handlers)."""
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poll = select.poll()
        self._poll.register(self._wake_r, select.POLLIN)
        self._poll.register(self._ready_r, select.POLLIN)
        previous = {sig: signal.signal(sig, self._on_stop_signal) for sig in _STOP_SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore_signal)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        code = 1
        try:
            if self.metrics is not None:
                from .metrics import serve_metrics

                self.metrics_server = serve_metrics(self.metrics, self.stats)
                logger.info("metrics on %s", self.metrics_server.url)
            code = self._supervise(ready)
        finally:
            if self.metrics_server is not None:
                self.metrics_server.close()
            self._stop_all()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._ready_r)
            os.close(self._ready_w)
            self._wake_r.close()
            self._wake_w.close()
            self.sock.close()
        return code

    def stop(self) -> None:
        """Ask :meth:`run` to stop the workers and return (as SIGTERM does)."""
        self._on_stop_signal(signal.SIGTERM, None)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
            logger.info("%s: stopping %d worker(s)", signal.Signals(signum).name, len(self.workers))
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    def _supervise(self, ready: Callable[[str], None] | None) -> int:
        for slot in range(self.count):
            self._start(slot)
        deadline = time.monotonic() + self.startup_timeout
        announced = False
        while self._stop_signal is None:
            if (
                not announced
                and len(self.workers) == self.count
                and all(w.ready for w in self.workers.values())
            ):
                announced = True
                if ready is not None:
                    ready(self.worker_url or self.url)
            now = time.monotonic()
            if not announced and now > deadline:
                logger.error("workers not ready within %.0f s; giving up", self.startup_timeout)
                return 1
            if self._quick_deaths >= self.max_quick_deaths:
                logger.error(
                    "workers keep dying right after their start (%d in a row); giving up", self._quick_deaths
                )
                return 1
            for slot, when in list(self._pending.items()):
                if when <= now:
                    del self._pending[slot]
                    self._start(slot)
            timeout = min([t for t in self._pending.values()], default=now + 1.0) - now
            if not announced:
                timeout = min(timeout, deadline - now)
            if self.worker_timeout:
                timeout = min(timeout, self.beat_interval)
            self._wait(max(0.0, timeout))
            self._reap()
            if self.worker_timeout:
                self._check_heartbeats()
        return 0

    def stats(self) -> Stats:
        """The workers' figures summed (:func:`wsloop.stats.combine`), asked of each running
        worker now (one that does not answer within a second counts with its last answer), plus
        the counts of the workers that have ended as last seen. Any thread."""
        with self._stats_lock:
            snapshots = [self._retired]
            for worker in list(self.workers.values()):
                sock = worker.stats_sock
                if sock is None:
                    continue
                answer = _ask_stats(sock, 1.0)
                if answer is not None:
                    worker.last_stats = answer
                    snapshots.append(answer)
                elif worker.last_stats is not None:
                    snapshots.append(worker.last_stats)
            return combine(snapshots)

    def _retire(self, worker: _Worker) -> None:
        """A worker has ended: keep its counts (as last seen), drop its states, close its line."""
        with self._stats_lock:
            last = worker.last_stats
            if last is not None:
                counts = replace(
                    last,
                    connections=0,
                    pending_handshakes=0,
                    buffered_bytes=0,
                    buffered_bytes_max=0,
                    loop_lag=0.0,
                )
                self._retired = combine([self._retired, counts])
                worker.last_stats = None
            if worker.stats_sock is not None:
                worker.stats_sock.close()
                worker.stats_sock = None

    def _check_heartbeats(self) -> None:
        """Kill the workers that stopped sending heartbeats: SIGTERM, then SIGKILL after
        ``kill_grace`` (they are restarted once reaped)."""
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.killed_at is not None:
                if not worker.sigkilled and now - worker.killed_at >= self.kill_grace:
                    worker.sigkilled = True
                    logger.error(
                        "worker %d (pid %d) still running %.1f s after SIGTERM: SIGKILL",
                        worker.slot,
                        worker.pid,
                        now - worker.killed_at,
                    )
                    _signal(worker.pid, signal.SIGKILL)
            elif worker.last_beat is not None and now - worker.last_beat > self.worker_timeout:
                worker.killed_at = now
                logger.error(
                    "worker %d (pid %d) sent no heartbeat for %.1f s (worker_timeout %g s): its"
                    " reactor is blocked; killing it (SIGTERM, SIGKILL after %g s) and starting a"
                    " new one",
                    worker.slot,
                    worker.pid,
                    now - worker.last_beat,
                    self.worker_timeout,
                    self.kill_grace,
                )
                _signal(worker.pid, signal.SIGTERM)

    def _wait(self, timeout: float) -> None:
        assert self._wake_r is not None
        try:
            events = self._poll.poll(timeout * 1000.0)
        except InterruptedError:
            return
        for fd, _ in events:
            if fd == self._wake_r.fileno():
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
            elif fd == self._ready_r:
                self._read_ready()
            else:
                self._read_beats(fd)

    def _read_beats(self, fd: int) -> None:
        worker = self._beats.get(fd)
        if worker is None:
            return
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:  # the worker is gone: it is reaped on SIGCHLD
                    self._forget_beats(worker)
                    return
                worker.last_beat = time.monotonic()
                if len(chunk) < 4096:
                    return
        except (BlockingIOError, InterruptedError):
            pass

    def _forget_beats(self, worker: _Worker) -> None:
        if worker.beat_fd >= 0:
            self._poll.unregister(worker.beat_fd)
            del self._beats[worker.beat_fd]
            os.close(worker.beat_fd)
            worker.beat_fd = -1

    def _read_ready(self) -> None:
        try:
            while True:
                chunk = os.read(self._ready_r, 4096)
                if not chunk:
                    break
                self._ready_buffer += chunk
        except (BlockingIOError, InterruptedError):
            pass
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        for line in lines:
            pid_text, _, url = line.decode("utf-8", "replace").partition(" ")
            try:
                pid = int(pid_text)
            except ValueError:
                continue
            if url:
                self.worker_url = url
            worker = self.workers.get(pid)
            if worker is not None and not worker.ready:
                worker.ready = True
                logger.info("worker %d ready (pid %d)", worker.slot, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._forget_beats(worker)
            self._retire(worker)
            how = _how_it_ended(status)
            if self._stopping or self._stop_signal is not None:
                logger.info("worker %d (pid %d) %s", worker.slot, pid, how)
                continue
            uptime = time.monotonic() - worker.started
            if uptime < self.min_uptime:
                self._quick_deaths += 1
                delay = min(0.1 * 2 ** (self._quick_deaths - 1), 5.0)
            else:
                self._quick_deaths = 0
                delay = 0.0
            logger.warning(
                "worker %d (pid %d) %s after %.1f s; starting a new one%s",
                worker.slot,
                pid,
                how,
                uptime,
                f" in {delay:.1f} s" if delay else "",
            )
            self._pending[worker.slot] = time.monotonic() + delay

    def _start(self, slot: int) -> None:
        """Fork the worker of ``slot``; in the child, run the target and exit."""
        sock = self._worker_socket()
        stats_sock, worker_stats_sock = socket.socketpair()
        beat_r = beat_w = -1
        if self.worker_timeout:
            beat_r, beat_w = os.pipe()
            os.set_blocking(beat_r, False)
            os.set_blocking(beat_w, False)
        blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        # Signals stay blocked across the fork until the child has its own handlers: a SIGTERM
        # sent to a worker that has just started is then handled by the worker, not lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            supervisor = os.getpid()
            pid = os.fork()
            if pid == 0:
                if beat_r >= 0:
                    os.close(beat_r)
                stats_sock.close()
                self._child(slot, sock, supervisor, beat_w, worker_stats_sock)  # never returns
        except BaseException:
            if beat_r >= 0:
                os.close(beat_r)
            stats_sock.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)  # the parent's (the child exits)
            if beat_w >= 0:
                os.close(beat_w)  # the child's end
            if sock is not self.sock:
                sock.close()  # the worker's own SO_REUSEPORT socket: the child has it
            worker_stats_sock.close()
        worker = self.workers[pid] = _Worker(
            slot, pid, time.monotonic(), beat_fd=beat_r, stats_sock=stats_sock
        )
        if beat_r >= 0:
            self._beats[beat_r] = worker
            self._poll.register(beat_r, select.POLLIN)

    def _child(
        self, slot: int, sock: socket.socket, supervisor: int, beat_fd: int, stats_sock: socket.socket
    ) -> None:
        code = 1
        try:
            stop = threading.Event()

            def _stop(signum: int, frame: FrameType | None) -> None:
                if not stop.is_set():
                    logger.info("worker %d: %s, closing connections", slot, signal.Signals(signum).name)
                stop.set()

            signal.set_wakeup_fd(-1)
            for sig in _STOP_SIGNALS:
                signal.signal(sig, _stop)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _stop_with_parent(supervisor)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
            os.close(self._ready_r)
            if self._wake_r is not None and self._wake_w is not None:
                self._wake_r.close()
                self._wake_w.close()
            if sock is not self.sock:
                self.sock.close()  # the supervisor's port reservation
            for fd in self._beats:  # the other workers' heartbeat pipes
                os.close(fd)
            for other in self.workers.values():  # their stats lines
                if other.stats_sock is not None:
                    other.stats_sock.close()
            if self.metrics_server is not None:  # the supervisor's metrics port
                self.metrics_server.httpd.socket.close()
            threading.Thread(
                target=_answer_stats, args=(stats_sock,), name="wsloop-stats", daemon=True
            ).start()
            ready = WorkerLink(os.getpid(), self._ready_w, beat_fd, self.beat_interval)
            self.target(sock, ready, stop)
            code = 0
        except BaseException:
            logger.exception("worker %d failed", slot)
        finally:
            logging.shutdown()
            os._exit(code)

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait up to ``stop_timeout``, then SIGKILL what is left."""
        self._stopping = True
        self._pending.clear()
        for pid in list(self.workers):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self.workers and time.monotonic() < deadline:
            self._wait(min(0.2, max(0.0, deadline - time.monotonic())))
            self._reap()
        for pid in list(self.workers):
            logger.warning(
                "worker %d (pid %d) still running after %.0f s: killed",
                self.workers[pid].slot,
                pid,
                self.stop_timeout,
            )
            _signal(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._forget_beats(worker)
                self._retire(worker)
        for worker in list(self._beats.values()):
            self._forget_beats(worker)


def _answer_stats(sock: socket.socket) -> None:
    """A worker's thread: answer each byte the supervisor sends with this process's figures
    (:func:`wsloop.stats.live_stats`) as one line of JSON, until the supervisor is gone."""
    try:
        while sock.recv(1):
            sock.sendall(json.dumps(live_stats().as_dict()).encode() + b"\n")
    except OSError:
        pass
    finally:
        sock.close()


def _ask_stats(sock: socket.socket, timeout: float) -> Stats | None:
    """One worker's figures over its stats line (None if it does not answer in time)."""
    try:
        sock.setblocking(False)
        try:
            while sock.recv(65536):  # a late answer to an earlier question
                pass
        except (BlockingIOError, InterruptedError):
            pass
        sock.settimeout(timeout)
        sock.sendall(b"?")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        return Stats.from_dict(json.loads(data))
    except (OSError, ValueError):
        return None


def _stop_with_parent(supervisor: int) -> None:
    """Linux: have the kernel send SIGTERM to this worker if the supervisor dies (even by
    SIGKILL), so no orphan keeps serving; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    pass  # a handler, so that SIGCHLD wakes the supervisor through its wakeup fd


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {os.WEXITSTATUS(status)}"


def run(
    workers: int,
    host: str,
    port: int,
    handler_cls: type[WebSocket],
    *,
    ready: Callable[[str], None] | None = None,
    reuse_port: bool | None = None,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    broker_options: dict[str, Any] | None = None,
    metrics: str | None = None,
    **options: Any,
) -> int:
    """Serve ``handler_cls`` on ``host:port`` from ``workers`` processes with the standalone
    server until SIGTERM/SIGINT; 0 on a requested stop. ``options`` go to
    :class:`wsloop.servers.standalone.WebSocketServer` as :func:`wsloop.servers.standalone.serve`
    takes them (``broker="redis://host:port/db"`` joins the workers, ``heartbeat_freq``,
    ``max_message_size``, ``compression``, ``max_connections``, ...). Each worker's reactor sends
    heartbeats: one silent for ``worker_timeout`` seconds (0: never) is killed and replaced.
    ``broker_options`` go to the :class:`~wsloop.brokers.RedisBroker` each worker makes
    (``max_publish_size``, ...). ``metrics``: serve the workers' figures summed on this address
    (:class:`Supervisor`). From the main thread."""

    def target(sock: socket.socket, worker_ready: Callable[[str], None], stop: threading.Event) -> None:
        _serve_worker(host, port, handler_cls, sock, worker_ready, stop, dict(options), broker_options or {})

    supervisor = Supervisor(
        workers, host, port, target, reuse_port=reuse_port, worker_timeout=worker_timeout, metrics=metrics
    )
    return supervisor.run(ready)


def _serve_worker(
    host: str,
    port: int,
    handler_cls: type[WebSocket],
    sock: socket.socket,
    ready: Callable[[str], None],
    stop: threading.Event,
    options: dict[str, Any],
    broker_options: dict[str, Any],
) -> None:
    """``standalone.serve()``, its reactor sending heartbeats to the supervisor."""
    from .brokers import make_broker
    from .poller.reactor import Reactor
    from .servers.standalone import WebSocketServer, serve

    def started(server: WebSocketServer) -> None:
        if isinstance(ready, WorkerLink) and isinstance(server.manager, Reactor):
            ready.beat_from(server.manager)

    broker = options.pop("broker", None)
    joined = make_broker(broker, **broker_options)  # made here to take broker_options
    try:
        serve(
            host,
            port,
            handler_cls,
            ready=ready,
            stop=stop,
            sock=sock,
            broker=joined,
            started=started,
            **options,
        )
    finally:
        if joined is not None and joined is not broker:
            joined.close()
