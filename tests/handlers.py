"""Handler classes the CLI tests load with ``--handler``."""

from wsloop.messaging import Message
from wsloop.websocket import WebSocket


class UpperWebSocket(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(str(message).upper())


class NotAHandler:
    pass
