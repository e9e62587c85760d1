"""aiohttp under stress/bench.py: a ``web.WebSocketResponse`` echo at ``/``.

A text message ``broadcast:<rest>`` sends ``<rest>`` to every open websocket (aiohttp has no
broadcast helper: a loop of ``send_str()`` over its set of websockets). Compression off, no
heartbeat, messages up to 16 MiB, backlog 1024, no access log. Prints ``PORT <n>`` once listening
on 127.0.0.1; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import WSMsgType, web

TRIGGER = "broadcast:"
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets", set)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data.startswith(TRIGGER):
                    rest = msg.data[len(TRIGGER) :]
                    for other in list(sockets):
                        if not other.closed:
                            await other.send_str(rest)
                else:
                    await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        sockets.discard(ws)
    return ws


async def main(port: int) -> None:
    app = web.Application()
    app[SOCKETS] = set()
    app.router.add_get("/", websocket)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    try:
        await stop
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
