"""Map presence: the keys a subscription keeps in ``map_clients`` and ``map_users`` channels.

A namespace with ``map_clients_presence_channel_prefix = P`` makes every subscription to
one of its channels ``C`` a key of the map channel ``P + C``: key = the client id, data
and info = the subscriber's ClientInfo (user, client, conn_info, chan_info), written
when the subscription goes live and removed at once when it ends (unsubscribe,
disconnect, a server-side unsubscribe). ``map_users_presence_channel_prefix = U`` makes
the subscriber's user a key of ``U + C`` (anonymous connections write none): written by
the first connection of the user, refreshed while any of them stays subscribed, and left
to expire by the target namespace's ``map.key_ttl`` after the last one leaves, so a quick
reconnect does not flicker. Clients watch those channels with centrifuge-js
``newMapClientsSubscription`` / ``newMapUsersSubscription``.

Every node refreshes the keys of its own subscribers (an ``if_new`` write that renews the
TTL of a key that exists and re-creates one that was lost) often enough to outlive
``key_ttl``: keys of a node that dies disappear within ``key_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..broker.map_base import KeyMode, MapBroker, MapOptions, MapWrite
from ..config import NamespaceOptions, Settings
from ..records import ClientInfo
from .map_options import map_options

log = logging.getLogger("trunkline.map_presence")

#: the data of a map_users key (the key is the user; Centrifugo stores nothing else)
USER_DATA = b"{}"
#: at least this many refreshes fit in a key's TTL
REFRESHES_PER_TTL = 3
#: the refresh loop never spins faster than this
MIN_INTERVAL = 0.05
#: keys renewed concurrently by a refresh round
REFRESH_BATCH = 64


@dataclass(frozen=True, slots=True)
class Targets:
    """The presence channels a subscription to one channel writes into (``""``: none)."""

    clients: str = ""
    users: str = ""

    def __bool__(self) -> bool:
        return bool(self.clients or self.users)


def targets(opts: NamespaceOptions, channel: str) -> Targets:
    """Where a subscription to ``channel`` (of a namespace with ``opts``) keeps its presence."""
    clients = opts.map_clients_presence_channel_prefix
    users = opts.map_users_presence_channel_prefix
    if not clients and not users:
        return Targets()
    return Targets(clients + channel if clients else "", users + channel if users else "")


@dataclass(slots=True)
class _Key:
    """One key this node keeps alive, and the local connections that hold it."""

    write: MapWrite
    holders: set[str] = field(default_factory=set)


class MapPresence:
    """The map presence keys of this node's subscribers (see the module docstring).

    ``broker`` returns the node's map broker and ``namespace`` the options of a channel's
    namespace (None when unknown), so the node may replace either after construction.
    """

    def __init__(
        self,
        settings: Settings,
        broker: Callable[[], MapBroker],
        namespace: Callable[[str], NamespaceOptions | None],
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._namespace = namespace
        #: (presence channel, key) -> the write that keeps it and who holds it on this node
        self._keys: dict[tuple[str, str], _Key] = {}
        self._warned: set[str] = set()  # prefixes that name no map channel (bounded by the config)

    def __len__(self) -> int:
        return len(self._keys)

    def options(self, channel: str) -> MapOptions | None:
        """The map options of a presence channel; None when its namespace is not a map."""
        ns = self._namespace(channel)
        if ns is None or not ns.is_map:
            return None
        return map_options(ns, self._settings.channel.history_meta_ttl)

    @property
    def interval(self) -> float:
        """How often keys are refreshed: ``client.presence_update_interval``, and at least
        :data:`REFRESHES_PER_TTL` times within the shortest ``key_ttl`` of a presence namespace."""
        interval = self._settings.client.presence_update_interval
        channel = self._settings.channel
        for ns in (channel.without_namespace, *channel.namespaces):
            if ns.subscription_type in ("map_clients", "map_users"):
                ttl = map_options(ns).key_ttl
                if ttl > 0:
                    interval = min(interval, ttl / REFRESHES_PER_TTL)
        return max(interval, MIN_INTERVAL)

    # ------------------------------------------------------------------ joins and leaves

    @property
    def active(self) -> bool:
        """Some namespace sets a presence prefix (else nothing is ever written or refreshed)."""
        channel = self._settings.channel
        return any(
            ns.map_clients_presence_channel_prefix or ns.map_users_presence_channel_prefix
            for ns in (channel.without_namespace, *channel.namespaces)
        )

    def targets(self, channel: str) -> Targets:
        """Where a subscription to ``channel`` keeps its presence (none for an unknown channel).

        A presence channel outside a map namespace (a prefix without a namespace boundary, which
        the configuration cannot check) is left out, with one warning per prefix."""
        ns = self._namespace(channel)
        if ns is None:
            return Targets()
        where = targets(ns, channel)
        if not where:
            return where
        clients = (
            where.clients
            if where.clients and self._usable(where.clients, ns.map_clients_presence_channel_prefix)
            else ""
        )
        users = where.users if where.users and self._usable(where.users, ns.map_users_presence_channel_prefix) else ""
        return Targets(clients, users)

    def _usable(self, channel: str, prefix: str) -> bool:
        if self.options(channel) is not None:
            return True
        if prefix not in self._warned:
            self._warned.add(prefix)
            log.warning("map presence prefix %r makes %r, which is not a map channel: nothing written", prefix, channel)
        return False

    async def join(self, channel: str, info: ClientInfo, info_json: bytes) -> None:
        """A subscription to ``channel`` went live: write its client key and its user key."""
        where = self.targets(channel)
        if where.clients:
            write = MapWrite(
                key=info.client,
                data=info_json,
                info=info,
                key_mode=KeyMode.IF_NEW,
                refresh_ttl_on_suppress=True,
            )
            await self._hold(where.clients, write, info.client)
        if where.users and info.user:
            write = MapWrite(key=info.user, data=USER_DATA, key_mode=KeyMode.IF_NEW, refresh_ttl_on_suppress=True)
            await self._hold(where.users, write, info.client)

    async def leave(self, channel: str, client: str, user: str) -> None:
        """A subscription to ``channel`` ended: remove its client key now; its user key expires by TTL."""
        where = self.targets(channel)
        if where.users:
            self._release(where.users, user, client)
        if where.clients:
            self._release(where.clients, client, client)
            await self._remove(where.clients, client)

    async def _hold(self, channel: str, write: MapWrite, holder: str) -> None:
        key = self._keys.get((channel, write.key))
        if key is None:
            key = self._keys[(channel, write.key)] = _Key(write)
        key.holders.add(holder)
        await self._write(channel, write)

    def _release(self, channel: str, name: str, holder: str) -> None:
        key = self._keys.get((channel, name))
        if key is None:
            return
        key.holders.discard(holder)
        if not key.holders:
            del self._keys[(channel, name)]

    async def _write(self, channel: str, write: MapWrite) -> bool:
        """Write a key; True when it was new (its join was delivered)."""
        options = self.options(channel)
        if options is None:  # the configuration changed under a held key: nothing to keep
            return False
        result = await self._broker().publish(channel, write, options)
        return result.publication is not None

    async def _remove(self, channel: str, key: str) -> None:
        options = self.options(channel)
        if options is not None:
            await self._broker().remove(channel, key, options)

    # ------------------------------------------------------------------ refresh

    async def refresh(self) -> None:
        """Renew every key this node holds (re-create those that were lost), :data:`REFRESH_BATCH`
        writes in flight at a time; a round stops at the first broker error (the next one retries)."""
        keys = list(self._keys.items())
        for i in range(0, len(keys), REFRESH_BATCH):
            outcomes = await asyncio.gather(
                *(self._renew(c, n, k) for (c, n), k in keys[i : i + REFRESH_BATCH]), return_exceptions=True
            )
            failed = next((o for o in outcomes if isinstance(o, Exception)), None)
            if failed is not None:
                log.warning("cannot refresh map presence: %s", failed)
                return

    async def _renew(self, channel: str, name: str, key: _Key) -> None:
        if self._keys.get((channel, name)) is not key:
            return  # left meanwhile
        created = await self._write(channel, key.write)
        if created and key.write.info is not None and self._keys.get((channel, name)) is not key:
            await self._remove(channel, name)  # the client left while its key was re-created

    async def run(self) -> None:
        """Refresh every :attr:`interval` until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
