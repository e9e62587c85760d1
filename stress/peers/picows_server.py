"""picows under stress/bench.py: a ``WSListener`` echo (picows hands over frames, not messages).

A text frame ``broadcast:<rest>`` sends ``<rest>`` to every connected transport (picows has no
broadcast helper: a loop of ``transport.send()``). picows never negotiates compression. Frames
up to 16 MiB, backlog 1024. Prints ``PORT <n>`` once listening on 127.0.0.1; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

TRIGGER = b"broadcast:"
TRANSPORTS: set[WSTransport] = set()


class Echo(WSListener):  # type: ignore[misc]
    def on_ws_connected(self, transport: WSTransport) -> None:
        TRANSPORTS.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        TRANSPORTS.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload.startswith(TRIGGER):
                rest = payload[len(TRIGGER) :]
                for other in TRANSPORTS:
                    other.send(WSMsgType.TEXT, rest)
                return
            transport.send(WSMsgType.TEXT, payload, frame.fin)
        elif msg_type in (WSMsgType.BINARY, WSMsgType.CONTINUATION):
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)


async def main(port: int) -> None:
    def factory(request: WSUpgradeRequest) -> Echo:
        return Echo()

    server = await ws_create_server(factory, "127.0.0.1", port, max_frame_size=16 * 1024 * 1024, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
