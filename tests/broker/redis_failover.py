"""A Redis failover under a steady publisher, judged by the "no silent loss" checker (issue 9).

Subscribers with recovery on a Trunkline node, a publisher through its server API at a
steady rate (``tests/faults``: :class:`Audience`, :class:`Publisher`), a fault in the
middle (a killed master), publishing until it works again, then every subscriber must
have each acknowledged publication exactly once and in order, or have been told
(``recovered: false`` or a new epoch): :func:`tests.faults.checker.replay`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cent import AsyncClient

from tests.conftest import API_KEY
from tests.faults.checker import Ack
from tests.faults.test_recovery_faults import Audience, Publisher, verdict


@dataclass
class FailoverRun:
    acks: list[Ack]
    refused: int  # publishes that failed (not acknowledged) around the fault
    back_after: float  # seconds from the fault to the first acknowledged publish after it
    problems: list[str]  # the checker's verdict: empty when the guarantee held


async def failover_under_load(
    ws_url: str,
    api_url: str,
    channel: str,
    fault: Callable[[], Awaitable[None]],
    *,
    before: int = 20,
    after: int = 20,
    timeout: float = 30.0,
) -> FailoverRun:
    audience = Audience(ws_url)
    await audience.connect()
    try:
        subs = await audience.subscribe(channel)
        async with AsyncClient(api_url, API_KEY, timeout=5.0) as api:
            publisher = Publisher(api)
            stop = asyncio.Event()
            task = asyncio.create_task(publisher.run(channel, stop))
            try:

                def acked() -> int:
                    return len(publisher.acks.get(channel, []))

                await publisher.wait_for(lambda: acked() >= before, 15, f"{before} acknowledged publications")
                count, failures = acked(), len(publisher.failures)
                started = time.monotonic()
                await fault()
                await publisher.wait_for(lambda: acked() > count, timeout, "a publication acknowledged after the fault")
                back_after = time.monotonic() - started
                await publisher.wait_for(lambda: acked() >= count + after, timeout, "publishing after the fault")
            finally:
                stop.set()
                await task
        acks = publisher.acks.get(channel, [])
        settled = await audience.settle(subs, acks)
        problems = verdict("failover", subs, acks, publisher)
        if not settled:
            problems.append("the subscribers did not reach the last acknowledged publication in time")
        return FailoverRun(acks, len(publisher.failures) - failures, back_after, problems)
    finally:
        await audience.close()
