"""Which Redis a channel lives on: one server, consistent shards, a Redis Cluster or Sentinel.

Four topologies, named by Centrifugo's options under ``engine.redis``:

- one server: ``address`` is one URL;
- consistent sharding over independent servers: ``address`` holds several URLs; a
  channel lives on shard :func:`~.redis_sharding.shard_index` (Centrifugo's jump consistent hash over
  FNV-1a 64 of the channel name, so a mixed deployment maps every channel to the same
  shard), each shard with its own pub/sub connection; control messages are listened
  to on every shard and sent through one of them in turn (see :mod:`.redis_sharding`);
- a Redis Cluster: ``cluster_address`` names seed nodes; every key of one channel
  carries the hash tag ``{channel}`` so the Lua scripts run on the channel's slot;
  pub/sub is Redis' classic pub/sub, which a cluster delivers on every node;
- Sentinel: ``sentinel_address`` names sentinels, ``sentinel_master_name`` the
  master they watch; every new connection asks the sentinels for the current master.

As in Centrifugo, each entry of these lists is one shard (several nodes of one cluster,
or several sentinels of one master, go comma-separated in one entry), and several
entries are consistent shards over several clusters or Sentinel-managed masters.

The clients are redis-py's own (``redis.asyncio``: :class:`RedisCluster`,
:class:`Sentinel`), configured as :func:`~trunkline.broker.redis.make_client` is:
no retries behind the caller's back (a retried publish could run twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from ..config import RedisSettings
from .base import Broker, PresenceManager
from .redis import POOL_SIZE, RedisBroker, RedisPresence, make_client
from .redis_sharding import ShardedRedisBroker, ShardedRedisPresence


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a ``redis://`` URL as (host, port)."""
    if "://" in address:
        parts = urlsplit(address)
        return parts.hostname or "127.0.0.1", parts.port or default_port
    host, colon, port = address.rpartition(":")
    if not colon:
        return address, default_port
    return host.strip("[]"), int(port)


def _credentials(url: str) -> tuple[str | None, str | None]:
    """User and password of a ``redis://`` URL (None where it has none)."""
    if not url or "://" not in url:
        return None, None
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return user, password


def make_cluster_client(
    seeds: Sequence[str],
    connect_timeout: float = 5.0,
    io_timeout: float = 4.0,
    pool_size: int = POOL_SIZE,
    *,
    master_url: str = "",
) -> Redis:
    """A Redis Cluster client from seed nodes (``host:port`` or ``redis://`` URLs).

    Seeds given as ``host:port`` take user, password and TLS from ``master_url``
    (``engine.redis.address``).

    Typed as :class:`Redis`: :class:`RedisCluster` answers the same command calls and
    pipelines, routed by key slot (scripts by their first key).
    """
    nodes = [ClusterNode(*host_port(seed, 6379)) for seed in seeds]
    user, password = _credentials(seeds[0] if "://" in seeds[0] else master_url)
    cluster = RedisCluster(
        startup_nodes=nodes,
        retry=Retry(NoBackoff(), 0),
        max_connections=pool_size,
        socket_connect_timeout=connect_timeout,
        socket_timeout=io_timeout,
        decode_responses=False,
        username=user,
        password=password,
        ssl=(seeds[0] if "://" in seeds[0] else master_url).startswith("rediss://"),
    )
    return cast("Redis", cluster)


def make_sentinel_client(
    sentinels: Sequence[str],
    master_name: str,
    connect_timeout: float = 5.0,
    io_timeout: float = 4.0,
    pool_size: int = POOL_SIZE,
    *,
    sentinel_user: str = "",
    sentinel_password: str = "",
    master_url: str = "",
) -> Redis:
    """A client of the master the sentinels name; every new connection asks them again.

    ``master_url`` (``engine.redis.address``) gives the master's user, password and database.
    """
    sentinel_kwargs: dict[str, object] = {"socket_timeout": io_timeout, "socket_connect_timeout": connect_timeout}
    if sentinel_user:
        sentinel_kwargs["username"] = sentinel_user
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    manager = cast("Callable[..., Sentinel]", Sentinel)(
        [host_port(address, 26379) for address in sentinels],
        sentinel_kwargs=sentinel_kwargs,
        socket_timeout=io_timeout,
        socket_connect_timeout=connect_timeout,
    )
    user, password = _credentials(master_url)
    db = urlsplit(master_url).path.strip("/") if master_url and "://" in master_url else ""
    client: Redis = manager.master_for(
        master_name,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        max_connections=pool_size,
        db=int(db) if db.isdigit() else 0,
        username=user,
        password=password,
    )
    return client


def shard_nodes(entry: str) -> list[str]:
    """The nodes of one ``cluster_address`` / ``sentinel_address`` entry (comma-separated)."""
    return [node.strip() for node in entry.split(",") if node.strip()]


def make_redis_engine(settings: RedisSettings) -> tuple[Broker, PresenceManager]:
    """The broker and presence for ``engine.redis``: one server, shards, a cluster or Sentinel.

    As in Centrifugo, every entry of ``address``, ``cluster_address`` or ``sentinel_address``
    is one shard (a cluster's seeds, or one master's sentinels, comma-separated within the
    entry); several entries are consistent shards (:mod:`.redis_sharding`).
    """
    r = settings
    clients: list[Redis]
    if r.cluster_address:
        clients = [
            make_cluster_client(shard_nodes(entry), r.connect_timeout, r.io_timeout, master_url=r.address)
            for entry in r.cluster_address
        ]
    elif r.sentinel_address:
        clients = [
            make_sentinel_client(
                shard_nodes(entry),
                r.sentinel_master_name,
                r.connect_timeout,
                r.io_timeout,
                sentinel_user=r.sentinel_user,
                sentinel_password=r.sentinel_password,
                master_url=r.address,
            )
            for entry in r.sentinel_address
        ]
    else:
        clients = [make_client(url, r.connect_timeout, r.io_timeout) for url in r.addresses]
    brokers = [
        RedisBroker.from_client(client, r.prefix, r.connect_timeout, r.io_timeout, owns_client=True)
        for client in clients
    ]
    presences = [RedisPresence.from_client(client, r.prefix, r.connect_timeout, r.io_timeout) for client in clients]
    if len(brokers) == 1:
        return brokers[0], presences[0]
    return ShardedRedisBroker(brokers), ShardedRedisPresence(presences)
