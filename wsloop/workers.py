"""Several worker processes on one port, each with its own reactor, under a supervisor.

One reactor thread uses one core; :class:`Supervisor` forks ``count`` workers that serve the same
port. On Linux each worker listens on a socket of its own bound with ``SO_REUSEPORT``, and the
kernel spreads new connections over them; elsewhere (or with ``reuse_port=False``) the supervisor
opens one listening socket before forking and every worker accepts from it.

The supervisor process does no serving: it starts the workers, waits for each to report it is
ready (through a pipe), restarts a worker that dies (logging how it ended; a worker that keeps
dying at start makes it give up, stop the others and exit 1), and on SIGTERM or SIGINT asks every
worker to stop (each closes its connections with 1001 and waits for the closing handshakes),
waits for them and returns 0. It holds no thread, so forking is safe.

Workers do not share memory: ``broadcast()`` and channels reach the clients of other workers only
through a broker joined by every worker (``broker="redis://..."``, see :mod:`wsloop.pubsub`); each
worker makes its own broker connection after the fork.

Needs ``os.fork`` (POSIX).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .websocket import WebSocket

__all__ = ["Supervisor", "WorkerTarget", "reuse_port_supported", "run"]

logger = logging.getLogger("wsloop.workers")

#: What a worker runs: ``target(sock, ready, stop)`` serves on the listening socket ``sock``,
#: calls ``ready(url)`` once it is accepting, and returns once ``stop`` is set.
WorkerTarget = Callable[[socket.socket, Callable[[str], None], threading.Event], None]

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
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker")
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
        self.workers: dict[int, _Worker] = {}  # pid -> worker
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids, by slot."""
        return [w.pid for w in sorted(self.workers.values(), key=lambda w: w.slot)]

    # ------------------------------------------------------------ sockets

    def _family(self) -> socket.AddressFamily:
        infos = socket.getaddrinfo(self.host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return infos[0][0]

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
        previous = {sig: signal.signal(sig, self._on_stop_signal) for sig in _STOP_SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore_signal)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        code = 1
        try:
            code = self._supervise(ready)
        finally:
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
            self._wait(max(0.0, timeout))
            self._reap()
        return 0

    def _wait(self, timeout: float) -> None:
        assert self._wake_r is not None
        try:
            watched: list[Any] = [self._wake_r, self._ready_r]
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        if self._ready_r in readable:
            self._read_ready()

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
        blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        # Signals stay blocked across the fork until the child has its own handlers: a SIGTERM
        # sent to a worker that has just started is then handled by the worker, not lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            supervisor = os.getpid()
            pid = os.fork()
            if pid == 0:
                self._child(slot, sock, supervisor)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)  # the parent's (the child exits)
        if sock is not self.sock:
            sock.close()  # the worker's own SO_REUSEPORT socket: the child has it
        self.workers[pid] = _Worker(slot, pid, time.monotonic())

    def _child(self, slot: int, sock: socket.socket, supervisor: int) -> None:
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
            ready_w = self._ready_w
            pid = os.getpid()

            def ready(url: str) -> None:
                os.write(ready_w, f"{pid} {url}\n".encode())

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
            self.workers.pop(pid, None)


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
    **options: Any,
) -> int:
    """Serve ``handler_cls`` on ``host:port`` from ``workers`` processes with the standalone
    server until SIGTERM/SIGINT; 0 on a requested stop. ``options`` go to
    :func:`wsloop.servers.standalone.serve` (``broker="redis://host:port/db"`` joins the workers,
    ``heartbeat_freq``, ``max_message_size``, ``compression``, ``max_connections``, ...).
    From the main thread."""
    from .servers import standalone

    def target(sock: socket.socket, worker_ready: Callable[[str], None], stop: threading.Event) -> None:
        standalone.serve(host, port, handler_cls, ready=worker_ready, stop=stop, sock=sock, **options)

    return Supervisor(workers, host, port, target, reuse_port=reuse_port).run(ready)
