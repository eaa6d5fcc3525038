"""Run the example: Trunkline (embedded) and the backend, in one process.

``python examples/proxy_backend/run.py [--port 8000] [--backend-port 8090]``, then open
http://127.0.0.1:8090/ and log in as alice/alice or bob/bob.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import make_app

from trunkline.app import Server
from trunkline.config import settings_from_mapping


def trunkline_config(port: int, backend: str) -> dict[str, Any]:
    def proxy(name: str, **extra: Any) -> dict[str, Any]:
        return {"endpoint": f"{backend}/centrifugo/{name}", "timeout": "1s", **extra}

    return {
        "http_server": {"port": port},
        "client": {
            "allowed_origins": [backend],
            "proxy": {
                "connect": {"enabled": True, **proxy("connect", http_headers=["Cookie"])},
                "refresh": {"enabled": True, **proxy("refresh", http_headers=["Cookie"])},
            },
        },
        "channel": {
            "proxy": {
                "subscribe": proxy("subscribe", include_connection_meta=True),
                "publish": proxy("publish"),
            },
            "namespaces": [
                {
                    "name": "chat",
                    "subscribe_proxy_enabled": True,
                    "publish_proxy_enabled": True,
                    "history_size": 50,
                    "history_ttl": "10m",
                    "force_recovery": True,
                }
            ],
        },
        "rpc": {"proxy": proxy("rpc", include_connection_meta=True), "without_namespace": {"proxy_enabled": True}},
    }


async def main(port: int, backend_port: int) -> None:
    backend = f"http://127.0.0.1:{backend_port}"
    runner = web.AppRunner(make_app(f"http://127.0.0.1:{port}"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()
    server = Server(settings_from_mapping(trunkline_config(port, backend), source="examples/proxy_backend/run.py"))
    await server.start()
    print(f"open {backend}/ (Trunkline on 127.0.0.1:{port})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop(timeout=2)
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend-port", type=int, default=8090)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.backend_port))
