"""A Python client of a running Trunkline: centrifuge-python subscribes, cent publishes.

    make run                                  # in another terminal: the demo server on port 8000
    .venv/bin/python examples/client.py       # prints the publication it receives, then exits

The token is signed here with the demo's public secret (examples/demo.toml); a real application
gets it from its backend (`trunkline gentoken` prints one).
"""

from __future__ import annotations

import asyncio
import sys
import time

import jwt
from cent import AsyncClient, PublishRequest
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
SECRET = "trunkline-demo-secret-do-not-use-in-production"  # examples/demo.toml
API_KEY = "demo-api-key"  # examples/demo.toml


class Printer(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.received = asyncio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        print("received", ctx.pub.data, flush=True)
        self.received.set()


async def main() -> None:
    token = jwt.encode({"sub": "42", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    ws_url = URL.replace("http", "ws", 1) + "/connection/websocket"
    client = Client(ws_url, token=token)  # use_protobuf=True: the Protobuf format, bytes payloads
    printer = Printer()
    sub = client.new_subscription("chat:lobby", events=printer)
    await client.connect()
    await sub.subscribe()
    await sub.ready(5)

    async with AsyncClient(URL + "/api", API_KEY) as api:
        await api.publish(PublishRequest(channel="chat:lobby", data={"text": "hello"}))

    await asyncio.wait_for(printer.received.wait(), 5)
    await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
