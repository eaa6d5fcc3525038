"""The IoT dashboard example: Trunkline embedded in a small program that also serves the page.

    .venv/bin/python examples/iot/run.py --devices 3      # what `make example-iot` runs
    .venv/bin/python examples/iot/run.py                  # the server and the page only

One process runs Trunkline (``examples/iot/trunkline.toml``: Centrifugo WebSocket and MQTT over
WebSocket on port 8000, MQTT over TCP on 1883) and, on its own port (8080), the dashboard page
with the one route an application adds next to Trunkline: ``POST /token``, which signs a
connection token for a dashboard user (demo only: anyone gets one). ``GET /config.json`` tells
the page where Trunkline is. With ``--devices N`` it also starts ``devices.py`` (N simulated
devices speaking paho-mqtt, a separate process) and stops it on exit.

Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from pathlib import Path

import jwt
from aiohttp import web

import trunkline
from trunkline.app import Server
from trunkline.config import Settings, load_settings
from trunkline.observe.logs import setup_logging

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = Path(trunkline.__file__).resolve().parent / "web" / "static" / "vendor"  # centrifuge.js, mqtt.js, uPlot
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
TOKEN_TTL = 3600
NO_STORE = {"Cache-Control": "no-store"}


def dashboard_token(user: str, secret: str) -> str:
    """A connection token for a dashboard user (``sub`` is also the MQTT user name)."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + TOKEN_TTL, "info": {"dashboard": user}}
    return jwt.encode(claims, secret, algorithm="HS256")


def page_app(settings: Settings, trunkline_port: int) -> web.Application:
    secret = settings.client.token.hmac_secret_key

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def config(request: web.Request) -> web.Response:
        host = request.url.host or "127.0.0.1"
        mqtt_path = settings.mqtt.websocket.path
        return web.json_response(
            {
                "centrifugo": f"ws://{host}:{trunkline_port}/connection/websocket",
                "mqtt": f"ws://{host}:{trunkline_port}{mqtt_path}",
            },
            headers=NO_STORE,
        )

    async def token(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not NAME.fullmatch(user):
            return web.json_response(
                {"error": 'body must be {"user": "<1-32 letters, digits, _ - .>"}'}, status=400, headers=NO_STORE
            )
        name = f"dash-{user}"
        return web.json_response({"user": name, "token": dashboard_token(name, secret)}, headers=NO_STORE)

    app = web.Application(client_max_size=4096)
    app.router.add_get("/", index)
    app.router.add_get("/config.json", config)
    app.router.add_post("/token", token)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_static("/vendor/", VENDOR, follow_symlinks=False)
    return app


async def main(a: argparse.Namespace) -> None:
    overrides: dict[str, object] = {}
    if a.port is not None:
        overrides["http_server.port"] = a.port
    if a.mqtt_port is not None:
        overrides["mqtt.tcp.address"] = f"127.0.0.1:{a.mqtt_port}"
    settings = load_settings(a.config, overrides=overrides)
    setup_logging(settings.log.level, settings.log.format)
    devices: asyncio.subprocess.Process | None = None
    async with Server(settings) as server:
        runner = web.AppRunner(page_app(settings, server.port), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", a.page_port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        mqtt_address = settings.mqtt.tcp.address
        print(f"dashboard: http://127.0.0.1:{a.page_port}/", flush=True)
        print(f"trunkline: port {server.port}, MQTT over TCP on {mqtt_address}", flush=True)
        if a.devices:
            devices = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "devices.py"),
                *("--devices", str(a.devices), "--config", a.config),
                *("--mqtt-port", mqtt_address.rsplit(":", 1)[1], "--ws-port", str(server.port)),
            )
        try:
            await stop.wait()
        finally:
            if devices is not None and devices.returncode is None:
                devices.terminate()  # they publish their offline status and disconnect
                try:
                    await asyncio.wait_for(devices.wait(), 5)
                except TimeoutError:
                    devices.kill()
                    await devices.wait()
            await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "trunkline.toml"))
    p.add_argument("--port", type=int, help="Trunkline's port (default: the config's, 8000)")
    p.add_argument("--mqtt-port", type=int, help="MQTT over TCP port (default: the config's, 1883)")
    p.add_argument("--page-port", type=int, default=8080, help="the dashboard page's port")
    p.add_argument("--devices", type=int, default=0, help="also start this many simulated devices (0-10)")
    args = p.parse_args()
    args.devices = max(0, min(args.devices, 10))
    asyncio.run(main(args))
