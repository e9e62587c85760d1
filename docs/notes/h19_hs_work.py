"""N handshakes through ReactorAcceptor.on_read in process (callgrind workload).

A Reactor with _tid set to this thread, a WebSocketServer(..., manager=reactor) whose acceptor is
registered; loop of 100 x (socket, connect, sendall(REQUEST)), acceptor.on_read(), flush of the
reactor's dirty connections, each client's recv checked for 101. At the end len(reactor) == N.
"""
import socket, sys, threading
from wsloop.poller import Reactor
from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import WebSocket

class BenchWebSocket(WebSocket):
    compression = None
    def opened(self): pass
    def closed(self, code, reason=None): pass
    def received_data(self, data, binary): self.send(data, binary)

N = int(sys.argv[1])
LATE = len(sys.argv) > 2 and sys.argv[2] == 'late'
REQUEST = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
reactor = Reactor()
reactor._tid = threading.get_ident()
server = WebSocketServer("127.0.0.1", 0, BenchWebSocket, manager=reactor, compression=False, backlog=1024)
acc = server.acceptor
acc.listening = True
reactor.add_handler(server.sock, acc)
addr = server.sock.getsockname()
clients = []
done = 0
while done < N:
    batch = []
    for _ in range(min(100, N - done)):
        c = socket.socket()
        c.connect(addr)
        if not LATE:
            c.sendall(REQUEST)
        batch.append(c)
    if LATE:
        acc.on_read()  # accepted before their requests come (as in the bench)
        for c in batch:
            c.sendall(REQUEST)
    handlers = reactor._registry.handlers
    while len(reactor) < done + len(batch):
        for fd, mask in reactor._registry.poll(0):
            h = handlers.get(fd)
            if h is not None and type(h).__name__ != "Connection":
                h.on_read()
    for conn in list(reactor._dirty):
        conn.flush()
    reactor._dirty.clear()
    for c in batch:
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(4096)
        assert got.startswith(b"HTTP/1.1 101"), got
    clients.extend(batch)
    done += len(batch)
assert len(reactor) == N, len(reactor)
print("ok", len(reactor), flush=True)
import os; os._exit(0)
