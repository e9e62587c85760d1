"""The handler ``stress/chaos.py`` serves (``--handler chaoshandler:ChaosWebSocket``).

An echo server (:class:`wsloop.websocket.EchoWebSocket`), except for text messages starting with
``chaos/``: ``chaos/sub CHANNEL`` joins the channel (answered ``subscribed CHANNEL``);
``chaos/pub CHANNEL SEQ COUNT SIZE`` publishes ``COUNT`` numbered binary messages of ``SIZE``
bytes there from the reactor's thread. :class:`ChaosDigestWebSocket` answers a binary message over
1 MiB with its length and CRC-32 instead of its echo.
"""

from __future__ import annotations

import zlib

from wsloop.messaging import Message
from wsloop.websocket import EchoWebSocket

PREFIX = b"chaos/"
MAX_PUBLISH = 64 * 1024 * 1024  # bytes one command may publish


class ChaosWebSocket(EchoWebSocket):
    def received_message(self, message: Message) -> None:
        data = message.data
        if not (message.is_text and data.startswith(PREFIX)):
            super().received_message(message)
            return
        words = bytes(data[len(PREFIX) :]).decode("utf-8").split()
        if words[:1] == ["sub"] and len(words) == 2:
            self.subscribe(words[1])
            self.send(f"subscribed {words[1]}")
        elif words[:1] == ["pub"] and len(words) == 5:
            channel = words[1]
            seq, count, size = (int(w) for w in words[2:])
            if count * size > MAX_PUBLISH or size < 8:
                self.close(1008, "publish command out of range")
                return
            filler = b"p" * (size - 8)
            for i in range(seq, seq + count):
                self.publish(channel, i.to_bytes(8, "big") + filler, binary=True)
        else:
            self.close(1008, "unknown chaos command")


class ChaosDigestWebSocket(ChaosWebSocket):
    def received_message(self, message: Message) -> None:
        data = message.data
        if message.is_binary and len(data) > 1024 * 1024:
            self.send(f"{len(data)} {zlib.crc32(data)}")
        else:
            super().received_message(message)
