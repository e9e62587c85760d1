"""Handler classes tests/test_flavours.py loads with ``--handler tests.flavour_handlers:NAME``.

Each sets options of the README's limits table as class attributes or hooks, so that every
server flavour can be checked to take them from the class when no CLI option says otherwise.
"""

from collections.abc import Sequence

from wsloop.deflate import DeflateOptions
from wsloop.handshake import Request
from wsloop.messaging import Message
from wsloop.websocket import WebSocket

#: The only ``Origin`` :class:`ClassPolicy` admits.
GOOD_ORIGIN = "http://good.example"
#: The subprotocol :class:`ClassPolicy` picks when a client offers it.
SUBPROTOCOL = "chat.v2"
#: :class:`ClassPolicy`'s permessage-deflate policy (not the default one, so it can be seen).
POLICY = DeflateOptions(server_max_window_bits=10, server_no_context_takeover=True)


class Closer(WebSocket):
    """Echoes; the text ``close`` makes the server start the closing handshake (1000 "bye")."""

    def received_message(self, message: Message) -> None:
        if message.is_text and message.data == b"close":
            self.close(1000, "bye")
        else:
            self.send(message.data, message.is_binary)


class ClassPolicy(WebSocket):
    """Message size, origins, compression policy and subprotocol, all from the class.

    Echoes, except that the text ``?protocols`` is answered with ``repr(self.protocols)``.
    """

    max_message_size = 1024
    origins = (GOOD_ORIGIN,)
    compression = POLICY

    @classmethod
    def select_subprotocol(
        cls, request: Request, offered: list[str], supported: Sequence[str] | None
    ) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    def received_message(self, message: Message) -> None:
        if message.is_text and message.data == b"?protocols":
            self.send(repr(self.protocols))
        else:
            self.send(message.data, message.is_binary)


class ClassTimeouts(Closer):
    """Idle and close timeouts from the class (1 s each), no compression at all, and a message
    size limit (1024) that tests/test_flavours.py overrides with ``--max-message-size``."""

    max_message_size = 1024
    idle_timeout = 1.0
    close_timeout = 1.0
    compression = None
