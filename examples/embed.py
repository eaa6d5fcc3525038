"""Trunkline inside your own asyncio program, with hooks as plain async functions.

    .venv/bin/python examples/embed.py                      # examples/demo.toml's settings, port 8000
    .venv/bin/python examples/embed.py my.toml              # your settings

Stop it with Ctrl-C or SIGTERM: the server shuts down gracefully (clients get 3001 and reconnect).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from trunkline.app import Server
from trunkline.config import load_settings
from trunkline.errors import PERMISSION_DENIED
from trunkline.events import PublishEvent, PublishReply, RPCEvent
from trunkline.node import Node


async def main(config: str) -> None:
    settings = load_settings(config)
    node = Node(settings)

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes | None:  # event.client, event.method, event.data (JSON bytes)
        return b'{"pong":true}'

    @node.on_publish
    async def publish(event: PublishEvent) -> PublishReply | None:  # replaces the allow_publish_* check
        if b"forbidden" in event.data:
            raise PERMISSION_DENIED()  # a fresh error each time: code 103
        return None  # publish the data as sent

    async with Server(settings, node) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        await node.publish("chat:lobby", b'{"text":"from the app"}')
        print(f"serving on port {server.port}", flush=True)
        await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "examples/demo.toml"))
