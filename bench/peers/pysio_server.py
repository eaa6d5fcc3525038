"""python-socketio peer for bench/run.py (aiohttp on uvloop, like Trunkline).

    python pysio_server.py PORT

Clients connect with the WebSocket transport only
(ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket).
POST /publish with a JSON body does ``await sio.emit("m", body)``: the library's
broadcast to every client of the default namespace.
A client event "pub" sent with an ack id is acknowledged with {} (request/response).
A client event "join" with a list of rooms enters them (``sio.enter_room``) and acks {}.
POST /publish_rooms with ``[{"room":R,"data":D},...]`` does
``await sio.emit("m", D, room=R)`` per item.
A client event "say" with (room, data) does ``await sio.emit("m", data, room=room)``
(many publishers).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import socketio
import uvloop
from aiohttp import web


def build_app() -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)

    @sio.on("pub")
    async def pub(sid: str, data: object) -> dict[str, object]:
        return {}

    @sio.on("say")
    async def say(sid: str, room: str, data: object) -> None:
        await sio.emit("m", data, room=room)

    @sio.on("join")
    async def join(sid: str, rooms: list[str]) -> dict[str, object]:
        for room in rooms:
            await sio.enter_room(sid, room)
        return {}

    async def publish_rooms(request: web.Request) -> web.Response:
        for item in json.loads(await request.read()):
            await sio.emit("m", item["data"], room=item["room"])
        return web.json_response({})

    async def publish(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        await sio.emit("m", body)
        return web.json_response({})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/publish", publish)
    app.router.add_post("/publish_rooms", publish_rooms)
    app.router.add_get("/health", health)
    return app


async def main(port: int) -> None:
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"python-socketio peer on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8103))
