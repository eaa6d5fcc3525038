"""The clients the tests drive leave the global ``random`` alone (see ``CLIENT_RANDOM_USERS``).

Hypothesis draws examples in a worker thread while these clients run on the loop; a client
that moved the global state during a draw made a fuzz test fail once in CI.
"""

from __future__ import annotations

import random

import websockets

from tests.conftest import CLIENT_RANDOM_USERS, Running


async def test_a_websockets_client_ping_does_not_move_the_global_random_state(server: Running) -> None:
    async with websockets.connect(server.ws_url, ping_interval=None) as ws:
        before = random.getstate()
        for _ in range(3):
            await (await ws.ping())
        assert random.getstate() == before


def test_every_listed_client_module_has_its_own_generator() -> None:
    for module in CLIENT_RANDOM_USERS:
        generator = module.random
        assert isinstance(generator, random.Random) and generator is not random._inst, module.__name__  # type: ignore[attr-defined]
