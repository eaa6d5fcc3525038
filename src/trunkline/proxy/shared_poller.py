"""The node's shared-poll channels and their pollers: ask the backend, push what changed.

Each active shared-poll channel has one task. Every ``refresh_interval`` it takes the channel's
tracked keys (:class:`~trunkline.hub.shared_poll.PollChannel`: the union over connections, each
key once), splits them into batches of ``refresh_batch_size`` and calls the refresh proxy once
per batch, the batches spread evenly over the interval. All channels share one bound on calls in
flight (``shared_poll.concurrency_limit``), and each call has the proxy's ``timeout``: a slow or
failing backend delays only its own channel's cycle; other channels keep their own tasks. A
failed call skips that batch until the next cycle and is counted in
``trunkline_shared_poll_refreshes_total{result != "ok"}``.

A change is encoded once per client protocol (JSON, Protobuf) and the same bytes are appended to
every tracking connection of that protocol. A key tracked for the first time on this node with
version 0 is polled at once (cold key), so its first data comes within a round trip, not an
interval. A channel nobody is subscribed to stops after ``channel_shutdown_delay``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from ..broker.base import Broker, PublishOptions
from ..config import NamespaceOptions, Settings
from ..errors import ClientError, Disconnect
from ..hub.shared_poll import Change, PollChannel, PolledItem
from ..protocol.codec import Codec
from ..protocol.messages import Publication, Push
from ..records import Publication as Record
from .endpoint import Endpoint, ProxyFailure
from .registry import Proxies
from .shared_poll import refresh

__all__ = ["PollOptions", "SharedPoll", "Tracker"]

log = logging.getLogger("trunkline.shared_poll")


class Tracker(Hashable, Protocol):
    """A connection that tracks keys (the session)."""

    @property
    def codec(self) -> Codec: ...

    @property
    def push(self) -> Callable[[bytes], None]: ...

    @property
    def closed(self) -> bool: ...

    def resubscribe(self, channel: str) -> None: ...


class PollMetrics(Protocol):
    def shared_poll_refresh(self, namespace: str, result: str, keys: int) -> None: ...

    def shared_poll_pushed(self, namespace: str, items: int, deliveries: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PollOptions:
    """A namespace's ``shared_poll`` block, resolved."""

    endpoint: Endpoint | None
    interval: float
    batch_size: int
    versioned: bool
    max_keys_per_connection: int
    max_keys_per_channel: int
    shutdown_delay: float
    track_expired_extra_delay: float
    publish_enabled: bool


class _Active:
    __slots__ = ("cold", "cold_task", "namespace", "opts", "state", "stop", "task")

    def __init__(self, namespace: str, opts: PollOptions, state: PollChannel[Tracker]) -> None:
        self.namespace = namespace
        self.opts = opts
        self.state = state
        self.task: asyncio.Task[None] | None = None
        self.cold: set[str] = set()
        self.cold_task: asyncio.Task[None] | None = None
        self.stop: asyncio.TimerHandle | None = None


class SharedPoll:
    """Every shared-poll channel of this node (owned by the node)."""

    def __init__(
        self,
        settings: Settings,
        proxies: Proxies,
        metrics: PollMetrics,
        namespace_of: Callable[[str], str],
        *,
        now: Callable[[], float] = time.time,
        broker: Broker | None = None,
    ) -> None:
        self._settings = settings
        self._proxies = proxies
        self._metrics = metrics
        self._namespace_of = namespace_of
        self._now = now
        self._limit = asyncio.Semaphore(max(1, settings.shared_poll.concurrency_limit))
        self._channels: dict[str, _Active] = {}
        self._opts: dict[int, PollOptions] = {}
        #: carries direct publishes between nodes (``publish_enabled``): the node's broker
        self._broker = broker
        self._broker_ops: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ options

    def options(self, ns: NamespaceOptions) -> PollOptions:
        found = self._opts.get(id(ns))
        if found is None:
            sp = ns.shared_poll
            found = self._opts[id(ns)] = PollOptions(
                endpoint=self._proxies.shared_poll_refresh(sp.proxy_name),
                interval=sp.refresh_interval if sp.refresh_interval > 0 else 10.0,
                batch_size=sp.refresh_batch_size if sp.refresh_batch_size > 0 else 1000,
                versioned=sp.mode == "versioned",
                max_keys_per_connection=sp.max_keys_per_connection,
                max_keys_per_channel=sp.max_keys_per_channel,
                shutdown_delay=max(0.0, sp.channel_shutdown_delay),
                track_expired_extra_delay=max(0.0, sp.track_expired_extra_delay),
                publish_enabled=sp.publish_enabled,
            )
        return found

    # ------------------------------------------------------------------ membership

    def channel(self, channel: str) -> PollChannel[Tracker] | None:
        active = self._channels.get(channel)
        return active.state if active is not None else None

    def join(self, channel: str, ns: NamespaceOptions, conn: Tracker) -> PollChannel[Tracker]:
        """``conn`` subscribed: the channel's state (created, and its poller started, if new)."""
        active = self._channels.get(channel)
        if active is None:
            opts = self.options(ns)
            state: PollChannel[Tracker] = PollChannel(
                versioned=opts.versioned,
                max_keys=opts.max_keys_per_channel,
                max_keys_per_connection=opts.max_keys_per_connection,
                keep=opts.shutdown_delay,
            )
            active = self._channels[channel] = _Active(self._namespace_of(channel), opts, state)
            active.task = asyncio.ensure_future(self._run(channel, active))
            if opts.publish_enabled:
                self._broker_op(channel, subscribe=True)
        if active.stop is not None:
            active.stop.cancel()
            active.stop = None
        active.state.members.add(conn)
        return active.state

    def leave(self, channel: str, conn: Tracker) -> None:
        """``conn`` unsubscribed or disconnected: its keys are untracked."""
        active = self._channels.get(channel)
        if active is None:
            return
        active.state.drop(conn, asyncio.get_running_loop().time())
        self._maybe_stop(channel, active)

    def untrack(self, channel: str, conn: Tracker, keys: Iterable[str]) -> None:
        active = self._channels.get(channel)
        if active is None:
            return
        now = asyncio.get_running_loop().time()
        for key in keys:
            active.state.untrack(conn, key, now)

    def _maybe_stop(self, channel: str, active: _Active) -> None:
        if not active.state.idle or active.stop is not None:
            return
        loop = asyncio.get_running_loop()
        active.stop = loop.call_later(active.opts.shutdown_delay, self._stop, channel, active)

    def _stop(self, channel: str, active: _Active) -> None:
        active.stop = None
        if self._channels.get(channel) is not active or not active.state.idle:
            return
        del self._channels[channel]
        for task in (active.task, active.cold_task):
            if task is not None:
                task.cancel()
        if active.opts.publish_enabled:
            self._broker_op(channel, subscribe=False)

    def _broker_op(self, channel: str, *, subscribe: bool) -> None:
        broker = self._broker
        if broker is None:
            return

        async def run() -> None:
            try:
                await (broker.subscribe(channel) if subscribe else broker.unsubscribe(channel))
            except Exception as exc:  # the broker is down: direct publishes from other nodes miss this one
                log.warning(
                    "shared poll: broker %s of %s failed: %s", "subscribe" if subscribe else "unsubscribe", channel, exc
                )

        task = asyncio.ensure_future(run())
        self._broker_ops.add(task)
        task.add_done_callback(self._broker_ops.discard)

    def distributes(self, channel: str) -> bool:
        """Direct publishes of ``channel`` come through the broker (``publish_enabled``, active here)."""
        active = self._channels.get(channel)
        return active is not None and active.opts.publish_enabled

    def poll_cold(self, channel: str, keys: Iterable[str]) -> None:
        """Keys new on this node tracked from version 0: poll them now, not in an interval."""
        active = self._channels.get(channel)
        if active is None or active.opts.endpoint is None:
            return
        active.cold.update(keys)
        if active.cold and (active.cold_task is None or active.cold_task.done()):
            active.cold_task = asyncio.ensure_future(self._poll_cold(channel, active))

    async def close(self) -> None:
        tasks = [t for a in self._channels.values() for t in (a.task, a.cold_task) if t is not None]
        for active in self._channels.values():
            if active.stop is not None:
                active.stop.cancel()
        self._channels.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._broker_ops, return_exceptions=True)

    @property
    def num_channels(self) -> int:
        return len(self._channels)

    @property
    def num_keys(self) -> int:
        return sum(len(a.state) for a in self._channels.values())

    # ------------------------------------------------------------------ polling

    async def _run(self, channel: str, active: _Active) -> None:
        opts = active.opts
        loop = asyncio.get_running_loop()
        while self._channels.get(channel) is active:
            started = loop.time()
            self._expire(channel, active)
            active.state.sweep(started)
            if opts.endpoint is not None:
                await self._cycle(channel, active, opts.endpoint)
            await asyncio.sleep(max(0.0, opts.interval - (loop.time() - started)))

    async def _cycle(self, channel: str, active: _Active, endpoint: Endpoint) -> None:
        items = active.state.poll_items()
        if not items:
            return
        size = active.opts.batch_size
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        spread = active.opts.interval / len(batches)
        calls: list[asyncio.Task[None]] = []
        try:
            for i, batch in enumerate(batches):
                if i:
                    await asyncio.sleep(spread)
                    if self._channels.get(channel) is not active:
                        break
                calls.append(asyncio.ensure_future(self._call(channel, active, endpoint, batch)))
            await asyncio.gather(*calls)
        finally:
            for call in calls:
                call.cancel()

    async def _poll_cold(self, channel: str, active: _Active) -> None:
        endpoint = active.opts.endpoint
        assert endpoint is not None
        while active.cold and self._channels.get(channel) is active:
            keys, active.cold = active.cold, set()
            items = active.state.versions(sorted(keys))
            size = active.opts.batch_size
            for i in range(0, len(items), size):
                await self._call(channel, active, endpoint, items[i : i + size])

    async def _call(self, channel: str, active: _Active, endpoint: Endpoint, items: Sequence[tuple[str, int]]) -> None:
        result = "ok"
        try:
            async with self._limit:
                if self._channels.get(channel) is not active:
                    return
                answer, epoch = await refresh(endpoint, channel, items, versioned=active.opts.versioned)
        except ProxyFailure as failure:
            result = failure.kind
            return
        except ClientError as err:  # the backend answered {"error": ...}: skip until the next cycle
            result = "error"
            log.warning("shared poll refresh of %s: backend error %d %s", channel, err.code, err.message)
            return
        except Disconnect:
            result = "invalid"
            return
        finally:
            self._metrics.shared_poll_refresh(active.namespace, result, len(items))
        if self._channels.get(channel) is not active:
            return
        self.apply(channel, active, answer, epoch)

    def apply(self, channel: str, active: _Active, answer: Sequence[PolledItem], epoch: str) -> None:
        changes, reset = active.state.apply(answer, epoch)
        if reset:  # the backend restarted (new epoch): every client starts over from version 0
            for conn in list(active.state.members):
                conn.resubscribe(channel)
            return
        self.deliver(channel, active.namespace, changes)

    def _expire(self, channel: str, active: _Active) -> None:
        """Silently untrack keys whose signature expired ``track_expired_extra_delay`` ago."""
        for conn, keys in active.state.expired(self._now(), active.opts.track_expired_extra_delay):
            self.untrack(channel, conn, keys)

    # ------------------------------------------------------------------ direct publish and delivery

    async def direct_publish(
        self, channel: str, ns: NamespaceOptions, key: str, *, version: int, data: bytes, epoch: str = ""
    ) -> None:
        """``shared_poll_publish``: to every node through the broker with ``publish_enabled``, else here.

        Across the broker the record carries the version as its ``score`` and the publisher's epoch
        as the tag ``epoch`` (a shared-poll channel keeps no stream of its own).
        """
        if self.options(ns).publish_enabled and self._broker is not None:
            record = Record(data=data, key=key, score=version, tags={"epoch": epoch} if epoch else None)
            await self._broker.publish(channel, record, PublishOptions())
            return
        self.publish(channel, key, version, data, epoch)

    def handle_record(self, channel: str, record: Record) -> None:
        """A direct publish that came through the broker (see :meth:`direct_publish`)."""
        self.publish(channel, record.key, record.score, record.data, (record.tags or {}).get("epoch", ""))

    def publish(self, channel: str, key: str, version: int, data: bytes, epoch: str = "") -> int:
        """Deliver a direct publish to this node's connections tracking ``key``; how many got it."""
        active = self._channels.get(channel)
        if active is None:
            return 0
        state = active.state
        if epoch and epoch != state.epoch:
            _, reset = state.apply([], epoch)
            if reset:  # the publisher restarted: every client starts over from version 0
                for conn in list(state.members):
                    conn.resubscribe(channel)
                return 0
        change = state.publish(key, version, data)
        if change is None:
            return 0
        self.deliver(channel, active.namespace, [change])
        return len(change.targets)

    def deliver(self, channel: str, namespace: str, changes: Sequence[Change[Tracker]]) -> None:
        items = deliveries = 0
        for change in changes:
            if not change.targets:
                continue
            items += 1
            if change.removed:  # no data field at all (an empty Raw would be written as nothing)
                pub = Publication(key=change.key, removed=True)
            else:
                pub = Publication(data=msgspec.Raw(change.data), key=change.key, version=change.version)
            frames: dict[int, bytes] = {}
            for conn in change.targets:
                if conn.closed:
                    continue
                codec = conn.codec
                frame = frames.get(id(codec))
                if frame is None:
                    frame = frames[id(codec)] = codec.encode_push(Push(channel=channel, pub=pub))
                conn.push(frame)
                deliveries += 1
        if items:
            self._metrics.shared_poll_pushed(namespace, items, deliveries)
