"""ws4py's ``manager`` module on wsloop: the pollers over ``selectors`` on real sockets,
``WebSocketManager(poller=...)`` serving real clients, and the recipe of ws4py's manager
docstring (clients whose ``handshake_ok()`` adds them to a manager) against a wsloop echo server
in a child process."""

from __future__ import annotations

import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.serverproc import ServerProcess
from tests.support.waiting import eventually
from tests.support.wsclient import Client
from wsloop.client import WebSocketBaseClient
from wsloop.manager import EPollPoller, KQueuePoller, SelectPoller, WebSocketManager
from wsloop.messaging import Message
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket, WebSocket

REPO = Path(__file__).resolve().parent.parent

POLLERS = [
    pytest.param(SelectPoller, selectors.SelectSelector, id="select"),
    pytest.param(
        EPollPoller,
        getattr(selectors, "EpollSelector", None),
        id="epoll",
        marks=pytest.mark.skipif(not hasattr(select, "epoll"), reason="no epoll here"),
    ),
    pytest.param(
        KQueuePoller,
        getattr(selectors, "KqueueSelector", None),
        id="kqueue",
        marks=pytest.mark.skipif(not hasattr(select, "kqueue"), reason="no kqueue here"),
    ),
]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ServerProcess]:
    server = ServerProcess()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def manager() -> Iterator[WebSocketManager]:
    managers: list[WebSocketManager] = []

    def make(**kwargs: object) -> WebSocketManager:
        m = WebSocketManager(**kwargs)
        managers.append(m)
        return m

    yield make  # type: ignore[misc]
    for m in managers:
        m.stop(timeout=2)


# ------------------------------------------------------------------ pollers


@pytest.mark.parametrize("poller_cls, selector_cls", POLLERS)
def test_poller_reports_readable_sockets(poller_cls: type[SelectPoller], selector_cls: type) -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    poller = poller_cls(timeout=0.05)
    try:
        assert isinstance(poller.selector, selector_cls)
        assert poller.timeout == 0.05
        assert list(poller.poll()) == []  # nothing registered: waits, returns nothing
        poller.register(a.fileno())
        poller.register(a.fileno())  # twice: ignored, as ws4py's pollers do
        poller.register(c)
        assert list(poller.poll()) == []  # nothing to read yet
        b.send(b"x")
        assert eventually(lambda: list(poller.poll()) == [a.fileno()], 5)
        d.send(b"y")
        assert sorted(poller.poll()) == sorted([a.fileno(), c.fileno()])
        poller.unregister(a.fileno())
        poller.unregister(a.fileno())  # not registered any more: ignored
        assert list(poller.poll()) == [c.fileno()]
    finally:
        poller.release()
        for s in (a, b, c, d):
            s.close()
    assert poller.selector.get_map() is None  # released: the selector is closed


def test_unavailable_pollers_refuse_to_be_made() -> None:
    for cls, call in ((EPollPoller, "epoll"), (KQueuePoller, "kqueue")):
        if not hasattr(select, call):
            with pytest.raises(NotImplementedError):
                cls()


# ---------------------------------------------------------- the manager


def test_manager_takes_ws4pys_poller_argument(manager: Callable[..., WebSocketManager]) -> None:
    poller = SelectPoller()
    m = manager(poller=poller, close_timeout=2.0)
    assert m.poller is poller and m._selector is poller.selector
    assert m.close_timeout == 2.0
    default = manager()
    assert default.poller is not None and default._selector is default.poller.selector
    with pytest.raises(TypeError):
        WebSocketManager(poller=SelectPoller(), selector=selectors.SelectSelector())
    with pytest.raises(TypeError):
        WebSocketManager(poller=object())


class Greeter(WebSocket):
    """Says which thread served it, then echoes."""

    def opened(self) -> None:
        self.send(str(threading.get_ident()))

    def received_message(self, message: Message) -> None:
        self.send(message.data, message.is_binary)


def test_manager_on_a_select_poller_serves_real_clients(manager: Callable[..., WebSocketManager]) -> None:
    poller = SelectPoller()
    m = manager(poller=poller)
    with WebSocketServer("127.0.0.1", 0, Greeter, manager=m) as server:
        m.start()
        clients = [Client(server.port) for _ in range(3)]
        try:
            idents = {client.recv().data for client in clients}
            assert m._thread is not None and idents == {str(m._thread.ident).encode()}  # m's thread
            assert eventually(lambda: len(m) == 3)
            # The manager's loop runs on the poller's select() selector: its sockets are there.
            registered = {key.fd for key in poller.selector.get_map().values()}
            served = m.websockets
            assert isinstance(served, dict) and len(served) == 3
            assert set(served) <= registered
            assert all(fd == ws.sock.fileno() for fd, ws in served.items() if ws.sock is not None)
            assert set(m) == set(served.values()) and all(ws in m for ws in m)
            for i, client in enumerate(clients):
                assert client.echo(f"hello {i}").data == f"hello {i}".encode()
            m.broadcast("to all")
            assert [client.recv().data for client in clients] == [b"to all"] * 3
        finally:
            for client in clients:
                client.close()
        assert eventually(lambda: len(m) == 0)


def test_manager_add_twice_is_ignored(manager: Callable[..., WebSocketManager]) -> None:
    m = manager()
    m.start()
    opened: list[int] = []

    class Counting(EchoWebSocket):
        def opened(self) -> None:
            opened.append(1)

    a, b = socket.socketpair()
    try:
        ws = Counting(a)
        m.add(ws)
        assert eventually(lambda: ws in m)
        m.add(ws)  # ws4py: a websocket already managed is left as it is
        time.sleep(0.1)
        assert opened == [1] and len(m) == 1
        m.remove(ws)
        assert eventually(lambda: ws not in m) and len(m) == 0
        assert a.fileno() != -1  # remove() does not close it
    finally:
        a.close()
        b.close()


# ------------------------------------------------ ws4py's docstring recipe


def test_the_ws4py_manager_docstring_recipe(
    echo_server: ServerProcess, manager: Callable[..., WebSocketManager]
) -> None:
    """ws4py/manager.py's example, ported by imports: each client's ``handshake_ok()`` adds it
    to ``m``; then ``m`` (its one thread) drives both, and ``m.broadcast()`` reaches both."""
    m = manager()
    handshakes: list[WebSocketBaseClient] = []
    received: list[tuple[WebSocketBaseClient, str, threading.Thread]] = []
    got = threading.Condition()

    class EchoClient(WebSocketBaseClient):
        def handshake_ok(self) -> None:
            handshakes.append(self)
            m.add(self)  # register the client once the handshake is done

        def received_message(self, msg: Message) -> None:
            with got:
                received.append((self, str(msg), threading.current_thread()))
                got.notify_all()

    m.start()
    clients = [EchoClient(echo_server.url), EchoClient(echo_server.url)]
    for client in clients:
        client.connect()
    assert handshakes == clients
    assert len(m) == 2  # counted at once; served (iterated, ``in``) once m's loop takes them
    assert eventually(lambda: set(m) == set(clients))
    m.broadcast("hello everyone")  # the clients send it; the echo server sends it back
    with got:
        assert got.wait_for(lambda: len(received) == 2, 10)
    assert {entry[0] for entry in received} == set(clients)
    assert {entry[1] for entry in received} == {"hello everyone"}
    manager_thread = m._thread
    assert manager_thread is not None
    assert all(entry[2] is manager_thread for entry in received)  # one thread, m's, for both
    assert all(client.reactor is m for client in clients)
    for client in clients:
        client.close()
    assert all(client.run_forever(10) for client in clients)
    assert eventually(lambda: len(m) == 0)


_NON_DAEMON_MANAGER = """
import threading, time
from wsloop.manager import WebSocketManager

m = WebSocketManager()
m.daemon = {daemon}
m.start()

def later():
    time.sleep(0.5)
    print("stopping", flush=True)
    m.stop()

threading.Thread(target=later, daemon=True).start()
print("main done", flush=True)
"""


@pytest.mark.parametrize("daemon", [False, True])
def test_manager_thread_surface(daemon: bool) -> None:
    """ws4py's manager was a ``threading.Thread``: ``name``, ``daemon`` (False: the program
    waits for the manager's thread), ``is_alive()``, ``ident``."""
    m = WebSocketManager()
    assert m.name == "WebSocketManager" and m.daemon is True
    assert not m.is_alive() and m.ident is None
    m.start()
    try:
        assert m.is_alive() and m._thread is not None
        assert m._thread.name == "WebSocketManager" and m.ident == m._thread.ident
    finally:
        m.stop(timeout=2)
    assert not m.is_alive()
    done = subprocess.run(
        [sys.executable, "-c", _NON_DAEMON_MANAGER.format(daemon=daemon)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "main done"
    assert ("stopping" in lines) is not daemon  # a non-daemon manager holds the exit until stopped
