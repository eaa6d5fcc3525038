"""The per-connection outbound buffer: batching, frame splitting, overflow, errors, shutdown.

``send`` is a real in-memory async recorder (the socket is the only fake), driven by
the real event loop.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.transport.writer import MAX_FRAME, Writer, _frames


@dataclass
class Recorder:
    """An async ``send``: records frames, optionally waits or fails."""

    frames: list[bytes] = field(default_factory=list)
    gate: asyncio.Event | None = None
    fail_with: BaseException | None = None
    delay: float = 0.0
    calls: int = 0

    async def __call__(self, frame: bytes) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        self.frames.append(frame)

    @property
    def messages(self) -> list[bytes]:
        return [m for f in self.frames for m in f.split(b"\n")]


@dataclass
class Env:
    send: Recorder
    writer: Writer
    overflows: list[None]
    errors: list[BaseException]


Make = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    writers: list[Writer] = []

    async def factory(max_size: int = 1 << 20, send: Recorder | None = None, start: bool = True) -> Env:
        rec = send or Recorder()
        overflows: list[None] = []
        errors: list[BaseException] = []
        writer = Writer(rec, max_size, lambda: overflows.append(None), errors.append)
        if start:
            writer.start()
        writers.append(writer)
        return Env(rec, writer, overflows, errors)

    yield factory
    for writer in writers:
        writer.abort()
    await asyncio.sleep(0)


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- batching


async def test_pushes_in_one_loop_turn_leave_in_one_frame(make: Make) -> None:
    env = await make()
    for msg in (b'{"id":1,"publish":{}}', b'{"push":{"channel":"c","pub":{"data":1}}}', b"{}"):
        env.writer.push(msg)
    assert env.send.frames == []  # push never writes by itself
    await turns()
    assert env.send.frames == [b'{"id":1,"publish":{}}\n{"push":{"channel":"c","pub":{"data":1}}}\n{}']
    assert env.writer.frames_sent == 1
    assert env.writer.bytes_sent == len(env.send.frames[0])
    assert env.writer.buffered == 0


async def test_a_single_message_is_sent_as_is(make: Make) -> None:
    env = await make()
    env.writer.push(b"{}")
    await turns()
    assert env.send.frames == [b"{}"]


async def test_pushes_in_separate_turns_leave_in_separate_frames(make: Make) -> None:
    env = await make()
    env.writer.push(b"a")
    await turns()
    env.writer.push(b"b")
    env.writer.push(b"c")
    await turns()
    assert env.send.frames == [b"a", b"b\nc"]


async def test_pushes_during_a_slow_send_are_batched_into_the_next_frame(make: Make) -> None:
    gate = asyncio.Event()
    env = await make(send=Recorder(gate=gate))
    env.writer.push(b"1")
    await turns()
    assert env.send.calls == 1  # blocked in send
    for m in (b"2", b"3", b"4"):
        env.writer.push(m)
    assert env.writer.buffered == 3
    gate.set()
    await turns(5)
    assert env.send.frames == [b"1", b"2\n3\n4"]


async def test_order_is_kept_across_frames(make: Make) -> None:
    env = await make()
    expected = []
    for turn in range(5):
        for i in range(7):
            msg = b'{"n":%d}' % (turn * 7 + i)
            expected.append(msg)
            env.writer.push(msg)
        await turns(1 + turn % 2)
    await turns()
    assert env.send.messages == expected


async def test_large_batches_are_split_into_frames_of_at_most_64_kib(make: Make) -> None:
    env = await make(max_size=10 << 20)
    msgs = [bytes([65 + i % 26]) * 30_000 for i in range(7)]
    for m in msgs:
        env.writer.push(m)
    await turns()
    assert len(env.send.frames) > 1
    assert all(len(f) <= MAX_FRAME for f in env.send.frames)
    assert env.send.messages == msgs
    assert env.send.frames[0] == msgs[0] + b"\n" + msgs[1]


async def test_a_message_larger_than_a_frame_goes_alone(make: Make) -> None:
    env = await make(max_size=10 << 20)
    big = b"x" * (MAX_FRAME + 10)
    env.writer.push(b"a")
    env.writer.push(big)
    env.writer.push(b"b")
    await turns()
    assert env.send.frames == [b"a", big, b"b"]


def test_frames_of_many_small_messages() -> None:
    msgs = [b"%05d" % i for i in range(30_000)]
    frames = _frames(msgs)
    assert all(len(f) <= MAX_FRAME for f in frames)
    assert b"\n".join(frames).split(b"\n") == msgs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 3 * MAX_FRAME // 2), min_size=1, max_size=12))
def test_frames_keep_every_message_in_order_and_respect_the_limit(sizes: list[int]) -> None:
    msgs = [bytes([97 + i % 26]) * n for i, n in enumerate(sizes)]
    frames = _frames(msgs)
    assert [m for f in frames for m in f.split(b"\n")] == msgs
    for frame in frames:
        assert len(frame) <= MAX_FRAME or b"\n" not in frame  # only a lone oversized message exceeds it
    # No frame could have taken the next message without passing the limit.
    i = 0
    for frame in frames[:-1]:
        i += frame.count(b"\n") + 1
        assert len(frame) + 1 + len(msgs[i]) > MAX_FRAME - 1


# ---------------------------------------------------------------- overflow


async def test_overflow_calls_on_overflow_once_and_drops_the_buffer(make: Make) -> None:
    gate = asyncio.Event()
    env = await make(max_size=100, send=Recorder(gate=gate))
    env.writer.push(b"first")
    await turns()  # "first" is now blocked inside send
    env.writer.push(b"x" * 60)
    assert env.overflows == []
    env.writer.push(b"y" * 60)  # 120 bytes waiting > 100
    assert env.writer.closed
    assert env.writer.buffered == 0
    assert env.overflows == []  # reported from the loop, not from inside push
    await turns()
    assert env.overflows == [None]
    env.writer.push(b"z" * 500)  # ignored after the overflow
    env.writer.push(b"z")
    await turns()
    assert env.overflows == [None]
    assert env.writer.buffered == 0
    gate.set()
    await turns(5)
    assert env.send.frames == [b"first"]  # the dropped bytes never reach the socket
    assert env.errors == []


async def test_one_push_bigger_than_the_limit_overflows(make: Make) -> None:
    env = await make(max_size=10)
    env.writer.push(b"x" * 11)
    await turns()
    assert env.overflows == [None]
    assert env.send.frames == []


async def test_exactly_the_limit_does_not_overflow(make: Make) -> None:
    env = await make(max_size=10)
    env.writer.push(b"x" * 4)
    env.writer.push(b"y" * 6)
    await turns()
    assert env.overflows == []
    assert env.send.frames == [b"xxxx\nyyyyyy"]


async def test_a_reading_client_never_overflows(make: Make) -> None:
    env = await make(max_size=1000)
    for _ in range(50):
        for _ in range(9):
            env.writer.push(b"x" * 100)
        await turns()
    assert env.overflows == []
    assert len(env.send.messages) == 450


# ---------------------------------------------------------------- send errors


async def test_send_error_calls_on_error_and_stops(make: Make) -> None:
    exc = ConnectionResetError("peer gone")
    env = await make(send=Recorder(fail_with=exc))
    env.writer.push(b"a")
    await turns()
    assert env.errors == [exc]
    assert env.writer.closed
    env.writer.push(b"b")
    await turns()
    assert env.send.calls == 1
    assert env.errors == [exc]
    assert env.overflows == []


async def test_send_error_after_some_frames(make: Make) -> None:
    rec = Recorder()
    env = await make(send=rec)
    env.writer.push(b"a")
    await turns()
    rec.fail_with = RuntimeError("closing transport")
    env.writer.push(b"b")
    await turns()
    assert rec.frames == [b"a"]
    assert len(env.errors) == 1
    assert isinstance(env.errors[0], RuntimeError)


# ---------------------------------------------------------------- drain_and_stop / abort


async def test_drain_and_stop_writes_what_is_queued(make: Make) -> None:
    env = await make()
    env.writer.push(b"a")
    env.writer.push(b"b")
    await env.writer.drain_and_stop(1.0)
    assert env.send.frames == [b"a\nb"]
    assert env.writer.closed
    env.writer.push(b"late")
    await turns()
    assert env.send.frames == [b"a\nb"]


async def test_drain_and_stop_while_a_send_is_in_flight(make: Make) -> None:
    env = await make(send=Recorder(delay=0.02))
    env.writer.push(b"a")
    await turns()
    env.writer.push(b"b")
    await env.writer.drain_and_stop(2.0)
    assert env.send.frames == [b"a", b"b"]


async def test_drain_and_stop_with_nothing_queued_returns_at_once(make: Make) -> None:
    env = await make()
    await turns()
    await asyncio.wait_for(env.writer.drain_and_stop(5.0), 0.5)
    assert env.send.frames == []


async def test_drain_and_stop_is_bounded_by_its_timeout(make: Make) -> None:
    env = await make(send=Recorder(gate=asyncio.Event()))  # a socket that never drains
    env.writer.push(b"a")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await env.writer.drain_and_stop(0.1)
    assert loop.time() - started < 1.0
    assert env.send.frames == []


async def test_drain_and_stop_of_a_writer_never_started(make: Make) -> None:
    env = await make(start=False)
    env.writer.push(b"a")
    await asyncio.wait_for(env.writer.drain_and_stop(1.0), 0.5)
    assert env.writer.closed


async def test_abort_drops_what_is_queued(make: Make) -> None:
    env = await make()
    env.writer.push(b"a")
    env.writer.push(b"b")
    env.writer.abort()
    assert env.writer.buffered == 0
    assert env.writer.closed
    await turns()
    assert env.send.frames == []
    env.writer.push(b"c")
    await turns()
    assert env.send.frames == []
    assert env.errors == []
    assert env.overflows == []


async def test_abort_cancels_a_send_in_flight(make: Make) -> None:
    env = await make(send=Recorder(gate=asyncio.Event()))
    env.writer.push(b"a")
    await turns()
    env.writer.abort()
    await turns()
    assert env.send.frames == []
    assert env.errors == []


async def test_abort_after_drain_is_harmless(make: Make) -> None:
    env = await make()
    env.writer.push(b"a")
    await env.writer.drain_and_stop(1.0)
    env.writer.abort()
    env.writer.abort()
    assert env.send.frames == [b"a"]


def test_a_closed_loop_is_not_kept_alive_by_its_flushers() -> None:
    """The flushers are kept per loop; they refer to it weakly, so a finished loop (a test's) is freed."""
    loop = asyncio.new_event_loop()
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    async def write_once() -> None:
        writer = Writer(send, 1 << 20, lambda: None, lambda exc: None)
        writer.start()
        writer.push(b"x")
        await asyncio.sleep(0)

    loop.run_until_complete(write_once())
    loop.close()
    assert sent == [b"x"]
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
