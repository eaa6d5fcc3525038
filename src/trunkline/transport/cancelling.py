"""Whether the current task was asked to stop, as opposed to a cancel that reached it from elsewhere.

aiohttp makes every task that waits for a full socket buffer await one shared future;
cancelling one of them (the session's writer, stopped on 3008 or on a drain timeout)
cancels that future under the others too. A ``CancelledError``
the current task was not asked for is therefore a dead connection, not a cancel.
"""

from __future__ import annotations

import asyncio


def being_cancelled() -> bool:
    """True when ``cancel()`` was called on the current task (``Task.cancelling()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
