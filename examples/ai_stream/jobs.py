"""Answer jobs: one asyncio task per question, streaming tokens into the job's own channel.

A job publishes into ``ai:job-<id>#<user>``. The ``ai`` namespace keeps history and recovers
(``trunkline.toml``), so a page that lost its connection resumes from the last token it
received; the ``#<user>`` suffix makes the channel user-limited, so only the asker may
subscribe. Publications are JSON:

    {"type": "start", "question": "...", "ts": <ms>}
    {"type": "token", "i": 0, "text": "Short ", "ts": <ms>}      # i = 0, 1, 2 ... in order
    {"type": "end", "reason": "done" | "cancelled" | "error", "tokens": <count>, "ts": <ms>}

``ts`` is the server's clock when the publication was made (the page measures latency with it).
Jobs are bounded: at most ``max_per_user`` running per user and ``max_total`` in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trunkline.errors import ClientError
from trunkline.node import Node

log = logging.getLogger("ai_stream.jobs")

MAX_TOKENS = 1000  # an answer longer than this is cut (and ends with reason "done")
TOO_MANY = ClientError(429, "too many answers in progress: cancel one or wait for it to finish")
NO_SUCH_JOB = ClientError(404, "no such job: it finished, or it is not yours")


def now_ms() -> float:
    return time.time() * 1000


@dataclass
class Job:
    id: str
    user: str
    channel: str
    tokens: list[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Jobs:
    """The running jobs of one node, by id."""

    def __init__(
        self,
        node: Node,
        generate: Callable[[str], list[str]],
        *,
        tokens_per_second: float = 30.0,
        max_per_user: int = 2,
        max_total: int = 50,
    ) -> None:
        self.node = node
        self.generate = generate
        self.interval = 1.0 / max(tokens_per_second, 1.0)
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.running: dict[str, Job] = {}

    async def start(self, user: str, question: str) -> dict[str, object]:
        """Start answering ``question`` for ``user``; returns what the page subscribes to."""
        mine = sum(1 for job in self.running.values() if job.user == user)
        if mine >= self.max_per_user or len(self.running) >= self.max_total:
            raise TOO_MANY()
        job_id = secrets.token_hex(6)
        job = Job(job_id, user, f"ai:job-{job_id}#{user}", self.generate(question)[:MAX_TOKENS])
        self.running[job_id] = job  # counted before the first await: the bound holds under concurrency
        try:
            # The first publication creates the stream; its epoch lets the page subscribe from
            # offset 0 of this epoch and so receive every token, however late it subscribes.
            epoch = await self._publish(job, {"type": "start", "question": question})
        except BaseException:
            del self.running[job_id]
            raise
        job.task = asyncio.create_task(self._stream(job), name=f"ai-job-{job_id}")
        return {"job": job_id, "channel": job.channel, "epoch": epoch}

    def cancel(self, user: str, job_id: str) -> None:
        """Ask a job to stop; it publishes its "cancelled" end marker and finishes."""
        job = self.running.get(job_id)
        if job is None or job.user != user:
            raise NO_SUCH_JOB()
        job.stop.set()

    async def close(self) -> None:
        """Stop every job (at shutdown): their tasks are cancelled without an end marker."""
        tasks = [job.task for job in self.running.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        reason = "done"
        try:
            for i, text in enumerate(job.tokens):
                if job.stop.is_set():
                    break
                await self._publish(job, {"type": "token", "i": i, "text": text})
                sent += 1
                # A steady pace (like a model's decoding rate); a cancel interrupts the wait.
                delay = started + (i + 1) * self.interval - loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.stop.wait(), max(delay, 0.0))
            if job.stop.is_set():
                reason = "cancelled"
        except Exception:
            log.exception("job %s failed", job.id)
            reason = "error"
        finally:
            self.running.pop(job.id, None)
        with contextlib.suppress(Exception):
            await self._publish(job, {"type": "end", "reason": reason, "tokens": sent})

    async def _publish(self, job: Job, payload: dict[str, object]) -> str:
        """Publish into the job's channel; returns the stream's epoch."""
        payload["ts"] = now_ms()
        position = await self.node.publish(job.channel, json.dumps(payload).encode())
        return position.epoch if position is not None else ""
