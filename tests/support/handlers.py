"""Handler classes the CLI tests load with ``--handler``."""

import os
from collections.abc import Sequence

from wsloop.exc import HandshakeRejected
from wsloop.handshake import Request
from wsloop.messaging import Message
from wsloop.websocket import WebSocket


class UpperWebSocket(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(str(message).upper())


class NotAHandler:
    pass


class HookedWebSocket(UpperWebSocket):
    """The handshake hooks, for tests/test_hooks.py: decisions by origin, path and offers.

    ``/private`` needs ``?token=s3cret`` (else 401 with ``WWW-Authenticate``), ``/forbidden`` is
    403, ``/boom`` raises in ``process_request``; the subprotocol is the one named by a
    ``/proto/NAME`` path if offered, else the client's last offer (``/badproto``: one not offered).
    The message ``?protocols`` is answered with ``self.protocols``.
    """

    origins = ("https://allowed.example", None)

    @classmethod
    def process_request(cls, request: Request) -> None:
        path, _, query = request.path.partition("?")
        if path == "/private" and "token=s3cret" not in query.split("&"):
            raise HandshakeRejected(401, "token required", [("WWW-Authenticate", 'Bearer realm="wsloop"')])
        if path == "/forbidden":
            raise HandshakeRejected(403)
        if path == "/boom":
            raise RuntimeError("hook failure (test)")

    @classmethod
    def select_subprotocol(
        cls, request: Request, offered: list[str], supported: Sequence[str] | None
    ) -> str | None:
        path = request.path.partition("?")[0]
        if path == "/badproto":
            return "never-offered"
        if path.startswith("/proto/") and path[7:] in offered:
            return path[7:]
        return offered[-1]

    def received_message(self, message: Message) -> None:
        if str(message) == "?protocols":
            self.send(repr(self.protocols))
        else:
            super().received_message(message)


class BrowserOnlyWebSocket(HookedWebSocket):
    """As :class:`HookedWebSocket`, but a request without ``Origin`` is refused too."""

    origins = ("https://allowed.example",)


class ScaleWebSocket(WebSocket):
    """For tests/test_workers.py and tests/test_pubsub.py: echoes, except for these text commands:

    ``pid`` (answered with the serving process's id), ``broadcast:TEXT`` (the reactor's
    ``broadcast(TEXT)``), ``sub:CHANNEL`` / ``unsub:CHANNEL`` (join or leave), ``pub:CHANNEL:TEXT``
    (publish TEXT on CHANNEL). Commands other than ``pid`` send no answer.
    """

    compression = None

    def received_message(self, message: Message) -> None:
        text = str(message) if message.is_text else ""
        command, _, rest = text.partition(":")
        if text == "pid":
            self.send(str(os.getpid()))
        elif command == "broadcast":
            self.transport.reactor.broadcast(rest)  # the reactor serving this connection
        elif command == "sub":
            self.subscribe(rest)
        elif command == "unsub":
            self.unsubscribe(rest)
        elif command == "pub":
            channel, _, payload = rest.partition(":")
            self.publish(channel, payload)
        else:
            self.send(message.data, message.is_binary)


class TickerWebSocket(WebSocket):
    """For tests/test_limits.py: from ``opened()`` on, sends 256 KiB every 5 ms from the driver's
    own thread (a timer, as a broadcast or a game tick would), whether the peer reads or not."""

    compression = None

    def opened(self) -> None:
        self.tick()

    def tick(self) -> None:
        if not self.terminated and self.transport is not None:
            self.send(b"t" * (256 * 1024), binary=True)
            self.transport.call_later(0.005, self.tick)
