"""Tests of /metrics, /health, /ready, logging and the dashboard, plus their shared helpers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from centrifuge import Client, PublicationContext, Subscription, SubscriptionEventHandler
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """GET ``url`` (a /metrics endpoint) and parse the Prometheus text into (name, labels) -> value."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 when absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of every sample ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


class Received(SubscriptionEventHandler):
    """Collects a subscription's publications."""

    def __init__(self) -> None:
        self.publications: list[Any] = []
        self.changed = asyncio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.append(ctx.pub.data)
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.publications) < count:
                self.changed.clear()
                await self.changed.wait()


async def connect(ws_url: str, token: str, **kwargs: Any) -> Client:
    client = Client(ws_url, token=token, proxy=None, **kwargs)
    await client.connect()
    await client.ready(timeout=5)
    return client


async def subscribe(client: Client, channel: str) -> tuple[Subscription, Received]:
    received = Received()
    sub = client.new_subscription(channel, events=received)
    await sub.subscribe()
    await sub.ready(timeout=5)
    return sub, received
