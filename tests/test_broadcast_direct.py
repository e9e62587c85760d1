"""Broadcast writes each socket at once (issue 16, item 4) and large sends go out without a
concatenation copy (item 2's write half), over real loopback sockets: ordering with queued
output, channels, TLS, 16 MiB messages with and without compression. Slow and non-reading peers
and compressing connections are in tests/test_broadcast_shared.py, on both broadcast paths."""

from __future__ import annotations

import socket
import ssl
import tracemalloc
import zlib
from pathlib import Path

import pytest

from tests.support.broadcasting import Compressing, DeflateClient, Fan, check_numbered, pattern, serve
from tests.support.waiting import wait_for
from tests.support.wsclient import Client
from wsloop.handshake import client_request, new_key
from wsloop.poller import Reactor
from wsloop.protocol import Protocol

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


# ------------------------------------------------------------------------ broadcast


def test_a_broadcast_goes_out_at_once_to_every_idle_socket_in_order(fan: type[Fan]) -> None:
    """Nothing queued before it: each connection's frame is written by broadcast() itself, so
    right after it returns no connection holds it (before: every one did, until the turn's
    flush). Every client gets every message, in order."""
    server = serve()
    clients = [Client(server.port) for _ in range(30)]
    try:
        wait_for(lambda: len(fan.instances) == 30, timeout=20.0)
        count = 200
        clients[0].send(b"go %d" % count)
        for client in clients:
            check_numbered([client.recv().data for _ in range(count)], count, 64)
        assert len(fan.queued_after) == count
        assert all(n == 0 for after in fan.queued_after for n in after), "written at once"
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=1)


def test_a_channel_publish_goes_out_at_once_to_its_members(fan: type[Fan]) -> None:
    """The hub's fan-out shares the broadcast's code: members get it written at once, in order;
    a connection that did not join gets nothing."""
    server = serve()
    members = [Client(server.port) for _ in range(5)]
    outsider = Client(server.port)
    try:
        for client in members:
            assert client.echo(b"sub").data == b"joined"
        count = 50
        members[0].send(b"pub %d" % count)
        for client in members:
            check_numbered([client.recv().data for _ in range(count)], count, 64)
        assert all(n == 0 for after in fan.queued_after for n in after), "written at once"
        assert outsider.echo(b"ping").data == b"ping", "nothing published reached it"
    finally:
        for client in members + [outsider]:
            client.close()
        server.stop(timeout=1)


def test_output_queued_before_a_broadcast_goes_first(fan: type[Fan]) -> None:
    """A connection with output queued this turn gets the broadcast queued behind it: the
    sender sees its own message, then the broadcast, each time; the others the broadcasts."""
    server = serve()
    sender, other = Client(server.port), Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        sender.send(b"mix 100")
        expected = [m for i in range(100) for m in (b"own %d" % i, b"all %d" % i)]
        assert [sender.recv().data for _ in range(200)] == expected
        assert [other.recv().data for _ in range(100)] == [b"all %d" % i for i in range(100)]
    finally:
        sender.close()
        other.close()
        server.stop(timeout=1)


def test_output_queued_by_another_thread_keeps_its_place(fan: type[Fan]) -> None:
    """Sends and broadcasts from a thread that is not the reactor's, interleaved: each client
    gets them in the order they were made."""
    server = serve()
    reactor = server.manager
    assert isinstance(reactor, Reactor)
    a, b = Client(server.port), Client(server.port)
    try:
        wait_for(lambda: len(fan.instances) == 2, timeout=20.0)
        first = fan.instances[0]
        for i in range(300):
            first.send(b"own %d" % i, binary=True)
            reactor.broadcast(b"all %d" % i, binary=True)
        firsts_client = a if a.sock.getsockname()[1] == first.peer_address[1] else b
        others_client = b if firsts_client is a else a
        expected = [m for i in range(300) for m in (b"own %d" % i, b"all %d" % i)]
        assert [firsts_client.recv().data for _ in range(600)] == expected
        assert [others_client.recv().data for _ in range(300)] == [b"all %d" % i for i in range(300)]
    finally:
        a.close()
        b.close()
        server.stop(timeout=1)


def test_tls_clients_get_broadcasts_written_at_once_and_in_order(
    fan: type[Fan], tls_files: tuple[Path, Path], tls_contexts: Contexts
) -> None:
    """Over TLS the frame goes out at once too (an SSLSocket takes the whole frame or nothing),
    small and large broadcasts arrive whole and in order."""
    cert, key = tls_files
    server = serve(certfile=str(cert), keyfile=str(key))
    clients = [Client(server.port, ssl_context=tls_contexts[1]) for _ in range(5)]
    try:
        wait_for(lambda: len(fan.instances) == 5, timeout=20.0)
        count = 100
        clients[0].send(b"go %d" % count)
        for client in clients:
            check_numbered([client.recv().data for _ in range(count)], count, 64)
        assert all(n == 0 for after in fan.queued_after for n in after), "written at once"
        fan.size = 200_000  # larger than what one TLS write takes at once
        fan.queued_after.clear()
        clients[1].send(b"go 10")
        for client in clients:
            check_numbered([client.recv(timeout=30).data for _ in range(10)], 10, fan.size)
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=1)


# --------------------------------------------------------------------- large sends

BIG = 16 << 20


@pytest.mark.parametrize("sndbuf", [0, 8192])
def test_a_16_mib_message_arrives_intact(fan: type[Fan], sndbuf: int) -> None:
    """Binary and text, with the system's send buffer and a small one (many partial writes of
    the header and payload buffers)."""
    fan.sndbuf = sndbuf
    server = serve()
    client = Client(server.port, timeout=60)
    try:
        client.send(b"big %d" % BIG)
        data = client.recv(timeout=60).data
        assert len(data) == BIG and data == pattern(BIG)
        client.send(b"bigtext %d" % BIG)
        message = client.recv(timeout=60)
        assert message.is_text and message.data == ("é" * (BIG // 2)).encode()
    finally:
        client.close()
        server.stop(timeout=1)


def test_a_16_mib_message_arrives_intact_compressed(fan: type[Fan]) -> None:
    server = serve(Compressing)
    client = DeflateClient(server.port)
    try:
        client.send(b"big %d" % BIG)
        data = client.recv(timeout=60).data
        assert len(data) == BIG and data == pattern(BIG)
    finally:
        client.close()
        server.stop(timeout=1)


def test_a_large_send_is_queued_without_a_copy() -> None:
    """The server side writes a large bytes payload as its header and the caller's object;
    a str is encoded once: the memory a 16 MiB send takes is that one encoding at most."""
    written: list[bytes] = []
    stream = Protocol(write=written.append)
    payload = pattern(BIG)
    text = "é" * (BIG // 2)
    tracemalloc.start()
    try:
        stream.send(payload, binary=True)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 64 << 10, peak
        assert written[-1] is payload and len(written[-2]) == 10
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        stream.send(text)
        _, peak = tracemalloc.get_traced_memory()
        assert BIG <= peak - before < BIG + (64 << 10), peak - before
        assert written[-1] == text.encode()
    finally:
        tracemalloc.stop()


def test_a_large_client_send_writes_its_header_and_masked_payload_apart() -> None:
    """A client masks into a new buffer (unavoidable) and does not copy it again to put its
    header in front."""
    written: list[bytes] = []
    stream = Protocol(client=True, write=written.append)
    payload = pattern(BIG)
    stream.send(payload, binary=True)
    header, masked = written[-2:]
    assert len(header) == 14 and len(masked) == BIG
    server = Protocol(max_message_size=None)
    server.feed(header + masked)
    assert server.received[0].data == payload


def test_a_16_mib_send_through_the_reactor_copies_nothing(fan: type[Fan]) -> None:
    """Sent from another thread, read here into one reused buffer: the traced memory grows by
    far less than the payload while the reactor writes its header and the caller's bytes
    (sendmsg, then what is left of them as memoryviews)."""
    server = serve()
    reader = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        reader.sendall(client_request(f"127.0.0.1:{server.port}", "/", new_key()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += reader.recv(1)
        wait_for(lambda: len(fan.instances) == 1, timeout=20.0)
        ws = fan.instances[0]
        payload = pattern(BIG)
        buffer = bytearray(1 << 20)
        crc = 0
        total = 0
        tracemalloc.start()
        try:
            ws.send(payload, binary=True)
            while total < BIG + 10:
                n = reader.recv_into(buffer)
                assert n
                crc = zlib.crc32(memoryview(buffer)[:n], crc)
                total += n
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == BIG + 10
        expected = zlib.crc32(payload, zlib.crc32(b"\x82\x7f" + BIG.to_bytes(8, "big")))
        assert crc == expected, "header then payload, intact"
        assert peak < 4 << 20, peak
    finally:
        reader.close()
        server.stop(timeout=1)
