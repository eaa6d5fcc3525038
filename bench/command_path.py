"""The publish command's path inside the server, without a socket (issue 18's publish ack).

    .venv/bin/python bench/command_path.py              # 5 rounds of 20 000 publish commands
    .venv/bin/python bench/command_path.py --rounds 9 --commands 50000

One session on an in-process transport, on uvloop, configured like ``bench/trunkline.toml``:
each publish command (the 100-byte JSON frame ``bench/loadgen.py --mode rr`` sends) goes
through ``Session.handle_frame``, the publish handler, the memory broker and the reply's
encoding and write. What is measured is the process's CPU time per command, so the figure
is the command path alone: ``rr-100``'s µs per ack minus this is the socket's share (the
frame parser, the read and write system calls, the loop's wake-ups). The median of the
rounds is printed with the spread; use it to compare two revisions of the code in one run
(alternate them), not across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trunkline.commands import new_session
from trunkline.config import load_settings
from trunkline.contracts import TransportInfo
from trunkline.node import Node

CONFIG = Path(__file__).resolve().parent / "trunkline.toml"
FLUSH_EVERY = 100  # commands between two turns of the loop (the writer's flush runs then)


class CountingTransport:
    """A bidirectional JSON transport that counts the frames the session's writer sends."""

    info = TransportInfo("websocket")

    def __init__(self) -> None:
        self.frames = 0
        self.replies = 0
        self.closed: tuple[int, str] | None = None

    async def send(self, frame: bytes) -> None:
        self.frames += 1
        self.replies += frame.count(b'"id"')

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.closed = (0, "aborted")


async def measure(commands: int, rounds: int) -> list[float]:
    # the rate limit stays on (its check is on the path) but is out of reach of a loop without a socket
    node = Node(load_settings(CONFIG, overrides={"client.command_rate_limit": 1_000_000_000}))
    node.session_factory = new_session
    await node.start()
    try:
        transport = CountingTransport()
        session = node.new_session(transport, remote="127.0.0.1")
        await session.handle_frame(json.dumps({"id": 1, "connect": {}}).encode())
        await asyncio.sleep(0)
        if transport.replies != 1:
            raise RuntimeError("the connect command got no reply")
        frames = [
            json.dumps({"id": i, "publish": {"channel": "bench", "data": {"n": i, "pad": "x" * 40}}}).encode()
            for i in range(2, 2 + commands)
        ]
        per_command: list[float] = []
        for _ in range(rounds):
            before = transport.replies
            started = time.process_time()
            for n, frame in enumerate(frames, 1):
                await session.handle_frame(frame)
                if n % FLUSH_EVERY == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
            elapsed = time.process_time() - started
            if transport.closed is not None or transport.replies - before != commands:
                got = transport.replies - before
                raise RuntimeError(f"{got} replies to {commands} publish commands, closed: {transport.closed}")
            per_command.append(elapsed / commands * 1e6)
        await session.close(None)
        return per_command
    finally:
        await node.shutdown(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000, help="publish commands per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = uvloop.run(measure(args.commands, args.rounds))
    print(
        f"publish command path: {statistics.median(figures):.2f} µs CPU per command "
        f"(median of {args.rounds} rounds of {args.commands}; min {min(figures):.2f}, max {max(figures):.2f})"
    )


if __name__ == "__main__":
    main()
